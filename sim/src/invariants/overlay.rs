//! Checkers of partial-view membership runs (`membership = "partial"`, [`crate::partial_view`]):
//! the nodes run the HyParView + Plumtree overlay alone, so there is no member list to agree on.
//! What must hold instead is about the active-view graph, one property per file:
//!
//! | checker | phase | property |
//! | --- | --- | --- |
//! | [`super::overlay_connected::OverlayConnected`] | liveness | from the last disturbance + `converge_within` on, the active-view graph of healthy nodes has exactly the network's components |
//! | [`super::overlay_symmetric::OverlaySymmetric`] | safety (bounded) | no link is held by one end only for longer than a keepalive timeout + period + a sample |
//! | [`super::overlay_no_isolated::OverlayNoIsolated`] | safety (bounded) | no healthy node with a reachable peer has an empty active view for longer than `converge_within` |
//! | [`super::overlay_no_dead::OverlayNoDead`] | safety (bounded) | no node lists itself; no node holds a crashed node longer than a keepalive timeout + period |
//! | [`super::overlay_reach::OverlayReach`] | liveness (optional) | a broadcast from a random healthy node reaches `broadcast_reach_min` of its component |
//!
//! The engine computes each sample's graph once ([`OverlayWorld`]) and hands it to every
//! checker.

use std::time::Duration;

use super::{Truth, Verdict};
use crate::scenario::{PartialScenario, Scenario};

/// One sample of a partial-view run, as every checker sees it.
#[derive(Debug)]
pub struct OverlayWorld<'a> {
    /// Virtual time.
    pub now: Duration,
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Its partial-view settings.
    pub partial: &'a PartialScenario,
    /// Ground truth per node.
    pub truth: &'a [Truth],
    /// Per node: its active view as node indices, sorted (empty for a node that is not healthy).
    pub active: &'a [Vec<usize>],
    /// Per node: the smallest index of its network component (healthy nodes that can talk in
    /// both directions, transitively); `usize::MAX` if not healthy.
    pub net_comp: &'a [usize],
    /// Per node: the smallest index of its component in the graph of links held by both ends
    /// between healthy nodes; `usize::MAX` if not healthy.
    pub overlay_comp: &'a [usize],
    /// Per node: when it crashed, while it is down.
    pub down_since: &'a [Option<Duration>],
}

impl OverlayWorld<'_> {
    /// Start of the liveness phase: the last timeline event plus `converge_within`.
    pub fn liveness_from(&self) -> Duration {
        self.scenario.last_disturbance() + self.scenario.bounds.converge_within
    }

    /// How long after a neighbour stops answering every node has dropped it: the keepalive
    /// timeout plus one keepalive period (the tick that notices it).
    pub fn detection_bound(&self) -> Duration {
        let o = &self.partial.overlay;
        o.keepalive_timeout + o.keepalive_period.unwrap_or(Duration::ZERO)
    }

    /// Whether `a` and `b` hold each other in their active views.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.active[a].binary_search(&b).is_ok() && self.active[b].binary_search(&a).is_ok()
    }
}

/// Result of one broadcast probe (`broadcast_reach_min`).
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// When it was broadcast.
    pub started: Duration,
    /// Its origin.
    pub origin: usize,
    /// Healthy nodes of the origin's network component when it was evaluated (origin included).
    pub expected: usize,
    /// How many of them had delivered it (origin included).
    pub reached: usize,
}

/// A partial-view checker. `on_sample` at every sample, `on_probe` for every evaluated
/// broadcast probe, `finish` once.
pub trait OverlayInvariant {
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// One sample of the graph.
    fn on_sample(&mut self, world: &OverlayWorld<'_>);
    /// A broadcast probe was evaluated.
    fn on_probe(&mut self, _world: &OverlayWorld<'_>, _probe: &Probe) {}
    /// The verdict.
    fn finish(&mut self, world: &OverlayWorld<'_>) -> Verdict;
}

/// Every partial-view checker for `partial`, in report order.
pub fn all(partial: &PartialScenario) -> Vec<Box<dyn OverlayInvariant>> {
    let mut out: Vec<Box<dyn OverlayInvariant>> = vec![
        Box::new(super::overlay_connected::OverlayConnected::default()),
        Box::new(super::overlay_symmetric::OverlaySymmetric::default()),
        Box::new(super::overlay_no_isolated::OverlayNoIsolated::default()),
        Box::new(super::overlay_no_dead::OverlayNoDead::default()),
    ];
    if let Some(min) = partial.broadcast_reach_min {
        out.push(Box::new(super::overlay_reach::OverlayReach::new(min)));
    }
    out
}

/// Components of an undirected graph given as an edge callback over `nodes` (the others get
/// `usize::MAX`): each node is labelled with the smallest index in its component.
pub fn label_components(
    n: usize,
    member: impl Fn(usize) -> bool,
    mut neighbours: impl FnMut(usize, &mut Vec<usize>),
) -> Vec<usize> {
    let mut comp = vec![usize::MAX; n];
    let mut stack = Vec::new();
    let mut adj = Vec::new();
    for start in 0..n {
        if comp[start] != usize::MAX || !member(start) {
            continue;
        }
        comp[start] = start;
        stack.push(start);
        while let Some(a) = stack.pop() {
            adj.clear();
            neighbours(a, &mut adj);
            for &b in &adj {
                if comp[b] == usize::MAX && member(b) {
                    comp[b] = start;
                    stack.push(b);
                }
            }
        }
    }
    comp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_of_a_small_graph() {
        // 0-1-2, 3 alone, 4 not a member, 5-6.
        let edges: [&[usize]; 7] = [&[1], &[0, 2], &[1], &[], &[0], &[6], &[5]];
        let comp = label_components(7, |i| i != 4, |a, out| out.extend(edges[a]));
        assert_eq!(comp, vec![0, 0, 0, 3, usize::MAX, 5, 5]);
    }
}
