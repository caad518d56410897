//! **Active-view links are symmetric (safety, bounded).** A link between two healthy nodes held
//! by one end only must not stay so for longer than the keepalive timeout + one keepalive
//! period + one sample period.
//!
//! Why: HyParView's active view is symmetric by construction over TCP; over UDP a link is
//! one-sided for a round trip while a NeighborAccept is in flight, and a stale one (left by a
//! lost Disconnect, a restart, a crossing accept) is cut by the Disconnect that answers its next
//! KeepAlive — or, if that cannot arrive, by the holder's keepalive timeout (`overlay.md` §4.4,
//! §7). A one-sided link that lasts longer means a broadcast path that silently goes nowhere.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Verdict;
use super::overlay::{OverlayInvariant, OverlayWorld};

/// See the module docs.
#[derive(Debug, Default)]
pub struct OverlaySymmetric {
    /// One-sided links (holder, other) and the sample that first saw them.
    open: BTreeMap<(usize, usize), Duration>,
    samples: u64,
    links_max: usize,
    one_sided_max: usize,
    first: Option<(Duration, String)>,
}

impl OverlayInvariant for OverlaySymmetric {
    fn name(&self) -> &'static str {
        "overlay_symmetric"
    }

    fn on_sample(&mut self, world: &OverlayWorld<'_>) {
        self.samples += 1;
        let grace = world.detection_bound() + world.scenario.sample_every;
        let mut now_open = BTreeMap::new();
        let mut links = 0usize;
        for (a, view) in world.active.iter().enumerate() {
            for &b in view {
                links += 1;
                if !world.truth[b].healthy() || world.active[b].binary_search(&a).is_ok() {
                    continue;
                }
                let since = self.open.get(&(a, b)).copied().unwrap_or(world.now);
                if world.now.saturating_sub(since) > grace && self.first.is_none() {
                    self.first = Some((
                        world.now,
                        format!(
                            "n{} has held n{} as a neighbour without the reverse link since {:.3} s \
                             (bound {:.3} s)",
                            a + 1,
                            b + 1,
                            since.as_secs_f64(),
                            grace.as_secs_f64()
                        ),
                    ));
                }
                now_open.insert((a, b), since);
            }
        }
        self.links_max = self.links_max.max(links);
        self.one_sided_max = self.one_sided_max.max(now_open.len());
        self.open = now_open;
    }

    fn finish(&mut self, _world: &OverlayWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} samples; at most {} of {} links one-sided at a sample, none for long",
                self.samples, self.one_sided_max, self.links_max
            )
        })
    }
}
