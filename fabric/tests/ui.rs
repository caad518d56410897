//! The web UI in a real headless Chromium against a live fabric: three CA voters with data
//! planes and ACLs on, five services with different properties registered across them, a
//! NexStream session from n1 to n2, and a read-only and an operator-only token made through
//! the API. The assets' headers are checked over HTTP; then `node fabric/tests/ui/run.mjs`
//! (playwright-core driving Debian's /usr/bin/chromium) signs in and checks every page: real
//! member names and service ids, the resolve playground's ranking against the API's (and the
//! service that must be first), issue and revoke buttons that work, the login form without a
//! token, the 403 panel naming the scope a token lacks, and no console error or failed request.
//!
//! Tools: `node` on PATH, Chromium at /usr/bin/chromium (or `NEXUS_CHROMIUM`), and the npm
//! packages of fabric/tests/ui, all installed by `.ci/run` ("== apt-get install chromium, if
//! missing; npm ci --prefix fabric/tests/ui"). Without them the test fails and says so.
//! `NEXUS_UI_SCREENSHOTS=docs/ui` (relative to the workspace root) also writes the PNGs that
//! docs/ui.md shows.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{NodeProc, start_node};
use serde_json::{Value, json};

const BOOT: &str = "bootstrap-management-token-0123";

/// Gossip and Raft timings that stay stable on a loaded 2-core machine (the CA bootstraps in a
/// few seconds; nothing here measures failure detection).
fn config() -> String {
    "dataplane = \"127.0.0.1:0\"\n\
     [gossip]\nprobe_period_ms = 500\nprobe_rtt_ms = 200\nsuspect_to_down_ms = 3000\n\
     join_retry_min_ms = 100\njoin_retry_max_ms = 1000\n\
     [stream]\nhello_timeout_ms = 3000\n\
     [ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\nheartbeat_ms = 100\n\
     election_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\nclient_timeout_ms = 5000\n\
     revocation_poll_ms = 500\n"
        .to_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

const SETUP: &str = "run `bash .ci/run` once (its step \"== apt-get install chromium, if missing; \
    npm ci --prefix fabric/tests/ui\"), or just that step: `apt-get install -y chromium && npm ci \
    --prefix fabric/tests/ui`";

/// The browser, or a panic naming the setup step that installs what is missing.
fn tools() -> PathBuf {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the UI browser test needs Node.js (`node` on PATH): {SETUP}"
    );
    let chromium = std::env::var_os("NEXUS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "the UI browser test needs Chromium at {} (or NEXUS_CHROMIUM): {SETUP}",
        chromium.display()
    );
    let playwright = workspace().join("fabric/tests/ui/node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "the UI browser test needs playwright-core in fabric/tests/ui/node_modules: {SETUP}"
    );
    chromium
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn call(c: &reqwest::Client, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut r = c
        .request(method.parse().expect("method"), url)
        .bearer_auth(BOOT);
    if let Some(body) = body {
        r = r.json(body);
    }
    match r.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service descriptor; `family` and `region` only make the pages look like a real fabric.
fn service(id: &str, tasks: &[&str], family_region: (&str, &str), numbers: [u64; 4]) -> Value {
    let [context, p50, price, util] = numbers;
    let (family, region) = family_region;
    json!({
        "id": id, "tasks": tasks, "model_family": family, "context_window": context,
        "latency_ms_p50": p50, "latency_ms_p99": p50 * 4, "price_micros_per_1k": price,
        "modalities": ["text"], "region": region,
        "load": {"queue_depth": util / 10, "utilization_pct": util},
        "endpoint": {"port": 9000 + p50 % 1000, "stream": 1}, "ttl_s": 600
    })
}

async fn make_token(c: &reqwest::Client, admin: &str, scope: &str) -> String {
    let (status, body) = call(
        c,
        "POST",
        &format!("{admin}/v1/acl/tokens"),
        Some(&json!({"description": format!("ui test: {scope} only"), "scopes": [scope]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["secret"].as_str().expect("secret").to_owned()
}

/// The assets' headers: content types, the policy, revalidation, unknown paths.
async fn check_assets(admin: &str) {
    let c = http();
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        // Open without a token, like the API's description: they hold no state.
        let r = c.get(format!("{admin}{path}")).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        let csp = h["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        let etag = h["etag"].clone();
        let r = c
            .get(format!("{admin}{path}"))
            .header("if-none-match", etag)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 304, "{path} revalidates");
        let r = c.head(format!("{admin}{path}")).send().await.expect("HEAD");
        assert_eq!(r.status(), 200, "HEAD {path}");
    }
    // Unknown paths under /ui are unknown paths: 401 without a token, 404 with one.
    let r = c
        .get(format!("{admin}/ui/members"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{admin}/ui/members"))
        .bearer_auth(BOOT)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_real_browser() {
    let chromium = tools();
    let started = Instant::now();
    let root = tempfile::tempdir().expect("tmp");
    let c = http();

    let n1 = start_node("n1", &root.path().join("n1"), &[], &config(), Some(BOOT));
    let seed = n1.gossip.clone();
    let n2 = start_node(
        "n2",
        &root.path().join("n2"),
        &[&seed],
        &config(),
        Some(BOOT),
    );
    let n3 = start_node(
        "n3",
        &root.path().join("n3"),
        &[&seed],
        &config(),
        Some(BOOT),
    );
    let nodes: [&NodeProc; 3] = [&n1, &n2, &n3];
    check_assets(&n1.admin).await;

    eventually(Duration::from_secs(40), "the CA to bootstrap", || async {
        let (_, status) = call(&c, "GET", &format!("{}/v1/ca/status", n1.admin), None).await;
        (status["bootstrapped"] == true).then_some(())
    })
    .await;

    // Five services with different properties on the three nodes. For llm.code with at least
    // 100k of context, coder-fast (lower latency, load and price) must rank above
    // coder-large; coder-small's context is too short.
    let services = [
        (
            0,
            service(
                "coder-large",
                &["llm.code", "llm.chat"],
                ("qwen-2.5", "eu-west"),
                [200_000, 90, 900, 55],
            ),
        ),
        (
            1,
            service(
                "coder-fast",
                &["llm.code"],
                ("llama-3", "eu-west"),
                [128_000, 40, 400, 12],
            ),
        ),
        (
            2,
            service(
                "coder-small",
                &["llm.code"],
                ("phi-3", "us-east"),
                [32_000, 25, 100, 30],
            ),
        ),
        (
            2,
            service(
                "embedder",
                &["embedding"],
                ("bge", "us-east"),
                [8_192, 8, 20, 85],
            ),
        ),
        (
            1,
            service(
                "vision",
                &["vision.detect"],
                ("yolo", "eu-west"),
                [0, 30, 0, 97],
            ),
        ),
    ];
    for (at, sad) in &services {
        let (status, body) = call(
            &c,
            "POST",
            &format!("{}/v1/services", nodes[*at].admin),
            Some(sad),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let ids: Vec<&str> = services
        .iter()
        .map(|(_, s)| s["id"].as_str().expect("id"))
        .collect();
    eventually(
        Duration::from_secs(20),
        "n1 to hold every advert",
        || async {
            let (_, list) = call(&c, "GET", &format!("{}/v1/services", n1.admin), None).await;
            let held = list["services"].as_array().map_or(0, Vec::len);
            (held == ids.len()).then_some(())
        },
    )
    .await;
    let intent = json!({"task": "llm.code", "k": 3, "min_context": 100_000});
    let (_, answer) = call(
        &c,
        "POST",
        &format!("{}/v1/resolve", n1.admin),
        Some(&intent),
    )
    .await;
    assert_eq!(answer["candidates"][0]["id"], "coder-fast", "{answer}");

    // A session n1 → n2 for the sessions page (peers refuse it until their node MIC arrives).
    eventually(
        Duration::from_secs(20),
        "a session probe n1 → n2",
        || async {
            let (status, _) = call(
                &c,
                "POST",
                &format!("{}/v1/sessions/probe", n1.admin),
                Some(&json!({"peer": "n2", "mode": "ro", "count": 5})),
            )
            .await;
            (status == 200).then_some(())
        },
    )
    .await;

    let read = make_token(&c, &n1.admin, "read").await;
    let operator = make_token(&c, &n1.admin, "operator").await;
    let expect = json!({
        "members": ["n1", "n2", "n3"],
        "services": ids,
        "intent": intent,
        "first": "coder-fast",
        "excluded": "coder-small",
        "session_peer": "n2",
    });

    let mut cmd = Command::new("node");
    cmd.arg("fabric/tests/ui/run.mjs")
        .current_dir(workspace())
        .env("NEXUS_UI_ADMIN", &n1.admin)
        .env("NEXUS_UI_TOKEN", BOOT)
        .env("NEXUS_UI_READ_TOKEN", &read)
        .env("NEXUS_UI_OPERATOR_TOKEN", &operator)
        .env("NEXUS_UI_EXPECT", expect.to_string())
        .env("NEXUS_CHROMIUM", &chromium);
    match std::env::var_os("NEXUS_UI_SCREENSHOTS") {
        Some(dir) => {
            cmd.env("NEXUS_UI_SCREENSHOTS", workspace().join(dir));
        }
        None => {
            cmd.env_remove("NEXUS_UI_SCREENSHOTS");
        }
    }
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ui: all ") && stdout.contains("checks passed"),
        "the browser checks failed ({}):\n{stdout}\n{stderr}\nn1 logs:\n{}",
        out.status,
        n1.logs()
    );
    // Every page was checked: a script that skipped some would pass fewer checks.
    let passed = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(passed >= 30, "only {passed} checks ran:\n{stdout}");
    eprintln!("{stdout}ui test: {:?} in all", started.elapsed());
}
