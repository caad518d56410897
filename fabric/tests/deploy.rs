//! Deployment packaging (fabric/deploy/, docs/deploy.md), checked with real tools and real nodes:
//!
//! - systemd readiness: a real `nexus node run` with `$NOTIFY_SOCKET` on a datagram socket
//!   bound here sends `READY=1` once its admin API answers with every actor running, then
//!   `WATCHDOG=1` at half `$WATCHDOG_USEC`, and `STOPPING=1` on SIGTERM before exiting 0;
//! - `NEXUS_GOSSIP_KEY` stands for `[gossip] encrypt_key` (a bad one exits 2 naming it; a good
//!   one seeds the keyring file; `node check` never prints it);
//! - the systemd unit passes `systemd-analyze verify` with no warning (and a typo in it does
//!   not) and `systemd-analyze security` rates it below 2.0;
//! - the node configs of the ConfigMap, the Helm chart, the image and the systemd example pass
//!   `nexus node check` with the flags the DaemonSets, the unit and the image give;
//! - fabric/deploy/validate.py: the Kubernetes manifests and the rendered Helm chart against the
//!   Kubernetes JSON schemas, `helm lint`, values.schema.json, chart/manifest equivalence and
//!   hadolint; and it refuses a broken manifest and a sloppy Dockerfile.
//!
//! The Python tools live in a virtual environment at `fabric/deploy/.venv` (`.ci/run` makes
//! it; this test makes it from fabric/deploy/requirements.txt if it is missing).

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{nexus, python_venv};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The virtual environment's python with fabric/deploy/requirements.txt, created if missing.
fn venv_python() -> PathBuf {
    let venv = deploy_dir().join(".venv");
    python_venv(&venv, &deploy_dir().join("requirements.txt"), |python| {
        Command::new(python)
            .args(["-c", "import kubernetes_validate, helm_python"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && venv.join("bin/hadolint").exists()
    })
}

fn validate(args: &[&str]) -> Output {
    output(
        Command::new(venv_python())
            .arg(deploy_dir().join("validate.py"))
            .args(args),
        "fabric/deploy/validate.py",
    )
}

#[test]
fn manifests_chart_and_dockerfile_validate() {
    let out = validate(&["all"]);
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "validate.py all failed:\n{report}");
    // Each family of checks ran (a check that silently did nothing would pass too).
    for line in [
        "DaemonSet/nexus-voter (Kubernetes 1.29.0, 1.37.0, strict)",
        "ok   helm lint --strict",
        "ok   values.yaml against values.schema.json",
        "ok   values.schema.json refuses bad values",
        "chart (default values): DaemonSet/nexus (Kubernetes",
        "Secret/nexus-secrets (Kubernetes",
        "ok   chart (default values) renders the objects of kubernetes/",
        "ok   hadolint",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
}

#[test]
fn broken_manifest_and_sloppy_dockerfile_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = std::fs::read_to_string(deploy_dir().join("kubernetes/daemonset.yaml"))
        .expect("daemonset.yaml");
    let cases = [
        // A port by name where a number is required.
        good.replace("containerPort: 7946", "containerPort: gossip"),
        // A misspelt field (strict validation).
        good.replace("maxUnavailable: 1", "maxUnavailible: 1"),
        // A field at the wrong level.
        good.replace(
            "      hostNetwork: true",
            "      hostNetwork: true\n      hostPort: 7946",
        ),
    ];
    for (i, broken) in cases.iter().enumerate() {
        assert_ne!(broken, &good, "case {i} changed nothing");
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, broken).expect("write");
        let out = validate(&["kube", path.to_str().expect("utf-8")]);
        assert!(
            !out.status.success(),
            "case {i} was accepted:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("FAIL"), "{}", text(&out));
    }
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nCMD nexus\n",
    )
    .expect("write");
    let out = validate(&["docker", dockerfile.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "hadolint accepted:\n{}", text(&out));
    assert!(text(&out).contains("DL3007"), "{}", text(&out));
}

#[test]
fn deploy_configs_pass_node_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    let out = validate(&["configs", configs.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&configs)
        .expect("configs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    files.push(deploy_dir().join("docker/nexus.toml"));
    files.push(deploy_dir().join("systemd/nexus.toml"));
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        let mut cmd = nexus();
        cmd.args(["node", "check", "--config"])
            .arg(file)
            .env_remove("NEXUS_ADMIN_TOKEN")
            .env(
                "NEXUS_GOSSIP_KEY",
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            )
            .args(["--data-dir"])
            .arg(dir.path().join("data"));
        if name.ends_with("nexus.toml") || name.ends_with("nexus-voter.toml") {
            // What the DaemonSets add, with a host IP of the docs' examples (`node check` binds
            // nothing). The seeds' cluster DNS name does not resolve here: an IP stands in.
            if !file.starts_with(deploy_dir()) {
                cmd.args([
                    "--name=node-a.example",
                    "--bind=10.0.0.11:7946",
                    "--admin=10.0.0.11:7700",
                    "--dataplane=10.0.0.11:7000",
                    "--seeds=10.0.0.12:7946",
                ])
                .env("NEXUS_ADMIN_TOKEN", "tok-0123456789abcdef");
            }
        }
        if name.ends_with("nexus-voter.toml") {
            cmd.arg("--ca-raft-listen=10.0.0.11:7801");
        }
        if file.ends_with("docker/nexus.toml") {
            cmd.args(["--name=n1", "--advertise=127.0.0.1:7946"]);
        }
        let out = output(&mut cmd, "nexus node check");
        let said = text(&out);
        assert!(out.status.success(), "{}: {said}", file.display());
        assert!(said.contains("configuration ok"), "{said}");
        assert!(
            !said.contains("AQEBAQEBAQEBAQEB"),
            "node check printed the gossip key: {said}"
        );
        assert!(
            !said.contains("tok-0123"),
            "node check printed the token: {said}"
        );
        if name.ends_with("nexus-voter.toml") {
            assert!(said.contains("voter: true"), "{said}");
        }
    }
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/nexus.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/nexus node run"));
    let dir = tempfile::tempdir().expect("tmp");
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = unit.replace("/usr/local/bin/nexus", env!("CARGO_BIN_EXE_nexus"));
    let path = dir.path().join("nexus.service");
    std::fs::write(&path, &unit).expect("write");
    let verify = |path: &Path| {
        output(
            Command::new("systemd-analyze").arg("verify").arg(path),
            "systemd-analyze verify (Debian package systemd)",
        )
    };
    let out = verify(&path);
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    // Exposure on systemd's 0-100 scale (shown as 0.0-10.0): 20 is "OK".
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(&path),
        "systemd-analyze security",
    );
    assert!(out.status.success(), "exposure above 2.0:\n{}", text(&out));
    // A typo is reported (systemd only warns, so verify's output is what fails).
    let broken = dir.path().join("broken").join("nexus.service");
    std::fs::create_dir_all(broken.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &broken,
        unit.replace("ProtectSystem=strict", "ProtectSystem=strictt"),
    )
    .expect("write");
    let out = verify(&broken);
    assert!(text(&out).contains("strictt"), "{}", text(&out));
}

/// A `nexus node run` process killed on drop, with its stderr lines collected.
struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    logs: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        Self::start_logging(data_dir, env, "info")
    }

    fn start_logging(data_dir: &Path, env: &[(&str, &str)], filter: &str) -> Node {
        Self::start_with(data_dir, env, filter, &[])
    }

    fn start_with(data_dir: &Path, env: &[(&str, &str)], filter: &str, args: &[&str]) -> Node {
        let mut cmd = nexus();
        cmd.args([
            "node",
            "run",
            "--name",
            "deploy",
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            filter,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NEXUS_GOSSIP_KEY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nexus");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            logs: Vec::new(),
        }
    }

    /// Waits for the "node started" line and returns the admin address it names.
    fn admin(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.logs.push(line.clone());
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "node started"
                {
                    return v["admin"].as_str().expect("admin").to_owned();
                }
            }
        }
        panic!("no \"node started\"; logs:\n{}", self.logs.join("\n"));
    }

    fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill -TERM");
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET path` over plain HTTP/1.1: (status code, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path)
}

/// `method path` without a body over plain HTTP/1.1: (status code, body).
fn http(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, response))
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut node = Node::start_logging(
        &dir.path().join("data"),
        &[
            ("NOTIFY_SOCKET", path.to_str().expect("utf-8")),
            // WatchdogSec=0.4s: a ping every 200 ms.
            ("WATCHDOG_USEC", "400000"),
        ],
        // The supervisor logs each child's start at debug level.
        "info,nexus_actors::supervisor=debug",
    );
    let first = recv(&socket);
    // The admin API must answer at once, with every actor running, when READY=1 arrives.
    let admin = node.admin();
    let (code, body) = http_get(&admin, "/v1/health").expect("the admin API answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");
    assert!(
        first.starts_with("READY=1\n"),
        "first notification: {first:?}"
    );
    assert!(first.contains("STATUS=serving"), "{first:?}");
    assert!(first.contains(&admin), "{first:?}");

    // Every actor had started before READY=1 was sent: the supervisor logs each start (debug)
    // before it starts the next child, and the node logs the notification after sending it, so
    // the log's order is the order of events.
    let deadline = Instant::now() + Duration::from_secs(5);
    let told = |logs: &[String]| {
        logs.iter()
            .position(|l| l.contains("told the service manager READY=1"))
    };
    // Read until both the notification and the last child's start (api) are logged.
    while (told(&node.logs).is_none() || !node.logs.iter().any(|l| l.contains(r#""actor":"api""#)))
        && Instant::now() < deadline
    {
        if let Ok(line) = node.lines.recv_timeout(Duration::from_millis(100)) {
            node.logs.push(line);
        }
    }
    let told = told(&node.logs).expect("the node logs the READY=1 notification");
    let starts: Vec<(usize, String)> = node
        .logs
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let actor = v["actor"].as_str()?.to_owned();
            (v["message"] == "actor started").then_some((i, actor))
        })
        .collect();
    let names: Vec<&str> = starts.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains(&"admin") && names.contains(&"api"),
        "{names:?}; logs:\n{}",
        node.logs.join("\n")
    );
    for (i, actor) in &starts {
        assert!(
            *i < told,
            "{actor} started after READY=1 was sent; logs:\n{}",
            node.logs.join("\n")
        );
    }

    let started = Instant::now();
    let second = recv(&socket);
    assert_eq!(second, "WATCHDOG=1");
    assert!(started.elapsed() < Duration::from_secs(2));

    node.sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = recv(&socket);
        if n.starts_with("STOPPING=1") {
            break;
        }
        assert_eq!(n, "WATCHDOG=1", "unexpected notification before STOPPING=1");
        assert!(Instant::now() < deadline, "no STOPPING=1 after SIGTERM");
    }
    let status = node.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "a graceful leave exits 0");
    // Nothing after STOPPING=1 but possibly one last watchdog ping; never READY again.
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    while let Ok(len) = socket.recv(&mut buf) {
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}

#[test]
fn without_notify_socket_nothing_changes_and_a_bad_one_is_only_a_warning() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(
        &dir.path().join("data"),
        &[("NOTIFY_SOCKET", "vsock:2:1234")],
    );
    let admin = node.admin();
    let (code, _) = http_get(&admin, "/v1/health").expect("answers");
    assert!(code == 200 || code == 503, "{code}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut warned = false;
    while !warned && Instant::now() < deadline {
        if let Ok(line) = node.lines.recv_timeout(Duration::from_millis(100)) {
            warned = line.contains("not notifying the service manager");
            node.logs.push(line);
        }
    }
    assert!(warned, "no warning; logs:\n{}", node.logs.join("\n"));
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn gossip_key_from_the_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    // A bad key: exit 2, the variable named, nothing created.
    let out = output(
        nexus()
            .args(["node", "check", "--data-dir"])
            .arg(dir.path().join("unused"))
            .env("NEXUS_GOSSIP_KEY", "c2hvcnQ="),
        "nexus node check",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("error: gossip.encrypt_key: NEXUS_GOSSIP_KEY: "),
        "{said}"
    );
    // A good key seeds the keyring file on the first start.
    let key = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let data = dir.path().join("data");
    let mut node = Node::start(&data, &[("NEXUS_GOSSIP_KEY", key)]);
    node.admin();
    let keyring = std::fs::read_to_string(data.join("keyring.json")).expect("keyring.json");
    assert!(keyring.contains(key), "{keyring}");
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn ctl_health_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    // Fault injection, and restarts slow enough to see an actor restarting.
    let config = dir.path().join("nexus.toml");
    std::fs::write(
        &config,
        "[debug]\nfault_injection = true\n[supervisor]\nbackoff_min_ms = 4000\nbackoff_max_ms = 4000\n",
    )
    .expect("config");
    let mut node = Node::start_with(
        &dir.path().join("data"),
        &[],
        "info",
        &["--config", config.to_str().expect("utf-8")],
    );
    let admin = node.admin();
    let health = || {
        output(
            nexus()
                .args(["ctl", "--admin", &format!("http://{admin}"), "health"])
                .env_remove("NEXUS_ADMIN")
                .env_remove("NEXUS_ADMIN_TOKEN"),
            "nexus ctl health",
        )
    };
    // Every actor runs: 0 (after "node started" the last children may still be starting).
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = health();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("ok\n") && said.contains("registry"),
        "{said}"
    );
    // An actor restarting: 503 degraded, exit 1.
    let (code, body) = http(&admin, "POST", "/v1/debug/crash/registry").expect("crash");
    assert!(code < 300, "{code} {body}");
    // The supervisor learns of the exit just after the crash call returns: ask until it has
    // (the restart waits 4 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    let out = loop {
        let out = health();
        if out.status.code() != Some(0) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("degraded"), "{}", text(&out));
    // The node gone: unreachable, exit 3.
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let out = health();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
