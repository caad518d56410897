//! The trace hash of every CI-sized shipped scenario, and of the must-fail scenarios, pinned for
//! one seed each. Same seed → same hash is tested elsewhere (in one process and across
//! processes); this test catches what that cannot: a change that alters what a run does, the
//! same way on every run. A refactoring of the engines must leave every hash here as it is.
//!
//! When a hash differs and the change of behaviour is intended (a protocol change, a new trace
//! event, a different network draw), run `cargo test -p nexus-sim --test trace_hashes`, copy
//! the hashes it prints into [`PINNED`], and say in the commit message why runs changed.
//!
//! The benchmark-sized scenarios (10,000 and 100,000 nodes) take minutes and are not pinned;
//! `docs/BENCHMARKS.md` records their hashes with the runs that measured them.

use std::path::PathBuf;

use nexus_sim::Scenario;
use nexus_sim::broadcast::BroadcastSimConfig;
use nexus_sim::ca::revocation_spread::RevocationSpreadConfig;
use nexus_sim::trace::Trace;

/// Which engine runs a pinned scenario (one test per engine, so they run in parallel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// Core mode, SWIM.
    Core,
    /// Core mode with the registry harness.
    Registry,
    /// Partial-view membership.
    Partial,
    /// NexStream endpoints.
    Stream,
    /// Node mode (the real actors in turmoil).
    Node,
}

/// (scenario path under `sim/`, engine, seed, expected trace hash).
const PINNED: &[(&str, Engine, u64, &str)] = &[
    (
        "scenarios/crash-restart.toml",
        Engine::Core,
        1,
        "aca9e7f170d7b63e",
    ),
    (
        "scenarios/partition-heal.toml",
        Engine::Core,
        1,
        "90e5d31c76365fe8",
    ),
    (
        "scenarios/steady-mesh.toml",
        Engine::Core,
        1,
        "d442ded6ae41016f",
    ),
    (
        "scenarios/wan-stall.toml",
        Engine::Core,
        1,
        "8796fd71675e23d7",
    ),
    (
        "tests/scenarios/too-short-bound.toml",
        Engine::Core,
        3,
        "c0ba144341ede76c",
    ),
    (
        "scenarios/registry-churn.toml",
        Engine::Registry,
        1,
        "39d77dc0b6e0fe9b",
    ),
    (
        "scenarios/registry-steady.toml",
        Engine::Registry,
        1,
        "bede1cde3388f0f1",
    ),
    (
        "tests/scenarios/registry-no-anti-entropy.toml",
        Engine::Registry,
        1,
        "dbdcd2c628f2bdfc",
    ),
    (
        "tests/scenarios/registry-overlay-split.toml",
        Engine::Registry,
        24,
        "4ecb8753b882b4ad",
    ),
    (
        "scenarios/partial-view-faults.toml",
        Engine::Partial,
        1,
        "11e5d782bc8247f7",
    ),
    (
        "tests/scenarios/partial-permanent-partition.toml",
        Engine::Partial,
        1,
        "d4c9d4f7e57b177c",
    ),
    (
        "scenarios/stream-lossy.toml",
        Engine::Stream,
        1,
        "03a1c519514d56a7",
    ),
    (
        "scenarios/stream-partition.toml",
        Engine::Stream,
        1,
        "81d105206bb87a87",
    ),
    (
        "scenarios/stream-revoke.toml",
        Engine::Stream,
        1,
        "e3a943f6e8fea81d",
    ),
    (
        "tests/scenarios/stream-impossible-probability.toml",
        Engine::Stream,
        1,
        "68cb94bdfeebe001",
    ),
    (
        "scenarios/node-crash-partition.toml",
        Engine::Node,
        1,
        "ed92fe9f574ac151",
    ),
];

/// Runs every pinned scenario of `engine` and fails with the list of hashes that differ.
fn check(engine: Engine) {
    let mut wrong = Vec::new();
    let mut ran = 0;
    for &(path, _, seed, expected) in PINNED.iter().filter(|p| p.1 == engine) {
        let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
        let s = Scenario::load(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
        let r = nexus_sim::run(&s, seed, Trace::new(), None).expect("runs");
        ran += 1;
        eprintln!("{path} seed {seed}: trace hash {}", r.trace_hash);
        if r.trace_hash != expected {
            wrong.push(format!(
                "    {path} seed {seed}: expected {expected:?}, got \"{}\"",
                r.trace_hash
            ));
        }
    }
    assert!(ran > 0, "no pinned scenario for {engine:?}");
    assert!(
        wrong.is_empty(),
        "the trace hash of {} pinned {engine:?} run(s) changed, so these runs now do something \
         else:\n{}\nIf the change was meant to alter what runs do, put the new hashes into PINNED \
         in sim/tests/trace_hashes.rs and say in the commit message why; otherwise the change \
         broke the simulator's behaviour (reproduce with `nexus sim run sim/<path> --seed <seed> \
         --trace a.jsonl` on both versions and compare the traces).",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The overlay measurements' hashes (their own event loop, [`nexus_sim::overlay_net`]), at
/// small sizes: (what, seed, expected hash as 16 hex digits).
const PINNED_OVERLAY: &[(&str, u64, &str)] = &[
    ("broadcast, 100 nodes", 1, "21dc977c06519808"),
    (
        "revocation spread, 50 nodes, 3 revocations",
        1,
        "bc0252b3299f3e62",
    ),
];

#[test]
fn overlay_measurement_hashes_are_pinned() {
    let mut wrong = Vec::new();
    for &(what, seed, expected) in PINNED_OVERLAY {
        let hash = match what {
            "broadcast, 100 nodes" => {
                nexus_sim::broadcast::run(&BroadcastSimConfig::new(100, seed)).trace_hash
            }
            "revocation spread, 50 nodes, 3 revocations" => {
                let mut cfg = RevocationSpreadConfig::new(50, seed);
                cfg.warmup_broadcasts = 5;
                cfg.revocations = 3;
                nexus_sim::ca::revocation_spread::run(&cfg).trace_hash
            }
            other => panic!("no measurement named {other:?}"),
        };
        let got = format!("{hash:016x}");
        eprintln!("{what} seed {seed}: trace hash {got}");
        if got != expected {
            wrong.push(format!(
                "    {what} seed {seed}: expected {expected:?}, got \"{got}\""
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the trace hash of {} pinned overlay measurement(s) changed, so they now do something \
         else:\n{}\nIf the change was meant to alter what they do, put the new hashes into \
         PINNED_OVERLAY in sim/tests/trace_hashes.rs and say in the commit message why; \
         otherwise the change broke the overlay engine's behaviour.",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn core_mode_hashes_are_pinned() {
    check(Engine::Core);
}

#[test]
fn registry_hashes_are_pinned() {
    check(Engine::Registry);
}

#[test]
fn partial_view_hashes_are_pinned() {
    check(Engine::Partial);
}

#[test]
fn stream_hashes_are_pinned() {
    check(Engine::Stream);
}

#[test]
fn node_mode_hashes_are_pinned() {
    check(Engine::Node);
}
