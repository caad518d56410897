//! The capability registry through real node processes: a service registered on node 1 is
//! resolvable from node 3 (the advert crossed the broadcast overlay); when node 1 is SIGKILLed,
//! the resolve stops returning it within the failure-detection bound. Registrations persist
//! across a restart; leases expire; withdrawals reach every node; a service's link to its node
//! withdraws it when the link closes; bad input is refused with problem+json and changes
//! nothing.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn coder(id: &str, context: u64, p50: u64) -> Value {
    json!({"id": id, "tasks": ["llm.code"], "model_family": "qwen", "context_window": context,
           "latency_ms_p50": p50, "latency_ms_p99": p50 + 60, "price_micros_per_1k": 500})
}

const INTENT: &str = r#"{"task":"llm.code","min_context":128000,"max_latency_ms":200,"k":3}"#;

async fn resolve_ids(node: &NodeProc) -> Vec<String> {
    let intent: Value = serde_json::from_str(INTENT).expect("intent");
    let (status, body) = node.post("/v1/resolve", &intent).await;
    assert_eq!(status, 200, "{body}");
    body["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn fabric_ids(node: &NodeProc) -> Vec<String> {
    node.get("/v1/services").await["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["service"]["id"].as_str().expect("id").to_owned())
        .collect()
}

/// One node with the fast test timings, in `dir`.
fn solo(dir: &tempfile::TempDir) -> NodeProc {
    start_node(
        "solo",
        &dir.path().join("solo"),
        &[],
        &fast_config(""),
        None,
    )
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_one_node_resolve_on_another_until_it_dies() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = fast_config("[registry]\nrefresh_ms = 100\nanti_entropy_ms = 500\n");
    let mut nodes = start_cluster(dir.path(), 3, &config).await;
    let n3 = nodes.pop().expect("node 3");

    // The issue's example registration, on node 1, plus a competitor on node 2.
    let (status, body) = nodes[0]
        .post(
            "/v1/services",
            &json!({"id":"coder-1","tasks":["llm.code"],
        "model_family":"qwen","context_window":131072,"latency_ms_p50":120,"latency_ms_p99":180,
        "price_micros_per_1k":500}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["service"]["id"], "coder-1");
    assert!(body["local"].as_bool().expect("local"));
    let (status, _) = nodes[1]
        .post("/v1/services", &coder("coder-2", 200_000, 150))
        .await;
    assert_eq!(status, 201);
    // Too small a context: must never be returned for this intent.
    let (status, _) = nodes[1]
        .post("/v1/services", &coder("coder-small", 32_768, 40))
        .await;
    assert_eq!(status, 201);

    let n3 = &n3;
    let spread = wait_for(
        "node 3 resolves both services",
        Duration::from_secs(10),
        || async { resolve_ids(n3).await.len() == 2 },
    )
    .await;
    eprintln!("advert spread to node 3 in {spread:?}");
    let ids = resolve_ids(n3).await;
    assert!(
        ids.contains(&"coder-1".to_owned()) && ids.contains(&"coder-2".to_owned()),
        "{ids:?}"
    );
    assert!(!ids.contains(&"coder-small".to_owned()));

    // The resolve answer names the node and endpoint, with a score; explain says why.
    let mut intent: Value = serde_json::from_str(INTENT).expect("intent");
    intent["explain"] = json!(true);
    let (_, body) = n3.post("/v1/resolve", &intent).await;
    let n1_id = nodes[0].get("/v1/node").await["id"].clone();
    let c1 = body["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["id"] == "coder-1")
        .expect("coder-1")
        .clone();
    assert_eq!(c1["node"], n1_id);
    assert_eq!(c1["endpoint"]["node"], n1_id);
    assert_eq!(c1["node_name"], "n1");
    assert!(c1["score"].is_number());
    assert_eq!(body["routing_key"].as_str().expect("key").len(), 32);
    let excluded = body["excluded"]
        .as_array()
        .expect("explain lists exclusions");
    assert!(
        excluded.iter().any(|e| e["id"] == "coder-small"
            && e["reason"].as_str().expect("reason").contains("context")),
        "{excluded:?}"
    );

    // SIGKILL node 1: its service must disappear from node 3's answers within the bound.
    nodes[0].sigkill();
    let bound = detection_bound(3) + Duration::from_secs(1);
    let gone = wait_for("coder-1 leaves node 3's answers", bound, || async {
        !resolve_ids(n3).await.contains(&"coder-1".to_owned())
    })
    .await;
    eprintln!("coder-1 gone from node 3's answers {gone:?} after SIGKILL (bound {bound:?})");
    assert_eq!(resolve_ids(n3).await, vec!["coder-2".to_owned()]);

    // Withdrawal reaches every node.
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/services/coder-2", nodes[1].admin))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 200);
    wait_for(
        "the withdrawal reaches node 3",
        Duration::from_secs(5),
        || async { !fabric_ids(n3).await.contains(&"coder-2".to_owned()) },
    )
    .await;
    let logs = n3.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_persist_and_leases_expire() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = fast_config("[registry]\nrefresh_ms = 100\nanti_entropy_ms = 500\n");
    let mut node = start_node("solo", &dir.path().join("solo"), &[], &config, None);
    let mut svc = coder("coder-keep", 131_072, 100);
    svc["ttl_s"] = json!(60);
    assert_eq!(node.post("/v1/services", &svc).await.0, 201);
    // Registering the same id again renews it (200, not 201) with a newer version.
    let (status, again) = node.post("/v1/services", &svc).await;
    assert_eq!(status, 200);
    let v1 = again["service"]["version"].as_u64().expect("version");
    let mut short = coder("coder-short", 131_072, 100);
    short["ttl_s"] = json!(5);
    assert_eq!(node.post("/v1/services", &short).await.0, 201);

    // Restart: the registration survives (persisted in sled) with a higher version.
    node.sigterm();
    node.wait_exit(Duration::from_secs(10));
    let node = start_node("solo", &dir.path().join("solo"), &[], &config, None);
    let local = node.get("/v1/services?scope=local").await;
    let keep = local["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"]["id"] == "coder-keep")
        .expect("coder-keep restored after restart")
        .clone();
    assert!(keep["service"]["version"].as_u64().expect("version") > v1);

    // The 5 s lease is not renewed: the service is withdrawn.
    wait_for(
        "the unrenewed lease expires",
        Duration::from_secs(10),
        || async { !fabric_ids(&node).await.contains(&"coder-short".to_owned()) },
    )
    .await;
    assert!(fabric_ids(&node).await.contains(&"coder-keep".to_owned()));

    // A load update renews and re-advertises.
    let r = reqwest::Client::new()
        .patch(format!("{}/v1/services/coder-keep/load", node.admin))
        .json(&json!({"queue_depth": 7, "utilization_pct": 55}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["service"]["load"]["queue_depth"], 7);
}

/// Bad-input cases per method, path and content type: each body, the status and what the
/// problem's detail mentions.
type CaseGroups<'a> = Vec<(
    reqwest::Method,
    &'a str,
    &'a str,
    Vec<(&'a str, u16, &'a str)>,
)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_service_link_withdraws_its_service() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = solo(&dir);
    let http = reqwest::Client::new();
    let link_url = |id: &str| format!("{}/v1/services/{id}/link", node.admin);

    // A link names a service registered on this node; anything else is refused at once.
    expect_problem(
        http.get(link_url("nobody")).send().await.expect("link"),
        404,
        "unknown-service",
    )
    .await;

    node.post_ok("/v1/services", &coder("linked", 200_000, 120))
        .await;
    let mut link = http.get(link_url("linked")).send().await.expect("link");
    assert_eq!(link.status(), 200);
    assert_eq!(
        link.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    // The first line names the service and the heartbeat period; then a heartbeat arrives.
    let mut received = Vec::new();
    let first_line = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), link.chunk())
            .await
            .expect("the link's first line within 5 s")
            .expect("link body")
            .expect("the link stays open");
        received.extend_from_slice(&chunk);
        if let Some(end) = received.iter().position(|&b| b == b'\n') {
            break received.drain(..=end).collect::<Vec<u8>>();
        }
    };
    let first: Value = serde_json::from_slice(&first_line).expect("first line is JSON");
    assert_eq!(first["service"], "linked", "{first}");
    let heartbeat_ms = first["heartbeat_ms"].as_u64().expect("heartbeat_ms");
    assert!((1..=5_000).contains(&heartbeat_ms), "{first}");
    if received.is_empty() {
        let beat = tokio::time::timeout(Duration::from_millis(heartbeat_ms * 5), link.chunk())
            .await
            .expect("a heartbeat within five periods")
            .expect("link body")
            .expect("the link stays open");
        assert!(beat.iter().all(|&b| b == b'\n'), "{beat:?}");
    }
    assert!(
        node.metrics().await.contains("nexus_service_links 1"),
        "one open link"
    );
    assert!(fabric_ids(&node).await.contains(&"linked".to_owned()));

    // Closing the link (the service's process died) withdraws the service.
    drop(link);
    wait_for(
        "the service withdrawn after its link closed",
        Duration::from_secs(5),
        || async { !fabric_ids(&node).await.contains(&"linked".to_owned()) },
    )
    .await;
    let metrics = node.metrics().await;
    assert!(metrics.contains("nexus_service_links 0"), "{metrics}");
    assert!(
        metrics.contains("nexus_service_links_lost_total 1"),
        "{metrics}"
    );
    // Once withdrawn, the service has no link to open.
    expect_problem(
        http.get(link_url("linked")).send().await.expect("link"),
        404,
        "unknown-service",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registry_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = solo(&dir);
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: &str, ctype: &str| {
        http.request(method, format!("{}{path}", node.admin))
            .header("content-type", ctype.to_owned())
            .body(body.to_owned())
            .send()
    };
    let json_ct = "application/json";
    // A well-formed MIC (the smallest encoding: no model, publisher, claims or commitment) that
    // no CA signed; this node knows no CA key, so it is refused as "unknown CA key".
    let mut mic = b"NXMC\x01".to_vec();
    mic.extend_from_slice(&17u64.to_be_bytes());
    mic.extend_from_slice(&[7; 32]);
    mic.extend_from_slice(&[2, 0, 0, 0, 0, 0]);
    mic.extend_from_slice(&0u64.to_be_bytes());
    mic.extend_from_slice(&u64::MAX.to_be_bytes());
    mic.extend_from_slice(&3u32.to_be_bytes());
    mic.extend_from_slice(&[1; 64]);
    let mic_hex: String = mic.iter().map(|b| format!("{b:02x}")).collect();
    let unknown_ca =
        format!(r#"{{"id":"x","tasks":["llm.code"],"credentials":{{"mic":"{mic_hex}"}}}}"#);
    let bad_attestation = format!(
        r#"{{"id":"x","tasks":["llm.code"],"credentials":{{"mic":"{mic_hex}","attestations":["0g"]}}}}"#
    );
    let short_attestation = format!(
        r#"{{"id":"x","tasks":["llm.code"],"credentials":{{"mic":"{mic_hex}","attestations":["00"]}}}}"#
    );
    let groups: CaseGroups = vec![
        (
            reqwest::Method::POST,
            "/v1/services",
            json_ct,
            vec![
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"mic":"zz"}}"#,
                    422,
                    "credentials.mic: not valid hex",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"mic":"00"}}"#,
                    422,
                    "credentials.mic: MIC truncated",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"attestations":[]}}"#,
                    422,
                    "mic",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"mic":"00","proof":1}}"#,
                    422,
                    "proof",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":"abc"}"#,
                    422,
                    "credentials",
                ),
                (
                    &bad_attestation,
                    422,
                    "credentials.attestations[0]: not valid hex",
                ),
                (&short_attestation, 422, "credentials.attestations[0]"),
                (&unknown_ca, 422, "credentials: MIC 17: unknown CA key 3"),
                ("{", 400, ""),
                (r#"{"id":"x"}"#, 422, "tasks"),
                (
                    r#"{"id":"x","tasks":["llm.code"],"colour":"red"}"#,
                    422,
                    "colour",
                ),
                (
                    r#"{"id":"x","tasks":"llm.code"}"#,
                    422,
                    "tasks: invalid type",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"mic":5}}"#,
                    422,
                    "credentials.mic: invalid type",
                ),
                (
                    r#"{"id":"x","tasks":["llm.code"],"latency_ms_p50":200,"latency_ms_p99":100}"#,
                    422,
                    "latency_ms_p99",
                ),
                (r#"{"id":"Bad Id!","tasks":["llm.code"]}"#, 422, "id"),
                (
                    r#"{"id":"x","tasks":["llm.code"],"context_window":-1}"#,
                    422,
                    "context_window",
                ),
            ],
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/x",
            json_ct,
            vec![
                (&unknown_ca, 422, "unknown CA key"),
                (
                    r#"{"id":"x","tasks":["llm.code"],"credentials":{"mic":"00"},"credentials":null}"#,
                    422,
                    "duplicate field `credentials`",
                ),
            ],
        ),
        (
            reqwest::Method::POST,
            "/v1/resolve",
            json_ct,
            vec![
                (
                    r#"{"task":"llm.code","attested":{"min_score":1001}}"#,
                    422,
                    "attested.min_score",
                ),
                (
                    r#"{"task":"llm.code","attested":{"min_score":1,"safety":true}}"#,
                    422,
                    "safety",
                ),
                (
                    r#"{"task":"llm.code","publishers":["a","b","c","d","e","f","g","h","i"]}"#,
                    422,
                    "publishers",
                ),
                (
                    r#"{"task":"llm.code","publishers":["a|b"]}"#,
                    422,
                    "publishers[0]",
                ),
                (
                    r#"{"task":"llm.code","prefer":{"latency":-1}}"#,
                    422,
                    "latency",
                ),
                (r#"{"min_context":5}"#, 422, "task"),
                (r#"{"task":"llm.code","k":0}"#, 422, "k"),
                (r#"{"task":"llm.code","bogus":1}"#, 422, "bogus"),
                ("[1,2", 400, ""),
            ],
        ),
        (
            reqwest::Method::POST,
            "/v1/services",
            "text/plain",
            vec![("{}", 415, "")],
        ),
        (
            reqwest::Method::PUT,
            "/v1/services/other",
            json_ct,
            vec![(r#"{"id":"x","tasks":["llm.code"]}"#, 422, "id")],
        ),
        (
            reqwest::Method::DELETE,
            "/v1/services/nope",
            json_ct,
            vec![("", 404, "nope")],
        ),
        (
            reqwest::Method::PATCH,
            "/v1/services/nope/load",
            json_ct,
            vec![
                (r#"{"queue_depth":1}"#, 404, "nope"),
                (r#"{"queue_depth":"x"}"#, 422, "queue_depth"),
                (r#"{"colour":1}"#, 422, "colour"),
            ],
        ),
        (
            reqwest::Method::GET,
            "/v1/services?scope=galaxy",
            json_ct,
            vec![("", 400, "scope")],
        ),
        (
            reqwest::Method::GET,
            "/v1/services/nope",
            json_ct,
            vec![("", 404, "nope")],
        ),
    ];
    let cases = groups
        .into_iter()
        .flat_map(|(method, path, ctype, bodies)| {
            bodies.into_iter().map(move |(body, want, mention)| {
                (method.clone(), path, body, ctype, want, mention)
            })
        });
    for (method, path, body, ctype, want, mention) in cases {
        let r = send(method.clone(), path, body, ctype)
            .await
            .expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let problem: Value = r.json().await.expect("problem json");
        assert_eq!(status, want, "{method} {path} {body}: {problem}");
        assert_eq!(ct, "application/problem+json", "{method} {path}");
        assert!(
            problem["type"]
                .as_str()
                .expect("type")
                .starts_with("urn:nexus:problem:"),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains(mention),
            "{method} {path} {body}: detail should mention {mention:?}: {problem}"
        );
    }
    // An oversized body is refused before it is parsed.
    expect_body_too_large(&format!("{}/v1/services", node.admin)).await;
    // Nothing was registered by any of it.
    assert!(fabric_ids(&node).await.is_empty());
    // A trust-constrained intent over an empty registry is fine (and lists nothing).
    let (status, body) = node
        .post(
            "/v1/resolve",
            &json!({"task": "llm.code", "require_mic": true, "publishers": ["acme"],
                "attested": {"min_score": 800, "require_safety": true}, "explain": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["candidates"], json!([]));
}
