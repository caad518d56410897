//! Crash loop: 20+ SIGKILL/restart cycles of CA voters while a client issues certificates
//! continuously. Afterwards every certificate acknowledged to the client is present with the same
//! bytes, and all serials are unique.
//!
//! The client retries a failed or unanswered request with the same `request_id` (on another
//! node), so "acknowledged" means the CA said 201 for that id; the CA's idempotency makes a
//! retry of an applied request return the same certificate rather than a second serial.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod ca_common;
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_common::*;

const CYCLES: usize = 21;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_certificates_survive_kill_restart_cycles() {
    let tmp = tempfile::tempdir().expect("tmp");
    let c = http();
    let (mut nodes, _) = start_three_voters(&c, tmp.path()).await;

    // The client: round-robin over the current admin addresses, retrying each request id until
    // it is acknowledged.
    let admins = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| n.node.admin.clone())
            .collect::<Vec<_>>(),
    ));
    let acked: Arc<Mutex<BTreeMap<u128, (u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (admins, acked, stop, c) = (admins.clone(), acked.clone(), stop.clone(), c.clone());
        tokio::spawn(async move {
            let mut attempts = 0u64;
            let mut id: u128 = 1;
            while !stop.load(Ordering::Relaxed) {
                let admin = {
                    let list = admins.lock().expect("admins");
                    list[(attempts as usize) % list.len()].clone()
                };
                attempts += 1;
                let (status, body) = post(
                    &c,
                    &format!("{admin}/v1/ca/certs"),
                    &issue_body(id as u64, Some(id)),
                )
                .await;
                if status == 201 {
                    let serial = body["serial"].as_u64().expect("serial");
                    let encoded = body["encoded"].as_str().expect("encoded").to_owned();
                    acked.lock().expect("acked").insert(id, (serial, encoded));
                    id += 1;
                } else {
                    // 0 (connection refused), 503 (no leader), 504 (outcome unknown): retry
                    // the same id elsewhere after a breath.
                    assert!(
                        matches!(status, 0 | 503 | 504),
                        "unexpected {status}: {body}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            attempts
        })
    };

    for cycle in 0..CYCLES {
        let i = cycle % 3;
        let raft = nodes[i].raft.clone().expect("raft addr");
        let dir = nodes[i].node.data_dir.clone();
        let name = nodes[i].node.name.clone();
        nodes[i].node.sigkill();
        tokio::time::sleep(Duration::from_millis(150 + 50 * (cycle as u64 % 4))).await;
        let seed = nodes[(i + 1) % 3].node.gossip.clone();
        nodes[i] = start_voter(&name, &dir, &[&seed], &raft);
        admins.lock().expect("admins")[i] = nodes[i].node.admin.clone();
        // Keep a quorum for the next kill: the restarted voter must be back in the group.
        wait_bootstrapped(&c, &nodes[i].node, Duration::from_secs(20)).await;
    }
    // Let the client make progress with everyone up, then stop it.
    let before = acked.lock().expect("acked").len();
    eventually(
        Duration::from_secs(20),
        "issuance resumes after the last cycle",
        || async { (acked.lock().expect("acked").len() > before + 5).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let attempts = client.await.expect("client task");
    let acked = acked.lock().expect("acked").clone();
    eprintln!(
        "{} certificates acknowledged in {attempts} attempts over {CYCLES} cycles",
        acked.len()
    );
    assert!(acked.len() >= 20, "too little progress: {}", acked.len());

    // Every acknowledged certificate, same bytes, on every node; serials unique.
    let mut serials = BTreeMap::new();
    for (id, (serial, _)) in &acked {
        if let Some(other) = serials.insert(*serial, *id) {
            panic!("serial {serial} acknowledged for request ids {other} and {id}");
        }
    }
    for n in &nodes {
        for (serial, encoded) in acked.values() {
            let (status, body) = get(&c, &format!("{}/v1/ca/certs/{serial}", n.node.admin)).await;
            assert_eq!(status, 200, "{}: serial {serial}: {body}", n.node.name);
            assert_eq!(
                body["encoded"].as_str(),
                Some(encoded.as_str()),
                "{}: serial {serial}",
                n.node.name
            );
        }
    }
    // The full list has no duplicate serials and no gaps the acknowledgements would not explain.
    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = get(
            &c,
            &format!(
                "{}/v1/ca/certs?after={after}&limit=1000",
                nodes[0].node.admin
            ),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for m in page["certs"].as_array().expect("certs") {
            listed.push(m["serial"].as_u64().expect("serial"));
        }
        match page["next_after"].as_u64() {
            Some(a) => after = a,
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<u64> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "duplicate serials in the list");
    for serial in serials.keys() {
        assert!(
            unique.contains(serial),
            "acknowledged serial {serial} missing from the list"
        );
    }
}
