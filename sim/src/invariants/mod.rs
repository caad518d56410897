//! Invariant checkers, one per file. Each says what it checks and why; the engine feeds every
//! checker the same inputs (membership events as they happen, and the whole world at every
//! sample), and asks for a verdict at the end.
//!
//! | checker | phase | property |
//! | --- | --- | --- |
//! | [`agreement::Agreement`] | liveness | after the last disturbance + `converge_within`, every up node's alive set equals its connected component |
//! | [`false_down::FalseDown`] | safety | "down" verdicts about healthy, reachable nodes stay under `false_down_rate_max` per probe period |
//! | [`self_down::SelfDown`] | safety | no node ever lists itself as down |
//! | [`no_phantoms::NoPhantoms`] | safety | no view holds a node id that does not exist or a generation newer than the node's own |

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_gossip::{Event, MemberView, NodeId};
use serde::Serialize;

use crate::net::Net;
use crate::scenario::Scenario;

pub mod agreement;
pub mod false_down;
pub mod no_phantoms;
pub mod self_down;

/// The ground truth about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truth {
    /// Its node id.
    pub node_id: NodeId,
    /// Its current (or, if crashed, last) generation.
    pub generation: u64,
    /// Running (not crashed).
    pub up: bool,
    /// Stalled by a `pause` action.
    pub paused: bool,
    /// Last time anything happened to it (start, crash, restart, pause, resume, a partition
    /// change, a loss change).
    pub disturbed_at: Duration,
}

impl Truth {
    /// Up and not paused.
    pub fn healthy(&self) -> bool {
        self.up && !self.paused
    }
}

/// What a checker sees.
pub struct World<'a> {
    /// Virtual time.
    pub now: Duration,
    /// The scenario (bounds, timings).
    pub scenario: &'a Scenario,
    /// Ground truth per node index.
    pub truth: &'a [Truth],
    /// The network (who can reach whom).
    pub net: &'a Net,
    /// Node index by node id.
    pub ids: &'a BTreeMap<NodeId, usize>,
}

impl World<'_> {
    /// The index of the node with this id, if it exists.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.ids.get(id).copied()
    }
}

impl std::fmt::Debug for World<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World(t={:?}, {} nodes)", self.now, self.truth.len())
    }
}

/// The outcome of one checker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Checker name.
    pub invariant: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was measured, or the first violation.
    pub detail: String,
    /// Virtual time of the first violation, seconds.
    pub violated_at_s: Option<f64>,
}

/// A checker. Called in order: `on_event` for every membership event, `on_sample` at every
/// sample (with each healthy node's member list), `finish` once.
pub trait Invariant {
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// A node reported a membership event.
    fn on_event(&mut self, _world: &World<'_>, _observer: usize, _event: &Event) {}
    /// A periodic look at every view (`views[i]` is `None` for crashed or paused nodes).
    fn on_sample(&mut self, _world: &World<'_>, _views: &[Option<Vec<MemberView>>]) {}
    /// The verdict.
    fn finish(&mut self, world: &World<'_>) -> Verdict;
    /// The first violation so far (time and detail), for early reporting.
    fn violation(&self) -> Option<(Duration, String)>;
}

/// Every checker, in report order.
pub fn all() -> Vec<Box<dyn Invariant>> {
    vec![
        Box::new(agreement::Agreement::default()),
        Box::new(false_down::FalseDown::default()),
        Box::new(self_down::SelfDown::default()),
        Box::new(no_phantoms::NoPhantoms::default()),
    ]
}

/// Connected components of healthy nodes over links that work in both directions.
/// `component[i]` is the smallest member index of i's component (`usize::MAX` if i is not
/// healthy).
pub fn components(truth: &[Truth], net: &Net) -> Vec<usize> {
    let n = truth.len();
    let mut comp = vec![usize::MAX; n];
    let healthy: Vec<usize> = (0..n).filter(|&i| truth[i].healthy()).collect();
    if !net.any_cut() {
        if let Some(&first) = healthy.first() {
            for &i in &healthy {
                comp[i] = first;
            }
        }
        return comp;
    }
    for &start in &healthy {
        if comp[start] != usize::MAX {
            continue;
        }
        comp[start] = start;
        let mut stack = vec![start];
        while let Some(a) = stack.pop() {
            for &b in &healthy {
                if comp[b] == usize::MAX && net.connected(a, b) {
                    comp[b] = start;
                    stack.push(b);
                }
            }
        }
    }
    comp
}

/// Fraction of healthy nodes whose alive set equals their component exactly.
pub fn converged_fraction(world: &World<'_>, views: &[Option<Vec<MemberView>>]) -> f64 {
    let comp = components(world.truth, world.net);
    let healthy = world.truth.iter().filter(|t| t.healthy()).count();
    if healthy == 0 {
        return 1.0;
    }
    let agreed = (0..world.truth.len())
        .filter(|&i| {
            world.truth[i].healthy() && agreement::disagreement(world, &comp, i, views).is_none()
        })
        .count();
    agreed as f64 / healthy as f64
}
