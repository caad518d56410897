//! CI's small swarm: every shipped scenario small enough for a test run (≤ 100 nodes) over many
//! seeds. `NEXUS_SWARM_SEEDS` (default 30) sets how many; `[stream]` scenarios, which run real
//! TLS handshakes and QUIC connections (about a second each in a debug build), run
//! `NEXUS_STREAM_SWARM_SEEDS` (default 8) of them.

mod common;

use std::path::PathBuf;

use common::{env_u64, swarm_failures};
use nexus_sim::Scenario;

#[test]
fn shipped_scenarios_hold_over_many_seeds() {
    let seeds = env_u64("NEXUS_SWARM_SEEDS", 30);
    let stream_seeds = env_u64("NEXUS_STREAM_SWARM_SEEDS", 8);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut ran = 0;
    let mut failures = Vec::new();
    for path in paths {
        let s = Scenario::load(&path).expect("valid");
        if s.ca.is_some() {
            // CA scenarios run real sled-backed Raft voters: sim/tests/ca.rs swarms them with
            // one job (two at once can starve sled's I/O pool; docs/simulator.md, section 11).
            eprintln!("skipping {}: CA scenario (sim/tests/ca.rs)", s.name);
            continue;
        }
        if s.nodes > 100 {
            eprintln!("skipping {} ({} nodes): benchmark-sized", s.name, s.nodes);
            continue;
        }
        let last = if s.stream.is_some() {
            stream_seeds
        } else {
            seeds
        };
        failures.extend(swarm_failures(&path, &s, 1..=last, 2));
        ran += 1;
    }
    assert!(ran >= 4, "ran {ran} scenarios");
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}
