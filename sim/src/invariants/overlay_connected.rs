//! **The active-view graph is connected wherever the network is (liveness).** From the last
//! disturbance + `converge_within` on, at every sample, the components of the graph of links held
//! by both ends between healthy nodes are exactly the network's components: every group of
//! healthy nodes that can reach each other forms one overlay component, and no overlay
//! component spans an unreachable cut. Before that (the safety phase, under faults) it is only
//! measured.
//!
//! Why: Plumtree broadcasts flow only over active-view links, so a healthy node outside its
//! component's overlay component never gets a broadcast; a component that spans a cut holds
//! links that cannot work (keepalive must have dropped them). HyParView's claim is that the
//! active views stay connected under churn and repair after failures (Leitão et al., DSN 2007,
//! §5); a partition that heals must be bridged again (here by rotation, `overlay.md` §4.4).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Verdict;
use super::overlay::{OverlayInvariant, OverlayWorld};

/// See the module docs.
#[derive(Debug, Default)]
pub struct OverlayConnected {
    checked: u64,
    first: Option<(Duration, String)>,
    /// Smallest share of healthy nodes in a correct component over the liveness phase.
    worst_share: Option<f64>,
}

/// The convergence curve's value and the component counts `(share, overlay, network)`: the
/// share of healthy nodes in the largest overlay component of their network component, counting
/// only overlay components that stay inside one network component (1.0 exactly when every
/// network component is one overlay component), and how many overlay and network components
/// there are.
pub fn correct_share(world: &OverlayWorld<'_>) -> (f64, usize, usize) {
    // Nodes per (network component, overlay component), and the network components each
    // overlay component spans.
    let mut pairs: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut spans: BTreeMap<usize, (usize, bool)> = BTreeMap::new();
    let mut networks: BTreeMap<usize, ()> = BTreeMap::new();
    let mut healthy = 0usize;
    for (&nc, &oc) in world.net_comp.iter().zip(world.overlay_comp) {
        if nc == usize::MAX {
            continue;
        }
        healthy += 1;
        *pairs.entry((nc, oc)).or_default() += 1;
        networks.insert(nc, ());
        let e = spans.entry(oc).or_insert((nc, true));
        if e.0 != nc {
            e.1 = false;
        }
    }
    // Per network component, its largest overlay component that stays inside it.
    let mut best: BTreeMap<usize, usize> = BTreeMap::new();
    for (&(nc, oc), &count) in &pairs {
        if spans.get(&oc).is_some_and(|e| e.1) {
            let b = best.entry(nc).or_default();
            *b = (*b).max(count);
        }
    }
    let good: usize = best.values().sum();
    let share = if healthy == 0 {
        1.0
    } else {
        good as f64 / healthy as f64
    };
    (share, spans.len(), networks.len())
}

impl OverlayInvariant for OverlayConnected {
    fn name(&self) -> &'static str {
        "overlay_connected"
    }

    fn on_sample(&mut self, world: &OverlayWorld<'_>) {
        if world.now < world.liveness_from() {
            return;
        }
        self.checked += 1;
        let (share, overlay, network) = correct_share(world);
        self.worst_share = Some(self.worst_share.map_or(share, |w| w.min(share)));
        if (share < 1.0 || overlay != network) && self.first.is_none() {
            let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
            for &oc in world.overlay_comp.iter().filter(|c| **c != usize::MAX) {
                *sizes.entry(oc).or_default() += 1;
            }
            let mut sizes: Vec<(usize, usize)> = sizes.into_iter().map(|(c, s)| (s, c)).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let shown: Vec<String> = sizes
                .iter()
                .take(4)
                .map(|(s, c)| format!("{s} nodes (n{})", c + 1))
                .collect();
            self.first = Some((
                world.now,
                format!(
                    "{overlay} overlay components for {network} network components \
                     ({:.2} % of healthy nodes in their component's main one): {}",
                    share * 100.0,
                    shown.join(", ")
                ),
            ));
        }
    }

    fn finish(&mut self, world: &OverlayWorld<'_>) -> Verdict {
        if self.checked == 0 && self.first.is_none() {
            return Verdict {
                invariant: self.name(),
                ok: false,
                detail: format!(
                    "never checked: the liveness phase starts at {:.1} s, after the last sample",
                    world.liveness_from().as_secs_f64()
                ),
                violated_at_s: None,
            };
        }
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "one overlay component per network component at all {} samples from {:.1} s",
                self.checked,
                world.liveness_from().as_secs_f64()
            )
        })
    }
}
