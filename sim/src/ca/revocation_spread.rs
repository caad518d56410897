//! Revocation propagation: how long until every node of a fabric rejects a revoked serial.
//!
//! N broadcast-overlay cores ([`Overlay`]: HyParView + Plumtree, the gossip actor's overlay, no
//! SWIM) on a discrete-event engine in virtual time, with the link model of
//! [`crate::broadcast`] (each link draws one fixed latency in `[latency_min, latency_max]` from
//! the seed; each datagram is lost with `loss_ppm`). The overlay is bootstrapped the same way
//! (each node joins through a random earlier node and learns of a few others) and warmed up
//! with ordinary broadcasts, so the Plumtree tree is built.
//!
//! Then, `revocations` times: a CA (a real [`CaState`], bootstrapped with a key derived from
//! the seed, that issued the MICs) revokes a serial, and a random node — the Raft leader that
//! committed it — broadcasts the **real [`SignedRevocation`] bytes**. Every node that delivers
//! the broadcast decodes it, verifies the CA signature and inserts it into its own
//! [`RevocationSet`]; the record counts for a node only once `is_revoked(serial)` holds there.
//! Measured per revocation: virtual time from the broadcast until 50 %, 99 % and 100 % of the
//! nodes reject the serial (the origin counts from time 0).
//!
//! What it does not model: the Raft commit before the broadcast (measured separately, in
//! the CA benchmarks), SWIM-driven view changes (no membership churn here), CPU time to verify
//! (virtual time does not advance while a node computes; an Ed25519 verify is ≈ 50 µs), and the
//! CA catch-up path (`revocations_after`) a node uses after missing a broadcast — with loss,
//! nodes that miss a record are the 100 % tail (Plumtree's IHave/Graft repairs most of it).
//!
//! The engine duplicates [`crate::broadcast`]'s small event loop rather than reshaping that
//! module: the two measure different things and share only the link model, which is copied
//! exactly (same latency hash).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nexus_gossip::{Overlay, OverlayConfig, OverlayEvent, Timestamp};
use nexus_trust::ca::{Bootstrap, CaState, Command, IssueRequest, Response};
use nexus_trust::mic::{CaKeys, SubjectKind};
use nexus_trust::revocation::{RevocationReason, RevocationSet, SignedRevocation};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

/// Settings of one propagation measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct RevocationSpreadConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Root seed.
    pub seed: u64,
    /// Smallest one-way link latency.
    pub latency_min: Duration,
    /// Largest one-way link latency.
    pub latency_max: Duration,
    /// Share of datagrams lost, in parts per million.
    pub loss_ppm: u32,
    /// Earlier nodes each new node learns of at start (besides its contact).
    pub known_peers: usize,
    /// Time between two nodes' starts.
    pub join_spacing: Duration,
    /// Time after the last start before the warm-up.
    pub settle: Duration,
    /// Ordinary broadcasts that build the Plumtree tree before revocations are measured.
    pub warmup_broadcasts: usize,
    /// Revocations measured (one at a time).
    pub revocations: usize,
    /// Time allowed for one revocation to spread, grafts included.
    pub spread_wait: Duration,
    /// The overlay's settings.
    pub overlay: OverlayConfig,
}

impl RevocationSpreadConfig {
    /// The bench's defaults for `nodes` nodes: the broadcast bench's link model (1–20 ms), no
    /// loss.
    pub fn new(nodes: usize, seed: u64) -> Self {
        RevocationSpreadConfig {
            nodes,
            seed,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(20),
            loss_ppm: 0,
            known_peers: 8,
            join_spacing: Duration::from_millis(2),
            settle: Duration::from_secs(15),
            warmup_broadcasts: 20,
            revocations: 20,
            spread_wait: Duration::from_secs(5),
            overlay: OverlayConfig::default(),
        }
    }
}

/// How one revocation spread.
#[derive(Clone, Debug, PartialEq)]
pub struct RevocationTiming {
    /// The revoked serial.
    pub serial: u64,
    /// The record's size in bytes.
    pub record_bytes: usize,
    /// Virtual ms until half the nodes rejected the serial (`None`: never).
    pub p50_ms: Option<f64>,
    /// … 99 % of the nodes.
    pub p99_ms: Option<f64>,
    /// … every node.
    pub all_ms: Option<f64>,
    /// Nodes that rejected it by the end of `spread_wait`.
    pub rejecting: usize,
}

/// The result of a measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct RevocationSpreadReport {
    /// Nodes.
    pub nodes: usize,
    /// One entry per revocation, in order.
    pub timings: Vec<RevocationTiming>,
    /// Records every node decoded and verified (all deliveries).
    pub verified: u64,
    /// Deliveries whose record failed to decode or verify (must be 0).
    pub rejected_records: u64,
    /// Datagrams delivered.
    pub datagrams: u64,
    /// Hash of every delivery (time, node, bytes): equal for equal configs.
    pub trace_hash: u64,
}

impl RevocationSpreadReport {
    /// The median over revocations of a per-revocation figure (`None` if any is `None`).
    pub fn median(&self, f: impl Fn(&RevocationTiming) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.timings.iter().map(f).collect::<Option<_>>()?;
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// The largest over revocations (`None` if any is `None`).
    pub fn max(&self, f: impl Fn(&RevocationTiming) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.timings.iter().map(f).collect::<Option<_>>()?;
        v.into_iter().reduce(f64::max)
    }
}

fn node_addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX) & 0x00ff_ffff;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | i), 7000))
}

fn node_index(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) if a.port() == 7000 => {
            let bits = u32::from(*a.ip());
            (bits >> 24 == 10).then_some((bits & 0x00ff_ffff) as usize)
        }
        _ => None,
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

enum Ev {
    Start(usize),
    Timer(usize),
    Datagram {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
}

struct Engine {
    cfg: RevocationSpreadConfig,
    nodes: Vec<Overlay>,
    sets: Vec<RevocationSet>,
    keys: CaKeys,
    armed: Vec<Option<Timestamp>>,
    queue: BTreeMap<(Timestamp, u64), Ev>,
    seq: u64,
    now: Timestamp,
    rng: StdRng,
    /// serial → per node: µs after the broadcast when it started rejecting it.
    watch: BTreeMap<u64, (Timestamp, Vec<Option<u64>>)>,
    verified: u64,
    rejected_records: u64,
    datagrams: u64,
    trace: u64,
}

impl Engine {
    fn hash(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.trace = (self.trace ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn at(&mut self, t: Timestamp, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    /// The same per-link latency as `crate::broadcast`.
    fn latency(&self, a: usize, b: usize) -> Duration {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let h = splitmix(self.cfg.seed ^ splitmix(lo << 32 | hi));
        let min = self.cfg.latency_min.as_micros() as u64;
        let span = (self.cfg.latency_max.as_micros() as u64).saturating_sub(min) + 1;
        Duration::from_micros(min + h % span)
    }

    fn now_ms(&self) -> u64 {
        // The nodes' wall clock: the CA's epoch plus virtual time.
        EPOCH_MS + self.now.as_micros() / 1000
    }

    fn after_step(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let Some(j) = node_index(t.dst) else { continue };
            if j >= self.nodes.len() {
                continue;
            }
            if self.cfg.loss_ppm > 0 && self.rng.random_range(0..1_000_000) < self.cfg.loss_ppm {
                continue;
            }
            let when = self.now + self.latency(i, j);
            self.at(
                when,
                Ev::Datagram {
                    to: j,
                    from: node_addr(i),
                    bytes: t.payload,
                },
            );
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            if let OverlayEvent::Delivered { payload, .. } = ev {
                self.deliver(i, &payload);
            }
        }
        if let Some(d) = self.nodes[i].next_deadline() {
            let d = d.max(self.now);
            if self.armed[i].is_none_or(|a| d < a) {
                self.armed[i] = Some(d);
                self.at(d, Ev::Timer(i));
            }
        }
    }

    /// Node `i` got a broadcast: if it is a revocation record, decode, verify, insert.
    fn deliver(&mut self, i: usize, payload: &[u8]) {
        // Warm-up broadcasts are tagged 0; revocations 1.
        let Some((&1, record)) = payload.split_first() else {
            return;
        };
        let now_ms = self.now_ms();
        let inserted = SignedRevocation::decode(record)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                self.sets[i]
                    .insert(&self.keys, r, now_ms)
                    .map_err(|e| e.to_string())
            });
        if inserted.is_err() {
            self.rejected_records += 1;
            return;
        }
        self.verified += 1;
        let now = self.now;
        for (serial, (sent, got)) in &mut self.watch {
            if got[i].is_none() && self.sets[i].is_revoked(*serial) {
                got[i] = Some(now.as_micros() - sent.as_micros());
            }
        }
    }

    fn run_until(&mut self, end: Timestamp) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((t, _), ev) = entry.remove_entry();
            self.now = t;
            match ev {
                Ev::Start(i) => {
                    if i > 0 {
                        let contact = self.rng.random_range(0..i);
                        self.nodes[i].join(t, node_addr(contact));
                        let mut earlier: Vec<usize> = (0..i).filter(|j| *j != contact).collect();
                        earlier.shuffle(&mut self.rng);
                        for j in earlier.into_iter().take(self.cfg.known_peers) {
                            self.nodes[i].peer_up(t, node_addr(j));
                        }
                    }
                    self.after_step(i);
                }
                Ev::Timer(i) => {
                    if self.armed[i] != Some(t) {
                        continue;
                    }
                    self.armed[i] = None;
                    self.nodes[i].handle_timeout(t);
                    self.after_step(i);
                }
                Ev::Datagram { to, from, bytes } => {
                    self.datagrams += 1;
                    self.hash(&t.as_micros().to_le_bytes());
                    self.hash(&bytes);
                    if let Err(e) = self.nodes[to].handle_datagram(t, from, &bytes) {
                        panic!("node {to} rejected a datagram from {from}: {e}");
                    }
                    self.after_step(to);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn broadcast(&mut self, i: usize, payload: Vec<u8>) {
        if let Err(e) = self.nodes[i].broadcast(self.now, payload) {
            panic!("broadcast refused: {e}");
        }
        self.after_step(i);
    }
}

/// Virtual epoch of the nodes' clocks (2024-01-01T00:00:00Z), as in the CA runner.
const EPOCH_MS: u64 = 1_704_067_200_000;

/// Runs the measurement described in the module docs.
pub fn run(cfg: &RevocationSpreadConfig) -> RevocationSpreadReport {
    let n = cfg.nodes;
    // The CA: bootstrapped with a seed-derived key; it issues one MIC per revocation.
    let mut rng = StdRng::seed_from_u64(splitmix(cfg.seed ^ 0xca));
    let mut ca_secret_key = [0u8; 32];
    rng.fill_bytes(&mut ca_secret_key);
    let mut ca = CaState::new();
    let mut index = 0u64;
    let mut apply = |ca: &mut CaState, cmd: Command| {
        index += 1;
        ca.apply(index, &cmd)
    };
    let boot = apply(
        &mut ca,
        Command::Bootstrap(Box::new(Bootstrap {
            ca_secret_key,
            ca_key_id: 1,
            circuits: Vec::new(),
        })),
    );
    assert!(
        matches!(boot, Response::Bootstrapped { .. }),
        "bootstrap: {boot:?}"
    );
    let keys = ca.ca_keys().clone();
    let mut e = Engine {
        nodes: (0..n)
            .map(|i| {
                Overlay::new(
                    node_addr(i),
                    cfg.overlay.clone(),
                    splitmix(cfg.seed ^ splitmix(i as u64 + 1)),
                )
            })
            .collect(),
        sets: vec![RevocationSet::new(); n],
        keys,
        armed: vec![None; n],
        queue: BTreeMap::new(),
        seq: 0,
        now: Timestamp::ZERO,
        rng: StdRng::seed_from_u64(splitmix(cfg.seed)),
        watch: BTreeMap::new(),
        verified: 0,
        rejected_records: 0,
        datagrams: 0,
        trace: 0xcbf2_9ce4_8422_2325,
        cfg: cfg.clone(),
    };
    for i in 0..n {
        let t = Timestamp::ZERO + cfg.join_spacing * u32::try_from(i).unwrap_or(u32::MAX);
        e.at(t, Ev::Start(i));
    }
    let end =
        Timestamp::ZERO + cfg.join_spacing * u32::try_from(n).unwrap_or(u32::MAX) + cfg.settle;
    e.run_until(end);
    // Warm-up: ordinary broadcasts prune the redundant eager links into a tree.
    for _ in 0..cfg.warmup_broadcasts {
        let i = e.rng.random_range(0..n);
        let mut payload = vec![0u8; 256];
        e.rng.fill(&mut payload[1..]);
        e.broadcast(i, payload);
        let t = e.now + Duration::from_millis(250);
        e.run_until(t);
    }
    let t = e.now + cfg.spread_wait;
    e.run_until(t);

    let mut timings = Vec::new();
    for _ in 0..cfg.revocations {
        let now_ms = e.now_ms();
        let mut subject_key = [0u8; 32];
        e.rng.fill_bytes(&mut subject_key);
        let issued = apply(
            &mut ca,
            Command::Issue {
                now_ms,
                requests: vec![IssueRequest {
                    request_id: None,
                    subject_key,
                    kind: SubjectKind::Node,
                    model: None,
                    publisher: "bench".into(),
                    provenance: Vec::new(),
                    claims: Vec::new(),
                    zk_commitment: None,
                    validity_ms: 24 * 3600 * 1000,
                }],
            },
        );
        let serial = match issued {
            Response::Issued(r) => match r.first() {
                Some(Ok(mic)) => mic.body.serial,
                other => panic!("issue failed: {other:?}"),
            },
            other => panic!("issue failed: {other:?}"),
        };
        let record = match apply(
            &mut ca,
            Command::Revoke {
                now_ms,
                serial,
                reason: RevocationReason::KeyCompromise,
            },
        ) {
            Response::Revoked(Ok(r)) => r,
            other => panic!("revoke failed: {other:?}"),
        };
        let bytes = record.encode();
        let origin = e.rng.random_range(0..n);
        e.watch.insert(serial, (e.now, vec![None; n]));
        let mut payload = Vec::with_capacity(bytes.len() + 1);
        payload.push(1);
        payload.extend_from_slice(&bytes);
        // The origin (the leader that committed it) applies it first.
        e.deliver(origin, &payload);
        e.broadcast(origin, payload);
        let t = e.now + cfg.spread_wait;
        e.run_until(t);
        let got = e
            .watch
            .get(&serial)
            .map(|(_, g)| g.clone())
            .unwrap_or_default();
        let mut times: Vec<u64> = got.iter().flatten().copied().collect();
        times.sort_unstable();
        let at = |share: f64| {
            let need = ((n as f64) * share).ceil() as usize;
            (need > 0 && times.len() >= need).then(|| times[need - 1] as f64 / 1000.0)
        };
        timings.push(RevocationTiming {
            serial,
            record_bytes: bytes.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            all_ms: at(1.0),
            rejecting: times.len(),
        });
    }
    RevocationSpreadReport {
        nodes: n,
        timings,
        verified: e.verified,
        rejected_records: e.rejected_records,
        datagrams: e.datagrams,
        trace_hash: e.trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64, loss_ppm: u32) -> RevocationSpreadConfig {
        RevocationSpreadConfig {
            settle: Duration::from_secs(5),
            warmup_broadcasts: 5,
            revocations: 3,
            spread_wait: Duration::from_secs(2),
            loss_ppm,
            ..RevocationSpreadConfig::new(50, seed)
        }
    }

    #[test]
    fn every_node_rejects_every_revoked_serial() {
        let r = run(&small(3, 0));
        assert_eq!(r.timings.len(), 3);
        assert_eq!(r.rejected_records, 0);
        for t in &r.timings {
            assert_eq!(t.rejecting, 50, "{t:?}");
            let (p50, p99, all) = (
                t.p50_ms.expect("p50"),
                t.p99_ms.expect("p99"),
                t.all_ms.expect("all"),
            );
            assert!(p50 > 0.0 && p50 <= p99 && p99 <= all, "{t:?}");
            // At least one link latency, at most the spread window.
            assert!((1.0..2000.0).contains(&all), "{t:?}");
        }
        // Every node verified one record per revocation (the origin included).
        assert_eq!(r.verified, 150);
    }

    #[test]
    fn same_config_same_run_and_seed_matters() {
        let a = run(&small(5, 10_000));
        let b = run(&small(5, 10_000));
        assert_eq!(a, b);
        let c = run(&small(6, 10_000));
        assert_ne!(a.trace_hash, c.trace_hash);
    }
}
