//! Core mode: a discrete-event engine (in the style of TigerBeetle's VOPR) that drives the
//! sans-IO membership cores directly, without tokio, sockets or threads.
//!
//! One priority queue of events ordered by `(virtual time, sequence number)` holds datagram
//! deliveries, node timer wake-ups, timeline actions and invariant samples. Every random choice
//! (network fate, node ids, each core's RNG) is drawn from generators seeded from the run's
//! seed, so a seed fixes the whole run.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use nexus_gossip::{Event, MemberId, MemberMeta, Membership, NodeId, Timestamp};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::invariants::{self, Invariant, Truth, World};
use crate::net::{Fate, Net};
use crate::report::{RunReport, Sample};
use crate::scenario::{Action, Scenario};
use crate::trace::{Trace, TraceEvent};

/// Datagrams buffered for a paused node; later ones are dropped (its socket buffer is full).
pub const PAUSED_INBOX_MAX: usize = 1024;
/// Gossip port every simulated node uses.
pub const SIM_PORT: u16 = 7946;

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
    Sample,
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
    clock: Clock,
    inbox: VecDeque<(usize, Vec<u8>)>,
    wake_at: Option<u64>,
    wake_token: u64,
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
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    nodes: Vec<SimNode>,
    /// Ground truth per node, kept beside `nodes` so checkers get a slice.
    truth: Vec<Truth>,
    ids: BTreeMap<NodeId, usize>,
    net: Net,
    rng: StdRng,
    trace: Trace,
    checkers: Vec<Box<dyn Invariant>>,
    samples: Vec<Sample>,
    stats: NetStats,
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
        let mut ids = BTreeMap::new();
        for i in 0..n {
            let mut id = [0u8; 32];
            id_rng.fill_bytes(&mut id);
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
            queue: BTreeMap::new(),
            seq: 0,
            nodes,
            truth,
            ids,
            net: Net::new(n, scenario.topology.clone(), scenario.network.clone()),
            rng: StdRng::seed_from_u64(derive_seed(seed, 2, 0)),
            trace,
            checkers: invariants::all(),
            samples: Vec::new(),
            stats: NetStats::default(),
        };
        for (k, _) in scenario.timeline.iter().enumerate() {
            let at = duration_us(scenario.timeline[k].at);
            sim.push(at, Ev::Action(k));
        }
        sim.push(0, Ev::Sample);
        sim
    }

    fn push(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at_us, self.seq), ev);
    }

    /// Runs to the scenario's end and reports. `progress` is called about every 1% of the run.
    pub fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        #[allow(
            clippy::disallowed_methods,
            reason = "wall time is only reported (speed ratio); it never reaches the trace"
        )]
        let wall = Instant::now();
        let end_us = duration_us(self.scenario.duration);
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        let mut progress = progress;
        let step_us = (end_us / 100).max(1);
        let mut next_progress = step_us;
        while let Some(entry) = self.queue.first_entry() {
            let (at, _) = *entry.key();
            if at > end_us {
                break;
            }
            let ev = entry.remove();
            self.now_us = at;
            match ev {
                Ev::Deliver { from, to, payload } => self.deliver(from, to, payload),
                Ev::Wake { node, token } => self.wake(node, token),
                Ev::Action(k) => self.act(k),
                Ev::Sample => {
                    self.sample();
                    let next = at + duration_us(self.scenario.sample_every);
                    self.push(next, Ev::Sample);
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
        let verdicts: Vec<_> = {
            let world = self.world();
            checkers.iter_mut().map(|c| c.finish(&world)).collect()
        };
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
        RunReport::new(
            self.scenario,
            self.seed,
            wall.elapsed(),
            self.stats,
            self.trace.hash_hex(),
            self.trace.events(),
            verdicts,
            std::mem::take(&mut self.samples),
            trace_error,
        )
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
    fn start_node(&mut self, i: usize) {
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
        self.after_step(i);
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
        if let Some(core) = node.core.as_mut() {
            // Rejections (duplicates from ourselves, malformed) are part of the run; the core
            // counts them.
            let _ = core.handle_datagram(local, node_addr(from), &payload);
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
        self.after_step(i);
    }

    /// Routes what node `i` emitted, records its events, feeds the checkers, re-arms its timer.
    fn after_step(&mut self, i: usize) {
        let mut sends = Vec::new();
        let mut events = Vec::new();
        let next = {
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
        for e in events {
            self.on_event(i, &e);
        }
        let node = &mut self.nodes[i];
        let at = next.map(|l| node.clock.virtual_at(l.as_micros()).max(self.now_us));
        if at != node.wake_at {
            node.wake_token += 1;
            node.wake_at = at;
            if let Some(at) = at {
                let token = node.wake_token;
                self.push(at, Ev::Wake { node: i, token });
            }
        }
    }

    fn on_event(&mut self, i: usize, e: &Event) {
        if let Event::Rejoined(id) = e {
            // The node renewed itself in memory; persist it as its durable generation.
            self.truth[i].generation = id.generation();
        }
        let text = crate::trace::member_event_text(&self.ids, e);
        if let Some(event) = text {
            self.trace.record(
                TraceEvent::Member {
                    t_us: self.now_us,
                    node: i,
                    event,
                },
                None,
            );
        }
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
                        (Some(core), false) => Some((i, core.members())),
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
