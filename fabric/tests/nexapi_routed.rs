//! NexAPI's routed path against real node processes: three nodes (the CA's three voters), each
//! with a data plane. Two replicas of one service, on nodes 1 and 2, each embedded in this test
//! process with its own CA-issued key; a client on node 1 with `Path::Routed`. Every call's
//! session is addressed to the intent class's routing key and travels through node 1's session
//! socket (the relay) into node 1's data plane, which picks a replica per flow and rewrites the
//! key; the replica answers through its node's data plane to node 1's session key, and the relay
//! hands the answer to the client. Checked: calls, a token stream and a tensor succeed; new
//! flows spread over both replicas; after one replica stops, new calls land on the other; a
//! class with no route is refused, typed, at once. A second test times the first call of a class
//! its node did not track, kills a replica (its sessions left open, its route installed) and
//! checks that the next call is answered by the other within the routed idle bound, and that
//! the relay's counters move in the node's metrics and `GET /v1/node`.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod ca_common;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ca_common::{CA_TIMINGS, http, wait_bootstrapped};
use common::{NodeProc, fast_config, start_node};
use nexus_api::Bytes;
use nexus_api::wire::ApiError;
use nexus_api::{
    Call, Client, ClientConfig, DType, ErrorCode, Finish, Handler, Path, Service, ServiceConfig,
    Tensor, TensorHeader, TokenSink,
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
        ServiceConfig::new(n1.nexapi_config().await, sad("replica-a")),
        Replica("a"),
    )
    .await
    .expect("serve a");
    let b = Service::serve(
        ServiceConfig::new(n2.nexapi_config().await, sad("replica-b")),
        Replica("b"),
    )
    .await
    .expect("serve b");
    let mut config = ClientConfig::new(n1.nexapi_config().await);
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

/// A replica served on a runtime of its own thread: killing it drops that runtime, so its
/// socket closes without a word to its peers and its lease is no longer renewed, as when its
/// process is killed.
struct Killable {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killable {
    async fn serve(config: ServiceConfig, replica: Replica) -> Killable {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let service = Service::serve(config, replica).await;
                let ok = service.is_ok();
                let _ = ready_tx.send(service.map(|_| ()).map_err(|e| e.to_string()));
                if ok {
                    let _ = killed.await;
                }
            });
            // The runtime drops here with every task of the replica: its socket closes.
        });
        ready_rx.await.expect("replica thread").expect("serve");
        Killable {
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("replica thread");
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the metric line `name` (with its labels, as exported) in `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_class_is_fast_and_a_killed_replica_is_left_within_the_idle_bound() {
    let root = tempfile::tempdir().expect("tmp");
    let n1 = start("n1", root.path(), &[]);
    let seed = n1.gossip.clone();
    let n2 = start("n2", root.path(), &[&seed]);
    let _n3 = start("n3", root.path(), &[&seed]);
    wait_bootstrapped(&http(), &n1, Duration::from_secs(60)).await;

    let a = Service::serve(
        ServiceConfig::new(n1.nexapi_config().await, sad("replica-a")),
        Replica("a"),
    )
    .await
    .expect("serve a");
    let mut b = Killable::serve(
        ServiceConfig::new(n2.nexapi_config().await, sad("replica-b")),
        Replica("b"),
    )
    .await;
    // Both adverts on n1, seen without resolving (a resolve would track the class).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let services = n1.get("/v1/services").await;
        let ids: Vec<&str> = services["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["service"]["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if ids.contains(&"replica-a") && ids.contains(&"replica-b") {
            break;
        }
        assert!(Instant::now() < deadline, "adverts: {services}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = ClientConfig::new(n1.nexapi_config().await);
    config.path = Path::Routed;
    config.resolve_ttl = Duration::ZERO;
    let client = Client::connect(config).await.expect("client");
    let metrics_before = n1.metrics().await;

    // The first call of a class n1 does not track: resolving it starts tracking it and the
    // answer can overtake the route's installation; a handshake packet dropped for want of the
    // route is sent again after tens of milliseconds, not after QUIC's usual second. Twice: the
    // first call also asks n1 for its session socket; the second is sent right after its
    // resolve.
    let no_route = r#"nexus_dataplane_dropped_total{reason="no_route"}"#;
    let mut by_context = intent("llm.chat");
    by_context.min_context = Some(1024);
    for (what, intent) in [("first", by_context), ("second", intent("llm.chat"))] {
        let before = metric(&n1.metrics().await, no_route);
        let started = Instant::now();
        let out = client
            .infer(&intent, "tiny", Bytes::from_static(b"x"))
            .await
            .expect("first routed call of a new class");
        let took = started.elapsed();
        eprintln!(
            "{what} new class: first routed call {took:?} (frames n1's data plane dropped for \
             no route meanwhile: {})",
            metric(&n1.metrics().await, no_route).saturating_sub(before)
        );
        assert!(out.starts_with(b"a:") || out.starts_with(b"b:"), "{out:?}");
        assert!(
            took < Duration::from_millis(500),
            "the first call of a new class took {took:?}"
        );
    }

    // The relay's counters moved, in the metrics and in GET /v1/node.
    let node = n1.get("/v1/node").await;
    let relay = &node["relay"];
    assert!(relay["frames_out"].as_u64() > Some(0), "{node}");
    assert!(relay["frames_back"].as_u64() > Some(0), "{node}");
    assert!(
        relay["bytes_out"].as_u64() > relay["frames_out"].as_u64(),
        "{node}"
    );
    assert_eq!(relay["clients"].as_u64(), Some(1), "{node}");
    assert_eq!(relay["clients_max"].as_u64(), Some(4096), "{node}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The session actor exports them once a second.
        let text = n1.metrics().await;
        let out_frames = r#"nexus_stream_relay_frames_total{direction="out"}"#;
        let back_frames = r#"nexus_stream_relay_frames_total{direction="back"}"#;
        if metric(&text, out_frames) > metric(&metrics_before, out_frames)
            && metric(&text, back_frames) > metric(&metrics_before, back_frames)
            && metric(&text, "nexus_stream_relay_clients") == 1
        {
            assert!(text.contains(r#"nexus_stream_relay_dropped_total{reason="foreign"}"#));
            assert!(text.contains("nexus_stream_relay_clients_evicted_total"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay metrics did not move:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The pooled session lands on b, then b is killed: no close reaches the client, and b's
    // route stays installed until its lease runs out.
    wait_route(&client, &n1, 2).await;
    while new_flow_call(&client).await != "b" {}
    b.kill();
    let started = Instant::now();
    let out = client
        .infer(&intent("llm.chat"), "tiny", Bytes::from_static(b"y"))
        .await
        .expect("a call after its replica was killed");
    let failover = started.elapsed();
    eprintln!("call after the pooled replica was killed: {failover:?}");
    assert_eq!(out.as_ref(), b"a:y");
    // Within the idle bound for the dead session, and one more for a new flow that the table
    // still sent to the dead replica.
    let bound = nexus_api::ROUTED_IDLE_TIMEOUT * 2 + Duration::from_secs(1);
    assert!(failover < bound, "{failover:?} (bound {bound:?})");
    drop(a);
}
