//! A tokio driver: one [`Endpoint`] on one UDP socket, NexLink-framed, behind an async handle.
//!
//! [`StreamNode::bind`] spawns a task that owns the socket and the endpoint. The task feeds
//! received datagrams (after the NexLink receive checks, [`crate::link`]) and timer expiries to
//! the endpoint, carries out the handle's commands, sends every transmit (one NexLink frame per
//! QUIC datagram; a GSO batch is split into frames) and forwards the endpoint's [`Event`]s to
//! the channel returned by `bind`. This is the driver the node's session manager, the
//! benchmarks and the real-socket conformance tests use; the simulator drives the endpoint
//! directly.
//!
//! [`Framing::Raw`] sends bare QUIC datagrams instead (for measuring the framing's cost, and
//! for talking to plain QUIC tools); both ends must agree.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nexus_dataplane::wire::nexlink::{NodeTag, Repr, RoutingKey};
use nexus_trust_core::verify::{Credentials, TrustUpdate};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::endpoint::EndpointCounters;
use crate::link::{self, LinkAddress};
use crate::timer::Timer;
use crate::{
    CloseReason, ConnectError, DatagramOptions, Endpoint, ErrorCode, Event, FlowOptions, LinkRoute,
    MessageOptions, SendError, SessionId, SessionStats, StreamRef,
};

/// How QUIC datagrams travel on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// In NexLink `Transport` frames (the default; what a fabric's data plane forwards).
    NexLink,
    /// Bare QUIC datagrams.
    Raw,
}

/// Largest UDP datagram the driver reads.
const RECV_BYTES_MAX: usize = 65_535;
/// Socket buffer the driver asks for in each direction.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Commands queued to the driver task before callers wait.
const COMMANDS_MAX: usize = 1024;
/// Events queued for the application before the driver waits for it.
pub const EVENTS_MAX: usize = 4096;
/// Local routed clients a relay remembers ([`StreamNode::set_relay`]); the least recently
/// learned is forgotten beyond this.
pub const RELAY_PEERS_MAX: usize = 4096;

/// Why a [`StreamNode`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The driver task has stopped.
    #[error("the NexStream driver has stopped")]
    Stopped,
    /// Opening the session failed before any packet was sent.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The session closed before it was established.
    #[error("session refused: {0}")]
    Refused(CloseReason),
    /// A send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
}

type Reply<T> = oneshot::Sender<T>;

enum Command {
    Connect([u8; 32], SocketAddr, Reply<Result<SessionId, NodeError>>),
    ConnectRouted(
        SocketAddr,
        LinkRoute,
        Vec<[u8; 32]>,
        Reply<Result<SessionId, NodeError>>,
    ),
    Relay(Option<SocketAddr>),
    OpenFlow(SessionId, FlowOptions, Reply<Result<StreamRef, SendError>>),
    Send(StreamRef, Bytes, Reply<Result<(), SendError>>),
    SendBatch(StreamRef, Vec<Bytes>, bool, Reply<Result<(), SendError>>),
    Finish(StreamRef, Reply<Result<(), SendError>>),
    Message(
        SessionId,
        Vec<Bytes>,
        MessageOptions,
        Reply<Result<StreamRef, SendError>>,
    ),
    Datagram(
        SessionId,
        u32,
        Bytes,
        DatagramOptions,
        Reply<Result<(), SendError>>,
    ),
    Hedge(
        Vec<SessionId>,
        Bytes,
        FlowOptions,
        Reply<Result<u64, SendError>>,
    ),
    Cancel(StreamRef),
    Close(SessionId, ErrorCode, String),
    Trust(Box<TrustUpdate>),
    Credentials(Option<Box<Credentials>>),
    Stats(Reply<(Vec<SessionStats>, EndpointCounters)>),
    SessionTo([u8; 32], Reply<Option<SessionId>>),
    RelayCounters(Reply<Option<RelayCounters>>),
    RefuseNewSessions(Reply<()>),
}

/// The handle of a driven endpoint. Cheap to clone; the task stops when every handle is
/// dropped.
#[derive(Clone, Debug)]
pub struct StreamNode {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    node_id: [u8; 32],
}

/// Driver counters beyond the endpoint's.
#[derive(Clone, Copy, Debug, Default)]
struct LinkCounters {
    link_rejected: u64,
}

/// What a relay ([`StreamNode::set_relay`]) has done since it was turned on; monotonic but
/// for `clients`. A node's `GET /v1/node` answers it as it is (`relay`): with the `schema`
/// feature it serializes and has an OpenAPI schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "schema",
    derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)
)]
pub struct RelayCounters {
    /// Local clients remembered now (at most `clients_max`).
    pub clients: u64,
    /// Most local clients remembered ([`RELAY_PEERS_MAX`]); the oldest is forgotten beyond.
    pub clients_max: u64,
    /// Local clients' frames sent on to the data plane.
    pub frames_out: u64,
    /// Their bytes (whole NexLink frames).
    pub bytes_out: u64,
    /// Answers handed to a local client.
    pub frames_back: u64,
    /// Their bytes (whole NexLink frames).
    pub bytes_back: u64,
    /// Frames refused: from neither loopback nor this socket's IP and not addressed to this
    /// node's session key (a remote sender trying to use the relay).
    pub refused_foreign: u64,
    /// Answers dropped because no local client with their Destination Node Tag is remembered.
    pub dropped_no_client: u64,
    /// Frames the socket did not take (a full send buffer is a lost packet to QUIC).
    pub dropped_send: u64,
    /// Clients forgotten because [`RELAY_PEERS_MAX`] were remembered (the oldest go first).
    pub clients_evicted: u64,
}

/// A node's relay for the routed sessions of clients on its host (see [`StreamNode::set_relay`]).
#[derive(Debug)]
struct Relay {
    /// The node's data plane: where clients' routed frames are sent on.
    target: SocketAddr,
    /// This endpoint's node tag.
    own: NodeTag,
    /// This socket's IP: clients on it are local too.
    own_ip: Option<std::net::IpAddr>,
    /// Client node tag → the address its frames came from.
    peers: HashMap<u64, SocketAddr>,
    /// Tags in the order they were learned (oldest first), for the bound.
    order: VecDeque<u64>,
    counters: RelayCounters,
}

impl Relay {
    fn learn(&mut self, tag: u64, from: SocketAddr) {
        if self.peers.insert(tag, from).is_none() {
            self.order.push_back(tag);
            while self.order.len() > RELAY_PEERS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.peers.remove(&old);
                    self.counters.clients_evicted += 1;
                }
            }
        }
    }

    fn counters(&self) -> RelayCounters {
        RelayCounters {
            clients: self.peers.len() as u64,
            clients_max: RELAY_PEERS_MAX as u64,
            ..self.counters
        }
    }
}

impl StreamNode {
    /// Binds `addr` and spawns the driver task for `endpoint`. Events arrive on the returned
    /// channel (bounded by [`EVENTS_MAX`]; the driver waits when it is full, so read it).
    pub async fn bind(
        addr: SocketAddr,
        endpoint: Endpoint,
        framing: Framing,
    ) -> io::Result<(StreamNode, mpsc::Receiver<Event>)> {
        let socket = UdpSocket::bind(addr).await?;
        // Best effort (capped at net.core.rmem_max / wmem_max): room for a congestion window's
        // burst while the driver task waits for a core.
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        // Best effort: with UDP_GRO the kernel hands over a run of same-size datagrams from one
        // sender in one receive (on loopback a GSO send arrives unsplit); without it, one each.
        enable_gro(&socket);
        let local_addr = socket.local_addr()?;
        let node_id = endpoint.node_id();
        let (tx, rx) = mpsc::channel(COMMANDS_MAX);
        let (events_tx, events_rx) = mpsc::channel(EVENTS_MAX);
        let driver = Driver {
            socket: Arc::new(socket),
            endpoint,
            framing,
            events: events_tx,
            waiters: BTreeMap::new(),
            counters: LinkCounters::default(),
            relay: None,
            out: Vec::with_capacity(64 << 10),
            gso: cfg!(target_os = "linux"),
        };
        tokio::spawn(driver.run(rx));
        Ok((
            StreamNode {
                tx,
                local_addr,
                node_id,
            },
            events_rx,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> [u8; 32] {
        self.node_id
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        wait.await.map_err(|_| NodeError::Stopped)
    }

    /// Opens a session to `peer` at `remote` and waits until it is established (the peer's
    /// MIC verified) or refused.
    pub async fn connect(
        &self,
        peer: [u8; 32],
        remote: SocketAddr,
    ) -> Result<SessionId, NodeError> {
        self.call(|r| Command::Connect(peer, remote, r)).await?
    }

    /// [`Endpoint::connect_routed`]: opens a routed session through `relay` (the local node's
    /// session socket) and waits until it is established or refused. The peer's key is in the
    /// session's [`SessionStats`] (and the `Established` event).
    pub async fn connect_routed(
        &self,
        relay: SocketAddr,
        route: LinkRoute,
        accept: Vec<[u8; 32]>,
    ) -> Result<SessionId, NodeError> {
        self.call(|r| Command::ConnectRouted(relay, route, accept, r))
            .await?
    }

    /// Makes this endpoint the relay of routed sessions for clients on its host (a node's
    /// session socket; `None` turns it off). With a relay, a frame from a loopback address or
    /// this socket's own IP whose routing key is not this endpoint's session key is a local
    /// client's routed frame: its Source Node Tag is remembered with its address and the frame
    /// is sent on, unchanged, to `target` (the node's data plane). A frame carrying this
    /// endpoint's session key with another Destination Node Tag is an answer to such a client:
    /// it goes, unchanged, to the address remembered for that tag (dropped when none is).
    pub async fn set_relay(&self, target: Option<SocketAddr>) -> Result<(), NodeError> {
        self.tx
            .send(Command::Relay(target))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// The relay's counters; `None` when this endpoint is not a relay.
    pub async fn relay_counters(&self) -> Result<Option<RelayCounters>, NodeError> {
        self.call(Command::RelayCounters).await
    }

    /// [`Endpoint::open_flow`].
    pub async fn open_flow(
        &self,
        session: SessionId,
        opts: FlowOptions,
    ) -> Result<StreamRef, NodeError> {
        Ok(self.call(|r| Command::OpenFlow(session, opts, r)).await??)
    }

    /// [`Endpoint::send`].
    pub async fn send(&self, stream: StreamRef, data: Bytes) -> Result<(), NodeError> {
        Ok(self.call(|r| Command::Send(stream, data, r)).await??)
    }

    /// [`Endpoint::send_batch`]: `messages` in order, then this end's side finished if
    /// `finish` is set, in one command (as many as fit share a packet).
    pub async fn send_batch(
        &self,
        stream: StreamRef,
        messages: Vec<Bytes>,
        finish: bool,
    ) -> Result<(), NodeError> {
        Ok(self
            .call(|r| Command::SendBatch(stream, messages, finish, r))
            .await??)
    }

    /// [`Endpoint::finish`].
    pub async fn finish(&self, stream: StreamRef) -> Result<(), NodeError> {
        Ok(self.call(|r| Command::Finish(stream, r)).await??)
    }

    /// [`Endpoint::send_message`].
    pub async fn send_message(
        &self,
        session: SessionId,
        data: Bytes,
        opts: MessageOptions,
    ) -> Result<StreamRef, NodeError> {
        self.send_message_parts(session, vec![data], opts).await
    }

    /// [`Endpoint::send_message_parts`].
    pub async fn send_message_parts(
        &self,
        session: SessionId,
        parts: Vec<Bytes>,
        opts: MessageOptions,
    ) -> Result<StreamRef, NodeError> {
        Ok(self
            .call(|r| Command::Message(session, parts, opts, r))
            .await??)
    }

    /// [`Endpoint::send_datagram`].
    pub async fn send_datagram(
        &self,
        session: SessionId,
        flow: u32,
        data: Bytes,
        opts: DatagramOptions,
    ) -> Result<(), NodeError> {
        Ok(self
            .call(|r| Command::Datagram(session, flow, data, opts, r))
            .await??)
    }

    /// [`Endpoint::hedge`].
    pub async fn hedge(
        &self,
        sessions: Vec<SessionId>,
        request: Bytes,
        opts: FlowOptions,
    ) -> Result<u64, NodeError> {
        Ok(self
            .call(|r| Command::Hedge(sessions, request, opts, r))
            .await??)
    }

    /// [`Endpoint::cancel`].
    pub async fn cancel(&self, stream: StreamRef) -> Result<(), NodeError> {
        self.tx
            .send(Command::Cancel(stream))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// [`Endpoint::close`].
    pub async fn close(
        &self,
        session: SessionId,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), NodeError> {
        self.tx
            .send(Command::Close(session, code, reason.to_owned()))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// [`Endpoint::update_trust`].
    pub async fn update_trust(&self, update: TrustUpdate) -> Result<(), NodeError> {
        self.tx
            .send(Command::Trust(Box::new(update)))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Replaces the credentials presented to peers (sessions opened afterwards use them).
    pub async fn set_credentials(&self, credentials: Option<Credentials>) -> Result<(), NodeError> {
        self.tx
            .send(Command::Credentials(credentials.map(Box::new)))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Every session's snapshot and the endpoint's counters.
    pub async fn stats(&self) -> Result<(Vec<SessionStats>, EndpointCounters), NodeError> {
        self.call(Command::Stats).await
    }

    /// The session to `peer`, if open.
    pub async fn session_to(&self, peer: [u8; 32]) -> Result<Option<SessionId>, NodeError> {
        self.call(|r| Command::SessionTo(peer, r)).await
    }

    /// [`Endpoint::refuse_new_sessions`]; returns once the endpoint refuses them.
    pub async fn refuse_new_sessions(&self) -> Result<(), NodeError> {
        self.call(Command::RefuseNewSessions).await
    }
}

struct Driver {
    socket: Arc<UdpSocket>,
    endpoint: Endpoint,
    framing: Framing,
    events: mpsc::Sender<Event>,
    waiters: BTreeMap<SessionId, Reply<Result<SessionId, NodeError>>>,
    counters: LinkCounters,
    relay: Option<Relay>,
    out: Vec<u8>,
    /// Whether batches go out as one UDP GSO send (`UDP_SEGMENT`); off after a refusal.
    gso: bool,
}

/// Sends `buf` as frames of `frame_len` bytes (the last may be shorter) in one `sendmsg` with
/// `UDP_SEGMENT`.
#[cfg(target_os = "linux")]
async fn send_gso(
    socket: &UdpSocket,
    buf: &[u8],
    frame_len: usize,
    to: SocketAddr,
) -> io::Result<()> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    let segment = u16::try_from(frame_len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    let addr = SockaddrStorage::from(to);
    socket
        .async_io(tokio::io::Interest::WRITABLE, || {
            let iov = [IoSlice::new(buf)];
            let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_DONTWAIT,
                Some(&addr),
            )
            .map(|_| ())
            .map_err(io::Error::from)
        })
        .await
}

#[cfg(not(target_os = "linux"))]
async fn send_gso(
    _socket: &UdpSocket,
    _buf: &[u8],
    _frame_len: usize,
    _to: SocketAddr,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "UDP GSO is Linux-only",
    ))
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`); a kernel that refuses leaves
/// one datagram per receive, which [`recv_datagrams`] handles as well.
#[cfg(target_os = "linux")]
fn enable_gro(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(socket, sockopt::UdpGroSegment, &true) {
        debug!(error = %e, "nexstream: UDP GRO not available; one datagram per receive");
    }
}

#[cfg(not(target_os = "linux"))]
fn enable_gro(_socket: &UdpSocket) {}

/// One non-blocking receive into `buf`: its length, the sender, and the segment size when the
/// kernel coalesced several datagrams (each `segment` bytes, the last possibly shorter).
#[cfg(target_os = "linux")]
fn recv_datagrams(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    let mut cmsg = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut segment = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                segment = usize::try_from(size).ok().filter(|s| *s > 0);
            }
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(*v4))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
        })
        .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
    Ok((msg.bytes, from, segment))
}

#[cfg(not(target_os = "linux"))]
fn recv_datagrams(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    socket.try_recv_from(buf).map(|(n, from)| (n, from, None))
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BYTES_MAX];
        let socket = self.socket.clone();
        // Not tokio's sleep: its 1 ms ticks would hold quinn's pacing and ACK timers back.
        let mut timer = Timer::new();
        loop {
            timer.arm(self.endpoint.poll_timeout(), now());
            let mut commanded = false;
            tokio::select! {
                biased;
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    commanded = true;
                    self.command(command);
                    // Take whatever else is queued before flushing: batches sends.
                    while let Ok(command) = commands.try_recv() {
                        self.command(command);
                    }
                }
                received = socket.async_io(Interest::READABLE, || recv_datagrams(&socket, &mut buf)) => {
                    match received {
                        Ok((n, from, segment)) => self.received_run(from, &buf[..n], segment),
                        Err(e) => debug!(error = %e, "nexstream: recv failed"),
                    }
                    // Drain what else the socket holds without waiting.
                    while let Ok((n, from, segment)) =
                        socket.try_io(Interest::READABLE, || recv_datagrams(&socket, &mut buf))
                    {
                        self.received_run(from, &buf[..n], segment);
                    }
                }
                () = timer.expired() => self.endpoint.handle_timeout(now()),
            }
            if self.flush().await && commanded {
                // The application's data is on the wire: give this CPU up once. A receiver on
                // the same host that this send (or the request that started this work) woke
                // is often queued on this very CPU; without a yield it waits until this thread
                // next sleeps — for a token stream, until the whole burst after its first
                // token is sent (0.72 ms against 0.25 ms measured, see docs/BENCHMARKS.md).
                // With nothing else runnable here the call returns at once.
                std::thread::yield_now();
            }
        }
    }

    /// One receive: a single datagram, or with GRO a run of `segment`-byte datagrams.
    fn received_run(&mut self, from: SocketAddr, data: &[u8], segment: Option<usize>) {
        match segment {
            Some(segment) if segment < data.len() => {
                for frame in data.chunks(segment) {
                    self.received(from, frame);
                }
            }
            _ => self.received(from, data),
        }
    }

    fn received(&mut self, from: SocketAddr, frame: &[u8]) {
        let now = now();
        match self.framing {
            Framing::Raw => self.endpoint.handle_datagram(now, from, frame),
            Framing::NexLink => match link::decapsulate(frame) {
                Ok((repr, quic)) => {
                    if self.relay.is_some() && self.relayed(from, &repr, frame) {
                        return;
                    }
                    self.endpoint
                        .handle_frame(now, from, Some(repr.src.0), Some(repr.dst.0), quic)
                }
                Err(e) => {
                    self.counters.link_rejected += 1;
                    debug!(%from, error = %e, "nexstream: frame refused");
                }
            },
        }
    }

    /// Relays `frame` if it is a local client's routed frame or an answer to one (see
    /// [`StreamNode::set_relay`]); false if it is this endpoint's own.
    fn relayed(&mut self, from: SocketAddr, repr: &Repr, frame: &[u8]) -> bool {
        let Some(relay) = self.relay.as_mut() else {
            return false;
        };
        let frame = &frame[..repr.buffer_len().min(frame.len())];
        let bytes = frame.len() as u64;
        let c = &mut relay.counters;
        let to = if repr.routing_key == link::session_key(relay.own) {
            if repr.dst == relay.own {
                return false;
            }
            match relay.peers.get(&repr.dst.0).copied() {
                Some(to) => {
                    c.frames_back += 1;
                    c.bytes_back += bytes;
                    to
                }
                None => {
                    c.dropped_no_client += 1;
                    debug!(%from, dst = repr.dst.0, "nexstream: relay knows no client for the answer");
                    return true;
                }
            }
        } else if from.ip().is_loopback() || Some(from.ip()) == relay.own_ip {
            c.frames_out += 1;
            c.bytes_out += bytes;
            relay.learn(repr.src.0, from);
            relay.target
        } else {
            c.refused_foreign += 1;
            debug!(%from, "nexstream: relay refused a frame from a remote sender");
            return true;
        };
        // A relay is a datagram hop: a full socket buffer is a lost packet to QUIC.
        if let Err(e) = self.socket.try_send_to(frame, to) {
            relay.counters.dropped_send += 1;
            debug!(%to, error = %e, "nexstream: relay send failed");
        }
        true
    }

    fn command(&mut self, command: Command) {
        let now = now();
        let ep = &mut self.endpoint;
        match command {
            Command::Connect(peer, remote, reply) => match ep.connect(now, peer, remote) {
                Ok(session) => {
                    self.waiters.insert(session, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::ConnectRouted(remote, route, accept, reply) => {
                match ep.connect_routed(now, remote, route, &accept) {
                    Ok(session) => {
                        self.waiters.insert(session, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Relay(target) => {
                self.relay = target.map(|target| Relay {
                    target,
                    own: NodeTag::from_node_id(&ep.node_id()),
                    own_ip: self.socket.local_addr().ok().map(|a| a.ip()),
                    peers: HashMap::new(),
                    order: VecDeque::new(),
                    counters: RelayCounters::default(),
                });
            }
            Command::OpenFlow(s, opts, reply) => {
                let _ = reply.send(ep.open_flow(now, s, opts));
            }
            Command::Send(stream, data, reply) => {
                let _ = reply.send(ep.send(now, stream, data));
            }
            Command::SendBatch(stream, messages, finish, reply) => {
                let _ = reply.send(ep.send_batch(now, stream, messages, finish));
            }
            Command::Finish(stream, reply) => {
                let _ = reply.send(ep.finish(now, stream));
            }
            Command::Message(s, parts, opts, reply) => {
                let _ = reply.send(ep.send_message_parts(now, s, parts, opts));
            }
            Command::Datagram(s, flow, data, opts, reply) => {
                let _ = reply.send(ep.send_datagram(now, s, flow, data, opts));
            }
            Command::Hedge(sessions, data, opts, reply) => {
                let _ = reply.send(ep.hedge(now, &sessions, data, opts));
            }
            Command::Cancel(stream) => ep.cancel(now, stream),
            Command::Close(s, code, reason) => ep.close(now, s, code, &reason),
            Command::Trust(update) => ep.update_trust(now, &update),
            Command::Credentials(c) => ep.identity_mut().set_credentials(c.map(|c| *c)),
            Command::Stats(reply) => {
                let _ = reply.send((ep.stats(), ep.counters()));
            }
            Command::SessionTo(peer, reply) => {
                let _ = reply.send(ep.session_to(&peer));
            }
            Command::RelayCounters(reply) => {
                let _ = reply.send(self.relay.as_ref().map(Relay::counters));
            }
            Command::RefuseNewSessions(reply) => {
                ep.refuse_new_sessions();
                let _ = reply.send(());
            }
        }
    }

    /// Sends every transmit and hands every event on; whether a datagram was sent.
    async fn flush(&mut self) -> bool {
        let now = now();
        let mut sent = false;
        while let Some(t) = self.endpoint.poll_transmit(now) {
            sent = true;
            let segment = t.segment_size.unwrap_or(t.contents.len()).max(1);
            // Frame every QUIC datagram of the batch; equal-size frames stay one GSO batch
            // (the last may be shorter, as UDP_SEGMENT allows).
            self.out.clear();
            let mut frame_len = segment;
            let mut frames = 0usize;
            for (i, quic) in t.contents.chunks(segment).enumerate() {
                match self.framing {
                    Framing::Raw => self.out.extend_from_slice(quic),
                    Framing::NexLink => {
                        let (routing_key, dst) = match t.link {
                            Some(l) => (RoutingKey(l.routing_key), NodeTag(l.dst)),
                            None => {
                                let dst = NodeTag(t.peer_tag.unwrap_or(0));
                                (link::session_key(dst), dst)
                            }
                        };
                        let addr = LinkAddress {
                            routing_key,
                            src: NodeTag::from_node_id(&self.endpoint.node_id()),
                            dst,
                            session: t.session.map_or(0, |s| s.0),
                        };
                        let seq = t.link_seq.wrapping_add(i as u32);
                        if let Err(e) = link::encapsulate(&addr, seq, quic, &mut self.out) {
                            debug!(error = %e, "nexstream: cannot frame a transmit");
                            break;
                        }
                        frame_len = segment + nexus_dataplane::wire::nexlink::HEADER_LEN;
                    }
                }
                frames += 1;
            }
            if frames > 1 && self.gso {
                match send_gso(&self.socket, &self.out, frame_len, t.destination).await {
                    Ok(()) => continue,
                    Err(e) => {
                        // Not offered again; the batch goes out frame by frame below.
                        debug!(error = %e, "nexstream: UDP GSO refused; sending frame by frame");
                        self.gso = false;
                    }
                }
            }
            for frame in self.out.chunks(frame_len) {
                if let Err(e) = self.socket.send_to(frame, t.destination).await {
                    // A send error is a lost packet to QUIC: loss recovery handles it.
                    debug!(error = %e, to = %t.destination, "nexstream: send failed");
                }
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            match &event {
                Event::Established { session, .. } => {
                    if let Some(w) = self.waiters.remove(session) {
                        let _ = w.send(Ok(*session));
                    }
                }
                Event::Closed {
                    session, reason, ..
                } => {
                    if let Some(w) = self.waiters.remove(session) {
                        let _ = w.send(Err(NodeError::Refused(reason.clone())));
                    }
                }
                _ => {}
            }
            // A dropped receiver means nobody listens: events are discarded.
            let _ = self.events.send(event).await;
        }
        sent
    }
}
