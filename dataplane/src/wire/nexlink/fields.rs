//! Typed values of the NexLink header fields: newtypes for identifiers, enums for enumerated
//! fields, and range-checked wrappers for fields narrower than their Rust type.
//!
//! Every type here can only hold a value that fits its wire field, so a [`super::Repr`] built
//! from them always emits a header whose fields hold what the Repr says.

use core::fmt;
use core::num::NonZeroU8;
use core::ops::BitOr;

use super::Error;

/// The 128-bit routing key: a hash of a canonical capability class. Forwarders look it up
/// (exact match) in the forwarding table to find the next-hop group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RoutingKey(pub u128);

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A compact 64-bit stand-in for a 32-byte node id (an Ed25519 public key): its first 8 bytes,
/// read big-endian, so the tag's wire bytes are the node id's first 8 bytes.
///
/// A tag names a node; it does not authenticate one (see the spec's security section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeTag(pub u64);

impl NodeTag {
    /// Tag 0: in the destination field, "any node that serves the routing key" (the frame is
    /// not yet pinned to an endpoint). A node whose id starts with 8 zero bytes (probability
    /// 2^-64) cannot be told apart from it.
    pub const UNSPECIFIED: NodeTag = NodeTag(0);

    /// The tag of the node with this 32-byte id (Ed25519 public key).
    pub fn from_node_id(node_id: &[u8; 32]) -> NodeTag {
        let mut first = [0u8; 8];
        first.copy_from_slice(&node_id[..8]);
        NodeTag(u64::from_be_bytes(first))
    }

    /// Whether this is [`NodeTag::UNSPECIFIED`].
    pub const fn is_unspecified(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A NexStream session, chosen by the session's initiator; 0 means "no session" (probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionId(pub u64);

/// A stream within a session; stream 0 is the session's own control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(pub u32);

/// A 32-bit sequence number, interpreted by NexStream (per stream, modulo 2^32). The wire
/// layer carries it and does not compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SeqNumber(pub u32);

/// A hop limit of at least 1: the number of links the frame may still cross.
///
/// A frame on the wire never carries 0; a forwarder that would have to send a frame with hop
/// limit 0 drops it instead ([`super::Packet::decrement_hop_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HopLimit(NonZeroU8);

impl HopLimit {
    /// What senders use unless configured otherwise.
    pub const DEFAULT: HopLimit = HopLimit::from_const(64);
    /// The largest hop limit.
    pub const MAX: HopLimit = HopLimit(NonZeroU8::MAX);

    /// `None` for 0.
    pub const fn new(value: u8) -> Option<HopLimit> {
        match NonZeroU8::new(value) {
            Some(v) => Some(HopLimit(v)),
            None => None,
        }
    }

    /// The hop limit as a number (1..=255).
    pub const fn get(self) -> u8 {
        self.0.get()
    }

    /// For constants only: a zero fails the build, not a run.
    const fn from_const(value: u8) -> HopLimit {
        match HopLimit::new(value) {
            Some(h) => h,
            None => panic!("a hop limit constant must not be 0"),
        }
    }
}

/// The traffic class: 6 bits, the high bits of header byte 3 (like the DSCP in IPv4's DS
/// field). Forwarders map it to a queue; the values are the operator's, not the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TrafficClass(u8);

impl TrafficClass {
    /// The largest traffic class (63).
    pub const MAX: TrafficClass = TrafficClass(0x3f);

    /// `None` above 63.
    pub const fn new(value: u8) -> Option<TrafficClass> {
        if value <= Self::MAX.0 {
            Some(TrafficClass(value))
        } else {
            None
        }
    }

    /// The class as a number (0..=63).
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The class in the high 6 bits of `byte` (header byte 3).
    pub(super) const fn from_high_bits(byte: u8) -> TrafficClass {
        TrafficClass(byte >> 2)
    }
}

/// Explicit Congestion Notification, the low 2 bits of header byte 3, with RFC 3168's code
/// points so that switches that mark IP ECN can mark NexLink the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Ecn {
    /// `00`: the sender's congestion control does not react to marks; congested forwarders drop.
    #[default]
    NotEct = 0,
    /// `01`: ECN-capable transport, ECT(1) (L4S).
    Ect1 = 1,
    /// `10`: ECN-capable transport, ECT(0).
    Ect0 = 2,
    /// `11`: congestion experienced, set by a forwarder instead of dropping.
    Ce = 3,
}

impl Ecn {
    /// The code point in the low 2 bits of `bits` (the other bits are ignored).
    pub const fn from_bits(bits: u8) -> Ecn {
        match bits & 0b11 {
            0 => Ecn::NotEct,
            1 => Ecn::Ect1,
            2 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    /// The 2-bit code point.
    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// The four header flags, the low nibble of header byte 0. Which flags a frame may carry
/// depends on its type ([`FrameType::allowed_flags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const EMPTY: Flags = Flags(0);
    /// `B`: the first frame of an application message (a tensor, a request). Data only.
    pub const BEGIN: Flags = Flags(0x8);
    /// `E`: the last frame of an application message. Data only.
    pub const END: Flags = Flags(0x4);
    /// `F`: the last frame the sender sends on this stream. Data only.
    pub const FIN: Flags = Flags(0x2);
    /// `I`: the receiver should acknowledge without delay. Data and Control.
    pub const ACK_REQUESTED: Flags = Flags(0x1);
    /// All four flags.
    pub const ALL: Flags = Flags(0xf);

    /// `None` if `bits` has a bit above the low nibble.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & !Self::ALL.0 == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The flags in the low nibble of `byte` (header byte 0).
    pub(super) const fn from_low_nibble(byte: u8) -> Flags {
        Flags(byte & Self::ALL.0)
    }

    /// The 4 flag bits (0..=15).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags set in either.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// The flags of `self` that are not in `other`.
    pub const fn difference(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// What a frame is. Header byte 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrameType {
    /// Application data on a stream.
    Data = 0x01,
    /// An acknowledgement (the payload format is NexStream's).
    Ack = 0x02,
    /// Session or stream control: open, close, reset, flow control (payload: NexStream's).
    Control = 0x03,
    /// A liveness, RTT or path-MTU probe; answered with a probe reply.
    Probe = 0x04,
    /// The answer to a probe.
    ProbeReply = 0x05,
    /// One NexStream transport packet (a QUIC datagram, `docs/protocols/nexstream.md`); the
    /// transport's own acknowledgements, control and stream data are inside it, encrypted.
    Transport = 0x06,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [FrameType; 6] = [
        FrameType::Data,
        FrameType::Ack,
        FrameType::Control,
        FrameType::Probe,
        FrameType::ProbeReply,
        FrameType::Transport,
    ];

    /// The flags this frame type may carry; the others are reserved (must be zero) for it.
    pub const fn allowed_flags(self) -> Flags {
        match self {
            FrameType::Data => Flags::ALL,
            FrameType::Control => Flags::ACK_REQUESTED,
            FrameType::Ack | FrameType::Probe | FrameType::ProbeReply | FrameType::Transport => {
                Flags::EMPTY
            }
        }
    }

    /// Whether this frame type may carry tensor metadata (only data frames do; on the others
    /// the tensor fields are reserved).
    pub const fn carries_tensor(self) -> bool {
        matches!(self, FrameType::Data)
    }
}

impl TryFrom<u8> for FrameType {
    type Error = Error;

    fn try_from(value: u8) -> Result<FrameType, Error> {
        match value {
            0x01 => Ok(FrameType::Data),
            0x02 => Ok(FrameType::Ack),
            0x03 => Ok(FrameType::Control),
            0x04 => Ok(FrameType::Probe),
            0x05 => Ok(FrameType::ProbeReply),
            0x06 => Ok(FrameType::Transport),
            other => Err(Error::UnknownFrameType(other)),
        }
    }
}

impl From<FrameType> for u8 {
    fn from(value: FrameType) -> u8 {
        value as u8
    }
}

/// NexStream's delivery mode for the stream the frame belongs to (DESIGN.md §2). Header byte 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryMode {
    /// Every frame delivered, in sequence order.
    ReliableOrdered = 0x01,
    /// Every frame delivered, in arrival order.
    ReliableUnordered = 0x02,
    /// Frames may be lost; none is retransmitted. Probes use this mode.
    BestEffort = 0x03,
    /// Frames are delivered with a target probability (parameters negotiated per stream).
    Probabilistic = 0x04,
}

impl DeliveryMode {
    /// Every delivery mode, in code order.
    pub const ALL: [DeliveryMode; 4] = [
        DeliveryMode::ReliableOrdered,
        DeliveryMode::ReliableUnordered,
        DeliveryMode::BestEffort,
        DeliveryMode::Probabilistic,
    ];
}

impl TryFrom<u8> for DeliveryMode {
    type Error = Error;

    fn try_from(value: u8) -> Result<DeliveryMode, Error> {
        match value {
            0x01 => Ok(DeliveryMode::ReliableOrdered),
            0x02 => Ok(DeliveryMode::ReliableUnordered),
            0x03 => Ok(DeliveryMode::BestEffort),
            0x04 => Ok(DeliveryMode::Probabilistic),
            other => Err(Error::UnknownDeliveryMode(other)),
        }
    }
}

impl From<DeliveryMode> for u8 {
    fn from(value: DeliveryMode) -> u8 {
        value as u8
    }
}

/// The element type of a tensor payload: safetensors' set. Header byte 58; code 0 means "no
/// tensor" and is not a `Dtype`. The high nibble groups the codes (0 floats, 1 signed, 2
/// unsigned, 3 boolean) so that a P4 ternary match can select a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtype {
    /// IEEE 754 binary64.
    F64 = 0x01,
    /// IEEE 754 binary32.
    F32 = 0x02,
    /// IEEE 754 binary16.
    F16 = 0x03,
    /// bfloat16.
    Bf16 = 0x04,
    /// 8-bit float, 4 exponent and 3 mantissa bits (OCP FP8 E4M3).
    F8E4M3 = 0x05,
    /// 8-bit float, 5 exponent and 2 mantissa bits (OCP FP8 E5M2).
    F8E5M2 = 0x06,
    /// Signed 64-bit integer.
    I64 = 0x10,
    /// Signed 32-bit integer.
    I32 = 0x11,
    /// Signed 16-bit integer.
    I16 = 0x12,
    /// Signed 8-bit integer.
    I8 = 0x13,
    /// Unsigned 64-bit integer.
    U64 = 0x20,
    /// Unsigned 32-bit integer.
    U32 = 0x21,
    /// Unsigned 16-bit integer.
    U16 = 0x22,
    /// Unsigned 8-bit integer.
    U8 = 0x23,
    /// Boolean, one byte per element (0 or 1).
    Bool = 0x30,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 15] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U64,
        Dtype::U32,
        Dtype::U16,
        Dtype::U8,
        Dtype::Bool,
    ];

    /// Bytes per element. A frame carrying this dtype carries a whole number of elements.
    pub const fn element_bytes(self) -> u16 {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::Bf16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

impl TryFrom<u8> for Dtype {
    type Error = Error;

    fn try_from(value: u8) -> Result<Dtype, Error> {
        Dtype::ALL
            .into_iter()
            .find(|d| *d as u8 == value)
            .ok_or(Error::UnknownDtype(value))
    }
}

impl From<Dtype> for u8 {
    fn from(value: Dtype) -> u8 {
        value as u8
    }
}

/// Tensor metadata of a data frame: what the payload's elements are and a hint for placing
/// them. Header bytes 58..64.
///
/// The full shape travels in the payload of the message's first frame (NexAPI's business); the
/// header carries what a NIC or switch can use per frame without reading the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorMeta {
    dtype: Dtype,
    rank: u8,
    align_log2: u8,
    inner_dim: u32,
}

impl TensorMeta {
    /// The largest rank the 4-bit field holds.
    pub const RANK_MAX: u8 = 15;
    /// The largest alignment exponent the 4-bit field holds (2^15 = 32 KiB).
    pub const ALIGN_LOG2_MAX: u8 = 15;

    /// Tensor metadata, or `None` if `rank` or `align_log2` is above 15, or if a scalar
    /// (`rank` 0) is given an innermost dimension (`inner_dim` must then be 0).
    ///
    /// - `rank`: number of dimensions, 0 for a scalar;
    /// - `align_log2`: the receiver should place the payload at an address aligned to
    ///   `2^align_log2` bytes (0: no preference);
    /// - `inner_dim`: elements in the innermost (fastest-varying) dimension, 0 if not given.
    pub const fn new(dtype: Dtype, rank: u8, align_log2: u8, inner_dim: u32) -> Option<TensorMeta> {
        if rank > Self::RANK_MAX
            || align_log2 > Self::ALIGN_LOG2_MAX
            || (rank == 0 && inner_dim != 0)
        {
            return None;
        }
        Some(TensorMeta {
            dtype,
            rank,
            align_log2,
            inner_dim,
        })
    }

    /// The element type.
    pub const fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Number of dimensions (0..=15).
    pub const fn rank(&self) -> u8 {
        self.rank
    }

    /// Requested payload alignment, as log2 of bytes (0..=15).
    pub const fn align_log2(&self) -> u8 {
        self.align_log2
    }

    /// Elements in the innermost dimension; 0 if not given.
    pub const fn inner_dim(&self) -> u32 {
        self.inner_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tag_is_the_first_eight_bytes_big_endian() {
        let mut id = [0xeeu8; 32];
        id[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(NodeTag::from_node_id(&id), NodeTag(0x0102_0304_0506_0708));
        assert!(NodeTag::from_node_id(&[0; 32]).is_unspecified());
    }

    #[test]
    fn narrow_fields_reject_values_that_do_not_fit() {
        assert_eq!(HopLimit::new(0), None);
        assert_eq!(HopLimit::new(1).map(HopLimit::get), Some(1));
        assert_eq!(HopLimit::DEFAULT.get(), 64);
        assert_eq!(HopLimit::MAX.get(), 255);
        assert_eq!(TrafficClass::new(63).map(TrafficClass::get), Some(63));
        assert_eq!(TrafficClass::new(64), None);
        assert_eq!(Flags::from_bits(0x0f), Some(Flags::ALL));
        assert_eq!(Flags::from_bits(0x10), None);
    }

    #[test]
    fn ecn_code_points_round_trip() {
        for bits in 0..4u8 {
            assert_eq!(Ecn::from_bits(bits).bits(), bits);
        }
        assert_eq!(Ecn::from_bits(0b111), Ecn::Ce);
    }

    #[test]
    fn enum_codes_round_trip_and_unknown_codes_are_named() {
        for code in 0..=u8::MAX {
            match FrameType::try_from(code) {
                Ok(t) => assert_eq!(u8::from(t), code),
                Err(e) => assert_eq!(e, Error::UnknownFrameType(code)),
            }
            match DeliveryMode::try_from(code) {
                Ok(m) => assert_eq!(u8::from(m), code),
                Err(e) => assert_eq!(e, Error::UnknownDeliveryMode(code)),
            }
            match Dtype::try_from(code) {
                Ok(d) => assert_eq!(u8::from(d), code),
                Err(e) => assert_eq!(e, Error::UnknownDtype(code)),
            }
        }
        assert_eq!(FrameType::try_from(0), Err(Error::UnknownFrameType(0)));
        assert_eq!(
            DeliveryMode::try_from(0),
            Err(Error::UnknownDeliveryMode(0))
        );
        assert_eq!(Dtype::try_from(0), Err(Error::UnknownDtype(0)));
    }

    #[test]
    fn flags_allowed_per_frame_type() {
        assert_eq!(FrameType::Data.allowed_flags(), Flags::ALL);
        assert_eq!(FrameType::Control.allowed_flags(), Flags::ACK_REQUESTED);
        for t in [
            FrameType::Ack,
            FrameType::Probe,
            FrameType::ProbeReply,
            FrameType::Transport,
        ] {
            assert!(t.allowed_flags().is_empty());
            assert!(!t.carries_tensor());
        }
        let f = Flags::BEGIN | Flags::END;
        assert!(f.contains(Flags::BEGIN) && !f.contains(Flags::FIN));
        assert_eq!(f.difference(Flags::BEGIN), Flags::END);
    }

    #[test]
    fn tensor_meta_rejects_out_of_range_fields() {
        assert!(TensorMeta::new(Dtype::F32, 15, 15, u32::MAX).is_some());
        assert!(TensorMeta::new(Dtype::F32, 16, 0, 0).is_none());
        assert!(TensorMeta::new(Dtype::F32, 1, 16, 0).is_none());
        assert!(TensorMeta::new(Dtype::F32, 0, 0, 1).is_none());
        assert!(TensorMeta::new(Dtype::F32, 0, 0, 0).is_some());
    }
}
