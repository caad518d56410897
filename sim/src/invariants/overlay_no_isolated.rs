//! **No healthy node stays without a neighbour (safety, bounded).** A healthy node whose network
//! component has another healthy node must not have an empty active view for longer than
//! `converge_within`.
//!
//! Why: a node with no neighbour receives no broadcast and is invisible to the overlay. HyParView
//! guarantees a way back: with no neighbour, the next Neighbor request is high priority and must
//! be accepted, and with no passive peer either the Join is repeated (`overlay.md` §4.2, §7).
//! A node alone on its side of a partition is exempt: it has nobody to connect to.

use std::time::Duration;

use super::Verdict;
use super::overlay::{OverlayInvariant, OverlayWorld};

/// See the module docs.
#[derive(Debug, Default)]
pub struct OverlayNoIsolated {
    empty_since: Vec<Option<Duration>>,
    longest: Duration,
    first: Option<(Duration, String)>,
}

impl OverlayInvariant for OverlayNoIsolated {
    fn name(&self) -> &'static str {
        "overlay_no_isolated"
    }

    fn on_sample(&mut self, world: &OverlayWorld<'_>) {
        let n = world.truth.len();
        self.empty_since.resize(n, None);
        // Healthy nodes per network component, to exempt a node alone in its component.
        let mut comp_size = vec![0u32; n];
        for &c in world.net_comp.iter().filter(|c| **c != usize::MAX) {
            comp_size[c] += 1;
        }
        let bound = world.scenario.bounds.converge_within;
        for i in 0..n {
            let c = world.net_comp[i];
            let isolated = c != usize::MAX && comp_size[c] >= 2 && world.active[i].is_empty();
            if !isolated {
                self.empty_since[i] = None;
                continue;
            }
            let since = *self.empty_since[i].get_or_insert(world.now);
            let lasted = world.now.saturating_sub(since);
            self.longest = self.longest.max(lasted);
            if lasted > bound && self.first.is_none() {
                self.first = Some((
                    world.now,
                    format!(
                        "n{} has had no neighbour since {:.3} s ({:.1} s, bound {:.1} s)",
                        i + 1,
                        since.as_secs_f64(),
                        lasted.as_secs_f64(),
                        bound.as_secs_f64()
                    ),
                ));
            }
        }
    }

    fn finish(&mut self, _world: &OverlayWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "longest time a healthy node was seen without a neighbour: {:.1} s",
                self.longest.as_secs_f64()
            )
        })
    }
}
