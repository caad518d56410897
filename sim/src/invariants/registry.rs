//! Registry checkers' shared inputs: the ground truth about every node's registrations, and the
//! [`RegistryInvariant`] shape (like [`super::Invariant`], with registry inputs): at every sample
//! `begin_sample`, then `on_node` once per healthy node with its live entries, `on_resolve` for
//! every resolve (scripted ones as they happen, sample ones during a sample), `end_sample`;
//! `finish` once.
//!
//! | checker | kind | holds when |
//! | --- | --- | --- |
//! | [`super::registry_convergence::RegistryConvergence`] | liveness | `converge_within` after the last registry change or fault, every healthy node holds exactly the live services of the healthy nodes it can reach |
//! | [`super::no_stale_endpoints::NoStaleEndpoints`] | safety | no resolve returns a service of a node down (or cut off from the resolver) for longer than `stale_bound` |
//! | [`super::withdrawn_disappear::WithdrawnDisappear`] | liveness | `converge_within` after a withdrawal or lease expiry, no node holds the service and no resolve returns it |

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Verdict, World};
use crate::scenario::{RegistryScenario, Scenario};

/// A live entry as a node holds it: `(origin node index, service id) → version`.
pub type Entries = BTreeMap<(usize, String), u64>;

/// One resolve's answer: `(origin node index, service id, version)` per candidate, best first.
pub type Candidates = [(usize, String, u64)];

/// What happened to one (origin, service) key at its origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// `(time, version)` of every version the origin signed (older ones pruned).
    pub versions: Vec<(Duration, u64)>,
    /// The last time the key appeared at or disappeared from its origin.
    pub changed_at: Duration,
    /// Set while the origin no longer holds it (withdrawn or its lease ran out): when, and the
    /// last version it had.
    pub gone: Option<(Duration, u64)>,
}

impl KeyHistory {
    /// The newest version signed at or before `t`, if any.
    pub fn version_at(&self, t: Duration) -> Option<u64> {
        self.versions
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(_, v)| *v)
    }

    /// Drops versions no check can ask for any more (older than `before`, keeping the newest of
    /// those).
    pub fn prune(&mut self, before: Duration) {
        let older = self.versions.iter().filter(|(at, _)| *at <= before).count();
        if older > 1 {
            self.versions.drain(..older - 1);
        }
    }
}

/// The ground truth the registry checkers compare nodes with.
#[derive(Clone, Debug, Default)]
pub struct RegistryTruth {
    /// Per node: the services registered on it (id → current version), as of its last step
    /// (kept while it is crashed: its durable storage restores them).
    pub local: Vec<BTreeMap<String, u64>>,
    /// Per (origin, service id): its history.
    pub keys: BTreeMap<(usize, String), KeyHistory>,
    /// Per node: since when it has been crashed or paused (`None` while healthy).
    pub unhealthy_since: Vec<Option<Duration>>,
    /// Pairs of healthy nodes in different connected components, since when (`(a, b)`, a < b).
    pub split_since: BTreeMap<(usize, usize), Duration>,
    /// Connected components of healthy nodes (see [`super::components`]).
    pub comp: Vec<usize>,
    /// The last registry change (register, update, withdraw) or fault/repair in the timeline.
    pub last_change: Duration,
}

impl RegistryTruth {
    /// How long `origin` has been unusable from `resolver` (crashed, paused, or in another
    /// component); `None` if it is usable.
    pub fn down_for(&self, now: Duration, resolver: usize, origin: usize) -> Option<Duration> {
        if let Some(since) = self.unhealthy_since[origin] {
            return Some(now.saturating_sub(since));
        }
        if self.comp[origin] == self.comp[resolver] {
            return None;
        }
        let pair = (resolver.min(origin), resolver.max(origin));
        Some(now.saturating_sub(self.split_since.get(&pair).copied().unwrap_or(now)))
    }

    /// The live entries node `j` should hold at `now`, each with the lowest acceptable version
    /// (`None`: too recent to require) — the live services of every healthy node in its
    /// component. Keys that appeared or disappeared within `grace` are left out.
    pub fn expected(
        &self,
        now: Duration,
        grace: Duration,
        j: usize,
    ) -> BTreeMap<(usize, String), Option<u64>> {
        let mut out = BTreeMap::new();
        let horizon = now.checked_sub(grace);
        for (o, services) in self.local.iter().enumerate() {
            if self.unhealthy_since[o].is_some() || self.comp[o] != self.comp[j] {
                continue;
            }
            for id in services.keys() {
                let key = (o, id.clone());
                let h = self.keys.get(&key);
                let required = match (h, horizon) {
                    (Some(h), Some(t)) => h.version_at(t),
                    _ => None,
                };
                out.insert(key, required);
            }
        }
        out
    }

    /// Whether the key appeared or disappeared at its origin within `grace` before `now`.
    pub fn recently_changed(&self, now: Duration, grace: Duration, key: &(usize, String)) -> bool {
        self.keys
            .get(key)
            .is_some_and(|h| h.changed_at + grace > now)
    }
}

/// What a registry checker sees.
pub struct RegistryWorld<'a> {
    /// The membership world (time, scenario, ground truth, network).
    pub world: &'a World<'a>,
    /// The scenario's registry settings.
    pub registry: &'a RegistryScenario,
    /// The registry ground truth.
    pub truth: &'a RegistryTruth,
}

impl RegistryWorld<'_> {
    /// Virtual time.
    pub fn now(&self) -> Duration {
        self.world.now
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        self.world.scenario
    }
}

impl std::fmt::Debug for RegistryWorld<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryWorld(t={:?})", self.world.now)
    }
}

/// A registry checker.
pub trait RegistryInvariant {
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// A sample starts.
    fn begin_sample(&mut self, _w: &RegistryWorld<'_>) {}
    /// One healthy node's live entries at this sample.
    fn on_node(&mut self, _w: &RegistryWorld<'_>, _node: usize, _entries: &Entries) {}
    /// A resolve on `node` (`scripted`: a timeline `resolve`, else a sample resolve of `task`).
    fn on_resolve(
        &mut self,
        _w: &RegistryWorld<'_>,
        _node: usize,
        _task: &str,
        _candidates: &Candidates,
        _scripted: bool,
    ) {
    }
    /// The sample is over.
    fn end_sample(&mut self, _w: &RegistryWorld<'_>) {}
    /// The verdict.
    fn finish(&mut self, w: &RegistryWorld<'_>) -> Verdict;
}

/// The registry checkers the scenario enables, in report order.
pub fn all(registry: &RegistryScenario) -> Vec<Box<dyn RegistryInvariant>> {
    let mut out: Vec<Box<dyn RegistryInvariant>> = Vec::new();
    if registry.checks.convergence {
        out.push(Box::new(
            super::registry_convergence::RegistryConvergence::default(),
        ));
    }
    if registry.checks.no_stale_endpoints {
        out.push(Box::new(
            super::no_stale_endpoints::NoStaleEndpoints::default(),
        ));
    }
    if registry.checks.withdrawn_disappear {
        out.push(Box::new(
            super::withdrawn_disappear::WithdrawnDisappear::default(),
        ));
    }
    out
}

/// `n3/coder-1 v1025`.
pub fn key_name(key: &(usize, String), version: Option<u64>) -> String {
    match version {
        Some(v) => format!("n{}/{} v{v}", key.0 + 1, key.1),
        None => format!("n{}/{}", key.0 + 1, key.1),
    }
}
