//! Broadcast overlay (HyParView + Plumtree) in core mode: spread, cost per broadcast per node once
//! the tree is built, and delivery with half the nodes crashed, for 1,000 and 10,000 nodes.
//!
//! Run: `cargo bench -p nexus-sim --bench broadcast` (`NEXUS_BROADCAST_SIZES=1000,10000`,
//! `NEXUS_BROADCAST_SEED=1`). Figures are recorded in docs/BENCHMARKS.md ("Broadcast overlay").
#![allow(
    clippy::disallowed_methods,
    reason = "a bench binary reads the wall clock to report how long each run took"
)]

use std::time::Instant;

use nexus_sim::broadcast::{BroadcastSimConfig, SpreadReport, run};

fn hops(s: &SpreadReport) -> String {
    match (s.hops_p9999, s.time_p9999_ms) {
        (Some(h), Some(t)) => format!("{h} hops / {t:.0} ms"),
        _ => format!("not reached ({} of {})", s.reached, s.live),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NEXUS_BROADCAST_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seed: u64 = std::env::var("NEXUS_BROADCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rows = Vec::new();
    for &n in &sizes {
        let cfg = BroadcastSimConfig::new(n, seed);
        let started = Instant::now();
        let r = run(&cfg);
        let wall = started.elapsed().as_secs_f64();
        eprintln!("{r:#?}");
        eprintln!("config: {cfg:?}");
        rows.push((n, r, wall));
    }
    println!(
        "| nodes | goal 2·log2 N | flood: 99.99 % in | tree: 99.99 % in | Gossip /bcast/node | IHave | Graft | Prune | total | ids per IHave | HyParView /bcast/node | 50 % crashed: before repair (mean / min) | after repair (mean / min) | wall s |"
    );
    println!(
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"
    );
    for (n, r, wall) in rows {
        let f = r.failure.as_ref();
        let pct = |x: f64| format!("{:.2} %", x * 100.0);
        println!(
            "| {n} | {:.1} | {} | {} | {:.3} | {:.3} | {:.4} | {:.4} | {:.3} | {:.1} | {:.3} | {} | {} | {wall:.1} |",
            2.0 * (n as f64).log2(),
            hops(&r.cold),
            hops(&r.warm),
            r.stream.gossip_per_node,
            r.stream.ihave_per_node,
            r.stream.graft_per_node,
            r.stream.prune_per_node,
            r.stream.total_per_node,
            r.stream.ids_per_ihave,
            r.stream.membership_per_node,
            f.map_or("-".into(), |f| format!(
                "{} / {}",
                pct(f.before_mean),
                pct(f.before_min)
            )),
            f.map_or("-".into(), |f| format!(
                "{} / {}",
                pct(f.after_mean),
                pct(f.after_min)
            )),
        );
    }
}
