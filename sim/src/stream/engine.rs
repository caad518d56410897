//! The stream engine: drives one NexStream endpoint per node from the shared event queue
//! (see the module docs of [`crate::stream`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nexus_stream::identity::Identity;
use nexus_stream::{
    DatagramOptions, Endpoint, EndpointConfig, Event, FlowOptions, MessageOptions, Mode,
    Probability, SessionId, StreamRef,
};
use rand::Rng;
use rand::rngs::StdRng;

use super::fixture::{ANCHOR_UNIX_MS, Fixture};
use super::payload::Header;
use crate::engine::{
    Progress, RunLoop, SimEvent, WakeTimer, Wire, derive_seed, duration_us, finish_run, fmt_engine,
    node_addr, node_index, seeded_rng, wall_clock,
};
use crate::invariants::Verdict;
use crate::invariants::stream::{
    self as checks, Delivered, Sent, SessionChange, StreamInvariant, StreamWorld,
};
use crate::report::{RunReport, Sample, StreamSummary};
use crate::scenario::{Action, Scenario, StreamScenario, StreamTraffic};
use crate::trace::{Trace, TraceEvent};

/// Most wake-ups in a row a node's timer may ask for at or before the instant it was just run
/// at (each one then runs 1 µs later). More means the endpoint's timer fires in a loop without
/// progress: the run stops with a panic naming the node instead of crawling through virtual
/// time a microsecond at a time.
const OVERDUE_WAKES_MAX: u32 = 100_000;

/// The endpoint's flow label for best-effort datagrams.
const BE_FLOW: u32 = 1;
/// The endpoint's flow label for probabilistic datagrams.
const PR_FLOW: u32 = 2;

/// The stream engine's own events; the shared ones are [`SimEvent`]'s.
#[derive(Debug)]
enum Own {
    /// A `revoke` entry (index into `StreamScenario::revocations`).
    Revoke(usize),
    /// The first `count` revocations reach `node`.
    TrustArrives {
        node: usize,
        count: usize,
    },
    Traffic {
        node: usize,
        mode: Mode,
    },
    Reconnect {
        node: usize,
        peer: usize,
    },
    /// `duration` is over: traffic stops, cuts heal, loss goes to 0.
    Settle,
}

type Ev = SimEvent<Own>;

/// One session as the node's application sees it.
#[derive(Debug)]
struct Sess {
    peer: usize,
    /// This node opened it (and reopens it when it closes).
    client: bool,
    established: bool,
    /// Reliable-ordered flows: stream, flow id, next message index.
    flows: Vec<(StreamRef, u64, u64)>,
    /// Round-robin position over `flows`.
    turn: usize,
}

struct Node {
    ep: Endpoint,
    targets: Vec<usize>,
    sessions: BTreeMap<SessionId, Sess>,
    wake: WakeTimer,
    /// Wake-ups in a row whose timer was already due (see [`OVERDUE_WAKES_MAX`]).
    overdue_wakes: u32,
    /// Next flow id (reliable-ordered).
    next_flow: u64,
    /// Next message index per mode (reliable-unordered, best-effort, probabilistic).
    next_index: [u64; 4],
}

/// A stream simulation of one scenario with one seed.
pub struct StreamSim<'s> {
    scenario: &'s Scenario,
    cfg: &'s StreamScenario,
    seed: u64,
    now_us: u64,
    traffic_until_us: u64,
    end_us: u64,
    base: Instant,
    /// The network model, the event queue, the counters and the trace.
    wire: Wire<Own>,
    nodes: Vec<Node>,
    ids: BTreeMap<[u8; 32], usize>,
    fixture: Fixture,
    /// Node revoked by each revocation, in signing order.
    revocation_nodes: Vec<usize>,
    revoked: BTreeSet<usize>,
    cut_periods: Vec<(Duration, Option<Duration>)>,
    established: BTreeMap<(usize, SessionId), usize>,
    /// Traffic arrival times.
    traffic_rng: StdRng,
    checkers: Vec<Box<dyn StreamInvariant>>,
    samples: Vec<Sample>,
    summary: StreamSummary,
}

impl std::fmt::Debug for StreamSim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_engine(f, "StreamSim", self.scenario, self.seed, self.now_us)
    }
}

/// The instant virtual time counts from: read once per process. quinn and the endpoints use
/// only differences of instants, so nothing a run does depends on its value.
#[allow(
    clippy::disallowed_methods,
    reason = "virtual time needs one base instant; runs depend only on differences"
)]
fn base_instant() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl<'s> StreamSim<'s> {
    /// A simulation ready to run.
    ///
    /// # Panics
    /// If the scenario has no `[stream]` table.
    pub fn new(scenario: &'s Scenario, seed: u64, trace: Trace) -> Self {
        let cfg = scenario
            .stream
            .as_ref()
            .expect("StreamSim runs [stream] scenarios only");
        let n = scenario.nodes;
        let fixture = Fixture::new(seed, n);
        let base = base_instant();
        let config = EndpointConfig {
            idle_timeout: cfg.idle_timeout,
            keep_alive: Some(cfg.keep_alive),
            ..EndpointConfig::default()
        };
        let mut ids = BTreeMap::new();
        let nodes = (0..n)
            .map(|i| {
                ids.insert(fixture.node_id(i), i);
                let identity = Identity::new(
                    fixture.keys[i].clone(),
                    Some(fixture.credentials[i].clone()),
                )
                .expect("a fixture key and its MIC make an identity");
                let ep = Endpoint::new(
                    config.clone(),
                    identity,
                    fixture.initial_trust(),
                    Some(derive_seed(seed, 33, i as u64)),
                    base,
                    ANCHOR_UNIX_MS,
                )
                .expect("a seeded endpoint builds");
                Node {
                    ep,
                    targets: (1..=cfg.peers).map(|k| (i + k) % n).collect(),
                    sessions: BTreeMap::new(),
                    wake: WakeTimer::default(),
                    overdue_wakes: 0,
                    next_flow: 0,
                    next_index: [0; 4],
                }
            })
            .collect();
        let traffic_until_us = duration_us(scenario.duration);
        let own = cfg
            .revocations
            .iter()
            .enumerate()
            .map(|(k, r)| (r.at, r.index, Own::Revoke(k)));
        let mut sim = StreamSim {
            scenario,
            cfg,
            seed,
            now_us: 0,
            traffic_until_us,
            end_us: duration_us(cfg.end(scenario.duration)),
            base,
            wire: Wire::new(scenario, seed, trace, own),
            nodes,
            ids,
            fixture,
            revocation_nodes: Vec::new(),
            revoked: BTreeSet::new(),
            cut_periods: Vec::new(),
            established: BTreeMap::new(),
            traffic_rng: seeded_rng(seed, 34, 0),
            checkers: checks::all(),
            samples: Vec::new(),
            summary: StreamSummary::default(),
        };
        sim.wire.queue.push(traffic_until_us, Ev::Own(Own::Settle));
        sim.wire.queue.push(0, Ev::Sample);
        sim
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    fn vnow(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    /// Runs to `duration + settle` and reports. `progress` is called about every 1 % of the run.
    ///
    /// # Panics
    /// If an endpoint breaks one of its invariants (`Endpoint::check_invariants`, run after
    /// every step).
    pub fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        let wall = wall_clock();
        for i in 0..self.nodes.len() {
            for peer in self.nodes[i].targets.clone() {
                self.connect(i, peer);
            }
            for mode in Mode::ALL {
                self.schedule_traffic(i, mode);
            }
        }
        let mut run = RunLoop::new(self.cfg.end(self.scenario.duration), progress);
        while let Some((at, ev)) = run.next(&mut self.wire.queue) {
            self.now_us = at;
            match ev {
                Ev::Deliver { from, to, payload } => self.deliver(from, to, &payload),
                Ev::Wake { node, token } => self.wake(node, token),
                Ev::Action(k) => self.act(k),
                Ev::Own(Own::Revoke(k)) => self.revoke(k),
                Ev::Own(Own::TrustArrives { node, count }) => self.trust_arrives(node, count),
                Ev::Own(Own::Traffic { node, mode }) => self.traffic(node, mode),
                Ev::Own(Own::Reconnect { node, peer }) => self.reconnect(node, peer),
                Ev::Own(Own::Settle) => self.settle(),
                Ev::Sample => {
                    self.sample();
                    let next = at + duration_us(self.scenario.sample_every);
                    self.wire.queue.push(next, Ev::Sample);
                }
            }
        }
        self.now_us = self.end_us;
        self.sample();
        let verdicts = self.finish();
        let mut report = finish_run(
            self.scenario,
            self.seed,
            wall,
            self.end_us,
            self.wire.stats,
            &mut self.wire.trace,
            verdicts,
            std::mem::take(&mut self.samples),
        );
        report.virtual_s = Duration::from_micros(self.end_us).as_secs_f64();
        report.speed = if report.wall_s > 0.0 {
            report.virtual_s / report.wall_s
        } else {
            f64::INFINITY
        };
        report.stream = Some(std::mem::take(&mut self.summary));
        report
    }

    fn world(&self) -> StreamWorld<'_> {
        StreamWorld {
            now: self.vnow(),
            scenario: self.scenario,
            stream: self.cfg,
            revoked: &self.revoked,
            cut_periods: &self.cut_periods,
            established: &self.established,
        }
    }

    /// Calls `f` on every checker with the current world.
    fn check(&mut self, mut f: impl FnMut(&mut dyn StreamInvariant, &StreamWorld<'_>)) {
        let mut checkers = std::mem::take(&mut self.checkers);
        {
            let world = self.world();
            for c in &mut checkers {
                f(c.as_mut(), &world);
            }
        }
        self.checkers = checkers;
    }

    fn record(&mut self, node: usize, event: String) {
        self.wire.trace.record(
            TraceEvent::Stream {
                t_us: self.now_us,
                node,
                event,
            },
            None,
        );
    }

    /// Opens node `i`'s session to its target `peer`. If the endpoint already holds one with
    /// that peer (opened the other way), it is used, and the node looks again `reconnect`
    /// later, so the target is reconnected if that session goes away.
    fn connect(&mut self, i: usize, peer: usize) {
        let now = self.now();
        let key = self.fixture.node_id(peer);
        if self.nodes[i].ep.session_to(&key).is_some() {
            let at = self.now_us + duration_us(self.cfg.reconnect);
            self.wire
                .queue
                .push(at, Ev::Own(Own::Reconnect { node: i, peer }));
            return;
        }
        match self.nodes[i].ep.connect(now, key, node_addr(peer)) {
            Ok(session) => {
                self.nodes[i].sessions.insert(
                    session,
                    Sess {
                        peer,
                        client: true,
                        established: false,
                        flows: Vec::new(),
                        turn: 0,
                    },
                );
                self.record(i, format!("connect {session} n{}", peer + 1));
            }
            Err(e) => self.record(i, format!("connect n{} refused: {e}", peer + 1)),
        }
        self.after_step(i);
    }

    fn reconnect(&mut self, i: usize, peer: usize) {
        let has = self.nodes[i]
            .sessions
            .values()
            .any(|s| s.client && s.peer == peer);
        if !has {
            self.connect(i, peer);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, payload: &[u8]) {
        self.wire
            .stats
            .record_delivery(&mut self.wire.trace, self.now_us, (from, to), payload);
        let now = self.now();
        self.nodes[to]
            .ep
            .handle_datagram(now, node_addr(from), payload);
        self.after_step(to);
    }

    fn wake(&mut self, i: usize, token: u64) {
        let node = &mut self.nodes[i];
        if !node.wake.fire(token) {
            return;
        }
        let now = self.base + Duration::from_micros(self.now_us);
        node.ep.handle_timeout(now);
        self.after_step(i);
    }

    /// Drains node `i`'s transmits and events, checks its invariants and re-arms its timer.
    fn after_step(&mut self, i: usize) {
        loop {
            let now = self.now();
            let mut sends = Vec::new();
            while let Some(t) = self.nodes[i].ep.poll_transmit(now) {
                sends.push(t);
            }
            let mut events = Vec::new();
            while let Some(e) = self.nodes[i].ep.poll_event() {
                events.push(e);
            }
            if sends.is_empty() && events.is_empty() {
                break;
            }
            for t in sends {
                let Some(to) = node_index(t.destination).filter(|j| *j < self.nodes.len()) else {
                    continue;
                };
                let segment = t.segment_size.unwrap_or(t.contents.len()).max(1);
                for chunk in t.contents.chunks(segment) {
                    self.wire.send(self.now_us, (i, to), chunk.to_vec());
                }
            }
            for e in events {
                self.on_event(i, e);
            }
        }
        let now_us = self.now_us;
        let node = &mut self.nodes[i];
        node.ep.check_invariants();
        let base = self.base;
        let due_us = node.ep.poll_timeout().map(|t| {
            // Round up: the timer must be due when it fires.
            u64::try_from(t.saturating_duration_since(base).as_nanos().div_ceil(1000))
                .unwrap_or(u64::MAX)
        });
        if due_us.is_some_and(|d| d <= now_us) {
            node.overdue_wakes += 1;
            assert!(
                node.overdue_wakes <= OVERDUE_WAKES_MAX,
                "n{}'s endpoint timer was due at or before now {OVERDUE_WAKES_MAX} times in a row \
                 (at {:.6} s virtual): it fires in a loop without progress",
                i + 1,
                now_us as f64 / 1e6
            );
        } else {
            node.overdue_wakes = 0;
        }
        // Never at this instant again: what is due now has just run.
        let at = due_us.map(|d| d.max(now_us + 1));
        if let (Some(at), Some(token)) = (at, node.wake.arm(at)) {
            self.wire.queue.push(at, Ev::Wake { node: i, token });
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        match e {
            Event::Established { session, peer, .. } => {
                let Some(&p) = self.ids.get(&peer) else {
                    // Only fixture keys hold MICs: a session to another key cannot verify.
                    panic!("n{} established a session with an unknown key", i + 1);
                };
                let s = self.nodes[i].sessions.entry(session).or_insert(Sess {
                    peer: p,
                    client: false,
                    established: false,
                    flows: Vec::new(),
                    turn: 0,
                });
                s.established = true;
                self.established.insert((i, session), p);
                self.summary.sessions_established += 1;
                self.record(i, format!("established {session} n{}", p + 1));
                let change = SessionChange::Established { session, peer: p };
                self.check(|c, w| c.on_session(w, i, &change));
            }
            Event::Closed {
                session,
                peer,
                established,
                reason,
            } => {
                let sess = self.nodes[i].sessions.remove(&session);
                let p = peer
                    .and_then(|k| self.ids.get(&k).copied())
                    .or(sess.as_ref().map(|s| s.peer));
                self.established.remove(&(i, session));
                let code = reason.code().map(|c| c.name().to_owned());
                let revoked = code.as_deref() == Some("mic_revoked");
                match (established, revoked) {
                    (true, true) => self.summary.closed_revoked += 1,
                    (true, false) => self.summary.closed_other += 1,
                    (false, true) => self.summary.refused_revoked += 1,
                    (false, false) => self.summary.refused_other += 1,
                }
                self.record(
                    i,
                    format!(
                        "closed {session} {} established={established}: {reason}",
                        p.map_or("?".into(), |p| format!("n{}", p + 1))
                    ),
                );
                let change = SessionChange::Closed {
                    session,
                    peer: p,
                    established,
                    code,
                };
                self.check(|c, w| c.on_session(w, i, &change));
                if let Some(s) = sess
                    && s.client
                {
                    let at = self.now_us + duration_us(self.cfg.reconnect);
                    self.wire.queue.push(
                        at,
                        Ev::Own(Own::Reconnect {
                            node: i,
                            peer: s.peer,
                        }),
                    );
                }
            }
            Event::Message { stream, mode, data } => self.delivered(i, stream.session, mode, &data),
            Event::Datagram {
                session,
                mode,
                data,
                ..
            } => self.delivered(i, session, mode, &data),
            Event::FlowFinished { stream } => {
                self.record(
                    i,
                    format!("flow finished {}/{}", stream.session, stream.stream),
                );
            }
            Event::StreamFailed {
                stream,
                code,
                by_peer,
            } => {
                self.summary.streams_failed += 1;
                self.record(
                    i,
                    format!(
                        "stream failed {}/{} {} by_peer={by_peer}",
                        stream.session,
                        stream.stream,
                        code.name()
                    ),
                );
            }
            Event::HedgeWon { hedge, .. } => self.record(i, format!("hedge {hedge} won")),
        }
    }

    fn delivered(&mut self, i: usize, session: SessionId, mode: Mode, data: &[u8]) {
        let Some(peer) = self.nodes[i].sessions.get(&session).map(|s| s.peer) else {
            panic!(
                "n{} delivered data on session {session} it does not know",
                i + 1
            );
        };
        let header = Header::decode(data);
        self.summary.mode_mut(mode).delivered += 1;
        self.record(
            i,
            match &header {
                Ok(h) => format!(
                    "deliver {mode} n{}->n{} f{} #{} {}B",
                    h.src + 1,
                    h.dst + 1,
                    h.flow,
                    h.index,
                    data.len()
                ),
                Err(e) => format!("deliver {mode} on {session}: {e}"),
            },
        );
        let d = Delivered {
            at: self.vnow(),
            node: i,
            session,
            peer,
            mode,
            header,
        };
        self.check(|c, w| c.on_delivered(w, &d));
    }

    fn traffic_of(&self, mode: Mode) -> &'s StreamTraffic {
        match mode {
            Mode::ReliableOrdered => &self.cfg.ro,
            Mode::ReliableUnordered => &self.cfg.ru,
            Mode::BestEffort => &self.cfg.be,
            Mode::Probabilistic => &self.cfg.pr,
        }
    }

    /// Schedules node `i`'s next `mode` send: exponential gaps (a Poisson process).
    fn schedule_traffic(&mut self, i: usize, mode: Mode) {
        let rate = self.traffic_of(mode).rate;
        if rate <= 0.0 {
            return;
        }
        let u: f64 = self.traffic_rng.random();
        let gap_us = ((-(1.0 - u).ln() / rate) * 1e6).max(1.0) as u64;
        let at = self.now_us + gap_us;
        if at < self.traffic_until_us {
            self.wire
                .queue
                .push(at, Ev::Own(Own::Traffic { node: i, mode }));
        }
    }

    fn traffic(&mut self, i: usize, mode: Mode) {
        let sessions: Vec<SessionId> = self.nodes[i]
            .sessions
            .iter()
            .filter(|(_, s)| s.established)
            .map(|(id, _)| *id)
            .collect();
        for session in sessions {
            self.send_one(i, session, mode);
        }
        self.after_step(i);
        self.schedule_traffic(i, mode);
    }

    fn send_one(&mut self, i: usize, session: SessionId, mode: Mode) {
        let now = self.now();
        let t = self.traffic_of(mode);
        let node = &mut self.nodes[i];
        let Some(sess) = node.sessions.get_mut(&session) else {
            return;
        };
        let mut header = Header {
            mode,
            src: i as u32,
            dst: sess.peer as u32,
            flow: 0,
            index: 0,
            expires_us: 0,
        };
        let result = match mode {
            Mode::ReliableOrdered => {
                if sess.flows.len() < t.flows {
                    match node.ep.open_flow(now, session, FlowOptions::default()) {
                        Ok(stream) => {
                            sess.flows.push((stream, node.next_flow, 0));
                            node.next_flow += 1;
                        }
                        Err(e) => {
                            self.summary.send_refused += 1;
                            let text = format!("open flow on {session} refused: {e}");
                            self.record(i, text);
                            return;
                        }
                    }
                }
                let k = sess.turn % sess.flows.len();
                sess.turn += 1;
                let (stream, flow, next) = sess.flows[k];
                header.flow = flow;
                header.index = next;
                let r = node
                    .ep
                    .send(now, stream, Bytes::from(header.encode(t.bytes)));
                if r.is_ok() {
                    sess.flows[k].2 += 1;
                }
                r
            }
            Mode::ReliableUnordered => {
                header.index = take(&mut node.next_index[mode.index()]);
                node.ep
                    .send_message(
                        now,
                        session,
                        Bytes::from(header.encode(t.bytes)),
                        MessageOptions::default(),
                    )
                    .map(|_| ())
            }
            Mode::BestEffort => {
                header.index = take(&mut node.next_index[mode.index()]);
                header.expires_us = self.now_us + duration_us(t.expiry);
                node.ep.send_datagram(
                    now,
                    session,
                    BE_FLOW,
                    Bytes::from(header.encode(t.bytes)),
                    DatagramOptions::best_effort(Some(now + t.expiry)),
                )
            }
            Mode::Probabilistic => {
                header.index = take(&mut node.next_index[mode.index()]);
                node.ep.send_datagram(
                    now,
                    session,
                    PR_FLOW,
                    Bytes::from(header.encode(t.bytes)),
                    DatagramOptions {
                        probability: Probability::new(t.p),
                        expires: None,
                    },
                )
            }
        };
        match result {
            Ok(()) => {
                self.summary.mode_mut(mode).sent += 1;
                let sent = Sent {
                    at: self.vnow(),
                    session,
                    header,
                };
                self.check(|c, w| c.on_sent(w, &sent));
            }
            Err(e) => {
                self.summary.send_refused += 1;
                self.record(i, format!("send {mode} on {session} refused: {e}"));
            }
        }
    }

    fn act(&mut self, k: usize) {
        let scenario = self.scenario;
        let action = &scenario.timeline[k].action;
        // Only network actions: Scenario::check refuses the others in `[stream]` scenarios.
        assert!(
            self.wire.act(self.now_us, action),
            "{} reached the stream engine: Scenario::check refuses it",
            action.name()
        );
        match action {
            Action::Partition(_) | Action::PartitionOneWay { .. } => self.cut_started(),
            Action::Heal => self.cut_healed(),
            _ => {}
        }
    }

    fn cut_started(&mut self) {
        if self.cut_periods.last().is_none_or(|p| p.1.is_some()) {
            self.cut_periods.push((self.vnow(), None));
        }
    }

    fn cut_healed(&mut self) {
        let now = self.vnow();
        if let Some(p) = self.cut_periods.last_mut()
            && p.1.is_none()
        {
            p.1 = Some(now);
        }
    }

    fn revoke(&mut self, k: usize) {
        let r = &self.cfg.revocations[k];
        let unix_ms = ANCHOR_UNIX_MS + self.now_us / 1000;
        for &node in &r.nodes {
            self.fixture.revoke(node, unix_ms);
            self.revocation_nodes.push(node);
            self.revoked.insert(node);
        }
        let names: Vec<String> = r.nodes.iter().map(|i| format!("n{}", i + 1)).collect();
        self.wire.trace.record(
            TraceEvent::Action {
                t_us: self.now_us,
                action: format!("revoke [{}] delay {:?}", names.join(","), r.delay),
            },
            None,
        );
        let count = self.fixture.revocations();
        let at = self.now_us + duration_us(r.delay);
        for j in 0..self.nodes.len() {
            if !r.nodes.contains(&j) {
                self.wire
                    .queue
                    .push(at, Ev::Own(Own::TrustArrives { node: j, count }));
            }
        }
    }

    fn trust_arrives(&mut self, j: usize, count: usize) {
        let revoked: Vec<usize> = self.revocation_nodes[..count].to_vec();
        self.record(j, format!("trust update: {count} revocations"));
        self.check(|c, w| c.on_revocation(w, j, &revoked));
        let now = self.now();
        let update = self.fixture.update(count);
        self.nodes[j].ep.update_trust(now, &update);
        self.after_step(j);
    }

    fn settle(&mut self) {
        self.wire.trace.record(
            TraceEvent::Action {
                t_us: self.now_us,
                action: "settle: traffic stops, every cut heals, loss 0".into(),
            },
            None,
        );
        self.wire.net.heal();
        self.wire.net.set_loss(None, 0.0);
        self.cut_healed();
    }

    /// One sample: every checker looks; the curve records the share of intended sessions
    /// (each node to its targets, neither end revoked) that are established.
    fn sample(&mut self) {
        let (mut intended, mut up) = (0usize, 0usize);
        for (i, node) in self.nodes.iter().enumerate() {
            if self.revoked.contains(&i) {
                continue;
            }
            for &t in &node.targets {
                if self.revoked.contains(&t) {
                    continue;
                }
                intended += 1;
                up += usize::from(node.sessions.values().any(|s| s.peer == t && s.established));
            }
        }
        self.check(|c, w| c.on_sample(w));
        self.samples.push(Sample {
            t_s: self.vnow().as_secs_f64(),
            converged: if intended == 0 {
                1.0
            } else {
                up as f64 / intended as f64
            },
            healthy: self.nodes.len(),
            delivered: self.wire.stats.delivered,
        });
    }

    fn finish(&mut self) -> Vec<Verdict> {
        for node in &self.nodes {
            for s in node.ep.stats() {
                self.summary.be_expired_on_receive +=
                    s.modes[Mode::BestEffort.index()].dropped_recv;
            }
        }
        if let Some(first) = self.samples.iter().find(|s| s.converged >= 1.0) {
            self.summary.all_established_s = Some(first.t_s);
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        checkers.iter_mut().map(|c| c.finish(&world)).collect()
    }
}

fn take(counter: &mut u64) -> u64 {
    let v = *counter;
    *counter += 1;
    v
}
