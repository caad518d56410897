//! MIC issuance through a 3-member CA Raft group on loopback TCP with sled durability (every
//! append flushed before it counts).
//!
//! `clients` concurrent tasks each issue MICs in a loop for `secs` seconds through the leader's
//! `CaNode::issue` (group-commit batcher), then the same through `issue_unbatched` (one Raft
//! entry per MIC), then batched through a follower (forwarded to the leader). Prints throughput
//! (MIC/s), p50 / p99 / max latency and the mean batch size, and how many of the leader's
//! presigned MIC signatures the members used.
//!
//! `cargo bench -p nexus-trust --bench issuance` (clients: `NEXUS_ISSUE_BENCH_CLIENTS`, default
//! 256; seconds per mode: `NEXUS_ISSUE_BENCH_SECS`, default 5).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![allow(clippy::unwrap_used, reason = "bench binary")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nexus_trust::ca::{Bootstrap, Command, IssueRequest, Response};
use nexus_trust::mic::{Claim, SubjectKind};
use nexus_trust::raft::{CaNode, CaNodeConfig, CaPeer, CaRole};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(n: u64) -> IssueRequest {
    let mut subject_key = [0u8; 32];
    subject_key[..8].copy_from_slice(&n.to_be_bytes());
    IssueRequest {
        request_id: None,
        subject_key,
        kind: SubjectKind::Model,
        model: Some(nexus_trust::mic::ModelIdentity {
            arch_hash: [1; 32],
            weights_commitment: [2; 32],
        }),
        publisher: "bench-publisher".into(),
        provenance: vec![],
        claims: vec![Claim {
            key: "task".into(),
            value: "code-generation".into(),
        }],
        zk_commitment: Some([3; 32]),
        validity_ms: 86_400_000,
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Batched,
    Unbatched,
}

struct Outcome {
    issued: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

async fn run(
    node: Arc<CaNode>,
    mode: Mode,
    clients: u64,
    secs: u64,
    next: Arc<AtomicU64>,
) -> Outcome {
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (node, next) = (node.clone(), next.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match mode {
                    Mode::Batched => {
                        node.issue(request(n)).await.unwrap().unwrap();
                    }
                    Mode::Unbatched => {
                        let r = node.issue_unbatched(vec![request(n)]).await.unwrap();
                        r.into_iter().next().unwrap().unwrap();
                    }
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        });
    }
    let mut lat_us = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat_us.extend(l.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Outcome {
        issued: lat_us.len() as u64,
        secs,
        lat_us,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(label: &str, o: &Outcome, batches: Option<(u64, u64)>) {
    let batch = match batches {
        Some((b, r)) if b > 0 => format!("  mean batch {:.1}", r as f64 / b as f64),
        _ => String::new(),
    };
    println!(
        "{label:<28} {:>9.0} MIC/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} MICs in {:.1} s){batch}",
        o.issued as f64 / o.secs,
        pct(&o.lat_us, 0.50),
        pct(&o.lat_us, 0.99),
        pct(&o.lat_us, 1.0),
        o.issued,
        o.secs,
    );
}

fn main() {
    let clients = env("NEXUS_ISSUE_BENCH_CLIENTS", 256);
    let secs = env("NEXUS_ISSUE_BENCH_SECS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = BTreeMap::new();
        for (i, dir) in dirs.iter().enumerate() {
            let id = i as u64 + 1;
            let db = sled::open(dir.path()).unwrap();
            let config = CaNodeConfig::new(id, "127.0.0.1:0", db, 100 + id);
            nodes.insert(id, Arc::new(CaNode::start(config).await.unwrap()));
        }
        let members: BTreeMap<u64, CaPeer> = nodes
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    CaPeer {
                        addr: n.local_addr().to_string(),
                        node: format!("{id:064x}"),
                    },
                )
            })
            .collect();
        nodes[&1].initialize(members).await.unwrap();
        let leader = loop {
            if let Some(l) = nodes.values().find(|n| n.status().role == CaRole::Leader) {
                break l.id();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let follower = *nodes.keys().find(|id| **id != leader).unwrap();
        let boot = Command::Bootstrap(Box::new(Bootstrap {
            ca_secret_key: [5; 32],
            ca_key_id: 1,
            circuits: vec![],
        }));
        assert_eq!(
            nodes[&leader].write(boot).await.unwrap(),
            Response::Bootstrapped { ca_key_id: 1 }
        );
        println!(
            "3-member CA group, loopback TCP, sled (flush per append), {clients} concurrent clients, {secs} s per mode"
        );
        let next = Arc::new(AtomicU64::new(1));
        // Warm-up (connections, allocator, page cache).
        run(nodes[&leader].clone(), Mode::Batched, clients, 1, next.clone()).await;

        let stats = |n: &CaNode| {
            let s = n.issue_stats();
            (
                s.batches.load(Ordering::Relaxed),
                s.requests.load(Ordering::Relaxed),
            )
        };
        let before = stats(&nodes[&leader]);
        let o = run(nodes[&leader].clone(), Mode::Batched, clients, secs, next.clone()).await;
        let after = stats(&nodes[&leader]);
        report(
            "batched (leader)",
            &o,
            Some((after.0 - before.0, after.1 - before.1)),
        );

        let before = stats(&nodes[&follower]);
        let o = run(nodes[&follower].clone(), Mode::Batched, clients, secs, next.clone()).await;
        let after = stats(&nodes[&follower]);
        report(
            "batched (via follower)",
            &o,
            Some((after.0 - before.0, after.1 - before.1)),
        );

        let o = run(nodes[&leader].clone(), Mode::Unbatched, clients, secs, next.clone()).await;
        report("unbatched (leader)", &o, None);

        let presign = nodes[&leader].presign_stats();
        println!(
            "leader's presigned signatures: {} batches, {} used, {} missed (members signed themselves)",
            presign.batches.load(Ordering::Relaxed),
            presign.used.load(Ordering::Relaxed),
            presign.missed.load(Ordering::Relaxed),
        );
        let mics = nodes[&leader]
            .read_linearizable(|s| s.stats().mics)
            .await
            .unwrap();
        println!("MICs in the CA state: {mics}");
        for n in nodes.values() {
            n.shutdown().await;
        }
    });
}
