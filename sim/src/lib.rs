//! The Nexus simulator: runs a whole fabric in one process in virtual time, injects faults from
//! a seeded scenario, checks invariants after every step, and hashes its event trace so the same
//! seed always gives the same run (`nexus sim run scenario.toml --seed 7`).
//!
//! Core mode ([`core_mode::CoreSim`]) drives the sans-IO membership cores from `nexus-gossip`
//! with a discrete-event engine — no tokio, no sockets; with a `[registry]` section its registry
//! harness runs each node's overlay and `nexus_registry::RegistryNode` (the registry actor's
//! core, timers included). Every engine shares [`engine`] (addresses, seeds, the event-queue
//! entry, the run loop); the overlay measurements share [`overlay_net`].
//!
//! Node mode ([`node_mode`]) runs the real actor tree of every node (`NodeSupervisor` with its
//! `GossipActor`) inside turmoil hosts: simulated clock and UDP network, in-memory durable
//! storage. Slower and limited to 1000 nodes; what it cannot map (`skew`, bandwidth) is rejected
//! with an error naming the field.
//!
//! Partial-view membership (`membership = "partial"`, [`partial_view`]) runs the HyParView +
//! Plumtree overlay core alone on core mode's engine, without SWIM: memory linear in N, which
//! is how core mode reaches 100,000 nodes.
//!
//! CA scenarios (a `[ca]` table, [`ca`]) run the Raft-replicated CA's real `CaNode` in turmoil
//! hosts under partitions and crashes and check the client history for linearizability.
//!
//! NexStream scenarios (a `[stream]` table, [`stream`]) run a sans-IO NexStream endpoint per
//! node on core mode's engine — MIC-authenticated sessions carrying all four delivery modes
//! under loss, reordering, duplication, partitions and revocations — and check delivery,
//! expiry, the probabilistic rate and revocation against what was sent.
#![deny(missing_docs)]

pub mod broadcast;
pub mod ca;
pub mod compare;
pub mod core_mode;
pub mod engine;
pub mod html;
pub mod invariants;
pub mod net;
pub mod node_mode;
pub mod overlay_net;
pub mod partial_view;
pub mod plot;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod stream;
pub mod swarm;
pub mod topology;
pub mod trace;

pub use report::RunReport;
pub use scenario::{Mode, Scenario, ScenarioError};

/// Bytes core mode needs per (node, known member) pair, rounded up from measurements: 111 MiB
/// peak RSS at 1,000 nodes (10⁶ pairs, fixed costs included). An entry is foca's 16-byte
/// member (an interned, shared identity behind an `Arc`), its slot in the address index, and
/// its share of update backlogs and in-flight datagrams.
pub const CORE_BYTES_PER_MEMBER_ENTRY: u64 = 100;

/// Memory core mode will need for `nodes` nodes: every node holds the whole member list
/// (SWIM full membership), so it grows with the square of the node count.
pub fn core_memory_estimate(nodes: usize) -> u64 {
    let n = nodes as u64;
    n * n * CORE_BYTES_PER_MEMBER_ENTRY + n * 64 * 1024
}

fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run that cannot fit in this machine's memory, before allocating anything. Whether
/// it runs depends on the machine; what it does when it runs does not.
pub fn check_capacity(scenario: &Scenario) -> Result<(), ScenarioError> {
    if scenario.mode != Mode::Core {
        return Ok(());
    }
    let need = match scenario.partial {
        Some(_) => partial_view::memory_estimate(scenario.nodes),
        None => core_memory_estimate(scenario.nodes),
    };
    if let Some(avail) = mem_available()
        && need > avail
    {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(ScenarioError {
            field: "nodes".into(),
            message: match scenario.partial {
                None => format!(
                    "core mode keeps every node's full member list (SWIM): {} nodes need about {:.1} GiB, \
                     this machine has {:.1} GiB available (see docs/simulator.md, \"Scale\"; \
                     membership = \"partial\" needs memory linear in N)",
                    scenario.nodes,
                    gib(need),
                    gib(avail)
                ),
                Some(_) => format!(
                    "partial-view membership: {} nodes need about {:.1} GiB, this machine has {:.1} GiB available",
                    scenario.nodes,
                    gib(need),
                    gib(avail)
                ),
            },
        });
    }
    Ok(())
}

/// Runs `scenario` with `seed`, writing the trace to `trace` (hash-only by default).
pub fn run(
    scenario: &Scenario,
    seed: u64,
    trace: trace::Trace,
    progress: Option<engine::Progress<'_>>,
) -> Result<RunReport, ScenarioError> {
    check_capacity(scenario)?;
    if scenario.ca.is_some() {
        return ca::run(scenario, seed, trace, None, progress);
    }
    if scenario.stream.is_some() {
        return Ok(stream::StreamSim::new(scenario, seed, trace).run(progress));
    }
    match scenario.mode {
        Mode::Core if scenario.partial.is_some() => {
            Ok(partial_view::PartialSim::new(scenario, seed, trace).run(progress))
        }
        Mode::Core => Ok(core_mode::CoreSim::new(scenario, seed, trace).run(progress)),
        Mode::Node => node_mode::run(scenario, seed, trace, progress),
    }
}
