//! Core-mode simulations of the shipped scenarios and of one that must fail.

mod common;

use std::path::PathBuf;

use common::{run, scenario, verdict};
use nexus_sim::Scenario;
use nexus_sim::trace::Trace;

#[test]
fn partition_and_heal_pass_every_invariant() {
    let s = scenario("scenarios/partition-heal.toml");
    let r = run(&s, 1);
    assert!(r.ok, "{}", r.table());
    // During the partition each side lost the other: some samples then show the two pods
    // disagreeing with the full fabric, and each side declared the other down.
    let during: Vec<_> = r
        .samples
        .iter()
        .filter(|x| (25.0..40.0).contains(&x.t_s))
        .collect();
    assert!(!during.is_empty());
    assert!(
        r.dropped > 0,
        "the partition dropped datagrams between the pods"
    );
    assert_eq!(r.samples.last().map(|x| x.converged), Some(1.0));
}

#[test]
fn a_too_short_liveness_bound_is_reported_as_a_violation() {
    let s = scenario("tests/scenarios/too-short-bound.toml");
    let r = run(&s, 3);
    assert!(!r.ok);
    let v = verdict(&r, "agreement");
    assert!(!v.ok);
    let at = v.violated_at_s.expect("time of the violation");
    assert!(
        (9.0..10.0).contains(&at),
        "checked from 8 s + 1 s on, violated at {at}"
    );
    assert!(v.detail.contains("sees"), "{}", v.detail);
    // The safety checkers still hold: the run is wrong only about liveness.
    for name in ["self_down", "no_phantoms", "false_down"] {
        assert!(verdict(&r, name).ok, "{name}: {}", verdict(&r, name).detail);
    }
}

#[test]
fn a_crashed_node_restarts_with_its_durable_node_id() {
    let s = scenario("scenarios/crash-restart.toml");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("trace.jsonl");
    let trace = Trace::to_file(std::fs::File::create(&path).expect("create"));
    let r = nexus_sim::run(&s, 1, trace, None).expect("runs");
    assert!(r.ok, "{}", r.table());
    let text = std::fs::read_to_string(&path).expect("trace");
    assert_eq!(text.lines().count() as u64, r.trace_events);
    // Peers saw n5..n7 go down, then come back as generation 2 of the same node id: the trace
    // names nodes by their id's index, so a new id would show up as an unknown node (and fail
    // no_phantoms) instead of "n5 g2".
    for n in ["n5", "n6", "n7"] {
        assert!(
            text.contains(&format!("\"down {n} g1\"")),
            "{n} declared down"
        );
        assert!(text.contains(&format!("\"up {n} g2\"")), "{n} back as g2");
    }
}

#[test]
fn same_seed_same_hash_other_seed_other_hash() {
    let s = scenario("scenarios/crash-restart.toml");
    let a = run(&s, 11);
    let b = run(&s, 11);
    let c = run(&s, 12);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.trace_events, b.trace_events);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 5, "{count} scenarios");
}
