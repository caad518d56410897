//! Node mode: the real actor tree per node inside turmoil hosts.

use nexus_sim::node_mode;
use nexus_sim::scenario::Scenario;
use nexus_sim::trace::Trace;
use nexus_sim::{Mode, RunReport};

fn scenario(text: &str) -> Scenario {
    let s = Scenario::parse(text).expect("valid scenario");
    assert_eq!(s.mode, Mode::Node);
    s
}

fn run(s: &Scenario, seed: u64) -> RunReport {
    nexus_sim::run(s, seed, Trace::new(), None).expect("node mode accepts the scenario")
}

fn assert_ok(report: &RunReport) {
    assert!(report.ok, "invariants failed:\n{}", report.table());
}

const JOIN: &str = r#"
name = "node-join"
mode = "node"
nodes = 6
duration = "12s"
[gossip]
probe_period_ms = 500
probe_rtt_ms = 200
suspect_to_down_ms = 1500
[topology]
kind = "mesh"
latency = "1ms"
[network]
jitter = "2ms"
loss = 0.01
[invariants]
converge_within = "6s"
"#;

#[test]
fn nodes_join_and_agree() {
    let s = scenario(JOIN);
    let report = run(&s, 1);
    assert_ok(&report);
    assert!(report.messages > 0, "datagrams flowed");
    let last = report.samples.last().expect("samples");
    assert_eq!(last.healthy, 6);
    assert_eq!(last.converged, 1.0);
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let s = scenario(
        &JOIN
            .replace("duration = \"12s\"", "duration = \"4s\"")
            .replace("converge_within = \"6s\"", "converge_within = \"3s\""),
    );
    let a = run(&s, 7);
    let b = run(&s, 7);
    let c = run(&s, 8);
    assert!(
        a.trace_events > 100,
        "a real trace: {} events",
        a.trace_events
    );
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same run");
    assert_eq!(a.trace_events, b.trace_events);
    assert_ne!(a.trace_hash, c.trace_hash, "another seed, another run");
}

#[test]
fn kill_and_restart_keep_the_node_id_and_bump_the_generation() {
    let s = scenario(
        r#"
name = "node-restart"
mode = "node"
nodes = 5
duration = "14s"
[gossip]
probe_period_ms = 300
probe_rtt_ms = 100
suspect_to_down_ms = 900
[topology]
kind = "mesh"
latency = "1ms"
[[timeline]]
at = "3s"
action = "kill"
nodes = ["n3"]
[[timeline]]
at = "6s"
action = "restart"
nodes = ["n3"]
[invariants]
converge_within = "6s"
"#,
    );
    let dir = std::env::temp_dir().join(format!("nexus-node-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("trace.jsonl");
    let trace = Trace::to_file(std::fs::File::create(&path).expect("trace file"));
    let report = nexus_sim::run(&s, 3, trace, None).expect("accepted");
    let text = std::fs::read_to_string(&path).expect("trace written");
    std::fs::remove_dir_all(&dir).ok();
    assert_ok(&report);
    // Peers saw n3 go down at generation 1 and come back at generation 2, under the same node
    // id (the trace names nodes by the index their id maps to).
    assert!(
        text.contains("\"event\":\"down n3 g1\""),
        "n3 declared down"
    );
    assert!(
        text.contains("\"event\":\"replaced n3 g1 -> g2\"")
            || text.contains("\"event\":\"up n3 g2\""),
        "n3 back as generation 2"
    );
    assert!(!text.contains("n3 g3"), "one restart, one new generation");
    // And the id is derived from the seed alone.
    assert_eq!(
        node_mode::node_key(3, 2).node_id(),
        node_mode::node_key(3, 2).node_id()
    );
    assert_ne!(
        node_mode::node_key(3, 2).node_id(),
        node_mode::node_key(4, 2).node_id()
    );
}

#[test]
fn partition_and_heal_converge() {
    let s = scenario(
        r#"
name = "node-partition"
mode = "node"
nodes = 8
duration = "22s"
[gossip]
probe_period_ms = 300
probe_rtt_ms = 100
suspect_to_down_ms = 900
[topology]
kind = "racks"
pods = 2
racks_per_pod = 2
intra_rack = "100us"
intra_pod = "500us"
inter_pod = "2ms"
[[timeline]]
at = "4s"
action = "partition"
groups = [["pod:0"], ["pod:1"]]
[[timeline]]
at = "10s"
action = "heal"
[invariants]
converge_within = "10s"
"#,
    );
    let report = run(&s, 5);
    assert_ok(&report);
    assert!(report.dropped > 0, "the partition dropped datagrams");
    // Shortly before the heal each side agrees on itself alone: every node's alive set equals
    // its side of the partition.
    let before_heal = report
        .samples
        .iter()
        .rev()
        .find(|p| p.t_s < 10.0)
        .expect("a sample during the partition");
    assert_eq!(before_heal.healthy, 8);
    assert_eq!(
        before_heal.converged, 1.0,
        "both sides settled at {}s",
        before_heal.t_s
    );
}

#[test]
fn pause_during_a_partition_then_resume_and_heal() {
    // Holding a paused node's links must not undo the cuts, and resuming must not heal them.
    let s = scenario(
        r#"
name = "node-pause"
mode = "node"
nodes = 6
duration = "20s"
[gossip]
probe_period_ms = 300
probe_rtt_ms = 100
suspect_to_down_ms = 900
[topology]
kind = "mesh"
latency = "1ms"
[[timeline]]
at = "2s"
action = "partition"
groups = [["n1..n3"], ["n4..n6"]]
[[timeline]]
at = "3s"
action = "pause"
nodes = ["n2"]
[[timeline]]
at = "5s"
action = "resume"
nodes = ["n2"]
[[timeline]]
at = "8s"
action = "heal"
[invariants]
converge_within = "10s"
"#,
    );
    let report = run(&s, 11);
    assert_ok(&report);
    let before_heal = report
        .samples
        .iter()
        .rev()
        .find(|p| p.t_s < 8.0)
        .expect("a sample before the heal");
    assert_eq!(
        before_heal.converged, 1.0,
        "the partition still held after the resume"
    );
}

#[test]
fn the_tick_is_an_option_and_is_checked() {
    let s = scenario(JOIN);
    assert_eq!(
        node_mode::Options::for_scenario(&s).tick,
        std::time::Duration::from_millis(10),
        "probe_rtt 200 ms / 20"
    );
    let fine = node_mode::run_with(
        &s,
        1,
        Trace::new(),
        None,
        node_mode::Options {
            tick: std::time::Duration::from_millis(1),
        },
    )
    .expect("1 ms tick");
    assert_ok(&fine);
    let e = node_mode::run_with(
        &s,
        1,
        Trace::new(),
        None,
        node_mode::Options {
            tick: std::time::Duration::from_micros(500),
        },
    )
    .expect_err("sub-millisecond tick");
    assert_eq!(e.field, "node.tick");
    // The scenario file carries it too.
    let from_file = scenario(&format!("{}[node]\ntick = \"500us\"\n", SMALL_FOR_TICK));
    let e = nexus_sim::run(&from_file, 1, Trace::new(), None).expect_err("checked from the file");
    assert_eq!(e.field, "node.tick");
}

const SMALL_FOR_TICK: &str = "name = \"t\"\nmode = \"node\"\nnodes = 3\nduration = \"12s\"\n\
    [invariants]\nconverge_within = \"10s\"\n";

#[test]
fn what_node_mode_cannot_map_is_an_error() {
    let base = "name = \"x\"\nmode = \"node\"\nnodes = 3\nduration = \"5s\"\n[invariants]\nconverge_within = \"1s\"\n";
    let skew = scenario(&format!(
        "{base}[[timeline]]\nat = \"1s\"\naction = \"skew\"\nnodes = [\"n1\"]\ndrift_ppm = 100\n"
    ));
    let e = nexus_sim::run(&skew, 1, Trace::new(), None).expect_err("skew rejected");
    assert_eq!(e.field, "timeline[0].action");
    assert!(e.message.contains("skew"), "{e}");
    let bandwidth = scenario(&format!("{base}[network]\nbandwidth_kbps = 100\n"));
    let e = nexus_sim::run(&bandwidth, 1, Trace::new(), None).expect_err("bandwidth rejected");
    assert_eq!(e.field, "network.bandwidth_kbps");
}
