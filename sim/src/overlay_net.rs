//! The overlay engines' event loop: N broadcast-overlay cores ([`Overlay`]: HyParView +
//! Plumtree, the gossip actor's overlay, no SWIM) on the simulator's event queue in virtual
//! time. Each link draws one fixed latency in `[latency_min, latency_max]` from the seed; each
//! datagram is lost with `loss_ppm`. A node starts by joining through a random earlier node and
//! being told of a few other earlier ones (`peer_up`, as SWIM would eventually tell it).
//!
//! What a measurement does with the overlay's events is its [`OverlayApp`]:
//! [`crate::broadcast`] tracks deliveries of its broadcasts, [`crate::ca::revocation_spread`]
//! verifies revocation records. Datagrams to a node that is not alive are lost; a node that is
//! not alive takes no timer.

use std::time::Duration;

use nexus_gossip::{MessageId, Overlay, OverlayConfig, OverlayEvent, Timestamp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::engine::{derive_seed, node_addr, node_index, seeded_rng};
use crate::queue::EventQueue;

/// The link model and bootstrap of an [`OverlayNet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkModel {
    /// The run's seed: link latencies, losses, contacts and the cores' RNGs derive from it.
    pub seed: u64,
    /// Smallest one-way link latency.
    pub latency_min: Duration,
    /// Largest one-way link latency.
    pub latency_max: Duration,
    /// Datagram loss, parts per million.
    pub loss_ppm: u32,
    /// How many earlier nodes a starting node is told of besides its contact.
    pub known_peers: usize,
}

impl LinkModel {
    /// The fixed one-way latency of the link between `a` and `b` (the same both ways).
    pub fn latency(&self, a: usize, b: usize) -> Duration {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let h = derive_seed(self.seed, 9, (lo << 32) | hi);
        let min = self.latency_min.as_micros() as u64;
        let span = (self.latency_max.as_micros() as u64).saturating_sub(min) + 1;
        Duration::from_micros(min + h % span)
    }
}

/// The overlay a measurement builds: its nodes, their settings, the link model, and the start
/// schedule (node `i` starts at `i × join_spacing`; the overlay then settles for `settle`).
#[derive(Clone, Debug, PartialEq)]
pub struct OverlaySetup {
    /// Number of nodes.
    pub nodes: usize,
    /// Link latencies and loss, bootstrap contacts, and the run's seed.
    pub link: LinkModel,
    /// Time between two nodes' starts.
    pub join_spacing: Duration,
    /// Time after the last start before measuring.
    pub settle: Duration,
    /// The overlay's own settings, the same on every node.
    pub overlay: OverlayConfig,
}

impl OverlaySetup {
    /// The benches' defaults for `nodes` nodes: links of 1–20 ms without loss, 8 earlier nodes
    /// known at start, starts 2 ms apart, 15 s to settle, the overlay's default settings.
    pub fn new(nodes: usize, seed: u64) -> Self {
        OverlaySetup {
            nodes,
            link: LinkModel {
                seed,
                latency_min: Duration::from_millis(1),
                latency_max: Duration::from_millis(20),
                loss_ppm: 0,
                known_peers: 8,
            },
            join_spacing: Duration::from_millis(2),
            settle: Duration::from_secs(15),
            overlay: OverlayConfig::default(),
        }
    }

    /// The overlay's cores on one event queue, every start scheduled; returns the time the
    /// overlay has settled by (`settle` after the last start).
    pub fn build<X>(&self) -> (OverlayNet<X>, Timestamp) {
        let mut net = OverlayNet::new(self.nodes, &self.overlay, self.link.clone());
        let start =
            |i: usize| Timestamp::ZERO + self.join_spacing * u32::try_from(i).unwrap_or(u32::MAX);
        for i in 0..self.nodes {
            net.start_at(start(i), i);
        }
        (net, start(self.nodes) + self.settle)
    }
}

/// What a measurement does with the overlay: its reaction to the cores' events and to its own
/// scheduled events.
pub trait OverlayApp {
    /// The measurement's own scheduled events.
    type Own;
    /// Node `node`'s overlay emitted `event` (at `net.now`).
    fn on_event(&mut self, net: &mut OverlayNet<Self::Own>, node: usize, event: OverlayEvent);
    /// One of the measurement's own events came due (at `net.now`).
    fn on_own(&mut self, net: &mut OverlayNet<Self::Own>, event: Self::Own);
}

#[derive(Debug)]
enum NetEvent<X> {
    Start(usize),
    Timer(usize),
    Datagram {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Own(X),
}

/// N overlay cores on one event queue (see the module docs).
#[derive(Debug)]
pub struct OverlayNet<X> {
    /// The cores, by node index.
    pub nodes: Vec<Overlay>,
    /// Which nodes run (a crashed node's datagrams and timers are dropped).
    pub alive: Vec<bool>,
    /// Virtual time.
    pub now: Timestamp,
    /// The run's generator (losses, contacts; measurements draw from it too).
    pub rng: StdRng,
    /// Datagrams delivered.
    pub datagrams: u64,
    link: LinkModel,
    armed: Vec<Option<Timestamp>>,
    queue: EventQueue<NetEvent<X>>,
    trace: u64,
}

impl<X> OverlayNet<X> {
    /// `nodes` cores with `overlay` settings, none started yet.
    pub fn new(nodes: usize, overlay: &OverlayConfig, link: LinkModel) -> Self {
        OverlayNet {
            nodes: (0..nodes)
                .map(|i| {
                    Overlay::new(
                        node_addr(i),
                        overlay.clone(),
                        derive_seed(link.seed, 3, i as u64),
                    )
                })
                .collect(),
            alive: vec![true; nodes],
            now: Timestamp::ZERO,
            rng: seeded_rng(link.seed, 2, 0),
            datagrams: 0,
            armed: vec![None; nodes],
            queue: EventQueue::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            link,
        }
    }

    /// Hash of every delivered datagram and of what the measurement hashed (same seed → same
    /// hash).
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Folds `bytes` into the trace hash.
    pub fn hash(&mut self, bytes: &[u8]) {
        self.trace = nexus_gossip::mix::fnv1a64(self.trace, bytes);
    }

    fn at(&mut self, t: Timestamp, ev: NetEvent<X>) {
        self.queue.push(t.as_micros(), ev);
    }

    /// Schedules node `i`'s start (join and bootstrap) at `t`.
    pub fn start_at(&mut self, t: Timestamp, i: usize) {
        self.at(t, NetEvent::Start(i));
    }

    /// Schedules one of the measurement's own events at `t`.
    pub fn schedule(&mut self, t: Timestamp, ev: X) {
        self.at(t, NetEvent::Own(ev));
    }

    /// Node `i` broadcasts `payload` now.
    ///
    /// # Panics
    /// If the overlay refuses it (a payload the measurement sizes wrongly).
    pub fn broadcast(
        &mut self,
        i: usize,
        payload: Vec<u8>,
        app: &mut impl OverlayApp<Own = X>,
    ) -> MessageId {
        let id = match self.nodes[i].broadcast(self.now, payload) {
            Ok(id) => id,
            Err(e) => panic!("broadcast refused: {e}"),
        };
        self.after_step(i, app);
        id
    }

    /// Fills `bytes` from the run's generator.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        self.rng.fill_bytes(bytes);
    }

    /// Drains node `i`'s outputs after a call into it and re-arms its timer.
    pub fn after_step(&mut self, i: usize, app: &mut impl OverlayApp<Own = X>) {
        self.nodes[i].check_invariants();
        while let Some(t) = self.nodes[i].poll_transmit() {
            let Some(j) = node_index(t.dst).filter(|j| *j < self.nodes.len()) else {
                continue;
            };
            if self.link.loss_ppm > 0 && self.rng.random_range(0..1_000_000) < self.link.loss_ppm {
                continue;
            }
            let when = self.now + self.link.latency(i, j);
            self.at(
                when,
                NetEvent::Datagram {
                    to: j,
                    from: i,
                    bytes: t.payload,
                },
            );
        }
        let mut events = Vec::new();
        while let Some(ev) = self.nodes[i].poll_event() {
            events.push(ev);
        }
        for ev in events {
            app.on_event(self, i, ev);
        }
        if let Some(d) = self.nodes[i].poll_timeout() {
            let d = d.max(self.now);
            if self.armed[i].is_none_or(|a| d < a) {
                self.armed[i] = Some(d);
                self.at(d, NetEvent::Timer(i));
            }
        }
    }

    /// Runs every event due by `end`; afterwards `now` is at least `end`.
    ///
    /// # Panics
    /// If a core rejects a datagram another core sent (a bug in the core).
    pub fn run_until(&mut self, end: Timestamp, app: &mut impl OverlayApp<Own = X>) {
        while self.queue.peek_time().is_some_and(|t| t <= end.as_micros()) {
            let Some((t, ev)) = self.queue.pop() else {
                break;
            };
            let t = Timestamp::from_micros(t);
            self.now = t;
            match ev {
                NetEvent::Start(i) => self.start(i, app),
                NetEvent::Timer(i) => {
                    if self.armed[i] != Some(t) {
                        continue;
                    }
                    self.armed[i] = None;
                    if self.alive[i] {
                        self.nodes[i].handle_timeout(t);
                        self.after_step(i, app);
                    }
                }
                NetEvent::Datagram { to, from, bytes } => {
                    if !self.alive[to] {
                        continue;
                    }
                    self.datagrams += 1;
                    self.hash(&t.as_micros().to_le_bytes());
                    self.hash(&bytes);
                    // Datagrams the cores produce always decode; an error here is a bug.
                    if let Err(e) = self.nodes[to].handle_datagram(t, node_addr(from), &bytes) {
                        panic!("node {to} rejected a datagram from node {from}: {e}");
                    }
                    self.after_step(to, app);
                }
                NetEvent::Own(ev) => app.on_own(self, ev),
            }
        }
        self.now = self.now.max(end);
    }

    /// Node `i` joins through a random earlier node and is told of a few others.
    fn start(&mut self, i: usize, app: &mut impl OverlayApp<Own = X>) {
        if i > 0 {
            let contact = self.rng.random_range(0..i);
            self.nodes[i].join(self.now, node_addr(contact));
            let mut earlier: Vec<usize> = (0..i).filter(|j| *j != contact).collect();
            earlier.shuffle(&mut self.rng);
            for j in earlier.into_iter().take(self.link.known_peers) {
                self.nodes[i].peer_up(self.now, node_addr(j));
            }
        }
        self.after_step(i, app);
    }
}
