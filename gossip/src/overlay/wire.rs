//! The overlay's wire format: one message per datagram, after the shared four-byte prefix
//! (`[WIRE_MAGIC, OVERLAY_WIRE_VERSION, kind, flags]`), then the sender's address, then the body.
//!
//! Every decode is bounded: counts and lengths are checked against the bytes that are actually
//! there (and against named maxima) before anything is allocated. The byte-by-byte layout is in
//! `docs/protocols/overlay.md` §3.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::PACKET_BYTES_MAX;
use crate::membership::WIRE_MAGIC;

/// Second byte of every overlay datagram: the overlay wire version this build speaks. The
/// overlay versions its format apart from membership's (`WIRE_VERSION`); the kind byte tells
/// the two apart on the shared socket.
pub const OVERLAY_WIRE_VERSION: u8 = 1;

/// HyParView: a new node asks a contact to let it in.
pub const KIND_JOIN: u8 = 0x10;
/// HyParView: a random walk carrying a new node's address.
pub const KIND_FORWARD_JOIN: u8 = 0x11;
/// HyParView: a request to become neighbours (flag bit 0: high priority).
pub const KIND_NEIGHBOR: u8 = 0x12;
/// HyParView: "you are in my active view" (a reply to Join / Neighbor, or the end of a walk).
pub const KIND_NEIGHBOR_ACCEPT: u8 = 0x13;
/// HyParView: a low-priority Neighbor request refused (the active view is full).
pub const KIND_NEIGHBOR_REJECT: u8 = 0x14;
/// HyParView: "you are no longer in my active view".
pub const KIND_DISCONNECT: u8 = 0x15;
/// HyParView: a shuffle walk carrying a sample of the origin's views.
pub const KIND_SHUFFLE: u8 = 0x16;
/// HyParView: the answer to a shuffle, sent straight to its origin.
pub const KIND_SHUFFLE_REPLY: u8 = 0x17;
/// Plumtree: a broadcast payload (eager push).
pub const KIND_GOSSIP: u8 = 0x18;
/// Plumtree: announcements of message ids (lazy push), batched.
pub const KIND_IHAVE: u8 = 0x19;
/// Plumtree: "send me these messages and make our link eager".
pub const KIND_GRAFT: u8 = 0x1a;
/// Plumtree: "make our link lazy".
pub const KIND_PRUNE: u8 = 0x1b;
/// A unicast application message (not broadcast, not cached).
pub const KIND_DIRECT: u8 = 0x1c;
/// HyParView extension: "I am alive and you are in my active view" (sent only when keepalive
/// is on; see `docs/protocols/overlay.md` §4.4).
pub const KIND_KEEPALIVE: u8 = 0x1d;
/// Flag bit 0 of a Neighbor request: high priority (the sender has no neighbour at all).
pub const FLAG_HIGH_PRIORITY: u8 = 0x01;

/// Largest application payload [`crate::Overlay::broadcast`] and
/// [`crate::Overlay::send_direct`] accept, in bytes (the datagram stays under
/// [`PACKET_BYTES_MAX`] with an IPv6 sender).
pub const OVERLAY_PAYLOAD_MAX: usize = 1200;
/// Message ids one IHave datagram carries at most.
pub const IHAVE_IDS_MAX: usize = 64;
/// Message ids one Graft datagram carries at most (small: each id can cost the receiver a
/// full-size reply, so this bounds the amplification a Graft can cause).
pub const GRAFT_IDS_MAX: usize = 8;
/// Addresses one Shuffle or ShuffleReply carries at most.
pub const SHUFFLE_ADDRS_MAX: usize = 32;

const ID_BYTES: usize = 16;

/// Whether a datagram's kind byte (its third byte) belongs to the overlay (`0x10..=0x1f`);
/// the gossip actor uses it to route a datagram to the overlay or to membership.
pub fn is_overlay_kind(kind: u8) -> bool {
    (0x10..=0x1f).contains(&kind)
}

/// The id of one broadcast message: 16 bytes, unique per (origin, start of the origin, sequence).
///
/// Built as `origin nonce (8 bytes, big endian) ‖ sequence (8 bytes, big endian)`; the nonce is
/// drawn from the origin's seed and mixed with its address when the core is created, so a
/// restarted origin (a new seed) starts a fresh id space. See `docs/protocols/overlay.md` §5.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    pub(crate) fn new(nonce: u64, sequence: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&nonce.to_be_bytes());
        bytes[8..].copy_from_slice(&sequence.to_be_bytes());
        MessageId(bytes)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a datagram, or an application payload, was refused. In every case the overlay's state is
/// unchanged (a datagram is decoded completely before any of it is applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// The datagram ends before the field its header announces.
    #[error("datagram truncated ({0} bytes)")]
    Truncated(usize),
    /// A datagram over [`PACKET_BYTES_MAX`], or a payload over [`OVERLAY_PAYLOAD_MAX`].
    #[error("too large ({size} bytes, limit {limit})")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The limit it breaks.
        limit: usize,
    },
    /// The first byte is not [`WIRE_MAGIC`].
    #[error("not a gossip datagram (first byte {0:#04x})")]
    BadMagic(u8),
    /// A wire version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A kind outside the overlay's, or flags the kind does not define.
    #[error("unknown overlay kind {kind:#04x} with flags {flags:#04x}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// A field with a value the format does not allow (named).
    #[error("bad field: {0}")]
    BadField(&'static str),
    /// Bytes left over after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The datagram claims to come from this node.
    #[error("datagram claims to come from this node")]
    FromSelf,
}

/// One decoded overlay message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Join,
    ForwardJoin {
        new: SocketAddr,
        ttl: u8,
    },
    Neighbor {
        high: bool,
    },
    NeighborAccept,
    NeighborReject,
    Disconnect,
    Shuffle {
        origin: SocketAddr,
        ttl: u8,
        addrs: Vec<SocketAddr>,
    },
    ShuffleReply {
        addrs: Vec<SocketAddr>,
    },
    Gossip {
        id: MessageId,
        hops: u16,
        payload: Vec<u8>,
    },
    IHave {
        ids: Vec<(MessageId, u16)>,
    },
    Graft {
        ids: Vec<MessageId>,
    },
    Prune,
    Direct {
        payload: Vec<u8>,
    },
    KeepAlive,
}

impl Message {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Message::Join => KIND_JOIN,
            Message::ForwardJoin { .. } => KIND_FORWARD_JOIN,
            Message::Neighbor { .. } => KIND_NEIGHBOR,
            Message::NeighborAccept => KIND_NEIGHBOR_ACCEPT,
            Message::NeighborReject => KIND_NEIGHBOR_REJECT,
            Message::Disconnect => KIND_DISCONNECT,
            Message::Shuffle { .. } => KIND_SHUFFLE,
            Message::ShuffleReply { .. } => KIND_SHUFFLE_REPLY,
            Message::Gossip { .. } => KIND_GOSSIP,
            Message::IHave { .. } => KIND_IHAVE,
            Message::Graft { .. } => KIND_GRAFT,
            Message::Prune => KIND_PRUNE,
            Message::Direct { .. } => KIND_DIRECT,
            Message::KeepAlive => KIND_KEEPALIVE,
        }
    }

    /// Encodes `[prefix][sender][body]`. The caller keeps every count and length within the
    /// limits above (a broken limit is a bug, caught by the debug assertion on the size).
    pub(crate) fn encode(&self, sender: SocketAddr) -> Vec<u8> {
        let flags = match self {
            Message::Neighbor { high: true } => FLAG_HIGH_PRIORITY,
            _ => 0,
        };
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[WIRE_MAGIC, OVERLAY_WIRE_VERSION, self.kind(), flags]);
        put_addr(&mut out, sender);
        match self {
            Message::Join
            | Message::Neighbor { .. }
            | Message::NeighborAccept
            | Message::NeighborReject
            | Message::Disconnect
            | Message::Prune
            | Message::KeepAlive => {}
            Message::ForwardJoin { new, ttl } => {
                put_addr(&mut out, *new);
                out.push(*ttl);
            }
            Message::Shuffle { origin, ttl, addrs } => {
                put_addr(&mut out, *origin);
                out.push(*ttl);
                put_addrs(&mut out, addrs);
            }
            Message::ShuffleReply { addrs } => put_addrs(&mut out, addrs),
            Message::Gossip { id, hops, payload } => {
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&hops.to_be_bytes());
                put_payload(&mut out, payload);
            }
            Message::IHave { ids } => {
                debug_assert!((1..=IHAVE_IDS_MAX).contains(&ids.len()));
                out.push(ids.len() as u8);
                for (id, hops) in ids {
                    out.extend_from_slice(&id.0);
                    out.extend_from_slice(&hops.to_be_bytes());
                }
            }
            Message::Graft { ids } => {
                debug_assert!((1..=GRAFT_IDS_MAX).contains(&ids.len()));
                out.push(ids.len() as u8);
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
            Message::Direct { payload } => put_payload(&mut out, payload),
        }
        debug_assert!(out.len() <= PACKET_BYTES_MAX, "encoded {} bytes", out.len());
        out
    }

    /// Decodes a whole datagram into `(sender, message)`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(SocketAddr, Message), OverlayError> {
        if bytes.len() > PACKET_BYTES_MAX {
            return Err(OverlayError::TooLarge {
                size: bytes.len(),
                limit: PACKET_BYTES_MAX,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let magic = r.u8()?;
        if magic != WIRE_MAGIC {
            return Err(OverlayError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != OVERLAY_WIRE_VERSION {
            return Err(OverlayError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        let flags = r.u8()?;
        let allowed_flags = if kind == KIND_NEIGHBOR {
            FLAG_HIGH_PRIORITY
        } else {
            0
        };
        if !is_overlay_kind(kind) || kind > KIND_KEEPALIVE || flags & !allowed_flags != 0 {
            return Err(OverlayError::UnknownKind { kind, flags });
        }
        let sender = r.addr()?;
        let msg = match kind {
            KIND_JOIN => Message::Join,
            KIND_FORWARD_JOIN => Message::ForwardJoin {
                new: r.addr()?,
                ttl: r.u8()?,
            },
            KIND_NEIGHBOR => Message::Neighbor {
                high: flags & FLAG_HIGH_PRIORITY != 0,
            },
            KIND_NEIGHBOR_ACCEPT => Message::NeighborAccept,
            KIND_NEIGHBOR_REJECT => Message::NeighborReject,
            KIND_DISCONNECT => Message::Disconnect,
            KIND_SHUFFLE => Message::Shuffle {
                origin: r.addr()?,
                ttl: r.u8()?,
                addrs: r.addrs()?,
            },
            KIND_SHUFFLE_REPLY => Message::ShuffleReply { addrs: r.addrs()? },
            KIND_GOSSIP => Message::Gossip {
                id: r.id()?,
                hops: r.u16()?,
                payload: r.payload()?,
            },
            KIND_IHAVE => {
                let count = usize::from(r.u8()?);
                if count == 0 || count > IHAVE_IDS_MAX {
                    return Err(OverlayError::BadField("ihave count"));
                }
                r.need(count * (ID_BYTES + 2))?;
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push((r.id()?, r.u16()?));
                }
                Message::IHave { ids }
            }
            KIND_GRAFT => {
                let count = usize::from(r.u8()?);
                if count == 0 || count > GRAFT_IDS_MAX {
                    return Err(OverlayError::BadField("graft count"));
                }
                r.need(count * ID_BYTES)?;
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(r.id()?);
                }
                Message::Graft { ids }
            }
            KIND_PRUNE => Message::Prune,
            KIND_DIRECT => Message::Direct {
                payload: r.payload()?,
            },
            KIND_KEEPALIVE => Message::KeepAlive,
            _ => return Err(OverlayError::UnknownKind { kind, flags }),
        };
        let rest = bytes.len() - r.pos;
        if rest != 0 {
            return Err(OverlayError::Trailing(rest));
        }
        Ok((sender, msg))
    }
}

/// Appends `addr` as a tag (4 or 6), its address bytes and its port, big-endian; the keyring
/// messages use the same encoding.
pub(crate) fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_addrs(out: &mut Vec<u8>, addrs: &[SocketAddr]) {
    debug_assert!(addrs.len() <= SHUFFLE_ADDRS_MAX);
    out.push(addrs.len() as u8);
    for a in addrs {
        put_addr(out, *a);
    }
}

fn put_payload(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= OVERLAY_PAYLOAD_MAX);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), OverlayError> {
        if self.bytes.len().saturating_sub(self.pos) < n {
            Err(OverlayError::Truncated(self.bytes.len()))
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], OverlayError> {
        self.need(n)?;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, OverlayError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, OverlayError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn id(&mut self) -> Result<MessageId, OverlayError> {
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(self.take(ID_BYTES)?);
        Ok(MessageId(id))
    }

    fn addr(&mut self) -> Result<SocketAddr, OverlayError> {
        let ip = match self.u8()? {
            4 => {
                let b = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(OverlayError::BadField("address family")),
        };
        let port = self.u16()?;
        if port == 0 || ip.is_unspecified() {
            return Err(OverlayError::BadField("address"));
        }
        Ok(SocketAddr::new(ip, port))
    }

    fn addrs(&mut self) -> Result<Vec<SocketAddr>, OverlayError> {
        let count = usize::from(self.u8()?);
        if count > SHUFFLE_ADDRS_MAX {
            return Err(OverlayError::BadField("address count"));
        }
        // Each address takes at least 7 bytes: check before allocating.
        self.need(count * 7)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.addr()?);
        }
        Ok(out)
    }

    fn payload(&mut self) -> Result<Vec<u8>, OverlayError> {
        let len = usize::from(self.u16()?);
        if len > OVERLAY_PAYLOAD_MAX {
            return Err(OverlayError::TooLarge {
                size: len,
                limit: OVERLAY_PAYLOAD_MAX,
            });
        }
        Ok(self.take(len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn samples() -> Vec<Message> {
        let id = MessageId::new(7, 9);
        vec![
            Message::Join,
            Message::ForwardJoin { new: a(2), ttl: 6 },
            Message::Neighbor { high: true },
            Message::Neighbor { high: false },
            Message::NeighborAccept,
            Message::NeighborReject,
            Message::Disconnect,
            Message::Shuffle {
                origin: "[::1]:9".parse().expect("v6"),
                ttl: 3,
                addrs: vec![a(3), a(4)],
            },
            Message::ShuffleReply { addrs: vec![] },
            Message::Gossip {
                id,
                hops: 3,
                payload: vec![1; OVERLAY_PAYLOAD_MAX],
            },
            Message::IHave {
                ids: vec![(id, 1); IHAVE_IDS_MAX],
            },
            Message::Graft {
                ids: vec![id; GRAFT_IDS_MAX],
            },
            Message::Prune,
            Message::Direct { payload: vec![] },
            Message::KeepAlive,
        ]
    }

    #[test]
    fn every_message_round_trips_and_fits_a_packet() {
        let v6: SocketAddr = "[2001:db8::1]:7946".parse().expect("v6");
        for msg in samples() {
            let bytes = msg.encode(v6);
            assert!(bytes.len() <= PACKET_BYTES_MAX, "{msg:?}");
            assert!(is_overlay_kind(bytes[2]));
            assert_eq!(Message::decode(&bytes), Ok((v6, msg.clone())));
            // Every strict prefix is refused, and never panics.
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes[..cut]).is_err(), "{msg:?} cut {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(OverlayError::Trailing(1)));
        }
    }

    #[test]
    fn bad_headers_name_the_field() {
        let ok = Message::Prune.encode(a(1));
        let mut m = ok.clone();
        m[0] = 0;
        assert_eq!(Message::decode(&m), Err(OverlayError::BadMagic(0)));
        let mut m = ok.clone();
        m[1] = 9;
        assert_eq!(
            Message::decode(&m),
            Err(OverlayError::UnsupportedVersion(9))
        );
        let mut m = ok.clone();
        m[2] = 0x01;
        assert!(matches!(
            Message::decode(&m),
            Err(OverlayError::UnknownKind { kind: 1, .. })
        ));
        let mut m = ok.clone();
        m[3] = 1;
        assert!(matches!(
            Message::decode(&m),
            Err(OverlayError::UnknownKind { flags: 1, .. })
        ));
        let mut m = ok.clone();
        m[4] = 5;
        assert_eq!(
            Message::decode(&m),
            Err(OverlayError::BadField("address family"))
        );
        let ihave = Message::IHave {
            ids: vec![(MessageId::new(1, 1), 1)],
        }
        .encode(a(1));
        let mut m = ihave.clone();
        m[11] = 0;
        assert_eq!(
            Message::decode(&m),
            Err(OverlayError::BadField("ihave count"))
        );
        m[11] = 200;
        assert_eq!(
            Message::decode(&m),
            Err(OverlayError::BadField("ihave count"))
        );
        m[11] = 2;
        assert_eq!(Message::decode(&m), Err(OverlayError::Truncated(m.len())));
        // KeepAlive (0x1d) is the last kind; the rest of the overlay's range stays reserved.
        let keepalive = Message::KeepAlive.encode(a(1));
        assert_eq!(keepalive, [0x4e, 1, 0x1d, 0, 4, 10, 0, 0, 1, 0, 1]);
        let mut m = keepalive.clone();
        m[2] = 0x1e;
        assert!(matches!(
            Message::decode(&m),
            Err(OverlayError::UnknownKind { kind: 0x1e, .. })
        ));
        let mut m = keepalive.clone();
        m[3] = 1;
        assert!(matches!(
            Message::decode(&m),
            Err(OverlayError::UnknownKind { flags: 1, .. })
        ));
        let mut m = keepalive;
        m.push(0);
        assert_eq!(Message::decode(&m), Err(OverlayError::Trailing(1)));
        let big = vec![0x4e; PACKET_BYTES_MAX + 1];
        assert!(matches!(
            Message::decode(&big),
            Err(OverlayError::TooLarge { .. })
        ));
    }

    #[test]
    fn message_id_layout_is_nonce_then_sequence() {
        let id = MessageId::new(0x0102_0304_0506_0708, 0x1112);
        assert_eq!(&id.0[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&id.0[14..], &[0x11, 0x12]);
        assert_eq!(id.to_string().len(), 32);
    }
}
