//! Membership benchmark with real `nexus node run` processes on loopback:
//!
//! - time from starting N processes to every node seeing N alive members (N = 3, 10);
//! - time from SIGKILL of one node to every survivor reporting it down, at the *default*
//!   timings (what an operator gets), beside the protocol's worst-case bound;
//! - resident memory (VmRSS) per node once the fabric is up;
//! - each of these with gossip encryption off and on (`[gossip] encrypt_key`, every datagram
//!   sealed and opened), trials alternating between the two, with the on/off ratio of medians.
//!
//! Run: `cargo bench -p nexus-fabric --bench membership` (set `NEXUS_BENCH_TRIALS`, default 3).
//! Results and conditions are recorded in docs/BENCHMARKS.md.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{NodeProc, start_node};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Trial {
    full_membership: Duration,
    detection: Duration,
    rss_kib: Vec<u64>,
}

async fn all_see(nodes: &[NodeProc], n: usize) -> bool {
    for node in nodes {
        let alive = node
            .members()
            .await
            .iter()
            .filter(|m| m["state"] == "alive")
            .count();
        if alive != n {
            return false;
        }
    }
    true
}

/// A fixed key: the bench measures the cost of sealing, not key handling.
const BENCH_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

async fn trial(n: usize, encrypted: bool) -> Trial {
    let dir = tempfile::tempdir().expect("tmp");
    // Default timings: an empty config file, or only the key.
    let keyed = format!("[gossip]\nencrypt_key = \"{BENCH_KEY}\"\n");
    let config = if encrypted { keyed.as_str() } else { "" };
    let start = Instant::now();
    let mut nodes = vec![start_node("n1", &dir.path().join("n1"), &[], config, None)];
    let seed = nodes[0].gossip.clone();
    for i in 2..=n {
        nodes.push(start_node(
            &format!("n{i}"),
            &dir.path().join(format!("n{i}")),
            &[&seed],
            config,
            None,
        ));
    }
    while !all_see(&nodes, n).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no full membership"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let full_membership = start.elapsed();
    let rss_kib = nodes.iter().filter_map(|p| rss_kib(p.child.id())).collect();

    let mut victim = nodes.pop().expect("victim");
    let addr = victim.gossip.clone();
    victim.sigkill();
    let killed = Instant::now();
    loop {
        let mut all_down = true;
        for node in &nodes {
            all_down &= node.state_of(&addr).await.as_deref() == Some("down");
        }
        if all_down {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "not detected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Trial {
        full_membership,
        detection: killed.elapsed(),
        rss_kib,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful. Either way,
    // only run when invoked as a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("membership bench: run with `cargo bench -p nexus-fabric --bench membership`");
        return;
    }
    let trials: usize = std::env::var("NEXUS_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let defaults = nexus_gossip::MembershipConfig::default();
    println!(
        "default timings: probe_period {:?}, probe_rtt {:?}, suspect_to_down {:?}; {trials} trials",
        defaults.probe_period, defaults.probe_rtt, defaults.suspect_to_down
    );
    println!(
        "{:>5}  {:>9}  {:>22}  {:>28}  {:>10}  {:>14}",
        "nodes",
        "encrypted",
        "full membership ms",
        "detection after SIGKILL ms",
        "bound ms",
        "RSS KiB/node"
    );
    let fmt = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0} ({:.0}–{:.0})", median(v.to_vec()), min, max)
    };
    for n in [3usize, 10] {
        // [off, on]: full membership ms, detection ms, RSS KiB.
        let mut full = [Vec::new(), Vec::new()];
        let mut detect = [Vec::new(), Vec::new()];
        let mut rss = [Vec::new(), Vec::new()];
        for _ in 0..trials {
            // Alternate, so drift in the machine's load hits both alike.
            for (i, encrypted) in [false, true].into_iter().enumerate() {
                let t = trial(n, encrypted).await;
                full[i].push(t.full_membership.as_secs_f64() * 1e3);
                detect[i].push(t.detection.as_secs_f64() * 1e3);
                rss[i].extend(t.rss_kib.iter().map(|&k| k as f64));
            }
        }
        for (i, label) in ["off", "on"].into_iter().enumerate() {
            println!(
                "{n:>5}  {label:>9}  {:>22}  {:>28}  {:>10}  {:>14.0}",
                fmt(&full[i]),
                fmt(&detect[i]),
                defaults.detection_bound(n).as_millis(),
                median(rss[i].clone())
            );
        }
        println!(
            "{n:>5}  {:>9}  {:>22.3}  {:>28.3}",
            "on/off",
            median(full[1].clone()) / median(full[0].clone()),
            median(detect[1].clone()) / median(detect[0].clone())
        );
    }
    println!("(median (min–max) over trials; RSS is the median over every node of every trial)");
}
