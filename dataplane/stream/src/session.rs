//! One session: a quinn connection to one peer, its control stream, its streams and datagram
//! queue, and its counters. The [`crate::Endpoint`] owns every session and drives them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use nexus_trust_core::verify::Verified;
use quinn_proto::{Connection, ConnectionHandle, Dir, Side, StreamId};

use crate::Mode;
use crate::admission::Admission;
use crate::wire::DatagramHeader;

/// A session's number on this endpoint (from 1, never reused by one endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A stream of a session: a reliable-ordered flow, or the stream of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamRef {
    /// The session.
    pub session: SessionId,
    /// The QUIC stream id.
    pub stream: u64,
}

impl StreamRef {
    pub(crate) fn new(session: SessionId, stream: StreamId) -> StreamRef {
        StreamRef {
            session,
            stream: u64::from(stream),
        }
    }
}

/// Per-mode counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeCounters {
    /// Messages (or datagrams) sent, copies not counted.
    pub sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Streams or datagrams dropped on send: expired in the queue, pushed out of a full queue,
    /// thinned (probabilistic), or reset at their deadline.
    pub dropped_send: u64,
    /// Received but not delivered: expired, duplicate, or reset by the peer.
    pub dropped_recv: u64,
    /// Streams of this mode open now.
    pub open_streams: u64,
}

/// A snapshot of one session for operators (`GET /v1/sessions`).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStats {
    /// The session.
    pub id: SessionId,
    /// The peer's node id (its handshake key), once the handshake proved it.
    pub peer: Option<[u8; 32]>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether this end opened it.
    pub client: bool,
    /// Whether the peer's MIC verified.
    pub established: bool,
    /// The peer's MIC serial, if verified.
    pub mic_serial: Option<u64>,
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// UDP payload bytes sent and received.
    pub udp_bytes_sent: u64,
    /// UDP payload bytes received.
    pub udp_bytes_received: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Per-mode counters, indexed by [`Mode::index`].
    pub modes: [ModeCounters; 4],
}

/// What a session sends on one stream.
#[derive(Debug)]
pub(crate) struct SendState {
    pub mode: Mode,
    /// Bytes quinn has not taken yet (its send buffer or flow control was full).
    pub pending: VecDeque<Bytes>,
    /// Finish the stream once `pending` is written.
    pub finish: bool,
    /// `finish()` was called on quinn's stream.
    pub finished: bool,
}

/// How a received stream is being read.
#[derive(Debug)]
pub(crate) enum RecvState {
    /// A flow the peer opened: its one-byte header, read in order.
    FlowHeader,
    /// A reliable-ordered flow: length-prefixed messages, in order.
    Flow { buf: Vec<u8> },
    /// A unidirectional message stream, read unordered from its first byte.
    Uni(UniState),
}

/// The longest unidirectional stream header ([`crate::wire::BE_STREAM_HEADER_LEN`]).
pub(crate) const HEAD_BYTES: usize = crate::wire::BE_STREAM_HEADER_LEN;

/// A unidirectional message stream being read.
#[derive(Debug)]
pub(crate) enum UniState {
    /// Header bytes placed by offset; body bytes that arrived before the header completed.
    Header {
        head: [u8; HEAD_BYTES],
        have: Ranges,
        early: Vec<(u64, Bytes)>,
        /// Bytes in `early` (charged to the session's reassembly budget).
        early_bytes: usize,
    },
    /// One message of `data.len()` bytes, placed by offset.
    Body {
        mode: Mode,
        header_len: u64,
        data: Vec<u8>,
        /// Which body bytes have arrived (chunks may overlap).
        received: Ranges,
        /// Unix ms after which the message is not delivered; 0 = never.
        expires_ms: u64,
    },
}

impl UniState {
    pub fn new() -> UniState {
        UniState::Header {
            head: [0; HEAD_BYTES],
            have: Ranges::default(),
            early: Vec::new(),
            early_bytes: 0,
        }
    }
}

/// A set of byte ranges `[start, end)`, merged; counts the bytes it covers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ranges {
    /// start → end, disjoint and not adjacent.
    spans: BTreeMap<u64, u64>,
    covered: u64,
}

impl Ranges {
    /// Adds `[start, end)`; returns how many bytes were not covered before.
    pub fn insert(&mut self, mut start: u64, mut end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let before = self.covered;
        // Merge with a span that begins at or before `start` and reaches it.
        if let Some((&s, &e)) = self.spans.range(..=start).next_back()
            && e >= start
        {
            if e >= end {
                return 0;
            }
            start = s;
            end = end.max(e);
            self.spans.remove(&s);
            self.covered -= e - s;
        }
        // Absorb every span that begins inside `[start, end]`.
        while let Some((&s, &e)) = self.spans.range(start..=end).next() {
            end = end.max(e);
            self.spans.remove(&s);
            self.covered -= e - s;
        }
        self.spans.insert(start, end);
        self.covered += end - start;
        self.covered - before
    }

    /// Bytes covered.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Whether every byte of `[start, end)` is covered.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        start >= end
            || self
                .spans
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &e)| e >= end)
    }
}

/// A datagram waiting for its turn.
#[derive(Debug)]
pub(crate) struct QueuedDatagram {
    pub header: DatagramHeader,
    pub payload: Bytes,
    pub expires: Option<Instant>,
}

/// Control-stream state of one side.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Our control stream once opened and our `Hello` written.
    pub sent: bool,
    /// The peer's control stream and the bytes read from it so far.
    pub peer_stream: Option<StreamId>,
    pub peer_buf: Vec<u8>,
    /// The peer's `Hello` was processed.
    pub hello_done: bool,
}

pub(crate) struct Session {
    pub id: SessionId,
    pub handle: ConnectionHandle,
    pub conn: Connection,
    /// The peer's key: known up front on the client (pinned), from the handshake on the server.
    pub peer: Option<[u8; 32]>,
    pub verified: Option<Verified>,
    pub established: bool,
    pub connected: bool,
    pub closed: bool,
    pub control: Control,
    pub hello_deadline: Instant,
    pub send: BTreeMap<StreamId, SendState>,
    pub recv: BTreeMap<StreamId, RecvState>,
    /// Peer-initiated streams seen before the session was established.
    pub held: BTreeSet<StreamId>,
    pub buffered_send_bytes: usize,
    pub reassembly_bytes: usize,
    pub datagrams: VecDeque<QueuedDatagram>,
    pub datagram_bytes: usize,
    pub flow_seq: BTreeMap<u32, u64>,
    /// Recently delivered (flow, seq) pairs, for duplicate suppression.
    pub seen: BTreeSet<(u32, u64)>,
    pub seen_order: VecDeque<(u32, u64)>,
    pub admission: Admission,
    /// Datagrams handed to quinn so far (compared with its DATAGRAM frames sent).
    pub handed_datagrams: u64,
    pub modes: [ModeCounters; 4],
    pub link_seq: u32,
    /// The Source Node Tag of the peer's NexLink frames, when the driver passes it: answers are
    /// routed by it before the handshake names the peer.
    pub link_peer: Option<u64>,
    /// A routed session's addressing ([`crate::Endpoint::connect_routed`]).
    pub link_route: Option<crate::endpoint::LinkRoute>,
    /// The node tag whose session key answers are addressed to, for a peer that came through
    /// that node's data plane ([`crate::Endpoint::handle_frame`]).
    pub link_via: Option<u64>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("established", &self.established)
            .field("send_streams", &self.send.len())
            .field("recv_streams", &self.recv.len())
            .finish()
    }
}

impl Session {
    pub fn new(
        id: SessionId,
        handle: ConnectionHandle,
        conn: Connection,
        peer: Option<[u8; 32]>,
        hello_deadline: Instant,
        admission: Admission,
    ) -> Session {
        Session {
            id,
            handle,
            conn,
            peer,
            verified: None,
            established: false,
            connected: false,
            closed: false,
            control: Control::default(),
            hello_deadline,
            send: BTreeMap::new(),
            recv: BTreeMap::new(),
            held: BTreeSet::new(),
            buffered_send_bytes: 0,
            reassembly_bytes: 0,
            datagrams: VecDeque::new(),
            datagram_bytes: 0,
            flow_seq: BTreeMap::new(),
            seen: BTreeSet::new(),
            seen_order: VecDeque::new(),
            admission,
            handed_datagrams: 0,
            modes: [ModeCounters::default(); 4],
            link_seq: 0,
            link_peer: None,
            link_route: None,
            link_via: None,
        }
    }

    pub fn side(&self) -> Side {
        self.conn.side()
    }

    /// Whether `id` is the peer's control stream: its first unidirectional stream.
    pub fn is_peer_control(&self, id: StreamId) -> bool {
        id.dir() == Dir::Uni && id.initiator() != self.side() && id.index() == 0
    }

    /// Remembers `key` as delivered; false if it was seen recently (a duplicate).
    pub fn first_sighting(&mut self, key: (u32, u64), window: usize) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.seen_order.push_back(key);
        while self.seen_order.len() > window {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    pub fn next_seq(&mut self, flow: u32) -> u64 {
        let seq = self.flow_seq.entry(flow).or_insert(0);
        *seq += 1;
        *seq
    }

    pub fn stats(&self) -> SessionStats {
        let s = self.conn.stats();
        let mut modes = self.modes;
        for m in &mut modes {
            m.open_streams = 0;
        }
        for (id, st) in &self.send {
            // Our own control stream is not an application stream.
            let control = id.dir() == Dir::Uni && id.initiator() == self.side() && id.index() == 0;
            if !control {
                modes[st.mode.index()].open_streams += 1;
            }
        }
        SessionStats {
            id: self.id,
            peer: self.peer,
            remote: self.conn.remote_address(),
            client: self.side() == Side::Client,
            established: self.established,
            mic_serial: self.verified.as_ref().map(|v| v.serial),
            rtt_us: u64::try_from(self.conn.rtt().as_micros()).unwrap_or(u64::MAX),
            cwnd_bytes: s.path.cwnd,
            udp_bytes_sent: s.udp_tx.bytes,
            udp_bytes_received: s.udp_rx.bytes,
            lost_packets: s.path.lost_packets,
            sent_packets: s.path.sent_packets,
            modes,
        }
    }

    /// The path's loss rate as quinn measured it: lost / sent packets, 0 before 100 packets.
    pub fn loss_rate(&self) -> f64 {
        let s = self.conn.stats();
        if s.path.sent_packets < 100 {
            0.0
        } else {
            (s.path.lost_packets as f64 / s.path.sent_packets as f64).min(0.99)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;

    #[test]
    fn ranges_merge_and_count_each_byte_once() {
        let mut r = Ranges::default();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(10, 20), 0);
        assert_eq!(r.insert(15, 25), 5);
        assert_eq!(r.insert(0, 5), 5);
        assert_eq!(r.insert(5, 10), 5);
        assert_eq!(r.covered(), 25);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.insert(0, 50), 15);
        assert_eq!(r.covered(), 50);
        assert_eq!(r.insert(7, 7), 0);
        assert_eq!(r.insert(9, 3), 0);
        assert_eq!(r.spans.len(), 1);
        assert!(r.contains(0, 50) && r.contains(3, 4) && r.contains(9, 9));
        assert!(!r.contains(49, 51));
        let mut gap = Ranges::default();
        gap.insert(0, 2);
        gap.insert(3, 5);
        assert!(gap.contains(0, 2) && !gap.contains(0, 5) && !gap.contains(2, 3));
    }
}
