//! The CA with real `nexus` processes: three voters form the group and bootstrap it, outsiders
//! speaking Raft to a voter's port (plain TCP, TLS with an unknown key) are refused and mint
//! nothing, certificates survive a SIGKILL of the leader (read back from a survivor and from the
//! restarted node), a revocation committed on one node reaches a fourth, non-voting node, every
//! node holds its own MIC, and the CA API answers bad input with problem+json while the node
//! keeps serving.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod ca_common;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ca_common::*;
use common::expect_problem;
use serde_json::json;

/// Bound on a revocation reaching a non-voter (gossip first; the 500 ms poll is the backstop).
const REVOCATION_BOUND: Duration = Duration::from_secs(5);
/// Bound on a new leader after the old one is killed (election timeout ≤ 500 ms, plus
/// detection and retries).
const ELECTION_BOUND: Duration = Duration::from_secs(10);

async fn issue_ok(c: &reqwest::Client, admin: &str, n: u64) -> (u64, String) {
    let (status, body) = post(
        c,
        &format!("{admin}/v1/ca/certs"),
        &issue_body(n, Some(n.into())),
    )
    .await;
    assert_eq!(status, 201, "issue {n} on {admin}: {body}");
    (
        body["serial"].as_u64().expect("serial"),
        body["encoded"].as_str().expect("encoded").to_owned(),
    )
}

async fn check_all_present(c: &reqwest::Client, admin: &str, acked: &BTreeMap<u64, String>) {
    for (serial, encoded) in acked {
        let (status, body) = get(c, &format!("{admin}/v1/ca/certs/{serial}")).await;
        assert_eq!(status, 200, "serial {serial} on {admin}: {body}");
        assert_eq!(
            body["encoded"].as_str(),
            Some(encoded.as_str()),
            "serial {serial} bytes differ on {admin}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_bootstrap_survive_a_leader_kill_and_revocations_reach_a_client() {
    let tmp = tempfile::tempdir().expect("tmp");
    let c = http();
    let (mut nodes, status) = start_three_voters(&c, tmp.path()).await;
    assert_eq!(
        status["raft"]["voters"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );

    // Issue through every node (followers forward to the leader).
    let mut acked = BTreeMap::new();
    for n in 1..=12u64 {
        let admin = nodes[(n % 3) as usize].node.admin.clone();
        let (serial, encoded) = issue_ok(&c, &admin, n).await;
        assert!(
            acked.insert(serial, encoded).is_none(),
            "serial {serial} issued twice"
        );
    }
    // A retry with the same request_id returns the same certificate.
    let (again, _) = issue_ok(&c, &nodes[1].node.admin, 5).await;
    assert_eq!(acked.iter().filter(|(s, _)| **s == again).count(), 1);
    assert_eq!(acked.len(), 12);

    outsiders_are_refused(&c, &nodes, &status).await;

    // Kill the leader.
    let raft_ids: Vec<u64> = {
        let mut ids = Vec::new();
        for n in &nodes {
            let (_, t) = get(&c, &format!("{}/v1/node/trust", n.node.admin)).await;
            ids.push(t["raft_id"].as_u64().expect("raft id"));
        }
        ids
    };
    let leader = status["raft"]["leader"].as_u64().expect("leader");
    let li = raft_ids
        .iter()
        .position(|i| *i == leader)
        .expect("leader is a voter");
    let killed_raft = nodes[li].raft.clone().expect("raft addr");
    let killed_dir = nodes[li].node.data_dir.clone();
    let killed_name = nodes[li].node.name.clone();
    nodes[li].node.sigkill();
    let survivor = &nodes[(li + 1) % 3].node;
    let killed_at = Instant::now();
    let new_leader = eventually(
        ELECTION_BOUND,
        "a new leader among the survivors",
        || async {
            let (s, b) = get(&c, &format!("{}/v1/ca/status", survivor.admin)).await;
            let l = b["raft"]["leader"].as_u64();
            (s == 200 && l.is_some() && l != Some(leader)).then_some(l)
        },
    )
    .await;
    eprintln!("new leader {new_leader:?} after {:?}", killed_at.elapsed());
    for n in 100..110u64 {
        let (serial, encoded) = issue_ok(&c, &survivor.admin, n).await;
        assert!(acked.insert(serial, encoded).is_none());
    }
    check_all_present(&c, &survivor.admin, &acked).await;

    // Restart the killed voter on its Raft address: it catches up and serves the same bytes.
    let seed = nodes[(li + 1) % 3].node.gossip.clone();
    nodes[li] = start_voter(&killed_name, &killed_dir, &[&seed], &killed_raft);
    wait_bootstrapped(&c, &nodes[li].node, Duration::from_secs(20)).await;
    check_all_present(&c, &nodes[li].node.admin, &acked).await;

    // A fourth node, not a voter: a CA client that learns revocations. It reaches the CA once
    // its trust actor has seen the voters in membership (a tick after it joined); until then
    // the CA API answers 503.
    let client = start_client("c4", &tmp.path().join("c4"), &[&seed]);
    let list_url = format!("{}/v1/ca/certs?after=0&limit=1000", client.node.admin);
    let listed = eventually(
        Duration::from_secs(10),
        "the client reaches the CA",
        || async {
            let (s, listed) = get(&c, &list_url).await;
            assert!(s == 200 || s == 503, "{s}: {listed}");
            (s == 200).then_some(listed)
        },
    )
    .await;
    let listed: Vec<u64> = listed["certs"]
        .as_array()
        .expect("certs")
        .iter()
        .map(|m| m["serial"].as_u64().expect("serial"))
        .collect();
    for serial in acked.keys() {
        assert!(listed.contains(serial), "client's list lacks {serial}");
    }
    eventually(
        Duration::from_secs(20),
        "the client holds the CA keys",
        || async {
            let (_, t) = get(&c, &format!("{}/v1/node/trust", client.node.admin)).await;
            (t["ca_keys"].as_array().is_some_and(|k| !k.is_empty())).then_some(())
        },
    )
    .await;
    // A non-voting node may send client requests (above) but not voter changes: the voters
    // refuse a membership change from its key.
    let (_, c4) = get(&c, &format!("{}/v1/node", client.node.admin)).await;
    let (s, refused) = post(
        &c,
        &format!("{}/v1/ca/voters", client.node.admin),
        &json!({"node": c4["id"], "raft_addr": "127.0.0.1:9"}),
    )
    .await;
    assert_eq!(s, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("refused by the CA link policy")),
        "{refused}"
    );
    let victim = *acked.keys().nth(3).expect("serial");
    let revoked_at = Instant::now();
    let revoker = &nodes[(li + 2) % 3].node;
    let (s, first) = post(
        &c,
        &format!("{}/v1/ca/certs/{victim}/revoke", revoker.admin),
        &json!({"reason": "key_compromise"}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    // Idempotent: the same record again.
    let (s, second) = post(
        &c,
        &format!("{}/v1/ca/certs/{victim}/revoke", nodes[li].node.admin),
        &json!({}),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(first["encoded"], second["encoded"]);
    eventually(
        REVOCATION_BOUND,
        "the client rejects the revoked serial",
        || async {
            let (_, t) = get(&c, &format!("{}/v1/node/trust", client.node.admin)).await;
            let revoked = t["revoked"].as_array().cloned().unwrap_or_default();
            revoked.contains(&json!(victim)).then_some(())
        },
    )
    .await;
    eprintln!(
        "revocation reached the client after {:?}",
        revoked_at.elapsed()
    );
    let (s, revs) = get(
        &c,
        &format!("{}/v1/ca/revocations?after=0", client.node.admin),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(revs["revocations"][0]["serial"], json!(victim), "{revs}");
    let (_, got) = get(&c, &format!("{}/v1/ca/certs/{victim}", client.node.admin)).await;
    assert_eq!(got["revocation"]["reason"], "key_compromise", "{got}");
    // The list shows the revocation too, and none beside a certificate that is not revoked.
    let (s, page) = get(
        &c,
        &format!(
            "{}/v1/ca/certs?after={}&limit=2",
            client.node.admin,
            victim - 1
        ),
    )
    .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["certs"][0]["serial"], json!(victim), "{page}");
    assert_eq!(
        page["certs"][0]["revocation"]["reason"], "key_compromise",
        "{page}"
    );
    assert_eq!(
        page["certs"][1]["revocation"],
        serde_json::Value::Null,
        "{page}"
    );

    // Every node holds its own MIC: kind node, subject = its node id, verifiable.
    for n in nodes.iter().map(|n| &n.node).chain([&client.node]) {
        let mic = eventually(Duration::from_secs(20), "a node MIC", || async {
            let (s, m) = get(&c, &format!("{}/v1/node/mic", n.admin)).await;
            (s == 200).then_some(m)
        })
        .await;
        let (_, me) = get(&c, &format!("{}/v1/node", n.admin)).await;
        assert_eq!(mic["mic"]["body"]["kind"], "node");
        assert_eq!(mic["mic"]["body"]["subject_key"], me["id"], "{}", n.name);
    }
    let metrics = nodes[0].node.metrics().await;
    assert!(metrics.contains("nexus_ca_role "), "{metrics}");
    assert!(
        client
            .node
            .metrics()
            .await
            .contains("nexus_trust_revocations 1")
    );

    bad_input(&c, &client.node.admin).await;
    bad_input(&c, &nodes[0].node.admin).await;
}

/// The subject key of the certificate a forged AppendEntries would mint.
const FORGED_SUBJECT: [u8; 32] = [0xf0; 32];

/// A valid AppendEntries frame, built with the CA's own types and encoder, that would append and
/// commit a certificate for `FORGED_SUBJECT` on a member whose log ends at `last_index` of
/// `term`, led by `leader`: a higher term, continuing that log.
fn forged_append(term: u64, leader: u64, last_index: u64) -> Vec<u8> {
    use nexus_trust::ca::{Command, IssueRequest};
    use nexus_trust::mic::{Claim, SubjectKind};
    use nexus_trust::raft::wire::{self, FRAME_BYTES_MAX_DEFAULT, WireRequest};
    use nexus_trust::raft::{Entry, TypeConfig};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

    let prev = LogId::new(CommittedLeaderId::new(term, leader), last_index);
    let log_id = LogId::new(CommittedLeaderId::new(term + 1, leader), last_index + 1);
    let request = IssueRequest {
        request_id: None,
        subject_key: FORGED_SUBJECT,
        kind: SubjectKind::Agent,
        model: None,
        publisher: "forged".into(),
        provenance: vec![],
        claims: vec![Claim {
            key: "forged".into(),
            value: "yes".into(),
        }],
        zk_commitment: None,
        validity_ms: 3_600_000,
    };
    let rpc = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 1, leader),
        prev_log_id: Some(prev),
        entries: vec![Entry {
            log_id,
            payload: EntryPayload::Normal(Command::Issue {
                now_ms: 1,
                requests: vec![request],
            }),
        }],
        leader_commit: Some(log_id),
    };
    let payload = serde_json::to_vec(&WireRequest::AppendEntries(rpc)).expect("encode");
    wire::encode_frame(1, &payload, FRAME_BYTES_MAX_DEFAULT).expect("frame")
}

/// The certificates a voter lists, without the nodes' own MICs (which the trust actors may
/// still be obtaining): `(serial, subject key)`.
async fn non_node_certs(c: &reqwest::Client, admin: &str) -> Vec<(u64, String)> {
    let (s, listed) = get(c, &format!("{admin}/v1/ca/certs?after=0&limit=1000")).await;
    assert_eq!(s, 200, "{listed}");
    listed["certs"]
        .as_array()
        .expect("certs")
        .iter()
        .filter(|m| m["mic"]["body"]["kind"] != "node")
        .map(|m| {
            (
                m["serial"].as_u64().expect("serial"),
                m["mic"]["body"]["subject_key"]
                    .as_str()
                    .expect("subject key")
                    .to_owned(),
            )
        })
        .collect()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{metrics}"))
}

/// A process that is not a voter speaks a valid AppendEntries to a follower's Raft port: over
/// plain TCP and over TLS with a key nobody admitted. Both are refused in the handshake, counted,
/// and nothing is applied.
async fn outsiders_are_refused(c: &reqwest::Client, nodes: &[CaProc], status: &serde_json::Value) {
    use nexus_trust::raft::wire::{self, FRAME_BYTES_MAX_DEFAULT};
    use nexus_trust::raft::{LinkPolicy, TcpTransport, TlsTransport, Transport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let leader = status["raft"]["leader"].as_u64().expect("leader");
    let mut target = None;
    for n in nodes {
        let (_, t) = get(c, &format!("{}/v1/node/trust", n.node.admin)).await;
        if t["raft_id"].as_u64() != Some(leader) {
            target = Some(n);
            break;
        }
    }
    let target = target.expect("a follower");
    let raft_addr = target.raft.clone().expect("raft addr");
    let (_, before) = get(c, &format!("{}/v1/ca/status", target.node.admin)).await;
    let term = before["raft"]["term"].as_u64().expect("term");
    let last_index = before["raft"]["last_log_index"]
        .as_u64()
        .expect("last index");
    let certs_before = non_node_certs(c, &target.node.admin).await;
    let refused_before = counter(
        &target.node.metrics().await,
        "nexus_ca_handshakes_refused_total",
    );
    let frame = forged_append(term, leader, last_index);

    // Plain TCP: at most a TLS alert comes back, never a CA frame.
    let mut tcp = tokio::net::TcpStream::connect(&raft_addr)
        .await
        .expect("connect");
    tcp.write_all(&frame).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || (answer[0] == 0x15 && answer.len() == 7),
        "plain TCP got something other than a TLS alert: {answer:02x?}"
    );

    // TLS with a key that is no fabric member: the handshake is refused (TLS 1.3 reports the
    // server's refusal of a client key on the client's first read).
    let (_, me) = get(c, &format!("{}/v1/node", target.node.admin)).await;
    let voter_key: [u8; 32] = hex::decode(me["id"].as_str().expect("node id"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let policy = std::sync::Arc::new(LinkPolicy::new());
    policy.set_fabric([voter_key].into(), Default::default());
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]);
    let links = TlsTransport::new(TcpTransport, &stranger, policy).expect("tls");
    if let Ok(mut tls) = links.connect(&raft_addr).await {
        let sent = tls.write_all(&frame).await.and(tls.flush().await);
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            wire::read_frame(&mut tls, FRAME_BYTES_MAX_DEFAULT),
        )
        .await;
        assert!(
            sent.is_err() || matches!(read, Ok(Err(_)) | Ok(Ok(None))),
            "a stranger's TLS link answered: {read:?}"
        );
    }

    let refused = eventually(
        Duration::from_secs(5),
        "both handshakes counted as refused",
        || async {
            let n = counter(
                &target.node.metrics().await,
                "nexus_ca_handshakes_refused_total",
            );
            (n >= refused_before + 2).then_some(n)
        },
    )
    .await;
    eprintln!("outsiders refused: nexus_ca_handshakes_refused_total {refused_before} -> {refused}");
    // The forged frame carried the next term under the current leader. A real election may
    // raise the term meanwhile, so the term is not compared: a term that moved must be one the
    // group elected a leader in, which that leader's own status shows (a vote taken from the
    // forged frame would put the target alone in a term its leader never reached).
    eventually(
        Duration::from_secs(10),
        "the target is in its old term or follows a leader elected in its new one",
        || async {
            let (_, after) = get(c, &format!("{}/v1/ca/status", target.node.admin)).await;
            let after_term = after["raft"]["term"].as_u64().expect("term");
            if after_term == term {
                return Some(());
            }
            assert!(after_term > term, "the term went back: {after}");
            let new_leader = after["raft"]["leader"].as_u64()?;
            for n in nodes {
                let (_, t) = get(c, &format!("{}/v1/node/trust", n.node.admin)).await;
                if t["raft_id"].as_u64() == Some(new_leader) {
                    let (_, own) = get(c, &format!("{}/v1/ca/status", n.node.admin)).await;
                    let elected = own["raft"]["leader"].as_u64() == Some(new_leader)
                        && own["raft"]["term"].as_u64() == Some(after_term);
                    return elected.then_some(());
                }
            }
            panic!("the target follows {new_leader}, which is not a voter: {after}");
        },
    )
    .await;
    let certs_after = non_node_certs(c, &target.node.admin).await;
    assert_eq!(certs_after, certs_before);
    let forged = hex::encode(FORGED_SUBJECT);
    assert!(certs_after.iter().all(|(_, key)| *key != forged));
    let (s, list) = get(
        c,
        &format!("{}/v1/ca/certs?after=0&limit=1000", target.node.admin),
    )
    .await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains(&forged), "forged MIC listed");
}

/// Bad input on the CA API: problem+json with the right status, and the node keeps serving.
async fn bad_input(c: &reqwest::Client, admin: &str) {
    let certs = format!("{admin}/v1/ca/certs");
    expect_problem(
        c.post(&certs)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send"),
        400,
        "malformed-json",
    )
    .await;
    // A well-formed issue request with one field spoiled: 422 whose detail names the field.
    for (field, value, named) in [
        ("colour", json!("red"), "colour"),
        ("validity_ms", json!(5), "validity_ms"),
        ("subject_key", json!("abcd"), "subject_key"),
    ] {
        let mut b = issue_body(1, None);
        b[field] = value;
        let (status, body) = post(c, &certs, &b).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(named)),
            "{field}: {body}"
        );
    }
    expect_problem(
        c.post(&certs).body("{}").send().await.expect("send"),
        415,
        "unsupported-media-type",
    )
    .await;
    common::expect_body_too_large(&certs).await;
    let mut cases: Vec<(reqwest::Method, String, u16, &str)> =
        ["0", "x", "-3", "99999999999999999999"]
            .into_iter()
            .map(|bad| {
                (
                    reqwest::Method::GET,
                    format!("{certs}/{bad}"),
                    400,
                    "bad-serial",
                )
            })
            .collect();
    cases.extend([
        (
            reqwest::Method::GET,
            format!("{certs}/987654"),
            404,
            "unknown-serial",
        ),
        (
            reqwest::Method::POST,
            format!("{certs}/987654/revoke"),
            404,
            "unknown-serial",
        ),
        (
            reqwest::Method::GET,
            format!("{certs}?limit=0"),
            400,
            "bad-query",
        ),
        (
            reqwest::Method::GET,
            format!("{certs}?after=x"),
            400,
            "bad-query",
        ),
        (
            reqwest::Method::GET,
            format!("{admin}/v1/ca/circuits/77"),
            404,
            "unknown-circuit",
        ),
        (
            reqwest::Method::GET,
            format!("{admin}/v1/ca/circuits/1?format=pem"),
            400,
            "bad-query",
        ),
        (
            reqwest::Method::DELETE,
            certs.clone(),
            405,
            "method-not-allowed",
        ),
        (
            reqwest::Method::PUT,
            format!("{admin}/v1/ca/status"),
            405,
            "method-not-allowed",
        ),
    ]);
    for (method, url, status, slug) in cases {
        let r = c.request(method, &url).send().await.expect("send");
        expect_problem(r, status, slug).await;
    }
    expect_problem(
        c.post(format!("{admin}/v1/ca/voters"))
            .json(&json!({"node": "zz"}))
            .send()
            .await
            .expect("send"),
        422,
        "invalid-body",
    )
    .await;
    // Still serving: a good request after all of that.
    let (s, _) = get(c, &format!("{admin}/v1/ca/keys")).await;
    assert_eq!(s, 200);
    let (s, vk) = get(c, &format!("{admin}/v1/ca/circuits/1?format=snarkjs")).await;
    assert_eq!(s, 200);
    assert_eq!(vk["protocol"], "groth16");
}

/// A voter's Raft port in use, or a bad `[ca]` value: exit 2 with one line naming the key, and
/// no data directory created.
#[test]
fn bad_ca_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cases = [
        (
            format!("[ca]\nvoter = true\nraft_listen = \"127.0.0.1:{port}\"\n"),
            "ca.raft_listen",
        ),
        ("[ca]\nvoter = true\n".to_owned(), "ca.raft_listen"),
        (
            "[ca]\nbootstrap_expect = 2\n".to_owned(),
            "ca.bootstrap_expect",
        ),
        (
            "[ca]\nheartbeat_ms = 500\nelection_timeout_min_ms = 400\n".to_owned(),
            "ca.election_timeout_min_ms",
        ),
    ];
    for (config, key) in cases {
        let out = common::run_with_config(
            dir.path(),
            &["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
            Some(&config),
        );
        common::assert_config_error(dir.path(), &out, key);
    }
    drop(taken);
}
