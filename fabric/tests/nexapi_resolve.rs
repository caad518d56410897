//! The local NexAPI endpoint of real node processes: a binary `RESOLVE` over UDP answers what
//! `POST /v1/resolve` answers for the same intent (ids, nodes, hosts, ports, streams, scores,
//! routing key); garbage, truncated and wrong-kind datagrams get typed `ERROR`s, responses get
//! nothing, every one is counted, and the node keeps serving; a service registered with a MIC is
//! answered with the MIC's subject key, on its own node and on another; the listener refuses a
//! non-loopback address and a port in use, and `off` turns it off.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod ca_common;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nexus_api::wire::{Hello, Op, Request, ResolveAnswer};
use nexus_api::{ApiError, ErrorCode, Limits, Message};
use nexus_registry::Intent;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use common::{NodeProc, assert_config_error, fast_config, nexus, run_with_config, start_node};

const INTENT: &str = r#"{"task":"llm.code","min_context":32768,"max_latency_ms":250,"k":3}"#;

/// How long a datagram that gets no answer is waited for.
const SILENCE: Duration = Duration::from_millis(300);

async fn api_addr(node: &NodeProc) -> SocketAddr {
    let v = node.get("/v1/node").await;
    v["api"]
        .as_str()
        .unwrap_or_else(|| panic!("/v1/node has no api address: {v}"))
        .parse()
        .expect("api address")
}

async fn client(api: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(api).await.expect("connect");
    socket
}

/// Sends `datagram` and returns the decoded answer, or `None` if nothing came within `SILENCE`.
async fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Option<Message> {
    socket.send(datagram).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(SILENCE, socket.recv(&mut buf))
        .await
        .ok()?
        .expect("recv");
    Some(Message::decode(&Bytes::copy_from_slice(&buf[..n]), &Limits::default()).expect("decodes"))
}

async fn resolve(socket: &UdpSocket, call: u64, intent: &Intent) -> ResolveAnswer {
    let request = Message::Resolve {
        call,
        intent: Box::new(intent.clone()),
    }
    .encode();
    match exchange(socket, &request).await {
        Some(Message::Answer(a)) => {
            assert_eq!(a.call, call);
            a
        }
        other => panic!("RESOLVE {call} answered with {other:?}"),
    }
}

async fn expect_error(socket: &UdpSocket, datagram: &[u8], call: u64, code: ErrorCode) -> ApiError {
    match exchange(socket, datagram).await {
        Some(Message::Error(e)) => {
            assert_eq!((e.call, e.code), (call, code), "{e:?}");
            assert!(!e.message.is_empty());
            e
        }
        other => panic!("{datagram:02x?}: expected an ERROR, got {other:?}"),
    }
}

async fn http_resolve(node: &NodeProc, intent: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/resolve", node.admin))
        .json(intent)
        .send()
        .await
        .expect("POST /v1/resolve");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("json")
}

/// The binary answer carries exactly what the HTTP answer does.
fn assert_same(binary: &ResolveAnswer, http: &Value) {
    assert_eq!(
        format!("{:032x}", binary.routing_key),
        http["routing_key"].as_str().expect("routing_key")
    );
    assert_eq!(u64::from(binary.considered), http["considered"]);
    let candidates = http["candidates"].as_array().expect("candidates");
    assert_eq!(binary.candidates.len(), candidates.len(), "{http}");
    for (b, h) in binary.candidates.iter().zip(candidates) {
        assert_eq!(b.service, h["id"].as_str().expect("id"));
        assert_eq!(hex(&b.node), h["node"].as_str().expect("node"));
        let node_addr: SocketAddr = h["endpoint"]["node_addr"]
            .as_str()
            .expect("node_addr")
            .parse()
            .expect("addr");
        assert_eq!(b.host, Some(node_addr.ip()));
        assert_eq!(u64::from(b.port), h["endpoint"]["port"]);
        assert_eq!(u64::from(b.stream), h["endpoint"]["stream"]);
        assert_eq!(
            b.score,
            h["score"].as_f64().expect("score"),
            "{}",
            b.service
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

async fn register(node: &NodeProc, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/services", node.admin))
        .json(body)
        .send()
        .await
        .expect("POST /v1/services");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_resolve_answers_what_http_resolve_answers_and_survives_bad_datagrams() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("n1", &dir.path().join("n1"), &[], &fast_config(""), None);
    for (i, (context, p50, port)) in [
        (131_072, 120, 9001),
        (65_536, 40, 9002),
        (32_768, 200, 9003),
        (16_384, 30, 9004),
        (262_144, 90, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"id": format!("coder-{i}"), "tasks": ["llm.code"],
            "context_window": context, "latency_ms_p50": p50, "latency_ms_p99": p50 + 60,
            "price_micros_per_1k": 100 * (i + 1), "endpoint": {"port": port, "stream": i}});
        let (status, reply) = register(&node, &body).await;
        assert_eq!(status, 201, "{reply}");
    }
    let api = api_addr(&node).await;
    assert!(api.ip().is_loopback() && api.port() != 0, "{api}");
    let socket = client(api).await;

    let json_intent: Value = serde_json::from_str(INTENT).expect("intent");
    let intent = Intent::from_json(INTENT.as_bytes()).expect("intent");
    let binary = resolve(&socket, 7, &intent).await;
    let http = http_resolve(&node, &json_intent).await;
    assert_eq!(binary.candidates.len(), 3, "{http}");
    assert_same(&binary, &http);
    assert!(binary.candidates.iter().all(|c| c.key.is_none()));
    // The fourth service (16k context) is excluded, the others ranked.
    assert!(binary.candidates.iter().all(|c| c.service != "coder-3"));

    // Bad datagrams: each gets a typed ERROR (or, for a response, nothing) and is counted.
    let good = Message::Resolve {
        call: 0x1122_3344_5566_7788,
        intent: Box::new(intent.clone()),
    }
    .encode();
    let mut decode_errors = 0.0;
    let e = expect_error(
        &socket,
        b"definitely not nexapi",
        0,
        ErrorCode::UnsupportedVersion,
    )
    .await;
    assert!(e.message.contains("version"), "{e:?}");
    decode_errors += 1.0;
    expect_error(&socket, &[], 0, ErrorCode::BadRequest).await;
    decode_errors += 1.0;
    // Truncated anywhere after the call id: the call id is echoed.
    for cut in [10, good.len() / 2, good.len() - 1] {
        let e = expect_error(
            &socket,
            &good[..cut],
            0x1122_3344_5566_7788,
            ErrorCode::BadRequest,
        )
        .await;
        assert!(e.message.contains("truncated"), "{e:?}");
        decode_errors += 1.0;
    }
    // Truncated inside the call id: no call id to echo.
    expect_error(&socket, &good[..6], 0, ErrorCode::BadRequest).await;
    decode_errors += 1.0;
    let mut trailing = good.to_vec();
    trailing.push(0);
    expect_error(
        &socket,
        &trailing,
        0x1122_3344_5566_7788,
        ErrorCode::BadRequest,
    )
    .await;
    decode_errors += 1.0;
    let mut other_version = good.to_vec();
    other_version[0] = 2;
    expect_error(&socket, &other_version, 0, ErrorCode::UnsupportedVersion).await;
    decode_errors += 1.0;
    let mut broken = intent.clone();
    broken.k = 0;
    let e = expect_error(
        &socket,
        &Message::Resolve {
            call: 5,
            intent: Box::new(broken),
        }
        .encode(),
        5,
        ErrorCode::BadRequest,
    )
    .await;
    assert!(e.message.contains("intent"), "{e:?}");
    decode_errors += 1.0;
    let oversized = vec![1u8; 60_000];
    expect_error(&socket, &oversized, 0, ErrorCode::BadRequest).await;
    decode_errors += 1.0;

    // Other kinds: requests are refused, responses dropped.
    let hello = Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        agent: "test".into(),
    })
    .encode();
    let e = expect_error(&socket, &hello, 0, ErrorCode::BadRequest).await;
    assert!(e.message.contains("RESOLVE"), "{e:?}");
    let request = Message::Request(Request {
        call: 77,
        op: Op::Infer,
        deadline_ms: 0,
        idempotency: None,
        resume_from: None,
        trace: None,
        model: "m".into(),
        payload: Bytes::from_static(b"x"),
    })
    .encode();
    expect_error(&socket, &request, 77, ErrorCode::BadRequest).await;
    let error = Message::Error(ApiError::new(3, ErrorCode::Internal, "x")).encode();
    assert_eq!(
        exchange(&socket, &error).await,
        None,
        "an ERROR is not answered"
    );
    let answer = Message::Answer(binary.clone()).encode();
    assert_eq!(
        exchange(&socket, &answer).await,
        None,
        "an ANSWER is not answered"
    );

    // Still serving, and the answer has not changed.
    let again = resolve(&socket, 8, &intent).await;
    assert_same(&again, &http_resolve(&node, &json_intent).await);
    let health = node.get("/v1/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health["actors"]
            .as_array()
            .expect("actors")
            .iter()
            .any(|a| a["name"] == "api" && a["status"] == "running"),
        "{health}"
    );
    let m = node.metrics().await;
    assert_eq!(metric(&m, "nexus_api_resolve_total"), 2.0);
    assert_eq!(
        metric(&m, "nexus_api_errors_total{reason=\"decode\"}"),
        decode_errors
    );
    assert_eq!(metric(&m, "nexus_api_errors_total{reason=\"kind\"}"), 4.0);
    assert_eq!(
        metric(&m, "nexus_api_errors_total{reason=\"registry\"}"),
        0.0
    );
    assert_eq!(metric(&m, "nexus_api_resolve_seconds_count"), 2.0);

    // Concurrent resolves from many sockets are all answered with their own call ids.
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let intent = intent.clone();
        tasks.push(tokio::spawn(async move {
            let socket = client(api).await;
            for j in 0..20 {
                let call = i * 1000 + j;
                assert_eq!(resolve(&socket, call, &intent).await.candidates.len(), 3);
            }
        }));
    }
    for t in tasks {
        t.await.expect("resolver task");
    }
}

/// The endpoint answers a repeated intent from its cache; every registry change (a new, better
/// service; a withdrawn one) shows in the very next binary answer, which stays equal to the
/// HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_resolve_follows_every_registry_change_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("n1", &dir.path().join("n1"), &[], &fast_config(""), None);
    let service = |i: usize, p50: u64| {
        json!({"id": format!("coder-{i}"), "tasks": ["llm.code"],
            "context_window": 131_072, "latency_ms_p50": p50, "latency_ms_p99": p50 + 20,
            "price_micros_per_1k": 100, "endpoint": {"port": 9000 + i, "stream": i}})
    };
    let (status, reply) = register(&node, &service(0, 200)).await;
    assert_eq!(status, 201, "{reply}");
    let socket = client(api_addr(&node).await).await;
    let json_intent: Value = serde_json::from_str(INTENT).expect("intent");
    let intent = Intent::from_json(INTENT.as_bytes()).expect("intent");
    let names = |a: &ResolveAnswer| {
        a.candidates
            .iter()
            .map(|c| c.service.clone())
            .collect::<Vec<_>>()
    };
    let mut call = 1;
    // Repeated: the same answer (from the cache after the first), the call id its own.
    for _ in 0..5 {
        call += 1;
        let a = resolve(&socket, call, &intent).await;
        assert_eq!(names(&a), ["coder-0"]);
    }
    let cached = metric(&node.metrics().await, "nexus_api_resolve_cached_total");
    assert!(cached >= 1.0, "no answer came from the cache: {cached}");
    // Each new service is faster than the ones before, so it ranks first at once.
    for i in 1..6 {
        let (status, reply) = register(&node, &service(i, 200 - 30 * i as u64)).await;
        assert_eq!(status, 201, "{reply}");
        call += 1;
        let binary = resolve(&socket, call, &intent).await;
        assert_eq!(
            binary.candidates[0].service,
            format!("coder-{i}"),
            "{:?}",
            names(&binary)
        );
        assert_same(&binary, &http_resolve(&node, &json_intent).await);
    }
    // A withdrawn service is gone from the next answer.
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/services/coder-5", node.admin))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    call += 1;
    let binary = resolve(&socket, call, &intent).await;
    assert!(
        !names(&binary).contains(&"coder-5".to_owned()),
        "{:?}",
        names(&binary)
    );
    assert_eq!(binary.candidates[0].service, "coder-4");
    assert_same(&binary, &http_resolve(&node, &json_intent).await);
    // Beyond the cache's age bound the registry is asked again: the same answer.
    tokio::time::sleep(Duration::from_millis(150)).await;
    call += 1;
    let again = resolve(&socket, call, &intent).await;
    assert_eq!(names(&again), names(&binary));
    assert_same(&again, &http_resolve(&node, &json_intent).await);
}

/// Sends `datagram` and returns the raw answer datagram.
async fn exchange_raw(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(SILENCE, socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{:02x?}: no answer", &datagram[..datagram.len().min(16)]))
        .expect("recv");
    buf.truncate(n);
    buf
}

/// An answer from the cache is byte for byte the answer the registry gave (but for the call
/// id), and datagrams that look like a cached `RESOLVE` but are not one (truncated, with
/// trailing bytes, oversized, an invalid intent) get their typed `ERROR` every time: they never
/// enter the cache and never take its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_is_the_registrys_answer_and_bad_datagrams_never_reach_the_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("n1", &dir.path().join("n1"), &[], &fast_config(""), None);
    for i in 0..3u16 {
        let body = json!({"id": format!("coder-{i}"), "tasks": ["llm.code"],
            "context_window": 131_072, "latency_ms_p50": 50 + 20 * i, "latency_ms_p99": 200,
            "endpoint": {"port": 9000 + i, "stream": i}});
        let (status, reply) = register(&node, &body).await;
        assert_eq!(status, 201, "{reply}");
    }
    let socket = client(api_addr(&node).await).await;
    let intent = Intent::from_json(INTENT.as_bytes()).expect("intent");
    let request = |call: u64| {
        Message::Resolve {
            call,
            intent: Box::new(intent.clone()),
        }
        .encode()
        .to_vec()
    };
    // The first answer comes from the registry, the next ones from the cache while it is valid
    // (100 ms, and no registry timer in between): all the same bytes but for the call id.
    let asked = exchange_raw(&socket, &request(1)).await;
    let mut resolves = 1.0;
    for call in 2..=20u64 {
        let call = call << 56 | call;
        let answer = exchange_raw(&socket, &request(call)).await;
        resolves += 1.0;
        assert_eq!(answer[2..10], call.to_be_bytes());
        assert_eq!(
            (&answer[..2], &answer[10..]),
            (&asked[..2], &asked[10..]),
            "call {call:x}"
        );
    }
    let m = node.metrics().await;
    assert_eq!(metric(&m, "nexus_api_resolve_total"), resolves);
    let cached = metric(&m, "nexus_api_resolve_cached_total");
    assert!(
        (1.0..resolves).contains(&cached),
        "{cached} of {resolves} from the cache: the first is never, some must be"
    );
    match Message::decode(&Bytes::from(asked.clone()), &Limits::default()) {
        Ok(Message::Answer(a)) => assert_eq!(a.candidates.len(), 3),
        other => panic!("{other:?}"),
    }

    let good = request(0x0102_0304_0506_0708);
    let mut trailing = good.clone();
    trailing.push(0);
    let mut oversized = good.clone();
    oversized.resize(60_000, 0xff);
    let mut broken = intent.clone();
    broken.k = 0;
    let invalid = Message::Resolve {
        call: 0x0102_0304_0506_0708,
        intent: Box::new(broken),
    }
    .encode()
    .to_vec();
    let bad: [&[u8]; 6] = [
        &good[..11],
        &good[..good.len() / 2],
        &good[..good.len() - 1],
        &trailing,
        &oversized,
        &invalid,
    ];
    for round in 0..2 {
        for datagram in bad {
            expect_error(
                &socket,
                datagram,
                0x0102_0304_0506_0708,
                ErrorCode::BadRequest,
            )
            .await;
        }
        // The cached answer is untouched (the answer cache lives 100 ms: the registry may be
        // asked again; either way the bytes are the same).
        let again = exchange_raw(&socket, &good).await;
        resolves += 1.0;
        assert_eq!(
            (&again[..2], &again[10..]),
            (&asked[..2], &asked[10..]),
            "round {round}"
        );
    }
    let m = node.metrics().await;
    assert_eq!(
        metric(&m, "nexus_api_errors_total{reason=\"decode\"}"),
        2.0 * bad.len() as f64
    );
    assert_eq!(metric(&m, "nexus_api_resolve_total"), resolves);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_mic_is_answered_with_its_subject_key_on_every_node() {
    let c = ca_common::http();
    let dir = tempfile::tempdir().expect("tmp");
    let (voters, _) = ca_common::start_three_voters(&c, dir.path()).await;
    let (v1, v2) = (&voters[0].node, &voters[1].node);
    let (status, issued) = ca_common::post(
        &c,
        &format!("{}/v1/ca/certs", v1.admin),
        &ca_common::issue_body(41, Some(41)),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let mic = issued["encoded"].as_str().expect("encoded").to_owned();
    let subject = issued["mic"]["body"]["subject_key"]
        .as_str()
        .expect("subject_key")
        .to_owned();
    let body = json!({"id": "signed-coder", "tasks": ["llm.code"], "context_window": 65536,
        "endpoint": {"port": 9100, "stream": 3}, "credentials": {"mic": mic}});
    // The node checks the MIC against its trust context, which follows the CA's bootstrap.
    let body = &body;
    ca_common::eventually(
        Duration::from_secs(20),
        "registration with a MIC",
        || async move {
            let (status, reply) = register(v1, body).await;
            (status == 201).then_some(reply)
        },
    )
    .await;
    let unsigned = json!({"id": "plain-coder", "tasks": ["llm.code"], "context_window": 65536,
        "endpoint": {"port": 9101}});
    assert_eq!(register(v1, &unsigned).await.0, 201);

    // Proximity (Vivaldi coordinates, moving with every RTT sample) is left out of the ranking
    // so the binary and the HTTP answer, asked one after the other, score alike.
    let intent_json = json!({"task": "llm.code", "k": 5,
        "prefer": {"latency": 1.0, "load": 1.0, "price": 0.5, "proximity": 0.0}});
    let intent = Intent::from_json(intent_json.to_string().as_bytes()).expect("intent");
    let intent = &intent;
    let v1_id = v1.get("/v1/node").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for node in [v1, v2] {
        let socket = &client(api_addr(node).await).await;
        let answer = ca_common::eventually(
            Duration::from_secs(20),
            "both services resolvable",
            || async move {
                let a = resolve(socket, 1, intent).await;
                (a.candidates.len() == 2).then_some(a)
            },
        )
        .await;
        let signed = answer
            .candidates
            .iter()
            .find(|c| c.service == "signed-coder")
            .expect("signed-coder");
        assert_eq!(
            signed.key.map(|k| hex(&k)).as_deref(),
            Some(subject.as_str()),
            "on {}",
            node.name
        );
        assert_eq!((signed.port, signed.stream), (9100, 3));
        assert_eq!(hex(&signed.node), v1_id);
        assert_eq!(signed.host, Some("127.0.0.1".parse().expect("ip")));
        let plain = answer
            .candidates
            .iter()
            .find(|c| c.service == "plain-coder")
            .expect("plain-coder");
        assert_eq!(plain.key, None);
        // The same answer over HTTP.
        assert_same(&answer, &http_resolve(node, &intent_json).await);
    }
}

#[test]
fn the_listener_is_loopback_only_and_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = ["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    for bad in [
        "0.0.0.0:7800",
        "10.1.2.3:7800",
        "[::]:7800",
        "127.0.0.1",
        "on",
    ] {
        let out = run_with_config(dir.path(), &[&base[..], &["--api", bad]].concat(), None);
        assert_config_error(dir.path(), &out, "api.listen");
    }
    let out = run_with_config(dir.path(), &base, Some("[api]\nlisten = \"0.0.0.0:1\"\n"));
    assert_config_error(dir.path(), &out, "api.listen");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let taken = taken.local_addr().expect("addr").to_string();
    let out = run_with_config(dir.path(), &[&base[..], &["--api", &taken]].concat(), None);
    assert_config_error(dir.path(), &out, "api.listen");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    let check = |args: &[&str]| {
        let out = nexus()
            .args(["node", "check"])
            .args(args)
            .output()
            .expect("node check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The pretty-printed configuration, without its whitespace.
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<String>()
    };
    assert!(check(&[]).contains("api:Some(127.0.0.1:7800,)"));
    assert!(check(&["--api", "off"]).contains("api:None,"));
    assert!(check(&["--api", "[::1]:9"]).contains("api:Some([::1]:9,)"));
}
