//! The OpenAI-compatible gateway against real node processes and the official `openai` Python
//! client. Three CA voters on loopback: n1 serves a mock OpenAI-compatible server
//! (`openai/mock_upstream.py`, started here on an ephemeral port) to the fabric as an
//! `[[upstream]]`; n3 runs the gateway. `openai/client.py` calls the gateway: a streamed chat
//! (every token in order), a non-streamed chat, embeddings (1024 floats), bad requests, an
//! unknown model and an intent no service matches, each answered as OpenAI's API answers. The
//! raw Server-Sent Events and the gateway's metrics are checked here.
//!
//! The client runs in a virtual environment at `fabric/tests/openai/.venv`, created with
//! `python3 -m venv` and the pinned requirements if it is missing; without python3 the test
//! fails.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod ca_common;
mod common;
mod otlp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ca_common::{CA_TIMINGS, eventually, get, http, post, wait_bootstrapped};
use common::{NodeProc, fast_config, python_venv, start_node};
use serde_json::{Value, json};

fn openai_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai")
}

/// The virtual environment's python with the pinned `openai` package, created if missing.
fn venv_python() -> PathBuf {
    let dir = openai_dir();
    python_venv(
        &dir.join(".venv"),
        &dir.join("requirements.txt"),
        |python| {
            Command::new(python)
                .args(["-c", "import openai"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    )
}

/// The mock upstream server, killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_upstream(python: &Path) -> Upstream {
    let mut child = Command::new(python)
        .arg(openai_dir().join("mock_upstream.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the mock upstream");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the mock upstream's port");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the mock upstream printed {line:?}, not PORT <n>"));
    Upstream { child, port }
}

fn config(extra: &str) -> String {
    fast_config(&format!(
        "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}\
         [api]\nlisten = \"127.0.0.1:0\"\n{extra}"
    ))
}

fn upstream_config(port: u16) -> String {
    format!(
        "[[upstream]]\nurl = \"http://127.0.0.1:{port}\"\n[upstream.service]\n\
         id = \"mock-openai\"\ntasks = [\"llm.chat\", \"embed.text\"]\nmodel_family = \"tiny\"\n\
         context_window = 8192\nlatency_ms_p50 = 20\nlatency_ms_p99 = 40\nttl_s = 30\n"
    )
}

fn logged(node: &NodeProc, message: &str) -> Option<Value> {
    node.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == message)
}

async fn wait_logged(node: &NodeProc, message: &str, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = logged(node, message) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: no {message:?} log line within {within:?}; logs:\n{}",
            node.name,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_through_the_gateway_to_an_upstream_service() {
    let python = venv_python();
    let upstream = start_upstream(&python);
    let root = tempfile::tempdir().expect("tmp");
    let c = http();
    // n1 (the upstream's node) and n3 (the gateway) export their spans to this receiver.
    let (collector, spans) = otlp::receiver().await;
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{collector}\"\n");
    let mut n1 = start_node(
        "n1",
        &root.path().join("n1"),
        &[],
        &config(&format!("{}{telemetry}", upstream_config(upstream.port))),
        None,
    );
    let seed = n1.gossip.clone();
    let _n2 = start_node("n2", &root.path().join("n2"), &[&seed], &config(""), None);
    let mut n3 = start_node(
        "n3",
        &root.path().join("n3"),
        &[&seed],
        &config(&format!("[gateway]\nlisten = \"127.0.0.1:0\"\n{telemetry}")),
        None,
    );
    let gateway = logged(&n3, "node started").expect("node started")["gateway"]
        .as_str()
        .expect("gateway address")
        .to_owned();
    assert_ne!(gateway, "off");
    let node = n3.get("/v1/node").await;
    assert_eq!(node["gateway"], gateway.as_str(), "{node}");
    let base = format!("http://{gateway}");

    // Before the CA exists the gateway answers, typed, that it is not ready (unless the CA
    // was faster than this request).
    let (status, body) = post(
        &c,
        &format!("{base}/v1/chat/completions"),
        &json!({"model": "tiny-chat", "messages": [{"role": "user", "content": "1"}]}),
    )
    .await;
    if status == 503 {
        assert_eq!(body["error"]["code"], "not_ready", "{body}");
    }

    wait_bootstrapped(&c, &n1, Duration::from_secs(60)).await;
    let registered = wait_logged(&n1, "upstream service registered", Duration::from_secs(60)).await;
    assert_eq!(registered["service"], "mock-openai", "{registered}");
    wait_logged(
        &n3,
        "gateway connected to the fabric",
        Duration::from_secs(60),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "n3 resolves the upstream service",
        || async {
            let (status, body) = post(
                &c,
                &format!("{}/v1/resolve", n3.admin),
                &json!({"task": "llm.chat"}),
            )
            .await;
            (status == 200
                && body["candidates"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["id"] == "mock-openai")))
            .then_some(())
        },
    )
    .await;

    // The raw stream: OpenAI's chunks as Server-Sent Events, ending with [DONE].
    let raw = c
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "tiny-chat", "stream": true,
            "messages": [{"role": "user", "content": "4"}],
        }))
        .send()
        .await
        .expect("stream");
    assert_eq!(raw.status(), 200);
    assert!(
        raw.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        raw.headers()
    );
    let text = raw.text().await.expect("events");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 ", "{text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "stop"
    );
    // Unknown paths get OpenAI-style errors too.
    let (status, body) = get(&c, &format!("{base}/v1/nope")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_url"))
    );

    // The official client.
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&python)
            .arg(openai_dir().join("client.py"))
            .arg(format!("{base}/v1"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the openai client finished within 180 s")
    .expect("run the openai client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the openai client failed ({}):\n{stdout}\n{}\nn3 logs:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        n3.logs()
    );

    // The gateway's metrics in n3's registry.
    let text = c
        .get(format!("{}/metrics", n3.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let calls = |op: &str, outcome: &str| {
        metric(
            &text,
            &format!("nexus_gateway_calls_total{{op=\"{op}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert!(calls("stream", "ok") >= 4.0, "{text}");
    assert!(calls("infer", "ok") >= 2.0, "{text}");
    assert!(calls("stream", "unknown_model") >= 2.0, "{text}");
    assert!(
        metric(&text, "nexus_gateway_time_to_first_token_seconds_count") >= 4.0,
        "{text}"
    );
    assert!(
        metric(&text, "nexus_gateway_inter_token_seconds_count") >= 20.0,
        "{text}"
    );
    let http = |route: &str, status: u16| {
        metric(
            &text,
            &format!("nexus_gateway_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert!(http("/v1/chat/completions", 200) >= 4.0, "{text}");
    assert!(http("/v1/chat/completions", 400) >= 2.0, "{text}");
    assert!(http("/v1/chat/completions", 404) >= 2.0, "{text}");
    assert!(http("/v1/chat/completions", 503) >= 1.0, "{text}");
    assert!(http("/v1/embeddings", 200) >= 2.0, "{text}");
    assert!(http("/v1/models", 200) >= 1.0, "{text}");
    assert!(http("other", 404) >= 1.0, "{text}");

    // One trace across two nodes: n3's `gateway.request` sent its context in the NexAPI
    // REQUEST, and n1's `upstream.call` is its child. The nodes leave on SIGTERM, which flushes
    // the spans still queued.
    for node in [&mut n3, &mut n1] {
        node.sigterm();
        assert!(
            node.wait_exit(Duration::from_secs(20)).success(),
            "{} did not leave cleanly:\n{}",
            node.name,
            node.logs()
        );
    }
    let spans = spans.lock().expect("spans").clone();
    let of = |instance: &str, name: &str| -> Vec<otlp::Received> {
        spans
            .iter()
            .filter(|s| s.instance == instance && s.name == name)
            .cloned()
            .collect()
    };
    let gateway_spans = of("n3", "gateway.request");
    let upstream_spans = of("n1", "upstream.call");
    assert!(
        of("n1", "gateway.request").is_empty() && of("n3", "upstream.call").is_empty(),
        "spans on the wrong node: {spans:#?}"
    );
    let parent_of = |u: &otlp::Received| {
        gateway_spans
            .iter()
            .find(|g| g.trace_id == u.trace_id && g.span_id == u.parent_span_id)
            .cloned()
    };
    for (op, route) in [
        ("stream", "/v1/chat/completions"),
        ("infer", "/v1/embeddings"),
    ] {
        let joined: Vec<_> = upstream_spans
            .iter()
            .filter(|u| u.attributes.get("op").map(String::as_str) == Some(op))
            .filter(|u| u.attributes.get("outcome").map(String::as_str) == Some("ok"))
            .filter_map(|u| Some((u.clone(), parent_of(u)?)))
            .collect();
        assert!(
            !joined.is_empty(),
            "no {op} upstream.call on n1 is a child of a gateway.request on n3:\n\
             gateway: {gateway_spans:#?}\nupstream: {upstream_spans:#?}"
        );
        for (u, g) in &joined {
            assert_eq!(
                g.attributes.get("route").map(String::as_str),
                Some(route),
                "{g:?}"
            );
            assert_eq!(
                g.attributes.get("status").map(String::as_str),
                Some("200"),
                "{g:?}"
            );
            assert_eq!(
                u.attributes.get("upstream"),
                Some(&format!("http://127.0.0.1:{}", upstream.port)),
                "{u:?}"
            );
            assert_eq!(
                u.attributes.get("model"),
                g.attributes.get("model"),
                "{u:?} {g:?}"
            );
        }
    }
    // A call the service refused still ends its span, with the error code.
    assert!(
        upstream_spans
            .iter()
            .any(|u| u.attributes.get("outcome").map(String::as_str) == Some("unknown_model")),
        "{upstream_spans:#?}"
    );
}
