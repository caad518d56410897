//! MIC issuance through a 3-member CA Raft group on loopback TCP with sled durability (every
//! append flushed before it counts).
//!
//! `clients` concurrent tasks each issue MICs in a loop for `secs` seconds through the leader's
//! `CaNode::issue` (group-commit batcher), then the same through `issue_unbatched` (one Raft
//! entry per MIC), then batched through a follower (forwarded to the leader). Prints throughput
//! (MIC/s), p50 / p99 / max latency and the mean batch size, and how many of the leader's
//! presigned MIC signatures the members used.
//!
//! Then the links: the same group over plain TCP and over the authenticated links a node runs
//! (`TlsTransport`: TLS 1.3, Ed25519 raw keys), side by side in alternating rounds — commit
//! latency of one issue at a time (one client, through the leader and through a follower, whose
//! request is forwarded over a link) and throughput with `clients` clients through a follower —
//! with the TLS/TCP ratio of each figure.
//!
//! `cargo bench -p nexus-trust --bench issuance` (clients: `NEXUS_ISSUE_BENCH_CLIENTS`, default
//! 256; seconds per mode: `NEXUS_ISSUE_BENCH_SECS`, default 5; `NEXUS_ISSUE_BENCH_ONLY=links`
//! runs only the link comparison, with `NEXUS_ISSUE_BENCH_ROUNDS` rounds, default 3).
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
use nexus_trust::raft::{
    CaNode, CaNodeConfig, CaPeer, CaRole, LinkPolicy, TcpTransport, TlsTransport, Transport,
};

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

async fn run<T: Transport>(
    node: Arc<CaNode<T>>,
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

/// Starts a bootstrapped 3-member group; member `id` listens over `transport(id)`. Returns the
/// members and the leader's id.
async fn group<T: Transport>(
    dirs: &[tempfile::TempDir],
    transport: impl Fn(u64) -> T,
    node_of: impl Fn(u64) -> String,
) -> (BTreeMap<u64, Arc<CaNode<T>>>, u64) {
    let mut nodes = BTreeMap::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as u64 + 1;
        let db = sled::open(dir.path()).unwrap();
        let config =
            CaNodeConfig::new(id, "127.0.0.1:0", db, 100 + id).with_transport(transport(id));
        nodes.insert(id, Arc::new(CaNode::start(config).await.unwrap()));
    }
    let members: BTreeMap<u64, CaPeer> = nodes
        .iter()
        .map(|(id, n)| {
            (
                *id,
                CaPeer {
                    addr: n.local_addr().to_string(),
                    node: node_of(*id),
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
    let boot = Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [5; 32],
        ca_key_id: 1,
        circuits: vec![],
    }));
    assert_eq!(
        nodes[&leader].write(boot).await.unwrap(),
        Response::Bootstrapped { ca_key_id: 1 }
    );
    (nodes, leader)
}

/// One row of the link comparison, accumulated over rounds.
#[derive(Default)]
struct Row {
    issued: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Row {
    fn add(&mut self, o: Outcome) {
        self.issued += o.issued;
        self.secs += o.secs;
        self.lat_us.extend(o.lat_us);
        self.lat_us.sort_unstable();
    }

    fn rate(&self) -> f64 {
        self.issued as f64 / self.secs
    }
}

/// Plain TCP against the authenticated links, in alternating rounds.
async fn links(clients: u64, secs: u64, rounds: u64) {
    let key = |id: u64| ed25519_dalek::SigningKey::from_bytes(&[id as u8; 32]);
    let public = |id: u64| key(id).verifying_key().to_bytes();
    // Each TLS member knows the three voter keys, as the trust actor tells it from gossip.
    let policy = || {
        let p = Arc::new(LinkPolicy::new());
        p.set_fabric((1..=3).map(public).collect(), Default::default());
        p
    };
    let tcp_dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let tls_dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (tcp, tcp_leader) = group(&tcp_dirs, |_| TcpTransport, |id| format!("{id:064x}")).await;
    let (tls, tls_leader) = group(
        &tls_dirs,
        |id| TlsTransport::new(TcpTransport, &key(id), policy()).unwrap(),
        |id| hex::encode(public(id)),
    )
    .await;
    let tcp_follower = *tcp.keys().find(|id| **id != tcp_leader).unwrap();
    let tls_follower = *tls.keys().find(|id| **id != tls_leader).unwrap();
    println!(
        "links: plain TCP vs TLS 1.3 (Ed25519 raw keys), two 3-member groups side by side, {rounds} alternating rounds of {secs} s per row"
    );
    let next = Arc::new(AtomicU64::new(10_000_000));
    // Warm-up: connections (and TLS handshakes) up, caches warm.
    run(
        tcp[&tcp_follower].clone(),
        Mode::Batched,
        8,
        1,
        next.clone(),
    )
    .await;
    run(
        tls[&tls_follower].clone(),
        Mode::Batched,
        8,
        1,
        next.clone(),
    )
    .await;
    let labels = [
        "commit, 1 client, leader",
        "commit, 1 client, via follower",
        "throughput, via follower",
    ];
    let mut rows: Vec<(Row, Row)> = labels.iter().map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for (i, (tcp_row, tls_row)) in rows.iter_mut().enumerate() {
            let (n, tcp_node, tls_node) = match i {
                0 => (1, &tcp[&tcp_leader], &tls[&tls_leader]),
                1 => (1, &tcp[&tcp_follower], &tls[&tls_follower]),
                _ => (clients, &tcp[&tcp_follower], &tls[&tls_follower]),
            };
            tcp_row.add(run(tcp_node.clone(), Mode::Batched, n, secs, next.clone()).await);
            tls_row.add(run(tls_node.clone(), Mode::Batched, n, secs, next.clone()).await);
        }
    }
    for (label, (t, s)) in labels.iter().zip(&rows) {
        println!(
            "{label:<32} TCP p50 {:>6.2} ms p99 {:>6.2} ms {:>7.0} MIC/s | TLS p50 {:>6.2} ms p99 {:>6.2} ms {:>7.0} MIC/s | TLS/TCP p50 {:.2}x p99 {:.2}x rate {:.2}x",
            pct(&t.lat_us, 0.5),
            pct(&t.lat_us, 0.99),
            t.rate(),
            pct(&s.lat_us, 0.5),
            pct(&s.lat_us, 0.99),
            s.rate(),
            pct(&s.lat_us, 0.5) / pct(&t.lat_us, 0.5),
            pct(&s.lat_us, 0.99) / pct(&t.lat_us, 0.99),
            s.rate() / t.rate(),
        );
    }
    for n in tcp.values() {
        n.shutdown().await;
    }
    for n in tls.values() {
        n.shutdown().await;
    }
}

fn main() {
    let clients = env("NEXUS_ISSUE_BENCH_CLIENTS", 256);
    let secs = env("NEXUS_ISSUE_BENCH_SECS", 5);
    let rounds = env("NEXUS_ISSUE_BENCH_ROUNDS", 3);
    let only_links = std::env::var("NEXUS_ISSUE_BENCH_ONLY").is_ok_and(|v| v == "links");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        if only_links {
            links(clients, secs, rounds).await;
            return;
        }
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
        links(clients, secs, rounds).await;
    });
}
