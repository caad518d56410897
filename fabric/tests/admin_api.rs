//! The admin API against a real node process: bad input gets problem JSON and the node keeps
//! running; the token is enforced (except on the open `/v1/health`); a crashed actor is
//! restarted while membership keeps working; too many crashes stop the node with a non-zero
//! exit.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problem_json_and_the_node_keeps_running() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("n1", &dir.path().join("n1"), &[], &fast_config(""), None);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", node.admin);

    expect_problem(
        http.get(url("/v1/nope")).send().await.expect("send"),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        http.delete(url("/v1/members")).send().await.expect("send"),
        405,
        "method-not-allowed",
    )
    .await;
    let json = |body: &'static str| {
        http.post(url("/v1/leave"))
            .header("content-type", "application/json")
            .body(body)
    };
    expect_problem(
        json("{\"reason\":").send().await.expect("send"),
        400,
        "malformed-json",
    )
    .await;
    let unknown = expect_problem(
        json("{\"reasn\":\"x\"}").send().await.expect("send"),
        422,
        "invalid-body",
    )
    .await;
    assert!(
        unknown["detail"]
            .as_str()
            .expect("detail")
            .contains("unknown field")
    );
    expect_problem(
        json("{\"reason\":7}").send().await.expect("send"),
        422,
        "invalid-body",
    )
    .await;
    expect_problem(
        http.post(url("/v1/leave"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("send"),
        415,
        "unsupported-media-type",
    )
    .await;
    expect_body_too_large(&url("/v1/leave")).await;
    // Fault injection is off by default.
    expect_problem(
        http.post(url("/v1/debug/crash/gossip"))
            .send()
            .await
            .expect("send"),
        404,
        "fault-injection-disabled",
    )
    .await;

    // Still healthy, still the same node.
    let health = http.get(url("/v1/health")).send().await.expect("send");
    assert_eq!(health.status().as_u16(), 200);
    let node_json = node.get("/v1/node").await;
    assert_eq!(node_json["state"], "alive");
    let openapi = node.get("/v1/openapi.json").await;
    assert!(
        openapi["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    let metrics = http
        .get(url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    for name in [
        "nexus_members{state=\"alive\"} 1",
        "nexus_gossip_messages_in_total",
        "nexus_gossip_bytes_out_total",
        "nexus_probe_rtt_seconds_bucket",
        "nexus_actor_restarts",
    ] {
        assert!(metrics.contains(name), "missing {name}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_on_every_request_when_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = "s3cret-token-0123456789";
    let node = start_node(
        "n1",
        &dir.path().join("n1"),
        &[],
        &fast_config(""),
        Some(token),
    );
    let http = reqwest::Client::new();
    // Liveness probes carry no token: /v1/health stays open (docs/operations.md, section 11).
    let health = http
        .get(format!("{}/v1/health", node.admin))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status().as_u16(), 200);
    for path in ["/v1/members", "/metrics", "/v1/nope"] {
        let r = http
            .get(format!("{}{path}", node.admin))
            .send()
            .await
            .expect("send");
        assert!(r.headers().contains_key("www-authenticate"));
        expect_problem(r, 401, "unauthorized").await;
        let wrong = http
            .get(format!("{}{path}", node.admin))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .expect("send");
        expect_problem(wrong, 401, "unauthorized").await;
    }
    let ok = http
        .get(format!("{}/v1/members", node.admin))
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    // The CLI passes the token through.
    let out = nexus()
        .args([
            "ctl",
            "--admin",
            &node.admin,
            "--token",
            token,
            "--json",
            "members",
        ])
        .output()
        .expect("ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["members"][0]["name"], "n1");
    let denied = nexus()
        .args(["ctl", "--admin", &node.admin, "members"])
        .env_remove("NEXUS_ADMIN_TOKEN")
        .output()
        .expect("ctl");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_actor_restarts_while_membership_works_then_escalates() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = fast_config(
        "[debug]\nfault_injection = true\n[supervisor]\nrestarts_max = 2\nwindow_s = 60\nbackoff_min_ms = 50\n",
    );
    let mut nodes = start_cluster(dir.path(), 3, &config).await;
    let http = reqwest::Client::new();
    let crash = |node: &NodeProc, actor: &str| {
        http.post(format!("{}/v1/debug/crash/{actor}", node.admin))
            .send()
    };

    // One crash of n2's gossip actor: restarted, and the fabric sees n2 alive again.
    let r = crash(&nodes[1], "gossip").await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    for node in &nodes {
        node.wait_alive(3, Duration::from_secs(10)).await;
    }
    let actors = nodes[1].get("/v1/actors").await;
    let gossip = actors["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["name"] == "gossip")
        .expect("gossip")
        .clone();
    assert_eq!(gossip["restarts"], 1, "{actors}");
    assert!(
        gossip["last_failure"]
            .as_str()
            .expect("reason")
            .contains("fault injection")
    );
    let metrics = nodes[1].metrics().await;
    assert!(
        metrics.contains("nexus_actor_restarts_total{actor=\"gossip\"} 1"),
        "{metrics}"
    );

    // The admin actor restarts too (killed through the supervisor).
    let r = crash(&nodes[1], "admin").await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1].wait_alive(3, Duration::from_secs(10)).await;

    // restarts_max = 2: the third gossip failure within the window stops the node, exit 1.
    for _ in 0..2 {
        let _ = crash(&nodes[1], "gossip").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let status = nodes[1].wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "escalation exits non-zero");
    assert!(
        nodes[1].logs().contains("restart intensity exceeded"),
        "{}",
        nodes[1].logs()
    );
}
