//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;

use nexus_sim::trace::Trace;
use nexus_sim::{RunReport, Scenario};

/// Loads a scenario by its path relative to `sim/`.
pub fn scenario(path: &str) -> Scenario {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    Scenario::load(&full).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One core-mode run without a trace file.
pub fn run(s: &Scenario, seed: u64) -> RunReport {
    nexus_sim::run(s, seed, Trace::new(), None).expect("runs")
}

/// The verdict of one invariant checker.
pub fn verdict<'a>(r: &'a RunReport, name: &str) -> &'a nexus_sim::invariants::Verdict {
    r.invariants
        .iter()
        .find(|v| v.invariant == name)
        .unwrap_or_else(|| panic!("checker {name} present"))
}

/// A `u64` from the environment variable `name`, or `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Swarms scenario `s` (loaded from `path`) over `seeds` with `jobs` workers, prints a summary
/// line, and returns one line per failing seed naming the invariant and the command that
/// reproduces it.
pub fn swarm_failures(
    path: &Path,
    s: &Scenario,
    seeds: RangeInclusive<u64>,
    jobs: usize,
) -> Vec<String> {
    let report = nexus_sim::swarm::swarm(s, seeds, jobs, &|| {});
    eprintln!(
        "{}: {} seeds, {} failed, {:.1}s",
        s.name,
        report.runs,
        report.failures.len(),
        report.wall_s
    );
    report
        .failures
        .iter()
        .map(|f| {
            format!(
                "{} seed {}: {} — {} (reproduce: nexus sim run {} --seed {})",
                s.name,
                f.seed,
                f.invariant,
                f.detail,
                path.display(),
                f.seed
            )
        })
        .collect()
}

/// Runs this test binary again in a child process, running only the test `child` with
/// `NEXUS_SIM_CHILD_SEED=seed`, and returns what it printed after `child trace hash: `. The
/// child test must return at once when the variable is unset, and print that line when set.
pub fn hash_in_child(child: &str, seed: u64) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env("NEXUS_SIM_CHILD_SEED", seed.to_string())
        .output()
        .expect("runs the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest may print the child's line after "test <name> ... ".
        .find_map(|l| l.split_once("child trace hash: ").map(|(_, h)| h.trim()))
        .unwrap_or_else(|| panic!("no hash in:\n{stdout}"))
        .to_owned()
}
