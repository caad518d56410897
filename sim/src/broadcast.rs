//! Broadcast-overlay measurement in core mode: N `Overlay` cores (HyParView + Plumtree, no
//! SWIM) on the overlay event loop ([`crate::overlay_net`]) with seeded per-link latency and
//! loss, in virtual time.
//!
//! [`run`] bootstraps the overlay (each node joins through a random earlier node and is told of
//! a few random earlier nodes with `peer_up`, as SWIM would eventually tell it), then measures:
//!
//! 1. **spread** of one broadcast on the fresh overlay (every link still eager: a flood) and of
//!    one on the warmed-up tree: hops and time to reach 99.99 % of live nodes;
//! 2. **cost** of a stream of broadcasts from random origins once the tree is built: payload
//!    (Gossip) datagrams and Plumtree control datagrams (IHave/Graft/Prune) per broadcast per node;
//! 3. **reliability** with a fraction of nodes crashed at once: the share of survivors each
//!    broadcast reaches before SWIM's verdicts arrive, and after `peer_down` has been applied on
//!    every survivor and the views have repaired.
//!
//! Every random choice comes from the run's seed, so the same config gives the same
//! [`BroadcastReport`] (including its trace hash); `sim/tests/broadcast.rs` checks that.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nexus_gossip::{MessageId, OverlayEvent, OverlayStats, Timestamp};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::engine::{node_addr, node_index};
use crate::overlay_net::{OverlayApp, OverlayNet, OverlaySetup};

/// Settings of one measurement run.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastSimConfig {
    /// The overlay, its link model and its start schedule; its seed is the root seed (the
    /// network, the schedule and every node's seed derive from it).
    pub setup: OverlaySetup,
    /// Time allowed for one broadcast (or the end of a stream) to spread, grafts included.
    pub spread_wait: Duration,
    /// Broadcasts from random origins that build the tree before the stream is measured.
    pub warmup_broadcasts: usize,
    /// Broadcasts in the measured stream.
    pub stream_broadcasts: usize,
    /// The stream's broadcasts are spread evenly over this span.
    pub stream_span: Duration,
    /// Application payload size of every broadcast.
    pub payload_bytes: usize,
    /// Share of nodes crashed at once in the failure phase (0 skips it).
    pub fail_fraction: f64,
    /// Time from the crash until every survivor is told (SWIM's detection, modelled).
    pub detection_delay: Duration,
    /// Time from the `peer_down` calls to the repaired-phase broadcasts.
    pub repair_wait: Duration,
    /// Broadcasts from random survivors in each failure sub-phase.
    pub failure_probes: usize,
}

impl BroadcastSimConfig {
    /// The defaults used by the bench and the docs for `nodes` nodes.
    pub fn new(nodes: usize, seed: u64) -> Self {
        BroadcastSimConfig {
            setup: OverlaySetup::new(nodes, seed),
            spread_wait: Duration::from_secs(4),
            warmup_broadcasts: 20,
            stream_broadcasts: 100,
            stream_span: Duration::from_secs(5),
            payload_bytes: 256,
            fail_fraction: 0.5,
            detection_delay: Duration::from_secs(5),
            repair_wait: Duration::from_secs(5),
            failure_probes: 10,
        }
    }
}

/// How far and how fast one broadcast spread.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadReport {
    /// Live nodes (origin included).
    pub live: usize,
    /// Live nodes that have the message (origin included).
    pub reached: usize,
    /// Hops within which 99.99 % of live nodes had it (`None`: never reached 99.99 %).
    pub hops_p9999: Option<u16>,
    /// Largest hop count of any delivery.
    pub hops_max: u16,
    /// Time within which 99.99 % of live nodes had it, ms.
    pub time_p9999_ms: Option<f64>,
    /// Time of the last delivery, ms.
    pub time_max_ms: f64,
}

/// Cost of the measured stream, per broadcast per live node.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamReport {
    /// Broadcasts in the stream.
    pub broadcasts: usize,
    /// Smallest share of the other live nodes any broadcast reached.
    pub delivery_min: f64,
    /// Mean share of the other live nodes reached.
    pub delivery_mean: f64,
    /// Gossip (payload) datagrams.
    pub gossip_per_node: f64,
    /// IHave datagrams.
    pub ihave_per_node: f64,
    /// Graft datagrams.
    pub graft_per_node: f64,
    /// Prune datagrams.
    pub prune_per_node: f64,
    /// Gossip + IHave + Graft + Prune.
    pub total_per_node: f64,
    /// HyParView datagrams (shuffles, joins, neighbour traffic) over the same window.
    pub membership_per_node: f64,
    /// Gossip datagrams that carried a message already held.
    pub duplicates_per_node: f64,
    /// Message ids per IHave datagram (the batching factor).
    pub ids_per_ihave: f64,
}

/// Delivery with a share of the nodes crashed.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureReport {
    /// Nodes crashed.
    pub crashed: usize,
    /// Nodes left.
    pub survivors: usize,
    /// Before the survivors learn of the crash: mean share of the other survivors reached.
    pub before_mean: f64,
    /// … and the smallest share over the probe broadcasts.
    pub before_min: f64,
    /// After `peer_down` and `repair_wait`: mean share of the other survivors reached.
    pub after_mean: f64,
    /// … and the smallest share.
    pub after_min: f64,
    /// Survivors with an empty active view after repair.
    pub isolated_after: usize,
    /// Mean active-view size of survivors after repair.
    pub active_mean_after: f64,
}

/// The views after bootstrap.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewReport {
    /// Mean active-view size.
    pub active_mean: f64,
    /// Smallest active view.
    pub active_min: usize,
    /// Mean passive-view size.
    pub passive_mean: f64,
    /// Share of active-view links held by both ends.
    pub symmetric: f64,
    /// Whether the active-view graph is connected.
    pub connected: bool,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastReport {
    /// Nodes.
    pub nodes: usize,
    /// Root seed.
    pub seed: u64,
    /// Views after bootstrap (no broadcast yet).
    pub views: ViewReport,
    /// Views after the measured stream (a link held by one end only is dropped as soon as a
    /// broadcast crosses it: the other end answers with Disconnect).
    pub views_after_stream: ViewReport,
    /// The first broadcast (every link eager: a flood over the active views).
    pub cold: SpreadReport,
    /// One broadcast after the warm-up (along the pruned tree).
    pub warm: SpreadReport,
    /// The measured stream.
    pub stream: StreamReport,
    /// The failure phase (when `fail_fraction > 0`).
    pub failure: Option<FailureReport>,
    /// Datagrams delivered over the whole run.
    pub datagrams: u64,
    /// Hash of every delivered datagram and event (same seed → same hash).
    pub trace_hash: u64,
}

/// Datagram counters summed over live nodes.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    gossip: u64,
    ihave: u64,
    graft: u64,
    prune: u64,
    membership: u64,
    duplicates: u64,
    ihave_ids: u64,
}

#[derive(Debug)]
struct Track {
    sent_at: Timestamp,
    /// Per node: the hops and time (µs after `sent_at`) of its delivery.
    got: Vec<Option<(u16, u64)>>,
}

/// The measurement on the overlay: broadcasts from chosen origins, their deliveries tracked.
#[derive(Debug)]
struct Tracker {
    payload_bytes: usize,
    tracks: BTreeMap<MessageId, Track>,
}

impl Tracker {
    /// Node `i` broadcasts a random payload now; its deliveries are tracked.
    fn broadcast(&mut self, net: &mut OverlayNet<usize>, i: usize) -> MessageId {
        let mut payload = vec![0u8; self.payload_bytes];
        net.fill(&mut payload);
        let id = match net.nodes[i].broadcast(net.now, payload) {
            Ok(id) => id,
            Err(e) => panic!("broadcast refused: {e}"),
        };
        let mut got = vec![None; net.nodes.len()];
        got[i] = Some((0, 0));
        self.tracks.insert(
            id,
            Track {
                sent_at: net.now,
                got,
            },
        );
        net.after_step(i, self);
        id
    }
}

impl OverlayApp for Tracker {
    /// A scheduled broadcast from this node.
    type Own = usize;

    fn on_event(&mut self, net: &mut OverlayNet<usize>, i: usize, event: OverlayEvent) {
        if let OverlayEvent::Delivered { id, hops, .. } = event {
            net.hash(&id.0);
            net.hash(&(i as u64).to_le_bytes());
            if let Some(track) = self.tracks.get_mut(&id) {
                let dt = net.now.as_micros() - track.sent_at.as_micros();
                assert!(track.got[i].is_none(), "node {i} delivered {id} twice");
                track.got[i] = Some((hops, dt));
            }
        }
    }

    fn on_own(&mut self, net: &mut OverlayNet<usize>, origin: usize) {
        self.broadcast(net, origin);
    }
}

/// The overlay and the measurement on it.
#[derive(Debug)]
struct Engine {
    cfg: BroadcastSimConfig,
    net: OverlayNet<usize>,
    app: Tracker,
}

impl Engine {
    /// The engine with every start scheduled, and the time the overlay has settled by.
    fn new(cfg: BroadcastSimConfig) -> (Self, Timestamp) {
        let (net, settled) = cfg.setup.build();
        let engine = Engine {
            net,
            app: Tracker {
                payload_bytes: cfg.payload_bytes,
                tracks: BTreeMap::new(),
            },
            cfg,
        };
        (engine, settled)
    }

    fn run_until(&mut self, end: Timestamp) {
        self.net.run_until(end, &mut self.app);
    }

    fn broadcast(&mut self, i: usize) -> MessageId {
        self.app.broadcast(&mut self.net, i)
    }

    fn random_live(&mut self) -> usize {
        loop {
            let i = self.net.rng.random_range(0..self.net.nodes.len());
            if self.net.alive[i] {
                return i;
            }
        }
    }

    fn live(&self) -> usize {
        self.net.alive.iter().filter(|a| **a).count()
    }

    fn counts(&self) -> Counts {
        let mut sum = Counts::default();
        for (n, _) in self
            .net
            .nodes
            .iter()
            .zip(&self.net.alive)
            .filter(|(_, a)| **a)
        {
            let s: OverlayStats = n.stats();
            sum.gossip += s.sent.gossip;
            sum.ihave += s.sent.ihave;
            sum.graft += s.sent.graft;
            sum.prune += s.sent.prune;
            sum.membership += s.sent.membership();
            sum.duplicates += s.duplicates;
            sum.ihave_ids += s.ihave_ids_sent;
        }
        sum
    }

    /// The share of the other live nodes that got `id`.
    fn delivery(&self, id: &MessageId) -> f64 {
        let Some(track) = self.app.tracks.get(id) else {
            return 0.0;
        };
        let live = self.live();
        let reached = (0..self.net.nodes.len())
            .filter(|i| self.net.alive[*i] && track.got[*i].is_some())
            .count();
        (reached.saturating_sub(1)) as f64 / (live.saturating_sub(1)).max(1) as f64
    }

    fn spread(&self, id: &MessageId) -> SpreadReport {
        let live = self.live();
        let mut got: Vec<(u16, u64)> = match self.app.tracks.get(id) {
            Some(track) => (0..self.net.nodes.len())
                .filter(|i| self.net.alive[*i])
                .filter_map(|i| track.got[i])
                .collect(),
            None => Vec::new(),
        };
        let reached = got.len();
        let need = (live as f64 * 0.9999).ceil() as usize;
        let mut hops: Vec<u16> = got.iter().map(|g| g.0).collect();
        hops.sort_unstable();
        got.sort_unstable_by_key(|g| g.1);
        let ms = |us: u64| us as f64 / 1000.0;
        SpreadReport {
            live,
            reached,
            hops_p9999: (reached >= need && need > 0).then(|| hops[need - 1]),
            hops_max: hops.last().copied().unwrap_or(0),
            time_p9999_ms: (reached >= need && need > 0).then(|| ms(got[need - 1].1)),
            time_max_ms: got.last().map_or(0.0, |g| ms(g.1)),
        }
    }

    fn views(&self) -> ViewReport {
        let nodes = &self.net.nodes;
        let n = nodes.len();
        let mut links = 0usize;
        let mut symmetric = 0usize;
        let mut active_min = usize::MAX;
        let (mut active_sum, mut passive_sum) = (0usize, 0usize);
        for (i, node) in nodes.iter().enumerate() {
            let act = node.active_view();
            active_min = active_min.min(act.len());
            active_sum += act.len();
            passive_sum += node.passive_view().len();
            for p in act {
                links += 1;
                if let Some(j) = node_index(p)
                    && nodes[j].active_view().contains(&node_addr(i))
                {
                    symmetric += 1;
                }
            }
        }
        // Connectivity of the active-view graph (links taken as undirected).
        let mut seen = vec![false; n];
        let mut stack = vec![0usize];
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in nodes.iter().enumerate() {
            for p in node.active_view() {
                if let Some(j) = node_index(p) {
                    adj[i].push(j);
                    adj[j].push(i);
                }
            }
        }
        if n > 0 {
            seen[0] = true;
        }
        while let Some(i) = stack.pop() {
            for &j in &adj[i] {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        ViewReport {
            active_mean: active_sum as f64 / n.max(1) as f64,
            active_min: if n == 0 { 0 } else { active_min },
            passive_mean: passive_sum as f64 / n.max(1) as f64,
            symmetric: symmetric as f64 / links.max(1) as f64,
            connected: seen.iter().all(|s| *s),
        }
    }

    fn wait(&mut self, d: Duration) {
        let end = self.net.now + d;
        self.run_until(end);
    }

    /// Schedules `count` broadcasts from random live nodes, evenly over `span`, runs them and
    /// `spread_wait` more; returns their ids.
    fn stream(&mut self, count: usize, span: Duration) -> Vec<MessageId> {
        let before: Vec<MessageId> = self.app.tracks.keys().copied().collect();
        let step = span / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
        for k in 0..count {
            let i = self.random_live();
            let when = self.net.now + step * u32::try_from(k).unwrap_or(u32::MAX);
            self.net.schedule(when, i);
        }
        self.wait(span + self.cfg.spread_wait);
        self.app
            .tracks
            .keys()
            .copied()
            .filter(|id| !before.contains(id))
            .collect()
    }
}

/// Runs the whole measurement described in the module docs.
pub fn run(cfg: &BroadcastSimConfig) -> BroadcastReport {
    // 1. Bootstrap.
    let (mut e, settled) = Engine::new(cfg.clone());
    let n = cfg.setup.nodes;
    e.run_until(settled);
    let views = e.views();

    // 2. One broadcast on the fresh overlay: every link is eager, so this is a flood.
    let origin = e.random_live();
    let id = e.broadcast(origin);
    e.wait(cfg.spread_wait);
    let cold = e.spread(&id);

    // 3. Warm-up: redundant eager links are pruned by the duplicates they carry.
    e.stream(cfg.warmup_broadcasts, cfg.stream_span);
    let origin = e.random_live();
    let id = e.broadcast(origin);
    e.wait(cfg.spread_wait);
    let warm = e.spread(&id);

    // 4. The measured stream.
    let s0 = e.counts();
    let ids = e.stream(cfg.stream_broadcasts, cfg.stream_span);
    let s1 = e.counts();
    let per = |a: u64, b: u64| (b - a) as f64 / (e.live() as f64 * ids.len().max(1) as f64);
    let ihaves = s1.ihave - s0.ihave;
    let stream = StreamReport {
        broadcasts: ids.len(),
        delivery_min: ids.iter().map(|id| e.delivery(id)).fold(1.0, f64::min),
        delivery_mean: ids.iter().map(|id| e.delivery(id)).sum::<f64>() / ids.len().max(1) as f64,
        gossip_per_node: per(s0.gossip, s1.gossip),
        ihave_per_node: per(s0.ihave, s1.ihave),
        graft_per_node: per(s0.graft, s1.graft),
        prune_per_node: per(s0.prune, s1.prune),
        total_per_node: per(
            s0.gossip + s0.ihave + s0.graft + s0.prune,
            s1.gossip + s1.ihave + s1.graft + s1.prune,
        ),
        membership_per_node: per(s0.membership, s1.membership),
        duplicates_per_node: per(s0.duplicates, s1.duplicates),
        ids_per_ihave: (s1.ihave_ids - s0.ihave_ids) as f64 / ihaves.max(1) as f64,
    };

    let views_after_stream = e.views();

    // 5. Crash a share of the nodes at once.
    let failure = (cfg.fail_fraction > 0.0).then(|| failure_phase(&mut e));

    BroadcastReport {
        nodes: n,
        seed: cfg.setup.link.seed,
        views,
        views_after_stream,
        cold,
        warm,
        stream,
        failure,
        datagrams: e.net.datagrams,
        trace_hash: e.net.trace_hash(),
    }
}

fn failure_phase(e: &mut Engine) -> FailureReport {
    let cfg = e.cfg.clone();
    let n = e.net.nodes.len();
    let crashed_count = ((n as f64 * cfg.fail_fraction) as usize).min(n.saturating_sub(2));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut e.net.rng);
    for &i in &order[..crashed_count] {
        e.net.alive[i] = false;
    }
    let t_crash = e.net.now;
    // Before detection: probes spread over the first part of the detection delay.
    let probe_span = cfg.detection_delay.saturating_sub(cfg.spread_wait);
    let ids = e.stream(cfg.failure_probes, probe_span);
    let before: Vec<f64> = ids.iter().map(|id| e.delivery(id)).collect();
    e.run_until(t_crash + cfg.detection_delay);
    // SWIM's verdicts reach every survivor: passive entries first, so that a repair triggered
    // by a dead neighbour does not pick a dead passive peer SWIM already reported.
    for i in 0..n {
        if !e.net.alive[i] {
            continue;
        }
        let now = e.net.now;
        let dead_passive: Vec<SocketAddr> = e.net.nodes[i]
            .passive_view()
            .into_iter()
            .filter(|p| node_index(*p).is_some_and(|j| !e.net.alive[j]))
            .collect();
        let dead_active: Vec<SocketAddr> = e.net.nodes[i]
            .active_view()
            .into_iter()
            .filter(|p| node_index(*p).is_some_and(|j| !e.net.alive[j]))
            .collect();
        for p in dead_passive.into_iter().chain(dead_active) {
            e.net.nodes[i].peer_down(now, p);
        }
        e.net.after_step(i, &mut e.app);
    }
    e.wait(cfg.repair_wait);
    let ids = e.stream(cfg.failure_probes, cfg.stream_span);
    let after: Vec<f64> = ids.iter().map(|id| e.delivery(id)).collect();
    let survivors: Vec<usize> = (0..n).filter(|i| e.net.alive[*i]).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(1.0, f64::min);
    FailureReport {
        crashed: crashed_count,
        survivors: survivors.len(),
        before_mean: mean(&before),
        before_min: min(&before),
        after_mean: mean(&after),
        after_min: min(&after),
        isolated_after: survivors
            .iter()
            .filter(|i| e.net.nodes[**i].active_view().is_empty())
            .count(),
        active_mean_after: survivors
            .iter()
            .map(|i| e.net.nodes[*i].active_view().len())
            .sum::<usize>() as f64
            / survivors.len().max(1) as f64,
    }
}
