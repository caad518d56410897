//! [`CaNode`]: one member of the CA group — openraft, sled storage, the listener, forwarding.
//!
//! Call order: [`CaNode::start`] (opens storage, binds the listener, starts Raft); on exactly one
//! set of founding members [`CaNode::initialize`] (idempotent); then [`CaNode::write`],
//! [`CaNode::read_linearizable`], membership changes and [`CaNode::status`] from any member —
//! requests reaching a follower are forwarded to the leader; finally [`CaNode::shutdown`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError,
    RaftError,
};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Config, ServerState};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::batcher::{BatchStats, GroupCommit};
use super::log_store::SledLogStore;
use super::network::{CaNetworkFactory, LinkError, Links};
use super::policy::{LinkPolicy, parse_node_key};
use super::runtime::{seed_thread_rng, set_default_seed};
use super::state_machine::{OpenError, SharedState, SledStateMachine};
use super::transport::{TcpTransport, Transport};
use super::wire::{ClientReply, ClientRequest, FRAME_BYTES_MAX_DEFAULT, WireRequest, WireResponse};
use super::{CaPeer, CaRaft, NodeId, TypeConfig};
use crate::ca::{CaError, CaState, Command, ISSUE_BATCH_MAX, IssueRequest, Presigned, Response};
use crate::mic::Mic;

/// Raft timings, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaTimings {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_min_ms: u64,
    /// Upper bound (exclusive) of the randomised election timeout.
    pub election_max_ms: u64,
    /// Deadline of one client operation (write, read, membership change), forwarding included.
    pub client_timeout_ms: u64,
}

impl Default for CaTimings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            client_timeout_ms: 5_000,
        }
    }
}

/// When to snapshot and how much log to keep behind a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    /// Build a snapshot once this many entries were applied since the last one.
    pub logs_since_last: u64,
    /// Entries kept in the log behind the snapshot (for followers that lag a little).
    pub logs_to_keep: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            logs_since_last: 5_000,
            logs_to_keep: 1_000,
        }
    }
}

/// The wall clock or a virtual one: milliseconds since the Unix epoch, stamped into commands by
/// the proposing node.
#[derive(Clone)]
pub struct CaClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for CaClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaClock")
    }
}

impl CaClock {
    /// The system wall clock.
    pub fn wall() -> Self {
        Self(Arc::new(|| {
            #[allow(
                clippy::disallowed_methods,
                reason = "the production clock of the proposer; cores get now_ms as input"
            )]
            let now = std::time::SystemTime::now();
            now.duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        }))
    }

    /// A clock reading `f` (a simulator's virtual clock, a test's fixed time).
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The current time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

/// Everything [`CaNode::start`] needs.
#[derive(Debug, Clone)]
pub struct CaNodeConfig<T: Transport = TcpTransport> {
    /// This member's Raft id (unique in the group, never reused).
    pub node_id: NodeId,
    /// Where to bind the listener (`host:port`; port 0 picks one, see [`CaNode::local_addr`]).
    pub listen_addr: String,
    /// The node's sled database; the Raft layer uses its own trees in it.
    pub db: sled::Db,
    /// Seed of openraft's RNG (election timeouts), derived from the node seed.
    pub seed: u64,
    /// Raft timings.
    pub timings: CaTimings,
    /// Snapshot policy.
    pub snapshot: SnapshotPolicy,
    /// Bound on a frame's length (both directions).
    pub frame_bytes_max: u32,
    /// Most issue requests coalesced into one log entry by the batcher (at most
    /// [`ISSUE_BATCH_MAX`]).
    pub issue_batch_max: usize,
    /// Issue requests waiting for the batcher before `issue` fails fast.
    pub issue_queue_max: usize,
    /// Issue batches in flight at once (1 = classic group commit).
    pub issue_pipeline_max: usize,
    /// Clock stamped into proposed commands.
    pub clock: CaClock,
    /// Byte-stream transport.
    pub transport: T,
}

impl CaNodeConfig<TcpTransport> {
    /// A TCP configuration with default timings, snapshot policy and limits.
    pub fn new(node_id: NodeId, listen_addr: impl Into<String>, db: sled::Db, seed: u64) -> Self {
        Self {
            node_id,
            listen_addr: listen_addr.into(),
            db,
            seed,
            timings: CaTimings::default(),
            snapshot: SnapshotPolicy::default(),
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            issue_batch_max: ISSUE_BATCH_MAX,
            issue_queue_max: 65_536,
            issue_pipeline_max: 2,
            clock: CaClock::wall(),
            transport: TcpTransport,
        }
    }
}

impl<T: Transport> CaNodeConfig<T> {
    /// The same configuration over another transport (e.g. [`super::TlsTransport`]).
    pub fn with_transport<U: Transport>(self, transport: U) -> CaNodeConfig<U> {
        CaNodeConfig {
            node_id: self.node_id,
            listen_addr: self.listen_addr,
            db: self.db,
            seed: self.seed,
            timings: self.timings,
            snapshot: self.snapshot,
            frame_bytes_max: self.frame_bytes_max,
            issue_batch_max: self.issue_batch_max,
            issue_queue_max: self.issue_queue_max,
            issue_pipeline_max: self.issue_pipeline_max,
            clock: self.clock,
            transport,
        }
    }
}

/// Why [`CaNode::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Raft configuration is invalid (e.g. election min ≥ max).
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// Opening the sled trees failed.
    #[error("opening the Raft log in sled: {0}")]
    Sled(#[from] sled::Error),
    /// The persisted state machine snapshot is unusable.
    #[error("opening the CA state machine: {0}")]
    StateMachine(#[from] OpenError),
    /// Binding the listener failed.
    #[error("binding the CA listener on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// openraft refused to start (storage error while loading).
    #[error("starting Raft: {0}")]
    Raft(String),
}

/// Why a CA operation failed. Each variant says whether the operation may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaClientError {
    /// No leader was known for the whole deadline (election in progress, no quorum). Not applied.
    #[error(
        "{op}: no CA leader known after waiting {waited_ms} ms (election in progress or no quorum)"
    )]
    NoLeader {
        /// The operation.
        op: &'static str,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The deadline passed with the operation in flight; it may or may not have been applied.
    #[error("{op}: no answer within {after_ms} ms; it may or may not have been applied")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline.
        after_ms: u64,
    },
    /// Forwarding to the leader broke after sending; it may or may not have been applied.
    #[error("{op}: forwarding to the leader at {leader_addr} failed: {reason}")]
    ForwardFailed {
        /// The operation.
        op: &'static str,
        /// The leader's address.
        leader_addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The leader refused the operation (not applied).
    #[error("{op} rejected: {reason}")]
    Rejected {
        /// The operation.
        op: &'static str,
        /// The leader's reason.
        reason: String,
    },
    /// No CA member could be reached at all (client side; not applied).
    #[error("{op}: no CA member reachable (tried {tried}): {last_error}")]
    Unreachable {
        /// The operation.
        op: &'static str,
        /// Addresses tried.
        tried: String,
        /// The last connect error.
        last_error: String,
    },
    /// The issuance queue is full (not applied); retry later.
    #[error("issuance queue full ({queue_max} requests waiting)")]
    QueueFull {
        /// The configured bound.
        queue_max: usize,
    },
    /// The node is shutting down (not applied, or unknown if it was in flight).
    #[error("the CA node is shutting down: {0}")]
    ShuttingDown(String),
}

/// A member's role, as metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaRole {
    /// Replicating to the others.
    Leader,
    /// Following a leader (or waiting for one).
    Follower,
    /// Campaigning.
    Candidate,
    /// Receiving the log without a vote.
    Learner,
    /// Stopped.
    Shutdown,
}

impl CaRole {
    /// A stable number for a gauge: 0 shutdown, 1 learner, 2 follower, 3 candidate, 4 leader.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Shutdown => 0,
            Self::Learner => 1,
            Self::Follower => 2,
            Self::Candidate => 3,
            Self::Leader => 4,
        }
    }
}

/// One member's view of the CA group (what `status` and metrics report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaStatus {
    /// This member's id.
    pub id: NodeId,
    /// Its role.
    pub role: CaRole,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The leader's address, if known.
    pub leader_addr: Option<String>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last applied entry.
    pub last_applied_index: Option<u64>,
    /// Index covered by the last snapshot.
    pub snapshot_index: Option<u64>,
    /// Voter ids (sorted).
    pub voters: Vec<NodeId>,
    /// Learner ids (sorted).
    pub learners: Vec<NodeId>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
}

/// What one attempt at an operation produced.
pub(crate) enum Attempt<R> {
    Done(R),
    /// Not the leader; the leader if known.
    Redirect(Option<(NodeId, CaPeer)>),
    /// Transient (no quorum yet); try again after a pause.
    Retry(String),
    Fail(CaClientError),
}

fn redirect<R>(f: ForwardToLeader<NodeId, CaPeer>) -> Attempt<R> {
    Attempt::Redirect(f.leader_id.zip(f.leader_node))
}

/// What a finished `client_write` means for the caller.
fn write_outcome(
    r: Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, CaPeer>>>,
) -> Attempt<Response> {
    match r {
        Ok(r) => Attempt::Done(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => redirect(f),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Attempt::Fail(CaClientError::Rejected {
                op: "write",
                reason: e.to_string(),
            })
        }
        Err(RaftError::Fatal(f)) => Attempt::Fail(CaClientError::ShuttingDown(f.to_string())),
    }
}

/// A change still in progress is transient (the previous change commits shortly); anything else
/// (empty membership, unknown learner) is the caller's mistake.
fn membership_error<R>(op: &'static str, e: ChangeMembershipError<NodeId>) -> Attempt<R> {
    match e {
        ChangeMembershipError::InProgress(_) => Attempt::Retry(e.to_string()),
        _ => Attempt::Fail(CaClientError::Rejected {
            op,
            reason: e.to_string(),
        }),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a leader's reply to a forwarded request.
pub(crate) fn parse_reply<R>(
    op: &'static str,
    reply: WireResponse,
    want: impl FnOnce(ClientReply) -> Result<R, Box<ClientReply>>,
) -> Attempt<R> {
    match reply {
        WireResponse::Client(ClientReply::NotLeader { leader }) => Attempt::Redirect(leader),
        WireResponse::Client(ClientReply::Failed(reason)) => {
            Attempt::Fail(CaClientError::Rejected { op, reason })
        }
        WireResponse::Refused(reason) => Attempt::Fail(CaClientError::Rejected {
            op,
            reason: format!("refused by the CA link policy: {reason}"),
        }),
        WireResponse::Client(c) => match want(c) {
            Ok(r) => Attempt::Done(r),
            Err(other) => Attempt::Fail(CaClientError::Rejected {
                op,
                reason: format!("unexpected reply {other:?}"),
            }),
        },
        other => Attempt::Fail(CaClientError::Rejected {
            op,
            reason: format!("unexpected reply {other:?}"),
        }),
    }
}

/// How often the leader's presigned MIC signatures were used ([`Command::IssueSigned`]).
#[derive(Debug, Default)]
pub struct PresignStats {
    /// Issue batches this member proposed as leader with presigned signatures.
    pub batches: AtomicU64,
    /// Presigned signatures the applied entry used (the serial guess was right).
    pub used: AtomicU64,
    /// Presigned signatures not used (wrong serial guess; the members signed themselves).
    pub missed: AtomicU64,
}

/// Releases a presigned batch's serial reservation when its proposal fails or is abandoned
/// (`apply` releases it when the entry is applied; releasing twice is harmless).
struct Reservation<'a> {
    state: &'a SharedState,
    first: u64,
    token: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.state
            .write()
            .reservations
            .release(self.first, self.token);
    }
}

/// The state shared by the node handle, the listener and the batcher.
pub(crate) struct Core<T: Transport> {
    pub(crate) id: NodeId,
    pub(crate) raft: CaRaft,
    pub(crate) state: SharedState,
    pub(crate) links: Arc<Links<T>>,
    pub(crate) timings: CaTimings,
    pub(crate) frame_bytes_max: u32,
    /// The transport's access policy, if it authenticates peers (see [`Transport::policy`]).
    pub(crate) policy: Option<Arc<LinkPolicy>>,
    /// Held from planning a presigned batch until it is queued in openraft, so presigned
    /// batches enter the log in the order their serials were reserved.
    propose_order: tokio::sync::Mutex<()>,
    pub(crate) presign_stats: PresignStats,
}

impl<T: Transport> Core<T> {
    fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.timings.client_timeout_ms)
    }

    fn retry_pause(&self) -> Duration {
        Duration::from_millis(self.timings.heartbeat_ms.max(5))
    }

    /// Serves one request that arrived on the listener.
    pub(crate) async fn handle(&self, req: WireRequest) -> WireResponse {
        match req {
            WireRequest::AppendEntries(rpc) => {
                WireResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            WireRequest::Vote(rpc) => WireResponse::Vote(self.raft.vote(rpc).await),
            WireRequest::InstallSnapshot(rpc) => {
                WireResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            WireRequest::Client(c) => WireResponse::Client(self.handle_client(c).await),
        }
    }

    async fn handle_client(&self, req: ClientRequest) -> ClientReply {
        let reply = |a: Attempt<ClientReply>| match a {
            Attempt::Done(r) => r,
            Attempt::Redirect(leader) => ClientReply::NotLeader { leader },
            Attempt::Retry(reason) => ClientReply::Failed(reason),
            Attempt::Fail(e) => ClientReply::Failed(e.to_string()),
        };
        let deadline = Instant::now() + self.client_timeout();
        match req {
            // Only a leader proposes presigned MICs, from requests it checked itself: a client
            // could otherwise have the CA record signatures it never made.
            ClientRequest::Write(Command::IssueSigned { .. }) => ClientReply::Failed(
                "presigned issue commands are proposed only by the leader itself; send an issue \
                 command"
                    .into(),
            ),
            ClientRequest::Write(cmd) => reply(
                self.local_write(cmd, deadline)
                    .await
                    .map_done(ClientReply::Written),
            ),
            ClientRequest::ReadIndex => reply(
                self.local_read_index(deadline)
                    .await
                    .map_done(ClientReply::ReadIndex),
            ),
            ClientRequest::AddVoter { id, peer } => reply(
                self.local_add_voter(id, peer, deadline)
                    .await
                    .map_done(|()| ClientReply::MembershipChanged),
            ),
            ClientRequest::RemoveVoter { id } => reply(
                self.local_remove_voter(id, deadline)
                    .await
                    .map_done(|()| ClientReply::MembershipChanged),
            ),
            ClientRequest::Status => ClientReply::Status(self.status()),
            ClientRequest::Read(query) => self.serve_read(query, deadline).await,
        }
    }

    pub(crate) fn status(&self) -> CaStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let role = match m.state {
            ServerState::Leader => CaRole::Leader,
            ServerState::Follower if voters.contains(&m.id) => CaRole::Follower,
            ServerState::Follower | ServerState::Learner => CaRole::Learner,
            ServerState::Candidate => CaRole::Candidate,
            ServerState::Shutdown => CaRole::Shutdown,
        };
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|p| p.addr.clone());
        CaStatus {
            id: m.id,
            role,
            leader: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            voters: voters.into_iter().collect(),
            learners,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    /// Proposes `cmd` if this member is the leader. A [`Command::Issue`] on the leader goes out
    /// as [`Command::IssueSigned`]: signed once here instead of on every member.
    async fn local_write(&self, cmd: Command, deadline: Instant) -> Attempt<Response> {
        let Command::Issue { now_ms, requests } = cmd else {
            return self.propose(cmd, deadline).await;
        };
        if self.raft.metrics().borrow().current_leader != Some(self.id) {
            // Not the leader (as far as this member knows): openraft redirects the write.
            return self
                .propose(Command::Issue { now_ms, requests }, deadline)
                .await;
        }
        let order = self.propose_order.lock().await;
        let (cmd, reservation) = self.presign(now_ms, requests);
        let expected: Vec<Option<u64>> = match &cmd {
            Command::IssueSigned { signatures, .. } => {
                signatures.iter().map(|p| p.map(|p| p.serial)).collect()
            }
            _ => Vec::new(),
        };
        let queued = tokio::time::timeout_at(deadline, self.raft.client_write_ff(cmd)).await;
        drop(order);
        let outcome = match queued {
            Err(_) => self.write_timeout(),
            Ok(Err(fatal)) => Attempt::Fail(CaClientError::ShuttingDown(fatal.to_string())),
            Ok(Ok(rx)) => match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => self.write_timeout(),
                Ok(Err(_)) => Attempt::Fail(CaClientError::ShuttingDown(
                    "the Raft core stopped before answering the write".into(),
                )),
                Ok(Ok(result)) => write_outcome(result.map_err(RaftError::APIError)),
            },
        };
        drop(reservation);
        if let Attempt::Done(Response::Issued(results)) = &outcome {
            let used = results
                .iter()
                .zip(&expected)
                .filter(
                    |(r, want)| matches!((r, want), (Ok(mic), Some(s)) if mic.body.serial == *s),
                )
                .count() as u64;
            let planned = expected.iter().filter(|e| e.is_some()).count() as u64;
            self.presign_stats.used.fetch_add(used, Ordering::Relaxed);
            self.presign_stats
                .missed
                .fetch_add(planned - used, Ordering::Relaxed);
        }
        outcome
    }

    /// Turns an issue batch into [`Command::IssueSigned`] with a serial reservation, or leaves
    /// it a plain [`Command::Issue`] when the state is not bootstrapped yet (apply refuses it).
    fn presign(
        &self,
        now_ms: u64,
        requests: Vec<IssueRequest>,
    ) -> (Command, Option<Reservation<'_>>) {
        let (plan, first, token) = {
            let mut applied = self.state.write();
            let first = applied
                .reservations
                .next_serial_after(applied.ca.next_serial());
            let Some(plan) = applied.ca.plan_issue(now_ms, &requests, first) else {
                return (Command::Issue { now_ms, requests }, None);
            };
            let token = applied.reservations.reserve(first, plan.new_mics());
            (plan, first, token)
        };
        let reservation = Reservation {
            state: &self.state,
            first,
            token,
        };
        // Signing is CPU work of tens of microseconds per MIC; no lock on the state is held.
        let (ca_key_id, signatures): (u32, Vec<Option<Presigned>>) = plan.sign();
        self.presign_stats.batches.fetch_add(1, Ordering::Relaxed);
        (
            Command::IssueSigned {
                now_ms,
                ca_key_id,
                requests,
                signatures,
            },
            Some(reservation),
        )
    }

    fn write_timeout<R>(&self) -> Attempt<R> {
        Attempt::Fail(CaClientError::Timeout {
            op: "write",
            after_ms: self.timings.client_timeout_ms,
        })
    }

    async fn propose(&self, cmd: Command, deadline: Instant) -> Attempt<Response> {
        match tokio::time::timeout_at(deadline, self.raft.client_write(cmd)).await {
            Err(_) => self.write_timeout(),
            Ok(r) => write_outcome(r),
        }
    }

    async fn local_read_index(&self, deadline: Instant) -> Attempt<Option<u64>> {
        match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
            Err(_) => Attempt::Fail(CaClientError::Timeout {
                op: "read",
                after_ms: self.timings.client_timeout_ms,
            }),
            Ok(Ok((read, _applied))) => Attempt::Done(read.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => redirect(f),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Attempt::Retry(e.to_string())
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Attempt::Fail(CaClientError::ShuttingDown(f.to_string()))
            }
        }
    }

    async fn membership_change(
        &self,
        op: &'static str,
        changes: ChangeMembers<NodeId, CaPeer>,
        deadline: Instant,
    ) -> Attempt<()> {
        let fut = self.raft.change_membership(changes, false);
        match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => Attempt::Fail(CaClientError::Timeout {
                op,
                after_ms: self.timings.client_timeout_ms,
            }),
            Ok(Ok(_)) => Attempt::Done(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => redirect(f),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                membership_error(op, e)
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Attempt::Fail(CaClientError::ShuttingDown(f.to_string()))
            }
        }
    }

    async fn local_add_voter(&self, id: NodeId, peer: CaPeer, deadline: Instant) -> Attempt<()> {
        let op = "add_voter";
        let fut = self.raft.add_learner(id, peer, true);
        match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => {
                return Attempt::Fail(CaClientError::Timeout {
                    op,
                    after_ms: self.timings.client_timeout_ms,
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return redirect(f);
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                return membership_error(op, e);
            }
            Ok(Err(RaftError::Fatal(f))) => {
                return Attempt::Fail(CaClientError::ShuttingDown(f.to_string()));
            }
        }
        self.membership_change(
            op,
            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            deadline,
        )
        .await
    }

    async fn local_remove_voter(&self, id: NodeId, deadline: Instant) -> Attempt<()> {
        self.membership_change(
            "remove_voter",
            ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            deadline,
        )
        .await
    }

    /// Proposes `cmd` (forwarded to the leader if needed).
    pub(crate) async fn write(&self, cmd: Command) -> Result<Response, CaClientError> {
        self.route(
            "write",
            |deadline| self.local_write(cmd.clone(), deadline),
            || ClientRequest::Write(cmd.clone()),
            |reply| match reply {
                ClientReply::Written(r) => Ok(r),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// Proposes one batch of issue requests stamped with `now_ms`; one result per request.
    pub(crate) async fn issue_batch(
        &self,
        now_ms: u64,
        requests: Vec<IssueRequest>,
    ) -> Result<Vec<Result<Mic, CaError>>, CaClientError> {
        let n = requests.len();
        match self.write(Command::Issue { now_ms, requests }).await? {
            Response::Issued(results) => Ok(results),
            // The whole command was refused (e.g. not bootstrapped): every request gets it.
            Response::Error(e) => Ok(vec![Err(e); n]),
            other => Err(CaClientError::Rejected {
                op: "issue",
                reason: format!("unexpected response to an issue batch: {other:?}"),
            }),
        }
    }

    /// Runs `local` here; if this member is not the leader, sends `remote()` to the leader and
    /// parses the reply with `want`; retries transient failures until the client deadline.
    pub(crate) async fn route<R, L, F>(
        &self,
        op: &'static str,
        mut local: L,
        remote: impl Fn() -> ClientRequest,
        want: impl Fn(ClientReply) -> Result<R, Box<ClientReply>>,
    ) -> Result<R, CaClientError>
    where
        L: FnMut(Instant) -> F,
        F: Future<Output = Attempt<R>>,
    {
        let start = Instant::now();
        let deadline = start + self.client_timeout();
        let mut leader: Option<(NodeId, CaPeer)> = None;
        let mut last_error: Option<CaClientError> = None;
        loop {
            let attempt = match &leader {
                Some((id, _)) if *id == self.id => local(deadline).await,
                None => local(deadline).await,
                Some((_, peer)) => {
                    let link = self.links.get(&peer.addr);
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    match link.call(&WireRequest::Client(remote()), timeout).await {
                        Ok(reply) => parse_reply(op, reply, &want),
                        Err(e @ LinkError::Timeout { .. }) => {
                            let _ = e;
                            return Err(CaClientError::Timeout {
                                op,
                                after_ms: self.timings.client_timeout_ms,
                            });
                        }
                        Err(e) if e.not_sent() => {
                            last_error = Some(CaClientError::ForwardFailed {
                                op,
                                leader_addr: peer.addr.clone(),
                                reason: e.to_string(),
                            });
                            Attempt::Redirect(None)
                        }
                        Err(e) => {
                            return Err(CaClientError::ForwardFailed {
                                op,
                                leader_addr: peer.addr.clone(),
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            };
            match attempt {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fail(e) => return Err(e),
                Attempt::Redirect(Some(l)) if leader.as_ref() != Some(&l) => {
                    leader = Some(l);
                    continue;
                }
                Attempt::Redirect(_) => {
                    // Unknown or unchanged leader: let the election / our view settle.
                    leader = None;
                }
                Attempt::Retry(reason) => {
                    last_error = Some(CaClientError::Rejected { op, reason });
                }
            }
            if Instant::now() + self.retry_pause() >= deadline {
                return Err(last_error.unwrap_or(CaClientError::NoLeader {
                    op,
                    waited_ms: ms(start.elapsed()),
                }));
            }
            tokio::time::sleep(self.retry_pause()).await;
        }
    }
}

impl<R> Attempt<R> {
    fn map_done<S>(self, f: impl FnOnce(R) -> S) -> Attempt<S> {
        match self {
            Attempt::Done(r) => Attempt::Done(f(r)),
            Attempt::Redirect(l) => Attempt::Redirect(l),
            Attempt::Retry(r) => Attempt::Retry(r),
            Attempt::Fail(e) => Attempt::Fail(e),
        }
    }
}

/// One member of the CA group. See the module docs for the call order.
pub struct CaNode<T: Transport = TcpTransport> {
    core: Arc<Core<T>>,
    local_addr: String,
    server: JoinHandle<()>,
    /// Keeps the transport's policy in step with the membership (authenticating transports).
    membership_feed: Option<JoinHandle<()>>,
    issuer: GroupCommit<IssueRequest, Result<Mic, CaError>>,
    clock: CaClock,
}

impl<T: Transport> std::fmt::Debug for CaNode<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaNode")
            .field("id", &self.core.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Drop for CaNode<T> {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(feed) = &self.membership_feed {
            feed.abort();
        }
    }
}

/// A set of node keys.
type KeySet = BTreeSet<[u8; 32]>;

/// The node keys of the voters and learners in `raft`'s effective membership, and the node
/// fields that are not keys (a member added with a malformed node id cannot be authenticated).
fn membership_keys(raft: &CaRaft) -> (KeySet, KeySet, Vec<String>) {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let mut bad = Vec::new();
    let mut keys_of = |ids: Vec<NodeId>| -> KeySet {
        ids.into_iter()
            .filter_map(|id| membership.get_node(&id))
            .filter_map(|peer| {
                let key = parse_node_key(&peer.node);
                if key.is_none() {
                    bad.push(peer.to_string());
                }
                key
            })
            .collect()
    };
    let voters = keys_of(membership.voter_ids().collect());
    let learners = keys_of(membership.learner_ids().collect());
    (voters, learners, bad)
}

/// Hands every change of the membership's keys to `policy`, until Raft stops.
async fn feed_membership(raft: CaRaft, policy: Arc<LinkPolicy>) {
    let mut rx = raft.metrics();
    let mut last: Option<(KeySet, KeySet)> = None;
    loop {
        let (voters, learners, bad) = membership_keys(&raft);
        if last.as_ref() != Some(&(voters.clone(), learners.clone())) {
            if !bad.is_empty() {
                tracing::warn!(members = ?bad, "CA members whose node id is not a 32-byte hex key cannot be authenticated");
            }
            tracing::debug!(
                voters = voters.len(),
                learners = learners.len(),
                "CA link policy: membership changed"
            );
            policy.set_membership(voters.clone(), learners.clone());
            last = Some((voters, learners));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl<T: Transport> CaNode<T> {
    /// Opens the Raft trees in `config.db`, binds the listener and starts Raft. A restarted
    /// member resumes from its log and snapshot; a new one waits for [`CaNode::initialize`] or
    /// to be added by the leader.
    pub async fn start(config: CaNodeConfig<T>) -> Result<Self, StartError> {
        // openraft draws election timeouts from the runtime's thread-local RNG: seed this
        // thread (the simulator's only thread) and the default for worker threads.
        seed_thread_rng(config.seed);
        set_default_seed(config.seed);
        let raft_config = Config {
            cluster_name: "nexus-ca".into(),
            heartbeat_interval: config.timings.heartbeat_ms,
            election_timeout_min: config.timings.election_min_ms,
            election_timeout_max: config.timings.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                config.snapshot.logs_since_last,
            ),
            max_in_snapshot_log_to_keep: config.snapshot.logs_to_keep,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()?;
        let log = SledLogStore::open(&config.db)?;
        let sm = SledStateMachine::open(&config.db)?;
        let state = sm.shared();
        let links = Arc::new(Links::new(config.transport.clone(), config.frame_bytes_max));
        let listener = config
            .transport
            .bind(&config.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen_addr.clone(),
                source,
            })?;
        let local_addr = T::local_addr(&listener).map_err(|source| StartError::Bind {
            addr: config.listen_addr.clone(),
            source,
        })?;
        let network = CaNetworkFactory::new(config.node_id, links.clone());
        let raft = CaRaft::new(config.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let core = Arc::new(Core {
            id: config.node_id,
            raft,
            state,
            links,
            timings: config.timings.clone(),
            frame_bytes_max: config.frame_bytes_max,
            policy: config.transport.policy(),
            propose_order: tokio::sync::Mutex::new(()),
            presign_stats: PresignStats::default(),
        });
        // The policy learns this member's membership before the listener serves a frame.
        let membership_feed = core.policy.clone().map(|policy| {
            let (voters, learners, _) = membership_keys(&core.raft);
            policy.set_membership(voters, learners);
            tokio::spawn(feed_membership(core.raft.clone(), policy))
        });
        let server = tokio::spawn(super::server::serve::<T>(listener, core.clone()));
        let issuer = {
            let (core, clock) = (core.clone(), config.clock.clone());
            GroupCommit::spawn(
                config.issue_batch_max.clamp(1, ISSUE_BATCH_MAX),
                config.issue_queue_max,
                config.issue_pipeline_max,
                move |requests| {
                    let (core, now_ms) = (core.clone(), clock.now_ms());
                    async move { core.issue_batch(now_ms, requests).await }
                },
            )
        };
        Ok(Self {
            core,
            local_addr,
            server,
            membership_feed,
            issuer,
            clock: config.clock,
        })
    }

    /// This member's Raft id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> &str {
        &self.local_addr
    }

    /// The underlying openraft handle (metrics, waits; tests and the simulator).
    pub fn raft(&self) -> &CaRaft {
        &self.core.raft
    }

    /// Forms the group with `members` (including this node). Idempotent: if the group is already
    /// initialised (this node has a log or a vote), this is `Ok`.
    pub async fn initialize(&self, members: BTreeMap<NodeId, CaPeer>) -> Result<(), CaClientError> {
        match self.core.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(CaClientError::Rejected {
                    op: "initialize",
                    reason: e.to_string(),
                })
            }
            Err(RaftError::Fatal(f)) => Err(CaClientError::ShuttingDown(f.to_string())),
        }
    }

    /// Proposes `cmd` and returns what applying it produced, forwarding to the leader if this
    /// member is not the leader.
    pub async fn write(&self, cmd: Command) -> Result<Response, CaClientError> {
        self.core.write(cmd).await
    }

    /// Issues one MIC through the group-commit batcher: concurrent calls coalesce into one
    /// [`Command::Issue`] of up to `issue_batch_max` requests while earlier batches are in
    /// flight. The outer error is the Raft layer's (not applied / unknown); the inner one is
    /// the CA's verdict on this request.
    pub async fn issue(&self, req: IssueRequest) -> Result<Result<Mic, CaError>, CaClientError> {
        self.issuer.submit(req).await
    }

    /// Proposes one [`Command::Issue`] with exactly these requests (no batching; for callers
    /// that batch themselves, and for comparison in benchmarks).
    pub async fn issue_unbatched(
        &self,
        requests: Vec<IssueRequest>,
    ) -> Result<Vec<Result<Mic, CaError>>, CaClientError> {
        self.core.issue_batch(self.clock.now_ms(), requests).await
    }

    /// Counters of the issuance batcher (batches, requests, largest batch).
    pub fn issue_stats(&self) -> &BatchStats {
        self.issuer.stats()
    }

    /// How often this member, as leader, had its presigned MIC signatures used.
    pub fn presign_stats(&self) -> &PresignStats {
        &self.core.presign_stats
    }

    /// Runs `f` on the CA state once it reflects every write acknowledged before this call
    /// (leader: quorum-confirmed read index; follower: the leader's read index, then waits for
    /// its own state machine to reach it).
    pub async fn read_linearizable<V>(
        &self,
        f: impl FnOnce(&CaState) -> V,
    ) -> Result<V, CaClientError> {
        let core = &self.core;
        let start = Instant::now();
        let index = core
            .route(
                "read",
                |deadline| core.local_read_index(deadline),
                || ClientRequest::ReadIndex,
                |reply| match reply {
                    ClientReply::ReadIndex(i) => Ok(i),
                    other => Err(Box::new(other)),
                },
            )
            .await?;
        if let Some(index) = index {
            let left = core.client_timeout().saturating_sub(start.elapsed());
            core.raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|e| match e {
                    openraft::metrics::WaitError::Timeout(..) => CaClientError::Timeout {
                        op: "read",
                        after_ms: core.timings.client_timeout_ms,
                    },
                    openraft::metrics::WaitError::ShuttingDown => {
                        CaClientError::ShuttingDown("while waiting to apply".into())
                    }
                })?;
        }
        let applied = core.state.read();
        Ok(f(&applied.ca))
    }

    /// Adds `id` as a learner, waits for it to catch up, then promotes it to voter (forwarded to
    /// the leader if needed). Adding an existing voter succeeds without change.
    pub async fn add_voter(&self, id: NodeId, peer: CaPeer) -> Result<(), CaClientError> {
        let core = &self.core;
        core.route(
            "add_voter",
            |deadline| core.local_add_voter(id, peer.clone(), deadline),
            || ClientRequest::AddVoter {
                id,
                peer: peer.clone(),
            },
            |reply| match reply {
                ClientReply::MembershipChanged => Ok(()),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// Removes `id` from the voters and the membership (forwarded to the leader if needed).
    pub async fn remove_voter(&self, id: NodeId) -> Result<(), CaClientError> {
        let core = &self.core;
        core.route(
            "remove_voter",
            |deadline| core.local_remove_voter(id, deadline),
            || ClientRequest::RemoveVoter { id },
            |reply| match reply {
                ClientReply::MembershipChanged => Ok(()),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// This member's view of the group (from openraft's metrics; no I/O).
    pub fn status(&self) -> CaStatus {
        self.core.status()
    }

    /// Stops the listener and Raft, closes peer links. In-flight requests fail. Idempotent.
    pub async fn shutdown(&self) {
        self.server.abort();
        if let Some(feed) = &self.membership_feed {
            feed.abort();
        }
        self.issuer.stop();
        self.core.links.clear();
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft core ended abnormally");
        }
    }
}
