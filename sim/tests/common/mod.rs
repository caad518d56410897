//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

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
