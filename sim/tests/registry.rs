//! The capability registry in core mode: the shipped registry scenarios hold their invariants
//! over several seeds, a scenario built to break convergence does, runs are reproducible. The
//! CI swarm (`swarm.rs`) runs every scenario in `sim/scenarios/`, the registry ones included,
//! over 30 seeds.

mod common;

use common::{run, scenario, verdict};
use nexus_sim::Scenario;
use nexus_sim::trace::Trace;

const REGISTRY_CHECKS: [&str; 3] = [
    "registry_convergence",
    "no_stale_endpoints",
    "withdrawn_disappear",
];

#[test]
fn steady_registry_holds_every_invariant() {
    let s = scenario("scenarios/registry-steady.toml");
    for seed in [1, 2] {
        let r = run(&s, seed);
        assert!(r.ok, "seed {seed}:\n{}", r.table());
        for name in REGISTRY_CHECKS {
            assert!(verdict(&r, name).ok);
        }
        let reg = r.registry.as_ref().expect("registry summary");
        assert!(reg.resolves > 0);
        // Three withdrawals, each gone from every node that held it.
        assert_eq!(reg.withdrawals.len(), 3, "{:?}", reg.withdrawals);
        assert!(reg.withdrawals.iter().all(|w| w.gone_after_s.is_some()));
    }
}

#[test]
fn churn_registry_holds_every_invariant() {
    let s = scenario("scenarios/registry-churn.toml");
    for seed in [1, 2] {
        let r = run(&s, seed);
        assert!(r.ok, "seed {seed}:\n{}", r.table());
        let reg = r.registry.as_ref().expect("registry summary");
        assert!(reg.converged_after_s.is_some(), "{reg:?}");
    }
}

#[test]
fn convergence_without_anti_entropy_fails_as_expected() {
    let s = scenario("tests/scenarios/registry-no-anti-entropy.toml");
    let r = run(&s, 3);
    assert!(!r.ok);
    let v = verdict(&r, "registry_convergence");
    assert!(!v.ok, "{}", v.detail);
    let at = v.violated_at_s.expect("time of the violation");
    assert!(
        (20.0..40.0).contains(&at),
        "checked from 16 s + 4 s on, violated at {at}"
    );
    assert!(v.detail.contains("missing [n2/coder-1"), "{}", v.detail);
    // Safety still holds: nothing stale is resolved.
    assert!(verdict(&r, "no_stale_endpoints").ok);
}

#[test]
fn same_seed_same_hash_other_seed_other_hash() {
    let s = scenario("scenarios/registry-steady.toml");
    let a = run(&s, 21);
    let b = run(&s, 21);
    let c = run(&s, 22);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.trace_events, b.trace_events);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn registry_events_are_in_the_trace() {
    let s = scenario("scenarios/registry-steady.toml");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("trace.jsonl");
    let trace = Trace::to_file(std::fs::File::create(&path).expect("create"));
    let r = nexus_sim::run(&s, 1, trace, None).expect("runs");
    let text = std::fs::read_to_string(&path).expect("trace");
    assert_eq!(text.lines().count() as u64, r.trace_events);
    for needle in [
        "\"kind\":\"registry\"",
        "register coder-1 v",
        "withdraw chat-1",
        "resolve llm.code -> [",
    ] {
        assert!(text.contains(needle), "{needle} missing from the trace");
    }
}

#[test]
fn bad_registry_input_names_the_field() {
    let base = "name = \"t\"\nnodes = 4\nduration = \"60s\"\n";
    let field = |extra: &str| {
        Scenario::parse(&format!("{base}{extra}"))
            .expect_err("invalid")
            .field
    };
    assert_eq!(
        field(
            "[[timeline]]\nat = \"1s\"\naction = \"register\"\nnodes = [\"n1\"]\n\
             service = { id = \"Bad Id\", tasks = [\"llm.code\"] }\n"
        ),
        "timeline[0].service.id"
    );
    assert_eq!(
        field(
            "[[timeline]]\nat = \"1s\"\naction = \"register\"\nnodes = [\"n1\"]\n\
             service = { id = \"a\", tasks = [\"llm.code\"], colour = 3 }\n"
        ),
        "timeline[0].service.colour"
    );
    assert_eq!(
        field(
            "[[timeline]]\nat = \"1s\"\naction = \"withdraw\"\nnodes = [\"n1\"]\nid = \"nope\"\n"
        ),
        "timeline[0].id"
    );
    assert_eq!(
        field(
            "[[timeline]]\nat = \"1s\"\naction = \"resolve\"\nnodes = [\"n1\"]\n\
             intent = { task = \"llm.code\", k = 0 }\n"
        ),
        "timeline[0].intent.k"
    );
    assert_eq!(
        field(
            "[[timeline]]\nat = \"1s\"\naction = \"register\"\nnodes = [\"n1\"]\nservice = \"ghost\"\n"
        ),
        "timeline[0].service"
    );
    assert_eq!(field("[registry]\nrefresh = \"1ms\"\n"), "registry.refresh");
    assert_eq!(
        field("[invariants]\nno_stale_endpoints = false\n"),
        "invariants.no_stale_endpoints"
    );
    assert_eq!(field("mode = \"node\"\n[registry]\n"), "registry");
}

/// A real defect the registry checkers found (see the scenario's header): after a long
/// partition healed, the broadcast overlay could stay split, and the registry with it, although
/// membership agreed again. Anti-entropy now draws its partner from both overlay views, so the
/// registry converges on the seed that showed it.
#[test]
fn registry_converges_although_the_overlay_split_across_a_heal() {
    let s = scenario("tests/scenarios/registry-overlay-split.toml");
    let r = run(&s, 24);
    assert!(verdict(&r, "agreement").ok, "membership itself agrees");
    let v = verdict(&r, "registry_convergence");
    assert!(v.ok, "{}", v.detail);
    assert!(verdict(&r, "no_stale_endpoints").ok);
}
