//! **Broadcasts reach the component (liveness, optional).** In the liveness phase the engine
//! broadcasts from a random healthy node at a sample and, at the first sample at least
//! [`PROBE_WINDOW`] later, counts the healthy nodes of the origin's network component that
//! delivered it; each probe must reach at least `broadcast_reach_min` of them. On by setting
//! `[invariants] broadcast_reach_min`.
//!
//! Why: the point of the views is Plumtree's broadcast (Leitão et al., SRDS 2007): a connected
//! active-view graph should carry a payload to every node, eagerly along the tree and through
//! IHave → Graft where the tree broke. Connectivity alone does not show the tree works.

use std::time::Duration;

use super::Verdict;
use super::overlay::{OverlayInvariant, OverlayWorld, Probe};

/// How long a probe is given to spread before it is counted (grafts included: an IHave flush
/// and a few graft timeouts at the defaults, plus hops).
pub const PROBE_WINDOW: Duration = Duration::from_secs(3);

/// See the module docs.
#[derive(Debug)]
pub struct OverlayReach {
    min: f64,
    probes: u64,
    worst: f64,
    sum: f64,
    first: Option<(Duration, String)>,
}

impl OverlayReach {
    /// A checker requiring `min` (in (0, 1]) of the component per probe.
    pub fn new(min: f64) -> Self {
        OverlayReach {
            min,
            probes: 0,
            worst: 1.0,
            sum: 0.0,
            first: None,
        }
    }
}

impl OverlayInvariant for OverlayReach {
    fn name(&self) -> &'static str {
        "overlay_reach"
    }

    fn on_sample(&mut self, _world: &OverlayWorld<'_>) {}

    fn on_probe(&mut self, world: &OverlayWorld<'_>, probe: &Probe) {
        self.probes += 1;
        let share = probe.reached as f64 / probe.expected.max(1) as f64;
        self.worst = self.worst.min(share);
        self.sum += share;
        if share < self.min && self.first.is_none() {
            self.first = Some((
                world.now,
                format!(
                    "a broadcast from n{} at {:.3} s reached {} of {} nodes ({:.2} %, minimum {:.2} %)",
                    probe.origin + 1,
                    probe.started.as_secs_f64(),
                    probe.reached,
                    probe.expected,
                    share * 100.0,
                    self.min * 100.0
                ),
            ));
        }
    }

    fn finish(&mut self, world: &OverlayWorld<'_>) -> Verdict {
        if self.probes == 0 && self.first.is_none() {
            return Verdict {
                invariant: self.name(),
                ok: false,
                detail: format!(
                    "no probe fitted in the liveness phase (from {:.1} s; a probe needs {:.0} s)",
                    world.liveness_from().as_secs_f64(),
                    PROBE_WINDOW.as_secs_f64()
                ),
                violated_at_s: None,
            };
        }
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} probes: worst {:.3} %, mean {:.3} % of the component",
                self.probes,
                self.worst * 100.0,
                self.sum / self.probes.max(1) as f64 * 100.0
            )
        })
    }
}
