//! [`TrustActor`]: the node's part in NexTrust. It owns the CA Raft member (on CA voters) or a
//! client of the CA group (everywhere else), the node's own certificate, and the node's
//! revocation set; it makes no protocol decision itself: the CA state machine, the MIC format
//! and the revocation set are sans-IO cores in `nexus-trust-core`, and the node's trust
//! decisions are its [`TrustEngine`], which this actor feeds with events and whose
//! [`TrustCommand`]s it carries out.
//!
//! What it does, on a timer (every [`TICK`], or the revocation poll if shorter) and on input:
//! - **Voters** start a [`CaNode`] on the node's sled database when the actor starts (a restart
//!   of the actor restarts the member from its log). Voters advertise their Raft address in
//!   membership metadata ([`nexus_gossip::MemberMeta::ca_raft`]).
//! - **Engine inputs**: each tick the alive members advertising a CA Raft address and, on a
//!   voter, its Raft status; the results of the work the engine asked for (verified and stored
//!   here first); revocation-set changes. The engine decides, like Consul's
//!   `bootstrap_expect`, which voter forms the group and with whom, when the leader proposes
//!   `Command::Bootstrap` (a fresh CA Ed25519 key and the attestation circuit's Groth16 keys,
//!   `zk::setup`; the state machine refuses a second bootstrap, so two leaders racing is
//!   harmless), when to read the CA keys, when to obtain or renew the node MIC (2/3 of its
//!   lifetime), when to poll revocations, and when to hand the material to the registry.
//!   Assumption (as in Consul): do not start more voters than `bootstrap_expect` before the
//!   group exists; later voters join through `POST /v1/ca/voters`.
//! - **Non-voters** build a [`CaClient`] over the Raft addresses the engine names
//!   ([`TrustCommand::Connect`]).
//! - **Authenticated links**: every CA link (Raft RPCs between voters, client requests from
//!   other nodes) is TLS 1.3 with the node identity key as a raw public key
//!   ([`TlsTransport`]). Each tick the actor hands the link policy what it knows of the fabric:
//!   the keys of members advertising a CA Raft address (the expected voters, which stand in
//!   for the voter set until this node's Raft membership exists) and the keys of every alive or
//!   suspect member (allowed to send client requests). The voter set itself comes from the
//!   Raft membership (see `nexus_trust::raft::policy`). Refusals are exported as
//!   `nexus_ca_handshakes_refused_total`, `nexus_ca_handshakes_failed_out_total` and
//!   `nexus_ca_frames_refused_total`.
//! - **Trust material**: the CA keys and circuit verifying keys (linearizable read), the node
//!   MIC (kind `node`, idempotent `request_id` derived from the node id) and the revocation set
//!   are persisted after every change.
//! - **Revocations**: the admin API commits a revoke and hands the record here
//!   ([`TrustMsg::Committed`]); this actor broadcasts it through the gossip overlay. Records
//!   arriving by gossip (the gossip actor demultiplexes overlay payloads by their `NXRV` magic
//!   into [`TrustInput::Revocation`]) are verified into the [`RevocationSet`]; the engine's
//!   polls of `revocations_after(contiguous_seq)` are the backstop for anything gossip lost.
//! - **Registry**: on [`TrustCommand::Publish`] (after each change of the trust material, and
//!   every [`REGISTRY_RESEND`], so a restarted registry catches up) the registry actor gets a
//!   `RegistryMsg::Trust(TrustUpdate)`: CA keys, circuit verifying keys and every revocation
//!   record held (duplicates are harmless to it); the session actor gets it with the node MIC.
//!
//! Slow work (Raft writes and reads, Groth16 setup) runs in spawned tasks that report back as
//! [`TrustMsg::Done`], so the mailbox keeps answering the admin API; the engine runs at most one
//! task of each [`Job`] kind at a time. The admin API does its CA operations itself through the
//! [`CaAccess`] handle it asks for ([`TrustMsg::Access`]); handles are cheap clones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_gossip::{MemberState, MemberView, NodeId};
use nexus_trust::ca::{CaError, Command, IssueRequest, Response};
use nexus_trust::engine::{
    CaMember, EngineConfig, Held, JobOutcome, NodeMicLife, RevocationFacts, TrustCommand,
    TrustEngine,
};
use nexus_trust::mic::{CaKeys, Claim, Mic, SubjectKind};
use nexus_trust::raft::node::CaClock;
use nexus_trust::raft::{
    CaAnswer, CaClient, CaClientError, CaKeyEntry, CaNode, CaNodeConfig, CaPeer, CaQuery, CaRole,
    CaStatus, CaTimings, LinkPolicy, TcpTransport, TlsTransport, Transport,
};
use nexus_trust::revocation::{Inserted, REVOCATION_MAGIC, RevocationSet, SignedRevocation};
use nexus_trust::verify::TrustUpdate;
use nexus_trust::zk;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use crate::GossipMsg;
use crate::env::Storage;
use crate::metrics::NodeMetrics;
use crate::registry_actor::RegistryMsg;
use crate::session_actor::SessionMsg;
use crate::supervisor::{SupervisorMsg, lookup_child};
use crate::task::AbortOnDrop;

/// Inputs the trust actor's inbox holds before the gossip actor starts dropping them.
pub const TRUST_INBOX_CAPACITY: usize = 1024;
/// How often the actor feeds the engine (membership, Raft status, time) and exports metrics.
pub const TICK: Duration = Duration::from_millis(250);
/// Revocation records asked for in one poll (the CA caps it at `ca::LIST_LIMIT_MAX`).
pub const REVOCATION_PAGE: u32 = 1_000;
/// Serials [`TrustView::revoked`] lists at most.
pub const VIEW_REVOKED_MAX: usize = 1_000;
/// Period of the re-sends of the trust material to the registry.
pub const REGISTRY_RESEND: Duration = Duration::from_secs(5);
/// Deadline for asking another actor.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// The CA key id of the first (and, for now, only) CA key.
pub const CA_KEY_ID: u32 = 1;
/// Publisher named in node MICs.
pub const NODE_MIC_PUBLISHER: &str = "nexus-node";

const NODE_MIC_KEY: &str = "trust/node-mic";
const CA_KEYS_KEY: &str = "trust/ca-keys";
const CIRCUIT_PREFIX: &str = "trust/circuit/";
const REVOCATIONS_KEY: &str = "trust/revocations";

/// `[ca]` settings (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSettings {
    /// Whether this node is a CA voter (runs a Raft member).
    pub voter: bool,
    /// Where a voter's Raft listener binds.
    pub raft_listen: Option<SocketAddr>,
    /// Voters that must be alive before the group is formed (3 or 5).
    pub bootstrap_expect: usize,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Deadline of one CA operation (write, read, membership change).
    pub client_timeout_ms: u64,
    /// Lifetime of the node's own MIC.
    pub node_cert_validity: Duration,
    /// How often the node asks the CA for revocations it has not seen (gossip's backstop).
    pub revocation_poll: Duration,
}

impl Default for CaSettings {
    fn default() -> Self {
        let t = CaTimings::default();
        CaSettings {
            voter: false,
            raft_listen: None,
            bootstrap_expect: 3,
            heartbeat_ms: t.heartbeat_ms,
            election_timeout_min_ms: t.election_min_ms,
            election_timeout_max_ms: t.election_max_ms,
            client_timeout_ms: t.client_timeout_ms,
            node_cert_validity: Duration::from_secs(86_400),
            revocation_poll: Duration::from_millis(5_000),
        }
    }
}

impl CaSettings {
    fn timings(&self) -> CaTimings {
        CaTimings {
            heartbeat_ms: self.heartbeat_ms,
            election_min_ms: self.election_timeout_min_ms,
            election_max_ms: self.election_timeout_max_ms,
            client_timeout_ms: self.client_timeout_ms,
        }
    }
}

/// The Raft id of a node: the first 8 bytes of its node id, big-endian.
pub fn raft_id(node: &NodeId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&node.0[..8]);
    u64::from_be_bytes(first)
}

/// The idempotency key of a node's first MIC request: the same on every retry and restart.
pub fn node_mic_request_id(node: &NodeId) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"nexus/node-mic/v1\0")
        .chain_update(node.0)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// TCP for the CA listener, handing over the listener `nexus node run` bound at startup (so a
/// port in use is a configuration error before anything is written). A restarted member binds
/// the same address again.
#[derive(Clone, Debug, Default)]
pub struct HandoffTcp {
    slot: Arc<std::sync::Mutex<Option<std::net::TcpListener>>>,
}

/// Attempts to re-bind the Raft address while the previous member's listener is closing.
const REBIND_ATTEMPTS: u32 = 40;

impl HandoffTcp {
    /// A transport whose first `bind` returns `listener`.
    pub fn new(listener: std::net::TcpListener) -> Self {
        HandoffTcp {
            slot: Arc::new(std::sync::Mutex::new(Some(listener))),
        }
    }
}

impl Transport for HandoffTcp {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: &str) -> std::io::Result<Self::Listener> {
        let handed = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = handed {
            listener.set_nonblocking(true)?;
            return tokio::net::TcpListener::from_std(listener);
        }
        // The previous member's listener closes when its aborted server task is dropped,
        // shortly after shutdown: retry for a moment.
        let mut attempt = 0;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && attempt < REBIND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn accept(listener: &mut Self::Listener) -> std::io::Result<(Self::Stream, String)> {
        <TcpTransport as Transport>::accept(listener).await
    }

    fn local_addr(listener: &Self::Listener) -> std::io::Result<String> {
        <TcpTransport as Transport>::local_addr(listener)
    }

    async fn connect(&self, addr: &str) -> std::io::Result<Self::Stream> {
        TcpTransport.connect(addr).await
    }
}

/// A voter's CA links: TLS with the node key over the handed-over TCP listener.
pub type VoterLinks = TlsTransport<HandoffTcp>;
/// A non-voter's CA links: TLS with the node key over TCP.
pub type ClientLinks = TlsTransport<TcpTransport>;

/// How the admin API (and this actor's tasks) reach the CA: through this node's own member, or
/// through a client of the voters.
#[derive(Clone, Debug)]
pub enum CaAccess {
    /// This node is a voter.
    Voter(Arc<CaNode<VoterLinks>>),
    /// This node is a client of the voters it sees in membership.
    Client(Arc<CaClient<ClientLinks>>),
}

impl CaAccess {
    /// Proposes `cmd` (forwarded to the leader) and returns what applying it produced.
    pub async fn write(&self, cmd: Command) -> Result<Response, CaClientError> {
        match self {
            CaAccess::Voter(n) => n.write(cmd).await,
            CaAccess::Client(c) => c.write(cmd).await,
        }
    }

    /// [`CaAccess::write`], timed into `seconds` (answered or not).
    pub async fn write_timed(
        &self,
        cmd: Command,
        seconds: &prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Response, CaClientError> {
        #[allow(
            clippy::disallowed_methods,
            reason = "a driver timing a real Raft round"
        )]
        let started = std::time::Instant::now();
        let result = self.write(cmd).await;
        seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    /// A linearizable read of the CA state.
    pub async fn read(&self, query: CaQuery) -> Result<CaAnswer, CaClientError> {
        match self {
            CaAccess::Voter(n) => n.read(query).await,
            CaAccess::Client(c) => c.read(query).await,
        }
    }

    /// The group's status: this voter's own view, or the view of the member a client reaches.
    pub async fn status(&self) -> Result<CaStatus, CaClientError> {
        match self {
            CaAccess::Voter(n) => Ok(n.status()),
            CaAccess::Client(c) => c.status().await,
        }
    }

    /// Adds a voter (learner first, then promotion).
    pub async fn add_voter(&self, id: u64, peer: CaPeer) -> Result<(), CaClientError> {
        match self {
            CaAccess::Voter(n) => n.add_voter(id, peer).await,
            CaAccess::Client(c) => c.add_voter(id, peer).await,
        }
    }

    /// Removes a voter.
    pub async fn remove_voter(&self, id: u64) -> Result<(), CaClientError> {
        match self {
            CaAccess::Voter(n) => n.remove_voter(id).await,
            CaAccess::Client(c) => c.remove_voter(id).await,
        }
    }

    /// Whether this node is a voter.
    pub fn is_voter(&self) -> bool {
        matches!(self, CaAccess::Voter(_))
    }
}

/// What the gossip actor hands the trust actor.
#[derive(Debug, Clone)]
pub enum TrustInput {
    /// An overlay broadcast starting with the revocation magic `NXRV`.
    Revocation(Vec<u8>),
}

/// Sending half of the trust actor's inbox (held by the gossip actor).
pub type TrustInbox = mpsc::Sender<TrustInput>;

/// Creates the trust actor's inbox; the receiver outlives actor restarts.
pub fn trust_inbox() -> (TrustInbox, Arc<Mutex<mpsc::Receiver<TrustInput>>>) {
    let (tx, rx) = mpsc::channel(TRUST_INBOX_CAPACITY);
    (tx, Arc::new(Mutex::new(rx)))
}

/// Whether an overlay payload is a revocation record (for the gossip actor's demultiplexer).
pub fn is_revocation_payload(payload: &[u8]) -> bool {
    payload.starts_with(&REVOCATION_MAGIC)
}

/// The trust material a node holds, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustView {
    /// Whether this node is a CA voter.
    pub voter: bool,
    /// This node's Raft id.
    pub raft_id: u64,
    /// The CA keys this node trusts (empty until the CA is bootstrapped and read).
    pub ca_keys: Vec<CaKeyEntry>,
    /// Circuit ids whose verifying keys this node holds.
    pub circuits: Vec<u16>,
    /// This node's own MIC.
    pub node_mic: Option<Mic>,
    /// Revocation records held.
    pub revocations: usize,
    /// Every revocation seq up to this one has been seen.
    pub contiguous_seq: u64,
    /// Revoked serials held (ascending, at most [`VIEW_REVOKED_MAX`]).
    pub revoked: Vec<u64>,
}

/// Background work kinds (the engine runs at most one of each at a time).
pub use nexus_trust::engine::Job;

/// What a background job produced.
#[derive(Debug)]
pub enum JobResult {
    /// `initialize` returned.
    Initialized,
    /// The bootstrap command was applied (or refused as a second one).
    Bootstrapped,
    /// The CA is not bootstrapped yet (nothing to fetch).
    NotBootstrapped,
    /// CA keys and circuit verifying keys.
    Keys(Vec<CaKeyEntry>, Vec<(u16, Vec<u8>)>),
    /// The node MIC (new or renewed).
    NodeMic(Box<Mic>),
    /// Revocation records after the asked seq.
    Revocations(Vec<SignedRevocation>),
}

/// Messages to [`TrustActor`].
#[derive(Debug)]
pub enum TrustMsg {
    /// Timer: feed the engine.
    Tick,
    /// An input from the gossip actor (through the inbox pump).
    Input(TrustInput),
    /// The CA handle for the admin API (`None` while no voter is known).
    Access(RpcReplyPort<Option<CaAccess>>),
    /// The node's trust material.
    View(RpcReplyPort<TrustView>),
    /// A revocation this node committed: insert it and broadcast it.
    Committed(Box<SignedRevocation>),
    /// A background job finished.
    Done(Job, Result<JobResult, String>),
}

/// Arguments of [`TrustActor`]; cloned for every (re)start.
#[derive(Clone)]
pub struct TrustArgs {
    /// The node's identity key (its public half is the node id and the node MIC's subject).
    pub key: SigningKey,
    /// The node's name (a claim in its MIC).
    pub name: String,
    /// Durable node storage (node MIC, CA keys, revocation set).
    pub storage: Arc<dyn Storage>,
    /// The node's sled database, for the Raft log (voters only).
    pub db: Option<sled::Db>,
    /// The listener for the Raft address, bound at startup (voters only).
    pub raft_listener: Option<HandoffTcp>,
    /// The address the Raft listener is bound to (voters only).
    pub raft_addr: Option<SocketAddr>,
    /// Settings.
    pub settings: CaSettings,
    /// Where metrics go.
    pub metrics: NodeMetrics,
    /// Input from the gossip actor.
    pub inbox: Arc<Mutex<mpsc::Receiver<TrustInput>>>,
    /// Seed of openraft's RNG (derived from the node seed).
    pub raft_seed: u64,
    /// Entropy for a CA key and circuit setup if this node bootstraps the CA.
    pub ca_seed: [u8; 32],
    /// The wall clock (certificate validity, revocation expiry); virtual in the simulator.
    pub clock: CaClock,
}

impl std::fmt::Debug for TrustArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustArgs")
            .field("settings", &self.settings)
            .field("raft_addr", &self.raft_addr)
            .finish_non_exhaustive()
    }
}

/// State of [`TrustActor`].
pub struct TrustState {
    args: TrustArgs,
    node_id: NodeId,
    supervisor: ActorRef<SupervisorMsg>,
    access: Option<CaAccess>,
    /// The node's trust decisions.
    engine: TrustEngine,
    /// Who may use this node's CA links (fed each tick; the Raft member keeps the voters).
    link_policy: Arc<LinkPolicy>,
    /// The transport a non-voter's client uses (shares `link_policy`).
    client_links: ClientLinks,
    /// Link refusal counters already added to the metrics.
    link_stats_exported: (u64, u64, u64),
    keys: CaKeys,
    key_entries: Vec<CaKeyEntry>,
    circuits: BTreeMap<u16, Vec<u8>>,
    revocations: RevocationSet,
    node_mic: Option<Mic>,
    _timers: Vec<AbortOnDrop>,
}

impl std::fmt::Debug for TrustState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustState")
            .field("voter", &self.args.settings.voter)
            .field("holds_keys", &self.engine.holds_keys())
            .field("revocations", &self.revocations.len())
            .finish_non_exhaustive()
    }
}

/// The trust actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustActor;

fn load_keys(storage: &dyn Storage) -> Result<(Vec<CaKeyEntry>, CaKeys), String> {
    let Some(bytes) = storage.get(CA_KEYS_KEY).map_err(|e| e.to_string())? else {
        return Ok((Vec::new(), CaKeys::new()));
    };
    let entries: Vec<CaKeyEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{CA_KEYS_KEY}: stored value is corrupt: {e}"))?;
    let keys = keys_of(&entries)?;
    Ok((entries, keys))
}

fn keys_of(entries: &[CaKeyEntry]) -> Result<CaKeys, String> {
    let mut keys = CaKeys::new();
    for e in entries {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&e.public_key)
            .map_err(|err| format!("CA key {} is not an Ed25519 public key: {err}", e.ca_key_id))?;
        keys.insert(e.ca_key_id, key);
    }
    Ok(keys)
}

impl TrustState {
    fn now_ms(&self) -> u64 {
        self.args.clock.now_ms()
    }

    fn view(&self) -> TrustView {
        TrustView {
            voter: self.args.settings.voter,
            raft_id: raft_id(&self.node_id),
            ca_keys: self.key_entries.clone(),
            circuits: self.circuits.keys().copied().collect(),
            node_mic: self.node_mic.clone(),
            revocations: self.revocations.len(),
            contiguous_seq: self.revocations.contiguous_seq(),
            revoked: self.revoked_serials(),
        }
    }

    fn revoked_serials(&self) -> Vec<u64> {
        // The set exposes records by serial only through `get`; its export lists them by
        // serial, so walk the export's records.
        decode_export_records(&self.revocations.export())
            .into_iter()
            .map(|r| r.serial)
            .take(VIEW_REVOKED_MAX)
            .collect()
    }

    fn persist_revocations(&self) {
        if let Err(err) = self
            .args
            .storage
            .put(REVOCATIONS_KEY, &self.revocations.export())
        {
            tracing::warn!(%err, "cannot persist the revocation set");
        }
        self.args
            .metrics
            .trust_revocations
            .set(i64::try_from(self.revocations.len()).unwrap_or(i64::MAX));
    }

    /// What the engine knows of the revocation set after a change (`changed`) or a poll.
    fn revocation_facts(&self, changed: bool) -> RevocationFacts {
        RevocationFacts {
            changed,
            contiguous_seq: self.revocations.contiguous_seq(),
            node_mic_revoked: self
                .node_mic
                .as_ref()
                .is_some_and(|m| self.revocations.is_revoked(m.body.serial)),
        }
    }
}

/// The records in a [`RevocationSet::export`], by serial (the set has no iterator; its export
/// lists the records).
fn decode_export_records(export: &[u8]) -> Vec<SignedRevocation> {
    use nexus_trust::revocation::REVOCATION_BYTES;
    // magic 4, version 1, contiguous 8, gap count 4, gaps 8 each, record count 4, records.
    let read_u32 = |at: usize| -> Option<usize> {
        let b: [u8; 4] = export.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(b)).ok()
    };
    let Some(gaps) = read_u32(13) else {
        return Vec::new();
    };
    let records_at = 17 + 8 * gaps;
    let Some(count) = read_u32(records_at) else {
        return Vec::new();
    };
    (0..count)
        .filter_map(|i| {
            let start = records_at + 4 + i * REVOCATION_BYTES;
            SignedRevocation::decode(export.get(start..start + REVOCATION_BYTES)?).ok()
        })
        .collect()
}

impl TrustActor {
    async fn gossip(state: &TrustState) -> Option<ActorRef<GossipMsg>> {
        lookup_child(&state.supervisor, "gossip", CALL_TIMEOUT).await
    }

    async fn members(state: &TrustState) -> Vec<MemberView> {
        let Some(gossip) = Self::gossip(state).await else {
            return Vec::new();
        };
        match gossip.call(GossipMsg::Members, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(members)) => members,
            _ => Vec::new(),
        }
    }

    /// Alive members advertising a CA Raft address, by node key (ascending).
    fn voters_alive(members: &[MemberView]) -> BTreeMap<[u8; 32], SocketAddr> {
        let mut voters = BTreeMap::new();
        for m in members {
            if m.state != MemberState::Alive {
                continue;
            }
            if let Some(addr) = m.id.meta().ca_raft() {
                voters.insert(m.id.node_id().0, addr);
            }
        }
        voters
    }

    /// Sends the trust material (CA keys, verifying keys, every revocation record held) to
    /// the registry actor, and with the node's own MIC to the session actor. False if the
    /// registry could not be reached (restarting): the engine asks again with its next call;
    /// the session actor gets it whenever the registry does.
    async fn send_to_registry(state: &TrustState) -> bool {
        if state.keys.is_empty() {
            return true;
        }
        let update = TrustUpdate {
            ca_keys: state.keys.clone(),
            circuits: state
                .circuits
                .iter()
                .map(|(id, vk)| (*id, vk.clone()))
                .collect(),
            revocations: decode_export_records(&state.revocations.export()),
        };
        if let Some(sessions) =
            lookup_child::<SessionMsg>(&state.supervisor, "sessions", CALL_TIMEOUT).await
        {
            let _ = sessions.send_message(SessionMsg::Trust(
                Box::new(update.clone()),
                state.node_mic.clone().map(Box::new),
            ));
        }
        let Some(registry) =
            lookup_child::<RegistryMsg>(&state.supervisor, "registry", CALL_TIMEOUT).await
        else {
            return false;
        };
        registry
            .send_message(RegistryMsg::Trust(Box::new(update), None))
            .is_ok()
    }

    fn spawn_job<F>(myself: &ActorRef<TrustMsg>, job: Job, work: F)
    where
        F: std::future::Future<Output = Result<JobResult, String>> + Send + 'static,
    {
        let me = myself.clone();
        tokio::spawn(async move {
            let result = work.await;
            let _ = me.send_message(TrustMsg::Done(job, result));
        });
    }

    /// Hands the link policy the fabric's keys: expected voters (members advertising a CA
    /// Raft address) and allowed clients (every alive or suspect member).
    fn feed_link_policy(state: &TrustState, members: &[MemberView]) {
        let mut expected_voters = BTreeSet::new();
        let mut clients = BTreeSet::new();
        for m in members {
            if !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                continue;
            }
            let key = m.id.node_id().0;
            if m.id.meta().ca_raft().is_some() {
                expected_voters.insert(key);
            }
            clients.insert(key);
        }
        state.link_policy.set_fabric(expected_voters, clients);
    }

    /// Adds the link refusals counted since the last tick to the metrics.
    fn export_link_stats(state: &mut TrustState) {
        let now = state.link_policy.stats().snapshot();
        let last = state.link_stats_exported;
        let m = &state.args.metrics;
        m.ca_handshakes_refused.inc_by(now.0.saturating_sub(last.0));
        m.ca_handshakes_failed_out
            .inc_by(now.1.saturating_sub(last.1));
        m.ca_frames_refused.inc_by(now.2.saturating_sub(last.2));
        state.link_stats_exported = now;
    }

    /// Feeds the engine what it needs each tick (voters alive, this voter's Raft status) and
    /// the time.
    async fn tick(state: &mut TrustState) {
        let members = Self::members(state).await;
        Self::feed_link_policy(state, &members);
        Self::export_link_stats(state);
        state.engine.on_voters(Self::voters_alive(&members));
        if let Some(CaAccess::Voter(node)) = &state.access {
            let status = node.status();
            Self::export_status(state, &status);
            state.engine.on_ca_member(CaMember {
                formed: !status.voters.is_empty(),
                leader: status.role == CaRole::Leader,
            });
        }
        let now = state.now_ms();
        state.engine.handle_timeout(now);
    }

    /// Carries out the engine's commands.
    async fn execute(myself: &ActorRef<TrustMsg>, state: &mut TrustState) {
        while let Some(command) = state.engine.poll_command() {
            match command {
                TrustCommand::Initialize { founders } => {
                    let Some(CaAccess::Voter(node)) = state.access.clone() else {
                        let now = state.now_ms();
                        state
                            .engine
                            .handle_job(now, Job::Initialize, JobOutcome::Failed);
                        continue;
                    };
                    let members: BTreeMap<u64, CaPeer> = founders
                        .iter()
                        .map(|f| {
                            let node = NodeId(f.node);
                            (
                                raft_id(&node),
                                CaPeer {
                                    addr: f.addr.to_string(),
                                    node: node.to_hex(),
                                },
                            )
                        })
                        .collect();
                    tracing::info!(
                        voters = members.len(),
                        "forming the CA group (bootstrap_expect reached)"
                    );
                    Self::spawn_job(myself, Job::Initialize, async move {
                        node.initialize(members)
                            .await
                            .map(|()| JobResult::Initialized)
                            .map_err(|e| e.to_string())
                    });
                }
                TrustCommand::Bootstrap => {
                    let Some(CaAccess::Voter(node)) = state.access.clone() else {
                        let now = state.now_ms();
                        state
                            .engine
                            .handle_job(now, Job::Bootstrap, JobOutcome::Failed);
                        continue;
                    };
                    Self::spawn_job(myself, Job::Bootstrap, bootstrap(node, state.args.ca_seed));
                }
                TrustCommand::Connect { voters } => {
                    let addrs: Vec<String> = voters.iter().map(ToString::to_string).collect();
                    let timeout = Duration::from_millis(state.args.settings.client_timeout_ms);
                    let client =
                        CaClient::with_transport(state.client_links.clone(), addrs, timeout);
                    state.access = Some(CaAccess::Client(Arc::new(client)));
                }
                TrustCommand::FetchKeys => {
                    if let Some(access) = Self::access_for(state, Job::FetchKeys) {
                        Self::spawn_job(myself, Job::FetchKeys, fetch_keys(access));
                    }
                }
                TrustCommand::ObtainNodeMic { renew } => {
                    if let Some(access) = Self::access_for(state, Job::NodeMic) {
                        let work = obtain_node_mic(
                            access,
                            state.args.key.verifying_key().to_bytes(),
                            state.node_id,
                            state.args.name.clone(),
                            renew,
                            state.args.settings.node_cert_validity,
                            state.args.clock.clone(),
                        );
                        Self::spawn_job(myself, Job::NodeMic, work);
                    }
                }
                TrustCommand::PollRevocations { after } => {
                    if let Some(access) = Self::access_for(state, Job::PollRevocations) {
                        Self::spawn_job(
                            myself,
                            Job::PollRevocations,
                            poll_revocations(access, after),
                        );
                    }
                }
                TrustCommand::Publish => {
                    if !Self::send_to_registry(state).await {
                        state.engine.on_publish_failed();
                    }
                }
            }
        }
    }

    /// The CA handle for a job's work; without one (the engine asks only when the node reaches
    /// the CA) the job fails back to the engine.
    fn access_for(state: &mut TrustState, job: Job) -> Option<CaAccess> {
        let access = state.access.clone();
        if access.is_none() {
            let now = state.now_ms();
            state.engine.handle_job(now, job, JobOutcome::Failed);
        }
        access
    }

    fn export_status(state: &TrustState, status: &CaStatus) {
        let m = &state.args.metrics;
        m.ca_role.set(status.role.as_gauge());
        m.ca_term
            .set(i64::try_from(status.term).unwrap_or(i64::MAX));
        m.ca_leader.set(
            status
                .leader
                .map(|l| i64::from_be_bytes(l.to_be_bytes()))
                .unwrap_or(-1),
        );
        m.ca_last_applied.set(
            status
                .last_applied_index
                .and_then(|i| i64::try_from(i).ok())
                .unwrap_or(-1),
        );
    }

    /// Verifies and keeps one revocation record; true if it was new.
    fn accept_revocation(state: &mut TrustState, record: SignedRevocation) -> bool {
        if state.keys.is_empty() {
            // No CA key to check it against yet: the poll after the keys arrive catches up.
            return false;
        }
        let now = state.now_ms();
        let revoked_at = record.revoked_at_ms;
        let serial = record.serial;
        match state.revocations.insert(&state.keys, record, now) {
            Ok(Inserted::New) => {
                state
                    .args
                    .metrics
                    .trust_revocation_lag_ms
                    .set(i64::try_from(now.saturating_sub(revoked_at)).unwrap_or(i64::MAX));
                tracing::info!(serial, "revocation learnt");
                true
            }
            Ok(Inserted::Duplicate | Inserted::AlreadyExpired) => false,
            Err(err) => {
                tracing::warn!(serial, %err, "revocation record rejected");
                false
            }
        }
    }

    /// Verifies and stores what a job produced, and tells the engine what it came to.
    fn on_done(state: &mut TrustState, job: Job, result: Result<JobResult, String>) {
        let outcome = match result {
            Err(reason) => {
                tracing::debug!(?job, %reason, "trust job failed; retrying");
                JobOutcome::Failed
            }
            Ok(JobResult::Initialized) => JobOutcome::Initialized,
            Ok(JobResult::Bootstrapped) => JobOutcome::Bootstrapped,
            Ok(JobResult::NotBootstrapped) => JobOutcome::NotBootstrapped,
            Ok(JobResult::Keys(entries, circuits)) => Self::keep_keys(state, entries, circuits),
            Ok(JobResult::NodeMic(mic)) => Self::keep_node_mic(state, *mic),
            Ok(JobResult::Revocations(records)) => {
                let mut changed = false;
                for r in records {
                    changed |= Self::accept_revocation(state, r);
                }
                if changed {
                    state.persist_revocations();
                }
                JobOutcome::Revocations(state.revocation_facts(changed))
            }
        };
        let now = state.now_ms();
        state.engine.handle_job(now, job, outcome);
    }

    fn keep_keys(
        state: &mut TrustState,
        entries: Vec<CaKeyEntry>,
        circuits: Vec<(u16, Vec<u8>)>,
    ) -> JobOutcome {
        let keys = match keys_of(&entries) {
            Ok(k) => k,
            Err(err) => {
                tracing::warn!(%err, "CA keys rejected");
                return JobOutcome::Keys { accepted: false };
            }
        };
        if entries != state.key_entries {
            match serde_json::to_vec(&entries) {
                Ok(bytes) => {
                    if let Err(err) = state.args.storage.put(CA_KEYS_KEY, &bytes) {
                        tracing::warn!(%err, "cannot persist CA keys");
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot encode CA keys"),
            }
        }
        for (id, vk) in &circuits {
            if state.circuits.get(id) != Some(vk)
                && let Err(err) = state.args.storage.put(&format!("{CIRCUIT_PREFIX}{id}"), vk)
            {
                tracing::warn!(%err, circuit = id, "cannot persist a verifying key");
            }
        }
        state.key_entries = entries;
        state.keys = keys;
        state.circuits = circuits.into_iter().collect();
        JobOutcome::Keys { accepted: true }
    }

    fn keep_node_mic(state: &mut TrustState, mic: Mic) -> JobOutcome {
        if let Err(err) = mic.verify(&state.keys, state.now_ms()) {
            tracing::warn!(%err, serial = mic.body.serial, "node MIC from the CA does not verify");
            return JobOutcome::Failed;
        }
        if let Err(err) = state.args.storage.put(NODE_MIC_KEY, &mic.encode()) {
            tracing::warn!(%err, "cannot persist the node MIC");
        }
        tracing::info!(
            serial = mic.body.serial,
            not_after_ms = mic.body.not_after_ms,
            "node MIC obtained"
        );
        state.args.metrics.ca_issued.inc();
        let life = mic_life(&mic, &state.revocations);
        state.node_mic = Some(mic);
        JobOutcome::NodeMic(life)
    }
}

/// The engine's view of a node MIC.
fn mic_life(mic: &Mic, revocations: &RevocationSet) -> NodeMicLife {
    NodeMicLife {
        serial: mic.body.serial,
        not_before_ms: mic.body.not_before_ms,
        not_after_ms: mic.body.not_after_ms,
        revoked: revocations.is_revoked(mic.body.serial),
    }
}

/// Proposes the CA bootstrap unless the CA already is bootstrapped.
async fn bootstrap(node: Arc<CaNode<VoterLinks>>, seed: [u8; 32]) -> Result<JobResult, String> {
    let started = tokio::time::Instant::now();
    let bootstrapped = node
        .read_linearizable(|s| s.is_bootstrapped())
        .await
        .map_err(|e| e.to_string())?;
    if bootstrapped {
        return Ok(JobResult::Bootstrapped);
    }
    let read_ms = started.elapsed().as_millis();
    // Groth16 setup is CPU work (tens of ms in release builds): off the runtime.
    let bootstrap = tokio::task::spawn_blocking(move || {
        nexus_trust::raft::bootstrap::generate(seed, CA_KEY_ID)
            .map_err(|e| format!("circuit setup: {e}"))
    })
    .await
    .map_err(|e| format!("circuit setup task: {e}"))??;
    let setup_ms = started.elapsed().as_millis() - read_ms;
    tracing::info!(
        read_ms,
        setup_ms,
        "CA bootstrap: keys generated; committing"
    );
    match node.write(Command::Bootstrap(Box::new(bootstrap))).await {
        Ok(Response::Bootstrapped { ca_key_id }) => {
            let total_ms = started.elapsed().as_millis();
            tracing::info!(ca_key_id, total_ms, "CA bootstrapped");
            Ok(JobResult::Bootstrapped)
        }
        Ok(Response::Error(CaError::AlreadyBootstrapped { .. })) => Ok(JobResult::Bootstrapped),
        Ok(other) => Err(format!("unexpected bootstrap response {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn fetch_keys(access: CaAccess) -> Result<JobResult, String> {
    let keys = match access
        .read(CaQuery::Keys)
        .await
        .map_err(|e| e.to_string())?
    {
        CaAnswer::Keys(k) => k,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if keys.is_empty() {
        return Ok(JobResult::NotBootstrapped);
    }
    let circuit = zk::ATTESTATION_CIRCUIT_ID;
    let circuits = match access
        .read(CaQuery::Circuit(circuit))
        .await
        .map_err(|e| e.to_string())?
    {
        CaAnswer::Circuit(Some(c)) => vec![(circuit, c.verifying_key)],
        CaAnswer::Circuit(None) => Vec::new(),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    Ok(JobResult::Keys(keys, circuits))
}

async fn obtain_node_mic(
    access: CaAccess,
    subject_key: [u8; 32],
    node_id: NodeId,
    name: String,
    renew: Option<u64>,
    validity: Duration,
    clock: CaClock,
) -> Result<JobResult, String> {
    let validity_ms = millis(validity);
    let response = match renew {
        // Renew: a new serial for the same subject, with the old one in its provenance.
        Some(serial) => access
            .write(Command::Renew {
                now_ms: clock.now_ms(),
                serial,
                validity_ms,
            })
            .await
            .map_err(|e| e.to_string())?,
        None => {
            let request = IssueRequest {
                request_id: Some(node_mic_request_id(&node_id)),
                subject_key,
                kind: SubjectKind::Node,
                model: None,
                publisher: NODE_MIC_PUBLISHER.into(),
                provenance: vec![],
                claims: vec![Claim {
                    key: "name".into(),
                    value: name,
                }],
                zk_commitment: None,
                validity_ms,
            };
            access
                .write(Command::Issue {
                    now_ms: clock.now_ms(),
                    requests: vec![request],
                })
                .await
                .map_err(|e| e.to_string())?
        }
    };
    let mic = match response {
        Response::Issued(mut results) if results.len() == 1 => {
            results.remove(0).map_err(|e| e.to_string())?
        }
        Response::Renewed(result) => result.map_err(|e| e.to_string())?,
        other => return Err(format!("unexpected response {other:?}")),
    };
    if mic.body.subject_key != subject_key {
        return Err(format!(
            "the CA returned MIC {} for another subject",
            mic.body.serial
        ));
    }
    Ok(JobResult::NodeMic(Box::new(mic)))
}

async fn poll_revocations(access: CaAccess, after: u64) -> Result<JobResult, String> {
    match access
        .read(CaQuery::RevocationsAfter {
            seq: after,
            limit: REVOCATION_PAGE,
        })
        .await
        .map_err(|e| e.to_string())?
    {
        CaAnswer::Revocations(records) => Ok(JobResult::Revocations(records)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

impl Actor for TrustActor {
    type Msg = TrustMsg;
    type State = TrustState;
    type Arguments = (TrustArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<TrustMsg>,
        (args, supervisor): (TrustArgs, ActorRef<SupervisorMsg>),
    ) -> Result<TrustState, ActorProcessingErr> {
        let node_id = NodeId(args.key.verifying_key().to_bytes());
        let storage = args.storage.clone();
        let (key_entries, keys) = load_keys(storage.as_ref())?;
        let revocations = match storage.get(REVOCATIONS_KEY)? {
            Some(bytes) if !keys.is_empty() => RevocationSet::import(&bytes, &keys)
                .map_err(|e| format!("{REVOCATIONS_KEY}: {e}"))?,
            _ => RevocationSet::new(),
        };
        let mut circuits = BTreeMap::new();
        for (k, v) in storage.scan_prefix(CIRCUIT_PREFIX)? {
            if let Ok(id) = k[CIRCUIT_PREFIX.len()..].parse::<u16>() {
                circuits.insert(id, v);
            }
        }
        let now = args.clock.now_ms();
        let node_mic = match storage.get(NODE_MIC_KEY)? {
            None => None,
            Some(bytes) => match Mic::decode(&bytes) {
                Ok(mic) if mic.verify(&keys, now).is_ok() => Some(mic),
                Ok(mic) => {
                    tracing::info!(
                        serial = mic.body.serial,
                        "stored node MIC no longer valid; obtaining a new one"
                    );
                    None
                }
                Err(err) => {
                    tracing::warn!(%err, "stored node MIC is corrupt; obtaining a new one");
                    None
                }
            },
        };
        // One policy per incarnation: its counters start at zero with `link_stats_exported`.
        let link_policy = Arc::new(LinkPolicy::new());
        let client_links = TlsTransport::new(TcpTransport, &args.key, link_policy.clone())
            .map_err(|e| format!("CA link TLS configuration: {e}"))?;
        let access = if args.settings.voter {
            let (Some(db), Some(listener), Some(addr)) =
                (args.db.clone(), args.raft_listener.clone(), args.raft_addr)
            else {
                return Err("a CA voter needs the sled database and a bound Raft listener".into());
            };
            let transport = TlsTransport::new(listener, &args.key, link_policy.clone())
                .map_err(|e| format!("CA link TLS configuration: {e}"))?;
            // The defaults of a TCP member, over TLS on the handed-over listener.
            let mut config =
                CaNodeConfig::new(raft_id(&node_id), addr.to_string(), db, args.raft_seed)
                    .with_transport(transport);
            config.timings = args.settings.timings();
            config.clock = args.clock.clone();
            let node = CaNode::start(config).await?;
            tracing::info!(raft_id = raft_id(&node_id), addr = %node.local_addr(), "CA voter started");
            Some(CaAccess::Voter(Arc::new(node)))
        } else {
            None
        };
        args.metrics
            .trust_revocations
            .set(i64::try_from(revocations.len()).unwrap_or(i64::MAX));

        // Timers and the inbox pump die with the state (also on a panic).
        let mut timers = Vec::new();
        // The engine's deadlines are multiples of these periods: ticking at the shorter one
        // meets each within one tick.
        let me = myself.clone();
        let period = TICK
            .min(args.settings.revocation_poll)
            .max(Duration::from_millis(1));
        timers.push(AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if me.send_message(TrustMsg::Tick).is_err() {
                    break;
                }
            }
        })));
        let me = myself.clone();
        let inbox = args.inbox.clone();
        timers.push(AbortOnDrop(tokio::spawn(async move {
            let mut rx = inbox.lock().await;
            while let Some(input) = rx.recv().await {
                if me.send_message(TrustMsg::Input(input)).is_err() {
                    break;
                }
            }
        })));
        let engine = TrustEngine::new(
            EngineConfig {
                node: node_id.0,
                voter: args.settings.voter,
                bootstrap_expect: args.settings.bootstrap_expect,
                tick_ms: millis(TICK),
                revocation_poll_ms: millis(args.settings.revocation_poll),
                publish_every_ms: millis(REGISTRY_RESEND),
            },
            now,
            Held {
                keys: !keys.is_empty(),
                node_mic: node_mic.as_ref().map(|m| mic_life(m, &revocations)),
                contiguous_seq: revocations.contiguous_seq(),
            },
        );
        Ok(TrustState {
            args,
            node_id,
            supervisor,
            access,
            engine,
            link_policy,
            client_links,
            link_stats_exported: (0, 0, 0),
            keys,
            key_entries,
            circuits,
            revocations,
            node_mic,
            _timers: timers,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TrustMsg>,
        state: &mut TrustState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(CaAccess::Voter(node)) = state.access.take() {
            node.shutdown().await;
            state.args.metrics.ca_role.set(0);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TrustMsg>,
        message: TrustMsg,
        state: &mut TrustState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TrustMsg::Tick => Self::tick(state).await,
            TrustMsg::Input(TrustInput::Revocation(bytes)) => {
                match SignedRevocation::decode(&bytes) {
                    Ok(record) => {
                        if Self::accept_revocation(state, record) {
                            state.persist_revocations();
                            let facts = state.revocation_facts(true);
                            state.engine.on_revocations(facts);
                        }
                    }
                    Err(err) => tracing::debug!(%err, "undecodable revocation broadcast"),
                }
            }
            TrustMsg::Committed(record) => {
                state.args.metrics.ca_revoked.inc();
                let bytes = record.encode();
                if Self::accept_revocation(state, *record) {
                    state.persist_revocations();
                    let facts = state.revocation_facts(true);
                    state.engine.on_revocations(facts);
                }
                match Self::gossip(state).await {
                    Some(g) => {
                        if g.send_message(GossipMsg::Broadcast(bytes)).is_err() {
                            tracing::debug!(
                                "gossip actor gone; revocation not broadcast (polls catch up)"
                            );
                        }
                    }
                    None => tracing::debug!("gossip actor unavailable; revocation not broadcast"),
                }
            }
            TrustMsg::Access(reply) => {
                let _ = reply.send(state.access.clone());
            }
            TrustMsg::View(reply) => {
                let _ = reply.send(state.view());
            }
            TrustMsg::Done(job, result) => Self::on_done(state, job, result),
        }
        #[cfg(debug_assertions)]
        state.engine.check_invariants();
        Self::execute(&myself, state).await;
        Ok(())
    }
}

/// Milliseconds of a duration, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_and_request_ids_are_stable_and_distinct() {
        let a = NodeId([1; 32]);
        let mut b = NodeId([1; 32]);
        b.0[0] = 2;
        assert_eq!(raft_id(&a), 0x0101_0101_0101_0101);
        assert_ne!(raft_id(&a), raft_id(&b));
        assert_eq!(node_mic_request_id(&a), node_mic_request_id(&a));
        assert_ne!(node_mic_request_id(&a), node_mic_request_id(&b));
    }

    #[test]
    fn revocation_payloads_are_recognised_by_magic() {
        assert!(is_revocation_payload(b"NXRV\x01rest"));
        assert!(!is_revocation_payload(b"NXAD\x01rest"));
        assert!(!is_revocation_payload(b"NX"));
    }

    #[test]
    fn export_serials_are_read_back() {
        use nexus_trust::revocation::RevocationReason;
        let signing = SigningKey::from_bytes(&[9; 32]);
        let mut keys = CaKeys::new();
        keys.insert(1, signing.verifying_key());
        let mut set = RevocationSet::new();
        for (seq, serial) in [(1, 40), (2, 7), (4, 12)] {
            let r = SignedRevocation::sign(
                &signing,
                1,
                seq,
                serial,
                u64::MAX / 2,
                5,
                RevocationReason::Superseded,
            );
            set.insert(&keys, r, 10).expect("insert");
        }
        let serials: Vec<u64> = decode_export_records(&set.export())
            .iter()
            .map(|r| r.serial)
            .collect();
        assert_eq!(serials, vec![7, 12, 40]);
        assert!(decode_export_records(b"NXRS").is_empty());
    }
}
