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

/// A self-signed certificate and its key, written to `dir/<tag>.crt` and `dir/<tag>.key`.
fn tls_pair(dir: &std::path::Path, tag: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (c, k) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn bad_admin_tls_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = tempfile::tempdir().expect("tmp");
    let (cert, key) = tls_pair(files.path(), "a");
    let (_, other_key) = tls_pair(files.path(), "b");
    let garbage = files.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").expect("write");
    let garbage = garbage.display().to_string();
    let text = files.path().join("text.pem");
    std::fs::write(&text, "just text\n").expect("write");
    let text = text.display().to_string();
    let missing = files.path().join("missing.pem").display().to_string();
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["--admin-tls-cert", &missing, "--admin-tls-key", &key],
            "admin_tls_cert",
            "cannot read",
        ),
        (
            &["--admin-tls-cert", &garbage, "--admin-tls-key", &key],
            "admin_tls_cert",
            "has no -----END NOTHING----- line",
        ),
        (
            &["--admin-tls-cert", &text, "--admin-tls-key", &key],
            "admin_tls_cert",
            "holds no PEM certificate",
        ),
        (
            &["--admin-tls-cert", &cert, "--admin-tls-key", &garbage],
            "admin_tls_key",
            "private key",
        ),
        (
            &["--admin-tls-cert", &cert, "--admin-tls-key", &cert],
            "admin_tls_key",
            "private key",
        ),
        (
            &["--admin-tls-cert", &cert, "--admin-tls-key", &other_key],
            "admin_tls_key",
            "does not match",
        ),
        (
            &["--admin-tls-cert", &cert, "--admin-tls-key", &missing],
            "admin_tls_key",
            "cannot read",
        ),
    ];
    for (args, field, says) in cases {
        let out = run(dir.path(), args, None);
        assert_config_error(dir.path(), &out, field);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // One without the other, in the file.
    let out = run(
        dir.path(),
        &[],
        Some(&format!("admin_tls_cert = {cert:?}\n")),
    );
    assert_config_error(dir.path(), &out, "admin_tls_key");
    let out = run(dir.path(), &[], Some(&format!("admin_tls_key = {key:?}\n")));
    assert_config_error(dir.path(), &out, "admin_tls_cert");
}

#[test]
fn malformed_acl_token_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(
        data.join("acl_tokens.json"),
        b"{\"format\": \"nexus-acl-tokens\"",
    )
    .expect("write");
    let out = run(
        dir.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--api",
            "off",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: data_dir"), "{stderr}");
    assert!(last.contains("acl_tokens.json"), "{stderr}");
}
