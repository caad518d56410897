//! The CA in the simulator: real `CaNode` voters in turmoil hosts under partitions and crashes,
//! clients' histories checked for linearizability over a small swarm of seeds, determinism
//! across processes, the scenario format's `[ca]` checks, and the checker failing on a real
//! history that was tampered with.
//!
//! `NEXUS_CA_SWARM_SEEDS` (default 4) sets how many seeds the swarm runs per scenario.

mod common;

use std::path::PathBuf;

use common::{env_u64, hash_in_child, run, swarm_failures};
use nexus_sim::ca::history::{GetView, OpKind, OpResult};
use nexus_sim::ca::linearizability::{check_linearizable, check_replicas};
use nexus_sim::trace::Trace;
use nexus_sim::{RunReport, Scenario};

fn scenario(name: &str) -> (PathBuf, Scenario) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (path, s)
}

/// CA runs in this binary take turns, which keeps the debug build's CPU load low (two at once used
/// to starve sled 0.34's I/O pool while the log store used `flush_async`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn assert_ok(r: &RunReport) {
    for v in &r.invariants {
        assert!(
            v.ok,
            "{} seed {}: {} violated at {:?}: {}",
            r.scenario, r.seed, v.invariant, v.violated_at_s, v.detail
        );
    }
}

#[test]
fn one_run_makes_progress_and_is_linearizable() {
    let _turn = exclusive();
    let (_, s) = scenario("ca-partition.toml");
    let r = run(&s, 1);
    eprint!("{}", r.table());
    assert_ok(&r);
    let ca = r.ca.as_ref().expect("a CA summary");
    assert_eq!(ca.voters, 3);
    // Not vacuous: plenty of answered operations, certificates on every voter, some faults felt.
    assert!(ca.acknowledged >= 50, "{ca:?}");
    assert!(ca.certificates >= 10, "{ca:?}");
    assert!(ca.revocations >= 1, "{ca:?}");
    assert!(
        ca.not_applied + ca.unknown >= 1,
        "the faults cost nothing? {ca:?}"
    );
    let names: Vec<&str> = r.invariants.iter().map(|v| v.invariant).collect();
    assert_eq!(names, ["ca_linearizable", "ca_replicas_agree"]);
}

#[test]
fn small_swarm_over_both_scenarios() {
    let _turn = exclusive();
    let seeds = env_u64("NEXUS_CA_SWARM_SEEDS", 4);
    let mut failures = Vec::new();
    for name in ["ca-partition.toml", "ca-crash.toml"] {
        let (path, s) = scenario(name);
        // One job: CA runs take turns in this binary (see `ONE_AT_A_TIME`).
        failures.extend(swarm_failures(&path, &s, 2..=seeds + 1, 1));
    }
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}

/// Child half of the cross-process determinism test: prints the trace hash of one run
/// (`common::hash_in_child` runs it).
#[test]
fn child_print_trace_hash() {
    let Ok(seed) = std::env::var("NEXUS_SIM_CHILD_SEED") else {
        return;
    };
    let (_, s) = scenario("ca-partition.toml");
    let r = run(&s, seed.parse().expect("seed"));
    println!("child trace hash: {}", r.trace_hash);
}

#[test]
fn same_seed_same_trace_hash_across_processes() {
    let a = hash_in_child("child_print_trace_hash", 3);
    let b = hash_in_child("child_print_trace_hash", 3);
    assert_eq!(a, b, "same seed, separate processes");
    let c = hash_in_child("child_print_trace_hash", 4);
    assert_ne!(a, c, "a different seed gives a different run");
}

#[test]
fn a_tampered_real_history_is_caught() {
    let _turn = exclusive();
    let (_, s) = scenario("ca-partition.toml");
    let (report, history) =
        nexus_sim::ca::runner::run_with_history(&s, 5, Trace::new(), None).expect("runs");
    assert_ok(&report);
    check_linearizable(&history).expect("the real history is linearizable");
    let end = history.final_us;

    // 1. A stale read: after the last acknowledged revoke, a client reads the serial as live.
    let revoke = history
        .ops
        .iter()
        .rev()
        .find(|o| matches!(o.result, OpResult::Revoked { .. }))
        .expect("the run revoked something");
    let OpKind::Revoke { serial } = revoke.kind else {
        unreachable!()
    };
    let mic = history.finals[0].mics[&serial].clone();
    let mut stale = history.clone();
    let mut op = revoke.clone();
    op.id = stale.ops.len();
    op.kind = OpKind::Get { serial };
    op.invoked_us = revoke.completed_us.expect("acknowledged") + 1_000;
    op.completed_us = Some(op.invoked_us + 1_000);
    op.result = OpResult::Got(Some(GetView {
        mic,
        revoked: false,
    }));
    stale.ops.push(op);
    let v = check_linearizable(&stale).expect_err("stale read caught");
    assert!(
        v.detail.contains(&format!("serial {serial}")),
        "{}",
        v.detail
    );

    // 2. A duplicate serial: a second, different issue told it got an existing serial.
    let issued = history
        .ops
        .iter()
        .find(|o| matches!(o.result, OpResult::Issued { .. }))
        .expect("the run issued something")
        .clone();
    let mut dup = history.clone();
    let mut op = issued.clone();
    op.id = dup.ops.len();
    op.kind = OpKind::Issue {
        request_id: [0xee; 16],
    };
    op.invoked_us = end - 2_000;
    op.completed_us = Some(end - 1_000);
    dup.ops.push(op);
    let v = check_linearizable(&dup).expect_err("duplicate serial caught");
    assert!(v.detail.contains("duplicate serial"), "{}", v.detail);

    // 3. A voter that lost an acknowledged certificate.
    let mut lost = history.clone();
    let OpResult::Issued { serial, .. } = issued.result else {
        unreachable!()
    };
    lost.finals[1].mics.remove(&serial);
    check_replicas(&lost).expect_err("lost certificate caught");
    check_linearizable(&lost).expect_err("a final read without it is not linearizable");
}

#[test]
fn ca_section_errors_name_the_field() {
    let base = |extra: &str| {
        format!(
            "name = \"x\"\nmode = \"node\"\nnodes = 3\nduration = \"10s\"\n{extra}\n[ca]\nclients = 2\n"
        )
    };
    let cases: [(&str, &str); 6] = [
        ("", "ok"),
        ("[network]\nloss = 0.1\n", "network.loss"),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"pause\"\nnodes = [\"n1\"]\n",
            "timeline[0].action",
        ),
        (
            "[topology]\nkind = \"racks\"\npods = 1\nracks_per_pod = 1\nintra_rack = \"1ms\"\nintra_pod = \"1ms\"\ninter_pod = \"1ms\"\n",
            "topology",
        ),
        ("", "ca.op_timeout"),
        ("", "mode"),
    ];
    for (i, (extra, field)) in cases.iter().enumerate() {
        let mut text = base(extra);
        if i == 4 {
            text.push_str("client_timeout = \"3s\"\nop_timeout = \"3s\"\n");
        }
        if i == 5 {
            text = text.replace("mode = \"node\"\n", "");
        }
        match (Scenario::parse(&text), *field) {
            (Ok(s), "ok") => assert!(s.ca.is_some()),
            (Err(e), f) => assert_eq!(e.field, f, "{e}"),
            (Ok(_), f) => panic!("case {i}: expected an error naming {f}"),
        }
    }
    let e = Scenario::parse(&base("").replace("nodes = 3", "nodes = 9")).expect_err("too many");
    assert_eq!(e.field, "nodes");
    let e = Scenario::parse(&base("").replace("clients = 2", "clients = 0")).expect_err("none");
    assert_eq!(e.field, "ca.clients");
    let e = Scenario::parse(&(base("") + "bogus = 1\n")).expect_err("unknown key");
    assert!(e.message.contains("bogus"), "{e}");
}
