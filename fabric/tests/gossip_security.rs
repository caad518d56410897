//! Gossip encryption with real `nexus` processes on loopback.
//!
//! - An encrypted fabric (three nodes, one key) ignores well-formed SWIM joins, suspicions and
//!   down notices, a forged restart and leave of a member, and overlay messages, sent with no
//!   key and with a wrong key (built with the gossip crate's own cores, then sent from the
//!   test's socket); the nodes count the drops by reason. Then the key is rotated with the real
//!   `nexus ctl keyring` (install, use, a refused remove of the primary, remove), and datagrams
//!   sealed under the removed key are refused.
//! - A plaintext fabric accepts the same forged join (the control: the attack works without a
//!   key), takes in a node with a key and `verify_incoming = false`, moves to sealing, and
//!   refuses plaintext once `verify_incoming` is on.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use nexus_gossip::{
    DatagramGuard, GuardConfig, Keyring, MemberId, MemberMeta, Membership, MembershipConfig,
    NodeId, Overlay, OverlayConfig, SecretKey, Timestamp,
};
use serde_json::Value;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes([byte; 32])
}

fn encrypted_config(key: &SecretKey, extra: &str) -> String {
    fast_config(&format!("encrypt_key = \"{}\"\n{extra}", key.to_base64()))
}

fn node_id(hex: &str) -> NodeId {
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex node id");
    }
    NodeId(id)
}

/// A member as the fabric reports it, turned back into the identity its datagrams carry.
fn identity_of(row: &Value, generation_bump: u64) -> MemberId {
    MemberId::new(
        row["addr"].as_str().expect("addr").parse().expect("addr"),
        node_id(row["id"].as_str().expect("id")),
        row["incarnation"].as_u64().expect("incarnation") + generation_bump,
        MemberMeta::new(row["name"].as_str().expect("name"), None, "forged", vec![]).expect("meta"),
    )
}

fn fast_membership() -> MembershipConfig {
    MembershipConfig {
        probe_period: Duration::from_millis(PROBE_PERIOD_MS),
        probe_rtt: Duration::from_millis(PROBE_RTT_MS),
        suspect_to_down: Duration::from_millis(SUSPECT_TO_DOWN_MS),
        ..MembershipConfig::default()
    }
}

/// In-memory SWIM cores exchanging datagrams in simulated time; records every datagram sent.
struct Mesh {
    cores: Vec<Membership>,
    /// Cores whose datagrams are lost (in and out).
    cut: BTreeSet<SocketAddr>,
    now_us: u64,
    sent: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Mesh {
    fn new(cores: Vec<Membership>) -> Self {
        Mesh {
            cores,
            cut: BTreeSet::new(),
            now_us: 0,
            sent: Vec::new(),
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.now_us)
    }

    fn run(&mut self, ms: u64) {
        let end = self.now_us + ms * 1000;
        while self.now_us < end {
            self.now_us += 5_000;
            let now = self.now();
            let mut queue = Vec::new();
            for core in &mut self.cores {
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    core.handle_timeout(now);
                }
                let from = core.identity().addr();
                while let Some(t) = core.poll_transmit() {
                    queue.push((from, t.dst, t.payload));
                }
            }
            for (from, dst, payload) in queue {
                self.sent.push((from, dst, payload.clone()));
                if self.cut.contains(&from) || self.cut.contains(&dst) {
                    continue;
                }
                if let Some(core) = self.cores.iter_mut().find(|c| c.identity().addr() == dst) {
                    let _ = core.handle_datagram(now, from, &payload);
                }
            }
        }
    }

    /// Datagrams core `from` sent to `dst`.
    fn sent_by(&self, from: SocketAddr, dst: SocketAddr) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|(f, d, _)| *f == from && *d == dst)
            .map(|(_, _, p)| p.clone())
            .collect()
    }
}

/// Well-formed plaintext datagrams an attacker at `me` would send to `target` (a member, `rows`
/// its member list), by kind.
struct Forged {
    /// A stranger's SWIM join.
    join: Vec<Vec<u8>>,
    /// A stranger's SWIM traffic that suspects and then declares `victim` down.
    down: Vec<Vec<u8>>,
    /// `victim` restarted (a newer generation) and leaving, as a forged member would say it.
    leave: Vec<Vec<u8>>,
    /// A HyParView join and a direct overlay message from a stranger.
    overlay: Vec<Vec<u8>>,
}

impl Forged {
    fn all(&self) -> Vec<Vec<u8>> {
        [&self.join, &self.down, &self.leave, &self.overlay]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

fn forge(me: SocketAddr, target: &Value, victim: &Value, seed: u64) -> Forged {
    let target_id = identity_of(target, 0);
    let target_addr = target_id.addr();
    let stranger = |port_offset: u16, name: &str| {
        MemberId::new(
            SocketAddr::new(me.ip(), me.port().wrapping_add(port_offset)),
            NodeId([seed as u8 ^ port_offset as u8; 32]),
            1,
            MemberMeta::new(name, None, "forged", vec![]).expect("meta"),
        )
    };
    let t0 = Timestamp::from_micros(0);

    // A stranger joins: its first datagrams to the target.
    let mut intruder = Membership::new(stranger(0, "intruder"), fast_membership(), seed);
    intruder.join(t0, &[target_addr]);
    let mut join = Vec::new();
    while let Some(t) = intruder.poll_transmit() {
        join.push(t.payload);
    }

    // A stranger that sees the victim stop answering and declares it down.
    let accuser = stranger(0, "accuser");
    let accuser_addr = accuser.addr();
    let victim_id = identity_of(victim, 0);
    let victim_addr = victim_id.addr();
    let mut mesh = Mesh::new(vec![
        Membership::new(accuser, fast_membership(), seed + 1),
        Membership::new(target_id.clone(), fast_membership(), seed + 2),
        Membership::new(victim_id.clone(), fast_membership(), seed + 3),
    ]);
    let now = mesh.now();
    mesh.cores[0].join(now, &[target_addr]);
    mesh.cores[2].join(now, &[target_addr]);
    mesh.run(2_000);
    mesh.sent.clear();
    mesh.cut.insert(victim_addr);
    mesh.run(4_000);
    let down = mesh.sent_by(accuser_addr, target_addr);

    // The victim "restarts" (newer generation, forged metadata) and leaves.
    let mut mesh = Mesh::new(vec![
        Membership::new(identity_of(victim, 1), fast_membership(), seed + 4),
        Membership::new(target_id, fast_membership(), seed + 5),
    ]);
    let now = mesh.now();
    mesh.cores[0].join(now, &[target_addr]);
    mesh.run(1_000);
    let now = mesh.now();
    mesh.cores[0].leave(now);
    mesh.run(200);
    let leave = mesh.sent_by(victim_addr, target_addr);

    // Overlay: a HyParView join and a direct message.
    let mut overlay_core = Overlay::new(me, OverlayConfig::default(), seed);
    overlay_core.join(t0, target_addr);
    overlay_core
        .send_direct(target_addr, b"forged anti-entropy".to_vec())
        .expect("direct message");
    let mut overlay = Vec::new();
    while let Some(t) = overlay_core.poll_transmit() {
        overlay.push(t.payload);
    }

    assert!(!join.is_empty() && !down.is_empty() && !leave.is_empty() && !overlay.is_empty());
    Forged {
        join,
        down,
        leave,
        overlay,
    }
}

fn seal_all(key: &SecretKey, datagrams: &[Vec<u8>], seed: u8) -> Vec<Vec<u8>> {
    let mut guard = DatagramGuard::new(
        GuardConfig::encrypted(Keyring::new(key.clone())),
        [seed; 32],
    );
    datagrams.iter().map(|d| guard.outgoing(d)).collect()
}

fn send_all(socket: &UdpSocket, to: &str, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        socket.send_to(d, to).expect("send");
        // Keep them apart so none is lost to a full receive buffer.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The value of one Prometheus sample (`name{labels}`), 0 if absent.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn dropped(metrics: &str, reason: &str) -> u64 {
    sample(
        metrics,
        &format!("nexus_gossip_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// Every node still sees exactly the original members, all alive, with their generations.
async fn assert_members_unchanged(nodes: &[NodeProc], before: &[(String, u64)]) {
    for node in nodes {
        let members = node.members().await;
        let now: Vec<(String, u64, String)> = members
            .iter()
            .map(|m| {
                (
                    m["addr"].as_str().unwrap_or_default().to_owned(),
                    m["incarnation"].as_u64().unwrap_or_default(),
                    m["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, String)> = before
            .iter()
            .map(|(a, g)| (a.clone(), *g, "alive".to_owned()))
            .collect();
        let mut sorted = now.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "{}'s members changed", node.name);
    }
}

fn ctl(admin: &str, args: &[&str]) -> std::process::Output {
    nexus()
        .args(["ctl", "--admin", admin, "--json", "keyring"])
        .args(args)
        .env_remove("NEXUS_ADMIN_TOKEN")
        .output()
        .expect("run nexus ctl")
}

fn ctl_ok(admin: &str, args: &[&str]) -> Value {
    let out = ctl(admin, args);
    assert!(
        out.status.success(),
        "nexus ctl keyring {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl --json output")
}

/// `(members holding it, members sealing with it)` for `key` in a keyring answer.
fn count(answer: &Value, key: &SecretKey) -> (u64, u64) {
    answer["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["key"] == key.to_base64())
        .map_or((0, 0), |k| {
            (
                k["members"].as_u64().unwrap_or(0),
                k["primary"].as_u64().unwrap_or(0),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_fabric_ignores_outsiders_and_rotates_its_key() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");

    // A bad key is a config error naming the key, before anything is created.
    let bad = tempfile::tempdir().expect("tmp");
    let out = run_with_config(
        bad.path(),
        &[],
        Some("[gossip]\nencrypt_key = \"c2hvcnQ=\"\n"),
    );
    assert_config_error(bad.path(), &out, "gossip.encrypt_key");

    let k1 = key(1);
    let nodes = start_cluster(dir.path(), 3, &encrypted_config(&k1, "")).await;
    let rows = nodes[0].members().await;
    let mut before: Vec<(String, u64)> = rows
        .iter()
        .map(|m| {
            (
                m["addr"].as_str().expect("addr").to_owned(),
                m["incarnation"].as_u64().expect("incarnation"),
            )
        })
        .collect();
    before.sort();
    let row = |node: &NodeProc| -> Value {
        rows.iter()
            .find(|m| m["addr"] == node.gossip.as_str())
            .cloned()
            .expect("member row")
    };

    // The keyring file was written in the data directory, owner-only.
    let file = nodes[0].data_dir.join("keyring.json");
    let text = std::fs::read_to_string(&file).expect("keyring.json");
    assert!(text.contains(&k1.to_base64()), "{text}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "keyring file is owner-only: {mode:o}");
    }

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = attacker.local_addr().expect("addr");
    let forged = forge(me, &row(&nodes[0]), &row(&nodes[1]), 7);
    let forged_for_n3 = forge(me, &row(&nodes[2]), &row(&nodes[1]), 8);
    let plain = forged.all();
    let wrong = seal_all(&key(9), &plain, 3);
    let m0 = nodes[0].metrics().await;
    send_all(&attacker, &nodes[0].gossip, &plain);
    send_all(&attacker, &nodes[0].gossip, &wrong);
    send_all(&attacker, &nodes[2].gossip, &forged_for_n3.all());
    // Give the nodes several probe periods to act on anything that got through.
    tokio::time::sleep(Duration::from_millis(4 * PROBE_PERIOD_MS)).await;
    let m1 = nodes[0].metrics().await;
    assert_eq!(
        dropped(&m1, "plaintext_refused") - dropped(&m0, "plaintext_refused"),
        plain.len() as u64,
        "every plaintext datagram dropped as plaintext"
    );
    assert_eq!(
        dropped(&m1, "no_key") - dropped(&m0, "no_key"),
        wrong.len() as u64,
        "every wrong-key datagram dropped as no_key"
    );
    assert!(
        dropped(&nodes[2].metrics().await, "plaintext_refused") >= forged_for_n3.all().len() as u64
    );
    assert!(sample(&m1, "nexus_gossip_sealed_total") > 0);
    assert!(sample(&m1, "nexus_gossip_opened_total") > 0);
    assert_eq!(sample(&m1, "nexus_gossip_plaintext_in_total"), 0);
    assert_members_unchanged(&nodes, &before).await;
    for node in &nodes {
        let overlay = node.get("/v1/overlay").await;
        let views = format!("{} {}", overlay["active"], overlay["passive"]);
        assert!(!views.contains(&me.to_string()), "{}: {views}", node.name);
    }

    // Datagrams an insider sealed under the current key, kept for replay after the rotation.
    let captured = seal_all(&k1, &forged.join, 4);

    // Rotation through the real CLI.
    let out = nexus().arg("keygen").output().expect("nexus keygen");
    assert!(out.status.success());
    let k2_text = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    let k2: SecretKey = k2_text.parse().expect("keygen prints a key");
    let admin = nodes[0].admin.as_str();

    let a = ctl_ok(admin, &["list"]);
    assert_eq!(
        (a["members"].as_u64(), a["responded"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(count(&a, &k1), (3, 3));

    let a = ctl_ok(admin, &["install", &k2_text]);
    assert_eq!(a["responded"], 3, "{a}");
    assert_eq!(count(&a, &k1), (3, 3));
    assert_eq!(count(&a, &k2), (3, 0));

    let a = ctl_ok(admin, &["use", &k2_text]);
    assert_eq!(count(&a, &k1), (3, 0));
    assert_eq!(count(&a, &k2), (3, 3));

    // Removing the primary key is refused by every member, with the reason.
    let out = ctl(admin, &["remove", &k2_text]);
    assert!(!out.status.success());
    let a: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(a["refused"].as_array().map(Vec::len), Some(3), "{a}");
    assert!(
        a["refused"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot remove the primary key")),
        "{a}"
    );
    assert_eq!(count(&a, &k2), (3, 3));
    // An unknown key is refused by the CLI before it asks anyone.
    let out = ctl(admin, &["install", "not-a-key"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("base64"));

    let a = ctl_ok(nodes[1].admin.as_str(), &["remove", &k1.to_base64()]);
    assert_eq!(a["keys"].as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(count(&a, &k2), (3, 3));
    assert_eq!(a["complete"], true);
    for node in &nodes {
        let text = std::fs::read_to_string(node.data_dir.join("keyring.json")).expect("file");
        assert!(
            text.contains(&k2_text) && !text.contains(&k1.to_base64()),
            "{text}"
        );
    }

    // The fabric stays whole under the new key, and the old key opens nothing any more.
    tokio::time::sleep(Duration::from_millis(3 * PROBE_PERIOD_MS)).await;
    assert_members_unchanged(&nodes, &before).await;
    let m2 = nodes[0].metrics().await;
    send_all(&attacker, &nodes[0].gossip, &captured);
    tokio::time::sleep(Duration::from_millis(2 * PROBE_PERIOD_MS)).await;
    let m3 = nodes[0].metrics().await;
    assert_eq!(
        dropped(&m3, "no_key") - dropped(&m2, "no_key"),
        captured.len() as u64,
        "datagrams sealed under the removed key are refused"
    );
    assert_members_unchanged(&nodes, &before).await;
    eprintln!("encrypted fabric test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_fabric_migrates_to_encryption() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let plain_config = fast_config("");
    let mut nodes = start_cluster(dir.path(), 2, &plain_config).await;
    let k = key(5);

    // Control: without a key, the forged join is taken in.
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = attacker.local_addr().expect("addr");
    let rows = nodes[0].members().await;
    let forged = forge(me, &rows[0], &rows[1], 11);
    send_all(&attacker, &nodes[0].gossip, &forged.join);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nodes[0]
        .members()
        .await
        .iter()
        .any(|m| m["name"] == "intruder")
    {
        assert!(
            Instant::now() < deadline,
            "plaintext fabric never took the forged join"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A node with the key and verify_incoming = false (still sending plaintext) joins.
    let migrating = encrypted_config(&k, "verify_incoming = false\nverify_outgoing = false\n");
    let seed = nodes[0].gossip.clone();
    nodes.push(start_node(
        "n3",
        &dir.path().join("n3"),
        &[&seed],
        &migrating,
        None,
    ));
    for node in &nodes {
        node.wait_alive(3, Duration::from_secs(10)).await;
    }
    assert!(sample(&nodes[2].metrics().await, "nexus_gossip_plaintext_in_total") > 0);

    // Every node gets the key and seals; plaintext is still accepted.
    let sealing = encrypted_config(&k, "verify_incoming = false\n");
    for i in 0..2 {
        let data_dir = nodes[i].data_dir.clone();
        let name = nodes[i].name.clone();
        let seed = nodes[2].gossip.clone();
        nodes[i].sigkill();
        nodes[i] = start_node(&name, &data_dir, &[&seed], &sealing, None);
        nodes[i].wait_alive(3, Duration::from_secs(10)).await;
    }
    let data_dir = nodes[2].data_dir.clone();
    let seed = nodes[0].gossip.clone();
    nodes[2].sigkill();
    // Then verify_incoming: the last node refuses plaintext.
    nodes[2] = start_node("n3", &data_dir, &[&seed], &encrypted_config(&k, ""), None);
    for node in &nodes {
        node.wait_alive(3, Duration::from_secs(10)).await;
    }
    let m = nodes[2].metrics().await;
    assert!(sample(&m, "nexus_gossip_opened_total") > 0);
    assert_eq!(sample(&m, "nexus_gossip_plaintext_in_total"), 0);
    assert!(sample(&nodes[0].metrics().await, "nexus_gossip_sealed_total") > 0);

    let target = nodes[2]
        .members()
        .await
        .into_iter()
        .find(|m| m["local"] == true)
        .expect("local row");
    // A second attacker address: the first one is still in the plaintext nodes' history.
    let attacker2 = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me2 = attacker2.local_addr().expect("addr");
    let forged = forge(me2, &target, &rows[1], 12);
    let before = dropped(&m, "plaintext_refused");
    send_all(&attacker2, &nodes[2].gossip, &forged.join);
    tokio::time::sleep(Duration::from_millis(3 * PROBE_PERIOD_MS)).await;
    let m = nodes[2].metrics().await;
    assert_eq!(
        dropped(&m, "plaintext_refused") - before,
        forged.join.len() as u64
    );
    assert!(
        !nodes[2]
            .members()
            .await
            .iter()
            .any(|m| m["addr"] == me2.to_string().as_str()),
        "a node with verify_incoming takes no plaintext join"
    );
    eprintln!("migration test took {:?}", started.elapsed());
}
