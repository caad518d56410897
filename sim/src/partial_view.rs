//! Partial-view membership in core mode (`membership = "partial"`): every node runs the node's
//! HyParView + Plumtree core ([`Overlay`], `gossip/src/overlay/`) alone — no SWIM, so no node
//! holds the whole member list and memory grows with N, not N². This is what lets core mode run
//! 100,000 nodes; full-membership SWIM at that size is refused up front
//! ([`crate::check_capacity`]).
//!
//! The engine is core mode's: one priority queue of `(virtual time, sequence)` events
//! (deliveries, node wake-ups, timeline actions, samples), the scenario's network model
//! ([`crate::net::Net`]: topology latency, jitter, loss, duplication, reordering, bandwidth, partitions) and
//! timeline (`kill`, `restart`, `partition`, `heal`, `loss`, `pause`, `resume`; `skew` is refused
//! when the scenario is loaded), the same trace hashing and the same [`RunReport`].
//!
//! What stands in for SWIM, and what is modelled:
//!
//! - **Failure detection is real:** the overlay's optional keepalive (`docs/protocols/overlay.md`
//!   §4.4), always on in this mode, drops neighbours that went silent. Nothing here calls
//!   `peer_down`.
//! - **Healing after a partition is real:** the overlay's optional active-view rotation (same
//!   section), on by default in this mode.
//! - **Bootstrap is modelled:** every node starts at t = 0, in index order; node `i > 0` joins
//!   through a uniformly random node `j < i` (as if each node's seed list named a node started
//!   before it; `crate::broadcast` bootstraps the same way). Node 0 waits to be joined. A
//!   restarted node joins through one of the scenario's `seeds` (other than itself; a random
//!   other node if it is the only seed), picked from the run's RNG. `peer_up` is never called.
//! - Node clocks are the virtual clock (no drift).
//!
//! Checkers: [`crate::invariants::overlay`]. A sample's "converged" value is the share of healthy
//! nodes in the largest overlay component of their network component (1.0 exactly when each
//! network component is one overlay component).

use std::collections::VecDeque;
use std::time::Duration;

use nexus_gossip::{MessageId, NodeId, Overlay, OverlayEvent, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::engine::{
    Progress, Receiver, RunLoop, SimEvent, WakeTimer, Wire, derive_seed, duration_us, finish_run,
    fmt_engine, node_addr, node_id_bytes, node_index, seeded_rng, wall_clock,
};
use crate::invariants::overlay::{self, OverlayInvariant, OverlayWorld, Probe, label_components};
use crate::invariants::overlay_connected::correct_share;
use crate::invariants::overlay_reach::PROBE_WINDOW;
use crate::invariants::{Truth, Verdict};
use crate::report::{LatencySummary, RunReport, Sample};
use crate::scenario::{Action, PartialScenario, Scenario};
use crate::trace::Trace;

/// Memory a partial-view run needs per node, rounded up from measurements (docs/BENCHMARKS.md,
/// "Partial-view membership"): the overlay core with its views, timers and message cache, the
/// engine's per-node state, and its share of datagrams in flight and of each sample's graph.
pub const PARTIAL_BYTES_PER_NODE: u64 = 16 * 1024;

/// Memory a partial-view run of `nodes` nodes needs (linear in N: views are bounded).
pub fn memory_estimate(nodes: usize) -> u64 {
    nodes as u64 * PARTIAL_BYTES_PER_NODE + (64 << 20)
}

/// Payload size of a broadcast probe.
const PROBE_PAYLOAD_BYTES: usize = 64;

/// Partial-view mode schedules only the engine's common events.
type Ev = SimEvent<std::convert::Infallible>;

#[derive(Debug)]
struct Node {
    core: Option<Overlay>,
    inbox: VecDeque<(usize, Vec<u8>)>,
    wake: WakeTimer,
}

/// A broadcast probe in flight.
#[derive(Debug)]
struct Running {
    id: MessageId,
    origin: usize,
    started_us: u64,
    got: Vec<bool>,
    /// Microseconds from the start to each delivery, in delivery order.
    latencies_us: Vec<u64>,
}

/// A partial-view simulation of one scenario with one seed.
pub struct PartialSim<'s> {
    scenario: &'s Scenario,
    partial: &'s PartialScenario,
    seed: u64,
    now_us: u64,
    /// The network model, the event queue, the counters and the trace.
    wire: Wire<std::convert::Infallible>,
    nodes: Vec<Node>,
    truth: Vec<Truth>,
    down_since: Vec<Option<Duration>>,
    /// Contacts and probes.
    aux_rng: StdRng,
    checkers: Vec<Box<dyn OverlayInvariant>>,
    samples: Vec<Sample>,
    probe: Option<Running>,
    /// Delivery latencies of the probes evaluated so far (reported, never traced).
    probe_latencies_us: Vec<u64>,
}

impl std::fmt::Debug for PartialSim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_engine(f, "PartialSim", self.scenario, self.seed, self.now_us)
    }
}

impl<'s> PartialSim<'s> {
    /// A simulation ready to run.
    ///
    /// # Panics
    /// If the scenario is not a partial-view one.
    pub fn new(scenario: &'s Scenario, seed: u64, trace: Trace) -> Self {
        let partial = scenario
            .partial
            .as_ref()
            .expect("PartialSim runs membership = \"partial\" scenarios only");
        let n = scenario.nodes;
        let truth = node_id_bytes(seed, n)
            .map(|id| Truth::new(NodeId(id)))
            .collect();
        let mut sim = PartialSim {
            scenario,
            partial,
            seed,
            now_us: 0,
            wire: Wire::new(scenario, seed, trace, []),
            nodes: (0..n)
                .map(|_| Node {
                    core: None,
                    inbox: VecDeque::new(),
                    wake: WakeTimer::default(),
                })
                .collect(),
            truth,
            down_since: vec![None; n],
            aux_rng: seeded_rng(seed, 7, 0),
            checkers: overlay::all(partial),
            samples: Vec::new(),
            probe: None,
            probe_latencies_us: Vec::new(),
        };
        sim.wire.queue.push(0, Ev::Sample);
        sim
    }

    /// Runs to the scenario's end and reports. `progress` is called about every 1 % of the run.
    pub fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        let wall = wall_clock();
        let mut run = RunLoop::new(self.scenario.duration, progress);
        let end_us = run.end_us();
        for i in 0..self.nodes.len() {
            let contact = (i > 0).then(|| self.aux_rng.random_range(0..i));
            self.start_node(i, contact);
        }
        while let Some((at, ev)) = run.next(&mut self.wire.queue) {
            self.now_us = at;
            match ev {
                Ev::Deliver { from, to, payload } => self.deliver(from, to, payload),
                Ev::Wake { node, token } => self.wake(node, token),
                Ev::Action(k) => self.act(k),
                Ev::Sample => {
                    self.sample();
                    let next = at + duration_us(self.scenario.sample_every);
                    self.wire.queue.push(next, Ev::Sample);
                }
                Ev::Own(never) => match never {},
            }
        }
        self.now_us = end_us;
        self.sample();
        let verdicts = self.finish();
        let latency = LatencySummary::from_ms(
            "broadcast delivery: from a probe's start at its origin to its delivery at each node",
            self.probe_latencies_us
                .iter()
                .map(|us| *us as f64 / 1000.0)
                .collect(),
        );
        let mut report = finish_run(
            self.scenario,
            self.seed,
            wall,
            end_us,
            self.wire.stats,
            &mut self.wire.trace,
            verdicts,
            std::mem::take(&mut self.samples),
        );
        report.latency = latency;
        report
    }

    fn start_node(&mut self, i: usize, contact: Option<usize>) {
        let t = &mut self.truth[i];
        t.generation += 1;
        t.up = true;
        t.paused = false;
        t.disturbed_at = Duration::from_micros(self.now_us);
        self.down_since[i] = None;
        let mut core = Overlay::new(
            node_addr(i),
            self.partial.overlay.clone(),
            derive_seed(self.seed, 3 + i as u64, t.generation),
        );
        let now = Timestamp::from_micros(self.now_us);
        // The first node has nobody to join: it waits to be joined (its timers start with
        // the first datagram it takes).
        if let Some(c) = contact {
            core.join(now, node_addr(c));
        }
        self.nodes[i].core = Some(core);
        self.after_step(i);
    }

    /// The contact a restarted node joins through (see the module docs).
    fn restart_contact(&mut self, i: usize) -> usize {
        let seeds: Vec<usize> = self
            .scenario
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != i)
            .collect();
        if seeds.is_empty() {
            let n = self.nodes.len();
            let k = self.aux_rng.random_range(0..n - 1);
            if k >= i { k + 1 } else { k }
        } else {
            seeds[self.aux_rng.random_range(0..seeds.len())]
        }
    }

    fn deliver(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        let node = &mut self.nodes[to];
        let receiver = match (&node.core, self.truth[to].paused) {
            (None, _) => Receiver::Crashed,
            (Some(_), true) => Receiver::Paused(&mut node.inbox),
            (Some(_), false) => Receiver::Running,
        };
        let Some(payload) = self.wire.arrive(self.now_us, (from, to), receiver, payload) else {
            return;
        };
        let now = Timestamp::from_micros(self.now_us);
        if let Some(core) = self.nodes[to].core.as_mut()
            && let Err(e) = core.handle_datagram(now, node_addr(from), &payload)
        {
            // Only cores send here, and they emit valid datagrams: a refusal is a bug.
            panic!("n{} refused a datagram from n{}: {e}", to + 1, from + 1);
        }
        self.after_step(to);
    }

    fn wake(&mut self, i: usize, token: u64) {
        let node = &mut self.nodes[i];
        if self.truth[i].paused || !node.wake.fire(token) {
            return;
        }
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(Timestamp::from_micros(self.now_us));
        }
        self.after_step(i);
    }

    /// Drains node `i`'s outputs, checks its invariants and re-arms its wake-up.
    fn after_step(&mut self, i: usize) {
        let mut sends = Vec::new();
        let next = {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            while let Some(t) = core.poll_transmit() {
                sends.push(t);
            }
            while let Some(e) = core.poll_event() {
                if let OverlayEvent::Delivered { id, .. } = e
                    && let Some(p) = self.probe.as_mut()
                    && p.id == id
                    && !p.got[i]
                {
                    p.got[i] = true;
                    p.latencies_us
                        .push(self.now_us.saturating_sub(p.started_us));
                }
            }
            core.check_invariants();
            core.poll_timeout()
        };
        for t in sends {
            let Some(to) = node_index(t.dst).filter(|j| *j < self.nodes.len()) else {
                continue;
            };
            self.wire.send(self.now_us, (i, to), t.payload);
        }
        let node = &mut self.nodes[i];
        let at = next.map(|l| l.as_micros().max(self.now_us));
        if let (Some(at), Some(token)) = (at, node.wake.arm(at)) {
            self.wire.queue.push(at, Ev::Wake { node: i, token });
        }
    }

    fn act(&mut self, k: usize) {
        let action = self.scenario.timeline[k].action.clone();
        let now = Duration::from_micros(self.now_us);
        if self.wire.act(self.now_us, &action) {
            Truth::disturb_all(&mut self.truth, now);
        }
        match action {
            Action::Kill(set) => {
                for i in set {
                    let node = &mut self.nodes[i];
                    if node.core.take().is_none() {
                        continue;
                    }
                    node.inbox.clear();
                    node.wake.cancel();
                    let t = &mut self.truth[i];
                    t.up = false;
                    t.paused = false;
                    t.disturbed_at = now;
                    self.down_since[i] = Some(now);
                }
            }
            Action::Restart(set) => {
                for i in set {
                    if self.nodes[i].core.is_none() {
                        let contact = self.restart_contact(i);
                        self.start_node(i, Some(contact));
                    }
                }
            }
            Action::Partition(_)
            | Action::PartitionOneWay { .. }
            | Action::Heal
            | Action::Loss { .. } => {}
            Action::Pause(set) => {
                for i in set {
                    if self.nodes[i].core.is_some() {
                        self.truth[i].paused = true;
                        self.truth[i].disturbed_at = now;
                    }
                }
            }
            Action::Resume(set) => {
                for i in set {
                    if self.truth[i].paused {
                        self.truth[i].paused = false;
                        self.truth[i].disturbed_at = now;
                        self.resume(i);
                    }
                }
            }
            Action::Skew { .. } => {
                panic!("skew reached the partial-view engine: Scenario::check refuses it")
            }
        }
    }

    /// A paused node runs again: the datagrams buffered meanwhile first, then its overdue
    /// timers (its keepalive tick drops the neighbours that gave up on it).
    fn resume(&mut self, i: usize) {
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (from, payload) in inbox {
            self.deliver(from, i, payload);
        }
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.handle_timeout(Timestamp::from_micros(self.now_us));
        }
        self.nodes[i].wake.forget();
        self.after_step(i);
    }

    /// Network components of healthy nodes. Only nodes named by a partition since the last
    /// heal can be cut off; if any healthy node is not among them, it reaches every healthy
    /// node both ways, so all are one component. Otherwise (partitions cover everyone) the
    /// pairs are tested — only affordable for small runs, as is `Net::partition` itself.
    fn net_components(&self) -> Vec<usize> {
        let n = self.truth.len();
        let healthy = |i: usize| self.truth[i].healthy();
        let free = (0..n).find(|&i| healthy(i) && !self.wire.net.cut_nodes().contains(&i));
        if free.is_some() || !self.wire.net.any_cut() {
            let first = (0..n).find(|&i| healthy(i)).unwrap_or(usize::MAX);
            return (0..n)
                .map(|i| if healthy(i) { first } else { usize::MAX })
                .collect();
        }
        let members: Vec<usize> = (0..n).filter(|&i| healthy(i)).collect();
        label_components(n, healthy, |a, out| {
            out.extend(
                members
                    .iter()
                    .copied()
                    .filter(|&b| b != a && self.wire.net.connected(a, b)),
            );
        })
    }

    fn sample(&mut self) {
        let n = self.nodes.len();
        let now = Duration::from_micros(self.now_us);
        let active: Vec<Vec<usize>> = (0..n)
            .map(|i| match (&self.nodes[i].core, self.truth[i].healthy()) {
                (Some(core), true) => {
                    let mut v: Vec<usize> = core
                        .active_view()
                        .into_iter()
                        .filter_map(node_index)
                        .collect();
                    v.sort_unstable();
                    v
                }
                _ => Vec::new(),
            })
            .collect();
        let net_comp = self.net_components();
        let truth = &self.truth;
        let overlay_comp = label_components(
            n,
            |i| truth[i].healthy(),
            |a, out| {
                out.extend(
                    active[a]
                        .iter()
                        .copied()
                        .filter(|&b| active[b].binary_search(&a).is_ok()),
                )
            },
        );
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.overlay_world(&active, &net_comp, &overlay_comp);
        for c in &mut checkers {
            c.on_sample(&world);
        }
        // Broadcast probes (liveness phase only, one at a time).
        let mut evaluated = None;
        if let Some(p) = &self.probe
            && self.now_us >= p.started_us + duration_us(PROBE_WINDOW)
        {
            let origin_comp = net_comp[p.origin];
            let (mut expected, mut reached) = (0, 0);
            if origin_comp != usize::MAX {
                for i in (0..n).filter(|&i| net_comp[i] == origin_comp) {
                    expected += 1;
                    reached += usize::from(p.got[i]);
                }
            }
            evaluated = Some(Probe {
                started: Duration::from_micros(p.started_us),
                origin: p.origin,
                expected,
                reached,
            });
        }
        if let Some(result) = &evaluated {
            // An origin that crashed or paused meanwhile proves nothing about the overlay.
            if result.expected > 0 {
                for c in &mut checkers {
                    c.on_probe(&world, result);
                }
            }
        }
        let (converged, _, _) = correct_share(&world);
        let liveness_us = duration_us(world.liveness_from());
        self.checkers = checkers;
        let healthy = self.truth.iter().filter(|t| t.healthy()).count();
        if evaluated.is_some()
            && let Some(p) = self.probe.take()
        {
            self.probe_latencies_us.extend(p.latencies_us);
        }
        let end_us = duration_us(self.scenario.duration);
        if self.partial.broadcast_reach_min.is_some()
            && self.probe.is_none()
            && self.now_us >= liveness_us
            && self.now_us + duration_us(PROBE_WINDOW) <= end_us
            && healthy > 0
        {
            self.start_probe();
        }
        self.samples.push(Sample {
            t_s: now.as_secs_f64(),
            converged,
            healthy,
            delivered: self.wire.stats.delivered,
        });
    }

    fn start_probe(&mut self) {
        let n = self.nodes.len();
        let origin = loop {
            let i = self.aux_rng.random_range(0..n);
            if self.truth[i].healthy() {
                break i;
            }
        };
        let mut payload = vec![0u8; PROBE_PAYLOAD_BYTES];
        self.aux_rng.fill_bytes(&mut payload);
        let now = Timestamp::from_micros(self.now_us);
        let Some(core) = self.nodes[origin].core.as_mut() else {
            return;
        };
        let id = match core.broadcast(now, payload) {
            Ok(id) => id,
            Err(e) => panic!("a {PROBE_PAYLOAD_BYTES}-byte probe was refused: {e}"),
        };
        let mut got = vec![false; n];
        got[origin] = true;
        self.probe = Some(Running {
            id,
            origin,
            started_us: self.now_us,
            got,
            latencies_us: Vec::new(),
        });
        self.after_step(origin);
    }

    fn finish(&mut self) -> Vec<Verdict> {
        let n = self.nodes.len();
        // Verdicts read only times and bounds from the world; the graph is not needed.
        let active: Vec<Vec<usize>> = vec![Vec::new(); n];
        let comp = vec![usize::MAX; n];
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.overlay_world(&active, &comp, &comp);
        checkers.iter_mut().map(|c| c.finish(&world)).collect()
    }

    /// What the overlay checkers see now, given the sample's graph.
    fn overlay_world<'w>(
        &'w self,
        active: &'w [Vec<usize>],
        net_comp: &'w [usize],
        overlay_comp: &'w [usize],
    ) -> OverlayWorld<'w> {
        OverlayWorld {
            now: Duration::from_micros(self.now_us),
            scenario: self.scenario,
            partial: self.partial,
            truth: &self.truth,
            active,
            net_comp,
            overlay_comp,
            down_since: &self.down_since,
        }
    }
}
