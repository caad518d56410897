//! [`RegistryActor`]: owns the node's capability registry — a sans-IO
//! [`nexus_registry::RegistryNode`] (the simulator drives the same code) — and gives it time,
//! storage, an inbox and the gossip actor's overlay:
//! - **Local services** (`POST /v1/services`) are validated, persisted (one storage key holding
//!   them all), signed with the node key and broadcast through the gossip actor's overlay. Their
//!   lease runs from the last register/renew/load update; a service not renewed within its
//!   `ttl_s` is withdrawn. While a lease runs, the advert is re-published every `ttl_s / 3` so
//!   remote copies (which expire `ttl_s` after the newest version they saw) stay alive.
//! - **Remote adverts** arrive from the gossip actor through a bounded inbox (never blocking the
//!   gossip actor; when full, input is dropped and counted — anti-entropy repairs the loss).
//! - **Anti-entropy**: every `anti_entropy` period a digest goes to one random overlay neighbour,
//!   which answers with the adverts of every origin whose summary differs, and its own digest.
//! - **Membership**: after every refresh the core asks for the member list
//!   ([`nexus_registry::Output::ReadMembers`]); the actor reads it from the gossip actor and hands
//!   it back, and the core withdraws the services of members that are down or have left (the
//!   member-down events through the inbox only make this faster).
//! - **Timers** are the core's ([`RegistryNode::poll_timeout`] / [`RegistryNode::handle_timeout`]):
//!   the actor keeps one sleeping task armed at the core's next deadline, which sends
//!   [`RegistryMsg::Timeout`]; the refresh and anti-entropy periods come from
//!   [`RegistrySettings`].
//! - **Routes**: resolves register their intent class in the route table; whenever adverts, load
//!   or membership change, the table is recomputed and the resulting delta folded into the
//!   compiled route set the admin API shows (`GET /v1/intent-routes`) and sends to the table
//!   compiler ([`crate::table_compiler`]), which installs them into the forwarding table.
//!
//! - **Trust**: a registration may carry credentials (MIC + attestations), checked against the
//!   node's trust context before it is accepted and advertised with the service; adverts that
//!   arrive with credentials are verified in one batch per inbox burst (the pump forwards what is
//!   queued together). `RegistryMsg::Trust` (sent by the TrustActor) updates the context —
//!   CA keys, circuit keys, revocations — and re-evaluates held verdicts, so revoked services
//!   leave resolves and routes. Registry time is a `Timestamp` (microseconds since the node's
//!   epoch, as for the gossip cores); MIC validity is Unix time, so the actor tells the core
//!   the Unix time of its epoch.
//!
//! Versions: every advert this node signs takes the next value of a counter persisted in
//! blocks ([`nexus_registry::VERSION_BLOCK`]), so a restarted node always outranks what it
//! advertised before.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_gossip::NodeId;
use nexus_registry::{
    Coord, Credentials, CredentialsJson, Intent, LoadUpdate, NodeError, NodeTimers, Output,
    RegistryNode, RegistryStore, Resolution, Route, Sad, ServiceKey, Timestamp, TrustUpdate,
    TrustVerdict, UpdateReport,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::env::Storage;
use crate::metrics::NodeMetrics;
use crate::supervisor::{SupervisorMsg, lookup_child};
use crate::task::AbortOnDrop;
use crate::{GossipMsg, TableMsg};

/// Storage key prefix of this node's registrations: one JSON SAD per key `registry/service/<id>`.
const SERVICE_PREFIX: &str = "registry/service/";
/// Storage key of the advert-version floor (8 bytes, big endian).
const VERSION_KEY: &str = "registry/version-floor";
/// Inputs the registry's inbox holds before the gossip actor starts dropping them.
pub const INBOX_CAPACITY: usize = 4096;
/// Inputs the pump forwards in one message (a burst whose credentials are verified together).
pub const INBOX_BURST_MAX: usize = 256;
/// Deadline for asking another actor.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// What the gossip actor hands the registry: the core's input, fed to it unchanged.
pub use nexus_registry::NodeInput as RegistryInput;

/// Sending half of the registry's inbox (held by the gossip actor).
pub type RegistryInbox = mpsc::Sender<RegistryInput>;

/// Creates the registry's inbox. The receiver goes into [`RegistryArgs`]; it outlives actor
/// restarts (each incarnation takes the lock while it runs).
pub fn registry_inbox() -> (RegistryInbox, Arc<Mutex<mpsc::Receiver<RegistryInput>>>) {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    (tx, Arc::new(Mutex::new(rx)))
}

/// Timings of the registry actor (`[registry]` in the node's config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// How often leases, expiry, membership and routes are checked.
    pub refresh: Duration,
    /// How often a digest goes to a random overlay neighbour.
    pub anti_entropy: Duration,
}

impl RegistrySettings {
    /// The core's timer periods.
    pub fn timers(&self) -> NodeTimers {
        NodeTimers {
            refresh: self.refresh,
            anti_entropy: Some(self.anti_entropy),
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            refresh: Duration::from_millis(500),
            anti_entropy: Duration::from_secs(2),
        }
    }
}

/// Arguments of [`RegistryActor`]; cloned for every (re)start.
#[derive(Clone)]
pub struct RegistryArgs {
    /// The node's signing key (its public half is the node id).
    pub key: SigningKey,
    /// Durable node storage (registrations, version floor).
    pub storage: Arc<dyn Storage>,
    /// Where registry metrics go.
    pub metrics: NodeMetrics,
    /// The node's epoch (registry time is the time since it).
    pub epoch: Instant,
    /// Input from the gossip actor.
    pub inbox: Arc<Mutex<mpsc::Receiver<RegistryInput>>>,
    /// Timings.
    pub settings: RegistrySettings,
    /// Bumped before every step that can change an answer (shared with the local NexAPI
    /// endpoint's answer cache; survives restarts, which bump it too).
    pub changes: RegistryChanges,
}

/// A counter of the registry's changes: bumped before the registry actor handles any message
/// that can change a resolution (a registration, load update, advert, trust update or timer),
/// and when it (re)starts. Whoever holds a resolution obtained after reading `current() == v`
/// may answer the same intent with it again while `current()` still equals `v` (and no time
/// has passed that could expire a candidate: readers bound the age themselves).
#[derive(Clone, Debug, Default)]
pub struct RegistryChanges(Arc<std::sync::atomic::AtomicU64>);

impl RegistryChanges {
    /// The current count.
    pub fn current(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts one change.
    pub fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// [`RegistryStore`] over the node's [`Storage`].
#[derive(Debug, Clone)]
pub struct StorageStore(pub Arc<dyn Storage>);

/// A stored registration with credentials (one record, so both are written at once; a
/// registration without credentials is stored as the plain SAD, as before).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRegistration {
    sad: Sad,
    credentials: CredentialsJson,
}

/// Parses a stored registration: a plain SAD, or a SAD with credentials.
fn parse_stored(bytes: &[u8]) -> Result<(Sad, Option<Credentials>), String> {
    if let Ok(sad) = serde_json::from_slice::<Sad>(bytes) {
        return Ok((sad, None));
    }
    let stored: StoredRegistration = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let credentials = Credentials::try_from(stored.credentials)
        .map_err(|e| format!("credentials.{}: {e}", e.field()))?;
    Ok((stored.sad, Some(credentials)))
}

impl RegistryStore for StorageStore {
    fn put_service(&mut self, sad: &Sad) -> Result<(), String> {
        self.put_service_with_credentials(sad, None)
    }

    fn put_service_with_credentials(
        &mut self,
        sad: &Sad,
        credentials: Option<&Credentials>,
    ) -> Result<(), String> {
        let bytes = match credentials {
            None => serde_json::to_vec(sad),
            Some(c) => serde_json::to_vec(&StoredRegistration {
                sad: sad.clone(),
                credentials: c.to_json(),
            }),
        }
        .map_err(|e| e.to_string())?;
        self.0
            .put(&format!("{SERVICE_PREFIX}{}", sad.id), &bytes)
            .map_err(|e| e.to_string())
    }

    fn delete_service(&mut self, id: &str) -> Result<(), String> {
        self.0
            .delete(&format!("{SERVICE_PREFIX}{id}"))
            .map_err(|e| e.to_string())
    }

    fn save_version_floor(&mut self, floor: u64) -> Result<(), String> {
        self.0
            .put(VERSION_KEY, &floor.to_be_bytes())
            .map_err(|e| e.to_string())
    }
}

/// Which services `Services` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Registered on this node.
    Local,
    /// Every live advert this node holds (its own included).
    Fabric,
}

/// A service as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// The node the service is attached to.
    pub node: NodeId,
    /// The descriptor (its `version` is the advert version).
    pub sad: Sad,
    /// Milliseconds until the lease (local) or the copy (remote) expires.
    pub expires_in_ms: u64,
    /// Whether it is registered on this node.
    pub local: bool,
    /// This node's verdict on the advert's credentials: `None` without credentials, else
    /// `verified (MIC n, publisher p)`, `pending` or `rejected: <reason>`.
    pub trust: Option<String>,
}

fn trust_text(verdict: &TrustVerdict) -> Option<String> {
    match verdict {
        TrustVerdict::Unclaimed => None,
        TrustVerdict::Pending => Some("pending".into()),
        TrustVerdict::Verified(v) => Some(format!(
            "verified (MIC {}, publisher {:?})",
            v.serial, v.publisher
        )),
        TrustVerdict::Rejected(r) => Some(format!("rejected: {r}")),
    }
}

/// What a register call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// Whether the service was new (not a renewal or update).
    pub created: bool,
    /// The service as now advertised.
    pub view: ServiceView,
}

/// A resolution and, for each of its candidates in order, the subject key of the MIC its advert
/// carries: the key the service's NexStream endpoint proves. `None` for an advert without
/// credentials (a candidate's credentials are always verified: adverts whose credentials are
/// pending or rejected are never candidates).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedResolution {
    /// The resolution, as [`RegistryMsg::Resolve`] answers it.
    pub resolution: Resolution,
    /// One entry per candidate of `resolution`, in the same order.
    pub keys: Vec<Option<[u8; 32]>>,
}

/// Messages to [`RegistryActor`].
#[derive(Debug)]
pub enum RegistryMsg {
    /// Register or renew a local service (a renewal with a changed descriptor updates it), with
    /// the credentials the client supplied (checked before anything changes).
    Register(
        Box<Sad>,
        Option<Box<Credentials>>,
        RpcReplyPort<Result<Registered, NodeError>>,
    ),
    /// Withdraw a local service.
    Deregister(String, RpcReplyPort<Result<(), NodeError>>),
    /// Update load/latency of a local service (renews its lease).
    PatchLoad(
        String,
        LoadUpdate,
        RpcReplyPort<Result<ServiceView, NodeError>>,
    ),
    /// List services.
    Services(Scope, RpcReplyPort<Vec<ServiceView>>),
    /// Resolve an intent.
    Resolve(Box<Intent>, RpcReplyPort<Resolution>),
    /// Resolve an intent, and give each candidate's MIC subject key (the local NexAPI
    /// endpoint's answer carries them).
    ResolveWithKeys(Box<Intent>, RpcReplyPort<KeyedResolution>),
    /// This node's Vivaldi coordinate.
    Coordinate(RpcReplyPort<Coord>),
    /// The compiled intent routes and the version of the last delta.
    Routes(RpcReplyPort<(u64, Vec<Route>)>),
    /// An input from the gossip actor (through the inbox pump).
    Input(RegistryInput),
    /// A burst of inputs the pump found queued together (their credentials are verified in one
    /// batch).
    Inputs(Vec<RegistryInput>),
    /// The TrustActor's update (CA keys, circuit keys, revocations); replies with what changed
    /// when a port is given.
    Trust(Box<TrustUpdate>, Option<RpcReplyPort<UpdateReport>>),
    /// The core's timer is due (refresh: leases, expiry, membership, routes; anti-entropy).
    Timeout,
}

/// State of [`RegistryActor`].
pub struct RegistryState {
    args: RegistryArgs,
    supervisor: ActorRef<SupervisorMsg>,
    node: RegistryNode<StorageStore>,
    gossip: Option<ActorRef<GossipMsg>>,
    /// What the table compiler last received: route version and local (service, port) list.
    sent_to_table: Option<(u64, Vec<(String, u16)>)>,
    /// The core's deadline the timer task is armed for, and that task.
    timer: Option<(Timestamp, AbortOnDrop)>,
    _pump: AbortOnDrop,
}

impl std::fmt::Debug for RegistryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryState")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The registry actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryActor;

/// Whole milliseconds of a duration, saturating (the admin API's unit).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Registry time: the time since the node's epoch.
fn now(epoch: Instant) -> Timestamp {
    let micros = Instant::now().saturating_duration_since(epoch).as_micros();
    Timestamp::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The Unix time (ms) of `epoch`: the wall clock now minus the time since the epoch. The actor
/// is the node's driver, so reading the wall clock here is allowed; the core only gets the
/// number.
#[allow(
    clippy::disallowed_methods,
    reason = "the driver converts its monotonic epoch to Unix time once, for MIC validity"
)]
fn unix_epoch_ms(epoch: Instant) -> u64 {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    unix_now.saturating_sub(now(epoch).as_millis())
}

fn load_floor(storage: &dyn Storage) -> Result<u64, String> {
    match storage.get(VERSION_KEY).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|_| format!("{VERSION_KEY}: stored value is not 8 bytes"))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

impl RegistryState {
    fn now(&self) -> Timestamp {
        now(self.args.epoch)
    }

    fn local_view(&self, id: &str) -> Option<ServiceView> {
        let now = self.now();
        let node = self.node.node_id();
        let key = nexus_registry::ServiceKey::new(node, id);
        let trust = self
            .node
            .registry()
            .record(&key)
            .and_then(|e| trust_text(e.trust()));
        self.node.local_services().get(id).map(|s| ServiceView {
            node,
            sad: s.sad.clone(),
            expires_in_ms: millis(s.lease_until.saturating_duration_since(now)),
            local: true,
            trust,
        })
    }
}

impl RegistryActor {
    /// Resolves `intent` (tracking its class) and counts it.
    fn resolve(state: &mut RegistryState, now: Timestamp, intent: &Intent) -> Resolution {
        let started = Instant::now();
        let resolution = state.node.resolve(now, intent);
        let m = &state.args.metrics;
        m.registry_resolves.inc();
        m.registry_resolve_seconds
            .observe(started.elapsed().as_secs_f64());
        resolution
    }

    async fn gossip(state: &mut RegistryState) -> Option<ActorRef<GossipMsg>> {
        if let Some(g) = &state.gossip {
            return Some(g.clone());
        }
        let gossip: ActorRef<GossipMsg> =
            lookup_child(&state.supervisor, "gossip", CALL_TIMEOUT).await?;
        state.gossip = Some(gossip.clone());
        Some(gossip)
    }

    /// Carries out the core's outputs, and counts what it reports.
    async fn drain(state: &mut RegistryState) {
        while let Some(output) = state.node.poll_output() {
            // A broadcast's span lasts until its hand-off to the gossip actor below.
            let mut _broadcast = tracing::Span::none();
            let msg = match output {
                Output::Broadcast(bytes) => {
                    state.args.metrics.registry_adverts_published.inc();
                    _broadcast = tracing::debug_span!(target: TRACE_TARGET,
                        "registry.broadcast", bytes = bytes.len());
                    GossipMsg::Broadcast(bytes)
                }
                Output::Direct(to, bytes) => GossipMsg::SendDirect(to, bytes),
                Output::DirectToRandomNeighbor(bytes) => GossipMsg::DirectToRandomNeighbor(bytes),
                Output::ReadMembers => {
                    Self::read_members(state).await;
                    // Asked after every refresh: the table compiler may have restarted and lost
                    // what it was sent, so it is sent again.
                    state.sent_to_table = None;
                    continue;
                }
            };
            let Some(gossip) = Self::gossip(state).await else {
                tracing::debug!("gossip actor unavailable; registry output dropped");
                continue;
            };
            if let Err(ractor::MessagingErr::SendErr(msg)) = gossip.send_message(msg) {
                // The gossip actor restarted: look it up again once.
                state.gossip = None;
                if let Some(gossip) = Self::gossip(state).await {
                    let _ = gossip.send_message(msg);
                }
            }
        }
        let report = state.node.take_report();
        let span = tracing::Span::current();
        span.record("applied", report.applied);
        span.record("rejected", report.rejected);
        let m = &state.args.metrics;
        m.registry_adverts_applied.inc_by(u64::from(report.applied));
        m.registry_adverts_rejected
            .inc_by(u64::from(report.rejected));
        m.registry_repair_adverts.inc_by(u64::from(report.repaired));
        if report.withdrawn_down > 0 {
            tracing::info!(
                services = report.withdrawn_down,
                "services withdrawn: node down"
            );
        }
        if report.leases_expired > 0 {
            tracing::info!(
                services = report.leases_expired,
                "leases expired; services withdrawn"
            );
        }
        m.registry_services_local
            .set(state.node.local_services().len() as i64);
        m.registry_services_fabric
            .set(state.node.registry().len() as i64);
        m.registry_routes_version
            .set(state.node.routes_version() as i64);
    }

    /// Hands the table compiler the intent routes and the local services, when they changed.
    async fn update_table(state: &mut RegistryState) {
        let (version, routes) = state.node.routes();
        let local: Vec<(String, u16)> = state
            .node
            .local_services()
            .iter()
            .filter(|(_, s)| s.sad.endpoint.port != 0)
            .map(|(id, s)| (id.clone(), s.sad.endpoint.port))
            .collect();
        if state
            .sent_to_table
            .as_ref()
            .is_some_and(|(v, l)| *v == version && *l == local)
        {
            return;
        }
        let Some(table) = lookup_child::<TableMsg>(&state.supervisor, "table", CALL_TIMEOUT).await
        else {
            return; // Retried after the next change or refresh.
        };
        if table
            .send_message(TableMsg::Registry {
                routes,
                local: local.clone(),
            })
            .is_ok()
        {
            state.sent_to_table = Some((version, local));
        }
    }

    /// Answers the core's [`Output::ReadMembers`]: the gossip actor's member list, handed to
    /// the core (which withdraws the services of members down or left). Nothing if the gossip
    /// actor does not answer: the next refresh asks again.
    async fn read_members(state: &mut RegistryState) {
        let Some(gossip) = Self::gossip(state).await else {
            return;
        };
        let members = match gossip.call(GossipMsg::Members, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(m)) => m,
            _ => {
                state.gossip = None;
                return;
            }
        };
        let now = state.now();
        state.node.on_members(now, &members);
    }

    /// Arms the timer task at the core's next deadline (if it moved).
    fn arm_timer(myself: &ActorRef<RegistryMsg>, state: &mut RegistryState) {
        let deadline = state.node.poll_timeout();
        if state.timer.as_ref().map(|(at, _)| *at) == deadline {
            return;
        }
        state.timer = deadline.map(|at| {
            let wake = state.args.epoch + Duration::from_micros(at.as_micros());
            let me = myself.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep_until(wake).await;
                let _ = me.send_message(RegistryMsg::Timeout);
            });
            (at, AbortOnDrop(task))
        });
    }
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = (RegistryArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        (args, supervisor): (RegistryArgs, ActorRef<SupervisorMsg>),
    ) -> Result<RegistryState, ActorProcessingErr> {
        // A restarted registry rebuilds its state: answers cached before are void.
        args.changes.bump();
        let floor = load_floor(args.storage.as_ref())?;
        let mut stored: Vec<(Sad, Option<Credentials>)> = Vec::new();
        for (key, bytes) in args.storage.scan_prefix(SERVICE_PREFIX)? {
            match parse_stored(&bytes) {
                Ok(registration) => stored.push(registration),
                // One bad record must not take the others (or the node) down.
                Err(err) => tracing::warn!(%key, %err, "stored registration is corrupt; skipped"),
            }
        }
        let restored = stored.len();
        let mut node = RegistryNode::restore(
            now(args.epoch),
            args.key.clone(),
            StorageStore(args.storage.clone()),
            floor,
            stored,
        )?;
        node.set_unix_epoch_ms(unix_epoch_ms(args.epoch));
        node.start_timers(now(args.epoch), args.settings.timers());
        // The pump: inbox → mailbox, forwarding what is queued together as one burst. It holds
        // the receiver's lock while this incarnation runs.
        let inbox = args.inbox.clone();
        let me = myself.clone();
        let pump = tokio::spawn(async move {
            let mut rx = inbox.lock().await;
            while let Some(first) = rx.recv().await {
                let mut burst = vec![first];
                while burst.len() < INBOX_BURST_MAX {
                    match rx.try_recv() {
                        Ok(more) => burst.push(more),
                        Err(_) => break,
                    }
                }
                let msg = if burst.len() == 1 {
                    RegistryMsg::Input(burst.remove(0))
                } else {
                    RegistryMsg::Inputs(burst)
                };
                if me.send_message(msg).is_err() {
                    break;
                }
            }
        });
        let mut state = RegistryState {
            node,
            gossip: None,
            sent_to_table: None,
            supervisor,
            timer: None,
            _pump: AbortOnDrop(pump),
            args,
        };
        if restored > 0 {
            tracing::info!(
                services = state.node.local_services().len(),
                "registrations restored and re-advertised"
            );
        }
        Self::drain(&mut state).await;
        Self::arm_timer(&myself, &mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        let span = trace_span(&message);
        let result = tracing::Instrument::instrument(Self::step(message, state), span).await;
        Self::arm_timer(&myself, state);
        result
    }
}

/// The `tracing` target of the spans the node exports as traces (fabric/src/telemetry.rs).
const TRACE_TARGET: &str = "nexus_trace";

/// The exported span of a message: a registration (its broadcast is a child span) or a
/// delivered advert being applied; none for the rest. `DEBUG` spans: disabled at the call site
/// unless trace export (or a debug log filter) wants them.
fn trace_span(message: &RegistryMsg) -> tracing::Span {
    let delivered = |i: &RegistryInput| matches!(i, RegistryInput::Delivered(_));
    match message {
        RegistryMsg::Register(sad, ..) => tracing::debug_span!(target: TRACE_TARGET,
            "registry.register", service = %sad.id, version = tracing::field::Empty,
            created = tracing::field::Empty),
        RegistryMsg::Input(input) if delivered(input) => tracing::debug_span!(
            target: TRACE_TARGET, "registry.apply", adverts = 1_usize,
            applied = tracing::field::Empty, rejected = tracing::field::Empty),
        RegistryMsg::Inputs(inputs) if inputs.iter().any(delivered) => tracing::debug_span!(
            target: TRACE_TARGET, "registry.apply",
            adverts = inputs.iter().filter(|i| delivered(i)).count(),
            applied = tracing::field::Empty, rejected = tracing::field::Empty),
        _ => tracing::Span::none(),
    }
}

impl RegistryActor {
    /// Handles one message (inside its [`trace_span`]).
    async fn step(
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.now();
        let query = matches!(
            message,
            RegistryMsg::Resolve(..)
                | RegistryMsg::ResolveWithKeys(..)
                | RegistryMsg::Services(..)
                | RegistryMsg::Coordinate(..)
                | RegistryMsg::Routes(..)
        );
        if !query {
            // Before the change, so that an answer computed after it is never cached under the
            // count from before it.
            state.args.changes.bump();
        }
        match message {
            RegistryMsg::Register(sad, credentials, reply) => {
                let id = sad.id.clone();
                let result = state
                    .node
                    .register_with_credentials(now, *sad, credentials.map(|c| *c))
                    .and_then(|created| {
                        let view = state
                            .local_view(&id)
                            .ok_or_else(|| NodeError::Unknown(id.clone()))?;
                        tracing::info!(service = %id, version = view.sad.version, created,
                        "service registered");
                        let span = tracing::Span::current();
                        span.record("version", view.sad.version);
                        span.record("created", created);
                        Ok(Registered { created, view })
                    });
                let _ = reply.send(result);
            }
            RegistryMsg::Deregister(id, reply) => {
                let result = state.node.deregister(now, &id);
                if result.is_ok() {
                    tracing::info!(service = %id, "service deregistered");
                }
                let _ = reply.send(result);
            }
            RegistryMsg::PatchLoad(id, update, reply) => {
                let result = state
                    .node
                    .patch_load(now, &id, &update)
                    .map(|_| ())
                    .and_then(|()| {
                        state
                            .local_view(&id)
                            .ok_or_else(|| NodeError::Unknown(id.clone()))
                    });
                let _ = reply.send(result);
            }
            RegistryMsg::Services(scope, reply) => {
                let views = match scope {
                    Scope::Local => state
                        .node
                        .local_services()
                        .keys()
                        .filter_map(|id| state.local_view(id))
                        .collect(),
                    Scope::Fabric => {
                        let local = state.node.node_id();
                        state
                            .node
                            .registry()
                            .iter()
                            .filter_map(|(key, entry)| {
                                Some(ServiceView {
                                    node: key.node,
                                    sad: entry.sad()?.clone(),
                                    expires_in_ms: u64::try_from(
                                        entry
                                            .expires_at()
                                            .saturating_duration_since(now)
                                            .as_millis(),
                                    )
                                    .unwrap_or(u64::MAX),
                                    local: key.node == local,
                                    trust: trust_text(entry.trust()),
                                })
                            })
                            .collect()
                    }
                };
                let _ = reply.send(views);
            }
            RegistryMsg::Resolve(intent, reply) => {
                let _ = reply.send(Self::resolve(state, now, &intent));
            }
            RegistryMsg::ResolveWithKeys(intent, reply) => {
                let resolution = Self::resolve(state, now, &intent);
                let registry = state.node.registry();
                let keys = resolution
                    .candidates
                    .iter()
                    .map(|c| {
                        registry
                            .record(&ServiceKey::new(c.node, c.service.as_str()))
                            .and_then(|e| e.trust().verified())
                            .map(|v| v.subject_key)
                    })
                    .collect();
                let _ = reply.send(KeyedResolution { resolution, keys });
            }
            RegistryMsg::Coordinate(reply) => {
                let _ = reply.send(state.node.coordinate());
            }
            RegistryMsg::Routes(reply) => {
                let _ = reply.send(state.node.routes());
            }
            RegistryMsg::Input(input) => {
                state.node.handle_input(now, input);
                state.node.flush_trust(now);
            }
            RegistryMsg::Inputs(inputs) => {
                for input in inputs {
                    state.node.handle_input(now, input);
                }
                state.node.flush_trust(now);
            }
            RegistryMsg::Trust(update, reply) => {
                let report = state.node.on_trust_update(now, &update);
                if !report.revoked.is_empty()
                    || report.keys_changed()
                    || !report.rejected_revocations.is_empty()
                {
                    tracing::info!(
                        revoked = ?report.revoked,
                        keys_changed = report.keys_changed(),
                        rejected_revocations = report.rejected_revocations.len(),
                        rejected_circuits = report.rejected_circuits.len(),
                        "trust context updated"
                    );
                }
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
            RegistryMsg::Timeout => {
                // A deadline that has passed fires; the timer task is re-armed after the step.
                state.timer = None;
                state.node.handle_timeout(now);
            }
        }
        Self::drain(state).await;
        // A query changes no local service, and only a resolve can move the routes (it tracks
        // its class): after one, the table compiler is updated only if the routes moved, which
        // spares every resolve a walk over the local services.
        let routes_moved =
            state.sent_to_table.as_ref().map(|(v, _)| *v) != Some(state.node.routes_version());
        if !query || routes_moved {
            Self::update_table(state).await;
        }
        Ok(())
    }
}
