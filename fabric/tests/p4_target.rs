//! A node configured with `[p4] target` feeds a P4Runtime switch every forwarding-table
//! generation: the P4Runtime test server of the P4 target (`nexus_p4::testkit::TestServer`:
//! `p4/tests/p4rt/server.py`, a real process on the PyPI `p4runtime` bindings that validates
//! every entity against the P4Info)
//! receives the arbitration, the pipeline and entries equal to the node's table as
//! `GET /v1/fib` shows it; a new static route arrives as a diff (writes, no new pipeline); an
//! unreachable target shows in `GET /v1/dataplane/targets` and the metrics while the node
//! keeps serving.
//!
//! The server runs in the virtual environment `p4/tests/p4rt/.venv` (created with
//! `python3 -m venv` and the pinned requirements if it is missing, as `.ci/run` does); without
//! python3 the test fails.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nexus_p4::entries::Entries;
use nexus_p4::testkit::TestServer;
use serde_json::{Value, json};

const KEY_A: &str = "0a0000000000000000000000000000a1";
const KEY_B: &str = "0b0000000000000000000000000000b2";

/// The P4Runtime test server with `--log-rpcs`: it prints a PIPELINE / WRITE line per RPC.
fn start_switch() -> TestServer {
    TestServer::start(&["--log-rpcs"])
}

/// The switch's entries, read back over P4Runtime and decoded with the node's own checked
/// decoder.
async fn read_back(switch: &TestServer) -> Entries {
    switch
        .entries()
        .await
        .expect("the switch's entries, read back")
}

/// Route key → its next hops as (addr, weight, rewrite), sorted: the form both sides share.
type Table = BTreeMap<String, Vec<(String, u32, Option<String>)>>;

fn switch_table(entries: &Entries) -> Table {
    entries
        .routes
        .iter()
        .map(|(key, route)| {
            let mut hops: Vec<_> = entries.groups[&route.group]
                .iter()
                .map(|(member, weight)| {
                    let hop = entries.members[member];
                    (
                        hop.addr.to_string(),
                        *weight,
                        hop.rewrite.map(|k| format!("{k:032x}")),
                    )
                })
                .collect();
            hops.sort();
            (format!("{key:032x}"), hops)
        })
        .collect()
}

fn fib_table(fib: &Value) -> Table {
    fib["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let mut hops: Vec<_> = e["next_hops"]
                .as_array()
                .expect("next_hops")
                .iter()
                .map(|h| {
                    (
                        h["addr"].as_str().expect("addr").to_owned(),
                        u32::try_from(h["weight"].as_u64().expect("weight")).expect("u32"),
                        h["rewrite"].as_str().map(str::to_owned),
                    )
                })
                .collect();
            hops.sort();
            (e["key"].as_str().expect("key").to_owned(), hops)
        })
        .collect()
}

fn entity_count(e: &Entries) -> usize {
    e.sources.len()
        + e.local.len()
        + e.members.len()
        + e.groups.len()
        + e.group_entries.len()
        + e.routes.len()
}

/// The one P4 target's status, once `ready` accepts it (panics after 10 s).
async fn target_when(node: &NodeProc, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = node.get("/v1/dataplane/targets").await;
        let targets = answer["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{answer}");
        assert_eq!(targets[0]["target"], "p4");
        if ready(&targets[0]) {
            return targets[0].clone();
        }
        assert!(Instant::now() < deadline, "target never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the target holds the node's installed generation, and returns the FIB then.
async fn caught_up(node: &NodeProc) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fib = node.get("/v1/fib?limit=1000").await;
        let target = target_when(node, |_| true).await;
        if target["installed"] == fib["generation"] && target["published"] == fib["generation"] {
            return fib;
        }
        assert!(
            Instant::now() < deadline,
            "target behind the table: {target} vs generation {}",
            fib["generation"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn p4_config(target: &str) -> String {
    fast_config(&format!(
        "[dataplane]\nlisten = \"127.0.0.1:0\"\n[p4]\ntarget = \"{target}\"\nelection_id = 5\nrpc_timeout_ms = 2000\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_holds_the_nodes_table_and_gets_changes_as_diffs() {
    let switch = start_switch();
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node(
        "p4n",
        &dir.path().join("n"),
        &[],
        &p4_config(&format!("127.0.0.1:{}", switch.port())),
        None,
    );
    let id = node.get("/v1/node").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let http = reqwest::Client::new();
    let put = |key: &'static str, hops: Value| {
        let http = http.clone();
        let url = format!("{}/v1/routes/{key}", node.admin);
        async move {
            let r = http
                .put(url)
                .json(&json!({ "next_hops": hops }))
                .send()
                .await
                .expect("PUT route");
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    put(
        KEY_A,
        json!([
            {"node": id, "addr": "127.0.0.1:9001", "weight": 1},
            {"node": id, "addr": "127.0.0.1:9002", "weight": 3,
             "rewrite": "0c0000000000000000000000000000c3"},
        ]),
    )
    .await;

    let fib = caught_up(&node).await;
    let entries = read_back(&switch).await;
    assert_eq!(switch_table(&entries), fib_table(&fib));
    assert_eq!(switch_table(&entries).len(), 1);
    assert!(
        entries.sources.contains(&"127.0.0.1".parse().expect("ip")),
        "the node's data-plane source is allowed on the switch: {:?}",
        entries.sources
    );
    let target = target_when(&node, |_| true).await;
    assert_eq!(target["connected"], true);
    assert_eq!(target["failures"], 0);
    assert_eq!(target["last_error"], Value::Null);
    assert_eq!(target["address"], format!("127.0.0.1:{}", switch.port()));
    let rpcs = switch.lines();
    assert_eq!(
        rpcs.iter().filter(|l| *l == "PIPELINE").count(),
        1,
        "the node installs the pipeline once: {rpcs:?}"
    );

    // A second route: the switch gets the new entries as writes, without a new pipeline (which
    // would clear its tables and need a full install).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = switch.lines().len();
    let count_before = entity_count(&read_back(&switch).await);
    put(
        KEY_B,
        json!([{"node": id, "addr": "127.0.0.1:9003", "weight": 2}]),
    )
    .await;
    let fib = caught_up(&node).await;
    let entries = read_back(&switch).await;
    assert_eq!(switch_table(&entries), fib_table(&fib));
    assert_eq!(switch_table(&entries).len(), 2);
    let after: Vec<String> = switch.lines()[before..].to_vec();
    assert!(!after.iter().any(|l| l == "PIPELINE"), "{after:?}");
    let (mut inserts, mut deletes) = (0usize, 0usize);
    for line in &after {
        let field = |name: &str| -> usize {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad WRITE line {line:?}"))
        };
        assert!(line.starts_with("WRITE "), "{line}");
        inserts += field("insert");
        deletes += field("delete");
    }
    assert!(inserts > 0, "the new route was written: {after:?}");
    assert_eq!(
        inserts - deletes,
        entity_count(&entries) - count_before,
        "only the difference was written: {after:?}"
    );
    assert!(
        inserts < entity_count(&entries),
        "a diff, not a reinstall: {after:?}"
    );

    let metrics = node.metrics().await;
    let generation = fib["generation"].as_u64().expect("generation");
    assert!(
        metrics.contains(&format!(
            "nexus_dataplane_target_generation{{target=\"p4\"}} {generation}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("nexus_dataplane_target_publish_errors_total{target=\"p4\"} 0"),
        "{metrics}"
    );
    let published = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("nexus_dataplane_target_publish_seconds_count{target=\"p4\"} ")
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("publish duration histogram");
    assert!(published >= 2, "{published} publications measured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_switch_is_reported_and_the_node_keeps_serving() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node(
        "p4down",
        &dir.path().join("n"),
        &[],
        &p4_config(&target),
        None,
    );
    let status = target_when(&node, |t| !t["last_error"].is_null()).await;
    assert_eq!(status["connected"], false);
    assert_eq!(status["installed"], Value::Null);
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&target)),
        "the error names the target: {status}"
    );
    // The node forwards with its own table regardless: a route goes in.
    let fib = node.get("/v1/fib").await;
    assert!(fib["generation"].as_u64().is_some());
    let health = node.get("/v1/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("nexus_dataplane_target_generation{target=\"p4\"} -1"),
        "{metrics}"
    );
}
