//! The service side of the SDK: a [`Handler`] served on its own NexStream endpoint and
//! registered with the local node.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nexus_registry::{LoadUpdate, Sad};
use nexus_stream::udp::NodeError;
use nexus_stream::udp::StreamNode;
use nexus_stream::{MessageOptions, SendError, StreamRef};
use nexus_trust_core::mic::{ModelIdentity, SubjectKind};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::node::{NodeClient, NodeConfig};
use crate::transport::{FlowEvent, Inbound, Transport};
use crate::wire::{
    ApiError, ErrorCode, Finish, HelloAck, Limits, Message, ModelMeta, Op, Request, Response,
    StreamEnd, Tensor, Token, VERSION,
};
use crate::{EndpointSettings, Identity, unix_ms_now};

/// A service's settings.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The local node.
    pub node: NodeConfig,
    /// The descriptor to advertise. `endpoint.port` and `trust.mic_serial` are filled in by
    /// [`Service::serve`] (the bound port and the serial of the certificate it obtained).
    pub sad: Sad,
    /// Where the service's NexStream endpoint binds; its port is advertised, its host is the
    /// node's (a service runs on its node's host).
    pub bind: SocketAddr,
    /// The port clients reach the service at, when it differs from the bound port (a port
    /// forward or NAT in front of it); the bound port if unset.
    pub advertise_port: Option<u16>,
    /// Publisher named in the service's certificate.
    pub publisher: String,
    /// With a model identity the certificate is a model MIC, else an agent MIC.
    pub model: Option<ModelIdentity>,
    /// How often the lease is renewed and load reported (default: a third of `sad.ttl_s`).
    pub renew: Option<Duration>,
    /// Calls served at once; more are refused with `overloaded`.
    pub in_flight_max: usize,
    /// Answers kept for idempotent retries and stream resumes.
    pub replay_entries: usize,
    /// Decode limits for requests and tensors.
    pub limits: Limits,
    /// Transport and identity settings.
    pub endpoint: EndpointSettings,
}

impl ServiceConfig {
    /// Defaults for serving `sad` through `node`.
    pub fn new(node: NodeConfig, sad: Sad) -> ServiceConfig {
        ServiceConfig {
            node,
            sad,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            advertise_port: None,
            publisher: "nexus-api".into(),
            model: None,
            renew: None,
            in_flight_max: 256,
            replay_entries: 1024,
            limits: Limits::default(),
            endpoint: EndpointSettings::default(),
        }
    }
}

/// One call as the handler sees it.
#[derive(Clone, Debug)]
pub struct Call {
    /// The model asked for.
    pub model: String,
    /// The request bytes.
    pub payload: Bytes,
    /// Absolute deadline, Unix milliseconds (0: none). Pass it on to downstream calls.
    pub deadline_ms: u64,
    /// The caller's key (its certified NexStream identity).
    pub peer: Option<[u8; 32]>,
    /// The caller's trace context, if the request carried one: the parent of the spans the
    /// handler makes for this call.
    pub trace: Option<crate::TraceContext>,
}

impl Call {
    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        (self.deadline_ms != 0)
            .then(|| Duration::from_millis(self.deadline_ms.saturating_sub(unix_ms_now())))
    }
}

/// What a service does. Every method runs in its own task; a call is cancelled (its future
/// dropped) when the caller cancels, its deadline passes or its session closes.
pub trait Handler: Send + Sync + 'static {
    /// The models served, as `HELLO_ACK` describes them. An empty list accepts any model
    /// name.
    fn models(&self) -> Vec<ModelMeta> {
        Vec::new()
    }

    /// Answers a unary call.
    fn infer(&self, call: Call) -> impl Future<Output = Result<Bytes, ApiError>> + Send;

    /// Produces a token stream through `tokens`, then says why it ended and how many prompt
    /// tokens it read. For resumes, the handler must produce the same tokens for the same
    /// request (the sink drops those the caller already has).
    fn stream(
        &self,
        call: Call,
        tokens: TokenSink,
    ) -> impl Future<Output = Result<(Finish, u32), ApiError>> + Send {
        let _ = (call, tokens);
        async {
            Err(ApiError::new(
                0,
                ErrorCode::UnknownModel,
                "this service does not stream",
            ))
        }
    }

    /// Receives a tensor (already checked: dtype, shape, strides and length agree).
    fn tensor(&self, tensor: Tensor) -> impl Future<Output = Result<(), ApiError>> + Send {
        let _ = tensor;
        async {
            Err(ApiError::new(
                0,
                ErrorCode::BadRequest,
                "this service takes no tensors",
            ))
        }
    }
}

/// Tokens queued between a [`TokenSink`] and its writer before [`TokenSink::send`] waits.
pub const TOKENS_QUEUED_MAX: usize = 256;
/// Most tokens the writer hands to the transport in one command.
pub const TOKENS_BATCH_MAX: usize = 256;
/// A token written less than this after the previous one belongs to the same burst: it does
/// not hand the thread to the writer, it waits (with the rest of the burst) until the handler
/// next waits for something.
pub const TOKEN_BURST_GAP: Duration = Duration::from_micros(50);

/// Where a stream handler writes its tokens. A token goes to the stream's writer task, which
/// hands it to the transport at once when the writer is idle and the token follows a pause
/// (the first token, or one written [`TOKEN_BURST_GAP`] or more after the previous one); the
/// tokens of a burst, and tokens written while the writer waits for the transport, go out
/// together in its next command (so they share packets), in order, as soon as the handler
/// waits for anything (its next token, or a full queue). [`TokenSink::send`] waits when
/// [`TOKENS_QUEUED_MAX`] tokens are queued, and the writer while the transport's send buffer
/// for the session is full (backpressure).
#[derive(Debug)]
pub struct TokenSink {
    tokens: mpsc::Sender<Bytes>,
    writer_idle: Arc<AtomicBool>,
    /// When the previous token was written (none yet: `None`).
    last_sent: Option<std::time::Instant>,
    seq: u64,
    skip_below: u64,
    record: Arc<Mutex<Vec<Token>>>,
}

/// The task that writes a [`TokenSink`]'s tokens to its flow; its result says whether every
/// token reached the transport.
struct TokenWriter(tokio::task::JoinHandle<Result<(), ApiError>>);

impl Drop for TokenWriter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TokenWriter {
    /// Waits until every token sent before the sink was dropped is with the transport.
    async fn drained(&mut self) -> Result<(), ApiError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) => Err(ApiError::new(0, ErrorCode::Cancelled, e.to_string())),
        }
    }
}

impl TokenSink {
    fn start(
        node: StreamNode,
        flow: StreamRef,
        skip_below: u64,
        record: Arc<Mutex<Vec<Token>>>,
    ) -> (TokenSink, TokenWriter) {
        let (tokens, rx) = mpsc::channel(TOKENS_QUEUED_MAX);
        let writer_idle = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_tokens(node, flow, rx, writer_idle.clone()));
        (
            TokenSink {
                tokens,
                writer_idle,
                last_sent: None,
                seq: 0,
                skip_below,
                record,
            },
            TokenWriter(writer),
        )
    }

    /// Sends the next token.
    pub async fn send(&mut self, id: u32, text: &str) -> Result<(), ApiError> {
        let token = Token {
            seq: self.seq,
            id,
            text: text.to_owned(),
        };
        self.seq += 1;
        lock(&self.record).push(token.clone());
        if token.seq < self.skip_below {
            return Ok(());
        }
        self.tokens
            .send(Message::Token(token).encode())
            .await
            .map_err(|_| {
                ApiError::new(
                    0,
                    ErrorCode::Cancelled,
                    "the stream's transport refused a token",
                )
            })?;
        let now = crate::now();
        let after_pause = self
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= TOKEN_BURST_GAP);
        self.last_sent = Some(now);
        if after_pause && self.writer_idle.load(Ordering::Acquire) {
            // Let the writer take this token now rather than when the handler next waits: the
            // first token after a pause leaves at once. The tokens of a burst do not: each
            // would go out in a command and a packet of its own (the writer is idle again
            // whenever the handler resumes), so they go together when the handler waits.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Tokens produced so far.
    pub fn count(&self) -> u64 {
        self.seq
    }
}

/// Writes the tokens arriving on `rx` to `flow`: whatever is queued when it gets to run goes
/// in one command, up to [`TOKENS_BATCH_MAX`]. Ends when the sink is dropped and every token
/// is written, or at the first refusal.
async fn write_tokens(
    node: StreamNode,
    flow: StreamRef,
    mut rx: mpsc::Receiver<Bytes>,
    idle: Arc<AtomicBool>,
) -> Result<(), ApiError> {
    loop {
        idle.store(true, Ordering::Release);
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        idle.store(false, Ordering::Release);
        let mut batch = vec![first];
        while batch.len() < TOKENS_BATCH_MAX {
            match rx.try_recv() {
                Ok(token) => batch.push(token),
                Err(_) => break,
            }
        }
        if let Err(e) = send_backpressured(&node, flow, batch).await {
            // The sink sees the closed channel on its next token.
            rx.close();
            return Err(e);
        }
    }
}

/// Sends `messages` in order on `flow` in one command, waiting while the session's send buffer
/// is full.
async fn send_backpressured(
    node: &StreamNode,
    flow: StreamRef,
    messages: Vec<Bytes>,
) -> Result<(), ApiError> {
    let mut wait = Duration::from_micros(200);
    loop {
        match node.send_batch(flow, messages.clone(), false).await {
            Ok(()) => return Ok(()),
            Err(NodeError::Send(SendError::Blocked { .. })) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(ApiError::new(0, ErrorCode::Cancelled, e.to_string())),
        }
    }
}

/// A finished call's answer, kept for retries and resumes with the same idempotency key.
#[derive(Clone, Debug)]
enum Replay {
    Response(Bytes),
    Stream(Vec<Token>, StreamEnd),
}

#[derive(Debug, Default)]
struct ReplayCache {
    entries: HashMap<[u8; 16], Replay>,
    order: VecDeque<[u8; 16]>,
}

impl ReplayCache {
    fn insert(&mut self, key: [u8; 16], value: Replay, max: usize) {
        if max == 0 {
            return;
        }
        if self.entries.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

struct Shared<H> {
    handler: H,
    config: ServiceConfig,
    node: NodeClient,
    transport: Transport,
    in_flight: AtomicUsize,
    replay: Mutex<ReplayCache>,
    metrics: Metrics,
    sad: Mutex<Sad>,
    credentials: nexus_trust_core::verify::Credentials,
    stopped: AtomicBool,
    /// The task holding the service's link to its node.
    link: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<H> std::fmt::Debug for Shared<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("service", &lock(&self.sad).id)
            .field("addr", &self.transport.node.local_addr())
            .finish()
    }
}

/// A running service. Dropping it stops nothing; call [`Service::shutdown`] to withdraw.
#[derive(Debug)]
pub struct Service<H: Handler> {
    shared: Arc<Shared<H>>,
}

impl<H: Handler> Service<H> {
    /// Has the fabric's CA certify a fresh key for the service, starts its NexStream
    /// endpoint, registers `config.sad` with the local node (advertising the bound port and
    /// the certificate) and serves `handler` until [`Service::shutdown`].
    pub async fn serve(config: ServiceConfig, handler: H) -> Result<Service<H>, Error> {
        let node = NodeClient::new(config.node.clone()).await?;
        let kind = if config.model.is_some() {
            SubjectKind::Model
        } else {
            SubjectKind::Agent
        };
        let identity = Identity::obtain(
            &node,
            kind,
            config.model,
            &config.publisher,
            config.endpoint.mic_validity,
        )
        .await?;
        let credentials = identity.credentials.clone();
        let (transport, inbound) =
            crate::start_endpoint(&node, identity, config.bind, &config.endpoint).await?;
        let mut sad = config.sad.clone();
        sad.endpoint.port = config
            .advertise_port
            .unwrap_or_else(|| transport.node.local_addr().port());
        sad.trust.mic_serial = Some(credentials.mic.body.serial);
        node.wait_for_ca_key(credentials.mic.body.ca_key_id, Duration::from_secs(30))
            .await?;
        node.register(&sad, &credentials).await?;
        let shared = Arc::new(Shared {
            handler,
            node,
            transport,
            in_flight: AtomicUsize::new(0),
            replay: Mutex::default(),
            metrics: Metrics::default(),
            sad: Mutex::new(sad),
            credentials,
            stopped: AtomicBool::new(false),
            link: Mutex::new(None),
            config,
        });
        tokio::spawn(serve_inbound(shared.clone(), inbound));
        tokio::spawn(lease(Arc::downgrade(&shared)));
        *lock(&shared.link) = Some(tokio::spawn(hold_link(Arc::downgrade(&shared))));
        crate::spawn_trust_refresh(Arc::downgrade(&shared), |s: &Shared<H>| {
            (
                &s.node,
                s.transport.node.clone(),
                s.config.endpoint.trust_refresh,
            )
        });
        Ok(Service { shared })
    }

    /// The NexStream endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.transport.node.local_addr()
    }

    /// The service's key (what its certificate certifies).
    pub fn key(&self) -> [u8; 32] {
        self.shared.transport.node.node_id()
    }

    /// The serial of the service's certificate.
    pub fn mic_serial(&self) -> u64 {
        self.shared.credentials.mic.body.serial
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Calls being served now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Withdraws the service from its node and stops renewing; from now on its endpoint
    /// refuses new sessions (QUIC `CONNECTION_REFUSED`, which the SDK's clients take as "try
    /// the next endpoint"), while sessions already open and calls in progress finish.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.stopped.store(true, Ordering::Relaxed);
        // Refused before the withdrawal: a client that resolved the service just before must
        // not open a session to it now.
        let refused = self.shared.transport.node.refuse_new_sessions().await;
        let id = lock(&self.shared.sad).id.clone();
        let withdrawn = self.shared.node.withdraw(&id).await;
        // After the withdrawal: the node then has nothing left to withdraw when the link closes.
        if let Some(link) = lock(&self.shared.link).take() {
            link.abort();
        }
        withdrawn?;
        refused.map_err(|e| Error::Transport(e.to_string()))
    }

    /// Stops at once: refuses new sessions, withdraws the service and closes every session
    /// (`going_away`), failing the calls in progress; clients resume their token streams on
    /// other endpoints.
    pub async fn stop(&self) -> Result<(), Error> {
        let withdrawn = self.shutdown().await;
        let node = &self.shared.transport.node;
        if let Ok((sessions, _)) = node.stats().await {
            for s in sessions {
                let _ = node
                    .close(s.id, nexus_stream::ErrorCode::GoingAway, "service stopping")
                    .await;
            }
        }
        withdrawn
    }
}

/// Renews the lease and reports load every renew period; registers again if the node no
/// longer knows the service (it restarted, or the lease ran out).
async fn lease<H: Handler>(shared: std::sync::Weak<Shared<H>>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let period = s.config.renew.unwrap_or_else(|| {
            Duration::from_millis(u64::from(lock(&s.sad).ttl_s.max(1)) * 1000 / 3)
        });
        drop(s);
        tokio::time::sleep(period).await;
        let Some(s) = shared.upgrade() else { return };
        if s.stopped.load(Ordering::Relaxed) {
            return;
        }
        let in_flight = s.in_flight.load(Ordering::Relaxed);
        let max = s.config.in_flight_max.max(1);
        let load = LoadUpdate {
            queue_depth: Some(u32::try_from(in_flight).unwrap_or(u32::MAX)),
            utilization_pct: Some((in_flight.min(max) * 100 / max) as u8),
            ..LoadUpdate::default()
        };
        let id = lock(&s.sad).id.clone();
        if let Err(e) = s.node.report_load(&id, &load).await {
            tracing::debug!(service = %id, error = %e, "load report failed; registering again");
            let sad = lock(&s.sad).clone();
            if let Err(e) = s.node.register(&sad, &s.credentials).await {
                tracing::warn!(service = %id, error = %e, "lease renewal failed");
            }
        }
    }
}

/// Least and most time between two attempts to open the service's link to its node.
const LINK_RETRY_MIN: Duration = Duration::from_millis(100);
const LINK_RETRY_MAX: Duration = Duration::from_secs(2);

/// Holds the service's link to its node (`NodeClient::link`) while the service runs, so that
/// the node withdraws it as soon as its process dies. A link that ends is opened again; a node
/// that does not know the service (it restarted, or withdrew the service when an earlier link
/// closed) gets it registered again first.
async fn hold_link<H: Handler>(shared: std::sync::Weak<Shared<H>>) {
    let mut wait = LINK_RETRY_MIN;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stopped.load(Ordering::Relaxed) {
            return;
        }
        let id = lock(&s.sad).id.clone();
        let link = match s.node.link(&id).await {
            Ok(link) => link,
            Err(e) => {
                tracing::debug!(service = %id, error = %e, "service link refused; registering again");
                let sad = lock(&s.sad).clone();
                if !s.stopped.load(Ordering::Relaxed)
                    && let Err(e) = s.node.register(&sad, &s.credentials).await
                {
                    tracing::warn!(service = %id, error = %e, "registration failed");
                }
                drop(s);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LINK_RETRY_MAX);
                continue;
            }
        };
        wait = LINK_RETRY_MIN;
        drop(s);
        let why = link.closed().await;
        tracing::info!(service = %id, reason = %why, "the service's link to its node ended; opening it again");
    }
}

async fn serve_inbound<H: Handler>(
    shared: Arc<Shared<H>>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
) {
    while let Some(item) = inbound.recv().await {
        match item {
            Inbound::Flow {
                stream,
                peer,
                first,
                events,
            } => {
                tokio::spawn(serve_flow(shared.clone(), stream, peer, first, events));
            }
            Inbound::Message { stream, data } => {
                tokio::spawn(serve_tensor(shared.clone(), stream, data));
            }
            Inbound::Closed { .. } => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_tensor<H: Handler>(shared: Arc<Shared<H>>, stream: StreamRef, data: Bytes) {
    let started = crate::now();
    // The transfer id sits right after version and kind: an error about a tensor that does
    // not decode still names it, so the sender's wait ends.
    let transfer = data
        .get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let answer = match Message::decode(&data, &shared.config.limits) {
        Ok(Message::Tensor(t)) => {
            let transfer = t.header.transfer;
            match shared.handler.tensor(t).await {
                Ok(()) => Message::Response(Response {
                    call: transfer,
                    payload: Bytes::new(),
                }),
                Err(e) => Message::Error(ApiError {
                    call: transfer,
                    ..e
                }),
            }
        }
        Ok(other) => Message::Error(ApiError::new(
            transfer,
            ErrorCode::BadRequest,
            format!(
                "{} is not sent as a reliable-unordered message",
                crate::kind_name(&other)
            ),
        )),
        Err(e) => Message::Error(ApiError::new(transfer, ErrorCode::from(&e), e.to_string())),
    };
    let result: Result<(), Error> = match &answer {
        Message::Error(e) => Err(Error::Api(e.clone())),
        _ => Ok(()),
    };
    let _ = shared
        .transport
        .node
        .send_message(stream.session, answer.encode(), MessageOptions::default())
        .await;
    shared
        .metrics
        .observe_call("tensor", &result, started.elapsed());
}

async fn serve_flow<H: Handler>(
    shared: Arc<Shared<H>>,
    flow: StreamRef,
    peer: Option<[u8; 32]>,
    first: Bytes,
    mut events: mpsc::UnboundedReceiver<FlowEvent>,
) {
    let node = shared.transport.node.clone();
    // The answer and the end of this side in one command, so in one packet.
    let reply = |m: Message| {
        let node = node.clone();
        async move {
            let _ = node.send_batch(flow, vec![m.encode()], true).await;
        }
    };
    match Message::decode(&first, &shared.config.limits) {
        Ok(Message::Hello(h)) => {
            let answer = if (h.version_min..=h.version_max).contains(&VERSION) {
                Message::HelloAck(HelloAck {
                    version: VERSION,
                    service: lock(&shared.sad).id.clone(),
                    models: shared.handler.models(),
                })
            } else {
                Message::Error(ApiError::new(
                    0,
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this service speaks NexAPI {VERSION}, the client {}..={}",
                        h.version_min, h.version_max
                    ),
                ))
            };
            reply(answer).await;
        }
        Ok(Message::Request(request)) => {
            let started = crate::now();
            let op = request.op;
            let answer = serve_request(&shared, flow, peer, request, &mut events).await;
            let result: Result<(), Error> = match &answer {
                Some(Message::Error(e)) => Err(Error::Api(e.clone())),
                _ => Ok(()),
            };
            let name = match op {
                Op::Infer => "infer",
                Op::Stream => "stream",
            };
            shared
                .metrics
                .observe_call(name, &result, started.elapsed());
            match answer {
                Some(m) => reply(m).await,
                // Cancelled by the caller or its session closed: nothing to answer.
                None => {
                    let _ = node.cancel(flow).await;
                }
            }
        }
        Ok(other) => {
            reply(Message::Error(ApiError::new(
                0,
                ErrorCode::BadRequest,
                format!(
                    "a flow starts with HELLO or REQUEST, not {}",
                    crate::kind_name(&other)
                ),
            )))
            .await;
        }
        Err(e) => {
            reply(Message::Error(ApiError::new(
                0,
                ErrorCode::from(&e),
                e.to_string(),
            )))
            .await;
        }
    }
    shared.transport.unwatch(flow);
}

/// Serves one request; `None` when the caller went away (nothing to answer).
async fn serve_request<H: Handler>(
    shared: &Arc<Shared<H>>,
    flow: StreamRef,
    peer: Option<[u8; 32]>,
    request: Request,
    events: &mut mpsc::UnboundedReceiver<FlowEvent>,
) -> Option<Message> {
    let call_id = request.call;
    let error = |code, message: String| Some(Message::Error(ApiError::new(call_id, code, message)));
    let now_ms = unix_ms_now();
    if request.deadline_ms != 0 && now_ms >= request.deadline_ms {
        return error(
            ErrorCode::DeadlineExceeded,
            format!(
                "the deadline passed {} ms ago",
                now_ms - request.deadline_ms
            ),
        );
    }
    let models = shared.handler.models();
    if !models.is_empty() && !models.iter().any(|m| m.name == request.model) {
        return error(
            ErrorCode::UnknownModel,
            format!("this service does not serve model {:?}", request.model),
        );
    }
    // Replays first: they cost nothing and need no slot.
    if let Some(key) = request.idempotency {
        let cached = lock(&shared.replay).entries.get(&key).cloned();
        match (cached, request.op) {
            (Some(Replay::Response(payload)), Op::Infer) => {
                return Some(Message::Response(Response {
                    call: call_id,
                    payload,
                }));
            }
            (Some(Replay::Stream(tokens, end)), Op::Stream) => {
                let from = request.resume_from.unwrap_or(0);
                let encoded: Vec<Bytes> = tokens
                    .into_iter()
                    .filter(|t| t.seq >= from)
                    .map(|t| Message::Token(t).encode())
                    .collect();
                for batch in encoded.chunks(TOKENS_BATCH_MAX) {
                    if send_backpressured(&shared.transport.node, flow, batch.to_vec())
                        .await
                        .is_err()
                    {
                        return None;
                    }
                }
                return Some(Message::End(end));
            }
            _ => {}
        }
    }
    let in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = InFlight(&shared.in_flight);
    if in_flight > shared.config.in_flight_max {
        return error(
            ErrorCode::Overloaded,
            format!("{} calls in flight, the limit", shared.config.in_flight_max),
        );
    }
    let call = Call {
        model: request.model.clone(),
        payload: request.payload.clone(),
        deadline_ms: request.deadline_ms,
        peer,
        trace: request.trace,
    };
    let remaining = call.remaining();
    let deadline = async {
        match remaining {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    // The caller's side is finished after its request; anything else on the flow is the
    // caller going away.
    let gone = async {
        loop {
            match events.recv().await {
                Some(FlowEvent::Finished) | Some(FlowEvent::Message(_)) => {}
                Some(FlowEvent::Failed(_)) | None => return,
            }
        }
    };
    match request.op {
        Op::Infer => {
            let work = shared.handler.infer(call);
            tokio::select! {
                answer = work => match answer {
                    Ok(payload) => {
                        if let Some(key) = request.idempotency {
                            lock(&shared.replay).insert(key, Replay::Response(payload.clone()), shared.config.replay_entries);
                        }
                        Some(Message::Response(Response { call: call_id, payload }))
                    }
                    Err(e) => Some(Message::Error(ApiError { call: call_id, ..e })),
                },
                () = deadline => error(ErrorCode::DeadlineExceeded, "the handler did not answer before the deadline".into()),
                () = gone => None,
            }
        }
        Op::Stream => {
            let record = Arc::new(Mutex::new(Vec::new()));
            let (sink, mut writer) = TokenSink::start(
                shared.transport.node.clone(),
                flow,
                request.resume_from.unwrap_or(0),
                record.clone(),
            );
            let work = shared.handler.stream(call, sink);
            // On a deadline or a caller gone, the writer is dropped (aborted) with the select:
            // tokens it still held are not sent after the answer.
            let work = async {
                let answer = work.await;
                // The END follows the last token: wait until the writer handed them all over.
                if answer.is_ok() && writer.drained().await.is_err() {
                    return None;
                }
                Some(answer)
            };
            tokio::select! {
                answer = work => match answer {
                    // The transport refused a token: the caller is gone.
                    None => None,
                    Some(Ok((finish, prompt_tokens))) => {
                        let tokens = std::mem::take(&mut *lock(&record));
                        let end = StreamEnd { tokens: tokens.len() as u64, finish, prompt_tokens };
                        if let Some(key) = request.idempotency {
                            lock(&shared.replay).insert(key, Replay::Stream(tokens, end), shared.config.replay_entries);
                        }
                        Some(Message::End(end))
                    }
                    Some(Err(e)) => Some(Message::Error(ApiError { call: call_id, ..e })),
                },
                () = deadline => error(ErrorCode::DeadlineExceeded, "the stream did not end before the deadline".into()),
                () = gone => None,
            }
        }
    }
}
