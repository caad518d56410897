//! The client side of the SDK: resolve an intent through the local node, then call the chosen
//! service directly over a pooled, MIC-authenticated NexStream session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nexus_registry::Intent;
use nexus_stream::udp::StreamNode;
use nexus_stream::{FlowOptions, MessageOptions, SessionId, StreamRef};
use nexus_trust_core::mic::SubjectKind;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::node::{NodeClient, NodeConfig};
use crate::transport::{FlowEvent, Inbound, Transport};
use crate::wire::{
    ApiError, Candidate, ErrorCode, Hello, HelloAck, Limits, Message, Op, Request, ResolveAnswer,
    StreamEnd, Tensor, Token, VERSION,
};
use crate::{EndpointSettings, Identity};

/// A client's settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The local node.
    pub node: NodeConfig,
    /// Where the client's NexStream endpoint binds (any port).
    pub bind: SocketAddr,
    /// Publisher named in the client's agent certificate.
    pub publisher: String,
    /// Deadline of a call without one of its own.
    pub deadline: Duration,
    /// How long a resolve answer is reused for the same intent (0: resolve every call).
    pub resolve_ttl: Duration,
    /// Times a failed idempotent call or token stream moves to the next endpoint.
    pub failovers: u32,
    /// Transport and identity settings.
    pub endpoint: EndpointSettings,
    /// Where the client counts its calls; a clone registered in a Prometheus registry before
    /// the client connects exports them ([`Metrics::register`]).
    pub metrics: Metrics,
    /// The path calls take: straight to the chosen service (the default), or through the
    /// local node's data plane to the intent class's routing key.
    pub path: crate::Path,
}

impl ClientConfig {
    /// Defaults for a client of `node`.
    pub fn new(node: NodeConfig) -> ClientConfig {
        ClientConfig {
            node,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            publisher: "nexus-api".into(),
            deadline: Duration::from_secs(30),
            resolve_ttl: Duration::from_secs(2),
            failovers: 2,
            endpoint: EndpointSettings::default(),
            metrics: Metrics::default(),
            path: crate::Path::Direct,
        }
    }
}

/// Per-call options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Deadline relative to now ([`ClientConfig::deadline`] if unset).
    pub deadline: Option<Duration>,
    /// Idempotency key; a fresh random key if unset. Calls with a key may be retried on the
    /// next endpoint after a transport failure.
    pub idempotency: Option<[u8; 16]>,
    /// Send the call to this many of the best endpoints at once; the first answer wins and the
    /// others are cancelled (0 or 1: no hedging).
    pub hedge: usize,
    /// The caller's trace context, sent with the request so the service's spans join the
    /// caller's trace (none: the request carries no trace context).
    pub trace: Option<crate::TraceContext>,
}

/// A NexAPI client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

type TensorAcks = Mutex<HashMap<(SessionId, u64), oneshot::Sender<Result<(), ApiError>>>>;

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) node: NodeClient,
    pub(crate) transport: Transport,
    pub(crate) routed: crate::routed::Routed,
    calls: AtomicU64,
    resolved: Mutex<HashMap<String, (Instant, Arc<ResolveAnswer>)>>,
    acks: Arc<TensorAcks>,
    connecting: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    metrics: Metrics,
    identity: [u8; 32],
}

impl Client {
    /// Connects to the local node: fetches the fabric's trust material, has the CA certify a
    /// fresh agent key, and starts the client's NexStream endpoint.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let node = NodeClient::new(config.node.clone()).await?;
        let identity = Identity::obtain(
            &node,
            SubjectKind::Agent,
            None,
            &config.publisher,
            config.endpoint.mic_validity,
        )
        .await?;
        let settings = crate::routed::endpoint_settings(config.path, &config.endpoint);
        let (transport, inbound) =
            crate::start_endpoint(&node, identity.clone(), config.bind, &settings).await?;
        let acks: Arc<TensorAcks> = Arc::default();
        tokio::spawn(tensor_acks(inbound, acks.clone()));
        let inner = Arc::new(Inner {
            node,
            transport,
            calls: AtomicU64::new(1),
            resolved: Mutex::default(),
            acks,
            connecting: Mutex::default(),
            routed: crate::routed::Routed::default(),
            metrics: config.metrics.clone(),
            identity: identity.key.verifying_key().to_bytes(),
            config,
        });
        crate::spawn_trust_refresh(Arc::downgrade(&inner), |i: &Inner| {
            (
                &i.node,
                i.transport.node.clone(),
                i.config.endpoint.trust_refresh,
            )
        });
        Ok(Client { inner })
    }

    /// The client's key (its NexStream identity).
    pub fn key(&self) -> [u8; 32] {
        self.inner.identity
    }

    /// The client's metrics (register them in a Prometheus registry to export them).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The local node.
    pub fn node(&self) -> &NodeClient {
        &self.inner.node
    }

    /// The NexStream endpoint (its address, sessions and counters).
    pub fn stream_node(&self) -> &StreamNode {
        &self.inner.transport.node
    }

    /// Resolves `intent` through the local node (reusing an answer younger than
    /// [`ClientConfig::resolve_ttl`]).
    pub async fn resolve(&self, intent: &Intent) -> Result<Arc<ResolveAnswer>, Error> {
        let key = intent.canonical();
        let ttl = self.inner.config.resolve_ttl;
        if !ttl.is_zero() {
            let cache = lock(&self.inner.resolved);
            if let Some((at, answer)) = cache.get(&key)
                && at.elapsed() < ttl
            {
                return Ok(answer.clone());
            }
        }
        let answer = Arc::new(self.inner.node.resolve(intent).await?);
        if !ttl.is_zero() {
            let mut cache = lock(&self.inner.resolved);
            if cache.len() >= 1024 {
                cache.clear();
            }
            cache.insert(key, (crate::now(), answer.clone()));
        }
        Ok(answer)
    }

    pub(crate) fn forget(&self, intent: &Intent) {
        lock(&self.inner.resolved).remove(&intent.canonical());
    }

    async fn candidates(&self, intent: &Intent) -> Result<Vec<Candidate>, Error> {
        if self.inner.config.path == crate::Path::Routed {
            return self.routed_candidates(intent).await;
        }
        let answer = self.resolve(intent).await?;
        let usable: Vec<Candidate> = answer
            .candidates
            .iter()
            .filter(|c| c.key.is_some() && c.host.is_some() && c.port != 0)
            .cloned()
            .collect();
        if usable.is_empty() {
            self.forget(intent);
            return Err(Error::api(
                ErrorCode::Unavailable,
                format!(
                    "no endpoint for intent {} ({} candidates, none with a NexStream endpoint and a certified key)",
                    intent.canonical(),
                    answer.candidates.len()
                ),
            ));
        }
        Ok(usable)
    }

    /// The session to `candidate`'s service, opened (and its MIC verified) if none is pooled.
    /// On the routed path: the pooled session of the class `candidate` was resolved in, to
    /// whichever of its replicas the data plane picked.
    pub async fn session(&self, candidate: &Candidate) -> Result<SessionId, Error> {
        if self.inner.config.path == crate::Path::Routed {
            return self.routed_session(candidate).await;
        }
        let (Some(key), Some(host)) = (candidate.key, candidate.host) else {
            return Err(Error::api(
                ErrorCode::Unavailable,
                format!("{} has no certified NexStream endpoint", candidate.service),
            ));
        };
        if let Some(s) = self.inner.transport.session_to(&key) {
            return Ok(s);
        }
        // One connect per peer at a time: concurrent first calls share the session.
        let gate = lock(&self.inner.connecting).entry(key).or_default().clone();
        let _turn = gate.lock().await;
        if let Some(s) = self.inner.transport.session_to(&key) {
            return Ok(s);
        }
        let connected = self
            .inner
            .transport
            .node
            .connect(key, SocketAddr::new(host, candidate.port))
            .await;
        // The gate is needed only while a connect is under way, failed or not.
        lock(&self.inner.connecting).remove(&key);
        let session =
            connected.map_err(|e| Error::Transport(format!("{}: {e}", candidate.service)))?;
        self.inner.transport.pool(key, session);
        Ok(session)
    }

    /// Closes every pooled session (calls in progress on them fail); later calls open new
    /// ones.
    pub async fn close_sessions(&self) {
        let node = &self.inner.transport.node;
        self.forget_routed_sessions();
        for session in self.inner.transport.take_sessions() {
            let _ = node
                .close(session, nexus_stream::ErrorCode::NoError, "client closing")
                .await;
        }
    }

    /// Asks `candidate`'s service which models it serves (`HELLO`).
    pub async fn hello(&self, candidate: &Candidate) -> Result<HelloAck, Error> {
        let session = self.session(candidate).await?;
        let hello = Message::Hello(Hello {
            version_min: VERSION,
            version_max: VERSION,
            agent: concat!("nexus-api/", env!("CARGO_PKG_VERSION")).into(),
        });
        let deadline = crate::now() + self.inner.config.deadline;
        match self.exchange(session, hello.encode(), deadline).await? {
            Message::HelloAck(ack) => Ok(ack),
            Message::Error(e) => Err(Error::Api(e)),
            other => Err(unexpected(&other)),
        }
    }

    fn next_call(&self) -> u64 {
        self.inner.calls.fetch_add(1, Ordering::Relaxed)
    }

    fn request(
        &self,
        op: Op,
        model: &str,
        payload: Bytes,
        opts: &CallOptions,
    ) -> (Request, Instant) {
        let timeout = opts.deadline.unwrap_or(self.inner.config.deadline);
        let deadline = crate::now() + timeout;
        let request = Request {
            call: self.next_call(),
            op,
            deadline_ms: unix_ms_in(timeout),
            idempotency: Some(opts.idempotency.unwrap_or_else(crate::os_random)),
            resume_from: None,
            trace: opts.trace,
            model: model.to_owned(),
            payload,
        };
        (request, deadline)
    }

    /// One request and one answer on a new flow of `session`.
    async fn exchange(
        &self,
        session: SessionId,
        request: Bytes,
        deadline: Instant,
    ) -> Result<Message, Error> {
        let (flow, mut events) = self.open(session, request, deadline).await?;
        let answer = tokio::time::timeout_at(deadline.into(), events.recv()).await;
        self.inner.transport.unwatch(flow);
        match answer {
            Err(_) => {
                let _ = self.inner.transport.node.cancel(flow).await;
                Err(Error::api(
                    ErrorCode::DeadlineExceeded,
                    "the call's deadline passed",
                ))
            }
            Ok(None) => Err(Error::Transport("the NexStream endpoint stopped".into())),
            Ok(Some(FlowEvent::Message(data))) => Ok(Message::decode(&data, &Limits::default())?),
            Ok(Some(FlowEvent::Finished)) => Err(Error::Transport(
                "the service finished the flow without an answer".into(),
            )),
            Ok(Some(FlowEvent::Failed(reason))) => Err(Error::Transport(reason)),
        }
    }

    /// Opens a flow on `session`, sends `request` on it and finishes this side.
    async fn open(
        &self,
        session: SessionId,
        request: Bytes,
        deadline: Instant,
    ) -> Result<(StreamRef, mpsc::UnboundedReceiver<FlowEvent>), Error> {
        let node = &self.inner.transport.node;
        let opts = FlowOptions {
            priority: 0,
            deadline: Some(deadline),
        };
        let flow = node
            .open_flow(session, opts)
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let events = self.inner.transport.watch(flow);
        // The request and the end of this side in one command, so in one flight.
        if let Err(e) = node.send_batch(flow, vec![request], true).await {
            self.inner.transport.unwatch(flow);
            return Err(Error::Transport(e.to_string()));
        }
        Ok((flow, events))
    }

    /// Unary inference: `payload` to `model` on the best endpoint for `intent`.
    pub async fn infer(
        &self,
        intent: &Intent,
        model: &str,
        payload: Bytes,
    ) -> Result<Bytes, Error> {
        self.infer_with(intent, model, payload, CallOptions::default())
            .await
    }

    /// [`Client::infer`] with options (deadline, idempotency key, hedging).
    pub async fn infer_with(
        &self,
        intent: &Intent,
        model: &str,
        payload: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Error> {
        let started = crate::now();
        let candidates = self.candidates(intent).await?;
        let routed = self.inner.config.path == crate::Path::Routed;
        let result = if opts.hedge > 1 && !routed {
            self.hedged(&candidates, model, payload, &opts).await
        } else {
            self.infer_on(&candidates, model, payload, &opts).await
        };
        if matches!(&result, Err(e) if e.code() == ErrorCode::Unavailable) {
            self.forget(intent);
        }
        self.inner
            .metrics
            .observe_call("infer", &result, started.elapsed());
        result
    }

    /// Unary inference on the first of `candidates` that answers (moving on after a transport
    /// failure or a retryable error, at most [`ClientConfig::failovers`] times).
    pub async fn infer_on(
        &self,
        candidates: &[Candidate],
        model: &str,
        payload: Bytes,
        opts: &CallOptions,
    ) -> Result<Bytes, Error> {
        let (request, deadline) = self.request(Op::Infer, model, payload, opts);
        let encoded = Message::Request(request).encode();
        let mut last = None;
        for candidate in candidates
            .iter()
            .take(self.inner.config.failovers as usize + 1)
        {
            let attempt = async {
                let session = self.session(candidate).await?;
                self.exchange(session, encoded.clone(), deadline).await
            };
            match attempt.await {
                Ok(Message::Response(r)) => return Ok(r.payload),
                Ok(Message::Error(e)) if e.code.retryable() => last = Some(Error::Api(e)),
                Ok(Message::Error(e)) => return Err(Error::Api(e)),
                Ok(other) => return Err(unexpected(&other)),
                Err(e @ (Error::Transport(_) | Error::Node(_))) => last = Some(e),
                Err(e) => return Err(e),
            }
            if crate::now() >= deadline {
                break;
            }
        }
        Err(last.unwrap_or_else(|| Error::api(ErrorCode::Unavailable, "no endpoint answered")))
    }

    async fn hedged(
        &self,
        candidates: &[Candidate],
        model: &str,
        payload: Bytes,
        opts: &CallOptions,
    ) -> Result<Bytes, Error> {
        let (request, deadline) = self.request(Op::Infer, model, payload, opts);
        let mut connects = tokio::task::JoinSet::new();
        for c in candidates.iter().take(opts.hedge) {
            let client = self.clone();
            let c = c.clone();
            connects.spawn(async move { client.session(&c).await });
        }
        let mut sessions = Vec::new();
        let mut last = None;
        while let Some(done) = connects.join_next().await {
            match done {
                Ok(Ok(s)) => sessions.push(s),
                Ok(Err(e)) => last = Some(e),
                Err(e) => last = Some(Error::Transport(e.to_string())),
            }
        }
        if sessions.is_empty() {
            return Err(last.unwrap_or_else(|| Error::api(ErrorCode::Unavailable, "no endpoint")));
        }
        let node = &self.inner.transport.node;
        let opts = FlowOptions {
            priority: 0,
            deadline: Some(deadline),
        };
        let id = node
            .hedge(sessions.clone(), Message::Request(request).encode(), opts)
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let won = self.inner.transport.watch_hedge(id, sessions);
        match tokio::time::timeout_at(deadline.into(), won).await {
            Err(_) => Err(Error::api(
                ErrorCode::DeadlineExceeded,
                "the call's deadline passed",
            )),
            Ok(Err(_)) => Err(Error::Transport("the NexStream endpoint stopped".into())),
            Ok(Ok(Err(reason))) => Err(Error::Transport(reason)),
            Ok(Ok(Ok(data))) => match Message::decode(&data, &Limits::default())? {
                Message::Response(r) => Ok(r.payload),
                Message::Error(e) => Err(Error::Api(e)),
                other => Err(unexpected(&other)),
            },
        }
    }

    /// Streams tokens for `prompt` from `model` on the best endpoint for `intent`.
    pub async fn stream(
        &self,
        intent: &Intent,
        model: &str,
        prompt: Bytes,
    ) -> Result<TokenStream, Error> {
        self.stream_with(intent, model, prompt, CallOptions::default())
            .await
    }

    /// [`Client::stream`] with options (hedging does not apply to streams).
    pub async fn stream_with(
        &self,
        intent: &Intent,
        model: &str,
        prompt: Bytes,
        opts: CallOptions,
    ) -> Result<TokenStream, Error> {
        let candidates = self.candidates(intent).await?;
        self.stream_on(candidates, model, prompt, &opts).await
    }

    /// [`Client::stream`] on the first of `candidates` that accepts the call.
    pub async fn stream_on(
        &self,
        candidates: Vec<Candidate>,
        model: &str,
        prompt: Bytes,
        opts: &CallOptions,
    ) -> Result<TokenStream, Error> {
        let (request, deadline) = self.request(Op::Stream, model, prompt, opts);
        let mut stream = TokenStream {
            client: self.clone(),
            candidates,
            at: 0,
            request,
            deadline,
            flow: None,
            events: None,
            next_seq: 0,
            end: None,
            started: crate::now(),
            last_token: None,
            resumes: 0,
            done: false,
        };
        stream.open_next(false).await?;
        Ok(stream)
    }

    /// Sends `tensor` to the best endpoint for `intent` and waits for its acknowledgement.
    pub async fn send_tensor(&self, intent: &Intent, tensor: Tensor) -> Result<(), Error> {
        let candidates = self.candidates(intent).await?;
        self.send_tensor_to(&candidates[0], tensor, None).await
    }

    /// Sends `tensor` to `candidate`'s service as one reliable-unordered message (chunks placed
    /// by offset on arrival) and waits until the service acknowledges it.
    pub async fn send_tensor_to(
        &self,
        candidate: &Candidate,
        tensor: Tensor,
        deadline: Option<Duration>,
    ) -> Result<(), Error> {
        let started = crate::now();
        let limits = Limits::default();
        tensor
            .header
            .check(tensor.data.len() as u64, &limits)
            .map_err(|e| Error::api(ErrorCode::from(&e), e.to_string()))?;
        let timeout = deadline.unwrap_or(self.inner.config.deadline);
        let session = self.session(candidate).await?;
        let transfer = tensor.header.transfer;
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.acks).insert((session, transfer), tx);
        let sent = self
            .inner
            .transport
            .node
            .send_message_parts(
                session,
                // The data goes to the transport as it is (no copy into one buffer).
                Message::encode_tensor_parts(&tensor).into(),
                MessageOptions {
                    priority: 0,
                    deadline: Some(crate::now() + timeout),
                },
            )
            .await;
        let result = match sent {
            Err(e) => Err(Error::Transport(e.to_string())),
            Ok(_) => match tokio::time::timeout(timeout, rx).await {
                Err(_) => Err(Error::api(
                    ErrorCode::DeadlineExceeded,
                    "no acknowledgement before the deadline",
                )),
                Ok(Err(_)) => Err(Error::Transport("the session closed".into())),
                Ok(Ok(ack)) => ack.map_err(Error::Api),
            },
        };
        lock(&self.inner.acks).remove(&(session, transfer));
        self.inner
            .metrics
            .observe_call("tensor", &result, started.elapsed());
        result
    }
}

/// Routes tensor acknowledgements (reliable-unordered `RESPONSE`/`ERROR` messages) to their
/// senders.
async fn tensor_acks(mut inbound: mpsc::UnboundedReceiver<Inbound>, acks: Arc<TensorAcks>) {
    while let Some(item) = inbound.recv().await {
        match item {
            Inbound::Message { stream, data } => {
                let (call, result) = match Message::decode(&data, &Limits::default()) {
                    Ok(Message::Response(r)) => (r.call, Ok(())),
                    Ok(Message::Error(e)) => (e.call, Err(e)),
                    _ => continue,
                };
                if let Some(tx) = lock(&acks).remove(&(stream.session, call)) {
                    let _ = tx.send(result);
                }
            }
            Inbound::Closed { session } => {
                lock(&acks).retain(|(s, _), _| *s != session);
            }
            // A service does not open flows to a client.
            Inbound::Flow { .. } => {}
        }
    }
}

/// Tokens of one streamed call, in order, each once — across a resume on another endpoint.
#[derive(Debug)]
pub struct TokenStream {
    client: Client,
    candidates: Vec<Candidate>,
    at: usize,
    request: Request,
    deadline: Instant,
    flow: Option<StreamRef>,
    events: Option<mpsc::UnboundedReceiver<FlowEvent>>,
    next_seq: u64,
    end: Option<StreamEnd>,
    started: Instant,
    last_token: Option<Instant>,
    resumes: u32,
    done: bool,
}

impl TokenStream {
    /// Opens the call on the next candidate (`resume`: asking for tokens from `next_seq`).
    async fn open_next(&mut self, resume: bool) -> Result<(), Error> {
        if resume {
            self.request.resume_from = Some(self.next_seq);
        }
        let encoded = Message::Request(self.request.clone()).encode();
        let mut last = None;
        while self.at < self.candidates.len() {
            let candidate = self.candidates[self.at].clone();
            let opened = async {
                let session = self.client.session(&candidate).await?;
                self.client
                    .open(session, encoded.clone(), self.deadline)
                    .await
            };
            match opened.await {
                Ok((flow, events)) => {
                    self.flow = Some(flow);
                    self.events = Some(events);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    self.at += 1;
                }
            }
        }
        Err(last
            .unwrap_or_else(|| Error::api(ErrorCode::Unavailable, "no endpoint to stream from")))
    }

    /// The next token; `None` after the end. A transport failure resumes the stream on the
    /// next endpoint from the first token not yet received (at most
    /// [`ClientConfig::failovers`] times).
    pub async fn next(&mut self) -> Option<Result<Token, Error>> {
        if self.done {
            return None;
        }
        loop {
            let events = self.events.as_mut()?;
            let event = tokio::time::timeout_at(self.deadline.into(), events.recv()).await;
            let failure = match event {
                Err(_) => {
                    self.finish_with_cancel().await;
                    return Some(Err(Error::api(
                        ErrorCode::DeadlineExceeded,
                        "the stream's deadline passed",
                    )));
                }
                Ok(Some(FlowEvent::Message(data))) => {
                    match Message::decode(&data, &Limits::default()) {
                        Ok(Message::Token(t)) => {
                            if t.seq < self.next_seq {
                                continue; // already received before a resume
                            }
                            self.next_seq = t.seq + 1;
                            let now = crate::now();
                            match self.last_token {
                                None => self.client.inner.metrics.observe_ttft(now - self.started),
                                Some(prev) => {
                                    self.client.inner.metrics.observe_inter_token(now - prev)
                                }
                            }
                            self.last_token = Some(now);
                            return Some(Ok(t));
                        }
                        Ok(Message::End(end)) => {
                            self.end = Some(end);
                            self.close();
                            let ok: Result<(), Error> = Ok(());
                            self.client.inner.metrics.observe_call(
                                "stream",
                                &ok,
                                self.started.elapsed(),
                            );
                            return None;
                        }
                        Ok(Message::Error(e)) if e.code.retryable() => {
                            format!("{}: {}", e.code, e.message)
                        }
                        Ok(Message::Error(e)) => {
                            self.close();
                            let err = Err(Error::Api(e));
                            self.client.inner.metrics.observe_call(
                                "stream",
                                &err,
                                self.started.elapsed(),
                            );
                            return Some(err);
                        }
                        Ok(other) => {
                            self.finish_with_cancel().await;
                            return Some(Err(unexpected(&other)));
                        }
                        Err(e) => {
                            self.finish_with_cancel().await;
                            return Some(Err(Error::Wire(e)));
                        }
                    }
                }
                Ok(Some(FlowEvent::Finished)) => {
                    "the service finished the flow before the end".into()
                }
                Ok(Some(FlowEvent::Failed(reason))) => reason,
                Ok(None) => "the NexStream endpoint stopped".into(),
            };
            // Resume elsewhere if allowed.
            if let Some(flow) = self.flow.take() {
                self.client.inner.transport.unwatch(flow);
            }
            self.events = None;
            if self.resumes >= self.client.inner.config.failovers
                || self.request.idempotency.is_none()
            {
                self.done = true;
                let err = Err(Error::Transport(failure));
                self.client
                    .inner
                    .metrics
                    .observe_call("stream", &err, self.started.elapsed());
                return Some(err);
            }
            self.resumes += 1;
            self.at += 1;
            if let Err(e) = self.open_next(true).await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Collects the remaining tokens' text.
    pub async fn text(&mut self) -> Result<String, Error> {
        let mut out = String::new();
        while let Some(t) = self.next().await {
            out.push_str(&t?.text);
        }
        Ok(out)
    }

    /// The `END` message, once the stream has ended normally.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end
    }

    /// Times the stream moved to another endpoint.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Stops the stream: the flow is reset, the service stops generating.
    pub async fn cancel(mut self) {
        self.finish_with_cancel().await;
    }

    fn close(&mut self) {
        self.done = true;
        if let Some(flow) = self.flow.take() {
            self.client.inner.transport.unwatch(flow);
        }
        self.events = None;
    }

    async fn finish_with_cancel(&mut self) {
        if let Some(flow) = self.flow {
            let _ = self.client.inner.transport.node.cancel(flow).await;
        }
        self.close();
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if let Some(flow) = self.flow.take() {
            self.client.inner.transport.unwatch(flow);
            if !self.done {
                let node = self.client.inner.transport.node.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = node.cancel(flow).await;
                    });
                }
            }
        }
    }
}

fn unexpected(m: &Message) -> Error {
    Error::api(
        ErrorCode::BadRequest,
        format!(
            "unexpected message from the service: {}",
            crate::kind_name(m)
        ),
    )
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix milliseconds `after` from now.
pub(crate) fn unix_ms_in(after: Duration) -> u64 {
    crate::unix_ms_now().saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
}
