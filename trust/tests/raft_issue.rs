//! Issuance through the CA Raft group: the group-commit batcher, idempotent retries, every
//! member holding byte-identical certificates.
#![allow(clippy::unwrap_used, reason = "tests")]

mod raft_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nexus_trust::ca::{Bootstrap, CaError, Command, IssueRequest, Response};
use nexus_trust::mic::{Claim, SubjectKind};
use nexus_trust::raft::SnapshotPolicy;
use raft_common::Cluster;

fn request(n: u32, request_id: Option<[u8; 16]>) -> IssueRequest {
    let mut subject_key = [0u8; 32];
    subject_key[..4].copy_from_slice(&n.to_be_bytes());
    IssueRequest {
        request_id,
        subject_key,
        kind: SubjectKind::Agent,
        model: None,
        publisher: format!("publisher-{}", n % 7),
        provenance: vec![],
        claims: vec![Claim {
            key: "task".into(),
            value: "chat".into(),
        }],
        zk_commitment: None,
        validity_ms: 86_400_000,
    }
}

fn bootstrap() -> Command {
    Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [9; 32],
        ca_key_id: 1,
        circuits: vec![],
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issues_coalesce_and_every_member_holds_the_same_mics() {
    let c = Arc::new(
        Cluster::new(
            3,
            SnapshotPolicy {
                logs_since_last: 1_000_000,
                logs_to_keep: 1_000,
            },
        )
        .await,
    );
    let leader = c.wait_leader(&c.ids(), Duration::from_secs(10)).await;
    let follower = c.other_than(leader);

    // Before bootstrap every request is refused with the CA's reason, not a transport error.
    let early = c.nodes[&follower].issue(request(0, None)).await.unwrap();
    assert_eq!(early.unwrap_err(), CaError::NotBootstrapped);

    assert_eq!(
        c.nodes[&follower].write(bootstrap()).await.unwrap(),
        Response::Bootstrapped { ca_key_id: 1 }
    );

    // 300 concurrent issues through a follower (forwarded to the leader in batches).
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=300u32 {
        let c = c.clone();
        tasks.spawn(async move { c.nodes[&follower].issue(request(n, None)).await });
    }
    let mut serials = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let mic = done.unwrap().unwrap().unwrap();
        assert!(
            serials.insert(mic.body.serial),
            "duplicate serial {}",
            mic.body.serial
        );
    }
    assert_eq!(serials.len(), 300);
    let stats = c.nodes[&follower].issue_stats();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches < 300,
        "no coalescing: {batches} batches for 300 requests"
    );

    // Idempotent retry: the same request id yields the same certificate, not a new serial.
    let id = Some([7u8; 16]);
    let first = c.nodes[&leader]
        .issue(request(1000, id))
        .await
        .unwrap()
        .unwrap();
    let again = c.nodes[&follower]
        .issue(request(1000, id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, again);

    // Unbatched issue works too, one command per call.
    let single = c.nodes[&leader]
        .issue_unbatched(vec![request(2000, None), request(2001, None)])
        .await
        .unwrap();
    assert_eq!(single.len(), 2);
    assert!(single.iter().all(Result::is_ok));

    // Every member, read linearizably, holds byte-identical certificates that verify.
    let now_ms = nexus_trust::raft::node::CaClock::wall().now_ms();
    let reference = c.nodes[&leader]
        .read_linearizable(|s| {
            serials
                .iter()
                .map(|serial| s.get(*serial).cloned().unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    for id in c.ids() {
        let (mics, keys) = c.nodes[&id]
            .read_linearizable(|s| {
                let mics: Vec<_> = serials.iter().map(|x| s.get(*x).cloned()).collect();
                (mics, s.ca_keys().clone())
            })
            .await
            .unwrap();
        for (mic, want) in mics.iter().zip(&reference) {
            let mic = mic.as_ref().unwrap();
            assert_eq!(mic.encode(), want.encode(), "member {id} differs");
            mic.verify(&keys, now_ms).unwrap();
        }
    }
}

/// The leader signs each batch once (`Command::IssueSigned`); followers use its signatures.
/// Across a leader change (the old leader stopped, then back and caught up) every member ends
/// with byte-identical certificates that verify, serials have no gaps, and each leader's
/// presigned signatures were actually used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_issues_across_a_leader_change_leave_identical_members() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut c = Cluster::new(
        3,
        SnapshotPolicy {
            logs_since_last: 1_000_000,
            logs_to_keep: 1_000,
        },
    )
    .await;
    let first = c.wait_leader(&c.ids(), Duration::from_secs(10)).await;
    c.nodes[&first].write(bootstrap()).await.unwrap();
    let batch = |from: u32| {
        (from..from + 50)
            .map(|n| request(n, None))
            .collect::<Vec<_>>()
    };
    for r in c.nodes[&first].issue_unbatched(batch(0)).await.unwrap() {
        r.unwrap();
    }
    c.nodes[&first]
        .issue(request(100, None))
        .await
        .unwrap()
        .unwrap();
    let stats = c.nodes[&first].presign_stats();
    assert_eq!(
        stats.used.load(Relaxed),
        51,
        "first leader's signatures unused"
    );
    assert_eq!(stats.missed.load(Relaxed), 0);

    // The leader goes away; the other two elect a new one and keep issuing, also through the
    // remaining follower (forwarded).
    c.stop(first).await;
    let rest: Vec<u64> = c.ids();
    let second = c.wait_leader(&rest, Duration::from_secs(10)).await;
    let other = *rest.iter().find(|id| **id != second).unwrap();
    for r in c.nodes[&second].issue_unbatched(batch(200)).await.unwrap() {
        r.unwrap();
    }
    c.nodes[&other]
        .issue(request(300, None))
        .await
        .unwrap()
        .unwrap();
    let stats = c.nodes[&second].presign_stats();
    assert!(stats.batches.load(Relaxed) >= 2);
    assert_eq!(
        stats.used.load(Relaxed) + stats.missed.load(Relaxed),
        51,
        "every planned signature is counted once"
    );
    assert!(
        stats.used.load(Relaxed) > 0,
        "new leader's signatures unused"
    );

    // The old leader returns and catches up from the log.
    c.restart(first).await;
    let leader = c.wait_leader(&c.ids(), Duration::from_secs(10)).await;
    let last = c.nodes[&leader].status().last_log_index.unwrap();
    for id in c.ids() {
        c.wait_applied(id, last, Duration::from_secs(10)).await;
    }
    let now_ms = nexus_trust::raft::node::CaClock::wall().now_ms();
    let reference = c.nodes[&leader]
        .read_linearizable(|s| s.list(0, 1000).into_iter().cloned().collect::<Vec<_>>())
        .await
        .unwrap();
    let serials: Vec<u64> = reference.iter().map(|m| m.body.serial).collect();
    assert_eq!(serials, (1..=102).collect::<Vec<_>>());
    for id in c.ids() {
        let (mics, keys) = c.nodes[&id]
            .read_linearizable(|s| {
                let mics: Vec<_> = s.list(0, 1000).into_iter().cloned().collect();
                (mics, s.ca_keys().clone())
            })
            .await
            .unwrap();
        assert_eq!(mics.len(), reference.len(), "member {id}");
        for (mic, want) in mics.iter().zip(&reference) {
            assert_eq!(mic.encode(), want.encode(), "member {id} differs");
            mic.verify(&keys, now_ms).unwrap();
        }
    }
    // The log holds presigned entries (the path under test was taken).
    let entries = raft_common::normal_entries(&c.dbs[&first]).await;
    assert!(
        entries
            .iter()
            .any(|(_, cmd)| matches!(cmd, Command::IssueSigned { .. })),
        "no presigned entry in the log"
    );
}

/// A client cannot propose presigned certificates: the listener refuses the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_send_presigned_issue_commands() {
    let c = Cluster::new(
        3,
        SnapshotPolicy {
            logs_since_last: 1_000_000,
            logs_to_keep: 1_000,
        },
    )
    .await;
    let leader = c.wait_leader(&c.ids(), Duration::from_secs(10)).await;
    c.nodes[&leader].write(bootstrap()).await.unwrap();
    let client = nexus_trust::raft::CaClient::new(vec![c.addrs[&leader].clone()]);
    let forged = Command::IssueSigned {
        now_ms: 1,
        ca_key_id: 1,
        requests: vec![request(1, None)],
        signatures: vec![Some(nexus_trust::ca::Presigned {
            serial: 1,
            signature: [0; 64],
            body_sha256: [0; 32],
        })],
    };
    let err = client.write(forged).await.unwrap_err();
    assert!(
        err.to_string().contains("proposed only by the leader"),
        "{err}"
    );
    let mics = c.nodes[&leader]
        .read_linearizable(|s| s.stats().mics)
        .await
        .unwrap();
    assert_eq!(mics, 0);
}
