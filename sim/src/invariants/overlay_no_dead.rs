//! **No self-links and no dead neighbours (safety, bounded).** No node's active view holds the
//! node itself, and no healthy node's active view holds a crashed node for longer than the
//! keepalive timeout + one keepalive period after the crash.
//!
//! Why: with partial views the keepalive is the only failure detector (`overlay.md` §4.4); a
//! neighbour that stays in a view after it died is a broadcast branch that silently goes
//! nowhere, and the view never repairs around it. The bound is what the keepalive promises: a
//! silent neighbour is dropped at the first keepalive tick after `keepalive_timeout`.

use std::time::Duration;

use super::Verdict;
use super::overlay::{OverlayInvariant, OverlayWorld};

/// See the module docs.
#[derive(Debug, Default)]
pub struct OverlayNoDead {
    checks: u64,
    /// Longest a crashed node was still held by someone, at sample resolution.
    held_max: Duration,
    first: Option<(Duration, String)>,
}

impl OverlayInvariant for OverlayNoDead {
    fn name(&self) -> &'static str {
        "overlay_no_dead"
    }

    fn on_sample(&mut self, world: &OverlayWorld<'_>) {
        let bound = world.detection_bound();
        for (i, view) in world.active.iter().enumerate() {
            for &p in view {
                self.checks += 1;
                let bad = if p == i {
                    Some(format!("n{} lists itself as a neighbour", i + 1))
                } else if let Some(since) = world.down_since[p] {
                    let held = world.now.saturating_sub(since);
                    self.held_max = self.held_max.max(held);
                    (held > bound).then(|| {
                        format!(
                            "n{} still holds n{}, crashed at {:.3} s ({:.1} s ago, bound {:.1} s)",
                            i + 1,
                            p + 1,
                            since.as_secs_f64(),
                            held.as_secs_f64(),
                            bound.as_secs_f64()
                        )
                    })
                } else {
                    None
                };
                if let (Some(why), None) = (bad, &self.first) {
                    self.first = Some((world.now, why));
                }
            }
        }
    }

    fn finish(&mut self, _world: &OverlayWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} neighbour entries checked; a crashed node was held at most {:.1} s",
                self.checks,
                self.held_max.as_secs_f64()
            )
        })
    }
}
