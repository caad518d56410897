//! The admin API's OpenAPI document is true: schemathesis, an independent fuzzer, reads
//! `GET /v1/openapi.json` from a real node (ACLs on, one of three CA voters, so the CA routes
//! answer) and sends generated requests to every operation with every check (`--checks all`):
//! each answer's status, media type, headers and body must be documented, schema-valid input
//! accepted, schema-invalid input refused, and an operation that declares security must refuse
//! a request without the token. Any failure fails this test.
//!
//! schemathesis runs in a virtual environment at `fabric/tests/schemathesis/.venv`, created
//! with `python3 -m venv` and the pinned requirements if it is missing (`.ci/run` creates it).
//! The run is reproducible: a fixed seed and at most 20 examples per operation. Its settings
//! file, `fabric/tests/schemathesis/schemathesis.toml`, lists the operations whose cross-field
//! rules JSON Schema cannot state. Left out of the run, because they would end it:
//! `POST /v1/leave` (the node leaves and exits) and `POST /v1/ca/voters`,
//! `DELETE /v1/ca/voters/{id}` (a generated voter that does not exist would join the CA group
//! and take its quorum; removing a voter breaks it), and `GET /v1/services/{id}/link` (a link
//! to a registered service is an answer that never ends by design: heartbeats keep it open for
//! as long as the client holds it; `tests/registry.rs` tests its answers).

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod ca_common;
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

const TOKEN: &str = "schemathesis-bootstrap-token";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

/// The virtual environment's `schemathesis`, installed from the pinned requirements if missing.
fn schemathesis() -> PathBuf {
    let dir = dir();
    let bin = dir.join(".venv/bin/schemathesis");
    python_venv(&dir.join(".venv"), &dir.join("requirements.txt"), |_| {
        bin.exists()
    });
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_against_a_live_node() {
    let bin = schemathesis();
    let root = tempfile::tempdir().expect("tmp");
    let c = ca_common::http();
    let mut voters = vec![start_node(
        "v1",
        &root.path().join("v1"),
        &[],
        &ca_common::voter_config("127.0.0.1:0"),
        Some(TOKEN),
    )];
    let seed = voters[0].gossip.clone();
    for name in ["v2", "v3"] {
        voters.push(start_node(
            name,
            &root.path().join(name),
            &[&seed],
            &ca_common::voter_config("127.0.0.1:0"),
            Some(TOKEN),
        ));
    }
    let node = &voters[0];
    let status = format!("{}/v1/ca/status", node.admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let answer = c.get(&status).bearer_auth(TOKEN).send().await;
        if let Ok(r) = answer
            && let Ok(body) = r.json::<serde_json::Value>().await
            && body["bootstrapped"] == true
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CA did not bootstrap; logs:\n{}",
            node.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = Command::new(&bin)
        .arg("--config-file")
        .arg(dir().join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/v1/openapi.json", node.admin))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--exclude-path", "/v1/leave"])
        .args(["--exclude-path", "/v1/ca/voters"])
        .args(["--exclude-path", "/v1/ca/voters/{id}"])
        .args(["--exclude-path", "/v1/services/{id}/link"])
        .args(["--seed", "7", "--max-examples", "20", "--workers", "2"])
        .args(["--request-timeout", "10"])
        .arg("--report-dir")
        .arg(root.path().join("report"))
        .env("NO_COLOR", "1")
        // Its caches (.hypothesis, .schemathesis) go to the temporary directory.
        .current_dir(root.path())
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis reported failures (exit {}):\n{stdout}\n{stderr}\nnode logs:\n{}",
        out.status,
        node.logs()
    );
    assert!(
        stdout.contains(" passed"),
        "schemathesis tested nothing:\n{stdout}"
    );
    // The node came through the run and still refuses a request without its token.
    let health = c
        .get(format!("{}/v1/health", node.admin))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200, "{}", node.logs());
    let members = c
        .get(format!("{}/v1/members", node.admin))
        .send()
        .await
        .expect("members");
    assert_eq!(members.status().as_u16(), 401);
}
