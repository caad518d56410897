//! The sans-IO NexStream endpoint: every session of one node, over one quinn-proto endpoint.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nexus_trust_core::verify::{TrustContext, TrustUpdate, Verified};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, ReadError, StreamEvent, StreamId, TransportConfig,
    VarInt, WriteError,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Weights};
use crate::error::{CloseReason, ConnectError, ErrorCode, SendError};
use crate::identity::{Identity, hex_prefix};
use crate::mode::{DatagramOptions, FlowOptions, MessageOptions, Mode};
use crate::session::{
    HEAD_BYTES, QueuedDatagram, Ranges, RecvState, SendState, Session, SessionId, SessionStats,
    StreamRef, UniState,
};
use crate::wire::{DATAGRAM_HEADER_LEN, DatagramHeader, Hello, RO_LEN_PREFIX, StreamHeader};

/// Limits and timings of an [`Endpoint`]. Every queue and table is bounded by one of these.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Most sessions at once (incoming connections beyond it are refused).
    pub sessions_max: usize,
    /// Most concurrent streams the peer may open, per direction.
    pub streams_max: u32,
    /// Largest application message, any mode.
    pub message_bytes_max: usize,
    /// Bytes a session buffers for sending above quinn's own buffers before
    /// [`SendError::Blocked`].
    pub send_buffer_bytes_max: usize,
    /// Bytes of partially received messages a session holds before refusing new ones
    /// (stop-sending `too_large`).
    pub reassembly_bytes_max: usize,
    /// Bytes of datagrams queued per session; a full queue drops its oldest.
    pub datagram_queue_bytes_max: usize,
    /// Per-session window of remembered (flow, seq) pairs for duplicate suppression.
    pub dedup_window: usize,
    /// Most copies of one probabilistic datagram.
    pub redundancy_max: u32,
    /// Most sessions one hedged request goes to.
    pub hedge_fanout_max: usize,
    /// The peer must send a valid `Hello` within this time after the handshake starts.
    pub hello_timeout: Duration,
    /// Refuse peers that present no MIC.
    pub require_mic: bool,
    /// quinn closes a session after this long without any packet.
    pub idle_timeout: Duration,
    /// quinn sends a keep-alive after this long without sending.
    pub keep_alive: Option<Duration>,
    /// The round-trip time assumed before the first sample (quinn's default, 333 ms, puts the
    /// first retransmission of a lost handshake packet about a second after it).
    pub initial_rtt: Duration,
    /// Packet shares under contention between reliable streams and datagrams.
    pub weights: Weights,
    /// Largest QUIC datagram (MTU discovery stops there).
    pub udp_payload_bytes_max: u16,
    /// Flow-control window per stream.
    pub stream_window_bytes: u32,
    /// Flow-control window per connection, and quinn's send buffer.
    pub connection_window_bytes: u32,
    /// Most datagrams quinn may batch into one GSO transmit (32 NexLink frames of 1,472 bytes
    /// stay under the 64 KiB a `UDP_SEGMENT` send takes; quinn's pacer still spreads a burst).
    pub gso_segments_max: usize,
    /// Congestion window of a new session, in bytes, before any acknowledgement (quinn's
    /// Cubic; slow start doubles it every round trip from there). The default, 12,000 bytes,
    /// is quinn's: ten packets of QUIC's 1,200-byte minimum, the RFC 9002 recommendation and
    /// the ten segments of Linux TCP. Between hosts whose path capacity is known (one
    /// datacenter) a larger window lets a new session's first large message go out in fewer
    /// round trips; on a shared or unknown path it risks losses at the start. Between
    /// [`EndpointConfig::INITIAL_WINDOW_BYTES_MIN`] (two packets) and the connection window.
    pub initial_window_bytes: u64,
}

impl EndpointConfig {
    /// The smallest initial congestion window [`Endpoint::new`] accepts: two packets of 1,200
    /// bytes, quinn's minimum window.
    pub const INITIAL_WINDOW_BYTES_MIN: u64 = 2 * 1200;
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            sessions_max: 1024,
            streams_max: 1024,
            message_bytes_max: 64 << 20,
            send_buffer_bytes_max: 64 << 20,
            reassembly_bytes_max: 128 << 20,
            datagram_queue_bytes_max: 1 << 20,
            dedup_window: 4096,
            redundancy_max: 4,
            hedge_fanout_max: 8,
            hello_timeout: Duration::from_secs(10),
            require_mic: true,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            initial_rtt: Duration::from_millis(333),
            weights: Weights::default(),
            udp_payload_bytes_max: crate::QUIC_DATAGRAM_BYTES_MAX,
            stream_window_bytes: 8 << 20,
            connection_window_bytes: 32 << 20,
            gso_segments_max: 32,
            initial_window_bytes: 12_000,
        }
    }
}

/// A QUIC datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The session it belongs to (none for stateless answers).
    pub session: Option<SessionId>,
    /// The peer's node id, when known.
    pub peer: Option<[u8; 32]>,
    /// The peer's NexLink node tag, for addressing the frame: from its node id, or before the
    /// handshake from the Source Node Tag of its frames.
    pub peer_tag: Option<u64>,
    /// The session's packet counter (NexLink sequence field).
    pub link_seq: u32,
    /// One datagram, or several of `segment_size` bytes each (the last may be shorter) for GSO.
    pub contents: Vec<u8>,
    /// Segment size when `contents` holds several datagrams.
    pub segment_size: Option<usize>,
    /// How the NexLink frame is addressed when not by the session key of `peer_tag` (a routed
    /// session, [`Endpoint::connect_routed`], or a session whose peer came through another
    /// node's data plane, [`Endpoint::handle_frame`]).
    pub link: Option<LinkRoute>,
}

/// The NexLink addressing of a session's frames other than the default (the routing key is the
/// peer's session key, the Destination Node Tag its node tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRoute {
    /// The routing key the frames carry.
    pub routing_key: u128,
    /// The Destination Node Tag the frames carry.
    pub dst: u64,
}

/// How an answer that belongs to no session is addressed: to the Source Node Tag of the frame
/// it answers, through the node that frame named as its destination when that is another node
/// (a routed frame's relay).
#[derive(Clone, Copy, Debug)]
struct StatelessRoute {
    peer_tag: Option<u64>,
    link: Option<LinkRoute>,
}

/// What the endpoint tells its driver and application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer's MIC verified: the session carries application data from now on.
    Established {
        /// The session.
        session: SessionId,
        /// The peer's node id (the key the handshake proved and the MIC certifies).
        peer: [u8; 32],
        /// The peer's address.
        remote: SocketAddr,
        /// What the peer's credentials established (absent if `require_mic` is off and the
        /// peer sent none).
        verified: Option<Verified>,
    },
    /// The session ended (or never got established).
    Closed {
        /// The session.
        session: SessionId,
        /// The peer's key, if the handshake got that far.
        peer: Option<[u8; 32]>,
        /// Whether it had been established.
        established: bool,
        /// Why.
        reason: CloseReason,
    },
    /// A whole message (reliable-ordered, reliable-unordered, or best-effort on a stream).
    Message {
        /// Where it arrived; for a reliable-ordered flow, answer on the same `stream`.
        stream: StreamRef,
        /// Its mode.
        mode: Mode,
        /// The payload.
        data: Bytes,
    },
    /// A best-effort or probabilistic datagram.
    Datagram {
        /// The session.
        session: SessionId,
        /// Its mode.
        mode: Mode,
        /// The sender's flow label.
        flow: u32,
        /// The sender's sequence number within the flow.
        seq: u64,
        /// The payload.
        data: Bytes,
    },
    /// The peer finished its side of a reliable-ordered flow.
    FlowFinished {
        /// The flow.
        stream: StreamRef,
    },
    /// A stream ended without completing: reset or stopped by the peer, expired or cancelled.
    StreamFailed {
        /// The stream.
        stream: StreamRef,
        /// Why.
        code: ErrorCode,
        /// Whether the peer ended it (else this end did).
        by_peer: bool,
    },
    /// The first answer to a hedged request; the other copies were cancelled.
    HedgeWon {
        /// The hedge ([`Endpoint::hedge`]).
        hedge: u64,
        /// The flow that answered first.
        stream: StreamRef,
        /// The answer.
        data: Bytes,
    },
}

#[derive(Debug)]
struct Hedge {
    streams: Vec<StreamRef>,
}

/// Counters of the whole endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Datagrams handed to [`Endpoint::handle_datagram`].
    pub datagrams_in: u64,
    /// Datagrams quinn could not attribute or decode (dropped).
    pub datagrams_dropped: u64,
    /// Sessions refused or closed for a trust reason (missing, rejected or revoked MIC, key
    /// mismatch, no hello).
    pub refused: u64,
    /// Incoming connections refused because `sessions_max` was reached.
    pub refused_full: u64,
    /// Incoming connections refused because the endpoint no longer accepts sessions
    /// ([`Endpoint::refuse_new_sessions`]).
    pub refused_closed: u64,
    /// Sessions established.
    pub established: u64,
}

/// Every NexStream session of one node, sans-IO.
///
/// Call order, as with quinn-proto:
/// 1. [`Endpoint::new`] with the identity, the trust material and a seed (or none for OS
///    randomness), and an anchor instant with its Unix time.
/// 2. Feed it: [`Endpoint::handle_datagram`] for every QUIC datagram received,
///    [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] is due, and the
///    application's calls ([`Endpoint::connect`], [`Endpoint::open_flow`], [`Endpoint::send`],
///    [`Endpoint::send_message`], [`Endpoint::send_datagram`], [`Endpoint::hedge`],
///    [`Endpoint::cancel`], [`Endpoint::update_trust`]).
/// 3. After every call, drain [`Endpoint::poll_transmit`] (send each) and
///    [`Endpoint::poll_event`], then re-arm the timer from [`Endpoint::poll_timeout`].
///
/// It never reads a clock or the OS RNG when seeded; the same inputs at the same instants give
/// the same outputs.
pub struct Endpoint {
    config: Arc<EndpointConfig>,
    quinn: quinn_proto::Endpoint,
    provider: Arc<rustls::crypto::CryptoProvider>,
    identity: Identity,
    trust: TrustContext,
    transport: Arc<TransportConfig>,
    anchor: Instant,
    anchor_unix_ms: u64,
    rng: ChaCha20Rng,
    next_session: u64,
    sessions: BTreeMap<SessionId, Session>,
    by_handle: BTreeMap<usize, SessionId>,
    by_peer: BTreeMap<[u8; 32], SessionId>,
    deadlines: BTreeSet<(Instant, SessionId, StreamId)>,
    hedges: BTreeMap<u64, Hedge>,
    hedge_of: BTreeMap<StreamRef, u64>,
    next_hedge: u64,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    cursor: u64,
    counters: EndpointCounters,
    /// Whether incoming connections are accepted (until [`Endpoint::refuse_new_sessions`]).
    accepting: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &hex_prefix(&self.identity.node_id()))
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Endpoint {
    /// An endpoint for `identity`, verifying peers with `trust`. With `seed`, every random
    /// draw comes from it (simulations, tests); without, from the operating system. `anchor` is
    /// any instant and `anchor_unix_ms` the Unix time at that instant: MIC validity is checked
    /// on `anchor_unix_ms + (now - anchor)`.
    pub fn new(
        config: EndpointConfig,
        identity: Identity,
        trust: TrustContext,
        seed: Option<u64>,
        anchor: Instant,
        anchor_unix_ms: u64,
    ) -> Result<Endpoint, crate::identity::IdentityError> {
        let window_min = EndpointConfig::INITIAL_WINDOW_BYTES_MIN;
        if !(window_min..=u64::from(config.connection_window_bytes))
            .contains(&config.initial_window_bytes)
        {
            return Err(crate::identity::IdentityError::Config(format!(
                "initial_window_bytes {} is outside {window_min}..={} (two packets up to the \
                 connection window)",
                config.initial_window_bytes, config.connection_window_bytes
            )));
        }
        let config = Arc::new(config);
        let (provider, secret, rng_seed, rng) = match seed {
            Some(seed) => (
                crate::seeded::provider(seed),
                crate::seeded::derive(seed, "endpoint-secret"),
                crate::seeded::derive(seed, "quinn"),
                ChaCha20Rng::from_seed(crate::seeded::derive(seed, "nexstream")),
            ),
            None => {
                let provider = crate::identity::system_provider();
                let mut bytes = [[0u8; 32]; 3];
                for b in &mut bytes {
                    provider
                        .secure_random
                        .fill(b)
                        .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
                }
                (
                    provider,
                    bytes[0],
                    bytes[1],
                    ChaCha20Rng::from_seed(bytes[2]),
                )
            }
        };
        let provider = Arc::new(provider);
        let mut endpoint_config =
            quinn_proto::EndpointConfig::new(crate::seeded::reset_key(secret));
        endpoint_config
            .max_udp_payload_size(config.udp_payload_bytes_max)
            .map_err(|e| crate::identity::IdentityError::Quic(e.to_string()))?;
        let cid_seed = crate::seeded::derive(
            u64::from_be_bytes(rng_seed[..8].try_into().unwrap_or_default()),
            "cid",
        );
        endpoint_config.cid_generator(move || Box::new(crate::seeded::CidGenerator::new(cid_seed)));
        endpoint_config.rng_seed(Some(rng_seed));
        let transport = Arc::new(transport_config(&config));
        let mut server = quinn_proto::ServerConfig::new(
            identity.server_crypto(provider.clone())?,
            crate::seeded::token_key(crate::seeded::derive(
                u64::from_be_bytes(secret[..8].try_into().unwrap_or_default()),
                "token",
            )),
        );
        server.transport_config(transport.clone());
        server.migration(false);
        let mut validation = quinn_proto::ValidationTokenConfig::default();
        validation.sent(0);
        server.validation_token_config(validation);
        let quinn = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server)),
            true,
            None,
        );
        Ok(Endpoint {
            config,
            quinn,
            provider,
            identity,
            trust,
            transport,
            anchor,
            anchor_unix_ms,
            rng,
            next_session: 1,
            sessions: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            hedges: BTreeMap::new(),
            hedge_of: BTreeMap::new(),
            next_hedge: 1,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            cursor: 0,
            counters: EndpointCounters::default(),
            accepting: true,
            buf: Vec::new(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> [u8; 32] {
        self.identity.node_id()
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Endpoint-wide counters.
    pub fn counters(&self) -> EndpointCounters {
        self.counters
    }

    /// From now on, refuses every incoming connection as at the session limit (QUIC
    /// `CONNECTION_REFUSED`, sent back the way the frame came, so a routed client gets it too);
    /// established sessions and outgoing connections are unaffected. A service that is
    /// stopping does this first, so a client that resolved it earlier moves on at once instead
    /// of opening a session that is about to close. There is no way back: a restarted service
    /// has a new endpoint.
    pub fn refuse_new_sessions(&mut self) {
        self.accepting = false;
    }

    /// Whether incoming connections are still accepted.
    pub fn accepts_new_sessions(&self) -> bool {
        self.accepting
    }

    /// The trust material peers are verified with.
    pub fn trust(&self) -> &TrustContext {
        &self.trust
    }

    /// The identity this endpoint presents (renewed credentials go here).
    pub fn identity_mut(&mut self) -> &mut Identity {
        &mut self.identity
    }

    /// The Unix milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor);
        self.anchor_unix_ms
            .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// The session to `peer`, if one is open.
    pub fn session_to(&self, peer: &[u8; 32]) -> Option<SessionId> {
        self.by_peer.get(peer).copied()
    }

    /// Whether `session` is established.
    pub fn is_established(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.established)
    }

    /// Snapshots of every session, in id order.
    pub fn stats(&self) -> Vec<SessionStats> {
        self.sessions.values().map(Session::stats).collect()
    }

    /// Opens a *routed* session: its frames carry `route` (a capability class's routing key,
    /// and as Destination Node Tag the tag of the node answers return through) and go to
    /// `remote` (that node's relay, [`crate::udp::StreamNode::set_relay`]), whose data plane
    /// picks the peer. The handshake fails unless the peer proves one of the keys in `accept`;
    /// the peer's key is known after [`Event::Established`], and then the session is found by
    /// [`Endpoint::session_to`] like any other.
    pub fn connect_routed(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        route: LinkRoute,
        accept: &[[u8; 32]],
    ) -> Result<SessionId, ConnectError> {
        if self.sessions.len() >= self.config.sessions_max {
            return Err(ConnectError::TooManySessions {
                max: self.config.sessions_max,
            });
        }
        let crypto = self
            .identity
            .client_crypto_any_of(self.provider.clone(), accept.to_vec())?;
        let mut client = quinn_proto::ClientConfig::new(crypto);
        client.transport_config(self.transport.clone());
        let mut dcid = [0u8; 16];
        self.rng.fill_bytes(&mut dcid);
        client.initial_dst_cid_provider(Arc::new(move || quinn_proto::ConnectionId::new(&dcid)));
        let (handle, conn) = self.quinn.connect(now, client, remote, "nexus")?;
        let id = self.add_session(now, handle, conn, None);
        if let Some(s) = self.sessions.get_mut(&id) {
            s.link_route = Some(route);
        }
        debug!(session = %id, key = %format_args!("{:032x}", route.routing_key), %remote, "nexstream: connecting (routed)");
        self.drive(now, id);
        Ok(id)
    }

    /// Opens a session to the node `peer` at `remote`. The handshake fails unless the server
    /// proves `peer`'s key; the session is usable after [`Event::Established`].
    pub fn connect(
        &mut self,
        now: Instant,
        peer: [u8; 32],
        remote: SocketAddr,
    ) -> Result<SessionId, ConnectError> {
        if self.by_peer.contains_key(&peer) {
            return Err(ConnectError::Exists);
        }
        if self.sessions.len() >= self.config.sessions_max {
            return Err(ConnectError::TooManySessions {
                max: self.config.sessions_max,
            });
        }
        let crypto = self.identity.client_crypto(self.provider.clone(), peer)?;
        let mut client = quinn_proto::ClientConfig::new(crypto);
        client.transport_config(self.transport.clone());
        // quinn draws the initial destination connection id from the OS RNG by default.
        let mut dcid = [0u8; 16];
        self.rng.fill_bytes(&mut dcid);
        client.initial_dst_cid_provider(Arc::new(move || quinn_proto::ConnectionId::new(&dcid)));
        let (handle, conn) = self.quinn.connect(now, client, remote, "nexus")?;
        let id = self.add_session(now, handle, conn, Some(peer));
        self.by_peer.insert(peer, id);
        debug!(session = %id, peer = %hex_prefix(&peer), %remote, "nexstream: connecting");
        self.drive(now, id);
        Ok(id)
    }

    fn add_session(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        peer: Option<[u8; 32]>,
    ) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let session = Session::new(
            id,
            handle,
            conn,
            peer,
            now + self.config.hello_timeout,
            Admission::new(self.config.weights),
        );
        self.sessions.insert(id, session);
        self.by_handle.insert(handle.0, id);
        id
    }

    /// Feeds one received QUIC datagram (NexLink framing already removed).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_datagram_from(now, from, None, data);
    }

    /// Like [`Endpoint::handle_datagram`], with the Source Node Tag of the NexLink frame that
    /// carried it: a session remembers the first tag it sees and addresses its answers to it
    /// until the handshake names the peer (several peers may share one remote address when
    /// frames arrive through the local forwarder).
    pub fn handle_datagram_from(
        &mut self,
        now: Instant,
        from: SocketAddr,
        link_src: Option<u64>,
        data: &[u8],
    ) {
        self.handle_frame(now, from, link_src, None, data);
    }

    /// Like [`Endpoint::handle_datagram_from`], with the Destination Node Tag of the frame too.
    /// A new session whose first frame names another node than this one as destination was
    /// opened on the routed path ([`Endpoint::connect_routed`]): its answers go to that node's
    /// session key, with the peer's tag as destination, so that node's relay hands them to
    /// the peer.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: SocketAddr,
        link_src: Option<u64>,
        link_dst: Option<u64>,
        data: &[u8],
    ) {
        self.counters.datagrams_in += 1;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // Where an answer that belongs to no session (a refusal, a stateless reset) goes: back
        // the way the frame came, so a routed frame's answer reaches its sender's relay.
        let own = nexus_dataplane::wire::nexlink::NodeTag::from_node_id(&self.identity.node_id()).0;
        let via = link_dst.filter(|&d| d != 0 && d != own);
        let back = StatelessRoute {
            peer_tag: link_src,
            link: via.zip(link_src).map(|(via, src)| LinkRoute {
                routing_key: crate::link::session_key(nexus_dataplane::wire::nexlink::NodeTag(via))
                    .0,
                dst: src,
            }),
        };
        let event = self
            .quinn
            .handle(now, from, None, None, BytesMut::from(data), &mut buf);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(&id) = self.by_handle.get(&handle.0) {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.link_peer = s.link_peer.or(link_src);
                        s.conn.handle_event(event);
                    }
                    self.drive(now, id);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if !self.accepting {
                    self.counters.refused_closed += 1;
                    let t = self.quinn.refuse(incoming, &mut buf);
                    self.push_stateless(&t, &buf, back);
                } else if self.sessions.len() >= self.config.sessions_max {
                    self.counters.refused_full += 1;
                    let t = self.quinn.refuse(incoming, &mut buf);
                    self.push_stateless(&t, &buf, back);
                } else {
                    match self.quinn.accept(incoming, now, &mut buf, None) {
                        Ok((handle, conn)) => {
                            let id = self.add_session(now, handle, conn, None);
                            if let Some(s) = self.sessions.get_mut(&id) {
                                s.link_peer = link_src;
                                s.link_via = via;
                            }
                            debug!(session = %id, remote = %from, "nexstream: incoming");
                            self.drive(now, id);
                        }
                        Err(e) => {
                            debug!(remote = %from, error = %e.cause, "nexstream: accept failed");
                            if let Some(t) = e.response {
                                self.push_stateless(&t, &buf, back);
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.push_stateless(&t, &buf, back),
            None => self.counters.datagrams_dropped += 1,
        }
        self.buf = buf;
    }

    fn push_stateless(&mut self, t: &quinn_proto::Transmit, buf: &[u8], back: StatelessRoute) {
        self.transmits.push_back(Transmit {
            destination: t.destination,
            session: None,
            peer: None,
            peer_tag: back.peer_tag,
            link_seq: 0,
            contents: buf[..t.size].to_vec(),
            segment_size: t.segment_size,
            link: back.link,
        });
    }

    /// The next instant [`Endpoint::handle_timeout`] must be called at.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = self.deadlines.first().map(|d| d.0);
        for s in self.sessions.values_mut() {
            let t = s.conn.poll_timeout();
            let hello = (!s.established && !s.closed).then_some(s.hello_deadline);
            // Datagrams held back by the admission bucket go when it has refilled (while quinn
            // still holds earlier ones, its own sending wakes the endpoint).
            let admission = s
                .datagrams
                .front()
                .filter(|_| s.conn.stats().frame_tx.datagram >= s.handed_datagrams)
                .and_then(|d| s.admission.wake_at(d.payload.len() + DATAGRAM_HEADER_LEN));
            for t in [t, hello, admission].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Runs every timer due at `now`: quinn's (loss detection, idle, keep-alive), hello
    /// deadlines and stream deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in &ids {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            if s.conn.poll_timeout().is_some_and(|t| t <= now) {
                s.conn.handle_timeout(now);
            }
            if !s.established && !s.closed && s.hello_deadline <= now {
                let why = if s.connected {
                    "no valid hello before the hello deadline"
                } else {
                    "handshake did not complete before the hello deadline"
                };
                self.close_session(now, *id, ErrorCode::HelloTimeout, why);
            }
            self.drive(now, *id);
        }
        while let Some(&(at, session, stream)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.expire_stream(now, session, stream);
        }
    }

    fn expire_stream(&mut self, now: Instant, session: SessionId, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(state) = s.send.remove(&stream) else {
            return;
        };
        s.buffered_send_bytes -= state.pending.iter().map(Bytes::len).sum::<usize>();
        s.modes[state.mode.index()].dropped_send += 1;
        let _ = s
            .conn
            .send_stream(stream)
            .reset(ErrorCode::Expired.varint());
        if stream.dir() == Dir::Bi {
            let _ = s.conn.recv_stream(stream).stop(ErrorCode::Expired.varint());
            s.recv.remove(&stream);
        }
        self.events.push_back(Event::StreamFailed {
            stream: StreamRef::new(session, stream),
            code: ErrorCode::Expired,
            by_peer: false,
        });
        self.drive(now, session);
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let ids: Vec<SessionId> = self
            .sessions
            .range(SessionId(self.cursor)..)
            .chain(self.sessions.range(..SessionId(self.cursor)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(t) = self.transmit_for(now, id) {
                self.cursor = id.0 + 1;
                return Some(t);
            }
        }
        None
    }

    fn transmit_for(&mut self, now: Instant, id: SessionId) -> Option<Transmit> {
        let gso = self.config.gso_segments_max.max(1);
        let s = self.sessions.get_mut(&id)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        drop_expired_datagrams(s, now);
        let rtt = s.conn.rtt();
        let active = s.admission.streams_active(now, s.buffered_send_bytes > 0);
        // quinn's datagram queue is empty once it has sent a DATAGRAM frame for every
        // datagram handed to it.
        let handoff =
            !s.datagrams.is_empty() && s.conn.stats().frame_tx.datagram >= s.handed_datagrams;
        let mut transmit = None;
        if handoff && s.admission.probe(active) {
            // Streams first this time: shows whether they have data waiting in quinn.
            transmit = s.conn.poll_transmit(now, gso, &mut buf);
        }
        if transmit.is_none() {
            if handoff {
                let cwnd = s.conn.congestion_state().window();
                s.admission.refill(now, active, cwnd, rtt);
                hand_datagrams(s);
            }
            transmit = s.conn.poll_transmit(now, gso, &mut buf);
        }
        if transmit.is_some() {
            let stream_frames = s.conn.stats().frame_tx.stream;
            s.admission.observe(now, stream_frames, rtt);
        }
        let out = transmit.map(|t| {
            // The datagrams leave in the buffer quinn wrote them to (no copy); the next
            // transmit gets a fresh one.
            let capacity = buf.capacity();
            let mut contents = std::mem::replace(&mut buf, Vec::with_capacity(capacity));
            contents.truncate(t.size);
            s.link_seq = s.link_seq.wrapping_add(1);
            let peer_tag = s
                .peer
                .map(|p| nexus_dataplane::wire::nexlink::NodeTag::from_node_id(&p).0)
                .or(s.link_peer);
            let link = s.link_route.or_else(|| {
                let via = s.link_via?;
                Some(LinkRoute {
                    routing_key: crate::link::session_key(nexus_dataplane::wire::nexlink::NodeTag(
                        via,
                    ))
                    .0,
                    dst: peer_tag?,
                })
            });
            Transmit {
                destination: t.destination,
                session: Some(id),
                peer: s.peer,
                peer_tag,
                link_seq: s.link_seq,
                contents,
                segment_size: t.segment_size,
                link,
            }
        });
        self.buf = buf;
        // A transmit can free flow-control credit or finish a drain: process what followed.
        self.drive(now, id);
        out
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Applies new trust material (CA keys, revocations) and closes every session whose peer's
    /// MIC no longer passes: revoked, expired, or signed by a key no longer trusted.
    pub fn update_trust(&mut self, now: Instant, update: &TrustUpdate) {
        let unix_ms = self.unix_ms(now);
        self.trust.apply_update(update, unix_ms);
        self.recheck_sessions(now);
    }

    /// Re-checks every established session's MIC at `now` (expiry, revocation).
    pub fn recheck_sessions(&mut self, now: Instant) {
        let unix_ms = self.unix_ms(now);
        let failing: Vec<(SessionId, ErrorCode, String)> = self
            .sessions
            .values()
            .filter_map(|s| {
                let v = s.verified.as_ref()?;
                match self.trust.status(v, unix_ms) {
                    Ok(()) => None,
                    Err(reject) => Some((s.id, ErrorCode::for_reject(&reject), reject.to_string())),
                }
            })
            .collect();
        for (id, code, why) in failing {
            self.close_session(now, id, code, &why);
        }
    }

    /// Closes `session` with `code`; [`Event::Closed`] follows.
    pub fn close(&mut self, now: Instant, session: SessionId, code: ErrorCode, reason: &str) {
        self.close_session(now, session, code, reason);
    }

    fn close_session(&mut self, now: Instant, id: SessionId, code: ErrorCode, reason: &str) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.closed {
            return;
        }
        if code != ErrorCode::NoError && code != ErrorCode::GoingAway {
            self.counters.refused += u64::from(matches!(
                code,
                ErrorCode::HelloTimeout
                    | ErrorCode::MicMissing
                    | ErrorCode::MicRejected
                    | ErrorCode::MicRevoked
                    | ErrorCode::KeyMismatch
                    | ErrorCode::ProtocolViolation
            ));
            warn!(session = %id, peer = ?s.peer.as_ref().map(hex_prefix), %code, reason, "nexstream: closing session");
        }
        s.conn.close(
            now,
            code.varint(),
            Bytes::copy_from_slice(reason.as_bytes()),
        );
        s.closed = true;
        let event = Event::Closed {
            session: id,
            peer: s.peer,
            established: s.established,
            reason: CloseReason::Local {
                code,
                reason: reason.to_owned(),
            },
        };
        self.forget_session(id);
        self.events.push_back(event);
        self.drive(now, id);
    }

    /// Removes the session from the lookup tables (quinn keeps draining it).
    fn forget_session(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.closed = true;
            if let Some(peer) = s.peer
                && self.by_peer.get(&peer) == Some(&id)
            {
                self.by_peer.remove(&peer);
            }
            s.send.clear();
            s.recv.clear();
            s.datagrams.clear();
            s.datagram_bytes = 0;
            s.buffered_send_bytes = 0;
            s.reassembly_bytes = 0;
        }
        self.deadlines.retain(|d| d.1 != id);
    }

    fn session_ready(&mut self, session: SessionId) -> Result<&mut Session, SendError> {
        let s = self
            .sessions
            .get_mut(&session)
            .filter(|s| !s.closed)
            .ok_or(SendError::NoSession)?;
        if !s.established {
            return Err(SendError::NotEstablished);
        }
        Ok(s)
    }

    /// Opens a reliable-ordered flow on `session`: a bidirectional stream whose messages
    /// ([`Endpoint::send`]) arrive once and in order; the peer answers on the same flow.
    pub fn open_flow(
        &mut self,
        now: Instant,
        session: SessionId,
        opts: FlowOptions,
    ) -> Result<StreamRef, SendError> {
        if opts.deadline.is_some_and(|d| d <= now) {
            return Err(SendError::Expired);
        }
        let s = self.session_ready(session)?;
        let stream = s
            .conn
            .streams()
            .open(Dir::Bi)
            .ok_or(SendError::StreamsExhausted)?;
        let _ = s.conn.send_stream(stream).set_priority(opts.priority);
        s.send.insert(
            stream,
            SendState {
                mode: Mode::ReliableOrdered,
                pending: VecDeque::from([Bytes::from(StreamHeader::Flow.encode())]),
                finish: false,
                finished: false,
            },
        );
        s.buffered_send_bytes += 1;
        s.recv.insert(stream, RecvState::Flow { buf: Vec::new() });
        if let Some(d) = opts.deadline {
            self.deadlines.insert((d, session, stream));
        }
        // The header waits for the first message, so both leave in one packet.
        Ok(StreamRef::new(session, stream))
    }

    /// Sends one message on a reliable-ordered flow (one this end opened, or one the peer
    /// opened — an answer).
    pub fn send(&mut self, now: Instant, stream: StreamRef, data: Bytes) -> Result<(), SendError> {
        self.send_batch(now, stream, vec![data], false)
    }

    /// Sends `messages` in order on a reliable-ordered flow, and finishes this end's side after
    /// them when `finish` is set: all of them or none (every check passes before anything is
    /// queued). They reach quinn together, so as many as fit share a packet: a driver that has
    /// several messages for a flow (tokens written while it was busy) hands them over in one
    /// call rather than one packet each.
    pub fn send_batch(
        &mut self,
        now: Instant,
        stream: StreamRef,
        messages: Vec<Bytes>,
        finish: bool,
    ) -> Result<(), SendError> {
        let max = self.config.message_bytes_max;
        let buffer_max = self.config.send_buffer_bytes_max;
        let mut total = 0usize;
        for data in &messages {
            if data.len() > max {
                return Err(SendError::TooLarge {
                    len: data.len(),
                    max,
                });
            }
            // Each length goes out as a u32 prefix: refuse what does not fit one, whatever
            // the configured limit.
            if u32::try_from(data.len()).is_err() {
                return Err(SendError::TooLarge {
                    len: data.len(),
                    max: u32::MAX as usize,
                });
            }
            total += data.len() + RO_LEN_PREFIX;
        }
        let s = self.session_ready(stream.session)?;
        let id = stream_id(stream.stream).ok_or(SendError::NoStream)?;
        if id.dir() != Dir::Bi {
            return Err(SendError::NoStream);
        }
        if let Some(state) = s.send.get(&id) {
            if state.finish {
                return Err(SendError::NoStream);
            }
        } else {
            // The peer's flow, first answer: start our side of it. The peer may have finished
            // its side already (a request and its FIN in one flight); quinn still holds our
            // sending half until we finish it.
            if id.initiator() == s.side() || s.conn.send_stream(id).priority().is_err() {
                return Err(SendError::NoStream);
            }
            s.send.insert(
                id,
                SendState {
                    mode: Mode::ReliableOrdered,
                    pending: VecDeque::new(),
                    finish: false,
                    finished: false,
                },
            );
        }
        if s.buffered_send_bytes + total > buffer_max {
            return Err(SendError::Blocked {
                buffered: s.buffered_send_bytes,
                max: buffer_max,
            });
        }
        let state = s.send.get_mut(&id).ok_or(SendError::NoStream)?;
        let count = messages.len() as u64;
        let bytes = (total - messages.len() * RO_LEN_PREFIX) as u64;
        for data in messages {
            // Checked above: every length fits a u32.
            let len = data.len() as u32;
            state
                .pending
                .push_back(Bytes::copy_from_slice(&len.to_be_bytes()));
            state.pending.push_back(data);
        }
        state.finish = finish;
        s.buffered_send_bytes += total;
        let counters = &mut s.modes[Mode::ReliableOrdered.index()];
        counters.sent += count;
        counters.bytes_sent += bytes;
        self.flush_stream(stream.session, id);
        self.drive(now, stream.session);
        Ok(())
    }

    /// Finishes this end's side of a reliable-ordered flow (after its queued messages).
    pub fn finish(&mut self, now: Instant, stream: StreamRef) -> Result<(), SendError> {
        let s = self.session_ready(stream.session)?;
        let id = stream_id(stream.stream).ok_or(SendError::NoStream)?;
        let state = s.send.get_mut(&id).ok_or(SendError::NoStream)?;
        state.finish = true;
        self.flush_stream(stream.session, id);
        self.drive(now, stream.session);
        Ok(())
    }

    /// Sends one reliable-unordered message on a stream of its own.
    pub fn send_message(
        &mut self,
        now: Instant,
        session: SessionId,
        data: Bytes,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError> {
        self.send_message_parts(now, session, vec![data], opts)
    }

    /// [`Endpoint::send_message`] of the concatenation of `parts`, without concatenating them
    /// (a large payload behind a small header is never copied on the way to quinn).
    pub fn send_message_parts(
        &mut self,
        now: Instant,
        session: SessionId,
        parts: Vec<Bytes>,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError> {
        let len = self.check_message(parts.iter().map(Bytes::len).sum())?;
        self.open_uni(
            now,
            session,
            Mode::ReliableUnordered,
            StreamHeader::Message { len },
            parts,
            opts,
        )
    }

    fn check_message(&self, len: usize) -> Result<u32, SendError> {
        let max = self.config.message_bytes_max;
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        u32::try_from(len).map_err(|_| SendError::TooLarge {
            len,
            max: u32::MAX as usize,
        })
    }

    fn open_uni(
        &mut self,
        now: Instant,
        session: SessionId,
        mode: Mode,
        header: StreamHeader,
        parts: Vec<Bytes>,
        opts: MessageOptions,
    ) -> Result<StreamRef, SendError> {
        if opts.deadline.is_some_and(|d| d <= now) {
            return Err(SendError::Expired);
        }
        let buffer_max = self.config.send_buffer_bytes_max;
        let s = self.session_ready(session)?;
        let n: usize = parts.iter().map(Bytes::len).sum();
        let total = header.len() + n;
        if s.buffered_send_bytes + total > buffer_max {
            return Err(SendError::Blocked {
                buffered: s.buffered_send_bytes,
                max: buffer_max,
            });
        }
        let stream = s
            .conn
            .streams()
            .open(Dir::Uni)
            .ok_or(SendError::StreamsExhausted)?;
        let _ = s.conn.send_stream(stream).set_priority(opts.priority);
        let mut pending = VecDeque::with_capacity(parts.len() + 1);
        pending.push_back(Bytes::from(header.encode()));
        pending.extend(parts);
        s.send.insert(
            stream,
            SendState {
                mode,
                pending,
                finish: true,
                finished: false,
            },
        );
        s.buffered_send_bytes += total;
        let counters = &mut s.modes[mode.index()];
        counters.sent += 1;
        counters.bytes_sent += n as u64;
        if let Some(d) = opts.deadline {
            self.deadlines.insert((d, session, stream));
        }
        self.flush_stream(session, stream);
        self.drive(now, session);
        Ok(StreamRef::new(session, stream))
    }

    /// Sends a best-effort or probabilistic datagram on `flow`. A best-effort message too
    /// large for a datagram goes on a stream of its own, reset at `opts.expires`.
    /// Probabilistic messages must fit a datagram.
    pub fn send_datagram(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: u32,
        data: Bytes,
        opts: DatagramOptions,
    ) -> Result<(), SendError> {
        if opts.expires.is_some_and(|e| e <= now) {
            return Err(SendError::Expired);
        }
        let expires_ms = opts.expires.map_or(0, |e| self.unix_ms(e));
        let mode = opts.mode();
        let max_size = {
            let s = self.session_ready(session)?;
            s.conn.datagrams().max_size()
        };
        let Some(max_size) = max_size else {
            return Err(SendError::DatagramsUnsupported);
        };
        if data.len() + DATAGRAM_HEADER_LEN > max_size {
            if mode == Mode::Probabilistic {
                return Err(SendError::TooLarge {
                    len: data.len(),
                    max: max_size - DATAGRAM_HEADER_LEN,
                });
            }
            let len = self.check_message(data.len())?;
            self.open_uni(
                now,
                session,
                Mode::BestEffort,
                StreamHeader::BestEffort { expires_ms, len },
                vec![data],
                MessageOptions {
                    priority: -1,
                    deadline: opts.expires,
                },
            )?;
            return Ok(());
        }
        let redundancy_max = self.config.redundancy_max.max(1);
        let queue_max = self.config.datagram_queue_bytes_max;
        let draw: f64 = self.rng.random();
        let s = self.session_ready(session)?;
        let copies = match opts.probability {
            None => 1,
            Some(p) => copies_for(p.get(), s.loss_rate(), draw, redundancy_max),
        };
        let seq = s.next_seq(flow);
        let counters = &mut s.modes[mode.index()];
        counters.sent += 1;
        counters.bytes_sent += data.len() as u64;
        if copies == 0 {
            counters.dropped_send += 1;
            return Ok(());
        }
        let header = DatagramHeader {
            mode,
            flow,
            seq,
            expires_ms,
        };
        let size = data.len() + DATAGRAM_HEADER_LEN;
        for _ in 0..copies {
            s.datagrams.push_back(QueuedDatagram {
                header,
                payload: data.clone(),
                expires: opts.expires,
            });
            s.datagram_bytes += size;
        }
        while s.datagram_bytes > queue_max {
            let Some(old) = s.datagrams.pop_front() else {
                break;
            };
            s.datagram_bytes -= old.payload.len() + DATAGRAM_HEADER_LEN;
            s.modes[old.header.mode.index()].dropped_send += 1;
        }
        Ok(())
    }

    /// Sends `request` on a new reliable-ordered flow of each of `sessions`; the first answer
    /// is reported as [`Event::HedgeWon`] and the other flows are cancelled (reset and
    /// stop-sending with `hedge_lost`). Returns the hedge's number.
    pub fn hedge(
        &mut self,
        now: Instant,
        sessions: &[SessionId],
        request: Bytes,
        opts: FlowOptions,
    ) -> Result<u64, SendError> {
        let max = self.config.hedge_fanout_max;
        if sessions.is_empty() || sessions.len() > max {
            return Err(SendError::BadHedge {
                got: sessions.len(),
                max,
            });
        }
        for &s in sessions {
            self.session_ready(s)?;
        }
        let mut streams = Vec::with_capacity(sessions.len());
        for &session in sessions {
            match self
                .open_flow(now, session, opts)
                .and_then(|flow| self.send(now, flow, request.clone()).map(|()| flow))
            {
                Ok(flow) => streams.push(flow),
                Err(e) => {
                    for flow in streams {
                        self.cancel_with(now, flow, ErrorCode::Cancelled);
                    }
                    return Err(e);
                }
            }
        }
        let id = self.next_hedge;
        self.next_hedge += 1;
        for flow in &streams {
            self.hedge_of.insert(*flow, id);
        }
        self.hedges.insert(id, Hedge { streams });
        Ok(id)
    }

    /// Cancels a stream: reset (and stop-sending, for a flow) with `cancelled`.
    pub fn cancel(&mut self, now: Instant, stream: StreamRef) {
        self.cancel_with(now, stream, ErrorCode::Cancelled);
    }

    fn cancel_with(&mut self, now: Instant, stream: StreamRef, code: ErrorCode) {
        let Some(id) = stream_id(stream.stream) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&stream.session) else {
            return;
        };
        if let Some(state) = s.send.remove(&id) {
            s.buffered_send_bytes -= state.pending.iter().map(Bytes::len).sum::<usize>();
            let _ = s.conn.send_stream(id).reset(code.varint());
        }
        if s.recv.remove(&id).is_some() || id.initiator() != s.side() || id.dir() == Dir::Bi {
            let _ = s.conn.recv_stream(id).stop(code.varint());
        }
        self.hedge_of.remove(&stream);
        self.drive(now, stream.session);
    }

    /// Writes what quinn accepts of a stream's pending bytes; finishes it when asked and done.
    fn flush_stream(&mut self, session: SessionId, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(state) = s.send.get_mut(&stream) else {
            return;
        };
        while !state.pending.is_empty() {
            // quinn takes the buffers themselves (no copy); a partly written one is advanced
            // in place.
            match s
                .conn
                .send_stream(stream)
                .write_chunks(state.pending.make_contiguous())
            {
                Ok(written) => {
                    s.buffered_send_bytes -= written.bytes;
                    state.pending.drain(..written.chunks);
                    if !state.pending.is_empty() {
                        break;
                    }
                }
                Err(WriteError::Blocked) => break,
                Err(WriteError::Stopped(code)) => {
                    let code = ErrorCode::from_u64(code.into_inner());
                    s.modes[state.mode.index()].dropped_send += 1;
                    let bytes: usize = state.pending.iter().map(Bytes::len).sum();
                    s.buffered_send_bytes -= bytes;
                    s.send.remove(&stream);
                    self.stream_failed(session, stream, code, true);
                    return;
                }
                Err(WriteError::ClosedStream) => {
                    let bytes: usize = state.pending.iter().map(Bytes::len).sum();
                    s.buffered_send_bytes -= bytes;
                    s.send.remove(&stream);
                    return;
                }
            }
        }
        if state.pending.is_empty() && state.finish && !state.finished {
            state.finished = true;
            let _ = s.conn.send_stream(stream).finish();
        }
    }

    fn stream_failed(
        &mut self,
        session: SessionId,
        stream: StreamId,
        code: ErrorCode,
        by_peer: bool,
    ) {
        let r = StreamRef::new(session, stream);
        self.hedge_of.remove(&r);
        self.events.push_back(Event::StreamFailed {
            stream: r,
            code,
            by_peer,
        });
    }

    /// Processes everything quinn has for the session: endpoint events, connection events,
    /// readable streams. Removes the session once quinn has drained it.
    fn drive(&mut self, now: Instant, id: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            let mut progressed = false;
            while let Some(ev) = s.conn.poll_endpoint_events() {
                progressed = true;
                if let Some(cev) = self.quinn.handle_event(s.handle, ev) {
                    s.conn.handle_event(cev);
                }
            }
            let event = s.conn.poll();
            match event {
                Some(ev) => self.on_conn_event(now, id, ev),
                None if !progressed => break,
                None => {}
            }
        }
        let drained = self.sessions.get(&id).is_some_and(|s| s.conn.is_drained());
        if drained {
            if let Some(s) = self.sessions.remove(&id) {
                self.by_handle.remove(&s.handle.0);
            }
            self.forget_session(id);
        }
    }

    fn on_conn_event(&mut self, now: Instant, id: SessionId, event: quinn_proto::Event) {
        match event {
            // A server may send 0.5-RTT data: its Hello leaves with its handshake flight, so
            // the client can verify it as soon as the handshake completes.
            quinn_proto::Event::HandshakeDataReady => self.send_hello(id),
            quinn_proto::Event::Connected => self.on_connected(now, id),
            quinn_proto::Event::ConnectionLost { reason } => self.on_lost(id, reason),
            quinn_proto::Event::Stream(ev) => self.on_stream_event(now, id, ev),
            quinn_proto::Event::DatagramReceived => self.on_datagrams(now, id),
            quinn_proto::Event::DatagramsUnblocked => {}
        }
    }

    /// Opens this end's control stream and writes its Hello, once per session: on a server as
    /// soon as it may send (0.5-RTT), on a client when the handshake completes.
    fn send_hello(&mut self, id: SessionId) {
        let hello = Hello {
            credentials: self.identity.credentials().cloned(),
        }
        .encode();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.control.sent || s.closed {
            return;
        }
        let Some(stream) = s.conn.streams().open(Dir::Uni) else {
            // No stream credit yet: the Connected event tries again.
            return;
        };
        s.buffered_send_bytes += hello.len();
        s.send.insert(
            stream,
            SendState {
                mode: Mode::ReliableOrdered,
                pending: VecDeque::from([Bytes::from(hello)]),
                finish: true,
                finished: false,
            },
        );
        s.control.sent = true;
        self.flush_stream(id, stream);
    }

    fn on_connected(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.connected = true;
        // The handshake proved the peer's key: pinned on the client; read it on the server.
        let tls_key = s
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| {
                certs
                    .first()
                    .and_then(|c| crate::identity::ed25519_key_of(c))
            });
        match (tls_key, s.peer) {
            (Some(k), Some(p)) if k != p => {
                self.close_session(
                    now,
                    id,
                    ErrorCode::KeyMismatch,
                    "handshake key is not the pinned key",
                );
                return;
            }
            (Some(k), None) => {
                s.peer = Some(k);
                // One session per peer: a newer incoming connection replaces nothing; the
                // older session stays the one found by `session_to`.
                self.by_peer.entry(k).or_insert(id);
            }
            (None, _) => {
                self.close_session(
                    now,
                    id,
                    ErrorCode::KeyMismatch,
                    "no raw public key in the handshake",
                );
                return;
            }
            _ => {}
        }
        self.send_hello(id);
        // The peer's control stream may have arrived with the handshake.
        self.read_streams(now, id);
    }

    fn on_lost(&mut self, id: SessionId, reason: quinn_proto::ConnectionError) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.closed {
            // Closed here: the event was reported then.
            return;
        }
        let reason = match reason {
            quinn_proto::ConnectionError::ApplicationClosed(c) => CloseReason::Peer {
                code: ErrorCode::from_u64(c.error_code.into_inner()),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            other => CloseReason::Transport(other.to_string()),
        };
        if !s.established {
            self.counters.refused += 1;
        }
        info!(session = %id, peer = ?s.peer.as_ref().map(hex_prefix), %reason, "nexstream: session lost");
        let event = Event::Closed {
            session: id,
            peer: s.peer,
            established: s.established,
            reason,
        };
        self.forget_session(id);
        self.events.push_back(event);
    }

    fn on_stream_event(&mut self, now: Instant, id: SessionId, ev: StreamEvent) {
        match ev {
            StreamEvent::Opened { dir } => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                while let Some(stream) = s.conn.streams().accept(dir) {
                    if s.is_peer_control(stream) {
                        s.control.peer_stream = Some(stream);
                    } else {
                        let state = match stream.dir() {
                            Dir::Bi => RecvState::FlowHeader,
                            Dir::Uni => RecvState::Uni(UniState::new()),
                        };
                        s.recv.insert(stream, state);
                        if !s.established {
                            s.held.insert(stream);
                        }
                    }
                }
                self.read_streams(now, id);
            }
            StreamEvent::Readable { id: stream } => self.read_stream(now, id, stream),
            StreamEvent::Writable { id: stream } => self.flush_stream(id, stream),
            StreamEvent::Finished { id: stream } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.send.remove(&stream);
                }
            }
            StreamEvent::Stopped {
                id: stream,
                error_code,
            } => {
                let code = ErrorCode::from_u64(error_code.into_inner());
                if let Some(s) = self.sessions.get_mut(&id)
                    && let Some(state) = s.send.remove(&stream)
                {
                    s.buffered_send_bytes -= state.pending.iter().map(Bytes::len).sum::<usize>();
                    s.modes[state.mode.index()].dropped_send += 1;
                    let _ = s.conn.send_stream(stream).reset(code.varint());
                    self.stream_failed(id, stream, code, true);
                }
            }
            StreamEvent::Available { .. } => {}
        }
    }

    /// Reads every readable stream of the session (after establishment, or when a control
    /// stream may have become readable).
    fn read_streams(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let mut streams: Vec<StreamId> = s.recv.keys().copied().collect();
        if let Some(c) = s.control.peer_stream {
            streams.insert(0, c);
        }
        for stream in streams {
            self.read_stream(now, id, stream);
        }
    }

    fn read_stream(&mut self, now: Instant, id: SessionId, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.closed {
            return;
        }
        if s.control.peer_stream == Some(stream) {
            self.read_control(now, id, stream);
            return;
        }
        if !s.established {
            if s.recv.contains_key(&stream) {
                s.held.insert(stream);
            }
            return;
        }
        let unix_ms = self.unix_ms(now);
        let config = self.config.clone();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut outcome = ReadOutcome::default();
        read_app_stream(s, stream, unix_ms, &config, &mut outcome);
        for (mode, data) in outcome.messages {
            let r = StreamRef::new(id, stream);
            if let Some(hedge) = self.hedge_of.get(&r).copied() {
                self.win_hedge(now, hedge, r, data);
            } else {
                self.events.push_back(Event::Message {
                    stream: r,
                    mode,
                    data,
                });
            }
        }
        if outcome.finished_flow {
            self.events.push_back(Event::FlowFinished {
                stream: StreamRef::new(id, stream),
            });
        }
        if let Some((code, by_peer)) = outcome.failed {
            self.stream_failed(id, stream, code, by_peer);
        }
    }

    fn win_hedge(&mut self, now: Instant, hedge: u64, winner: StreamRef, data: Bytes) {
        let Some(h) = self.hedges.remove(&hedge) else {
            return;
        };
        for flow in h.streams {
            self.hedge_of.remove(&flow);
            if flow != winner {
                self.cancel_with(now, flow, ErrorCode::HedgeLost);
            }
        }
        self.events.push_back(Event::HedgeWon {
            hedge,
            stream: winner,
            data,
        });
    }

    fn read_control(&mut self, now: Instant, id: SessionId, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.control.hello_done {
            // Only a Hello is defined; anything after it is ignored (read and dropped).
            drain_discard(s, stream);
            return;
        }
        let mut violation: Option<String> = None;
        if let Ok(mut chunks) = s.conn.recv_stream(stream).read(true) {
            loop {
                match chunks.next(crate::wire::HELLO_BYTES_MAX) {
                    Ok(Some(chunk)) => {
                        s.control.peer_buf.extend_from_slice(&chunk.bytes);
                        if s.control.peer_buf.len() > crate::wire::HELLO_BYTES_MAX {
                            violation = Some("hello longer than allowed".into());
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(_)) => {
                        violation = Some("control stream reset".into());
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        if let Some(v) = violation {
            self.close_session(now, id, ErrorCode::ProtocolViolation, &v);
            return;
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let decoded = match Hello::frame_len(&s.control.peer_buf) {
            Ok(Some(len)) if s.control.peer_buf.len() >= len => {
                Hello::decode(&s.control.peer_buf[..len])
            }
            Ok(_) => return,
            Err(e) => Err(e),
        };
        let hello = match decoded {
            Ok(h) => h,
            Err(e) => {
                let why = format!("bad hello: {e}");
                self.close_session(now, id, ErrorCode::ProtocolViolation, &why);
                return;
            }
        };
        s.control.hello_done = true;
        s.control.peer_buf = Vec::new();
        if !s.connected {
            // The hello can only be read once the handshake has completed (1-RTT data).
            return;
        }
        let Some(peer) = s.peer else {
            return;
        };
        let unix_ms = self.unix_ms(now);
        let verified = match hello.credentials {
            None if self.config.require_mic => {
                self.close_session(now, id, ErrorCode::MicMissing, "peer presented no MIC");
                return;
            }
            None => None,
            Some(creds) => match self.trust.check(&creds, unix_ms) {
                Ok(v) if v.subject_key == peer => Some(v),
                Ok(v) => {
                    let why = format!(
                        "MIC {} certifies key {}, the handshake proved {}",
                        v.serial,
                        hex_prefix(&v.subject_key),
                        hex_prefix(&peer)
                    );
                    self.close_session(now, id, ErrorCode::KeyMismatch, &why);
                    return;
                }
                Err(reject) => {
                    self.close_session(
                        now,
                        id,
                        ErrorCode::for_reject(&reject),
                        &reject.to_string(),
                    );
                    return;
                }
            },
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.verified = verified.clone();
        s.established = true;
        self.counters.established += 1;
        let remote = s.conn.remote_address();
        info!(session = %id, peer = %hex_prefix(&peer), mic = ?verified.as_ref().map(|v| v.serial), "nexstream: session established");
        self.events.push_back(Event::Established {
            session: id,
            peer,
            remote,
            verified,
        });
        let held: Vec<StreamId> = std::mem::take(&mut s.held).into_iter().collect();
        for stream in held {
            self.read_stream(now, id, stream);
        }
        self.on_datagrams(now, id);
    }

    fn on_datagrams(&mut self, now: Instant, id: SessionId) {
        let unix_ms = self.unix_ms(now);
        let window = self.config.dedup_window;
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.established {
            // Held in quinn's receive buffer (bounded) until the MIC verifies.
            return;
        }
        while let Some(d) = s.conn.datagrams().recv() {
            let Ok((h, payload)) = DatagramHeader::decode(&d) else {
                self.counters.datagrams_dropped += 1;
                continue;
            };
            let counters_index = h.mode.index();
            if h.expires_ms != 0 && unix_ms > h.expires_ms {
                s.modes[counters_index].dropped_recv += 1;
                continue;
            }
            if !s.first_sighting((h.flow, h.seq), window) {
                s.modes[counters_index].dropped_recv += 1;
                continue;
            }
            let data = d.slice(DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + payload.len());
            s.modes[counters_index].delivered += 1;
            s.modes[counters_index].bytes_delivered += data.len() as u64;
            self.events.push_back(Event::Datagram {
                session: id,
                mode: h.mode,
                flow: h.flow,
                seq: h.seq,
                data,
            });
        }
    }

    /// Checks the endpoint's invariants; panics on a broken one. Tests and the simulator call
    /// it after every step.
    pub fn check_invariants(&self) {
        for (id, s) in &self.sessions {
            assert_eq!(*id, s.id);
            assert_eq!(self.by_handle.get(&s.handle.0), Some(id));
            let pending: usize = s
                .send
                .values()
                .map(|st| st.pending.iter().map(Bytes::len).sum::<usize>())
                .sum();
            assert!(
                pending <= s.buffered_send_bytes,
                "buffered bytes undercounted: {pending} > {}",
                s.buffered_send_bytes
            );
            let queued: usize = s
                .datagrams
                .iter()
                .map(|d| d.payload.len() + DATAGRAM_HEADER_LEN)
                .sum();
            assert_eq!(queued, s.datagram_bytes);
            assert!(s.datagram_bytes <= self.config.datagram_queue_bytes_max);
            assert!(s.reassembly_bytes <= self.config.reassembly_bytes_max);
            assert!(!s.established || s.verified.is_some() || !self.config.require_mic);
            if s.closed {
                assert!(s.send.is_empty() && s.recv.is_empty() && s.datagrams.is_empty());
            }
        }
        for (peer, id) in &self.by_peer {
            let s = self.sessions.get(id).expect("by_peer names a live session");
            assert_eq!(s.peer.as_ref(), Some(peer));
        }
        assert!(self.sessions.len() <= self.config.sessions_max + 1);
    }
}

/// What reading one application stream produced.
#[derive(Default)]
struct ReadOutcome {
    messages: Vec<(Mode, Bytes)>,
    finished_flow: bool,
    failed: Option<(ErrorCode, bool)>,
}

/// Reads what the stream has; updates its state; fills `out`.
fn read_app_stream(
    s: &mut Session,
    stream: StreamId,
    unix_ms: u64,
    config: &EndpointConfig,
    out: &mut ReadOutcome,
) {
    let Some(state) = s.recv.remove(&stream) else {
        drain_discard(s, stream);
        return;
    };
    let next = match state {
        RecvState::Uni(uni) => read_uni(s, stream, uni, unix_ms, config, out).map(RecvState::Uni),
        RecvState::FlowHeader => read_flow_header(s, stream, config, out),
        RecvState::Flow { buf } => read_flow(s, stream, buf, config, out),
    };
    if let Some(state) = next {
        s.recv.insert(stream, state);
    }
}

/// The one-byte header of a flow the peer opened, read in order; then the flow itself.
fn read_flow_header(
    s: &mut Session,
    stream: StreamId,
    config: &EndpointConfig,
    out: &mut ReadOutcome,
) -> Option<RecvState> {
    let mut recv = s.conn.recv_stream(stream);
    let mut chunks = recv.read(true).ok()?;
    let first = chunks.next(1);
    let _ = chunks.finalize();
    match first {
        Ok(Some(c)) => match StreamHeader::decode_prefix(&c.bytes, true) {
            Ok(Some(StreamHeader::Flow)) => read_flow(s, stream, Vec::new(), config, out),
            _ => {
                let _ = s
                    .conn
                    .recv_stream(stream)
                    .stop(ErrorCode::BadHeader.varint());
                out.failed = Some((ErrorCode::BadHeader, false));
                None
            }
        },
        Ok(None) => None,
        Err(ReadError::Blocked) => Some(RecvState::FlowHeader),
        Err(ReadError::Reset(code)) => {
            out.failed = Some((ErrorCode::from_u64(code.into_inner()), true));
            None
        }
    }
}

/// A reliable-ordered flow: length-prefixed messages, read in order.
fn read_flow(
    s: &mut Session,
    stream: StreamId,
    mut buf: Vec<u8>,
    config: &EndpointConfig,
    out: &mut ReadOutcome,
) -> Option<RecvState> {
    let mut recv = s.conn.recv_stream(stream);
    let mut chunks = recv.read(true).ok()?;
    let mut ended = false;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => {
                ended = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(code)) => {
                out.failed = Some((ErrorCode::from_u64(code.into_inner()), true));
                ended = true;
                break;
            }
        }
        if buf.len() > config.message_bytes_max + RO_LEN_PREFIX {
            break;
        }
    }
    let _ = chunks.finalize();
    if out.failed.is_some() {
        s.modes[Mode::ReliableOrdered.index()].dropped_recv += 1;
    }
    let mut at = 0;
    while buf.len() - at >= RO_LEN_PREFIX {
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&buf[at..at + 4]);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > config.message_bytes_max {
            let _ = s
                .conn
                .recv_stream(stream)
                .stop(ErrorCode::TooLarge.varint());
            out.failed = Some((ErrorCode::TooLarge, false));
            ended = true;
            break;
        }
        if buf.len() - at - RO_LEN_PREFIX < len {
            break;
        }
        let data = Bytes::copy_from_slice(&buf[at + 4..at + 4 + len]);
        at += 4 + len;
        let c = &mut s.modes[Mode::ReliableOrdered.index()];
        c.delivered += 1;
        c.bytes_delivered += len as u64;
        out.messages.push((Mode::ReliableOrdered, data));
    }
    buf.drain(..at);
    if ended {
        if out.failed.is_none() {
            out.finished_flow = true;
        }
        // Our side of a flow we opened stays in `send` until acknowledged.
        return None;
    }
    Some(RecvState::Flow { buf })
}

/// A unidirectional message stream, read unordered from its first byte: chunks are placed by
/// offset into the header, then the body. Reading unordered from the start (rather than the
/// header in order, then the body unordered) keeps quinn from switching a stream's read mode,
/// which can hand out bytes twice.
fn read_uni(
    s: &mut Session,
    stream: StreamId,
    mut state: UniState,
    unix_ms: u64,
    config: &EndpointConfig,
    out: &mut ReadOutcome,
) -> Option<UniState> {
    let mut got: Vec<(u64, Bytes)> = Vec::new();
    let mut ended = false;
    let mut reset = None;
    {
        let mut recv = s.conn.recv_stream(stream);
        let Ok(mut chunks) = recv.read(false) else {
            release(s, &state);
            return None;
        };
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(c)) => got.push((c.offset, c.bytes)),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(code)) => {
                    reset = Some(ErrorCode::from_u64(code.into_inner()));
                    break;
                }
            }
        }
        let _ = chunks.finalize();
    }
    if let Some(code) = reset {
        if let UniState::Body { mode, .. } = &state {
            s.modes[mode.index()].dropped_recv += 1;
        }
        release(s, &state);
        out.failed = Some((code, true));
        return None;
    }
    let fail = |s: &mut Session, state: &UniState, code: ErrorCode| {
        let _ = s.conn.recv_stream(stream).stop(code.varint());
        release(s, state);
        (code, false)
    };
    for (offset, bytes) in got {
        match &mut state {
            UniState::Header {
                head,
                have,
                early,
                early_bytes,
            } => {
                let end = offset + bytes.len() as u64;
                let head_end = end.min(HEAD_BYTES as u64);
                if offset < head_end {
                    let n = (head_end - offset) as usize;
                    head[offset as usize..head_end as usize].copy_from_slice(&bytes[..n]);
                    have.insert(offset, head_end);
                }
                if end > HEAD_BYTES as u64 {
                    let from = offset.max(HEAD_BYTES as u64);
                    let part = bytes.slice((from - offset) as usize..);
                    *early_bytes += part.len();
                    s.reassembly_bytes += part.len();
                    early.push((from, part));
                    if *early_bytes > config.message_bytes_max + HEAD_BYTES
                        || s.reassembly_bytes > config.reassembly_bytes_max
                    {
                        out.failed = Some(fail(s, &state, ErrorCode::TooLarge));
                        return None;
                    }
                }
            }
            UniState::Body {
                header_len,
                data,
                received,
                ..
            } => {
                if !place(data, received, *header_len, offset, &bytes) {
                    out.failed = Some(fail(s, &state, ErrorCode::BadHeader));
                    return None;
                }
            }
        }
        // The header may be complete now: switch to the body and place what came early.
        if let UniState::Header {
            head,
            have,
            early,
            early_bytes,
        } = &mut state
        {
            let header_len = match head[0] {
                _ if !have.contains(0, 1) => continue,
                2 => crate::wire::MESSAGE_HEADER_LEN,
                3 => crate::wire::BE_STREAM_HEADER_LEN,
                _ => {
                    out.failed = Some(fail(s, &state, ErrorCode::BadHeader));
                    return None;
                }
            };
            if !have.contains(0, header_len as u64) {
                continue;
            }
            let (mode, len, expires_ms) =
                match StreamHeader::decode_prefix(&head[..header_len], false) {
                    Ok(Some(StreamHeader::Message { len })) => (Mode::ReliableUnordered, len, 0),
                    Ok(Some(StreamHeader::BestEffort { expires_ms, len })) => {
                        (Mode::BestEffort, len, expires_ms)
                    }
                    _ => {
                        out.failed = Some(fail(s, &state, ErrorCode::BadHeader));
                        return None;
                    }
                };
            s.reassembly_bytes -= *early_bytes;
            let early = std::mem::take(early);
            let head_tail: Vec<(u64, Bytes)> = (header_len..HEAD_BYTES)
                .filter(|&i| have.contains(i as u64, i as u64 + 1))
                .map(|i| (i as u64, Bytes::copy_from_slice(&head[i..=i])))
                .collect();
            let data = match reserve(s, len, config) {
                Ok(data) => data,
                Err(code) => {
                    let _ = s.conn.recv_stream(stream).stop(code.varint());
                    out.failed = Some((code, false));
                    return None;
                }
            };
            let mut body = UniState::Body {
                mode,
                header_len: header_len as u64,
                data,
                received: Ranges::default(),
                expires_ms,
            };
            if let UniState::Body {
                header_len,
                data,
                received,
                ..
            } = &mut body
            {
                for (offset, bytes) in head_tail.iter().chain(early.iter()) {
                    if !place(data, received, *header_len, *offset, bytes) {
                        out.failed = Some(fail(s, &body, ErrorCode::BadHeader));
                        return None;
                    }
                }
            }
            state = body;
        }
    }
    if !ended {
        return Some(state);
    }
    // The stream finished and every byte was read.
    match state {
        UniState::Header { .. } => {
            out.failed = Some(fail(s, &state, ErrorCode::BadHeader));
            None
        }
        UniState::Body {
            mode,
            data,
            received,
            expires_ms,
            ..
        } => {
            s.reassembly_bytes -= data.len();
            if received.covered() != data.len() as u64 {
                let _ = s
                    .conn
                    .recv_stream(stream)
                    .stop(ErrorCode::BadHeader.varint());
                out.failed = Some((ErrorCode::BadHeader, false));
            } else if expires_ms != 0 && unix_ms > expires_ms {
                s.modes[mode.index()].dropped_recv += 1;
            } else {
                let c = &mut s.modes[mode.index()];
                c.delivered += 1;
                c.bytes_delivered += data.len() as u64;
                out.messages.push((mode, Bytes::from(data)));
            }
            None
        }
    }
}

/// Gives back the reassembly budget a message stream holds.
fn release(s: &mut Session, state: &UniState) {
    s.reassembly_bytes -= match state {
        UniState::Header { early_bytes, .. } => *early_bytes,
        UniState::Body { data, .. } => data.len(),
    };
}

/// Copies the body part of a chunk at stream `offset` into `data`; false if it lies beyond the
/// declared length.
fn place(
    data: &mut [u8],
    received: &mut Ranges,
    header_len: u64,
    offset: u64,
    bytes: &[u8],
) -> bool {
    let end = offset + bytes.len() as u64;
    let body_start = offset.max(header_len);
    if end <= body_start {
        return true;
    }
    let skip = (body_start - offset) as usize;
    let (start, stop) = (
        (body_start - header_len) as usize,
        (end - header_len) as usize,
    );
    if stop > data.len() {
        return false;
    }
    data[start..stop].copy_from_slice(&bytes[skip..]);
    received.insert(start as u64, stop as u64);
    true
}

/// Allocates a message buffer of `len` bytes within the session's reassembly bound.
fn reserve(s: &mut Session, len: u32, config: &EndpointConfig) -> Result<Vec<u8>, ErrorCode> {
    let len = len as usize;
    if len > config.message_bytes_max || s.reassembly_bytes + len > config.reassembly_bytes_max {
        return Err(ErrorCode::TooLarge);
    }
    s.reassembly_bytes += len;
    Ok(vec![0u8; len])
}

fn drain_discard(s: &mut Session, stream: StreamId) {
    if let Ok(mut chunks) = s.conn.recv_stream(stream).read(false) {
        while let Ok(Some(_)) = chunks.next(usize::MAX) {}
        let _ = chunks.finalize();
    }
}

/// Drops queued datagrams whose expiry has passed.
fn drop_expired_datagrams(s: &mut Session, now: Instant) {
    let before = s.datagrams.len();
    if before == 0 {
        return;
    }
    let mut dropped = [0u64; 4];
    let mut bytes = 0;
    s.datagrams.retain(|d| {
        let keep = d.expires.is_none_or(|e| e > now);
        if !keep {
            dropped[d.header.mode.index()] += 1;
            bytes += d.payload.len() + DATAGRAM_HEADER_LEN;
        }
        keep
    });
    s.datagram_bytes -= bytes;
    for (m, n) in dropped.iter().enumerate() {
        s.modes[m].dropped_send += n;
    }
}

/// Moves up to one packet's worth of queued datagrams into quinn, as far as the admission
/// bucket allows. Copies of one probabilistic message never share a packet (they would be lost
/// together).
fn hand_datagrams(s: &mut Session) {
    let Some(max) = s.conn.datagrams().max_size() else {
        return;
    };
    let mut room = max;
    let mut last: Option<(u32, u64)> = None;
    while let Some(d) = s.datagrams.front() {
        let size = d.payload.len() + DATAGRAM_HEADER_LEN;
        let key = (d.header.flow, d.header.seq);
        if (size > room && room != max) || last == Some(key) || !s.admission.take(size) {
            break;
        }
        let Some(d) = s.datagrams.pop_front() else {
            break;
        };
        s.datagram_bytes -= size;
        last = Some(key);
        let mut bytes = Vec::with_capacity(size);
        d.header.write(&mut bytes);
        bytes.extend_from_slice(&d.payload);
        match s.conn.datagrams().send(Bytes::from(bytes), true) {
            Ok(()) => s.handed_datagrams += 1,
            Err(_) => s.modes[d.header.mode.index()].dropped_send += 1,
        }
        // A DATAGRAM frame costs a type byte and a length varint besides its payload.
        room = room.saturating_sub(size + 4);
        if room < DATAGRAM_HEADER_LEN + 1 {
            break;
        }
    }
}

/// How many copies of a probabilistic datagram to send for target probability `p` over a path
/// losing `loss` of its packets, given a uniform `draw` in [0, 1): 0 or 1 (Bernoulli thinning)
/// when one copy suffices, else the fewest copies `k` with `1 - loss^k >= p`, at most `max`.
pub fn copies_for(p: f64, loss: f64, draw: f64, max: u32) -> u32 {
    let deliver_one = 1.0 - loss;
    if p <= deliver_one {
        // Send with probability p / (1 - loss): delivered with probability p.
        u32::from(draw < p / deliver_one)
    } else if loss <= 0.0 {
        1
    } else {
        let k = ((1.0 - p).max(1e-12).ln() / loss.ln()).ceil();
        (k as u32).clamp(1, max)
    }
}

fn stream_id(raw: u64) -> Option<StreamId> {
    VarInt::from_u64(raw).ok().map(StreamId::from)
}

fn transport_config(config: &EndpointConfig) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.streams_max));
    t.max_concurrent_uni_streams(VarInt::from_u32(config.streams_max));
    t.stream_receive_window(VarInt::from_u32(config.stream_window_bytes));
    t.receive_window(VarInt::from_u32(config.connection_window_bytes));
    t.send_window(u64::from(config.connection_window_bytes));
    t.datagram_receive_buffer_size(Some(config.datagram_queue_bytes_max));
    t.datagram_send_buffer_size(config.datagram_queue_bytes_max);
    t.initial_mtu(1200);
    t.min_mtu(1200);
    let mut mtud = quinn_proto::MtuDiscoveryConfig::default();
    mtud.upper_bound(config.udp_payload_bytes_max);
    t.mtu_discovery_config(Some(mtud));
    t.max_idle_timeout(quinn_proto::IdleTimeout::try_from(config.idle_timeout).ok());
    t.keep_alive_interval(config.keep_alive);
    t.initial_rtt(config.initial_rtt);
    let mut cubic = quinn_proto::congestion::CubicConfig::default();
    cubic.initial_window(config.initial_window_bytes);
    t.congestion_controller_factory(Arc::new(cubic));
    t
}

#[cfg(test)]
mod tests {
    use super::copies_for;

    #[test]
    fn copies_thin_below_loss_and_repeat_above_it() {
        // No loss: p = 0.3 → send on draws below 0.3.
        assert_eq!(copies_for(0.3, 0.0, 0.29, 4), 1);
        assert_eq!(copies_for(0.3, 0.0, 0.31, 4), 0);
        // 50 % loss, p = 0.3 → send with probability 0.6.
        assert_eq!(copies_for(0.3, 0.5, 0.59, 4), 1);
        assert_eq!(copies_for(0.3, 0.5, 0.61, 4), 0);
        // 50 % loss, p = 0.9 → 1 - 0.5^k >= 0.9 → k = 4.
        assert_eq!(copies_for(0.9, 0.5, 0.0, 8), 4);
        assert_eq!(copies_for(0.9, 0.5, 0.0, 2), 2);
        // p = 1 without loss: one copy.
        assert_eq!(copies_for(1.0, 0.0, 0.99, 4), 1);
        // p = 1 with loss: as many as allowed.
        assert_eq!(copies_for(1.0, 0.1, 0.5, 4), 4);
    }
}
