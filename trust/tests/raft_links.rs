//! The CA's authenticated links ([`TlsTransport`]): outsiders speaking valid Raft frames are
//! refused — plain TCP and TLS with an unknown key in the handshake, a fabric member that is
//! not a voter per frame — and nothing they sent is applied; the same forged AppendEntries
//! from a voter's key is applied (so the refusals are what stops it). Voters are added and
//! removed over the same links, and the link policy follows the membership.
#![allow(clippy::unwrap_used, reason = "tests")]

mod raft_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_trust::ca::{Bootstrap, Command, IssueRequest, Response};
use nexus_trust::mic::{Claim, SubjectKind};
use nexus_trust::raft::wire::{
    self, ClientReply, ClientRequest, FRAME_BYTES_MAX_DEFAULT, WireRequest, WireResponse,
};
use nexus_trust::raft::{
    CaClient, CaClientError, CaNode, CaNodeConfig, CaPeer, Entry, LinkPolicy, NodeId, TcpTransport,
    TlsTransport, Transport, TypeConfig,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use raft_common::{normal_entries, open_db, timings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Node keys of voters 1..=4 and of outsiders.
fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn public(n: u8) -> [u8; 32] {
    key(n).verifying_key().to_bytes()
}

/// A fabric member that is not a CA voter (may send client requests).
const MEMBER: u8 = 50;
/// A key nobody knows.
const STRANGER: u8 = 66;
/// The subject key of the certificate the forged entry would mint.
const FORGED_SUBJECT: [u8; 32] = [0xf0; 32];

struct Member {
    node: CaNode<TlsTransport>,
    policy: Arc<LinkPolicy>,
    db: sled::Db,
    _dir: tempfile::TempDir,
}

/// What every member's embedder knows of the fabric: the voter keys 1..=4 advertise a CA Raft
/// address, and `MEMBER` is a fabric member.
fn fabric_policy() -> Arc<LinkPolicy> {
    let policy = Arc::new(LinkPolicy::new());
    policy.set_fabric(
        (1..=4).map(public).collect(),
        BTreeSet::from([public(MEMBER)]),
    );
    policy
}

async fn start_member(id: u8) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).await;
    let policy = fabric_policy();
    let transport = TlsTransport::new(TcpTransport, &key(id), policy.clone()).unwrap();
    let mut config = CaNodeConfig::new(
        NodeId::from(id),
        "127.0.0.1:0",
        db.clone(),
        7000 + u64::from(id),
    )
    .with_transport(transport);
    config.timings = timings();
    let node = CaNode::start(config).await.unwrap();
    Member {
        node,
        policy,
        db,
        _dir: dir,
    }
}

fn peer(id: u8, m: &Member) -> CaPeer {
    CaPeer {
        addr: m.node.local_addr().to_owned(),
        node: hex::encode(public(id)),
    }
}

/// Starts voters 1..=3 over TLS, forms the group and bootstraps the CA.
async fn three_voters() -> BTreeMap<u8, Member> {
    let mut members = BTreeMap::new();
    for id in 1..=3u8 {
        members.insert(id, start_member(id).await);
    }
    let peers: BTreeMap<NodeId, CaPeer> = members
        .iter()
        .map(|(id, m)| (NodeId::from(*id), peer(*id, m)))
        .collect();
    members[&1].node.initialize(peers).await.unwrap();
    let bootstrap = Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [9; 32],
        ca_key_id: 1,
        circuits: vec![],
    }));
    assert_eq!(
        members[&2].node.write(bootstrap).await.unwrap(),
        Response::Bootstrapped { ca_key_id: 1 }
    );
    members
}

fn request(n: u8, subject_key: [u8; 32]) -> IssueRequest {
    IssueRequest {
        request_id: Some([n; 16]),
        subject_key,
        kind: SubjectKind::Agent,
        model: None,
        publisher: "links".into(),
        provenance: vec![],
        claims: vec![Claim {
            key: "n".into(),
            value: n.to_string(),
        }],
        zk_commitment: None,
        validity_ms: 3_600_000,
    }
}

/// An AppendEntries that, accepted by `target`, appends and commits a certificate for
/// `FORGED_SUBJECT`: a higher term than the group's, claimed by voter `as_leader`, continuing
/// the target's log.
fn forged_append(target: &Member, as_leader: NodeId) -> Vec<u8> {
    let metrics = target.node.raft().metrics().borrow().clone();
    let term = metrics.current_term + 1;
    let prev = metrics.last_applied.expect("the target applied entries");
    assert_eq!(metrics.last_log_index, Some(prev.index), "target is quiet");
    let log_id = LogId::new(CommittedLeaderId::new(term, as_leader), prev.index + 1);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Normal(Command::Issue {
            now_ms: 1,
            requests: vec![request(200, FORGED_SUBJECT)],
        }),
    };
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, as_leader),
        prev_log_id: Some(prev),
        entries: vec![entry],
        leader_commit: Some(log_id),
    };
    let payload = serde_json::to_vec(&WireRequest::AppendEntries(rpc)).unwrap();
    wire::encode_frame(1, &payload, FRAME_BYTES_MAX_DEFAULT).unwrap()
}

fn client_frame(id: u64, req: ClientRequest) -> Vec<u8> {
    let payload = serde_json::to_vec(&WireRequest::Client(req)).unwrap();
    wire::encode_frame(id, &payload, FRAME_BYTES_MAX_DEFAULT).unwrap()
}

/// Sends `frame` on `stream` and reads the answer: `Ok(response)` if the server answered with a
/// frame, `Err(what happened)` if it closed, failed or stayed silent.
async fn exchange<S>(stream: &mut S, frame: &[u8]) -> Result<WireResponse, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(frame)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("flush: {e}"))?;
    let read = wire::read_frame(stream, FRAME_BYTES_MAX_DEFAULT);
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Err(_) => Err("no answer within 5 s".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(None)) => Err("closed".into()),
        Ok(Ok(Some((_, payload)))) => {
            serde_json::from_slice(&payload).map_err(|e| format!("answer does not decode: {e}"))
        }
    }
}

/// A TLS link presenting `key` to members 1..=4 (its own check accepts the voters as servers).
fn links_as(n: u8) -> TlsTransport {
    TlsTransport::new(TcpTransport, &key(n), fabric_policy()).unwrap()
}

/// What must not change on a member while outsiders knock: term, log, applied index, and the
/// forged subject absent from its log.
async fn fingerprint(m: &Member) -> (u64, Option<u64>, Option<u64>, usize) {
    let s = m.node.status();
    let entries = normal_entries(&m.db).await;
    assert!(
        !entries.iter().any(|(_, cmd)| forged(cmd)),
        "the forged certificate is in member {}'s log",
        s.id
    );
    (
        s.term,
        s.last_log_index,
        s.last_applied_index,
        entries.len(),
    )
}

fn forged(cmd: &Command) -> bool {
    matches!(cmd, Command::Issue { requests, .. }
        if requests.iter().any(|r| r.subject_key == FORGED_SUBJECT))
}

async fn certs_issued(m: &Member) -> Vec<[u8; 32]> {
    m.node
        .read_linearizable(|ca| {
            ca.list(0, 1000)
                .iter()
                .map(|mic| mic.body.subject_key)
                .collect()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_speaking_raft_are_refused_and_nothing_is_applied() {
    let members = three_voters().await;
    let leader = members[&1].node.status().leader.expect("leader");
    let leader_u8 = u8::try_from(leader).unwrap();
    let target_id = (1..=3u8).find(|id| *id != leader_u8).unwrap();
    let target = &members[&target_id];
    // One certificate through the authenticated links, then let the group go quiet.
    target
        .node
        .issue(request(1, [1; 32]))
        .await
        .unwrap()
        .unwrap();
    let certs_before = certs_issued(target).await;
    assert_eq!(certs_before, vec![[1; 32]]);
    let applied = members[&leader_u8]
        .node
        .status()
        .last_applied_index
        .unwrap();
    target
        .node
        .raft()
        .wait(Some(Duration::from_secs(5)))
        .applied_index_at_least(Some(applied), "quiet")
        .await
        .unwrap();
    let before = fingerprint(target).await;
    let frame = forged_append(target, leader);

    // 1. Plain TCP with a valid AppendEntries frame: the TLS listener drops it unread.
    let refused_before = target.policy.stats().snapshot().0;
    let mut tcp = TcpTransport
        .connect(target.node.local_addr())
        .await
        .unwrap();
    tcp.write_all(&frame).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    // What comes back is one TLS alert record (content type 21, fatal) or nothing: never a frame.
    assert!(
        answer.is_empty() || (answer.len() == 7 && answer[0] == 0x15 && answer[5] == 2),
        "plain TCP got bytes that are not a TLS alert: {answer:02x?}"
    );
    eprintln!("plain TCP refused with {answer:02x?}");

    // 2. TLS with a key nobody admitted: refused in the handshake. In TLS 1.3 the client's side
    //    completes before the server has checked the client's key, so the refusal arrives as an
    //    alert on the first read.
    match links_as(STRANGER).connect(target.node.local_addr()).await {
        Err(e) => eprintln!("stranger refused at connect: {e}"),
        Ok(mut tls) => {
            let answer = exchange(&mut tls, &frame).await;
            assert!(answer.is_err(), "a stranger got an answer: {answer:?}");
            eprintln!("stranger refused: {}", answer.unwrap_err());
        }
    }
    // Both count as refused handshakes (the handshake tasks finish asynchronously).
    for _ in 0..100 {
        if target.policy.stats().snapshot().0 >= refused_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(target.policy.stats().snapshot().0, refused_before + 2);

    // 3. A fabric member that is not a voter: the handshake completes (it may send client
    //    requests), but its Raft RPCs and membership changes are refused per frame.
    let mut member = links_as(MEMBER)
        .connect(target.node.local_addr())
        .await
        .unwrap();
    let frames_refused = target.policy.stats().snapshot().2;
    match exchange(&mut member, &frame).await {
        Ok(WireResponse::Refused(reason)) => {
            assert!(reason.contains("not a CA voter"), "{reason}");
        }
        other => panic!("AppendEntries from a non-voter: {other:?}"),
    }
    let vote = serde_json::to_vec(&WireRequest::Vote(VoteRequest::new(
        Vote::new(before.0 + 5, NodeId::from(MEMBER)),
        None,
    )))
    .unwrap();
    let vote = wire::encode_frame(2, &vote, FRAME_BYTES_MAX_DEFAULT).unwrap();
    assert!(matches!(
        exchange(&mut member, &vote).await,
        Ok(WireResponse::Refused(_))
    ));
    let join = client_frame(
        3,
        ClientRequest::AddVoter {
            id: NodeId::from(MEMBER),
            peer: CaPeer {
                addr: "127.0.0.1:9".into(),
                node: hex::encode(public(MEMBER)),
            },
        },
    );
    assert!(matches!(
        exchange(&mut member, &join).await,
        Ok(WireResponse::Refused(_))
    ));
    // Its client requests on the same connection are served.
    match exchange(&mut member, &client_frame(4, ClientRequest::Status)).await {
        Ok(WireResponse::Client(ClientReply::Status(s))) => {
            assert_eq!(s.id, NodeId::from(target_id));
        }
        other => panic!("status from a fabric member: {other:?}"),
    }
    assert_eq!(target.policy.stats().snapshot().2, frames_refused + 3);

    // Nothing was applied anywhere, the term did not move, the CA holds the same certificates.
    assert_eq!(fingerprint(target).await, before);
    for m in members.values() {
        fingerprint(m).await;
    }
    assert_eq!(certs_issued(target).await, certs_before);

    // 4. A client that does not accept the server's key gives up in the handshake.
    let fussy = Arc::new(LinkPolicy::new());
    let fussy_links = TlsTransport::new(TcpTransport, &key(MEMBER), fussy.clone()).unwrap();
    assert!(fussy_links.connect(target.node.local_addr()).await.is_err());
    assert_eq!(fussy.stats().snapshot().1, 1);

    // 5. The same frame from a voter's key is accepted and the forged certificate committed:
    //    the frame is a working attack, and the refusals above are what stopped it.
    let mut voter = links_as(leader_u8)
        .connect(target.node.local_addr())
        .await
        .unwrap();
    match exchange(&mut voter, &frame).await {
        Ok(WireResponse::AppendEntries(Ok(r))) => assert!(r.is_success(), "{r:?}"),
        other => panic!("AppendEntries from a voter's key: {other:?}"),
    }
    let entries = normal_entries(&target.db).await;
    assert!(entries.iter().any(|(_, cmd)| forged(cmd)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_and_removed_over_authenticated_links() {
    let mut members = three_voters().await;
    members.insert(4, start_member(4).await);
    let peer4 = peer(4, &members[&4]);
    // Before it joins, the fourth member's policy relies on the expected voters.
    assert_eq!(
        members[&4].policy.raft_senders(),
        (1..=4).map(public).collect()
    );
    members[&2].node.add_voter(4, peer4.clone()).await.unwrap();
    let four_voters: BTreeSet<[u8; 32]> = (1..=4).map(public).collect();
    for id in 1..=4u8 {
        wait_for(|| members[&id].policy.raft_senders() == four_voters).await;
    }
    // The new voter replicates over its authenticated links.
    members[&4]
        .node
        .issue(request(2, [2; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(certs_issued(&members[&4]).await, vec![[2; 32]]);

    // A fabric member's client: client requests pass, membership changes are refused.
    let member_links = links_as(MEMBER);
    let addrs = (1..=4u8)
        .map(|id| members[&id].node.local_addr().to_owned())
        .collect();
    let client = CaClient::with_transport(member_links, addrs, Duration::from_secs(5));
    assert_eq!(client.status().await.unwrap().voters.len(), 4);
    assert!(matches!(
        client.write(Command::Noop).await.unwrap(),
        Response::Done
    ));
    match client.remove_voter(1).await {
        Err(CaClientError::Rejected { reason, .. }) => {
            assert!(
                reason.contains("may not send membership changes"),
                "{reason}"
            );
        }
        other => panic!("membership change from a fabric member: {other:?}"),
    }
    assert_eq!(members[&1].node.status().voters, vec![1, 2, 3, 4]);

    // Removing voter 4 takes its Raft rights away on the remaining members at once.
    members[&1].node.remove_voter(4).await.unwrap();
    let three: BTreeSet<[u8; 32]> = (1..=3).map(public).collect();
    for id in 1..=3u8 {
        wait_for(|| members[&id].policy.raft_senders() == three).await;
    }
    let mut former = links_as(4)
        .connect(members[&1].node.local_addr())
        .await
        .unwrap();
    let vote = serde_json::to_vec(&WireRequest::Vote(VoteRequest::new(
        Vote::new(members[&1].node.status().term + 1, 4),
        None,
    )))
    .unwrap();
    let vote = wire::encode_frame(9, &vote, FRAME_BYTES_MAX_DEFAULT).unwrap();
    match exchange(&mut former, &vote).await {
        Ok(WireResponse::Refused(reason)) => assert!(reason.contains("not a CA voter"), "{reason}"),
        other => panic!("vote from a removed voter: {other:?}"),
    }
    members[&3]
        .node
        .issue(request(3, [3; 32]))
        .await
        .unwrap()
        .unwrap();
}

/// Polls `cond` for up to 5 s.
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cond(), "condition not reached within 5 s");
}
