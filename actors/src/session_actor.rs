//! [`SessionActor`]: the node's NexStream sessions — at most one MIC-authenticated connection
//! per peer node, opened on demand, closed when idle, when the peer leaves membership, or when
//! the peer's MIC is revoked.
//!
//! The actor owns a [`StreamNode`] (the `nexus-stream` endpoint on its own UDP socket, driven by
//! a tokio task) and nothing else of the protocol: handshakes, MIC checks, the four delivery
//! modes and revocation closing live in the sans-IO [`nexus_stream::Endpoint`].
//!
//! **Carriage through the data plane.** The session socket binds port 0 on the data plane's IP
//! (loopback when the data plane binds the unspecified address); its address is
//! published on a watch channel, and the table compiler installs it as the local endpoint of
//! this node's session key ([`nexus_stream::link::session_key`]) and a route for every live
//! peer's session key to that peer's data plane. The actor sends every NexStream frame to its
//! own node's forwarder, which routes it by key to the peer's forwarder, which delivers it to
//! the peer's session socket — NexStream traffic crosses both data planes like any other
//! NexLink frame, and QUIC sees the local forwarder as the remote address of every session
//! (connections are told apart by their connection ids).
//!
//! **Trust.** The trust actor sends [`SessionMsg::Trust`] with the CA keys, revocations and
//! the node's own MIC whenever they change; the endpoint re-checks every live session then, so
//! a revocation closes the sessions of the revoked key within one trust-actor tick of the node
//! learning it (gossip, or the revocation poll as the backstop). Until the node holds its MIC it
//! presents none, and peers refuse it (`mic_missing`).
//!
//! **Probes.** `POST /v1/sessions/probe` ([`SessionMsg::Probe`]) exchanges numbered messages
//! with a peer's session actor in one mode and measures round trips: the operator's ping over
//! the data path, and the process tests' way to exercise all four modes between real nodes. A
//! session actor answers every probe request (payloads starting `NXPQ`) with a reply (`NXPR`)
//! of the same length, in the same mode.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use nexus_gossip::MemberState;
use nexus_stream::udp::{Framing, NodeError, RelayCounters, StreamNode};
use nexus_stream::{
    DatagramOptions, Endpoint, EndpointConfig, ErrorCode, Event, FlowOptions, MessageOptions, Mode,
    Probability, SendError, SessionId, SessionStats,
};
use nexus_trust::mic::Mic;
use nexus_trust::verify::{Credentials, TrustContext, TrustUpdate};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::GossipMsg;
use crate::metrics::{DirectionLabel, ModeLabel, NodeMetrics, ReasonLabel};
use crate::supervisor::{SupervisorMsg, lookup_child};
use crate::task::AbortOnDrop;

/// Probe request payload prefix.
pub const PROBE_REQUEST: &[u8; 4] = b"NXPQ";
/// Probe reply payload prefix.
pub const PROBE_REPLY: &[u8; 4] = b"NXPR";
/// Probe header: prefix, probe id (u64), sequence (u32).
const PROBE_HEADER_LEN: usize = 4 + 8 + 4;
/// Most messages one probe sends.
pub const PROBE_COUNT_MAX: u32 = 10_000;
/// Largest probe message.
pub const PROBE_BYTES_MAX: usize = 16 << 20;
/// How often membership and counters are refreshed.
const TICK: Duration = Duration::from_secs(1);
/// Deadline for asking the gossip actor.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the node's sessions (`[stream]` in the config file; docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Close a session after this long without application traffic.
    pub idle_close: Duration,
    /// Most sessions at once.
    pub sessions_max: usize,
    /// The peer must complete the handshake and its hello within this time.
    pub hello_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings {
            idle_close: Duration::from_secs(300),
            sessions_max: 1024,
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// Arguments of [`SessionActor`]; cloned for every (re)start.
#[derive(Clone)]
pub struct SessionArgs {
    /// The node's identity key (the handshake key and the node MIC's subject).
    pub key: SigningKey,
    /// This node's data-plane address as reachable from this host (loopback for an unspecified
    /// bind): every frame is sent there, and the session socket binds its IP.
    pub dataplane: SocketAddr,
    /// Tells the table compiler where the session socket is (its local endpoint).
    pub endpoint: watch::Sender<Option<SocketAddr>>,
    /// Settings.
    pub settings: StreamSettings,
    /// Where metrics go.
    pub metrics: NodeMetrics,
    /// The Unix time (ms) at `anchor`, for MIC validity.
    pub anchor_unix_ms: u64,
    /// Any instant; `anchor_unix_ms` is the wall clock then.
    pub anchor: tokio::time::Instant,
}

impl std::fmt::Debug for SessionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionArgs")
            .field("dataplane", &self.dataplane)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A probe: `count` messages of `bytes` bytes in `mode` to `peer`, each answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRequest {
    /// The peer's node id.
    pub peer: [u8; 32],
    /// The mode to probe.
    pub mode: Mode,
    /// Messages to send (1..=[`PROBE_COUNT_MAX`]).
    pub count: u32,
    /// Bytes per message (at least the 16-byte probe header, at most [`PROBE_BYTES_MAX`]).
    pub bytes: usize,
    /// For probabilistic probes: the delivery probability of each direction.
    pub probability: Option<f64>,
    /// How long to wait for the answers.
    pub timeout: Duration,
}

/// What a probe measured (the admin API's probe answer carries it as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeResult {
    /// The session used.
    pub session: u64,
    /// Whether the session was opened for this probe (then `connect_ms` includes the
    /// handshake and the MIC exchange).
    pub opened: bool,
    /// Time to establish the session, ms (0 when it existed).
    pub connect_ms: f64,
    /// Messages sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Median round trip of the replies, ms.
    pub rtt_ms_p50: f64,
    /// 99th percentile round trip, ms.
    pub rtt_ms_p99: f64,
    /// Largest round trip, ms.
    pub rtt_ms_max: f64,
    /// From the first send to the last reply (or the timeout), ms.
    pub elapsed_ms: f64,
}

/// One session as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    /// The endpoint's snapshot.
    pub stats: SessionStats,
    /// Milliseconds since the session last carried application traffic.
    pub idle_ms: u64,
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// The peer is not an alive member with a data plane.
    #[error("peer {0} is not an alive member with a data plane")]
    UnknownPeer(String),
    /// The session could not be established.
    #[error("session refused: {0}")]
    Refused(String),
    /// This node runs no sessions yet (no data plane, or the actor is restarting).
    #[error("sessions unavailable: {0}")]
    Unavailable(String),
}

/// What a probe's listener hears about its session.
#[derive(Debug)]
pub enum ProbeSignal {
    /// The answer to message `seq` arrived.
    Reply(u32, tokio::time::Instant),
    /// The session closed (for example the peer refused this node's MIC).
    Closed(String),
}

/// Sessions whose close reason is kept for probes that start listening late.
const CLOSED_KEPT: usize = 64;

/// Messages to [`SessionActor`].
#[derive(Debug)]
pub enum SessionMsg {
    /// New trust material and this node's MIC (from the trust actor).
    Trust(Box<TrustUpdate>, Option<Box<Mic>>),
    /// Every session.
    List(RpcReplyPort<Vec<SessionView>>),
    /// Run a probe (answered when it ends).
    Probe(
        Box<ProbeRequest>,
        RpcReplyPort<Result<ProbeResult, ProbeError>>,
    ),
    /// An event of the endpoint.
    Event(Box<Event>),
    /// A probe's reply listener for a session (probe id).
    Listen(SessionId, u64, mpsc::UnboundedSender<ProbeSignal>),
    /// The probe ended.
    Unlisten(SessionId, u64),
    /// The session socket's relay counters (`None` when it does not relay).
    Relay(RpcReplyPort<Option<RelayCounters>>),
    /// Timer: membership, idle sessions, metrics.
    Tick,
}

/// The session actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionActor;

/// State of [`SessionActor`].
pub struct SessionState {
    args: SessionArgs,
    supervisor: ActorRef<SupervisorMsg>,
    node: StreamNode,
    /// Alive peers with a data plane.
    live: BTreeMap<[u8; 32], SocketAddr>,
    last_activity: BTreeMap<SessionId, tokio::time::Instant>,
    listeners: BTreeMap<(SessionId, u64), mpsc::UnboundedSender<ProbeSignal>>,
    /// Close reasons of the last [`CLOSED_KEPT`] sessions.
    closed: std::collections::VecDeque<(SessionId, String)>,
    next_probe: u64,
    /// Per-mode totals of sessions that have closed (sent, delivered, dropped send, dropped
    /// recv), so the exported counters stay monotonic.
    closed_totals: [[u64; 4]; 4],
    last_seen: BTreeMap<SessionId, [[u64; 4]; 4]>,
    exported: [[u64; 4]; 4],
    refused_exported: u64,
    /// The relay's counters as last exported.
    relay_exported: RelayCounters,
    _pump: AbortOnDrop,
    _tick: AbortOnDrop,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

fn endpoint_config(settings: &StreamSettings) -> EndpointConfig {
    EndpointConfig {
        sessions_max: settings.sessions_max,
        hello_timeout: settings.hello_timeout,
        ..EndpointConfig::default()
    }
}

fn counters_of(stats: &SessionStats) -> [[u64; 4]; 4] {
    let mut out = [[0u64; 4]; 4];
    for (i, m) in stats.modes.iter().enumerate() {
        out[i] = [m.sent, m.delivered, m.dropped_send, m.dropped_recv];
    }
    out
}

impl SessionActor {
    /// Answers a probe request in the mode it arrived in.
    async fn answer(state: &SessionState, event: &Event) {
        let node = &state.node;
        match event {
            Event::Message { stream, mode, data } if data.starts_with(PROBE_REQUEST) => {
                let reply = probe_reply(data);
                let _ = match mode {
                    Mode::ReliableOrdered => node.send(*stream, reply).await,
                    Mode::ReliableUnordered => node
                        .send_message(stream.session, reply, MessageOptions::default())
                        .await
                        .map(|_| ()),
                    _ => {
                        node.send_datagram(
                            stream.session,
                            0,
                            reply,
                            DatagramOptions::best_effort(None),
                        )
                        .await
                    }
                };
            }
            Event::Datagram {
                session,
                mode,
                flow,
                data,
                ..
            } if data.starts_with(PROBE_REQUEST) => {
                let opts = DatagramOptions {
                    probability: (*mode == Mode::Probabilistic).then_some(Probability::ONE),
                    expires: None,
                };
                let _ = node
                    .send_datagram(*session, *flow, probe_reply(data), opts)
                    .await;
            }
            _ => {}
        }
    }

    fn route_reply(state: &SessionState, event: &Event) {
        let (session, data) = match event {
            Event::Message { stream, data, .. } => (stream.session, data),
            Event::Datagram { session, data, .. } => (*session, data),
            _ => return,
        };
        if data.len() < PROBE_HEADER_LEN || !data.starts_with(PROBE_REPLY) {
            return;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[4..12]);
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&data[12..16]);
        if let Some(tx) = state.listeners.get(&(session, u64::from_be_bytes(id))) {
            let _ = tx.send(ProbeSignal::Reply(
                u32::from_be_bytes(seq),
                tokio::time::Instant::now(),
            ));
        }
    }

    async fn refresh_members(state: &mut SessionState) {
        let Some(gossip) =
            lookup_child::<GossipMsg>(&state.supervisor, "gossip", MEMBERS_TIMEOUT).await
        else {
            return;
        };
        if let Ok(CallResult::Success(members)) =
            gossip.call(GossipMsg::Members, Some(MEMBERS_TIMEOUT)).await
        {
            state.live = members
                .into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .filter_map(|m| Some((m.id.node_id().0, m.id.meta().dataplane()?)))
                .collect();
        }
    }

    async fn tick(state: &mut SessionState) {
        Self::refresh_members(state).await;
        let Ok((stats, counters)) = state.node.stats().await else {
            return;
        };
        let now = tokio::time::Instant::now();
        let idle_close = state.args.settings.idle_close;
        for s in &stats {
            let last = *state.last_activity.entry(s.id).or_insert(now);
            let gone = s.peer.is_some_and(|p| !state.live.contains_key(&p));
            if gone {
                let _ = state
                    .node
                    .close(
                        s.id,
                        ErrorCode::GoingAway,
                        "peer is no longer an alive member",
                    )
                    .await;
            } else if now.duration_since(last) > idle_close {
                let _ = state.node.close(s.id, ErrorCode::GoingAway, "idle").await;
            }
        }
        // Metrics: per-mode totals, monotonic across closed sessions.
        let live_ids: Vec<SessionId> = stats.iter().map(|s| s.id).collect();
        let closed: Vec<SessionId> = state
            .last_seen
            .keys()
            .filter(|id| !live_ids.contains(id))
            .copied()
            .collect();
        for id in closed {
            if let Some(c) = state.last_seen.remove(&id) {
                for (m, row) in c.iter().enumerate() {
                    for (k, v) in row.iter().enumerate() {
                        state.closed_totals[m][k] += v;
                    }
                }
            }
            state.last_activity.remove(&id);
        }
        let mut totals = state.closed_totals;
        for s in &stats {
            let c = counters_of(s);
            state.last_seen.insert(s.id, c);
            for (m, row) in c.iter().enumerate() {
                for (k, v) in row.iter().enumerate() {
                    totals[m][k] += v;
                }
            }
        }
        let metrics = &state.args.metrics;
        for mode in Mode::ALL {
            let m = mode.index();
            let label = |direction: &str| ModeLabel {
                mode: mode.name().to_owned(),
                direction: direction.to_owned(),
            };
            let delta = |k: usize| totals[m][k].saturating_sub(state.exported[m][k]);
            metrics
                .stream_messages
                .get_or_create(&label("sent"))
                .inc_by(delta(0));
            metrics
                .stream_messages
                .get_or_create(&label("delivered"))
                .inc_by(delta(1));
            metrics
                .stream_dropped
                .get_or_create(&label("send"))
                .inc_by(delta(2));
            metrics
                .stream_dropped
                .get_or_create(&label("recv"))
                .inc_by(delta(3));
        }
        state.exported = totals;
        metrics
            .stream_sessions
            .set(i64::try_from(stats.iter().filter(|s| s.established).count()).unwrap_or(i64::MAX));
        let refused = counters.refused + counters.refused_full;
        metrics
            .stream_refused
            .inc_by(refused.saturating_sub(state.refused_exported));
        state.refused_exported = refused;
        if let Ok(Some(relay)) = state.node.relay_counters().await {
            Self::export_relay(metrics, &relay, &state.relay_exported);
            state.relay_exported = relay;
        }
    }

    /// Adds what the relay counted since `exported` to the node's metrics.
    fn export_relay(metrics: &NodeMetrics, now: &RelayCounters, exported: &RelayCounters) {
        let direction = |d: &str| DirectionLabel {
            direction: d.to_owned(),
        };
        let reason = |r: &str| ReasonLabel {
            reason: r.to_owned(),
        };
        metrics
            .stream_relay_clients
            .set(i64::try_from(now.clients).unwrap_or(i64::MAX));
        let pairs = [
            (
                &metrics.stream_relay_frames,
                direction("out"),
                now.frames_out,
                exported.frames_out,
            ),
            (
                &metrics.stream_relay_frames,
                direction("back"),
                now.frames_back,
                exported.frames_back,
            ),
            (
                &metrics.stream_relay_bytes,
                direction("out"),
                now.bytes_out,
                exported.bytes_out,
            ),
            (
                &metrics.stream_relay_bytes,
                direction("back"),
                now.bytes_back,
                exported.bytes_back,
            ),
        ];
        for (family, label, now, before) in pairs {
            family
                .get_or_create(&label)
                .inc_by(now.saturating_sub(before));
        }
        let drops = [
            ("foreign", now.refused_foreign, exported.refused_foreign),
            (
                "no_client",
                now.dropped_no_client,
                exported.dropped_no_client,
            ),
            ("send", now.dropped_send, exported.dropped_send),
        ];
        for (r, now, before) in drops {
            metrics
                .stream_relay_dropped
                .get_or_create(&reason(r))
                .inc_by(now.saturating_sub(before));
        }
        metrics
            .stream_relay_clients_evicted
            .inc_by(now.clients_evicted.saturating_sub(exported.clients_evicted));
    }
}

fn probe_reply(request: &Bytes) -> Bytes {
    let mut reply = request.to_vec();
    reply[..4].copy_from_slice(PROBE_REPLY);
    Bytes::from(reply)
}

fn probe_payload(id: u64, seq: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len.max(PROBE_HEADER_LEN));
    out.extend_from_slice(PROBE_REQUEST);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(len.max(PROBE_HEADER_LEN), 0x5a);
    Bytes::from(out)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How long a probe waits for a session's close reason after a send found the session gone.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(2);

/// What a probe reports for a refused open or send. A session the driver has already closed
/// (`NoSession`) has its `Closed` event, with the peer's reason (e.g. `mic_revoked`), on the way
/// to the actor: wait for it briefly rather than report "no such session".
async fn refusal(rx: &mut mpsc::UnboundedReceiver<ProbeSignal>, error: NodeError) -> String {
    if !matches!(error, NodeError::Send(SendError::NoSession)) {
        return error.to_string();
    }
    let until = tokio::time::Instant::now() + CLOSE_REASON_WAIT;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(ProbeSignal::Closed(reason))) => return reason,
            Ok(Some(ProbeSignal::Reply(..))) => {}
            Ok(None) | Err(_) => return error.to_string(),
        }
    }
}

/// Runs one probe on `node` (a spawned task: the actor keeps answering meanwhile).
async fn run_probe(
    myself: ActorRef<SessionMsg>,
    node: StreamNode,
    dataplane: SocketAddr,
    id: u64,
    request: ProbeRequest,
) -> Result<ProbeResult, ProbeError> {
    let started = tokio::time::Instant::now();
    let (session, opened) = match node.session_to(request.peer).await {
        Ok(Some(s)) => (s, false),
        Ok(None) => match node.connect(request.peer, dataplane).await {
            Ok(s) => (s, true),
            Err(NodeError::Refused(reason)) => return Err(ProbeError::Refused(reason.to_string())),
            Err(e) => return Err(ProbeError::Refused(e.to_string())),
        },
        Err(e) => return Err(ProbeError::Unavailable(e.to_string())),
    };
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    let (tx, mut rx) = mpsc::unbounded_channel::<ProbeSignal>();
    myself
        .send_message(SessionMsg::Listen(session, id, tx))
        .map_err(|e| ProbeError::Unavailable(e.to_string()))?;
    let mut sent_at = BTreeMap::new();
    let first = tokio::time::Instant::now();
    let flow = if request.mode == Mode::ReliableOrdered {
        match node.open_flow(session, FlowOptions::default()).await {
            Ok(flow) => Some(flow),
            Err(e) => {
                let why = refusal(&mut rx, e).await;
                let _ = myself.send_message(SessionMsg::Unlisten(session, id));
                return Err(ProbeError::Refused(why));
            }
        }
    } else {
        None
    };
    let mut send_error: Option<NodeError> = None;
    for seq in 0..request.count {
        let payload = probe_payload(id, seq, request.bytes);
        let result = match (request.mode, flow) {
            (Mode::ReliableOrdered, Some(flow)) => node.send(flow, payload).await,
            (Mode::ReliableUnordered, _) => node
                .send_message(session, payload, MessageOptions::default())
                .await
                .map(|_| ()),
            (mode, _) => {
                let probability = match mode {
                    Mode::Probabilistic => Probability::new(request.probability.unwrap_or(1.0)),
                    _ => None,
                };
                let opts = DatagramOptions {
                    probability,
                    expires: Some((tokio::time::Instant::now() + request.timeout).into_std()),
                };
                node.send_datagram(session, 0, payload, opts).await
            }
        };
        match result {
            Ok(()) => {
                sent_at.insert(seq, tokio::time::Instant::now());
            }
            Err(e) => {
                send_error = Some(e);
                break;
            }
        }
    }
    let deadline = first + request.timeout;
    let mut rtts = Vec::new();
    let mut last = first;
    let mut closed = None;
    while !sent_at.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ProbeSignal::Reply(seq, at))) => {
                if let Some(sent) = sent_at.remove(&seq) {
                    rtts.push(at.duration_since(sent).as_secs_f64() * 1e3);
                    last = at;
                }
            }
            Ok(Some(ProbeSignal::Closed(reason))) => {
                closed = Some(reason);
                break;
            }
            _ => break,
        }
    }
    let refused = match (rtts.is_empty(), closed, send_error) {
        (true, Some(why), _) => Some(why),
        (true, None, Some(e)) => Some(refusal(&mut rx, e).await),
        _ => None,
    };
    let _ = myself.send_message(SessionMsg::Unlisten(session, id));
    if let Some(flow) = flow {
        let _ = node.finish(flow).await;
    }
    if let Some(why) = refused {
        return Err(ProbeError::Refused(why));
    }
    rtts.sort_by(f64::total_cmp);
    let received = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
    Ok(ProbeResult {
        session: session.0,
        opened,
        connect_ms: if opened { connect_ms } else { 0.0 },
        sent: request.count,
        received,
        rtt_ms_p50: percentile(&rtts, 0.5),
        rtt_ms_p99: percentile(&rtts, 0.99),
        rtt_ms_max: rtts.last().copied().unwrap_or(0.0),
        elapsed_ms: last.duration_since(first).as_secs_f64() * 1e3,
    })
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = (SessionArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        (args, supervisor): (SessionArgs, ActorRef<SupervisorMsg>),
    ) -> Result<SessionState, ActorProcessingErr> {
        let identity = nexus_stream::identity::Identity::new(args.key.clone(), None)
            .map_err(|e| format!("NexStream identity: {e}"))?;
        let endpoint = Endpoint::new(
            endpoint_config(&args.settings),
            identity,
            TrustContext::new(),
            None,
            args.anchor.into_std(),
            args.anchor_unix_ms,
        )
        .map_err(|e| format!("NexStream endpoint: {e}"))?;
        // On the data plane's IP: only the local forwarder sends to this socket.
        let (node, mut events) = StreamNode::bind(
            SocketAddr::new(args.dataplane.ip(), 0),
            endpoint,
            Framing::NexLink,
        )
        .await
        .map_err(|e| format!("binding the session socket: {e}"))?;
        // Clients on this host send their routed sessions' frames through this socket, and
        // their answers come back to it (NexAPI's routed path, `docs/protocols/nexapi.md`).
        node.set_relay(Some(args.dataplane))
            .await
            .map_err(|e| format!("starting the session socket's relay: {e}"))?;
        args.endpoint.send_replace(Some(node.local_addr()));
        tracing::info!(socket = %node.local_addr(), "sessions: endpoint bound");
        let me = myself.clone();
        let pump = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if me.send_message(SessionMsg::Event(Box::new(event))).is_err() {
                    break;
                }
            }
        });
        let tick = myself.send_interval(TICK, || SessionMsg::Tick);
        let mut state = SessionState {
            args,
            supervisor,
            node,
            live: BTreeMap::new(),
            last_activity: BTreeMap::new(),
            listeners: BTreeMap::new(),
            closed: std::collections::VecDeque::new(),
            next_probe: 1,
            closed_totals: [[0; 4]; 4],
            last_seen: BTreeMap::new(),
            exported: [[0; 4]; 4],
            refused_exported: 0,
            relay_exported: RelayCounters::default(),
            _pump: AbortOnDrop(pump),
            _tick: AbortOnDrop(tick),
        };
        Self::refresh_members(&mut state).await;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.endpoint.send_replace(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Trust(update, mic) => {
                let credentials = mic.map(|mic| Credentials {
                    mic: *mic,
                    attestations: Vec::new(),
                });
                let _ = state.node.set_credentials(credentials).await;
                let _ = state.node.update_trust(*update).await;
            }
            SessionMsg::Relay(reply) => {
                let _ = reply.send(state.node.relay_counters().await.ok().flatten());
            }
            SessionMsg::List(reply) => {
                let now = tokio::time::Instant::now();
                let views = match state.node.stats().await {
                    Ok((stats, _)) => stats
                        .into_iter()
                        .map(|stats| {
                            let idle_ms = state.last_activity.get(&stats.id).map_or(0, |t| {
                                u64::try_from(now.duration_since(*t).as_millis())
                                    .unwrap_or(u64::MAX)
                            });
                            SessionView { stats, idle_ms }
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let _ = reply.send(views);
            }
            SessionMsg::Probe(request, reply) => {
                if !state.live.contains_key(&request.peer) {
                    Self::refresh_members(state).await;
                }
                if !state.live.contains_key(&request.peer) {
                    let _ = reply.send(Err(ProbeError::UnknownPeer(hex::encode(
                        &request.peer[..8],
                    ))));
                    return Ok(());
                }
                let id = state.next_probe;
                state.next_probe += 1;
                let node = state.node.clone();
                let dataplane = state.args.dataplane;
                tokio::spawn(async move {
                    let result = run_probe(myself, node, dataplane, id, *request).await;
                    let _ = reply.send(result);
                });
            }
            SessionMsg::Event(event) => {
                match &*event {
                    Event::Established { session, peer, .. } => {
                        state
                            .last_activity
                            .insert(*session, tokio::time::Instant::now());
                        tracing::info!(session = %session, peer = %hex::encode(&peer[..8]), "sessions: established");
                    }
                    Event::Closed {
                        session, reason, ..
                    } => {
                        tracing::info!(session = %session, %reason, "sessions: closed");
                        for ((s, _), tx) in &state.listeners {
                            if s == session {
                                let _ = tx.send(ProbeSignal::Closed(reason.to_string()));
                            }
                        }
                        state.closed.push_back((*session, reason.to_string()));
                        if state.closed.len() > CLOSED_KEPT {
                            state.closed.pop_front();
                        }
                    }
                    Event::Message { stream, .. } => {
                        state
                            .last_activity
                            .insert(stream.session, tokio::time::Instant::now());
                    }
                    Event::Datagram { session, .. } => {
                        state
                            .last_activity
                            .insert(*session, tokio::time::Instant::now());
                    }
                    _ => {}
                }
                Self::answer(state, &event).await;
                Self::route_reply(state, &event);
            }
            SessionMsg::Listen(session, id, tx) => {
                if let Some((_, reason)) = state.closed.iter().find(|(s, _)| *s == session) {
                    let _ = tx.send(ProbeSignal::Closed(reason.clone()));
                }
                state.listeners.insert((session, id), tx);
            }
            SessionMsg::Unlisten(session, id) => {
                state.listeners.remove(&(session, id));
            }
            SessionMsg::Tick => Self::tick(state).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_payloads_carry_id_and_sequence() {
        let p = probe_payload(7, 9, 100);
        assert_eq!(p.len(), 100);
        assert!(p.starts_with(PROBE_REQUEST));
        let r = probe_reply(&p);
        assert!(r.starts_with(PROBE_REPLY));
        assert_eq!(&r[4..], &p[4..]);
        assert_eq!(probe_payload(1, 1, 0).len(), PROBE_HEADER_LEN);
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.99), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
