//! Test fixtures: a seeded CA issuing node MICs, and two harnesses behind one trait — a
//! deterministic in-memory network in virtual time and real UDP sockets on loopback — so the
//! conformance bodies in `conformance.rs` run unchanged over both.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use nexus_stream::udp::{Framing, StreamNode};
use nexus_stream::{
    DatagramOptions, Endpoint, EndpointConfig, Event, FlowOptions, MessageOptions, SendError,
    SessionId, SessionStats, StreamRef,
};
use nexus_trust_core::mic::{CaKeys, MicBody, SubjectKind};
use nexus_trust_core::revocation::{RevocationReason, SignedRevocation};
use nexus_trust_core::verify::{Credentials, TrustContext, TrustUpdate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The Unix time the fixtures' MICs are issued around.
pub const NOW_MS: u64 = 1_700_000_000_000;
pub const DAY_MS: u64 = 86_400_000;
pub const CA_KEY_ID: u32 = 3;

/// A CA key and what it has issued.
pub struct Ca {
    key: SigningKey,
    next_serial: u64,
    revocations: Vec<SignedRevocation>,
}

impl Ca {
    pub fn new(seed: u8) -> Ca {
        Ca {
            key: SigningKey::from_bytes(&[seed; 32]),
            next_serial: 1,
            revocations: Vec::new(),
        }
    }

    /// A node MIC for `subject`, valid from `not_before_ms` to `not_after_ms`.
    pub fn issue_window(
        &mut self,
        subject: [u8; 32],
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Credentials {
        let serial = self.next_serial;
        self.next_serial += 1;
        let mic = MicBody {
            serial,
            subject_key: subject,
            kind: SubjectKind::Node,
            model: None,
            publisher: "nexus-test".into(),
            provenance: vec![],
            claims: vec![],
            zk_commitment: None,
            not_before_ms,
            not_after_ms,
            ca_key_id: CA_KEY_ID,
        }
        .sign(&self.key);
        Credentials {
            mic,
            attestations: vec![],
        }
    }

    /// A node MIC valid for a day around [`NOW_MS`].
    pub fn issue(&mut self, subject: [u8; 32]) -> Credentials {
        self.issue_window(subject, NOW_MS - DAY_MS, NOW_MS + DAY_MS)
    }

    /// Revokes `serial`; the record goes into the next [`Ca::update`].
    pub fn revoke(&mut self, serial: u64) -> SignedRevocation {
        let seq = self.revocations.len() as u64 + 1;
        let r = SignedRevocation::sign(
            &self.key,
            CA_KEY_ID,
            seq,
            serial,
            NOW_MS + DAY_MS,
            NOW_MS,
            RevocationReason::KeyCompromise,
        );
        self.revocations.push(r.clone());
        r
    }

    pub fn keys(&self) -> CaKeys {
        let mut keys = CaKeys::new();
        keys.insert(CA_KEY_ID, self.key.verifying_key());
        keys
    }

    pub fn update(&self) -> TrustUpdate {
        TrustUpdate {
            ca_keys: self.keys(),
            circuits: vec![],
            revocations: self.revocations.clone(),
        }
    }

    pub fn context(&self) -> TrustContext {
        let mut ctx = TrustContext::new();
        ctx.apply_update(&self.update(), NOW_MS);
        ctx
    }
}

/// How a node of a harness is set up.
pub struct NodeSpec {
    pub key: SigningKey,
    pub credentials: Option<Credentials>,
    pub trust: TrustContext,
    pub config: EndpointConfig,
}

impl NodeSpec {
    /// Node `i` with a valid MIC from `ca`.
    pub fn certified(ca: &mut Ca, i: u8) -> NodeSpec {
        let key = SigningKey::from_bytes(&[100 + i; 32]);
        let credentials = Some(ca.issue(key.verifying_key().to_bytes()));
        NodeSpec {
            key,
            credentials,
            trust: ca.context(),
            config: EndpointConfig::default(),
        }
    }

    pub fn node_id(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// What the conformance bodies need from a harness.
pub trait Harness {
    /// A name for messages.
    fn name(&self) -> &'static str;
    /// Node `i`'s id.
    fn node_id(&self, i: usize) -> [u8; 32];
    /// Opens a session from `from` to `to`; `Ok` once established, `Err(reason)` if refused.
    fn connect(&mut self, from: usize, to: usize) -> Result<SessionId, String>;
    /// The instant deadlines are measured against.
    fn now(&self) -> Instant;
    fn open_flow(
        &mut self,
        node: usize,
        session: SessionId,
        opts: FlowOptions,
    ) -> Result<StreamRef, SendError>;
    fn send(&mut self, node: usize, stream: StreamRef, data: Bytes) -> Result<(), SendError>;
    fn finish(&mut self, node: usize, stream: StreamRef) -> Result<(), SendError>;
    fn send_batch(
        &mut self,
        node: usize,
        stream: StreamRef,
        messages: Vec<Bytes>,
        finish: bool,
    ) -> Result<(), SendError>;
    fn send_message(
        &mut self,
        node: usize,
        session: SessionId,
        data: Bytes,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError>;
    fn send_datagram(
        &mut self,
        node: usize,
        session: SessionId,
        flow: u32,
        data: Bytes,
        opts: DatagramOptions,
    ) -> Result<(), SendError>;
    fn hedge(
        &mut self,
        node: usize,
        sessions: &[SessionId],
        data: Bytes,
        opts: FlowOptions,
    ) -> Result<u64, SendError>;
    fn cancel(&mut self, node: usize, stream: StreamRef);
    fn update_trust(&mut self, node: usize, update: TrustUpdate);
    /// The next event of `node`, waiting at most `within` (virtual or real time).
    fn next_event(&mut self, node: usize, within: Duration) -> Option<Event>;
    fn stats(&mut self, node: usize) -> Vec<SessionStats>;
    /// Lets `within` pass, collecting every node's events into their queues.
    fn idle(&mut self, within: Duration);
}

/// Waits for the first event of `node` matching `pred`, skipping others; panics after
/// `within`.
pub fn expect_event<H: Harness + ?Sized>(
    h: &mut H,
    node: usize,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline_steps = 100_000;
    let start = h.now();
    for _ in 0..deadline_steps {
        let left = within.saturating_sub(h.now().saturating_duration_since(start));
        match h.next_event(node, left) {
            Some(e) if pred(&e) => return e,
            Some(_) => {}
            None => break,
        }
    }
    panic!("{}: node {node}: no {what} within {within:?}", h.name());
}

// ---------------------------------------------------------------------------------------------
// Simulated network.

/// Link behaviour of the in-memory network (every directed pair alike).
#[derive(Clone, Copy, Debug)]
pub struct LinkModel {
    pub latency: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Bytes per second each directed link serialises; 0 = unlimited.
    pub bandwidth_bps: u64,
}

impl Default for LinkModel {
    fn default() -> LinkModel {
        LinkModel {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            bandwidth_bps: 0,
        }
    }
}

#[derive(PartialEq, Eq)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Min-heap on (at, seq).
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Endpoints exchanging datagrams in virtual time, deterministically from one seed.
pub struct SimNet {
    pub endpoints: Vec<Endpoint>,
    addrs: Vec<SocketAddr>,
    pub link: LinkModel,
    /// Links cut in both directions: (a, b) with a < b.
    pub cut: std::collections::BTreeSet<(usize, usize)>,
    /// Extra one-way delay into node i (to make one server slow).
    pub extra_delay_to: BTreeMap<usize, Duration>,
    now: Instant,
    start: Instant,
    queue: BinaryHeap<InFlight>,
    link_free: BTreeMap<(usize, usize), Instant>,
    seq: u64,
    rng: StdRng,
    events: Vec<VecDeque<Event>>,
    trace: DefaultHasher,
    pub datagrams_sent: u64,
    pub datagrams_lost: u64,
    /// When set, every traced item is also recorded here (for finding where two runs differ).
    pub trace_log: Option<Vec<String>>,
}

impl SimNet {
    /// Nodes from `specs`, every random draw derived from `seed`.
    pub fn new(seed: u64, specs: Vec<NodeSpec>, link: LinkModel) -> SimNet {
        // Any fixed instant works: quinn only uses differences.
        let start = base_instant();
        let mut endpoints = Vec::new();
        let mut addrs = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let identity = nexus_stream::identity::Identity::new(spec.key, spec.credentials)
                .expect("identity");
            let ep = Endpoint::new(
                spec.config,
                identity,
                spec.trust,
                Some(seed.wrapping_mul(1000).wrapping_add(i as u64)),
                start,
                NOW_MS,
            )
            .expect("endpoint");
            endpoints.push(ep);
            addrs.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000 + i as u16)));
        }
        let n = endpoints.len();
        SimNet {
            endpoints,
            addrs,
            link,
            cut: Default::default(),
            extra_delay_to: BTreeMap::new(),
            now: start,
            start,
            queue: BinaryHeap::new(),
            link_free: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            events: (0..n).map(|_| VecDeque::new()).collect(),
            trace: DefaultHasher::new(),
            datagrams_sent: 0,
            datagrams_lost: 0,
            trace_log: None,
        }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The trace hash: every event of every node and every datagram delivered, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|a| *a == addr)
    }

    /// Collects transmits and events of every endpoint after a step.
    fn collect(&mut self) {
        for i in 0..self.endpoints.len() {
            while let Some(t) = self.endpoints[i].poll_transmit(self.now) {
                let Some(to) = self.index_of(t.destination) else {
                    continue;
                };
                let segment = t.segment_size.unwrap_or(t.contents.len()).max(1);
                for chunk in t.contents.chunks(segment) {
                    self.schedule(i, to, chunk.to_vec());
                }
            }
            while let Some(e) = self.endpoints[i].poll_event() {
                let item = (i, format!("{e:?}"));
                if let Some(log) = &mut self.trace_log {
                    log.push(format!("{item:?}"));
                }
                item.hash(&mut self.trace);
                self.events[i].push_back(e);
            }
            self.endpoints[i].check_invariants();
        }
    }

    fn schedule(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.datagrams_sent += 1;
        let pair = (from.min(to), from.max(to));
        if self.cut.contains(&pair) || self.rng.random::<f64>() < self.link.loss {
            self.datagrams_lost += 1;
            return;
        }
        let mut depart = self.now;
        if let Some(tx_ns) =
            (bytes.len() as u64 * 1_000_000_000).checked_div(self.link.bandwidth_bps)
        {
            let free = self.link_free.entry((from, to)).or_insert(self.now);
            depart = (*free).max(self.now);
            let tx = Duration::from_nanos(tx_ns);
            *free = depart + tx;
            depart += tx;
        }
        let jitter = if self.link.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.link.jitter.mul_f64(self.rng.random::<f64>())
        };
        let extra = self.extra_delay_to.get(&to).copied().unwrap_or_default();
        let at = depart + self.link.latency + jitter + extra;
        let copies = if self.rng.random::<f64>() < self.link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.seq += 1;
            self.queue.push(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    /// Advances to the next event (delivery or timer) if it is not after `limit`; false if
    /// nothing happens by then (time moves to `limit`).
    pub fn step(&mut self, limit: Instant) -> bool {
        self.collect();
        let next_delivery = self.queue.peek().map(|d| d.at);
        let mut next_timer: Option<Instant> = None;
        for ep in &mut self.endpoints {
            if let Some(t) = ep.poll_timeout() {
                next_timer = Some(next_timer.map_or(t, |n| n.min(t)));
            }
        }
        let next = match (next_delivery, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => {
                self.now = self.now.max(limit);
                return false;
            }
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|d| d.at <= self.now) {
            let Some(d) = self.queue.pop() else { break };
            let item = (d.from, d.to, d.at - self.start, &d.bytes);
            if let Some(log) = &mut self.trace_log {
                log.push(format!(
                    "{:?} {:?} {:?} {:02x?}",
                    item.0,
                    item.1,
                    item.2,
                    &item.3[..item.3.len().min(48)]
                ));
            }
            item.hash(&mut self.trace);
            let from = self.addrs[d.from];
            self.endpoints[d.to].handle_datagram(self.now, from, &d.bytes);
        }
        for ep in &mut self.endpoints {
            if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                ep.handle_timeout(self.now);
            }
        }
        self.collect();
        true
    }

    /// Runs until `pred` holds (checked after every step) or `within` passes.
    pub fn run_until(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&mut SimNet) -> bool,
    ) -> bool {
        let limit = self.now + within;
        loop {
            if pred(self) {
                return true;
            }
            if !self.step(limit) && self.now >= limit {
                return pred(self);
            }
        }
    }

    pub fn events_of(&mut self, i: usize) -> &mut VecDeque<Event> {
        &mut self.events[i]
    }

    /// Injects raw bytes as if `from_addr` sent them to node `to`.
    pub fn inject(&mut self, from_addr: SocketAddr, to: usize, bytes: &[u8]) {
        self.endpoints[to].handle_datagram(self.now, from_addr, bytes);
        self.collect();
    }
}

/// A fixed instant for virtual time: read once per process (the harness is a driver, where
/// reading the clock is allowed); quinn uses only differences of instants, so runs do not
/// depend on its value.
#[allow(
    clippy::disallowed_methods,
    reason = "virtual time needs one base instant"
)]
fn base_instant() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Harness for SimNet {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn node_id(&self, i: usize) -> [u8; 32] {
        self.endpoints[i].node_id()
    }

    fn connect(&mut self, from: usize, to: usize) -> Result<SessionId, String> {
        let peer = self.endpoints[to].node_id();
        let now = self.now;
        let addr = self.addrs[to];
        let session = self.endpoints[from]
            .connect(now, peer, addr)
            .map_err(|e| e.to_string())?;
        let mut outcome = None;
        self.run_until(Duration::from_secs(30), |net| {
            let queue = &mut net.events[from];
            if let Some(pos) = queue.iter().position(|e| match e {
                Event::Established { session: s, .. } | Event::Closed { session: s, .. } => {
                    *s == session
                }
                _ => false,
            }) {
                outcome = queue.remove(pos);
                return true;
            }
            false
        });
        match outcome {
            Some(Event::Established { .. }) => Ok(session),
            Some(Event::Closed { reason, .. }) => Err(reason.to_string()),
            _ => Err("no outcome within 30 s".into()),
        }
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn open_flow(
        &mut self,
        node: usize,
        session: SessionId,
        opts: FlowOptions,
    ) -> Result<StreamRef, SendError> {
        let now = self.now;
        let r = self.endpoints[node].open_flow(now, session, opts);
        self.collect();
        r
    }

    fn send(&mut self, node: usize, stream: StreamRef, data: Bytes) -> Result<(), SendError> {
        let now = self.now;
        let r = self.endpoints[node].send(now, stream, data);
        self.collect();
        r
    }

    fn finish(&mut self, node: usize, stream: StreamRef) -> Result<(), SendError> {
        let now = self.now;
        let r = self.endpoints[node].finish(now, stream);
        self.collect();
        r
    }

    fn send_batch(
        &mut self,
        node: usize,
        stream: StreamRef,
        messages: Vec<Bytes>,
        finish: bool,
    ) -> Result<(), SendError> {
        let now = self.now;
        let r = self.endpoints[node].send_batch(now, stream, messages, finish);
        self.collect();
        r
    }

    fn send_message(
        &mut self,
        node: usize,
        session: SessionId,
        data: Bytes,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError> {
        let now = self.now;
        let r = self.endpoints[node].send_message(now, session, data, opts);
        self.collect();
        r
    }

    fn send_datagram(
        &mut self,
        node: usize,
        session: SessionId,
        flow: u32,
        data: Bytes,
        opts: DatagramOptions,
    ) -> Result<(), SendError> {
        let now = self.now;
        let r = self.endpoints[node].send_datagram(now, session, flow, data, opts);
        self.collect();
        r
    }

    fn hedge(
        &mut self,
        node: usize,
        sessions: &[SessionId],
        data: Bytes,
        opts: FlowOptions,
    ) -> Result<u64, SendError> {
        let now = self.now;
        let r = self.endpoints[node].hedge(now, sessions, data, opts);
        self.collect();
        r
    }

    fn cancel(&mut self, node: usize, stream: StreamRef) {
        let now = self.now;
        self.endpoints[node].cancel(now, stream);
        self.collect();
    }

    fn update_trust(&mut self, node: usize, update: TrustUpdate) {
        let now = self.now;
        self.endpoints[node].update_trust(now, &update);
        self.collect();
    }

    fn next_event(&mut self, node: usize, within: Duration) -> Option<Event> {
        let limit = self.now + within;
        loop {
            if let Some(e) = self.events[node].pop_front() {
                return Some(e);
            }
            if !self.step(limit) && self.now >= limit {
                return self.events[node].pop_front();
            }
        }
    }

    fn stats(&mut self, node: usize) -> Vec<SessionStats> {
        self.endpoints[node].stats()
    }

    fn idle(&mut self, within: Duration) {
        let limit = self.now + within;
        while self.step(limit) {}
    }
}

// ---------------------------------------------------------------------------------------------
// Real sockets.

/// Nodes on real UDP sockets on 127.0.0.1 (ephemeral ports), NexLink-framed, driven by tokio.
pub struct RealNet {
    rt: tokio::runtime::Runtime,
    nodes: Vec<StreamNode>,
    events: Vec<tokio::sync::mpsc::Receiver<Event>>,
    queued: Vec<VecDeque<Event>>,
}

impl RealNet {
    pub fn new(specs: Vec<NodeSpec>) -> RealNet {
        Self::with_framing(specs, Framing::NexLink)
    }

    pub fn with_framing(specs: Vec<NodeSpec>, framing: Framing) -> RealNet {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut nodes = Vec::new();
        let mut events = Vec::new();
        for spec in specs {
            let identity = nexus_stream::identity::Identity::new(spec.key, spec.credentials)
                .expect("identity");
            // The test CA's MICs are valid around NOW_MS: anchor the endpoint's Unix clock
            // there so validity checks use the fixture's time.
            let anchor = tokio::time::Instant::now().into_std();
            let ep = Endpoint::new(spec.config, identity, spec.trust, None, anchor, NOW_MS)
                .expect("endpoint");
            let (node, rx) = rt
                .block_on(StreamNode::bind(
                    (Ipv4Addr::LOCALHOST, 0).into(),
                    ep,
                    framing,
                ))
                .expect("bind");
            nodes.push(node);
            events.push(rx);
        }
        let n = nodes.len();
        RealNet {
            rt,
            nodes,
            events,
            queued: (0..n).map(|_| VecDeque::new()).collect(),
        }
    }

    pub fn node(&self, i: usize) -> &StreamNode {
        &self.nodes[i]
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Harness for RealNet {
    fn name(&self) -> &'static str {
        "udp"
    }

    fn node_id(&self, i: usize) -> [u8; 32] {
        self.nodes[i].node_id()
    }

    fn connect(&mut self, from: usize, to: usize) -> Result<SessionId, String> {
        let peer = self.nodes[to].node_id();
        let addr = self.nodes[to].local_addr();
        let node = self.nodes[from].clone();
        let r = self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(10), node.connect(peer, addr)).await
        });
        match r {
            Ok(Ok(s)) => {
                // The Established event also went to the event channel: drop it there so
                // bodies see the same stream of events as over the simulator.
                let _ = self.take_matching(
                    from,
                    |e| matches!(e, Event::Established { session, .. } if *session == s),
                );
                Ok(s)
            }
            Ok(Err(e)) => {
                let _ = self.take_matching(from, |e| matches!(e, Event::Closed { .. }));
                Err(e.to_string())
            }
            Err(_) => Err("no outcome within 10 s".into()),
        }
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn open_flow(
        &mut self,
        node: usize,
        session: SessionId,
        opts: FlowOptions,
    ) -> Result<StreamRef, SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.open_flow(session, opts)))
    }

    fn send(&mut self, node: usize, stream: StreamRef, data: Bytes) -> Result<(), SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.send(stream, data)))
    }

    fn finish(&mut self, node: usize, stream: StreamRef) -> Result<(), SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.finish(stream)))
    }

    fn send_batch(
        &mut self,
        node: usize,
        stream: StreamRef,
        messages: Vec<Bytes>,
        finish: bool,
    ) -> Result<(), SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.send_batch(stream, messages, finish)))
    }

    fn send_message(
        &mut self,
        node: usize,
        session: SessionId,
        data: Bytes,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.send_message(session, data, opts)))
    }

    fn send_datagram(
        &mut self,
        node: usize,
        session: SessionId,
        flow: u32,
        data: Bytes,
        opts: DatagramOptions,
    ) -> Result<(), SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.send_datagram(session, flow, data, opts)))
    }

    fn hedge(
        &mut self,
        node: usize,
        sessions: &[SessionId],
        data: Bytes,
        opts: FlowOptions,
    ) -> Result<u64, SendError> {
        let n = self.nodes[node].clone();
        unwrap_send(self.rt.block_on(n.hedge(sessions.to_vec(), data, opts)))
    }

    fn cancel(&mut self, node: usize, stream: StreamRef) {
        let n = self.nodes[node].clone();
        self.rt.block_on(n.cancel(stream)).expect("driver running");
    }

    fn update_trust(&mut self, node: usize, update: TrustUpdate) {
        let n = self.nodes[node].clone();
        self.rt
            .block_on(n.update_trust(update))
            .expect("driver running");
    }

    fn next_event(&mut self, node: usize, within: Duration) -> Option<Event> {
        if let Some(e) = self.queued[node].pop_front() {
            return Some(e);
        }
        let rx = &mut self.events[node];
        self.rt
            .block_on(async { tokio::time::timeout(within, rx.recv()).await })
            .ok()
            .flatten()
    }

    fn stats(&mut self, node: usize) -> Vec<SessionStats> {
        let n = self.nodes[node].clone();
        self.rt.block_on(n.stats()).expect("driver running").0
    }

    fn idle(&mut self, within: Duration) {
        self.rt.block_on(tokio::time::sleep(within));
        for i in 0..self.nodes.len() {
            while let Ok(e) = self.events[i].try_recv() {
                self.queued[i].push_back(e);
            }
        }
    }
}

impl RealNet {
    fn take_matching(&mut self, node: usize, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        while let Ok(e) = self.events[node].try_recv() {
            self.queued[node].push_back(e);
        }
        let pos = self.queued[node].iter().position(pred)?;
        self.queued[node].remove(pos)
    }
}

fn unwrap_send<T>(r: Result<T, nexus_stream::udp::NodeError>) -> Result<T, SendError> {
    match r {
        Ok(v) => Ok(v),
        Err(nexus_stream::udp::NodeError::Send(e)) => Err(e),
        Err(e) => panic!("driver failed: {e}"),
    }
}
