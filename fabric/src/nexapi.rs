//! The node's local NexAPI endpoint: a UDP socket on loopback that answers binary `RESOLVE`
//! messages (`nexus_api::wire`) with `ANSWER`s, one datagram each way, the way a DNS server
//! answers queries. [`ApiActor`], a child of the node's supervisor, serves it.
//!
//! Each datagram is one NexAPI message:
//! - a `RESOLVE` is resolved by the registry actor (`RegistryMsg::ResolveWithKeys`: the same
//!   resolution `POST /v1/resolve` makes) and answered with an `ANSWER` carrying the same call
//!   id. Each candidate carries the service id, its node, that node's host IP (the IP of the
//!   member's gossip address), the service's port and stream, the score, and the subject key of
//!   the MIC the advert carries. Candidates are dropped from the end (the worst first) if the
//!   answer would exceed [`ANSWER_BYTES_MAX`]; with today's limits no answer comes near it
//!   ([`ANSWER_BYTES_WORST`]);
//! - a datagram that does not decode is answered with an `ERROR` whose code follows its
//!   decoding error (`ErrorCode::from(&WireError)`), with the call id of a `RESOLVE` whose call
//!   id could be read and 0 otherwise;
//! - any other request kind (`HELLO`, `REQUEST`, …) is answered with an `ERROR`
//!   (`ErrorCode::BadRequest`);
//! - an `ANSWER` or an `ERROR` is a response: it is dropped unanswered, so two endpoints can
//!   never keep answering each other;
//! - when the registry actor does not answer within [`RESOLVE_TIMEOUT`] (it is restarting) the
//!   answer is an `ERROR` (`ErrorCode::Unavailable`).
//!
//! Each of these failures counts in `nexus_api_errors_total{reason}`; answered resolves count in
//! `nexus_api_resolve_total` and `nexus_api_resolve_seconds` (those answered from the answer
//! cache below also in `nexus_api_resolve_cached_total`). Nothing a datagram holds can stop
//! the endpoint. One thread of its own receives the datagrams, blocked in `recvfrom` on a
//! plain socket as dnsmasq is: the async runtime does not watch the socket, so a datagram
//! wakes that thread and no other. It answers those the answer cache below holds, with no
//! allocation, and hands every other datagram to one async task, which asks the registry actor
//! and answers it (at most [`MISSES_QUEUED_MAX`] wait for it; beyond that a datagram is
//! dropped and counted as `registry`). Answers are sent without blocking (a full send buffer
//! counts as `send`). Further datagrams wait in the socket's receive buffer (and the kernel
//! drops what does not fit, as for any UDP server).
//!
//! Host IPs come from a copy of the member list the task keeps for up to [`MEMBERS_MAX_AGE`]
//! (re-read sooner when a candidate's node is missing from it), so a resolve costs at most one
//! round trip to the registry actor and none to the gossip actor.
//!
//! **Answer cache.** The task keeps the encoded `ANSWER` per intent (keyed by the `RESOLVE`
//! datagram with its call id zeroed, only for datagrams that decoded as a `RESOLVE`; at most
//! [`ANSWER_CACHE_ENTRIES_MAX`] intents), and the thread answers a datagram equal to a cached
//! intent but for its call id with it (the call id patched in), without the task or the
//! registry actor, while both hold:
//! - the registry has not changed since: the registry actor bumps a shared counter
//!   ([`nexus_actors::RegistryChanges`]) before it handles anything that can change an answer
//!   (registrations, load updates, adverts, trust updates, its timers) and when it restarts;
//!   the counter is read before the registry is asked, so an answer is never kept under a
//!   count from before a change it missed;
//! - the answer is younger than [`ANSWER_CACHE_AGE_MAX`], which bounds what time alone changes
//!   between two of the registry's timers (a lease that runs out before the refresh that
//!   withdraws it).
//!
//! So a cached answer is the one the registry would give, up to that age. The registry tracks
//! an intent's class for the intent routes when it is asked, so a class in use is tracked at
//! least every [`ANSWER_CACHE_AGE_MAX`] (its last use as the registry sees it is at most that
//! much older than its last resolve).
//!
//! The endpoint does not authenticate anyone: the configuration refuses a non-loopback address
//! for it (`[api] listen`).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nexus_actors::{
    GossipMsg, KeyedResolution, NodeMetrics, RegistryChanges, RegistryMsg, SupervisorMsg,
};
use nexus_api::wire::{Candidate, ResolveAnswer, VERSION};
use nexus_api::{ApiError, ErrorCode, Limits, Message, WireError};
use nexus_gossip::NodeId;
use nexus_registry::Intent;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest answer, bytes. The endpoint is on loopback (MTU 65,536), so an answer is one
/// unfragmented datagram up to the UDP limit; this stays under it.
pub const ANSWER_BYTES_MAX: usize = 65_000;
/// Deadline of one call to the registry, gossip or supervisor actor.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the endpoint uses its copy of the member list (for candidates' host IPs).
pub const MEMBERS_MAX_AGE: Duration = Duration::from_secs(1);
/// Datagrams the receiving thread hands to the task before it drops them.
pub const MISSES_QUEUED_MAX: usize = 256;
/// How long the receiving thread waits on a quiet socket before it looks whether it should
/// stop (its actor stopped), milliseconds.
const STOP_CHECK_MS: u64 = 100;
/// Most intents whose answers the endpoint keeps (see the module doc); when full, the oldest
/// answer goes.
pub const ANSWER_CACHE_ENTRIES_MAX: usize = 1024;
/// Longest time an answer is reused without asking the registry again.
pub const ANSWER_CACHE_AGE_MAX: Duration = Duration::from_millis(100);
/// Longest `message` of an `ERROR` answer, bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 256;
/// Receive buffer: the largest UDP payload fits.
const DATAGRAM_BYTES_MAX: usize = 65_535;
/// `RESOLVE`'s kind byte (docs/protocols/nexapi.md): its call id follows at bytes 2..10.
const KIND_RESOLVE: u8 = 0x08;

/// Bytes of an `ANSWER` before its candidates: version, kind, call, routing key, considered,
/// candidate count.
const ANSWER_HEADER_BYTES: usize = 1 + 1 + 8 + 16 + 4 + 1;
/// Bytes of a candidate without its service id, host address and key: id length, node, address
/// family, port, stream, score, key flag.
const CANDIDATE_FIXED_BYTES: usize = 2 + 32 + 1 + 2 + 4 + 8 + 1;
/// The largest answer the registry's limits allow: `K_MAX` candidates with the longest service
/// ids, IPv6 hosts and keys.
pub const ANSWER_BYTES_WORST: usize = ANSWER_HEADER_BYTES
    + nexus_registry::K_MAX as usize
        * (CANDIDATE_FIXED_BYTES + nexus_registry::SERVICE_ID_BYTES_MAX + 16 + 32);

const _: () = assert!(ANSWER_BYTES_WORST <= ANSWER_BYTES_MAX);

/// Encoded size of one candidate.
fn candidate_bytes(c: &Candidate) -> usize {
    let host = match c.host {
        None => 0,
        Some(IpAddr::V4(_)) => 4,
        Some(IpAddr::V6(_)) => 16,
    };
    CANDIDATE_FIXED_BYTES + c.service.len() + host + if c.key.is_some() { 32 } else { 0 }
}

/// Encoded size of an answer.
fn answer_bytes(a: &ResolveAnswer) -> usize {
    ANSWER_HEADER_BYTES + a.candidates.iter().map(candidate_bytes).sum::<usize>()
}

/// The `ANSWER` to `call` from a keyed resolution: candidates best first, each with its node's
/// host IP from `hosts`, as many as fit `bytes_max` (and the wire's count field).
fn build_answer(
    call: u64,
    keyed: KeyedResolution,
    hosts: &BTreeMap<NodeId, IpAddr>,
    bytes_max: usize,
) -> ResolveAnswer {
    let KeyedResolution { resolution, keys } = keyed;
    debug_assert_eq!(resolution.candidates.len(), keys.len());
    let mut len = ANSWER_HEADER_BYTES;
    let mut candidates = Vec::with_capacity(resolution.candidates.len());
    for (c, key) in resolution.candidates.into_iter().zip(keys) {
        let candidate = Candidate {
            host: hosts.get(&c.node).copied(),
            node: c.node.0,
            service: c.service,
            port: c.endpoint.port,
            stream: c.endpoint.stream,
            score: c.score,
            key,
        };
        let size = candidate_bytes(&candidate);
        if len + size > bytes_max || candidates.len() == usize::from(u8::MAX) {
            break;
        }
        len += size;
        candidates.push(candidate);
    }
    let answer = ResolveAnswer {
        call,
        routing_key: resolution.routing_key,
        considered: u32::try_from(resolution.considered).unwrap_or(u32::MAX),
        candidates,
    };
    debug_assert_eq!(answer_bytes(&answer), len);
    answer
}

/// The call id of a datagram that did not decode: a `RESOLVE` of this version long enough to
/// hold one has it at bytes 2..10; anything else has none (0).
fn call_of_undecodable(datagram: &[u8]) -> u64 {
    match datagram {
        [VERSION, KIND_RESOLVE, call @ ..] if call.len() >= 8 => {
            let mut id = [0u8; 8];
            id.copy_from_slice(&call[..8]);
            u64::from_be_bytes(id)
        }
        _ => 0,
    }
}

/// `text`, cut to at most [`ERROR_MESSAGE_BYTES_MAX`] bytes at a character boundary.
fn error_text(text: String) -> String {
    if text.len() <= ERROR_MESSAGE_BYTES_MAX {
        return text;
    }
    let mut end = ERROR_MESSAGE_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The `ERROR` answer to a datagram that did not decode.
fn decode_error(datagram: &[u8], e: &WireError) -> ApiError {
    ApiError::new(
        call_of_undecodable(datagram),
        ErrorCode::from(e),
        error_text(e.to_string()),
    )
}

/// What the endpoint does with a decoded message that is not a `RESOLVE`: `None` for a
/// response (dropped), else the `ERROR` to send.
fn refuse(message: &Message) -> Option<ApiError> {
    let (name, call) = match message {
        Message::Answer(_) | Message::Error(_) => return None,
        Message::Hello(_) => ("HELLO", 0),
        Message::HelloAck(_) => ("HELLO_ACK", 0),
        Message::Request(r) => ("REQUEST", r.call),
        Message::Response(r) => ("RESPONSE", r.call),
        Message::Token(_) => ("TOKEN", 0),
        Message::End(_) => ("END", 0),
        Message::Tensor(_) => ("TENSOR", 0),
        Message::Resolve { call, .. } => ("RESOLVE", *call),
    };
    Some(ApiError::new(
        call,
        ErrorCode::BadRequest,
        format!("{name} is not served here: the local NexAPI endpoint answers RESOLVE only"),
    ))
}

/// Arguments of [`ApiActor`]; cloned for every (re)start.
#[derive(Debug, Clone)]
pub struct ApiArgs {
    /// The endpoint's socket, bound at startup (so "port in use" is a config error); it outlives
    /// actor restarts. A plain socket, not the async runtime's: nothing but the receiving
    /// thread waits on it, so a datagram wakes that thread alone.
    pub socket: Arc<UdpSocket>,
    /// Where the endpoint's metrics go.
    pub metrics: NodeMetrics,
    /// The registry's change counter (the answer cache's validity).
    pub registry_changes: RegistryChanges,
}

/// Messages to [`ApiActor`].
#[derive(Debug)]
pub enum ApiMsg {
    /// Receiving on the socket failed: fail so the supervisor restarts the actor.
    ReceiveFailed(String),
}

/// Owns the serving task and the receiving thread.
#[derive(Debug)]
pub struct ApiState {
    server: JoinHandle<()>,
    /// Set when the actor stops: the receiving thread ends within [`STOP_CHECK_MS`].
    stop: Arc<AtomicBool>,
}

impl Drop for ApiState {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.abort();
    }
}

/// The local NexAPI endpoint's actor: starts the task serving the socket and fails (to be
/// restarted) if receiving fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiActor;

impl Actor for ApiActor {
    type Msg = ApiMsg;
    type State = ApiState;
    type Arguments = (ApiArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<ApiMsg>,
        (args, supervisor): (ApiArgs, ActorRef<SupervisorMsg>),
    ) -> Result<ApiState, ActorProcessingErr> {
        // Blocking receives that wake up every STOP_CHECK_MS to look at `stop`.
        args.socket.set_nonblocking(false)?;
        args.socket
            .set_read_timeout(Some(Duration::from_millis(STOP_CHECK_MS)))?;
        let cache = Arc::new(Mutex::new(AnswerCache::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (misses_tx, misses) = mpsc::channel(MISSES_QUEUED_MAX);
        let receiver = Receiver {
            socket: args.socket.clone(),
            metrics: args.metrics.clone(),
            changes: args.registry_changes.clone(),
            cache: cache.clone(),
            misses: misses_tx,
            stop: stop.clone(),
            actor: myself.clone(),
        };
        std::thread::Builder::new()
            .name("nexapi-recv".into())
            .spawn(move || receiver.run())?;
        let handler = Handler {
            socket: args.socket,
            metrics: args.metrics,
            supervisor,
            registry: None,
            gossip: None,
            hosts: BTreeMap::new(),
            hosts_read: None,
            changes: args.registry_changes,
            cache,
        };
        Ok(ApiState {
            server: tokio::spawn(handler.serve(misses)),
            stop,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ApiMsg>,
        message: ApiMsg,
        _state: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ApiMsg::ReceiveFailed(e) => {
                Err(format!("local NexAPI endpoint: receiving failed: {e}").into())
            }
        }
    }
}

/// The serving task: receives a datagram, answers it, repeats. Caches the registry and gossip
/// actors' references (looked up again after a restart) and the member list's host IPs.
struct Handler {
    socket: Arc<UdpSocket>,
    metrics: NodeMetrics,
    supervisor: ActorRef<SupervisorMsg>,
    registry: Option<ActorRef<RegistryMsg>>,
    gossip: Option<ActorRef<GossipMsg>>,
    hosts: BTreeMap<NodeId, IpAddr>,
    hosts_read: Option<Instant>,
    changes: RegistryChanges,
    cache: Arc<Mutex<AnswerCache>>,
}

/// A datagram the receiving thread did not answer, with its sender and when it arrived.
type Miss = (Bytes, SocketAddr, Instant);

/// The receiving thread: receives every datagram, answers cache hits, hands the rest to the
/// task.
struct Receiver {
    socket: Arc<UdpSocket>,
    metrics: NodeMetrics,
    changes: RegistryChanges,
    cache: Arc<Mutex<AnswerCache>>,
    misses: mpsc::Sender<Miss>,
    stop: Arc<AtomicBool>,
    actor: ActorRef<ApiMsg>,
}

impl Receiver {
    fn run(self) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        // The answer to a cache hit is copied here, so a hit allocates nothing.
        let mut reply = Vec::with_capacity(ANSWER_BYTES_MAX);
        while !self.stop.load(Ordering::Acquire) {
            // Blocking, with a timeout of STOP_CHECK_MS (set in `pre_start`): one system call
            // per datagram.
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    let _ = self
                        .actor
                        .send_message(ApiMsg::ReceiveFailed(e.to_string()));
                    return;
                }
            };
            let received = Instant::now();
            let datagram = &mut buf[..n];
            if self.answer_cached(datagram, from, received, &mut reply) {
                continue;
            }
            let miss = (Bytes::copy_from_slice(datagram), from, received);
            if self.misses.try_send(miss).is_err() {
                // The task is behind (the registry is slow) or gone: like a full socket
                // buffer, the datagram is dropped; the client retries.
                count(&self.metrics, "registry");
            }
        }
    }

    /// Answers `datagram` from the answer cache if it is a `RESOLVE` of an intent the cache
    /// holds a valid answer for; `false` (and `datagram` as it came) otherwise. Copies the
    /// answer into `reply` (no allocation once `reply` has grown to an answer's size).
    fn answer_cached(
        &self,
        datagram: &mut [u8],
        from: SocketAddr,
        received: Instant,
        reply: &mut Vec<u8>,
    ) -> bool {
        if !could_be_resolve(datagram) {
            return false;
        }
        let call = take_call(datagram);
        let changes = self.changes.current();
        let hit = match lock(&self.cache).lookup(datagram, changes, received) {
            Some(answer) => {
                reply.clear();
                reply.extend_from_slice(answer);
                true
            }
            None => false,
        };
        datagram[CALL].copy_from_slice(&call);
        if !hit {
            return false;
        }
        reply[CALL].copy_from_slice(&call);
        match send_to(&self.socket, reply, from) {
            Ok(_) => {
                self.metrics.api_resolve.inc();
                self.metrics.api_resolve_cached.inc();
                self.metrics
                    .api_resolve_seconds
                    .observe(received.elapsed().as_secs_f64());
            }
            Err(e) => {
                count(&self.metrics, "send");
                tracing::debug!(%from, %e, "NexAPI answer not sent");
            }
        }
        true
    }
}

/// Sends `datagram` to `to` without ever blocking (a full send buffer is an error, counted as
/// `send`, as a full receive buffer drops a datagram).
fn send_to(socket: &std::net::UdpSocket, datagram: &[u8], to: SocketAddr) -> nix::Result<usize> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, SockaddrStorage, sendto};

    sendto(
        socket.as_raw_fd(),
        datagram,
        &SockaddrStorage::from(to),
        MsgFlags::MSG_DONTWAIT,
    )
}

/// Turns a datagram that could be a `RESOLVE` into its cache key in place (`cache_key`
/// without the copy): zeroes its call id and returns it.
fn take_call(datagram: &mut [u8]) -> [u8; 8] {
    let mut call = [0u8; 8];
    call.copy_from_slice(&datagram[CALL]);
    datagram[CALL].fill(0);
    call
}

/// Where a `RESOLVE`'s call id is (and an `ANSWER`'s: both put it right after version and kind).
const CALL: std::ops::Range<usize> = 2..10;

/// Whether `datagram` can be a `RESOLVE` of this version: its version and kind, and more than
/// a call id after them.
fn could_be_resolve(datagram: &[u8]) -> bool {
    matches!(datagram, [VERSION, KIND_RESOLVE, ..] if datagram.len() > CALL.end)
}

/// The cache key of a datagram that may be a `RESOLVE`: its bytes with the call id (bytes
/// 2..10) zeroed; `None` when it cannot be one. Only keys of datagrams that decoded as a
/// `RESOLVE` are stored, so a datagram whose key is found is that `RESOLVE` with another call
/// id. The receiving thread builds the same key in place in its receive buffer.
fn cache_key(datagram: &[u8]) -> Option<Vec<u8>> {
    if !could_be_resolve(datagram) {
        return None;
    }
    let mut key = datagram.to_vec();
    key[CALL].fill(0);
    Some(key)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a consistent cache (every method completes its
    // change before it can panic): keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count(metrics: &NodeMetrics, reason: &str) {
    metrics
        .api_errors
        .get_or_create(&nexus_actors::metrics::ReasonLabel {
            reason: reason.to_owned(),
        })
        .inc();
}

/// One cached answer: the encoded `ANSWER` (call id 0), the change count read before the
/// registry was asked, and when it was stored.
struct CachedAnswer {
    answer: Vec<u8>,
    changes: u64,
    stored: Instant,
}

/// The registry's answers by intent (the `RESOLVE` datagram's bytes without the call id),
/// bounded by [`ANSWER_CACHE_ENTRIES_MAX`].
#[derive(Default)]
struct AnswerCache {
    entries: BTreeMap<Vec<u8>, CachedAnswer>,
}

impl AnswerCache {
    /// The valid answer to the intent `key` names (encoded, call id 0), if the cache holds
    /// one; an answer no longer valid is removed.
    fn lookup(&mut self, key: &[u8], changes: u64, now: Instant) -> Option<&[u8]> {
        let valid = self
            .entries
            .get(key)
            .map(|e| e.changes == changes && now.duration_since(e.stored) < ANSWER_CACHE_AGE_MAX)?;
        if !valid {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|e| e.answer.as_slice())
    }

    fn store(&mut self, key: Vec<u8>, answer: Vec<u8>, changes: u64, now: Instant) {
        if self.entries.len() >= ANSWER_CACHE_ENTRIES_MAX && !self.entries.contains_key(&key) {
            // Stale entries first; otherwise the oldest (lowest key among equals).
            self.entries.retain(|_, e| {
                e.changes == changes && now.duration_since(e.stored) < ANSWER_CACHE_AGE_MAX
            });
            if self.entries.len() >= ANSWER_CACHE_ENTRIES_MAX {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(k, e)| (e.stored, (*k).clone()))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(
            key,
            CachedAnswer {
                answer,
                changes,
                stored: now,
            },
        );
    }
}

impl Handler {
    /// Answers the datagrams the receiving thread hands over, one at a time.
    async fn serve(mut self, mut misses: mpsc::Receiver<Miss>) {
        while let Some((datagram, from, received)) = misses.recv().await {
            let Some(reply) = self.answer(&datagram).await else {
                continue;
            };
            let resolved = matches!(reply, Message::Answer(_));
            match send_to(&self.socket, &reply.encode(), from) {
                Ok(_) if resolved => {
                    self.metrics.api_resolve.inc();
                    self.metrics
                        .api_resolve_seconds
                        .observe(received.elapsed().as_secs_f64());
                }
                Ok(_) => {}
                Err(e) => {
                    self.count("send");
                    tracing::debug!(%from, %e, "NexAPI answer not sent");
                }
            }
        }
    }

    fn count(&self, reason: &str) {
        count(&self.metrics, reason);
    }

    /// The message answering `datagram`, if any.
    async fn answer(&mut self, datagram: &Bytes) -> Option<Message> {
        let (call, intent) = match Message::decode(datagram, &Limits::default()) {
            Ok(Message::Resolve { call, intent }) => (call, intent),
            Ok(other) => {
                self.count("kind");
                return refuse(&other).map(Message::Error);
            }
            Err(e) => {
                self.count("decode");
                tracing::debug!(%e, "NexAPI datagram refused");
                return Some(Message::Error(decode_error(datagram, &e)));
            }
        };
        let span = tracing::debug_span!(target: crate::telemetry::TARGET, "nexapi.resolve",
            call, task = %intent.task, k = intent.k, candidates = tracing::field::Empty,
            results = tracing::field::Empty);
        let now = Instant::now();
        // Read before the registry is asked (see the module doc).
        let changes = self.changes.current();
        let resolved = tracing::Instrument::instrument(self.resolve(intent), span.clone()).await;
        if let Some(keyed) = &resolved {
            span.record("candidates", keyed.resolution.considered);
            span.record("results", keyed.resolution.candidates.len());
        }
        let Some(keyed) = resolved else {
            self.count("registry");
            return Some(Message::Error(ApiError::new(
                call,
                ErrorCode::Unavailable,
                "the registry is restarting or not answering; retry shortly",
            )));
        };
        self.refresh_hosts(&keyed).await;
        let answer = build_answer(call, keyed, &self.hosts, ANSWER_BYTES_MAX);
        if let Some(key) = cache_key(datagram) {
            let cached = Message::Answer(ResolveAnswer {
                call: 0,
                ..answer.clone()
            })
            .encode();
            lock(&self.cache).store(key, cached.to_vec(), changes, now);
        }
        Some(Message::Answer(answer))
    }

    async fn lookup<M: ractor::Message>(&self, child: &str) -> Option<ActorRef<M>> {
        let name = child.to_owned();
        match self
            .supervisor
            .call(|r| SupervisorMsg::Lookup(name, r), Some(RESOLVE_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(Some(cell))) => Some(cell.into()),
            _ => None,
        }
    }

    /// Asks the registry actor; a registry that restarted since the last call is looked up
    /// again once. `None` when it does not answer.
    async fn resolve(&mut self, intent: Box<Intent>) -> Option<KeyedResolution> {
        let mut intent = Some(intent);
        for _ in 0..2 {
            let registry = match &self.registry {
                Some(r) => r.clone(),
                None => {
                    let r = self.lookup::<RegistryMsg>("registry").await?;
                    self.registry = Some(r.clone());
                    r
                }
            };
            let ask = intent.take()?;
            match registry
                .call(
                    |r| RegistryMsg::ResolveWithKeys(ask, r),
                    Some(RESOLVE_TIMEOUT),
                )
                .await
            {
                Ok(CallResult::Success(keyed)) => return Some(keyed),
                Err(MessagingErr::SendErr(RegistryMsg::ResolveWithKeys(back, _))) => {
                    // A stopped incarnation: its replacement has another reference.
                    self.registry = None;
                    intent = Some(back);
                }
                _ => {
                    self.registry = None;
                    return None;
                }
            }
        }
        None
    }

    /// Re-reads the member list when the copy is older than [`MEMBERS_MAX_AGE`] or lacks a
    /// candidate's node. A gossip actor that does not answer leaves the copy as it was (hosts
    /// it lacks are sent as unknown) until the next period.
    async fn refresh_hosts(&mut self, keyed: &KeyedResolution) {
        let fresh = self
            .hosts_read
            .is_some_and(|t| t.elapsed() < MEMBERS_MAX_AGE);
        let complete = keyed
            .resolution
            .candidates
            .iter()
            .all(|c| self.hosts.contains_key(&c.node));
        if fresh && complete {
            return;
        }
        self.hosts_read = Some(Instant::now());
        let gossip = match &self.gossip {
            Some(g) => g.clone(),
            None => match self.lookup::<GossipMsg>("gossip").await {
                Some(g) => {
                    self.gossip = Some(g.clone());
                    g
                }
                None => return,
            },
        };
        let views = match gossip.call(GossipMsg::Members, Some(RESOLVE_TIMEOUT)).await {
            Ok(CallResult::Success(v)) => v,
            _ => {
                self.gossip = None;
                return;
            }
        };
        // The newest generation of a node that restarted, as the admin API's answers show it.
        let mut newest: BTreeMap<NodeId, (u64, IpAddr)> = BTreeMap::new();
        for v in &views {
            let generation = v.id.generation();
            let entry = newest
                .entry(v.id.node_id())
                .or_insert((generation, v.id.addr().ip()));
            if entry.0 < generation {
                *entry = (generation, v.id.addr().ip());
            }
        }
        self.hosts = newest.into_iter().map(|(n, (_, ip))| (n, ip)).collect();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nexus_registry::{Candidate as Ranked, Endpoint, Resolution, Sad};

    use super::*;

    fn ranked(service: &str, node: u8, port: u16, score: f64) -> Ranked {
        Ranked {
            service: service.into(),
            node: NodeId([node; 32]),
            endpoint: Endpoint { port, stream: 2 },
            score,
            sad: Arc::new(Sad::new(service, "llm.code")),
            why: vec![],
        }
    }

    fn keyed(candidates: Vec<Ranked>, keys: Vec<Option<[u8; 32]>>) -> KeyedResolution {
        KeyedResolution {
            resolution: Resolution {
                routing_key: 0xfeed,
                considered: 7,
                candidates,
                excluded: vec![],
                excluded_total: 0,
            },
            keys,
        }
    }

    #[test]
    fn an_answer_carries_every_field_and_its_size_is_computed_exactly() {
        let hosts: BTreeMap<NodeId, IpAddr> = [
            (NodeId([1; 32]), "127.0.0.1".parse().expect("v4")),
            (NodeId([2; 32]), "::1".parse().expect("v6")),
        ]
        .into();
        let answer = build_answer(
            42,
            keyed(
                vec![
                    ranked("a", 1, 9000, 0.9),
                    ranked("bb", 2, 9001, 0.5),
                    ranked("ccc", 3, 0, 0.1),
                ],
                vec![Some([5; 32]), None, Some([6; 32])],
            ),
            &hosts,
            ANSWER_BYTES_MAX,
        );
        assert_eq!((answer.call, answer.routing_key), (42, 0xfeed));
        assert_eq!(answer.considered, 7);
        let c = &answer.candidates;
        assert_eq!(c.len(), 3);
        assert_eq!(
            (c[0].service.as_str(), c[0].node, c[0].port, c[0].stream),
            ("a", [1; 32], 9000, 2)
        );
        assert_eq!(c[0].host, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!((c[0].score, c[0].key), (0.9, Some([5; 32])));
        assert_eq!(c[1].host, Some("::1".parse().expect("ip")));
        assert_eq!(c[1].key, None);
        assert_eq!(c[2].host, None, "a node missing from membership");
        let encoded = Message::Answer(answer.clone()).encode();
        assert_eq!(encoded.len(), answer_bytes(&answer));
        assert_eq!(
            Message::decode(&encoded, &Limits::default()),
            Ok(Message::Answer(answer))
        );
    }

    #[test]
    fn an_answer_too_large_loses_its_worst_candidates() {
        let hosts = BTreeMap::new();
        let full = build_answer(
            1,
            keyed(
                vec![ranked("a", 1, 1, 0.9), ranked("b", 2, 2, 0.8)],
                vec![None, None],
            ),
            &hosts,
            ANSWER_BYTES_MAX,
        );
        let one = ANSWER_HEADER_BYTES + candidate_bytes(&full.candidates[0]);
        for (cap, kept) in [(one - 1, 0), (one, 1), (answer_bytes(&full) - 1, 1)] {
            let trimmed = build_answer(
                1,
                keyed(
                    vec![ranked("a", 1, 1, 0.9), ranked("b", 2, 2, 0.8)],
                    vec![None, None],
                ),
                &hosts,
                cap,
            );
            assert_eq!(trimmed.candidates.len(), kept, "cap {cap}");
            assert!(Message::Answer(trimmed.clone()).encode().len() <= cap);
            assert_eq!(trimmed.candidates, full.candidates[..kept]);
        }
    }

    #[test]
    fn the_answer_cache_holds_an_answer_until_the_registry_changes_or_it_ages() {
        let t0 = Instant::now();
        let mut cache = AnswerCache::default();
        let resolve = |call: u64, task: &str| {
            Message::Resolve {
                call,
                intent: Box::new(Intent::new(task)),
            }
            .encode()
        };
        let key = cache_key(&resolve(7, "llm.code")).expect("a RESOLVE has a key");
        assert_eq!(
            Some(&key),
            cache_key(&resolve(8, "llm.code")).as_ref(),
            "the call id is not part of the key"
        );
        // The receiving thread makes the same key in place, and puts the call id back.
        let mut datagram = resolve(0x0102_0304_0506_0708, "llm.code").to_vec();
        let call = take_call(&mut datagram);
        assert_eq!(datagram, key);
        assert_eq!(u64::from_be_bytes(call), 0x0102_0304_0506_0708);
        // Only what can be a RESOLVE has a key.
        assert_eq!(cache_key(&resolve(7, "llm.code")[..10]), None);
        assert!(!could_be_resolve(&resolve(7, "llm.code")[..10]));
        assert!(could_be_resolve(&resolve(7, "llm.code")[..11]));
        let hello = Message::Hello(nexus_api::wire::Hello {
            version_min: 1,
            version_max: 1,
            agent: "t".into(),
        })
        .encode();
        assert_eq!(cache_key(&hello), None);
        assert_eq!(cache.lookup(&key, 5, t0), None);
        cache.store(key.clone(), b"answer a".to_vec(), 5, t0);
        // Same count, younger than the age bound: a hit.
        assert_eq!(
            cache.lookup(&key, 5, t0 + Duration::from_millis(1)),
            Some(&b"answer a"[..]),
            "a fresh answer is a hit"
        );
        // Another intent is another entry.
        let other = cache_key(&resolve(7, "llm.chat")).expect("key");
        assert_eq!(cache.lookup(&other, 5, t0), None);
        // A change of the registry voids it (and removes it).
        assert_eq!(cache.lookup(&key, 6, t0), None);
        assert_eq!(cache.lookup(&key, 5, t0), None);
        // So does age.
        cache.store(key.clone(), b"answer b".to_vec(), 6, t0);
        assert!(
            cache
                .lookup(
                    &key,
                    6,
                    t0 + ANSWER_CACHE_AGE_MAX - Duration::from_millis(1)
                )
                .is_some()
        );
        assert_eq!(cache.lookup(&key, 6, t0 + ANSWER_CACHE_AGE_MAX), None);
    }

    #[test]
    fn the_answer_cache_is_bounded_and_drops_its_oldest_answer() {
        let t0 = Instant::now();
        let mut cache = AnswerCache::default();
        let key = |i: usize| i.to_be_bytes().to_vec();
        for i in 0..ANSWER_CACHE_ENTRIES_MAX {
            let at = t0 + Duration::from_micros(i as u64);
            cache.store(key(i), vec![], 1, at);
        }
        assert_eq!(cache.entries.len(), ANSWER_CACHE_ENTRIES_MAX);
        let late = t0 + Duration::from_millis(1);
        cache.store(key(usize::MAX), vec![], 1, late);
        assert_eq!(cache.entries.len(), ANSWER_CACHE_ENTRIES_MAX);
        assert_eq!(cache.lookup(&key(0), 1, late), None);
        assert!(cache.lookup(&key(1), 1, late).is_some());
        assert!(cache.lookup(&key(usize::MAX), 1, late).is_some());
        // Stale answers go first, all at once.
        cache.store(key(usize::MAX - 1), vec![], 2, late);
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn the_worst_case_answer_fits_the_cap() {
        let c = Candidate {
            service: "s".repeat(nexus_registry::SERVICE_ID_BYTES_MAX),
            node: [0; 32],
            host: Some("::1".parse().expect("ip")),
            port: 1,
            stream: 1,
            score: 1.0,
            key: Some([0; 32]),
        };
        let worst = ResolveAnswer {
            call: 1,
            routing_key: 1,
            considered: 1,
            candidates: vec![c; nexus_registry::K_MAX as usize],
        };
        let encoded = Message::Answer(worst).encode().len();
        assert_eq!(encoded, ANSWER_BYTES_WORST);
        assert!(encoded <= ANSWER_BYTES_MAX);
    }

    #[test]
    fn undecodable_datagrams_get_typed_errors_with_the_call_when_readable() {
        let resolve = Message::Resolve {
            call: 0x0102_0304_0506_0708,
            intent: Box::new(Intent::new("llm.code")),
        }
        .encode();
        // Truncated after the call id: the call is echoed.
        let cut = &resolve[..resolve.len() - 1];
        let e = Message::decode(&Bytes::copy_from_slice(cut), &Limits::default())
            .expect_err("truncated");
        let answer = decode_error(cut, &e);
        assert_eq!(answer.call, 0x0102_0304_0506_0708);
        assert_eq!(answer.code, ErrorCode::BadRequest);
        assert!(answer.message.contains("truncated"), "{}", answer.message);
        // Too short to hold a call id, another version, garbage: call 0.
        assert_eq!(call_of_undecodable(&resolve[..9]), 0);
        assert_eq!(
            call_of_undecodable(&[2, KIND_RESOLVE, 1, 1, 1, 1, 1, 1, 1, 1]),
            0
        );
        assert_eq!(call_of_undecodable(b"garbage!garbage!"), 0);
        let e = WireError::Version(9);
        assert_eq!(
            decode_error(&[9, 8], &e).code,
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(error_text("é".repeat(200)).len(), ERROR_MESSAGE_BYTES_MAX);
    }

    #[test]
    fn other_kinds_are_refused_and_responses_dropped() {
        let hello = Message::Hello(nexus_api::wire::Hello {
            version_min: 1,
            version_max: 1,
            agent: "t".into(),
        });
        let e = refuse(&hello).expect("answered");
        assert_eq!((e.call, e.code), (0, ErrorCode::BadRequest));
        assert!(e.message.starts_with("HELLO"));
        let error = Message::Error(ApiError::new(3, ErrorCode::Internal, "x"));
        assert_eq!(refuse(&error), None);
        let answer = Message::Answer(ResolveAnswer {
            call: 3,
            routing_key: 0,
            considered: 0,
            candidates: vec![],
        });
        assert_eq!(refuse(&answer), None);
    }
}
