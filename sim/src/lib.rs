//! The Nexus simulator: runs a whole fabric in one process in virtual time, injects faults from
//! a seeded scenario, checks invariants after every step, and hashes its event trace so the same
//! seed always gives the same run (`nexus sim run scenario.toml --seed 7`).
//!
//! Core mode ([`core_mode::CoreSim`]) drives the sans-IO membership cores from `nexus-gossip`
//! with a discrete-event engine — no tokio, no sockets. It is the test bed later issues extend
//! with new event kinds and invariants (dissemination, registry, CA).
//!
//! Not built yet: node mode (the real actor tree per node on simulated clock, network and
//! storage). A scenario with `mode = "node"` is rejected with a clear error; see the README.
#![deny(missing_docs)]

pub mod core_mode;
pub mod invariants;
pub mod net;
pub mod report;
pub mod scenario;
pub mod swarm;
pub mod topology;
pub mod trace;

pub use report::RunReport;
pub use scenario::{Mode, Scenario, ScenarioError};

/// Runs `scenario` with `seed`, writing the trace to `trace` (hash-only by default).
pub fn run(
    scenario: &Scenario,
    seed: u64,
    trace: trace::Trace,
    progress: Option<core_mode::Progress<'_>>,
) -> Result<RunReport, ScenarioError> {
    match scenario.mode {
        Mode::Core => Ok(core_mode::CoreSim::new(scenario, seed, trace).run(progress)),
        Mode::Node => Err(ScenarioError {
            field: "mode".into(),
            message: "node mode is not built yet; use mode = \"core\"".into(),
        }),
    }
}
