//! Trace export from real node processes to a real OTLP/HTTP receiver: two nodes started with
//! `[telemetry] otlp_endpoint` naming an axum server in this test, which decodes every
//! `ExportTraceServiceRequest` (protobuf) it is posted. A service registered on node 1 and
//! resolved on node 2 (admin API and binary NexAPI) must show up as spans with their names and
//! attributes: `registry.register` with its `registry.broadcast` child on node 1,
//! `registry.apply` on node 2, `admin.resolve` and `nexapi.resolve` on node 2. The nodes then
//! leave on SIGTERM; the spans still queued arrive because the exporter is flushed on exit.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

mod otlp;

use std::time::{Duration, Instant};

use nexus_api::{Limits, Message};
use serde_json::json;

use common::{fast_config, start_node};
use otlp::{Received, receiver};

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find<'a>(spans: &'a [Received], instance: &str, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.instance == instance && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_and_registrations_arrive_as_spans_at_an_otlp_receiver() {
    let (endpoint, spans) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fast_config(&format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"nexus-test\"\n"
    ));
    let mut n1 = start_node("n1", &dir.path().join("n1"), &[], &config, None);
    let mut n2 = start_node("n2", &dir.path().join("n2"), &[&n1.gossip], &config, None);
    n1.wait_alive(2, Duration::from_secs(20)).await;
    n2.wait_alive(2, Duration::from_secs(20)).await;

    let sad = json!({"id": "coder-otel", "tasks": ["llm.code"], "model_family": "qwen",
        "context_window": 131072, "latency_ms_p50": 120, "latency_ms_p99": 180,
        "price_micros_per_1k": 500});
    let (status, body) = n1.post("/v1/services", &sad).await;
    assert_eq!(status, 201, "{body}");
    wait_for(
        "node 2 holds the advert",
        Duration::from_secs(10),
        || async {
            n2.get("/v1/services").await["services"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["service"]["id"] == "coder-otel"))
        },
    )
    .await;

    let intent = json!({"task": "llm.code", "min_context": 32768, "k": 2});
    let (status, body) = n2.post("/v1/resolve", &intent).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["candidates"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );

    // The binary resolve on node 2's local NexAPI endpoint.
    let api: std::net::SocketAddr = n2.get("/v1/node").await["api"]
        .as_str()
        .expect("api address")
        .parse()
        .expect("api");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let request = Message::Resolve {
        call: 77,
        intent: Box::new(
            nexus_registry::Intent::from_json(intent.to_string().as_bytes()).expect("intent"),
        ),
    }
    .encode();
    socket.send_to(&request, api).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("answered")
        .expect("recv");
    let answer = Message::decode(
        &axum::body::Bytes::copy_from_slice(&buf[..n]),
        &Limits::default(),
    )
    .expect("decodes");
    assert!(matches!(answer, Message::Answer(_)), "{answer:?}");

    // SIGTERM makes both leave; the exporter is flushed on the way out.
    for node in [&mut n2, &mut n1] {
        node.sigterm();
        assert!(
            node.wait_exit(Duration::from_secs(20)).success(),
            "{}",
            node.logs()
        );
    }
    wait_for("the spans of both nodes", Duration::from_secs(10), || {
        let spans = spans.clone();
        async move {
            let s = spans.lock().expect("spans");
            ["admin.resolve", "nexapi.resolve", "registry.apply"]
                .iter()
                .all(|n| !find(&s, "n2", n).is_empty())
                && !find(&s, "n1", "registry.broadcast").is_empty()
        }
    })
    .await;
    let spans = spans.lock().expect("spans").clone();
    assert!(
        spans.iter().all(|s| s.service == "nexus-test"),
        "{spans:#?}"
    );

    let register = find(&spans, "n1", "registry.register");
    let register = register
        .iter()
        .find(|s| s.attributes.get("service").map(String::as_str) == Some("coder-otel"))
        .unwrap_or_else(|| panic!("registry.register on n1: {spans:#?}"));
    assert_eq!(
        register.attributes.get("version").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        register.attributes.get("created").map(String::as_str),
        Some("true")
    );
    let broadcast = find(&spans, "n1", "registry.broadcast")
        .into_iter()
        .find(|b| b.parent_span_id == register.span_id)
        .unwrap_or_else(|| panic!("a broadcast under the registration: {spans:#?}"));
    assert_eq!(broadcast.trace_id, register.trace_id);
    assert!(broadcast.attributes["bytes"].parse::<u64>().expect("bytes") > 0);

    let applied: u64 = find(&spans, "n2", "registry.apply")
        .iter()
        .map(|s| {
            s.attributes
                .get("applied")
                .map_or(0, |a| a.parse().expect("applied"))
        })
        .sum();
    assert!(applied >= 1, "node 2 applied the advert: {spans:#?}");

    for name in ["admin.resolve", "nexapi.resolve"] {
        let resolve = find(&spans, "n2", name);
        assert_eq!(resolve.len(), 1, "{name}: {spans:#?}");
        let a = &resolve[0].attributes;
        assert_eq!(
            a.get("task").map(String::as_str),
            Some("llm.code"),
            "{name}"
        );
        assert_eq!(a.get("k").map(String::as_str), Some("2"), "{name}");
        assert_eq!(a.get("candidates").map(String::as_str), Some("1"), "{name}");
        assert_eq!(a.get("results").map(String::as_str), Some("1"), "{name}");
    }
    // The admin resolve runs inside its request's span.
    let resolve = find(&spans, "n2", "admin.resolve")[0];
    let request = find(&spans, "n2", "admin.request")
        .into_iter()
        .find(|r| r.span_id == resolve.parent_span_id)
        .unwrap_or_else(|| panic!("admin.resolve has an admin.request parent: {spans:#?}"));
    assert_eq!(request.trace_id, resolve.trace_id);
    assert_eq!(request.attributes["http.route"], "/v1/resolve");
    assert_eq!(request.attributes["http.request.method"], "POST");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert!(
        find(&spans, "n1", "admin.request")
            .iter()
            .any(|r| r.attributes["http.route"] == "/v1/services"
                && r.attributes["http.response.status_code"] == "201"),
        "the registration's request on n1: {spans:#?}"
    );
    assert_eq!(
        find(&spans, "n2", "nexapi.resolve")[0]
            .attributes
            .get("call")
            .map(String::as_str),
        Some("77")
    );
    // Only the node's own trace spans are exported, not every span of its dependencies.
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for name in &names {
        assert!(
            [
                "admin.request",
                "admin.resolve",
                "nexapi.resolve",
                "registry.register",
                "registry.broadcast",
                "registry.apply"
            ]
            .contains(name),
            "unexpected span {name}"
        );
    }
}

/// Bad `[telemetry]` settings and a bad `OTEL_EXPORTER_OTLP_ENDPOINT` stop the node before it
/// starts: exit 2, one line naming the setting, nothing created.
#[test]
fn bad_telemetry_settings_are_config_errors() {
    for (config, field) in [
        (
            "[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"https://collector:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 1.5\n",
            "telemetry.sample_ratio",
        ),
        (
            "[telemetry]\nsample_ratio = -0.5\n",
            "telemetry.sample_ratio",
        ),
        (
            "[telemetry]\nservice_name = \"\"\n",
            "telemetry.service_name",
        ),
        ("[telemetry]\nendpoint = \"http://x\"\n", "endpoint"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = common::run_with_config(dir.path(), &[], Some(config));
        common::assert_config_error(dir.path(), &out, field);
    }
    // The standard variable is checked as strictly, and named in the error.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::nexus()
        .args(["node", "run", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317")
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("run nexus");
    common::assert_config_error(dir.path(), &out, "OTEL_EXPORTER_OTLP_ENDPOINT");
}
