//! Core mode: a discrete-event engine (in the style of TigerBeetle's VOPR) that drives the
//! sans-IO membership cores directly, without tokio, sockets or threads.
//!
//! One priority queue of events ([`crate::queue::EventQueue`], shared by every engine) ordered
//! by `(virtual time, sequence number)` holds datagram deliveries, node timer wake-ups,
//! timeline actions and invariant samples. Every random choice
//! (network fate, node ids, each core's RNG) is drawn from generators seeded from the run's
//! seed, so a seed fixes the whole run.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nexus_gossip::{
    Event, MemberId, MemberMeta, Membership, NodeId, Timestamp, Transmit, is_overlay_kind,
};

use crate::engine::{
    Progress, Receiver, RunLoop, SimEvent, WakeTimer, Wire, derive_seed, duration_us, finish_run,
    fmt_engine, node_addr, node_id_bytes, node_index, wall_clock,
};
use crate::invariants::agreement;
use crate::invariants::{self, Invariant, NodeIds, Truth, World};
use crate::report::{RunReport, Sample};
use crate::scenario::{Action, Scenario};
use crate::trace::Trace;

type Ev = SimEvent<Own>;

mod registry;

pub use registry::{Drained, RegistryHost, drain_registry, fire_registry_timers};
use registry::{RegNode, RegSim};

/// Virtual time between two checks of whether every healthy node agrees on membership (the
/// resolution of the report's agreement times; see [`agreement::Watch`]).
pub const AGREEMENT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Core mode's own events.
#[derive(Debug)]
enum Own {
    /// A registry timeline entry (index into `RegistryScenario::actions`).
    RegAction(usize),
    /// A service process renews its registration (if `due` is still its renewal time).
    Renew { node: usize, id: String, due: u64 },
    /// Does every healthy node agree now? (Reads only; see [`agreement::Watch`].)
    AgreementCheck,
}

/// A node's clock: virtual time scaled by a drift that starts at `anchor_v`.
#[derive(Clone, Copy, Debug, Default)]
struct Clock {
    anchor_v_us: u64,
    anchor_l_us: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, v_us: u64) -> u64 {
        let dv = v_us.saturating_sub(self.anchor_v_us) as i128;
        let dl = dv * (1_000_000 + self.drift_ppm as i128) / 1_000_000;
        (self.anchor_l_us as i128 + dl).max(0) as u64
    }

    /// The earliest virtual time at which the local clock reads at least `l_us`.
    fn virtual_at(&self, l_us: u64) -> u64 {
        let dl = l_us.saturating_sub(self.anchor_l_us) as i128;
        let rate = 1_000_000 + self.drift_ppm as i128;
        let dv = (dl * 1_000_000 + rate - 1) / rate;
        self.anchor_v_us + dv.max(0) as u64
    }
}

struct SimNode {
    core: Option<Membership>,
    /// Overlay and registry, while the node runs and the scenario uses the registry.
    reg: Option<RegNode>,
    clock: Clock,
    inbox: VecDeque<(usize, Vec<u8>)>,
    wake: WakeTimer,
}

/// A core-mode simulation of one scenario with one seed.
pub struct CoreSim<'s> {
    scenario: &'s Scenario,
    seed: u64,
    now_us: u64,
    /// The network model, the event queue, the counters and the trace.
    wire: Wire<Own>,
    nodes: Vec<SimNode>,
    /// Ground truth per node, kept beside `nodes` so checkers get a slice.
    truth: Vec<Truth>,
    ids: NodeIds,
    checkers: Vec<Box<dyn Invariant>>,
    samples: Vec<Sample>,
    reg: Option<Box<RegSim<'s>>>,
    /// When agreement holds, for the report.
    watch: agreement::Watch,
    /// When [`CoreSim::run`] started (wall clock; never reaches the trace).
    wall_start: Option<Instant>,
}

impl std::fmt::Debug for CoreSim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_engine(f, "CoreSim", self.scenario, self.seed, self.now_us)
    }
}

impl<'s> CoreSim<'s> {
    /// A simulation ready to run. `trace` receives every event.
    pub fn new(scenario: &'s Scenario, seed: u64, trace: Trace) -> Self {
        let n = scenario.nodes;
        let mut nodes = Vec::with_capacity(n);
        let mut truth = Vec::with_capacity(n);
        let mut ids = NodeIds::default();
        let mut keys = Vec::new();
        for (i, mut id) in node_id_bytes(seed, n).enumerate() {
            if scenario.registry.is_some() {
                // As on a real node, the node id is the public half of the node's key (whose
                // secret derives from the run seed): the registry signs adverts with it and
                // membership's verdicts name it.
                let key = SigningKey::from_bytes(&id);
                id = key.verifying_key().to_bytes();
                keys.push(key);
            }
            ids.insert(NodeId(id), i);
            truth.push(Truth::new(NodeId(id)));
            nodes.push(SimNode {
                core: None,
                reg: None,
                clock: Clock::default(),
                inbox: VecDeque::new(),
                wake: WakeTimer::default(),
            });
        }
        let registry_timeline = scenario.registry.iter().flat_map(|cfg| {
            cfg.actions
                .iter()
                .enumerate()
                .map(|(k, t)| (t.at, t.index, Own::RegAction(k)))
        });
        let mut sim = CoreSim {
            scenario,
            seed,
            now_us: 0,
            wire: Wire::new(scenario, seed, trace, registry_timeline),
            nodes,
            truth,
            ids,
            checkers: invariants::all(),
            samples: Vec::new(),
            watch: agreement::Watch::new(n, AGREEMENT_CHECK_EVERY),
            wall_start: None,
            reg: scenario
                .registry
                .as_ref()
                .map(|cfg| Box::new(RegSim::new(cfg, keys, n))),
        };
        sim.wire.queue.push(0, Ev::Sample);
        sim
    }

    /// Runs to the scenario's end and reports. `progress` is called about every 1% of the run.
    pub fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        let wall = wall_clock();
        self.wall_start = Some(wall);
        let mut run = RunLoop::new(self.scenario.duration, progress);
        let end_us = run.end_us();
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        self.wire.queue.push(0, Ev::Own(Own::AgreementCheck));
        self.registry_after_action(false);
        while let Some((at, ev)) = run.next(&mut self.wire.queue) {
            self.now_us = at;
            match ev {
                Ev::Deliver { from, to, payload } => self.deliver(from, to, payload),
                Ev::Wake { node, token } => self.wake(node, token),
                Ev::Action(k) => self.act(k),
                Ev::Own(Own::RegAction(k)) => self.reg_act(k),
                Ev::Own(Own::Renew { node, id, due }) => self.renew(node, id, due),
                Ev::Sample => {
                    self.sample();
                    let next = at + duration_us(self.scenario.sample_every);
                    self.wire.queue.push(next, Ev::Sample);
                }
                Ev::Own(Own::AgreementCheck) => {
                    self.check_agreement();
                    let next = at + duration_us(self.watch.every()).max(1);
                    self.wire.queue.push(next, Ev::Own(Own::AgreementCheck));
                }
            }
        }
        self.now_us = end_us;
        self.sample();
        let mut checkers = std::mem::take(&mut self.checkers);
        let mut verdicts: Vec<_> = {
            let world = self.world();
            checkers.iter_mut().map(|c| c.finish(&world)).collect()
        };
        let registry_summary = self.registry_finish(&mut verdicts);
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
        report.latency = registry_summary.as_ref().and_then(|r| {
            crate::report::LatencySummary::from_ms(
                "withdrawal spread: from a withdrawal (or lease expiry) at its origin until the \
                 last healthy node that held the service dropped it",
                r.withdrawals
                    .iter()
                    .filter_map(|w| w.gone_after_s)
                    .map(|s| s * 1000.0)
                    .collect(),
            )
        });
        report.registry = registry_summary;
        report.agreement = Some(self.watch.times());
        report
    }

    fn world(&self) -> World<'_> {
        World {
            now: Duration::from_micros(self.now_us),
            scenario: self.scenario,
            truth: &self.truth,
            net: &self.wire.net,
            ids: &self.ids,
        }
    }
}

impl CoreSim<'_> {
    /// One agreement check (see [`agreement::Watch`]); reads the cores, changes nothing.
    fn check_agreement(&mut self) {
        #[allow(
            clippy::disallowed_methods,
            reason = "wall time is only reported (time to agreement); it never reaches the trace"
        )]
        let wall_s = self.wall_start.map_or(0.0, |w| w.elapsed().as_secs_f64());
        let world = World {
            now: Duration::from_micros(self.now_us),
            scenario: self.scenario,
            truth: &self.truth,
            net: &self.wire.net,
            ids: &self.ids,
        };
        let nodes = &self.nodes;
        self.watch.check(&world, wall_s, |i| nodes[i].core.as_ref());
    }

    fn start_node(&mut self, i: usize) {
        self.watch.invalidate();
        let truth = &mut self.truth[i];
        truth.generation += 1;
        truth.up = true;
        truth.paused = false;
        truth.disturbed_at = Duration::from_micros(self.now_us);
        let meta = MemberMeta::new(crate::scenario::Scenario::node_name(i), None, "sim", vec![])
            .unwrap_or_default();
        let identity = MemberId::new(node_addr(i), truth.node_id, truth.generation, meta);
        let mut core = Membership::new(
            identity,
            self.scenario.gossip.clone(),
            derive_seed(self.seed, 3 + i as u64, truth.generation),
        );
        let node = &mut self.nodes[i];
        let seeds: Vec<SocketAddr> = self.scenario.seeds.iter().map(|&s| node_addr(s)).collect();
        let local = node.clock.local(self.now_us);
        core.join(Timestamp::from_micros(local), &seeds);
        node.core = Some(core);
        if self.reg.is_some() {
            self.start_registry(i);
        }
        self.after_step(i);
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
        let local = Timestamp::from_micros(node.clock.local(self.now_us));
        // One address, two cores: the kind byte of the common prefix tells them apart, as in
        // the gossip actor. Rejections (duplicates from ourselves, malformed) are part of the
        // run; the cores count them.
        match node.reg.as_mut() {
            Some(reg) if payload.len() > 2 && is_overlay_kind(payload[2]) => {
                let _ = reg
                    .overlay
                    .handle_datagram(local, node_addr(from), &payload);
            }
            _ => {
                if let Some(core) = node.core.as_mut() {
                    let _ = core.handle_datagram(local, node_addr(from), &payload);
                }
            }
        }
        self.after_step(to);
    }

    fn wake(&mut self, i: usize, token: u64) {
        let node = &mut self.nodes[i];
        if self.truth[i].paused || !node.wake.fire(token) {
            return;
        }
        let local = Timestamp::from_micros(node.clock.local(self.now_us));
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(local);
        }
        if let Some(reg) = node.reg.as_mut() {
            reg.overlay.handle_timeout(local);
        }
        self.registry_timers(i);
        self.after_step(i);
    }

    /// Routes what node `i` emitted, records its events, feeds the checkers, re-arms its timer.
    fn after_step(&mut self, i: usize) {
        let mut sends = Vec::new();
        let mut events = Vec::new();
        let mut next = {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            while let Some(t) = core.poll_transmit() {
                sends.push(t);
            }
            while let Some(e) = core.poll_event() {
                events.push(e);
            }
            core.check_invariants();
            core.poll_timeout()
        };
        self.route(i, sends);
        for e in events {
            self.on_event(i, &e);
        }
        if self.nodes[i].reg.is_some() {
            self.pump_registry(i);
            let mut sends = Vec::new();
            if let Some(reg) = self.nodes[i].reg.as_mut() {
                while let Some(t) = reg.overlay.poll_transmit() {
                    sends.push(t);
                }
                reg.overlay.check_invariants();
                for at in [reg.overlay.poll_timeout(), reg.node.poll_timeout()]
                    .into_iter()
                    .flatten()
                {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            self.route(i, sends);
        }
        let node = &mut self.nodes[i];
        let at = next.map(|l| node.clock.virtual_at(l.as_micros()).max(self.now_us));
        if let (Some(at), Some(token)) = (at, node.wake.arm(at)) {
            self.wire.queue.push(at, Ev::Wake { node: i, token });
        }
    }

    /// Routes datagrams node `i` emitted.
    fn route(&mut self, i: usize, sends: Vec<Transmit>) {
        for t in sends {
            let Some(to) = node_index(t.dst) else {
                continue;
            };
            if to >= self.nodes.len() {
                continue;
            }
            self.wire.send(self.now_us, (i, to), t.payload);
        }
    }

    fn on_event(&mut self, i: usize, e: &Event) {
        if let Event::Rejoined(id) = e {
            // The node renewed itself in memory; persist it as its durable generation.
            self.truth[i].generation = id.generation();
            self.watch.invalidate();
        }
        if self.nodes[i].reg.is_some() {
            self.registry_on_member_event(i, e);
        }
        self.wire.trace.record_member(self.now_us, i, &self.ids, e);
        let mut checkers = std::mem::take(&mut self.checkers);
        {
            let world = self.world();
            for c in &mut checkers {
                c.on_event(&world, i, e);
            }
        }
        self.checkers = checkers;
    }

    fn act(&mut self, k: usize) {
        let action = self.scenario.timeline[k].action.clone();
        let now = Duration::from_micros(self.now_us);
        let touch = |sim: &mut Self, i: usize| sim.truth[i].disturbed_at = now;
        if self.wire.act(self.now_us, &action) {
            Truth::disturb_all(&mut self.truth, now);
        }
        match action {
            Action::Kill(set) => {
                for i in set {
                    let node = &mut self.nodes[i];
                    if let Some(rn) = node.reg.take()
                        && let Some(reg) = self.reg.as_mut()
                    {
                        // Its "disk": what the registry wrote through its store.
                        reg.stores[i] = rn.node.store().clone();
                        self.watch_forget(i);
                    }
                    let node = &mut self.nodes[i];
                    node.core = None;
                    node.inbox.clear();
                    self.truth[i].up = false;
                    self.truth[i].paused = false;
                    node.wake.cancel();
                    touch(self, i);
                }
            }
            Action::Restart(set) => {
                for i in set {
                    if self.nodes[i].core.is_none() {
                        self.start_node(i);
                        touch(self, i);
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
                        touch(self, i);
                    }
                }
            }
            Action::Resume(set) => {
                for i in set {
                    if self.truth[i].paused {
                        self.truth[i].paused = false;
                        touch(self, i);
                        self.resume(i);
                    }
                }
            }
            Action::Skew { nodes, drift_ppm } => {
                for i in nodes {
                    let c = &mut self.nodes[i].clock;
                    let local = c.local(self.now_us);
                    *c = Clock {
                        anchor_v_us: self.now_us,
                        anchor_l_us: local,
                        drift_ppm,
                    };
                    // Its timer deadline maps to a different virtual time now.
                    self.nodes[i].wake.cancel();
                    self.after_step(i);
                }
            }
        }
        self.watch.invalidate();
        if self.reg.is_some() {
            if let Action::Pause(set) = &self.scenario.timeline[k].action {
                for &i in set {
                    self.watch_forget(i);
                }
            }
            self.registry_after_action(true);
        }
    }

    fn resume(&mut self, i: usize) {
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (from, payload) in inbox {
            self.deliver(from, i, payload);
        }
        let local = Timestamp::from_micros(self.nodes[i].clock.local(self.now_us));
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.handle_timeout(local);
        }
        self.nodes[i].wake.forget();
        self.after_step(i);
    }

    fn sample(&mut self) {
        let mut checkers = std::mem::take(&mut self.checkers);
        let (converged, healthy) =
            {
                let world = self.world();
                // One node's view at a time: a sample never holds N member lists at once.
                let views = self.nodes.iter().zip(&self.truth).enumerate().filter_map(
                    |(i, (n, t))| match (&n.core, t.paused) {
                        (Some(core), false) => Some((i, core.members_unordered())),
                        _ => None,
                    },
                );
                (
                    invariants::sample(&world, &mut checkers, views),
                    world.truth.iter().filter(|t| t.healthy()).count(),
                )
            };
        self.checkers = checkers;
        self.samples.push(Sample {
            t_s: self.now_us as f64 / 1e6,
            converged,
            healthy,
            delivered: self.wire.stats.delivered,
        });
        self.registry_sample();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drifting_clock_inverts() {
        let c = Clock {
            anchor_v_us: 1_000,
            anchor_l_us: 5_000,
            drift_ppm: 250_000,
        };
        for l in [5_000, 5_001, 6_250, 1_000_000] {
            let v = c.virtual_at(l);
            assert!(c.local(v) >= l, "local({v}) = {} < {l}", c.local(v));
            assert!(v == 0 || c.local(v - 1) < l || v == c.anchor_v_us);
        }
        let slow = Clock {
            drift_ppm: -100_000,
            ..Clock::default()
        };
        assert_eq!(slow.local(1_000_000), 900_000);
    }
}
