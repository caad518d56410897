//! Test harness: real `nexus node run` processes on loopback with ephemeral ports and temp data
//! dirs. Every process is killed when its handle drops, also when a test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Fast gossip timings so tests finish quickly; the failure-detection bound follows from them.
pub const PROBE_PERIOD_MS: u64 = 200;
pub const PROBE_RTT_MS: u64 = 80;
pub const SUSPECT_TO_DOWN_MS: u64 = 800;

pub fn fast_config(extra: &str) -> String {
    format!(
        "[gossip]\nprobe_period_ms = {PROBE_PERIOD_MS}\nprobe_rtt_ms = {PROBE_RTT_MS}\n\
         suspect_to_down_ms = {SUSPECT_TO_DOWN_MS}\njoin_retry_min_ms = 100\njoin_retry_max_ms = 1000\n{extra}"
    )
}

/// Worst-case detection time for a cluster of `members`, the same formula as
/// `MembershipConfig::detection_bound`.
pub fn detection_bound(members: u64) -> Duration {
    Duration::from_millis(PROBE_PERIOD_MS * members.max(2) + SUSPECT_TO_DOWN_MS + PROBE_PERIOD_MS)
}

pub fn nexus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
}

/// A running node process.
pub struct NodeProc {
    pub name: String,
    pub child: Child,
    pub admin: String,
    pub gossip: String,
    /// The data-plane address, or "off".
    pub dataplane: String,
    pub data_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nexus node run` and waits for its "node started" log line (which names the bound
/// admin and gossip addresses).
pub fn start_node(
    name: &str,
    data_dir: &Path,
    seeds: &[&str],
    config: &str,
    token: Option<&str>,
) -> NodeProc {
    let config_path = data_dir.with_extension("toml");
    std::fs::write(&config_path, config).expect("write config");
    let mut cmd = nexus();
    cmd.args([
        "node",
        "run",
        "--name",
        name,
        "--bind",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ])
    .args(["--log-format", "json", "--log-level", "info"])
    .arg("--config")
    .arg(&config_path)
    .arg("--data-dir")
    .arg(data_dir)
    .env_remove("RUST_LOG")
    .env_remove("NEXUS_ADMIN_TOKEN")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if !seeds.is_empty() {
        cmd.arg("--seeds").arg(seeds.join(","));
    }
    if let Some(t) = token {
        cmd.args(["--admin-token", t]);
    }
    let mut child = cmd.spawn().expect("spawn nexus");
    let stderr = child.stderr.take().expect("stderr");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Record the line before signalling, so a caller woken by the signal finds it.
            sink.lock().expect("logs").push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "node started"
            {
                let _ = tx.send((
                    v["admin"].as_str().unwrap_or_default().to_owned(),
                    v["gossip"].as_str().unwrap_or_default().to_owned(),
                    v["dataplane"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    });
    let mut node = NodeProc {
        name: name.into(),
        child,
        admin: String::new(),
        gossip: String::new(),
        dataplane: String::new(),
        data_dir: data_dir.into(),
        logs,
    };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((admin, gossip, dataplane)) => {
            node.admin = format!("http://{admin}");
            node.gossip = gossip;
            node.dataplane = dataplane;
            node
        }
        Err(_) => panic!(
            "{name} did not start; exit {:?}; logs:\n{}",
            node.child.try_wait(),
            node.logs.lock().expect("logs").join("\n")
        ),
    }
}

impl NodeProc {
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit; logs:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill -TERM");
    }

    pub fn sigkill(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("{}{path}", self.admin))
            .await
            .expect("GET");
        r.json().await.expect("json")
    }

    /// The node's Prometheus exposition text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn members(&self) -> Vec<Value> {
        self.get("/v1/members").await["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn state_of(&self, addr: &str) -> Option<String> {
        self.members()
            .await
            .into_iter()
            .find(|m| m["addr"] == addr)
            .and_then(|m| m["state"].as_str().map(str::to_owned))
    }

    /// Waits until this node sees exactly `n` alive members.
    pub async fn wait_alive(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let members = self.members().await;
            if members.iter().filter(|m| m["state"] == "alive").count() == n {
                return members;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {n} alive members: {members:#?}\nlogs:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `count` nodes, the first as the seed of the others, and waits for full membership.
pub async fn start_cluster(dir: &Path, count: usize, config: &str) -> Vec<NodeProc> {
    let mut nodes = vec![start_node("n1", &dir.join("n1"), &[], config, None)];
    let seed = nodes[0].gossip.clone();
    for i in 2..=count {
        nodes.push(start_node(
            &format!("n{i}"),
            &dir.join(format!("n{i}")),
            &[&seed],
            config,
            None,
        ));
    }
    for node in &nodes {
        node.wait_alive(count, Duration::from_secs(20)).await;
    }
    nodes
}

/// A UDP socket standing in for a next hop or a service: collects the NexLink frames sent to it.
pub struct Sink {
    pub socket: std::net::UdpSocket,
}

impl Sink {
    pub fn new() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Sink { socket }
    }

    pub fn addr(&self) -> String {
        self.socket.local_addr().expect("addr").to_string()
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().expect("addr").port()
    }

    /// Every frame that arrives until the socket stays quiet for 300 ms, parsed (checksum
    /// checked).
    pub fn drain(&self) -> Vec<nexus_dataplane::wire::nexlink::Repr> {
        use nexus_dataplane::wire::nexlink::{Packet, Repr};
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
            let packet = Packet::new_checked(&buf[..n]).expect("a whole frame");
            out.push(Repr::parse(&packet).expect("a valid frame"));
        }
        out
    }
}

/// Runs `nexus node run` to completion with its data dir at `dir/data`, the extra `args`, and
/// `config` (if any) written to `dir/nexus.toml`.
pub fn run_with_config(dir: &Path, args: &[&str], config: Option<&str>) -> std::process::Output {
    let data = dir.join("data");
    let mut cmd = nexus();
    cmd.args(["node", "run", "--data-dir"])
        .arg(&data)
        .args(args)
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    if let Some(text) = config {
        let path = dir.join("nexus.toml");
        std::fs::write(&path, text).expect("write");
        cmd.arg("--config").arg(path);
    }
    cmd.output().expect("run nexus")
}

/// The exit of a bad configuration: code 2, one line `error: <field>…`, nothing created.
pub fn assert_config_error(dir: &Path, out: &std::process::Output, field: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(
        lines[0].starts_with(&format!("error: {field}")),
        "names {field}: {stderr}"
    );
    assert!(!dir.join("data").exists(), "nothing created on bad config");
}

/// Asserts an RFC 9457 problem response: the status, `application/problem+json`, the type
/// `urn:nexus:problem:<kind>`, a matching `status` member and a non-empty `detail`; returns the
/// body.
pub async fn expect_problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
    let url = response.url().to_string();
    assert_eq!(response.status().as_u16(), status, "{url}");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{url}"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("urn:nexus:problem:{kind}"),
        "{url}: {body}"
    );
    assert_eq!(body["status"], status, "{url}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{url}: {body}"
    );
    body
}

impl NodeProc {
    /// The SDK's view of this node: its admin API and the NexAPI endpoint it reports.
    pub async fn nexapi_config(&self) -> nexus_api::NodeConfig {
        let api: std::net::SocketAddr = self.get("/v1/node").await["api"]
            .as_str()
            .expect("the node reports its NexAPI endpoint")
            .parse()
            .expect("address");
        nexus_api::NodeConfig::new(self.admin.clone(), api)
    }

    /// `POST path` with a JSON body: the status and the JSON answer (`null` if it is not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.admin))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Asserts that `url` refuses a 2 MiB JSON body with 413 `body-too-large`. The server answers
/// without reading the rest of the body and closes the connection, so the request gets a client
/// of its own: a pooled connection would be dead for the caller's next request.
pub async fn expect_body_too_large(url: &str) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .expect("send");
    expect_problem(response, 413, "body-too-large").await;
}

/// The python of a virtual environment with pinned requirements, made if missing (the P4
/// target's test support, where the P4Runtime test server's environment is made too).
#[allow(
    unused_imports,
    reason = "the pipeline bench includes this harness and makes no virtual environment"
)]
pub use nexus_p4::testkit::python_venv;

impl NodeProc {
    /// `POST path` with a JSON body, which must succeed (2xx); its JSON answer.
    pub async fn post_ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        answer
    }
}
