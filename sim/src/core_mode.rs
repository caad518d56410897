//! Core mode: a discrete-event engine (in the style of TigerBeetle's VOPR) that drives the
//! sans-IO membership cores directly, without tokio, sockets or threads.
//!
//! One priority queue of events ([`crate::queue::EventQueue`], shared by every engine) ordered
//! by `(virtual time, sequence number)` holds datagram deliveries, node timer wake-ups,
//! timeline actions and invariant samples. Every random choice
//! (network fate, node ids, each core's RNG) is drawn from generators seeded from the run's
//! seed, so a seed fixes the whole run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nexus_gossip::{
    Event, MemberId, MemberMeta, MemberState, Membership, NodeId, Overlay, OverlayConfig,
    OverlayEvent, Timestamp, Transmit, is_overlay_kind,
};
use nexus_registry::{
    Intent, K_MAX, MemoryStore, Millis, Output, RegistryNode, Resolution, Sad, ServiceKey,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::invariants::agreement;
use crate::invariants::registry::{Entries, RegistryInvariant, RegistryTruth, RegistryWorld};
use crate::invariants::{self, Invariant, NodeIds, Truth, World, components};
use crate::net::{Fate, Net};
use crate::queue::EventQueue;
use crate::report::{RegistrySummary, RunReport, Sample, WithdrawTiming};
use crate::scenario::{Action, RegistryAction, RegistryScenario, Scenario};
use crate::trace::{Trace, TraceEvent};

/// Datagrams buffered for a paused node; later ones are dropped (its socket buffer is full).
pub const PAUSED_INBOX_MAX: usize = 1024;
/// Gossip port every simulated node uses.
pub const SIM_PORT: u16 = 7946;
/// Virtual time between two checks of whether every healthy node agrees on membership (the
/// resolution of the report's agreement times; see [`agreement::Watch`]).
pub const AGREEMENT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The simulated address of node `i`: `127.a.b.c:7946` with `a.b.c` = i + 1. Nothing is ever
/// sent to it; loopback keeps it obviously local in traces.
pub fn node_addr(i: usize) -> SocketAddr {
    let v = (i as u32 + 1) & 0x00ff_ffff;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, (v >> 16) as u8, (v >> 8) as u8, v as u8),
        SIM_PORT,
    ))
}

/// Inverse of [`node_addr`].
pub fn node_index(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) if a.port() == SIM_PORT && a.ip().octets()[0] == 127 => {
            let [_, x, y, z] = a.ip().octets();
            let v = (u32::from(x) << 16) | (u32::from(y) << 8) | u32::from(z);
            (v as usize).checked_sub(1)
        }
        _ => None,
    }
}

/// SplitMix64: derives independent seeds from the run seed.
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        payload: Vec<u8>,
    },
    Wake {
        node: usize,
        token: u64,
    },
    Action(usize),
    /// A registry timeline entry (index into `RegistryScenario::actions`).
    RegAction(usize),
    /// A service process renews its registration (if `due` is still its renewal time).
    Renew {
        node: usize,
        id: String,
        due: u64,
    },
    Sample,
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
    wake_at: Option<u64>,
    wake_token: u64,
}

/// What a node runs besides membership when the scenario uses the registry: the gossip actor's
/// overlay and the registry actor's core, with the registry actor's two timers.
struct RegNode {
    overlay: Overlay,
    node: RegistryNode<MemoryStore>,
    /// Whether the overlay has sent its join (to the first member seen up).
    overlay_joined: bool,
    /// Next refresh, local µs.
    next_refresh: u64,
    /// Next anti-entropy round, local µs (`None`: disabled).
    next_anti_entropy: Option<u64>,
}

/// A registered service's process: renews its registration every `ttl_s / 2` while `renew`.
#[derive(Clone, Debug)]
struct Client {
    sad: Sad,
    renew: bool,
    due: u64,
}

/// Registry state of a run that isn't any one node's.
struct RegSim<'s> {
    cfg: &'s RegistryScenario,
    keys: Vec<SigningKey>,
    /// Each node's durable registry storage (survives crashes).
    stores: Vec<MemoryStore>,
    clients: Vec<BTreeMap<String, Client>>,
    truth: RegistryTruth,
    checkers: Vec<Box<dyn RegistryInvariant>>,
    intents: Vec<Intent>,
    /// Withdrawn/expired keys being watched until every holder dropped them: key →
    /// (index in `withdrawals`, remaining holders).
    watch: BTreeMap<(usize, String), (usize, u64, BTreeSet<usize>)>,
    summary: RegistrySummary,
    /// Last sample at which not every node's live set was right (for `converged_after_s`).
    last_unconverged: Option<f64>,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams delivered.
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped (any reason).
    pub dropped: u64,
}

/// Called with (virtual time, total) as the run advances, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(Duration, Duration);

/// A core-mode simulation of one scenario with one seed.
pub struct CoreSim<'s> {
    scenario: &'s Scenario,
    seed: u64,
    now_us: u64,
    /// Pending events, earliest `(time, sequence)` first.
    queue: EventQueue<Ev>,
    nodes: Vec<SimNode>,
    /// Ground truth per node, kept beside `nodes` so checkers get a slice.
    truth: Vec<Truth>,
    ids: NodeIds,
    net: Net,
    rng: StdRng,
    trace: Trace,
    checkers: Vec<Box<dyn Invariant>>,
    samples: Vec<Sample>,
    stats: NetStats,
    reg: Option<Box<RegSim<'s>>>,
    /// When agreement holds, for the report.
    watch: agreement::Watch,
    /// When [`CoreSim::run`] started (wall clock; never reaches the trace).
    wall_start: Option<Instant>,
}

impl std::fmt::Debug for CoreSim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CoreSim({}, seed {}, t={}us)",
            self.scenario.name, self.seed, self.now_us
        )
    }
}

impl<'s> CoreSim<'s> {
    /// A simulation ready to run. `trace` receives every event.
    pub fn new(scenario: &'s Scenario, seed: u64, trace: Trace) -> Self {
        let n = scenario.nodes;
        let mut id_rng = StdRng::seed_from_u64(derive_seed(seed, 1, 0));
        let mut nodes = Vec::with_capacity(n);
        let mut truth = Vec::with_capacity(n);
        let mut ids = NodeIds::default();
        let mut keys = Vec::new();
        for i in 0..n {
            let mut id = [0u8; 32];
            id_rng.fill_bytes(&mut id);
            if scenario.registry.is_some() {
                // As on a real node, the node id is the public half of the node's key (whose
                // secret derives from the run seed): the registry signs adverts with it and
                // membership's verdicts name it.
                let key = SigningKey::from_bytes(&id);
                id = key.verifying_key().to_bytes();
                keys.push(key);
            }
            ids.insert(NodeId(id), i);
            truth.push(Truth {
                node_id: NodeId(id),
                generation: 0,
                up: false,
                paused: false,
                disturbed_at: Duration::ZERO,
            });
            nodes.push(SimNode {
                core: None,
                reg: None,
                clock: Clock::default(),
                inbox: VecDeque::new(),
                wake_at: None,
                wake_token: 0,
            });
        }
        let mut sim = CoreSim {
            scenario,
            seed,
            now_us: 0,
            queue: EventQueue::new(),
            nodes,
            truth,
            ids,
            net: Net::new(n, scenario.topology.clone(), scenario.network.clone()),
            rng: StdRng::seed_from_u64(derive_seed(seed, 2, 0)),
            trace,
            checkers: invariants::all(),
            samples: Vec::new(),
            stats: NetStats::default(),
            watch: agreement::Watch::new(n, AGREEMENT_CHECK_EVERY),
            wall_start: None,
            reg: scenario.registry.as_ref().map(|cfg| {
                Box::new(RegSim {
                    cfg,
                    keys,
                    stores: vec![MemoryStore::default(); n],
                    clients: vec![BTreeMap::new(); n],
                    truth: RegistryTruth {
                        local: vec![BTreeMap::new(); n],
                        unhealthy_since: vec![Some(Duration::ZERO); n],
                        comp: vec![usize::MAX; n],
                        ..RegistryTruth::default()
                    },
                    checkers: invariants::registry::all(cfg),
                    intents: cfg
                        .tasks
                        .iter()
                        .map(|t| Intent {
                            k: K_MAX,
                            ..Intent::new(t.clone())
                        })
                        .collect(),
                    watch: BTreeMap::new(),
                    summary: RegistrySummary::default(),
                    last_unconverged: None,
                })
            }),
        };
        match &scenario.registry {
            None => {
                for (k, _) in scenario.timeline.iter().enumerate() {
                    let at = duration_us(scenario.timeline[k].at);
                    sim.push(at, Ev::Action(k));
                }
            }
            Some(cfg) => {
                // Both timelines in time order, file order at one instant.
                let mut all: Vec<(Duration, usize, Ev)> = scenario
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(k, t)| (t.at, t.index, Ev::Action(k)))
                    .chain(
                        cfg.actions
                            .iter()
                            .enumerate()
                            .map(|(k, t)| (t.at, t.index, Ev::RegAction(k))),
                    )
                    .collect();
                all.sort_by_key(|(at, index, _)| (*at, *index));
                for (at, _, ev) in all {
                    sim.push(duration_us(at), ev);
                }
            }
        }
        sim.push(0, Ev::Sample);
        sim
    }

    fn push(&mut self, at_us: u64, ev: Ev) {
        self.queue.push(at_us, ev);
    }

    /// Runs to the scenario's end and reports. `progress` is called about every 1% of the run.
    pub fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        #[allow(
            clippy::disallowed_methods,
            reason = "wall time is only reported (speed ratio); it never reaches the trace"
        )]
        let wall = Instant::now();
        self.wall_start = Some(wall);
        let end_us = duration_us(self.scenario.duration);
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        self.push(0, Ev::AgreementCheck);
        self.registry_after_action(false);
        let mut progress = progress;
        let step_us = (end_us / 100).max(1);
        let mut next_progress = step_us;
        while let Some(at) = self.queue.peek_time() {
            if at > end_us {
                break;
            }
            let Some((_, ev)) = self.queue.pop() else {
                break;
            };
            self.now_us = at;
            match ev {
                Ev::Deliver { from, to, payload } => self.deliver(from, to, payload),
                Ev::Wake { node, token } => self.wake(node, token),
                Ev::Action(k) => self.act(k),
                Ev::RegAction(k) => self.reg_act(k),
                Ev::Renew { node, id, due } => self.renew(node, id, due),
                Ev::Sample => {
                    self.sample();
                    let next = at + duration_us(self.scenario.sample_every);
                    self.push(next, Ev::Sample);
                }
                Ev::AgreementCheck => {
                    self.check_agreement();
                    let next = at + duration_us(self.watch.every()).max(1);
                    self.push(next, Ev::AgreementCheck);
                }
            }
            if at >= next_progress {
                if let Some(p) = progress.as_mut() {
                    p(Duration::from_micros(at), self.scenario.duration);
                }
                next_progress = at + step_us;
            }
        }
        self.now_us = end_us;
        self.sample();
        let mut checkers = std::mem::take(&mut self.checkers);
        let mut verdicts: Vec<_> = {
            let world = self.world();
            checkers.iter_mut().map(|c| c.finish(&world)).collect()
        };
        let mut registry_summary = None;
        if let Some(mut reg) = self.reg.take() {
            let mut rc = std::mem::take(&mut reg.checkers);
            {
                let world = self.world();
                let rw = RegistryWorld {
                    world: &world,
                    registry: reg.cfg,
                    truth: &reg.truth,
                };
                verdicts.extend(rc.iter_mut().map(|c| c.finish(&rw)));
            }
            let mut summary = std::mem::take(&mut reg.summary);
            summary.last_change_s = reg.truth.last_change.as_secs_f64();
            summary.converged_after_s = match reg.last_unconverged {
                None => Some(0.0),
                Some(t) => summary
                    .curve
                    .iter()
                    .find(|(st, _)| *st > t)
                    .map(|(st, _)| (st - summary.last_change_s).max(0.0)),
            };
            registry_summary = Some(summary);
        }
        for v in verdicts.iter().filter(|v| !v.ok) {
            self.trace.record(
                TraceEvent::Violation {
                    t_us: v.violated_at_s.map(|s| (s * 1e6) as u64).unwrap_or(end_us),
                    invariant: v.invariant,
                    detail: v.detail.clone(),
                },
                None,
            );
        }
        let trace_error = self.trace.finish().err().map(|e| e.to_string());
        let mut report = RunReport::new(
            self.scenario,
            self.seed,
            wall.elapsed(),
            self.stats,
            self.trace.hash_hex(),
            self.trace.events(),
            verdicts,
            std::mem::take(&mut self.samples),
            trace_error,
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
            net: &self.net,
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
            net: &self.net,
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

    /// Starts node `i`'s overlay and registry from its durable storage, as the gossip and
    /// registry actors do on a (re)start.
    fn start_registry(&mut self, i: usize) {
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        let generation = self.truth[i].generation;
        let local = self.nodes[i].clock.local(self.now_us);
        let overlay = Overlay::new(
            node_addr(i),
            OverlayConfig::default(),
            derive_seed(self.seed, 3 + i as u64, generation).rotate_left(17),
        );
        let store = reg.stores[i].clone();
        let floor = store.version_floor;
        let stored = store.services.clone();
        let restored = stored.len();
        let node = match RegistryNode::new(local / 1000, reg.keys[i].clone(), store, floor, stored)
        {
            Ok(node) => node,
            Err(e) => {
                self.trace.record(
                    TraceEvent::Registry {
                        t_us: self.now_us,
                        node: i,
                        event: format!("start failed: {e}"),
                    },
                    None,
                );
                return;
            }
        };
        // The registry actor's interval timers start with the actor; each node gets its own
        // phase so the fabric's refreshes do not all land on one instant.
        let refresh = duration_us(reg.cfg.refresh).max(1);
        let phase = derive_seed(self.seed, 5, i as u64);
        let next_anti_entropy = reg
            .cfg
            .anti_entropy
            .map(|a| local + 1 + derive_seed(phase, 6, generation) % duration_us(a).max(1));
        self.nodes[i].reg = Some(RegNode {
            overlay,
            node,
            overlay_joined: false,
            next_refresh: local + 1 + phase % refresh,
            next_anti_entropy,
        });
        reg.truth.unhealthy_since[i] = None;
        if restored > 0 {
            self.trace.record(
                TraceEvent::Registry {
                    t_us: self.now_us,
                    node: i,
                    event: format!("restored {restored} services from storage"),
                },
                None,
            );
        }
        self.sync_truth(i);
    }

    fn deliver(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        let node = &mut self.nodes[to];
        if node.core.is_none() {
            self.trace.record(
                TraceEvent::Drop {
                    t_us: self.now_us,
                    from,
                    to,
                    reason: "crashed",
                },
                None,
            );
            self.stats.dropped += 1;
            return;
        }
        if self.truth[to].paused {
            if node.inbox.len() >= PAUSED_INBOX_MAX {
                self.trace.record(
                    TraceEvent::Drop {
                        t_us: self.now_us,
                        from,
                        to,
                        reason: "paused-overflow",
                    },
                    None,
                );
                self.stats.dropped += 1;
            } else {
                node.inbox.push_back((from, payload));
            }
            return;
        }
        self.stats.delivered += 1;
        self.stats.bytes += payload.len() as u64;
        self.trace.record(
            TraceEvent::Deliver {
                t_us: self.now_us,
                from,
                to,
                bytes: payload.len(),
            },
            Some(&payload),
        );
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
        if token != node.wake_token || self.truth[i].paused {
            return;
        }
        node.wake_at = None;
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

    /// The registry actor's timers: refresh (with the member-list reconciliation) and
    /// anti-entropy.
    fn registry_timers(&mut self, i: usize) {
        let Some(cfg) = self.reg.as_ref().map(|r| r.cfg) else {
            return;
        };
        let node = &mut self.nodes[i];
        let local = node.clock.local(self.now_us);
        let now_ms: Millis = local / 1000;
        let (Some(reg), Some(core)) = (node.reg.as_mut(), node.core.as_ref()) else {
            return;
        };
        let mut refreshed = false;
        if local >= reg.next_refresh {
            refreshed = true;
            reg.node.refresh(now_ms);
            // Services of members shown down or left, and not alive under another generation.
            let members = core.members();
            let alive: BTreeSet<NodeId> = members
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| m.id.node_id())
                .collect();
            let dead: BTreeSet<NodeId> = members
                .iter()
                .filter(|m| matches!(m.state, MemberState::Down | MemberState::Left))
                .map(|m| m.id.node_id())
                .filter(|id| !alive.contains(id))
                .collect();
            for id in dead {
                reg.node.on_member_down(now_ms, id);
            }
            let period = duration_us(cfg.refresh).max(1);
            while reg.next_refresh <= local {
                reg.next_refresh += period;
            }
        }
        if let (Some(at), Some(period)) = (reg.next_anti_entropy, cfg.anti_entropy)
            && local >= at
        {
            reg.node.anti_entropy();
            let period = duration_us(period).max(1);
            let mut next = at;
            while next <= local {
                next += period;
            }
            reg.next_anti_entropy = Some(next);
        }
        if refreshed {
            self.sync_truth(i);
        }
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
                for at in [
                    reg.overlay.next_deadline(),
                    Some(Timestamp::from_micros(reg.next_refresh)),
                    reg.next_anti_entropy.map(Timestamp::from_micros),
                ]
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
        if at != node.wake_at {
            node.wake_at = at;
            node.wake_token += 1;
            if let Some(at) = at {
                let token = node.wake_token;
                self.push(at, Ev::Wake { node: i, token });
            }
        }
    }

    /// Carries overlay events to the registry and registry outputs to the overlay, as the
    /// gossip and registry actors do through their mailboxes, until neither has anything left.
    fn pump_registry(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let local = node.clock.local(self.now_us);
        let (at, now_ms) = (Timestamp::from_micros(local), local / 1000);
        let Some(reg) = node.reg.as_mut() else {
            return;
        };
        let mut broadcasts = 0u64;
        let mut changed = false;
        loop {
            let mut progressed = false;
            while let Some(event) = reg.overlay.poll_event() {
                progressed = true;
                match event {
                    OverlayEvent::Delivered { payload, .. } => {
                        changed = true;
                        reg.node.on_delivered(now_ms, &payload);
                    }
                    OverlayEvent::Direct { from, payload } => {
                        changed = true;
                        reg.node.on_direct(now_ms, from, &payload);
                    }
                    OverlayEvent::NeighborUp(_) | OverlayEvent::NeighborDown(_) => {}
                }
            }
            while let Some(output) = reg.node.poll_output() {
                progressed = true;
                match output {
                    Output::Broadcast(bytes) => {
                        broadcasts += 1;
                        let _ = reg.overlay.broadcast(at, bytes);
                    }
                    Output::Direct(to, bytes) => {
                        let _ = reg.overlay.send_direct(to, bytes);
                    }
                    Output::DirectToRandomNeighbor(bytes) => {
                        if let Some(to) = reg.overlay.random_peer() {
                            let _ = reg.overlay.send_direct(to, bytes);
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        let _ = reg.node.take_report();
        if let Some(r) = self.reg.as_mut() {
            r.summary.adverts_broadcast += broadcasts;
        }
        if changed {
            self.watch_step(i);
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
            match self
                .net
                .route(&mut self.rng, self.now_us, i, to, t.payload.len())
            {
                Fate::Drop(reason) => {
                    self.stats.dropped += 1;
                    self.trace.record(
                        TraceEvent::Drop {
                            t_us: self.now_us,
                            from: i,
                            to,
                            reason,
                        },
                        Some(&t.payload),
                    );
                }
                Fate::Deliver(delays) => {
                    let last = delays.len() - 1;
                    let mut payload = Some(t.payload);
                    for (k, d) in delays.iter().enumerate() {
                        let p = if k == last {
                            payload.take().unwrap_or_default()
                        } else {
                            payload.clone().unwrap_or_default()
                        };
                        self.push(
                            self.now_us + duration_us(*d),
                            Ev::Deliver {
                                from: i,
                                to,
                                payload: p,
                            },
                        );
                    }
                }
            }
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
        self.trace.record_member(self.now_us, i, &self.ids, e);
        let mut checkers = std::mem::take(&mut self.checkers);
        {
            let world = self.world();
            for c in &mut checkers {
                c.on_event(&world, i, e);
            }
        }
        self.checkers = checkers;
    }

    /// The gossip actor's wiring of membership events into the overlay and the registry.
    fn registry_on_member_event(&mut self, i: usize, e: &Event) {
        let node = &mut self.nodes[i];
        let local = node.clock.local(self.now_us);
        let (at, now_ms) = (Timestamp::from_micros(local), local / 1000);
        let Some(reg) = node.reg.as_mut() else {
            return;
        };
        match e {
            Event::ProbeRtt { peer, rtt } => reg.node.on_rtt(*peer, *rtt),
            Event::MemberUp(id) => {
                reg.overlay.peer_up(at, id.addr());
                if !reg.overlay_joined {
                    reg.overlay.join(at, id.addr());
                    reg.overlay_joined = true;
                }
            }
            Event::MemberReplaced { old, new } => {
                reg.overlay.peer_down(at, old.addr());
                reg.overlay.peer_up(at, new.addr());
            }
            Event::MemberDown { id, .. } => {
                reg.overlay.peer_down(at, id.addr());
                reg.node.on_member_down(now_ms, id.node_id());
                self.watch_step(i);
            }
            Event::Rejoined(_) => reg.node.on_rejoined(now_ms),
            Event::Joined | Event::Isolated => {}
        }
    }

    fn registry_trace(&mut self, i: usize, event: String) {
        self.trace.record(
            TraceEvent::Registry {
                t_us: self.now_us,
                node: i,
                event,
            },
            None,
        );
    }

    /// Brings the ground truth about node `i`'s registrations up to date after a step that may
    /// have changed them (register, update, withdraw, refresh, restart).
    fn sync_truth(&mut self, i: usize) {
        let now = Duration::from_micros(self.now_us);
        let (Some(reg), Some(rn)) = (self.reg.as_mut(), self.nodes[i].reg.as_ref()) else {
            return;
        };
        let current: BTreeMap<String, u64> = rn
            .node
            .local_services()
            .iter()
            .map(|(id, s)| (id.clone(), s.sad.version))
            .collect();
        let previous = std::mem::take(&mut reg.truth.local[i]);
        let grace = reg.cfg.converge_within;
        let mut gone_now = Vec::new();
        for (id, v) in &current {
            let h = reg.truth.keys.entry((i, id.clone())).or_default();
            if previous.get(id) != Some(v) {
                h.versions.push((now, *v));
                h.prune(now.saturating_sub(grace));
            }
            if !previous.contains_key(id) {
                h.changed_at = now;
                h.gone = None;
                reg.watch.remove(&(i, id.clone()));
            }
        }
        for (id, v) in &previous {
            if !current.contains_key(id) {
                let h = reg.truth.keys.entry((i, id.clone())).or_default();
                h.changed_at = now;
                h.gone = Some((now, *v));
                gone_now.push((id.clone(), *v));
            }
        }
        reg.truth.local[i] = current;
        for (id, v) in gone_now {
            self.start_watch(i, id, v);
        }
    }

    /// Whether node `j` holds `(origin, id)` live (at a version ≤ `max`).
    fn holds(&self, j: usize, origin: usize, id: &str, max: u64) -> bool {
        self.nodes[j].reg.as_ref().is_some_and(|r| {
            r.node
                .registry()
                .get(&ServiceKey::new(self.truth[origin].node_id, id))
                .is_some_and(|e| e.version() <= max)
        })
    }

    /// Starts timing how long withdrawn key `(origin, id)` (at version ≤ `v`) lives on elsewhere.
    fn start_watch(&mut self, origin: usize, id: String, v: u64) {
        let holders: BTreeSet<usize> = (0..self.nodes.len())
            .filter(|&j| j != origin && self.truth[j].healthy() && self.holds(j, origin, &id, v))
            .collect();
        let now_s = self.now_us as f64 / 1e6;
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        let index = reg.summary.withdrawals.len();
        reg.summary.withdrawals.push(WithdrawTiming {
            node: Scenario::node_name(origin),
            service: id.clone(),
            at_s: now_s,
            holders: holders.len(),
            gone_after_s: holders.is_empty().then_some(0.0),
        });
        if !holders.is_empty() {
            reg.watch.insert((origin, id), (index, v, holders));
        }
    }

    /// After a registry step on node `j`: has it dropped a watched withdrawn key?
    fn watch_step(&mut self, j: usize) {
        let pending: Vec<((usize, String), u64)> = match self.reg.as_ref() {
            Some(reg) if !reg.watch.is_empty() => reg
                .watch
                .iter()
                .filter(|(_, (_, _, holders))| holders.contains(&j))
                .map(|(k, (_, v, _))| (k.clone(), *v))
                .collect(),
            _ => return,
        };
        let dropped: Vec<(usize, String)> = pending
            .into_iter()
            .filter(|((o, id), v)| !self.holds(j, *o, id, *v))
            .map(|(k, _)| k)
            .collect();
        self.watch_drop(j, dropped);
    }

    /// A node crashed or paused: it no longer holds anything a watch waits for.
    fn watch_forget(&mut self, j: usize) {
        let keys: Vec<(usize, String)> = match self.reg.as_ref() {
            Some(reg) => reg
                .watch
                .iter()
                .filter(|(_, (_, _, holders))| holders.contains(&j))
                .map(|(k, _)| k.clone())
                .collect(),
            None => return,
        };
        self.watch_drop(j, keys);
    }

    fn watch_drop(&mut self, j: usize, keys: Vec<(usize, String)>) {
        let now_s = self.now_us as f64 / 1e6;
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        for key in keys {
            let finished = match reg.watch.get_mut(&key) {
                Some((index, _, holders)) => {
                    holders.remove(&j);
                    holders.is_empty().then_some(*index)
                }
                None => None,
            };
            if let Some(index) = finished {
                let w = &mut reg.summary.withdrawals[index];
                w.gone_after_s = Some(now_s - w.at_s);
                reg.watch.remove(&key);
            }
        }
    }

    /// After a timeline action: health, components and the time of the last change.
    fn registry_after_action(&mut self, counts_as_change: bool) {
        if self.reg.is_none() {
            return;
        }
        let now = Duration::from_micros(self.now_us);
        let comp = components(&self.truth, &self.net);
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        if counts_as_change {
            reg.truth.last_change = now;
        }
        for (i, t) in self.truth.iter().enumerate() {
            match (t.healthy(), reg.truth.unhealthy_since[i]) {
                (true, Some(_)) => reg.truth.unhealthy_since[i] = None,
                (false, None) => reg.truth.unhealthy_since[i] = Some(now),
                _ => {}
            }
        }
        if !self.net.any_cut() {
            reg.truth.split_since.clear();
        } else {
            let n = comp.len();
            let mut split = BTreeMap::new();
            for a in 0..n {
                if comp[a] == usize::MAX {
                    continue;
                }
                for b in a + 1..n {
                    if comp[b] != usize::MAX && comp[a] != comp[b] {
                        let since = reg.truth.split_since.get(&(a, b)).copied().unwrap_or(now);
                        split.insert((a, b), since);
                    }
                }
            }
            reg.truth.split_since = split;
        }
        reg.truth.comp = comp;
    }

    /// Runs registry timeline entry `k` on each of its nodes.
    fn reg_act(&mut self, k: usize) {
        let Some(cfg) = self.reg.as_ref().map(|r| r.cfg) else {
            return;
        };
        let action = cfg.actions[k].action.clone();
        self.trace.record(
            TraceEvent::Action {
                t_us: self.now_us,
                action: action.describe(),
            },
            None,
        );
        if !matches!(action, RegistryAction::Resolve { .. }) {
            self.registry_after_action(true);
        }
        match action {
            RegistryAction::Register { nodes, sad, renew } => {
                for i in nodes {
                    let due = self.now_us + u64::from(sad.ttl_s) * 500_000;
                    if let Some(reg) = self.reg.as_mut() {
                        reg.clients[i].insert(
                            sad.id.clone(),
                            Client {
                                sad: (*sad).clone(),
                                renew,
                                due,
                            },
                        );
                    }
                    if renew {
                        self.push(
                            due,
                            Ev::Renew {
                                node: i,
                                id: sad.id.clone(),
                                due,
                            },
                        );
                    }
                    self.register_on(i, (*sad).clone(), "register");
                }
            }
            RegistryAction::UpdateLoad { nodes, id, update } => {
                for i in nodes {
                    let local = self.nodes[i].clock.local(self.now_us);
                    let text = match self.running_registry(i) {
                        None => format!("update_load {id}: node not running"),
                        Some(reg) => match reg.node.patch_load(local / 1000, &id, &update) {
                            Ok(s) => format!("update_load {id} v{}", s.sad.version),
                            Err(e) => format!("update_load {id} refused: {e}"),
                        },
                    };
                    self.registry_trace(i, text);
                    self.sync_truth(i);
                    self.after_step(i);
                }
            }
            RegistryAction::Withdraw { nodes, id } => {
                for i in nodes {
                    if let Some(reg) = self.reg.as_mut() {
                        reg.clients[i].remove(&id);
                    }
                    let local = self.nodes[i].clock.local(self.now_us);
                    let text = match self.running_registry(i) {
                        None => format!("withdraw {id}: node not running"),
                        Some(reg) => match reg.node.deregister(local / 1000, &id) {
                            Ok(()) => format!("withdraw {id}"),
                            Err(e) => format!("withdraw {id} refused: {e}"),
                        },
                    };
                    self.registry_trace(i, text);
                    self.sync_truth(i);
                    self.after_step(i);
                }
            }
            RegistryAction::Resolve { nodes, intent } => {
                for i in nodes {
                    let local = self.nodes[i].clock.local(self.now_us);
                    let resolution = match self.running_registry(i) {
                        None => {
                            self.registry_trace(
                                i,
                                format!("resolve {}: node not running", intent.task),
                            );
                            continue;
                        }
                        Some(reg) => reg.node.resolve(local / 1000, &intent),
                    };
                    let candidates = self.candidates(&resolution);
                    let text = format!(
                        "resolve {} -> [{}]",
                        intent.task,
                        candidates
                            .iter()
                            .map(|(o, id, v)| format!("n{}/{id} v{v}", o + 1))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.registry_trace(i, text);
                    self.registry_check_resolve(i, &intent.task, &candidates, true);
                    self.after_step(i);
                }
            }
        }
    }

    /// Node `i`'s registry if the node is running and not paused.
    fn running_registry(&mut self, i: usize) -> Option<&mut RegNode> {
        if self.truth[i].paused {
            return None;
        }
        self.nodes[i].reg.as_mut()
    }

    fn register_on(&mut self, i: usize, sad: Sad, what: &str) {
        let local = self.nodes[i].clock.local(self.now_us);
        let id = sad.id.clone();
        let text = match self.running_registry(i) {
            None => format!("{what} {id}: node not running"),
            Some(reg) => match reg.node.register(local / 1000, sad) {
                Ok(_) => format!(
                    "{what} {id} v{}",
                    reg.node
                        .local_services()
                        .get(&id)
                        .map_or(0, |s| s.sad.version)
                ),
                Err(e) => format!("{what} {id} refused: {e}"),
            },
        };
        self.registry_trace(i, text);
        self.sync_truth(i);
        self.after_step(i);
    }

    /// A service process renews its registration (with the descriptor the node holds now, so
    /// load updates stick).
    fn renew(&mut self, i: usize, id: String, due: u64) {
        let Some(client) = self
            .reg
            .as_ref()
            .and_then(|r| r.clients[i].get(&id))
            .filter(|c| c.due == due && c.renew)
            .cloned()
        else {
            return;
        };
        let next = due + u64::from(client.sad.ttl_s) * 500_000;
        if let Some(c) = self.reg.as_mut().and_then(|r| r.clients[i].get_mut(&id)) {
            c.due = next;
        }
        self.push(
            next,
            Ev::Renew {
                node: i,
                id: id.clone(),
                due: next,
            },
        );
        let sad = self.nodes[i]
            .reg
            .as_ref()
            .and_then(|r| r.node.local_services().get(&id).map(|s| s.sad.clone()))
            .unwrap_or(client.sad);
        self.register_on(i, sad, "renew");
    }

    fn candidates(&self, r: &Resolution) -> Vec<(usize, String, u64)> {
        r.candidates
            .iter()
            .map(|c| {
                (
                    self.ids.get(&c.node).unwrap_or(usize::MAX),
                    c.service.clone(),
                    c.sad.version,
                )
            })
            .collect()
    }

    fn registry_check_resolve(
        &mut self,
        i: usize,
        task: &str,
        candidates: &[(usize, String, u64)],
        scripted: bool,
    ) {
        let Some(mut reg) = self.reg.take() else {
            return;
        };
        reg.summary.resolves += 1;
        let mut checkers = std::mem::take(&mut reg.checkers);
        {
            let world = self.world();
            let rw = RegistryWorld {
                world: &world,
                registry: reg.cfg,
                truth: &reg.truth,
            };
            for c in &mut checkers {
                c.on_resolve(&rw, i, task, candidates, scripted);
            }
        }
        reg.checkers = checkers;
        self.reg = Some(reg);
    }

    /// The registry part of a sample: every healthy node's live entries, and (if enabled) a
    /// resolve of every task tag in use on each.
    fn registry_sample(&mut self) {
        let Some(mut reg) = self.reg.take() else {
            return;
        };
        let now = Duration::from_micros(self.now_us);
        let mut checkers = std::mem::take(&mut reg.checkers);
        let mut right = 0usize;
        let mut healthy = 0usize;
        let mut resolves = 0u64;
        {
            let world = self.world();
            let rw = RegistryWorld {
                world: &world,
                registry: reg.cfg,
                truth: &reg.truth,
            };
            for c in &mut checkers {
                c.begin_sample(&rw);
            }
            for (j, node) in self.nodes.iter().enumerate() {
                let Some(rn) = node.reg.as_ref().filter(|_| self.truth[j].healthy()) else {
                    continue;
                };
                healthy += 1;
                let entries: Entries = rn
                    .node
                    .registry()
                    .iter()
                    .filter_map(|(k, e)| {
                        self.ids
                            .get(&k.node)
                            .map(|o| ((o, k.service.clone()), e.version()))
                    })
                    .collect();
                for c in &mut checkers {
                    c.on_node(&rw, j, &entries);
                }
                let expected = reg.truth.expected(now, Duration::ZERO, j);
                if expected.len() == entries.len()
                    && expected.keys().all(|k| entries.contains_key(k))
                {
                    right += 1;
                }
                if reg.cfg.sample_resolves {
                    let local = node.clock.local(self.now_us);
                    for intent in &reg.intents {
                        let r = rn.node.resolve_untracked(local / 1000, intent);
                        let candidates = self.candidates(&r);
                        resolves += 1;
                        for c in &mut checkers {
                            c.on_resolve(&rw, j, &intent.task, &candidates, false);
                        }
                    }
                }
            }
            for c in &mut checkers {
                c.end_sample(&rw);
            }
        }
        reg.checkers = checkers;
        reg.summary.resolves += resolves;
        let t_s = now.as_secs_f64();
        let fraction = if healthy == 0 {
            1.0
        } else {
            right as f64 / healthy as f64
        };
        if right < healthy {
            reg.last_unconverged = Some(t_s);
        }
        reg.summary.curve.push((t_s, fraction));
        self.reg = Some(reg);
    }

    fn act(&mut self, k: usize) {
        let action = self.scenario.timeline[k].action.clone();
        self.trace.record(
            TraceEvent::Action {
                t_us: self.now_us,
                action: format!("{action:?}"),
            },
            None,
        );
        let now = Duration::from_micros(self.now_us);
        let touch = |sim: &mut Self, i: usize| sim.truth[i].disturbed_at = now;
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
                    node.wake_token += 1;
                    node.wake_at = None;
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
            Action::Partition(groups) => {
                self.net.partition(&groups);
                self.touch_all(now);
            }
            Action::PartitionOneWay { from, to } => {
                self.net.partition_one_way(&from, &to);
                self.touch_all(now);
            }
            Action::Heal => {
                self.net.heal();
                self.touch_all(now);
            }
            Action::Loss { nodes, rate } => {
                self.net.set_loss(nodes.as_ref(), rate);
                self.touch_all(now);
            }
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
                    self.nodes[i].wake_at = None;
                    self.nodes[i].wake_token += 1;
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

    fn touch_all(&mut self, now: Duration) {
        for t in &mut self.truth {
            t.disturbed_at = now;
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
        self.nodes[i].wake_at = None;
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
            delivered: self.stats.delivered,
        });
        self.registry_sample();
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0, 1, 255, 256, 65_535, 99_999] {
            assert_eq!(node_index(node_addr(i)), Some(i));
        }
        assert_eq!(node_index("127.0.0.1:80".parse().expect("addr")), None);
    }

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
