//! NexAPI's routed path against real node processes: three nodes (the CA's three voters), each
//! with a data plane. Two replicas of one service, on nodes 1 and 2, each embedded in this test
//! process with its own CA-issued key; a client on node 1 with `Path::Routed`. Every call's
//! session is addressed to the intent class's routing key and travels through node 1's session
//! socket (the relay) into node 1's data plane, which picks a replica per flow and rewrites the
//! key; the replica answers through its node's data plane to node 1's session key, and the relay
//! hands the answer to the client. Checked: calls, a token stream and a tensor succeed; new
//! flows spread over both replicas; after one replica stops, new calls land on the other; a
//! class with no route is refused, typed, at once.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod ca_common;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ca_common::{CA_TIMINGS, http, wait_bootstrapped};
use common::{NodeProc, fast_config, start_node};
use nexus_api::Bytes;
use nexus_api::wire::ApiError;
use nexus_api::{
    Call, Client, ClientConfig, DType, ErrorCode, Finish, Handler, NodeConfig, Path, Service,
    ServiceConfig, Tensor, TensorHeader, TokenSink,
};
use nexus_registry::{Intent, Sad};

fn start(name: &str, root: &std::path::Path, seeds: &[&str]) -> NodeProc {
    let cfg = format!(
        "dataplane = \"127.0.0.1:0\"\n{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        fast_config(&format!(
            "[registry]\nrefresh_ms = 100\nanti_entropy_ms = 500\n\
             [ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}"
        ))
    );
    start_node(name, &root.join(name), seeds, &cfg, None)
}

async fn node_config(node: &NodeProc) -> NodeConfig {
    let api: SocketAddr = node.get("/v1/node").await["api"]
        .as_str()
        .expect("the node reports its NexAPI endpoint")
        .parse()
        .expect("address");
    NodeConfig::new(node.admin.clone(), api)
}

fn sad(id: &str) -> Sad {
    let json = serde_json::json!({
        "id": id, "tasks": ["llm.chat"], "model_family": "tiny", "context_window": 8192,
        "latency_ms_p50": 50, "latency_ms_p99": 100, "ttl_s": 30,
    });
    Sad::from_json(json.to_string().as_bytes()).expect("sad")
}

fn intent(task: &str) -> Intent {
    let mut i = Intent::new(task);
    i.k = 3;
    i
}

/// A replica: answers with its name, streams numbered tokens, takes tensors.
#[derive(Clone)]
struct Replica(&'static str);

impl Handler for Replica {
    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        let mut out = format!("{}:", self.0).into_bytes();
        out.extend_from_slice(&call.payload);
        Ok(Bytes::from(out))
    }

    async fn stream(&self, _call: Call, mut tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        for i in 0..10 {
            tokens.send(i, &format!("{}{i} ", self.0)).await?;
        }
        Ok((Finish::Stop, 1))
    }

    async fn tensor(&self, _tensor: Tensor) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The next hops node `node` holds for the class key `key` (hex).
async fn hops(node: &NodeProc, key: &str) -> usize {
    node.get("/v1/fib").await["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["key"] == key)
        .and_then(|e| e["next_hops"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits until `client`'s node resolves `n` candidates and holds a route with `n` hops for the
/// class; returns the class key.
async fn wait_route(client: &Client, node: &NodeProc, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.node().resolve(&intent("llm.chat")).await;
        if let Ok(a) = &answer {
            let key = format!("{:032x}", a.routing_key);
            if a.candidates.len() == n && hops(node, &key).await == n {
                return key;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no route with {n} hops: {answer:?}\n{}",
            node.get("/v1/fib").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One routed call on a new flow (no pooled session): the replica that answered.
async fn new_flow_call(client: &Client) -> String {
    client.close_sessions().await;
    let out = client
        .infer(&intent("llm.chat"), "tiny", Bytes::from_static(b"x"))
        .await
        .expect("routed infer");
    let text = String::from_utf8(out.to_vec()).expect("utf-8");
    text.split(':').next().expect("name").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_calls_reach_a_replica_picked_by_the_data_plane() {
    let root = tempfile::tempdir().expect("tmp");
    let n1 = start("n1", root.path(), &[]);
    let seed = n1.gossip.clone();
    let n2 = start("n2", root.path(), &[&seed]);
    let _n3 = start("n3", root.path(), &[&seed]);
    wait_bootstrapped(&http(), &n1, Duration::from_secs(60)).await;

    let a = Service::serve(
        ServiceConfig::new(node_config(&n1).await, sad("replica-a")),
        Replica("a"),
    )
    .await
    .expect("serve a");
    let b = Service::serve(
        ServiceConfig::new(node_config(&n2).await, sad("replica-b")),
        Replica("b"),
    )
    .await
    .expect("serve b");
    let mut config = ClientConfig::new(node_config(&n1).await);
    config.path = Path::Routed;
    // Every call resolves, so the class's route is looked up afresh after a change.
    config.resolve_ttl = Duration::ZERO;
    let client = Client::connect(config).await.expect("client");
    let key = wait_route(&client, &n1, 2).await;

    // A call, a token stream and a tensor on the routed path.
    let first = new_flow_call(&client).await;
    assert!(first == "a" || first == "b", "{first}");
    let mut stream = client
        .stream(&intent("llm.chat"), "tiny", Bytes::from_static(b"p"))
        .await
        .expect("routed stream");
    let mut seqs = Vec::new();
    while let Some(t) = stream.next().await {
        seqs.push(t.expect("token").seq);
    }
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
    let tensor = Tensor {
        header: TensorHeader::contiguous(1, "kv", DType::U8, &[64 << 10]),
        data: Bytes::from(vec![7u8; 64 << 10]),
    };
    client
        .send_tensor(&intent("llm.chat"), tensor)
        .await
        .expect("routed tensor");

    // New flows spread over both replicas (equal descriptors: weights within a few percent).
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let flows = 24;
    for _ in 0..flows {
        *landed.entry(new_flow_call(&client).await).or_default() += 1;
    }
    eprintln!("flows per replica over {flows} new flows: {landed:?}");
    for name in ["a", "b"] {
        assert!(
            landed.get(name).copied().unwrap_or(0) >= flows / 6,
            "replica {name} received too few of {flows} flows: {landed:?}"
        );
    }

    // The pooled session lands on b; then b stops (closing its sessions, withdrawing its
    // route): the next call, on the pooled session, fails over to a new flow, which reaches a.
    while new_flow_call(&client).await != "b" {}
    b.stop().await.expect("stop b");
    let out = client
        .infer(&intent("llm.chat"), "tiny", Bytes::from_static(b"y"))
        .await
        .expect("a call after its replica stopped");
    assert_eq!(out.as_ref(), b"a:y");

    // b's route is withdrawn, and every new flow lands on a.
    let deadline = Instant::now() + Duration::from_secs(15);
    while hops(&n1, &key).await != 1 {
        // Resolving keeps the class tracked, so its route is recompiled without b.
        let _ = client.node().resolve(&intent("llm.chat")).await;
        assert!(Instant::now() < deadline, "b's hop was not withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..8 {
        assert_eq!(new_flow_call(&client).await, "a");
    }
    drop(a);

    // A class with no route: refused, typed, without waiting on the transport.
    let started = Instant::now();
    let e = client
        .infer(&intent("no.such.task"), "tiny", Bytes::from_static(b"x"))
        .await
        .expect_err("no route");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("no route"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3), "{e}");
}
