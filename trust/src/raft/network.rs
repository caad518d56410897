//! Outbound side of the CA protocol: one persistent, multiplexed connection per peer address
//! ([`PeerLink`]) and openraft's network factory on top of it.
//!
//! A [`PeerLink`] connects lazily, reconnects after a failure with exponential backoff
//! (`RECONNECT_BACKOFF_MIN_MS` doubling to `RECONNECT_BACKOFF_MAX_MS`; calls during the backoff
//! fail at once as unreachable), and carries any number of concurrent requests, each with its own
//! deadline, matched to responses by id. Raft RPCs (deadline from openraft's `RPCOption`) and
//! forwarded client requests share the link.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::transport::Transport;
use super::wire::{self, BAD_FRAME_ID, FrameError, WireRequest, WireResponse};
use super::{CaPeer, NodeId, TypeConfig};

/// First reconnect delay after a failed connect.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 20;
/// Longest reconnect delay.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
/// Frames queued for one connection's writer before callers wait.
pub const LINK_QUEUE_MAX: usize = 1024;

/// Why a request over a [`PeerLink`] got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// Connecting failed (now or recently; the link is backing off). The request was not sent.
    #[error("peer {addr} is unreachable: {reason}")]
    Unreachable {
        /// Peer address.
        addr: String,
        /// The connect error.
        reason: String,
    },
    /// No answer within the deadline. The request may or may not have been processed.
    #[error("no answer from {addr} within {after_ms} ms")]
    Timeout {
        /// Peer address.
        addr: String,
        /// The deadline that passed.
        after_ms: u64,
    },
    /// The connection broke after the request was sent. It may or may not have been processed.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// Peer address.
        addr: String,
        /// What broke it.
        reason: String,
    },
    /// The request does not fit in a frame (nothing was sent).
    #[error("request to {addr} not sent: {reason}")]
    Encode {
        /// Peer address.
        addr: String,
        /// Why encoding failed.
        reason: String,
    },
}

impl LinkError {
    /// Whether the request certainly did not reach the peer (safe to retry elsewhere).
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Encode { .. })
    }
}

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<WireResponse>>>>;

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    dead_reason: Arc<Mutex<String>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct LinkState {
    conn: Option<Conn>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

struct LinkInner<T: Transport> {
    addr: String,
    transport: T,
    frame_bytes_max: u32,
    next_id: AtomicU64,
    state: tokio::sync::Mutex<LinkState>,
}

/// One persistent, multiplexed connection to a CA member's listener.
pub struct PeerLink<T: Transport> {
    inner: Arc<LinkInner<T>>,
}

impl<T: Transport> Clone for PeerLink<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for PeerLink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fail_all(pending: &Pending, alive: &AtomicBool, dead_reason: &Mutex<String>, reason: String) {
    *lock(dead_reason) = reason;
    alive.store(false, Ordering::SeqCst);
    // Dropping the senders wakes every waiter with "connection lost".
    std::mem::take(&mut *lock(pending));
}

impl<T: Transport> PeerLink<T> {
    /// A link to `addr` (connects on first use).
    pub fn new(transport: T, addr: String, frame_bytes_max: u32) -> Self {
        Self {
            inner: Arc::new(LinkInner {
                addr,
                transport,
                frame_bytes_max,
                next_id: AtomicU64::new(BAD_FRAME_ID + 1),
                state: tokio::sync::Mutex::new(LinkState {
                    conn: None,
                    failures: 0,
                    retry_at: None,
                    last_error: String::new(),
                }),
            }),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether a connection is currently established.
    pub async fn is_connected(&self) -> bool {
        let state = self.inner.state.lock().await;
        state
            .conn
            .as_ref()
            .is_some_and(|c| c.alive.load(Ordering::SeqCst))
    }

    fn unreachable(&self, reason: String) -> LinkError {
        LinkError::Unreachable {
            addr: self.inner.addr.clone(),
            reason,
        }
    }

    /// Returns the live connection's sender side, connecting if needed.
    async fn connection(
        &self,
        deadline: Instant,
    ) -> Result<
        (
            mpsc::Sender<Vec<u8>>,
            Pending,
            Arc<AtomicBool>,
            Arc<Mutex<String>>,
        ),
        LinkError,
    > {
        let mut state = self.inner.state.lock().await;
        if let Some(conn) = &state.conn {
            if conn.alive.load(Ordering::SeqCst) {
                return Ok((
                    conn.tx.clone(),
                    conn.pending.clone(),
                    conn.alive.clone(),
                    conn.dead_reason.clone(),
                ));
            }
            state.conn = None;
        }
        let now = Instant::now();
        if let Some(at) = state.retry_at
            && now < at
        {
            return Err(self.unreachable(format!(
                "{} (backing off, next attempt in {} ms)",
                state.last_error,
                (at - now).as_millis()
            )));
        }
        let connect = self.inner.transport.connect(&self.inner.addr);
        let stream = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.connect_failed(&mut state, e.to_string())),
            Err(_) => return Err(self.connect_failed(&mut state, "connect timed out".into())),
        };
        state.failures = 0;
        state.retry_at = None;
        let conn = self.spawn_conn(stream);
        let out = (
            conn.tx.clone(),
            conn.pending.clone(),
            conn.alive.clone(),
            conn.dead_reason.clone(),
        );
        state.conn = Some(conn);
        Ok(out)
    }

    fn connect_failed(&self, state: &mut LinkState, reason: String) -> LinkError {
        state.failures = state.failures.saturating_add(1);
        let backoff_ms = RECONNECT_BACKOFF_MIN_MS
            .saturating_mul(1u64 << state.failures.min(16).saturating_sub(1))
            .min(RECONNECT_BACKOFF_MAX_MS);
        state.retry_at = Some(Instant::now() + Duration::from_millis(backoff_ms));
        state.last_error = reason.clone();
        self.unreachable(reason)
    }

    fn spawn_conn(&self, stream: T::Stream) -> Conn {
        let (mut rd, wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE_MAX);
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let dead_reason = Arc::new(Mutex::new(String::new()));
        let frame_bytes_max = self.inner.frame_bytes_max;

        let writer = {
            let (pending, alive, dead_reason) =
                (pending.clone(), alive.clone(), dead_reason.clone());
            tokio::spawn(async move {
                let mut w = BufWriter::new(wr);
                let reason = loop {
                    let Some(frame) = rx.recv().await else {
                        break "link closed".to_string();
                    };
                    if let Err(e) = w.write_all(&frame).await {
                        break format!("write failed: {e}");
                    }
                    // Coalesce whatever else is queued into the same flush.
                    let mut failed = None;
                    while let Ok(frame) = rx.try_recv() {
                        if let Err(e) = w.write_all(&frame).await {
                            failed = Some(format!("write failed: {e}"));
                            break;
                        }
                    }
                    if let Some(reason) = failed {
                        break reason;
                    }
                    if let Err(e) = w.flush().await {
                        break format!("write failed: {e}");
                    }
                };
                fail_all(&pending, &alive, &dead_reason, reason);
            })
        };
        let reader = {
            let (pending, alive, dead_reason) =
                (pending.clone(), alive.clone(), dead_reason.clone());
            tokio::spawn(async move {
                let reason = loop {
                    match wire::read_frame(&mut rd, frame_bytes_max).await {
                        Ok(None) => break "closed by peer".to_string(),
                        Err(e) => break format!("bad frame from peer: {e}"),
                        Ok(Some((id, payload))) => {
                            let resp: WireResponse = match serde_json::from_slice(&payload) {
                                Ok(r) => r,
                                Err(e) => break format!("undecodable response: {e}"),
                            };
                            if id == BAD_FRAME_ID {
                                break format!("peer rejected our frame: {resp:?}");
                            }
                            if let Some(waiter) = lock(&pending).remove(&id) {
                                // The waiter may have timed out; nothing to do then.
                                let _ = waiter.send(resp);
                            }
                        }
                    }
                };
                fail_all(&pending, &alive, &dead_reason, reason);
            })
        };
        Conn {
            tx,
            pending,
            alive,
            dead_reason,
            tasks: [writer, reader],
        }
    }

    /// Sends `req` and waits for its response, at most `timeout`.
    pub async fn call(
        &self,
        req: &WireRequest,
        timeout: Duration,
    ) -> Result<WireResponse, LinkError> {
        let deadline = Instant::now() + timeout;
        let addr = &self.inner.addr;
        let payload = serde_json::to_vec(req).map_err(|e| LinkError::Encode {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode_frame(id, &payload, self.inner.frame_bytes_max).map_err(
            |e: FrameError| LinkError::Encode {
                addr: addr.clone(),
                reason: e.to_string(),
            },
        )?;
        let (tx, pending, alive, dead_reason) = self.connection(deadline).await?;
        let (resp_tx, resp_rx) = oneshot::channel();
        lock(&pending).insert(id, resp_tx);
        let lost = || LinkError::ConnectionLost {
            addr: addr.clone(),
            reason: lock(&dead_reason).clone(),
        };
        if !alive.load(Ordering::SeqCst) {
            lock(&pending).remove(&id);
            return Err(lost());
        }
        if tx.send(frame).await.is_err() {
            lock(&pending).remove(&id);
            return Err(lost());
        }
        match tokio::time::timeout_at(deadline, resp_rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                lock(&pending).remove(&id);
                Err(LinkError::Timeout {
                    addr: addr.clone(),
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }
}

/// The links of one node, by peer address; shared by the Raft network and client forwarding.
pub struct Links<T: Transport> {
    transport: T,
    frame_bytes_max: u32,
    links: Mutex<BTreeMap<String, PeerLink<T>>>,
}

impl<T: Transport> std::fmt::Debug for Links<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("peers", &lock(&self.links).keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<T: Transport> Links<T> {
    /// An empty set of links.
    pub fn new(transport: T, frame_bytes_max: u32) -> Self {
        Self {
            transport,
            frame_bytes_max,
            links: Mutex::default(),
        }
    }

    /// The link to `addr`, created on first use.
    pub fn get(&self, addr: &str) -> PeerLink<T> {
        lock(&self.links)
            .entry(addr.to_string())
            .or_insert_with(|| {
                PeerLink::new(
                    self.transport.clone(),
                    addr.to_string(),
                    self.frame_bytes_max,
                )
            })
            .clone()
    }

    /// Drops every link (closing the connections once in-flight calls finish).
    pub fn clear(&self) {
        lock(&self.links).clear();
    }
}

/// openraft's network factory: hands out [`CaConnection`]s over shared [`Links`].
#[derive(Debug)]
pub struct CaNetworkFactory<T: Transport> {
    id: NodeId,
    links: Arc<Links<T>>,
}

impl<T: Transport> CaNetworkFactory<T> {
    /// A factory for node `id` using `links`.
    pub fn new(id: NodeId, links: Arc<Links<T>>) -> Self {
        Self { id, links }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for CaNetworkFactory<T> {
    type Network = CaConnection<T>;

    async fn new_client(&mut self, target: NodeId, node: &CaPeer) -> Self::Network {
        CaConnection {
            id: self.id,
            target,
            link: self.links.get(&node.addr),
        }
    }
}

/// Raft RPCs to one target over its [`PeerLink`].
#[derive(Debug)]
pub struct CaConnection<T: Transport> {
    id: NodeId,
    target: NodeId,
    link: PeerLink<T>,
}

type RpcResult<R, E = openraft::error::Infallible> =
    Result<R, RPCError<NodeId, CaPeer, RaftError<NodeId, E>>>;

impl<T: Transport> CaConnection<T> {
    fn link_error<E: std::error::Error>(
        &self,
        e: LinkError,
        action: RPCTypes,
        timeout: Duration,
    ) -> RPCError<NodeId, CaPeer, E> {
        match e {
            LinkError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            LinkError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
            LinkError::ConnectionLost { .. } | LinkError::Encode { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self, resp: WireResponse) -> RPCError<NodeId, CaPeer, E> {
        let e = LinkError::ConnectionLost {
            addr: self.link.addr().to_string(),
            reason: format!("unexpected response {resp:?}"),
        };
        RPCError::Network(NetworkError::new(&e))
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for CaConnection<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let ttl = option.hard_ttl();
        match self.link.call(&WireRequest::AppendEntries(rpc), ttl).await {
            Ok(WireResponse::AppendEntries(Ok(r))) => Ok(r),
            Ok(WireResponse::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.link_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        match self
            .link
            .call(&WireRequest::InstallSnapshot(rpc), ttl)
            .await
        {
            Ok(WireResponse::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(WireResponse::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.link_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let ttl = option.hard_ttl();
        match self.link.call(&WireRequest::Vote(rpc), ttl).await {
            Ok(WireResponse::Vote(Ok(r))) => Ok(r),
            Ok(WireResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.link_error(e, RPCTypes::Vote, ttl)),
        }
    }

    fn backoff(&self) -> Backoff {
        // After an unreachable error openraft waits these delays before retrying replication.
        Backoff::new(
            std::iter::successors(Some(RECONNECT_BACKOFF_MIN_MS), |ms| {
                Some((ms * 2).min(RECONNECT_BACKOFF_MAX_MS))
            })
            .map(Duration::from_millis),
        )
    }
}
