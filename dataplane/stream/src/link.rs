//! NexLink carriage: each QUIC datagram in one NexLink frame of type `Transport`.
//!
//! A NexStream datagram on the wire is a 64-byte NexLink header (`docs/nexlink.md`) followed by
//! one QUIC datagram of at most [`crate::QUIC_DATAGRAM_BYTES_MAX`] bytes, so that frame, UDP and
//! IPv4 headers fit a 1500-byte MTU. The header addresses the frame like any other data-plane
//! frame — routing key, source and destination node tags, hop limit — so it passes through
//! NexLink forwarders and their forwarding tables unchanged; the transport's session and
//! sequence fields carry the NexStream session id and a per-session packet counter (for
//! tracing; QUIC has its own packet numbers inside the encryption). Receivers run every NexLink
//! receive check (`Repr::parse`) and accept only `Transport` frames.

use nexus_dataplane::wire::nexlink::{
    self, DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr,
    RoutingKey, SeqNumber, SessionId, StreamId, TrafficClass,
};

/// The hop limit NexStream frames start with (RFC-style default of `docs/nexlink.md` §4.5).
pub const HOP_LIMIT: u8 = 64;

/// A frame could not be built or was refused. Nothing was delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The NexLink receive checks failed (reason as in `docs/nexlink.md` §6).
    #[error("NexLink: {0}")]
    NexLink(#[from] nexlink::Error),
    /// A valid NexLink frame of another type: not for the transport.
    #[error("not a transport frame ({0:?})")]
    NotTransport(FrameType),
    /// The QUIC datagram is larger than a frame can carry.
    #[error("transport packet of {0} bytes does not fit a frame")]
    TooLarge(usize),
}

/// The addressing fields of the frames one session sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkAddress {
    /// What forwarders look up: the destination node's session key ([`session_key`]).
    pub routing_key: RoutingKey,
    /// The sending node.
    pub src: NodeTag,
    /// The receiving node.
    pub dst: NodeTag,
    /// The NexStream session id (sender's numbering).
    pub session: u64,
}

/// The low 64 bits of every session key: `NXSTREAM` in ASCII.
pub const SESSION_KEY_TAG: u64 = 0x4e58_5354_5245_414d;

/// The routing key of the NexStream endpoint of the node with tag `node`: the node tag in the
/// high 64 bits, [`SESSION_KEY_TAG`] in the low 64. Derived from the tag (not the whole node
/// id) so that a receiver can route its answers by the Source Node Tag of a frame before the
/// handshake has told it the peer's full key.
pub fn session_key(node: NodeTag) -> RoutingKey {
    RoutingKey(u128::from(node.0) << 64 | u128::from(SESSION_KEY_TAG))
}

/// [`session_key`] of a node id.
pub fn session_key_of(node_id: &[u8; 32]) -> RoutingKey {
    session_key(NodeTag::from_node_id(node_id))
}

/// Appends the frame carrying `quic` to `out`.
pub fn encapsulate(
    addr: &LinkAddress,
    seq: u32,
    quic: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let payload_len = u16::try_from(quic.len())
        .ok()
        .filter(|&l| usize::from(l) + HEADER_LEN <= usize::from(u16::MAX))
        .ok_or(LinkError::TooLarge(quic.len()))?;
    let repr = Repr {
        frame_type: FrameType::Transport,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::ReliableOrdered,
        // Class 0 always exists; the unwrap-free form keeps the constructor's check.
        traffic_class: TrafficClass::new(0).ok_or(LinkError::TooLarge(quic.len()))?,
        ecn: Ecn::NotEct,
        hop_limit: HopLimit::new(HOP_LIMIT).ok_or(LinkError::TooLarge(quic.len()))?,
        routing_key: addr.routing_key,
        src: addr.src,
        dst: addr.dst,
        session: SessionId(addr.session),
        stream: StreamId(0),
        seq: SeqNumber(seq),
        payload_len,
        tensor: None,
    };
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    out.extend_from_slice(quic);
    repr.emit(&mut Packet::new_unchecked(&mut out[start..]))?;
    Ok(())
}

/// Checks a received frame and returns its header and the QUIC datagram inside.
pub fn decapsulate(frame: &[u8]) -> Result<(Repr, &[u8]), LinkError> {
    let packet = Packet::new_unchecked(frame);
    let repr = Repr::parse(&packet)?;
    if repr.frame_type != FrameType::Transport {
        return Err(LinkError::NotTransport(repr.frame_type));
    }
    let end = HEADER_LEN + usize::from(repr.payload_len);
    Ok((repr, &frame[HEADER_LEN..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> LinkAddress {
        LinkAddress {
            routing_key: session_key_of(&[0xab; 32]),
            src: NodeTag(1),
            dst: NodeTag(2),
            session: 9,
        }
    }

    #[test]
    fn round_trip_ignores_trailing_bytes() {
        let mut out = vec![];
        encapsulate(&addr(), 5, b"quic packet", &mut out).expect("fits");
        assert_eq!(out.len(), HEADER_LEN + 11);
        out.extend_from_slice(b"trailer");
        let (repr, quic) = decapsulate(&out).expect("valid");
        assert_eq!(quic, b"quic packet");
        assert_eq!(repr.seq, SeqNumber(5));
        assert_eq!(repr.session, SessionId(9));
        assert_eq!(repr.routing_key, addr().routing_key);
    }

    #[test]
    fn refuses_other_frame_types_corruption_and_oversize() {
        let mut out = vec![];
        encapsulate(&addr(), 1, b"x", &mut out).expect("fits");
        let mut other = out.clone();
        other[1] = FrameType::Data as u8;
        // The checksum no longer matches: refused by the NexLink checks first.
        assert!(matches!(decapsulate(&other), Err(LinkError::NexLink(_))));
        let mut data = vec![];
        let repr = Repr {
            frame_type: FrameType::Data,
            ..decapsulate(&out).expect("valid").0
        };
        data.resize(HEADER_LEN + 1, 0);
        repr.emit(&mut Packet::new_unchecked(&mut data[..]))
            .expect("emit data");
        assert_eq!(
            decapsulate(&data).map(|_| ()),
            Err(LinkError::NotTransport(FrameType::Data))
        );
        assert!(decapsulate(&out[..HEADER_LEN]).is_err());
        assert!(decapsulate(&[]).is_err());
        let big = vec![0u8; usize::from(u16::MAX)];
        assert_eq!(
            encapsulate(&addr(), 1, &big, &mut Vec::new()),
            Err(LinkError::TooLarge(big.len()))
        );
    }

    #[test]
    fn session_keys_carry_the_node_tag() {
        assert_eq!(session_key(NodeTag(0)).0, u128::from(SESSION_KEY_TAG));
        assert_eq!(session_key(NodeTag(7)).0 >> 64, 7);
        assert_ne!(session_key_of(&[1; 32]), session_key_of(&[2; 32]));
        assert_eq!(
            session_key_of(&[1; 32]),
            session_key(NodeTag::from_node_id(&[1; 32]))
        );
    }
}
