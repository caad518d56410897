//! CI's small swarm: every shipped scenario small enough for a test run (≤ 100 nodes) over many
//! seeds. `NEXUS_SWARM_SEEDS` (default 30) sets how many.

use std::path::PathBuf;

use nexus_sim::Scenario;
use nexus_sim::swarm::swarm;

#[test]
fn shipped_scenarios_hold_over_many_seeds() {
    let seeds: u64 = std::env::var("NEXUS_SWARM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
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
        let report = swarm(&s, 1..=seeds, 2, &|| {});
        eprintln!(
            "{}: {} seeds, {} failed, {:.1}s",
            s.name,
            report.runs,
            report.failures.len(),
            report.wall_s
        );
        for f in &report.failures {
            failures.push(format!(
                "{} seed {}: {} — {} (reproduce: nexus sim run {} --seed {})",
                s.name,
                f.seed,
                f.invariant,
                f.detail,
                path.display(),
                f.seed
            ));
        }
        ran += 1;
    }
    assert!(ran >= 4, "ran {ran} scenarios");
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}
