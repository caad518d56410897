//! Every class of bad configuration exits 2 with one error line naming the field, and creates
//! nothing.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use common::{assert_config_error, nexus, run_with_config as run};

#[test]
fn malformed_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&[&str], &str); 4] = [
        (&["--bind", "127.0.0.1"], "bind"),
        (&["--advertise", "nope:1"], "advertise"),
        (&["--admin", "127.0.0.1:http"], "admin"),
        (&["--seeds", "127.0.0.1:1,bad"], "seeds"),
    ];
    for (args, field) in cases {
        let out = run(dir.path(), args, None);
        assert_config_error(dir.path(), &out, field);
    }
}

#[test]
fn unknown_key_in_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(dir.path(), &[], Some("nmae = \"x\"\n"));
    assert_config_error(dir.path(), &out, "nmae");
    let out = run(dir.path(), &[], Some("[gossip]\nprobe_every_ms = 5\n"));
    assert_config_error(dir.path(), &out, "probe_every_ms");
}

#[test]
fn non_loopback_admin_without_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(dir.path(), &["--admin", "0.0.0.0:7700"], None);
    assert_config_error(dir.path(), &out, "admin_token");
}

#[test]
fn port_in_use() {
    let dir = tempfile::tempdir().expect("tmp");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let taken = udp.local_addr().expect("addr").to_string();
    let out = run(
        dir.path(),
        &["--bind", &taken, "--admin", "127.0.0.1:0"],
        None,
    );
    assert_config_error(dir.path(), &out, "bind");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let taken = tcp.local_addr().expect("addr").to_string();
    let out = run(
        dir.path(),
        &["--bind", "127.0.0.1:0", "--admin", &taken],
        None,
    );
    assert_config_error(dir.path(), &out, "admin");
}

#[test]
fn unusable_data_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    // A file where the data directory should be.
    std::fs::write(dir.path().join("data"), b"x").expect("write");
    let out = nexus()
        .args([
            "node",
            "run",
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: data_dir"), "{stderr}");
}

#[test]
fn bad_timings_and_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(
        dir.path(),
        &[],
        Some("[gossip]\nprobe_period_ms = 100\nprobe_rtt_ms = 500\n"),
    );
    assert_config_error(dir.path(), &out, "gossip.probe_rtt_ms");
    let out = run(dir.path(), &["--name", "two words"], None);
    assert_config_error(dir.path(), &out, "name");
}

#[test]
fn check_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "name = \"n1\"\nseeds = [\"127.0.0.1:7946\"]\n").expect("write");
    let out = nexus()
        .args(["node", "check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
}
