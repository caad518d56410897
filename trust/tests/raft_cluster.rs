//! The CA Raft group end to end: in-process members over loopback TCP, sled in temp dirs.
#![allow(clippy::unwrap_used, reason = "tests")]

mod raft_common;

use std::time::Duration;

use nexus_trust::ca::{Command, Response};
use nexus_trust::raft::wire::{
    BAD_FRAME_ID, ClientReply, ClientRequest, WireRequest, WireResponse, encode_frame, read_frame,
};
use nexus_trust::raft::{CaClient, CaClientError, CaRole, SnapshotPolicy};
use raft_common::{Cluster, normal_entries, peer};
use tokio::io::AsyncWriteExt;

const SECS_10: Duration = Duration::from_secs(10);

fn no_snapshots() -> SnapshotPolicy {
    SnapshotPolicy {
        logs_since_last: 1_000_000,
        logs_to_keep: 1_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_commit_from_any_member() {
    let c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let follower = c.other_than(leader);
    assert_eq!(c.nodes[&leader].status().role, CaRole::Leader);
    assert_eq!(c.nodes[&follower].status().role, CaRole::Follower);
    assert_eq!(c.nodes[&follower].status().voters, vec![1, 2, 3]);

    for node in [leader, follower] {
        for _ in 0..5 {
            assert_eq!(
                c.nodes[&node].write(Command::Noop).await.unwrap(),
                Response::Done
            );
        }
    }
    // Every member reads the 10 writes linearizably (a follower via the leader's read index).
    let leader_applied = c.nodes[&leader].status().last_applied_index.unwrap();
    for id in c.ids() {
        let applied = c.nodes[&id]
            .read_linearizable(|s| s.last_applied().unwrap_or(0))
            .await
            .unwrap();
        assert!(
            applied >= leader_applied,
            "member {id}: {applied} < {leader_applied}"
        );
        let entries = normal_entries(&c.dbs[&id]).await;
        assert_eq!(entries.len(), 10, "member {id} log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_keeps_every_acknowledged_write() {
    let mut c = Cluster::new(3, no_snapshots()).await;
    let old = c.wait_leader(&c.ids(), SECS_10).await;
    let mut acked = 0;
    for _ in 0..20 {
        c.nodes[&old].write(Command::Noop).await.unwrap();
        acked += 1;
    }
    c.stop(old).await;
    let survivors = c.ids();
    let new = c.wait_leader(&survivors, SECS_10).await;
    assert_ne!(new, old);
    // Writes through either survivor keep working.
    for id in &survivors {
        c.nodes[id].write(Command::Noop).await.unwrap();
        acked += 1;
    }
    for id in &survivors {
        c.nodes[id].read_linearizable(|_| ()).await.unwrap();
        let entries = normal_entries(&c.dbs[id]).await;
        assert!(
            entries.len() >= acked,
            "member {id} holds {} client entries, {acked} were acknowledged",
            entries.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_catches_up_from_its_sled_dir() {
    let mut c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let lagger = c.other_than(leader);
    c.nodes[&leader].write(Command::Noop).await.unwrap();
    c.stop(lagger).await;
    for _ in 0..30 {
        c.nodes[&leader].write(Command::Noop).await.unwrap();
    }
    c.restart(lagger).await;
    let target = c.nodes[&leader].status().last_applied_index.unwrap();
    c.wait_applied(lagger, target, SECS_10).await;
    assert_eq!(normal_entries(&c.dbs[&lagger]).await.len(), 31);
    // The restarted member serves linearizable reads again.
    let applied = c.nodes[&lagger]
        .read_linearizable(|s| s.last_applied().unwrap_or(0))
        .await
        .unwrap();
    assert!(applied >= target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_receives_a_snapshot() {
    let policy = SnapshotPolicy {
        logs_since_last: 20,
        logs_to_keep: 0,
    };
    let mut c = Cluster::new(3, policy).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let lagger = c.other_than(leader);
    c.stop(lagger).await;
    for _ in 0..100 {
        c.nodes[&leader].write(Command::Noop).await.unwrap();
    }
    // The leader snapshotted and purged the entries the lagging member is missing.
    let deadline = tokio::time::Instant::now() + SECS_10;
    loop {
        let m = c.nodes[&leader].raft().metrics().borrow().clone();
        if m.purged.is_some_and(|p| p.index >= 50) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader never purged: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.restart(lagger).await;
    let target = c.nodes[&leader].status().last_applied_index.unwrap();
    c.wait_applied(lagger, target, SECS_10).await;
    let status = c.nodes[&lagger].status();
    assert!(
        status.snapshot_index.is_some_and(|i| i >= 50),
        "lagging member caught up without a snapshot: {status:?}"
    );
    // Its log starts after the snapshot: the purged entries came as state, not as log.
    assert!(normal_entries(&c.dbs[&lagger]).await.len() < 100);
    let applied = c.nodes[&lagger]
        .read_linearizable(|s| s.last_applied().unwrap_or(0))
        .await
        .unwrap();
    assert!(applied >= target);
    // A restart restores the installed snapshot from sled.
    c.stop(lagger).await;
    c.restart(lagger).await;
    c.wait_applied(lagger, target, SECS_10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_and_removed_through_any_member() {
    let mut c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let follower = c.other_than(leader);
    for _ in 0..5 {
        c.nodes[&leader].write(Command::Noop).await.unwrap();
    }
    c.add_member(4).await;
    let p4 = peer(&c.nodes[&4]);
    c.nodes[&follower].add_voter(4, p4.clone()).await.unwrap();
    // Idempotent.
    c.nodes[&follower].add_voter(4, p4).await.unwrap();
    assert_eq!(c.nodes[&leader].status().voters, vec![1, 2, 3, 4]);
    let target = c.nodes[&leader].status().last_applied_index.unwrap();
    c.wait_applied(4, target, SECS_10).await;
    assert_eq!(normal_entries(&c.dbs[&4]).await.len(), 5);
    assert_eq!(c.nodes[&4].status().role, CaRole::Follower);
    c.nodes[&4].write(Command::Noop).await.unwrap();

    c.nodes[&4].remove_voter(4).await.unwrap();
    assert_eq!(c.nodes[&leader].status().voters, vec![1, 2, 3]);
    c.nodes[&follower].remove_voter(follower).await.unwrap();
    let voters = c.nodes[&leader].status().voters;
    assert_eq!(voters.len(), 2);
    assert!(!voters.contains(&follower));
    c.nodes[&leader].write(Command::Noop).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_client_finds_the_leader_past_dead_and_follower_addresses() {
    let c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let follower = c.other_than(leader);
    // A dead address (bound then released) and a follower come first.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = CaClient::new(vec![dead.clone(), c.addrs[&follower].clone()]);
    assert_eq!(client.write(Command::Noop).await.unwrap(), Response::Done);
    assert_eq!(
        client.known_leader().as_deref(),
        Some(c.addrs[&leader].as_str())
    );
    let index = client.read_index().await.unwrap().unwrap();
    assert!(index >= c.nodes[&leader].status().last_applied_index.unwrap() - 1);
    let status = client.status().await.unwrap();
    assert_eq!(status.leader, Some(leader));
    // The write was acknowledged once a majority had it; the third member may still be behind.
    let target = c.nodes[&leader].status().last_applied_index.unwrap();
    for id in c.ids() {
        c.wait_applied(id, target, SECS_10).await;
        assert_eq!(normal_entries(&c.dbs[&id]).await.len(), 1);
    }

    // Only dead addresses: a clear error naming what was tried, not a hang.
    let lonely = CaClient::with_transport(
        nexus_trust::raft::TcpTransport,
        vec![dead.clone()],
        Duration::from_millis(300),
    );
    let err = lonely.write(Command::Noop).await.unwrap_err();
    assert!(matches!(err, CaClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_quorum_reports_no_leader() {
    let mut c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let follower = c.other_than(leader);
    let third = *c
        .ids()
        .iter()
        .find(|i| **i != leader && **i != follower)
        .unwrap();
    c.stop(leader).await;
    c.stop(third).await;
    // Give the survivor time to notice the leader is gone.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = c.nodes[&follower].write(Command::Noop).await.unwrap_err();
    assert!(
        matches!(
            err,
            CaClientError::NoLeader { .. }
                | CaClientError::ForwardFailed { .. }
                | CaClientError::Timeout { .. }
        ),
        "{err}"
    );
}

async fn roundtrip(
    stream: &mut tokio::net::TcpStream,
    id: u64,
    payload: &[u8],
) -> (u64, WireResponse) {
    let frame = encode_frame(id, payload, u32::MAX).unwrap();
    stream.write_all(&frame).await.unwrap();
    let (rid, body) = read_frame(stream, u32::MAX).await.unwrap().unwrap();
    (rid, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_a_clear_error_and_do_not_hurt_the_member() {
    let c = Cluster::new(3, no_snapshots()).await;
    let leader = c.wait_leader(&c.ids(), SECS_10).await;
    let addr = c.addrs[&leader].clone();

    // Garbage that is not even a frame (an HTTP request): its first 4 bytes read as a huge
    // length, so the member answers BadFrame on id 0 and closes.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (id, body) = read_frame(&mut s, u32::MAX).await.unwrap().unwrap();
    assert_eq!(id, BAD_FRAME_ID);
    match serde_json::from_slice::<WireResponse>(&body).unwrap() {
        WireResponse::BadFrame(reason) => {
            assert!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => panic!("expected BadFrame, got {other:?}"),
    }
    assert!(
        read_frame(&mut s, u32::MAX).await.unwrap().is_none(),
        "connection closed"
    );

    // A too-short length prefix.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0, 0, 0, 2, 0xaa, 0xbb]).await.unwrap();
    let (id, body) = read_frame(&mut s, u32::MAX).await.unwrap().unwrap();
    assert_eq!(id, BAD_FRAME_ID);
    assert!(matches!(
        serde_json::from_slice::<WireResponse>(&body).unwrap(),
        WireResponse::BadFrame(r) if r.contains("shorter than the 8-byte request id")
    ));

    // A well-formed frame with a garbage payload: BadRequest for that id, connection stays up.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (id, resp) = roundtrip(&mut s, 41, b"\xff\xfe not json").await;
    assert_eq!(id, 41);
    assert!(matches!(resp, WireResponse::BadRequest(r) if r.contains("does not decode")));
    let status = serde_json::to_vec(&WireRequest::Client(ClientRequest::Status)).unwrap();
    let (id, resp) = roundtrip(&mut s, 42, &status).await;
    assert_eq!(id, 42);
    assert!(matches!(resp, WireResponse::Client(ClientReply::Status(st)) if st.id == leader));

    // The member (and the group) still works.
    c.nodes[&leader].write(Command::Noop).await.unwrap();
    assert_eq!(c.wait_leader(&c.ids(), SECS_10).await, leader);
}
