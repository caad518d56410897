//! NexAPI's routed path against real node processes: three nodes (the CA's three voters), each
//! with a data plane. Two replicas of one service, on nodes 1 and 2, each embedded in this test
//! process with its own CA-issued key; a client on node 1 with `Path::Routed`. Every call's
//! session is addressed to the intent class's routing key and travels through node 1's session
//! socket (the relay) into node 1's data plane, which picks a replica per flow and rewrites the
//! key; the replica answers through its node's data plane to node 1's session key, and the relay
//! hands the answer to the client. Checked: calls, a token stream and a tensor succeed; new
//! flows spread over both replicas; after one replica stops, it refuses new sessions (a direct
//! client that resolved it before moves on to the other at once) and new calls land on the
//! other; a class with no route is refused, typed, at once. A second test times the first call
//! of a class its node did not track, checks that the relay's counters move in the node's
//! metrics and `GET /v1/node`, then kills a replica (its sessions left open): its node withdraws
//! it as soon as its link to the node closes, the client's node drops its route, and the next
//! call is answered by the other replica within the routed idle bound.

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
    Call, CallOptions, Client, ClientConfig, DType, ErrorCode, Finish, Handler, Path, Service,
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

/// Three nodes (the CA's voters, each with a data plane), the CA bootstrapped, and replica `a`
/// served on node 1. Fields drop in order: the nodes stop before their directory goes.
struct Cluster {
    n1: NodeProc,
    n2: NodeProc,
    _n3: NodeProc,
    a: Service<Replica>,
    _root: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let root = tempfile::tempdir().expect("tmp");
    let n1 = start("n1", root.path(), &[]);
    let seed = n1.gossip.clone();
    let n2 = start("n2", root.path(), &[&seed]);
    let n3 = start("n3", root.path(), &[&seed]);
    wait_bootstrapped(&http(), &n1, Duration::from_secs(60)).await;
    let a = Service::serve(
        ServiceConfig::new(n1.nexapi_config().await, sad("replica-a")),
        Replica("a"),
    )
    .await
    .expect("serve a");
    Cluster {
        n1,
        n2,
        _n3: n3,
        a,
        _root: root,
    }
}

/// A client on `node` taking the routed path, resolving before every call (so the class's
/// route is looked up afresh after a change).
async fn routed_client(node: &NodeProc) -> Client {
    let mut config = ClientConfig::new(node.nexapi_config().await);
    config.path = Path::Routed;
    config.resolve_ttl = Duration::ZERO;
    Client::connect(config).await.expect("client")
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
    let Cluster { n1, n2, a, .. } = &cluster().await;
    let b = Service::serve(
        ServiceConfig::new(n2.nexapi_config().await, sad("replica-b")),
        Replica("b"),
    )
    .await
    .expect("serve b");
    let client = routed_client(n1).await;
    let key = wait_route(&client, n1, 2).await;

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

    // A direct client that resolved both replicas before b stops.
    let direct = Client::connect(ClientConfig::new(n1.nexapi_config().await))
        .await
        .expect("direct client");
    let resolved = direct.resolve(&intent("llm.chat")).await.expect("resolve");
    let candidate = |id: &str| {
        resolved
            .candidates
            .iter()
            .find(|c| c.service == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not resolved: {resolved:?}"))
    };
    let (cand_a, cand_b) = (candidate("replica-a"), candidate("replica-b"));

    // The pooled session lands on b; then b stops (refusing new sessions, withdrawing its route,
    // closing its sessions): the next call, on the pooled session, fails over to a new flow,
    // which reaches a: a flow the table still sends to b is refused, not served.
    while new_flow_call(&client).await != "b" {}
    b.stop().await.expect("stop b");
    let out = client
        .infer(&intent("llm.chat"), "tiny", Bytes::from_static(b"y"))
        .await
        .expect("a call after its replica stopped");
    assert_eq!(out.as_ref(), b"a:y");

    // The direct client cannot open a new session to the stopped b: refused, typed as a
    // transport failure (`unavailable`), and a keyed call given b first moves on to a at once.
    let refused = direct
        .session(&cand_b)
        .await
        .expect_err("a stopped service accepted a new session");
    assert_eq!(refused.code(), ErrorCode::Unavailable, "{refused}");
    assert!(refused.to_string().contains("refused"), "{refused}");
    let started = Instant::now();
    let out = direct
        .infer_on(
            &[cand_b, cand_a],
            "tiny",
            Bytes::from_static(b"z"),
            &CallOptions::default(),
        )
        .await
        .expect("a keyed call that names the stopped replica first");
    assert_eq!(out.as_ref(), b"a:z");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "moving on from the stopped replica took {:?}",
        started.elapsed()
    );

    // b's route is withdrawn, and every new flow lands on a.
    let deadline = Instant::now() + Duration::from_secs(15);
    while hops(n1, &key).await != 1 {
        // Resolving keeps the class tracked, so its route is recompiled without b.
        let _ = client.node().resolve(&intent("llm.chat")).await;
        assert!(Instant::now() < deadline, "b's hop was not withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..8 {
        assert_eq!(new_flow_call(&client).await, "a");
    }
    assert_eq!(a.in_flight(), 0);

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
async fn a_new_class_is_fast_and_a_killed_replica_is_withdrawn_and_left_within_bounds() {
    let Cluster { n1, n2, a, .. } = &cluster().await;
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
    let client = routed_client(n1).await;
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

    // The pooled session lands on b, then b is killed: no close reaches the client, but b's
    // link to n2 closes with its runtime, so n2 withdraws b at once (not when its 30 s lease
    // runs out) and n1 drops b's route.
    let key = wait_route(&client, n1, 2).await;
    while new_flow_call(&client).await != "b" {}
    let lost = "nexus_service_links_lost_total";
    let lost_before = metric(&n2.metrics().await, lost);
    assert_eq!(metric(&n2.metrics().await, "nexus_service_links"), 1);
    b.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(10);
    loop {
        let services = n2.get("/v1/services?scope=local").await;
        let held = services["services"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["service"]["id"].as_str() == Some("replica-b"))
        });
        if !held {
            break;
        }
        assert!(Instant::now() < deadline, "b not withdrawn: {services}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let withdrawn = killed.elapsed();
    while hops(n1, &key).await != 1 {
        // Resolving keeps the class tracked, so its route is recompiled without b.
        let _ = client.node().resolve(&intent("llm.chat")).await;
        assert!(Instant::now() < deadline, "b's hop was not withdrawn on n1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unrouted = killed.elapsed();
    eprintln!(
        "killed replica: withdrawn by its node after {withdrawn:?}, its hop gone from the client's node after {unrouted:?}"
    );
    let text = n2.metrics().await;
    assert_eq!(metric(&text, lost), lost_before + 1, "{text}");
    assert_eq!(metric(&text, "nexus_service_links"), 0, "{text}");
    assert!(
        withdrawn < Duration::from_secs(1),
        "the node took {withdrawn:?} to withdraw a killed service"
    );
    assert!(
        unrouted < Duration::from_secs(3),
        "the client's node took {unrouted:?} to drop a killed service's route"
    );

    // The pooled session to b idles out (no reset from b can end it), and the call moves to a
    // new flow, which the table now places on a.
    let started = Instant::now();
    let out = client
        .infer(&intent("llm.chat"), "tiny", Bytes::from_static(b"y"))
        .await
        .expect("a call after its replica was killed");
    let failover = started.elapsed();
    eprintln!("call after the pooled replica was killed: {failover:?}");
    assert_eq!(out.as_ref(), b"a:y");
    let bound = nexus_api::ROUTED_IDLE_TIMEOUT + Duration::from_secs(1);
    assert!(failover < bound, "{failover:?} (bound {bound:?})");
    for _ in 0..8 {
        assert_eq!(new_flow_call(&client).await, "a");
    }
    assert_eq!(a.in_flight(), 0);
}
