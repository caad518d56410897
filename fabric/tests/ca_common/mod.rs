//! Helpers for the CA tests: voters with short Raft timings, status polling, issuing.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{NodeProc, fast_config, start_node};

/// Short Raft timings so elections take well under a second.
pub const CA_TIMINGS: &str = "heartbeat_ms = 40\nelection_timeout_min_ms = 250\n\
    election_timeout_max_ms = 500\nclient_timeout_ms = 3000\nrevocation_poll_ms = 500\n";

pub fn voter_config(raft_listen: &str) -> String {
    fast_config(&format!(
        "[ca]\nvoter = true\nraft_listen = \"{raft_listen}\"\n{CA_TIMINGS}"
    ))
}

pub fn client_config() -> String {
    fast_config(&format!("[ca]\n{CA_TIMINGS}"))
}

/// A node and, for voters, its Raft address (read from its "node started" line).
pub struct CaProc {
    pub node: NodeProc,
    pub raft: Option<String>,
}

fn raft_addr_of(node: &NodeProc) -> Option<String> {
    node.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "node started")
        .and_then(|v| v["ca_raft"].as_str().map(str::to_owned))
        .filter(|a| a != "off")
}

/// Starts a voter; `raft_listen` is `127.0.0.1:0` the first time and the bound address on a
/// restart (Raft peers know a member by its address).
pub fn start_voter(name: &str, dir: &Path, seeds: &[&str], raft_listen: &str) -> CaProc {
    let node = start_node(name, dir, seeds, &voter_config(raft_listen), None);
    let raft = raft_addr_of(&node);
    assert!(
        raft.is_some(),
        "{name} did not report its Raft address:\n{}",
        node.logs()
    );
    CaProc { node, raft }
}

/// Starts three voters `v1`..`v3` under `root` (v2 and v3 join through v1) and waits until the
/// group has bootstrapped the CA; returns them and the CA status.
pub async fn start_three_voters(c: &reqwest::Client, root: &Path) -> (Vec<CaProc>, Value) {
    let mut nodes = vec![start_voter("v1", &root.join("v1"), &[], "127.0.0.1:0")];
    let seed = nodes[0].node.gossip.clone();
    for name in ["v2", "v3"] {
        nodes.push(start_voter(name, &root.join(name), &[&seed], "127.0.0.1:0"));
    }
    let status = wait_bootstrapped(c, &nodes[0].node, Duration::from_secs(40)).await;
    (nodes, status)
}

pub fn start_client(name: &str, dir: &Path, seeds: &[&str]) -> CaProc {
    let node = start_node(name, dir, seeds, &client_config(), None);
    CaProc { node, raft: None }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET returning (status, JSON body); a connection error is status 0.
pub async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    match c.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// POST JSON returning (status, JSON body); a connection error is status 0.
pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    match c.post(url).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Waits until `node` reports the CA bootstrapped and a leader known.
pub async fn wait_bootstrapped(c: &reqwest::Client, node: &NodeProc, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(c, &format!("{}/v1/ca/status", node.admin)).await;
        if status == 200 && body["bootstrapped"] == true && !body["raft"]["leader"].is_null() {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{}: CA not bootstrapped within {within:?}: {status} {body}\nlogs:\n{}",
            node.name,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An issue request for an agent key derived from `n`, with an idempotency key.
pub fn issue_body(n: u64, request_id: Option<u128>) -> Value {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key[31] = 1;
    let mut body = json!({
        "subject_key": hex::encode(key),
        "kind": "agent",
        "publisher": "tests",
        "claims": [{"key": "n", "value": n.to_string()}],
        "validity_ms": 3_600_000u64,
    });
    if let Some(id) = request_id {
        body["request_id"] = json!(format!("{id:032x}"));
    }
    body
}

/// Polls until `f` returns `Some`, or panics after `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
