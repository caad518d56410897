//! Revocation propagation: how long until every node of a fabric rejects a revoked serial.
//!
//! N broadcast-overlay cores (`Overlay`: HyParView + Plumtree, the gossip actor's overlay, no
//! SWIM) on the overlay event loop in virtual time, with the link model of
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
//! The overlay, its link model and its event loop are [`crate::overlay_net`]'s, shared with
//! [`crate::broadcast`]; this module is the measurement on top ([`crate::overlay_net::OverlayApp`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use nexus_gossip::{OverlayEvent, Timestamp};
use nexus_trust::ca::{Bootstrap, CaState, Command, IssueRequest, Response};
use nexus_trust::mic::{CaKeys, SubjectKind};
use nexus_trust::revocation::{RevocationReason, RevocationSet, SignedRevocation};
use rand::{Rng, RngCore};

use crate::engine::seeded_rng;
use crate::overlay_net::{OverlayApp, OverlayNet, OverlaySetup};

/// Settings of one propagation measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct RevocationSpreadConfig {
    /// The overlay, its link model and its start schedule (the warm-up follows `settle`); its
    /// seed is the root seed.
    pub setup: OverlaySetup,
    /// Ordinary broadcasts that build the Plumtree tree before revocations are measured.
    pub warmup_broadcasts: usize,
    /// Revocations measured (one at a time).
    pub revocations: usize,
    /// Time allowed for one revocation to spread, grafts included.
    pub spread_wait: Duration,
}

impl RevocationSpreadConfig {
    /// The bench's defaults for `nodes` nodes: the broadcast bench's link model (1–20 ms), no
    /// loss.
    pub fn new(nodes: usize, seed: u64) -> Self {
        RevocationSpreadConfig {
            setup: OverlaySetup::new(nodes, seed),
            warmup_broadcasts: 20,
            revocations: 20,
            spread_wait: Duration::from_secs(5),
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

/// The measurement on the overlay: each node's revocation set, fed by the records it delivers.
struct Verifier {
    sets: Vec<RevocationSet>,
    keys: CaKeys,
    /// serial → per node: µs after the broadcast when it started rejecting it.
    watch: BTreeMap<u64, (Timestamp, Vec<Option<u64>>)>,
    verified: u64,
    rejected_records: u64,
}

impl Verifier {
    /// Node `i` got a broadcast at `now`: if it is a revocation record, decode, verify, insert.
    fn deliver(&mut self, now: Timestamp, i: usize, payload: &[u8]) {
        // Warm-up broadcasts are tagged 0; revocations 1.
        let Some((&1, record)) = payload.split_first() else {
            return;
        };
        // The nodes' wall clock: the CA's epoch plus virtual time.
        let now_ms = EPOCH_MS + now.as_micros() / 1000;
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
        for (serial, (sent, got)) in &mut self.watch {
            if got[i].is_none() && self.sets[i].is_revoked(*serial) {
                got[i] = Some(now.as_micros() - sent.as_micros());
            }
        }
    }
}

impl OverlayApp for Verifier {
    type Own = Infallible;

    fn on_event(&mut self, net: &mut OverlayNet<Infallible>, i: usize, event: OverlayEvent) {
        if let OverlayEvent::Delivered { payload, .. } = event {
            self.deliver(net.now, i, &payload);
        }
    }

    fn on_own(&mut self, _: &mut OverlayNet<Infallible>, event: Infallible) {
        match event {}
    }
}

/// Virtual epoch of the nodes' clocks (2024-01-01T00:00:00Z), as in the CA runner.
const EPOCH_MS: u64 = 1_704_067_200_000;

/// Runs the measurement described in the module docs.
pub fn run(cfg: &RevocationSpreadConfig) -> RevocationSpreadReport {
    let n = cfg.setup.nodes;
    // The CA: bootstrapped with a seed-derived key; it issues one MIC per revocation.
    let mut rng = seeded_rng(cfg.setup.link.seed, 10, 0);
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
    let (mut net, settled): (OverlayNet<Infallible>, _) = cfg.setup.build();
    let mut v = Verifier {
        sets: vec![RevocationSet::new(); n],
        keys,
        watch: BTreeMap::new(),
        verified: 0,
        rejected_records: 0,
    };
    net.run_until(settled, &mut v);
    // Warm-up: ordinary broadcasts prune the redundant eager links into a tree.
    for _ in 0..cfg.warmup_broadcasts {
        let i = net.rng.random_range(0..n);
        let mut payload = vec![0u8; 256];
        net.fill(&mut payload[1..]);
        net.broadcast(i, payload, &mut v);
        let t = net.now + Duration::from_millis(250);
        net.run_until(t, &mut v);
    }
    let t = net.now + cfg.spread_wait;
    net.run_until(t, &mut v);

    let mut timings = Vec::new();
    for _ in 0..cfg.revocations {
        let now_ms = EPOCH_MS + net.now.as_micros() / 1000;
        let mut subject_key = [0u8; 32];
        net.fill(&mut subject_key);
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
        let origin = net.rng.random_range(0..n);
        v.watch.insert(serial, (net.now, vec![None; n]));
        let mut payload = Vec::with_capacity(bytes.len() + 1);
        payload.push(1);
        payload.extend_from_slice(&bytes);
        // The origin (the leader that committed it) applies it first.
        v.deliver(net.now, origin, &payload);
        net.broadcast(origin, payload, &mut v);
        let t = net.now + cfg.spread_wait;
        net.run_until(t, &mut v);
        let got = v
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
        verified: v.verified,
        rejected_records: v.rejected_records,
        datagrams: net.datagrams,
        trace_hash: net.trace_hash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64, loss_ppm: u32) -> RevocationSpreadConfig {
        let mut cfg = RevocationSpreadConfig {
            warmup_broadcasts: 5,
            revocations: 3,
            spread_wait: Duration::from_secs(2),
            ..RevocationSpreadConfig::new(50, seed)
        };
        cfg.setup.settle = Duration::from_secs(5);
        cfg.setup.link.loss_ppm = loss_ppm;
        cfg
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
