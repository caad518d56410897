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
