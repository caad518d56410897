//! **Agreement (liveness).** Once the last disturbance in the timeline is `converge_within` old,
//! every healthy node's set of alive members must equal exactly the healthy nodes it can reach
//! (its connected component), at their current generations — and keep equalling it.
//!
//! Why: this is what membership is for. A node that still lists a crashed peer routes traffic
//! into a hole; one that misses a live peer wastes capacity. SWIM promises this only eventually,
//! so the check starts after the bound; faults before then are the safety checkers' business.

use std::collections::BTreeSet;
use std::time::Duration;

use nexus_gossip::{MemberState, MemberView, Membership};

use super::{Invariant, Verdict, World, components};
use crate::report::{AgreementTimes, Moment};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Agreement {
    checks: u64,
    first: Option<(Duration, String)>,
    /// The components of the sample in progress, when this sample is checked.
    expected: Option<Expected>,
}

/// Why node `i`'s view differs from its component, if it does.
pub fn disagreement(
    world: &World<'_>,
    comp: &[usize],
    i: usize,
    view: &[MemberView],
) -> Option<String> {
    let expected: BTreeSet<(usize, u64)> = (0..world.truth.len())
        .filter(|&j| comp[j] == comp[i])
        .map(|j| (j, world.truth[j].generation))
        .collect();
    let seen: BTreeSet<(usize, u64)> = view
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .filter_map(|m| {
            world
                .index_of(&m.id.node_id())
                .map(|j| (j, m.id.generation()))
        })
        .collect();
    if seen == expected {
        return None;
    }
    let name = |(j, g): &(usize, u64)| format!("n{}/g{g}", j + 1);
    let missing: Vec<String> = expected.difference(&seen).take(5).map(name).collect();
    let extra: Vec<String> = seen.difference(&expected).take(5).map(name).collect();
    Some(format!(
        "n{} sees {} alive, expected {}; missing [{}], unexpected [{}]",
        i + 1,
        seen.len(),
        expected.len(),
        missing.join(", "),
        extra.join(", ")
    ))
}

/// What every node of a sample should see, prepared once per sample so that checking one view
/// is a single pass over it (no sets built): [`Expected::agrees`] gives the same answer as
/// [`disagreement`]`.is_none()`, which is only needed to explain a disagreement.
#[derive(Debug)]
pub struct Expected {
    comp: Vec<usize>,
    /// Healthy nodes per component (indexed by the component's smallest member).
    sizes: Vec<u32>,
}

impl Expected {
    /// Expectations for the components `comp` (from [`components`]).
    pub fn new(world: &World<'_>, comp: Vec<usize>) -> Self {
        let mut sizes = vec![0u32; world.truth.len()];
        for &c in comp.iter().filter(|&&c| c != usize::MAX) {
            sizes[c] += 1;
        }
        Expected { comp, sizes }
    }

    /// Healthy nodes in node `i`'s component (`None` if `i` is not healthy).
    pub fn component_size(&self, i: usize) -> Option<u32> {
        let c = *self.comp.get(i)?;
        (c != usize::MAX).then(|| self.sizes[c])
    }

    /// Whether node `i`'s alive set is exactly its component, every member at its current
    /// generation.
    pub fn agrees(&self, world: &World<'_>, i: usize, view: &[MemberView]) -> bool {
        let mine = self.comp[i];
        if mine == usize::MAX {
            return disagreement(world, &self.comp, i, view).is_none();
        }
        let mut matched = 0u32;
        for m in view.iter().filter(|m| m.state == MemberState::Alive) {
            match world.index_of(&m.id.node_id()) {
                Some(j)
                    if self.comp[j] == mine && world.truth[j].generation == m.id.generation() =>
                {
                    matched += 1;
                }
                // A node outside the component, at another generation, or unknown (unknown
                // ids are ignored, as in `disagreement`).
                Some(_) => return false,
                None => {}
            }
        }
        // Rows are one per identity; two alive rows of one node at its current generation
        // cannot occur (one identity per address), so equal counts mean equal sets.
        matched == self.sizes[mine]
    }
}

/// Finds when agreement (every healthy node's alive set equal to its component, as
/// [`Expected::agrees`] decides it) holds, between samples and without comparing N views of N
/// members at every look: the engine calls [`Watch::check`] every [`Watch::every`] of virtual
/// time and [`Watch::invalidate`] whenever the ground truth or the network changes.
///
/// A node's verdict is kept with its member table's stamp ([`Membership::table_stamp`]) and
/// reused while neither the stamp nor the truth changed; a node with fewer active members than
/// its component has is decided by that count alone; and a check stops at the first node that
/// does not agree. Only reads the cores: it cannot change a run or its trace.
#[derive(Debug)]
pub struct Watch {
    every: Duration,
    /// What each node should see, for the current truth (`None`: to be computed).
    expected: Option<Expected>,
    /// Per node: the table stamp its verdict was reached at, and the verdict.
    verdicts: Vec<Option<(u64, bool)>>,
    holding: bool,
    times: AgreementTimes,
}

impl Watch {
    /// A watch over `nodes` nodes, checked every `every` of virtual time.
    pub fn new(nodes: usize, every: Duration) -> Self {
        Watch {
            every,
            expected: None,
            verdicts: vec![None; nodes],
            holding: false,
            times: AgreementTimes {
                check_every_s: every.as_secs_f64(),
                ..AgreementTimes::default()
            },
        }
    }

    /// How often the engine should call [`Watch::check`].
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The ground truth (a node's health or generation) or the network changed: every kept
    /// verdict is stale.
    pub fn invalidate(&mut self) {
        self.expected = None;
        self.verdicts.iter_mut().for_each(|v| *v = None);
    }

    /// Whether every healthy node agrees now; `core(i)` is node `i`'s core (`None` if it has
    /// none). `wall_s` is the wall-clock time since the run started, for the report.
    pub fn check<'c>(
        &mut self,
        world: &World<'_>,
        wall_s: f64,
        core: impl Fn(usize) -> Option<&'c Membership>,
    ) -> bool {
        let expected = self
            .expected
            .get_or_insert_with(|| Expected::new(world, components(world.truth, world.net)));
        let mut all = true;
        for (i, truth) in world.truth.iter().enumerate() {
            if !truth.healthy() {
                continue;
            }
            let (Some(core), Some(size)) = (core(i), expected.component_size(i)) else {
                all = false;
                break;
            };
            let stamp = core.table_stamp();
            let agrees = match self.verdicts[i] {
                Some((at, verdict)) if at == stamp => verdict,
                _ => {
                    // The local row plus at most one alive row per active member.
                    let verdict = core.active_members() + 1 >= size as usize && {
                        self.times.full_checks += 1;
                        expected.agrees(world, i, &core.members_unordered())
                    };
                    self.verdicts[i] = Some((stamp, verdict));
                    verdict
                }
            };
            if !agrees {
                all = false;
                break;
            }
        }
        let now = Moment {
            virtual_s: world.now.as_secs_f64(),
            wall_s,
        };
        if all && !self.holding {
            self.times.first.get_or_insert(now);
            self.times.held_since = Some(now);
        }
        if !all {
            self.times.held_since = None;
        }
        self.holding = all;
        all
    }

    /// What the watch found.
    pub fn times(&self) -> AgreementTimes {
        self.times.clone()
    }
}

impl Agreement {
    fn start(world: &World<'_>) -> Duration {
        world.scenario.last_disturbance() + world.scenario.bounds.converge_within
    }
}

impl Invariant for Agreement {
    fn name(&self) -> &'static str {
        "agreement"
    }

    fn begin_sample(&mut self, world: &World<'_>) {
        self.expected = (self.first.is_none() && world.now >= Self::start(world))
            .then(|| Expected::new(world, components(world.truth, world.net)));
        if self.expected.is_some() {
            self.checks += 1;
        }
    }

    fn on_view(&mut self, world: &World<'_>, node: usize, view: &[MemberView]) {
        let Some(expected) = &self.expected else {
            return;
        };
        if self.first.is_none()
            && !expected.agrees(world, node, view)
            && let Some(why) = disagreement(world, &expected.comp, node, view)
        {
            self.first = Some((world.now, why));
        }
    }

    fn end_sample(&mut self, _world: &World<'_>) {
        self.expected = None;
    }

    fn finish(&mut self, world: &World<'_>) -> Verdict {
        let start = Self::start(world);
        let (ok, detail) = match &self.first {
            Some((_, why)) => (false, why.clone()),
            None if self.checks == 0 => (
                false,
                format!(
                    "never checked: last disturbance {:?} + converge_within {:?} is past the end ({:?})",
                    world.scenario.last_disturbance(),
                    world.scenario.bounds.converge_within,
                    world.scenario.duration
                ),
            ),
            None => (
                true,
                format!(
                    "all connected nodes agreed from {:.1}s on ({} checks)",
                    start.as_secs_f64(),
                    self.checks
                ),
            ),
        };
        Verdict {
            invariant: self.name(),
            ok,
            detail,
            violated_at_s: self.first.as_ref().map(|(t, _)| t.as_secs_f64()),
        }
    }

    fn violation(&self) -> Option<(Duration, String)> {
        self.first.clone()
    }
}
