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
//!
//! Scenarios that use the capability registry also get the registry checkers
//! ([`registry::all`]): `registry_convergence`, `no_stale_endpoints`, `withdrawn_disappear`.
//!
//! Partial-view scenarios (`membership = "partial"`) have no member list; they get the
//! active-view checkers instead ([`overlay::all`]): `overlay_connected`, `overlay_symmetric`,
//! `overlay_no_isolated`, `overlay_no_dead` and, optionally, `overlay_reach`.
//!
//! NexStream scenarios (`[stream]`) run no membership; they get the stream checkers
//! ([`stream::all`]): `stream_reliable`, `stream_expiry`, `stream_probability`,
//! `stream_revocation`.

use std::collections::HashMap;
use std::time::Duration;

use nexus_gossip::{Event, MemberView, NodeId};
use serde::Serialize;

use crate::net::Net;
use crate::scenario::Scenario;

pub mod agreement;
pub mod false_down;
pub mod no_phantoms;
pub mod no_stale_endpoints;
pub mod overlay;
pub mod overlay_connected;
pub mod overlay_no_dead;
pub mod overlay_no_isolated;
pub mod overlay_reach;
pub mod overlay_symmetric;
pub mod registry;
pub mod registry_convergence;
pub mod self_down;
pub mod stream;
pub mod stream_expiry;
pub mod stream_probability;
pub mod stream_reliable;
pub mod stream_revocation;
pub mod withdrawn_disappear;

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
    /// A node with this id, not started yet.
    pub fn new(node_id: NodeId) -> Self {
        Truth {
            node_id,
            generation: 0,
            up: false,
            paused: false,
            disturbed_at: Duration::ZERO,
        }
    }

    /// Marks every node disturbed at `now` (a change to the whole network: a partition, a heal,
    /// a loss rate).
    pub fn disturb_all(truth: &mut [Truth], now: Duration) {
        for t in truth {
            t.disturbed_at = now;
        }
    }

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
    pub ids: &'a NodeIds,
}

/// Node index by node id, with O(1) lookups: checkers look up every row of every view. It is
/// never iterated, so its hashing cannot reach any output.
#[derive(Clone, Debug, Default)]
pub struct NodeIds(HashMap<NodeId, usize>);

impl NodeIds {
    /// Records that node `index` has id `id`.
    pub fn insert(&mut self, id: NodeId, index: usize) {
        self.0.insert(id, index);
    }

    /// The index of the node with this id, if it exists.
    pub fn get(&self, id: &NodeId) -> Option<usize> {
        self.0.get(id).copied()
    }
}

impl World<'_> {
    /// The index of the node with this id, if it exists.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.ids.get(id)
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

impl Verdict {
    /// The verdict of a checker that holds unless it saw a violation: fails with the first one
    /// (`first`), else passes with `summary`.
    pub fn from_first(
        invariant: &'static str,
        first: Option<&(Duration, String)>,
        summary: impl FnOnce() -> String,
    ) -> Verdict {
        Verdict {
            invariant,
            ok: first.is_none(),
            detail: first.map(|(_, why)| why.clone()).unwrap_or_else(summary),
            violated_at_s: first.map(|(t, _)| t.as_secs_f64()),
        }
    }
}

/// A checker. Called in order: `on_event` for every membership event; at every sample
/// `begin_sample`, then `on_view` once per healthy node with its member list (one at a time, so
/// a sample never holds every node's view at once), then `end_sample`; `finish` once.
pub trait Invariant {
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// A node reported a membership event.
    fn on_event(&mut self, _world: &World<'_>, _observer: usize, _event: &Event) {}
    /// A sample starts.
    fn begin_sample(&mut self, _world: &World<'_>) {}
    /// One healthy node's member list at this sample.
    fn on_view(&mut self, _world: &World<'_>, _node: usize, _view: &[MemberView]) {}
    /// The sample is over.
    fn end_sample(&mut self, _world: &World<'_>) {}
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

/// Runs one sample: every checker sees each healthy node's view in turn (`views` yields
/// `(node, view)` for healthy nodes only). Returns the fraction of healthy nodes whose alive set
/// equals their connected component exactly.
pub fn sample<V: AsRef<[MemberView]>>(
    world: &World<'_>,
    checkers: &mut [Box<dyn Invariant>],
    views: impl Iterator<Item = (usize, V)>,
) -> f64 {
    for c in checkers.iter_mut() {
        c.begin_sample(world);
    }
    let comp = components(world.truth, world.net);
    let expected = agreement::Expected::new(world, comp);
    let mut agreed = 0usize;
    for (i, view) in views {
        let view = view.as_ref();
        for c in checkers.iter_mut() {
            c.on_view(world, i, view);
        }
        if expected.agrees(world, i, view) {
            agreed += 1;
        }
    }
    for c in checkers.iter_mut() {
        c.end_sample(world);
    }
    let healthy = world.truth.iter().filter(|t| t.healthy()).count();
    if healthy == 0 {
        1.0
    } else {
        agreed as f64 / healthy as f64
    }
}
