//! Revocation propagation at 100 and 1,000 simulated nodes: virtual time from the broadcast of a
//! real `SignedRevocation` until 50 %, 99 % and 100 % of the nodes reject the serial (each node
//! decodes the record, verifies the CA signature and inserts it into its own `RevocationSet`),
//! over HyParView + Plumtree cores in virtual time, without loss and with 1 % loss.
//!
//! Run: `cargo bench -p nexus-sim --bench revocation` (`NEXUS_REVOCATION_SIZES=100,1000`,
//! `NEXUS_REVOCATION_LOSS_PPM=0,10000`, `NEXUS_REVOCATION_SEED=1`). Figures are recorded in
//! docs/BENCHMARKS.md ("Revocation propagation").
#![allow(
    clippy::disallowed_methods,
    reason = "a bench binary reads the wall clock to report how long each run took"
)]

use std::time::Instant;

use nexus_sim::ca::revocation_spread::{RevocationSpreadConfig, RevocationTiming, run};

fn list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn ms(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |v| format!("{v:.1}"))
}

fn main() {
    let sizes: Vec<usize> = list("NEXUS_REVOCATION_SIZES", "100,1000");
    let losses: Vec<u32> = list("NEXUS_REVOCATION_LOSS_PPM", "0,10000");
    let seed: u64 = std::env::var("NEXUS_REVOCATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "| nodes | loss | revocations | record bytes | 50 % reject (median / max ms) | 99 % (median / max ms) | 100 % (median / max ms) | nodes rejecting (min) | bad records | wall s |"
    );
    println!("| ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: |");
    for &n in &sizes {
        for &loss_ppm in &losses {
            let mut cfg = RevocationSpreadConfig::new(n, seed);
            cfg.setup.link.loss_ppm = loss_ppm;
            let started = Instant::now();
            let r = run(&cfg);
            let wall = started.elapsed().as_secs_f64();
            eprintln!("config: {cfg:?}");
            eprintln!("timings: {:?}", r.timings);
            let p50 = |t: &RevocationTiming| t.p50_ms;
            let p99 = |t: &RevocationTiming| t.p99_ms;
            let all = |t: &RevocationTiming| t.all_ms;
            println!(
                "| {n} | {:.1} % | {} | {} | {} / {} | {} / {} | {} / {} | {} of {n} | {} | {wall:.1} |",
                f64::from(loss_ppm) / 1e4,
                r.timings.len(),
                r.timings.first().map_or(0, |t| t.record_bytes),
                ms(r.median(p50)),
                ms(r.max(p50)),
                ms(r.median(p99)),
                ms(r.max(p99)),
                ms(r.median(all)),
                ms(r.max(all)),
                r.timings.iter().map(|t| t.rejecting).min().unwrap_or(0),
                r.rejected_records,
            );
        }
    }
}
