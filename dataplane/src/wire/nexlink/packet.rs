//! [`Packet`]: a zero-copy view of a NexLink frame (header and payload) in a byte buffer.

use super::fields::{
    DeliveryMode, Dtype, Ecn, Flags, FrameType, HopLimit, NodeTag, RoutingKey, SeqNumber,
    SessionId, StreamId, TensorMeta, TrafficClass,
};
use super::{Error, HEADER_LEN, VERSION};
use crate::wire::checksum;

/// Byte offsets of the header fields (`docs/nexlink.md` §3). Multi-byte fields are big-endian.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Version (high nibble) and flags (low nibble).
    pub const VER_FLAGS: usize = 0;
    /// Frame type.
    pub const FRAME_TYPE: usize = 1;
    /// Delivery mode.
    pub const DELIVERY_MODE: usize = 2;
    /// Traffic class (high 6 bits) and ECN (low 2 bits).
    pub const TCLASS_ECN: usize = 3;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 4;
    /// Reserved, always zero in version 1.
    pub const RESERVED: usize = 5;
    /// Header checksum (Internet checksum over the 64 header bytes, this field taken as 0).
    pub const CHECKSUM: Range<usize> = 6..8;
    /// Routing key, 128 bits.
    pub const ROUTING_KEY: Range<usize> = 8..24;
    /// Source node tag, 64 bits.
    pub const SRC_TAG: Range<usize> = 24..32;
    /// Destination node tag, 64 bits.
    pub const DST_TAG: Range<usize> = 32..40;
    /// Session id, 64 bits.
    pub const SESSION_ID: Range<usize> = 40..48;
    /// Stream id, 32 bits.
    pub const STREAM_ID: Range<usize> = 48..52;
    /// Sequence number, 32 bits.
    pub const SEQ_NUMBER: Range<usize> = 52..56;
    /// Payload length in bytes, 16 bits.
    pub const PAYLOAD_LEN: Range<usize> = 56..58;
    /// Tensor dtype (0: no tensor).
    pub const DTYPE: usize = 58;
    /// Tensor rank (high nibble) and alignment exponent (low nibble).
    pub const RANK_ALIGN: usize = 59;
    /// Innermost tensor dimension in elements, 32 bits (0: not given).
    pub const INNER_DIM: Range<usize> = 60..64;
    /// The whole tensor metadata block (dtype, rank/align, inner dimension).
    pub const TENSOR: Range<usize> = 58..64;
    /// The payload.
    pub const PAYLOAD: RangeFrom<usize> = 64..;
}

/// A NexLink frame in a byte buffer: the 64-byte header, then `payload_len` payload bytes.
///
/// Build one with [`Packet::new_checked`] for received bytes (it runs the structural checks,
/// so no accessor can panic afterwards), or with [`Packet::new_unchecked`] to write a header
/// into a fresh buffer with [`super::Repr::emit`] or the setters. Accessors on an unchecked
/// view panic if the buffer is shorter than the header (and [`Packet::payload`] if it is shorter
/// than the frame), as smoltcp's do.
///
/// Getters of enumerated fields return the exact [`Error`] for a code this version does not
/// define; [`super::Repr::parse`] turns a whole header into typed values and runs every
/// receive check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view over `buffer`, without any check.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view over `buffer`, after the structural checks of [`Packet::check`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// The structural checks, in this order (the spec's receive steps 1–4):
    ///
    /// 1. at least 64 bytes ([`Error::Truncated`]);
    /// 2. version 1 ([`Error::BadVersion`]): other versions may lay the header out differently,
    ///    so nothing after the version nibble is read;
    /// 3. the header checksum ([`Error::BadChecksum`]): before any field is trusted, including
    ///    the payload length;
    /// 4. the payload length fits the buffer ([`Error::PayloadLength`]).
    ///
    /// After these, every accessor is safe and the header is exactly what its sender wrote. The
    /// semantic checks (codes, reserved bits, hop limit) are [`super::Repr::parse`]'s.
    pub fn check(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len });
        }
        let version = self.version();
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let stored = self.checksum();
        let computed = self.compute_checksum();
        if stored != computed {
            return Err(Error::BadChecksum { stored, computed });
        }
        let declared = self.payload_len();
        let available = len - HEADER_LEN;
        if usize::from(declared) > available {
            return Err(Error::PayloadLength {
                declared,
                available,
            });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 64 header bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The version (high nibble of byte 0).
    pub fn version(&self) -> u8 {
        self.byte(field::VER_FLAGS) >> 4
    }

    /// The flags (low nibble of byte 0). Whether they are allowed for the frame type is
    /// [`super::Repr::parse`]'s check.
    pub fn flags(&self) -> Flags {
        Flags::from_low_nibble(self.byte(field::VER_FLAGS))
    }

    /// The frame type, or [`Error::UnknownFrameType`].
    pub fn frame_type(&self) -> Result<FrameType, Error> {
        FrameType::try_from(self.byte(field::FRAME_TYPE))
    }

    /// The delivery mode, or [`Error::UnknownDeliveryMode`].
    pub fn delivery_mode(&self) -> Result<DeliveryMode, Error> {
        DeliveryMode::try_from(self.byte(field::DELIVERY_MODE))
    }

    /// The traffic class (high 6 bits of byte 3).
    pub fn traffic_class(&self) -> TrafficClass {
        TrafficClass::from_high_bits(self.byte(field::TCLASS_ECN))
    }

    /// The ECN code point (low 2 bits of byte 3).
    pub fn ecn(&self) -> Ecn {
        Ecn::from_bits(self.byte(field::TCLASS_ECN))
    }

    /// The hop limit, or [`Error::HopLimitZero`].
    pub fn hop_limit(&self) -> Result<HopLimit, Error> {
        HopLimit::new(self.byte(field::HOP_LIMIT)).ok_or(Error::HopLimitZero)
    }

    /// The header checksum field as stored.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes(self.array(field::CHECKSUM.start))
    }

    /// The routing key.
    pub fn routing_key(&self) -> RoutingKey {
        RoutingKey(u128::from_be_bytes(self.array(field::ROUTING_KEY.start)))
    }

    /// The source node tag.
    pub fn src_tag(&self) -> NodeTag {
        NodeTag(u64::from_be_bytes(self.array(field::SRC_TAG.start)))
    }

    /// The destination node tag ([`NodeTag::UNSPECIFIED`]: any node serving the routing key).
    pub fn dst_tag(&self) -> NodeTag {
        NodeTag(u64::from_be_bytes(self.array(field::DST_TAG.start)))
    }

    /// The session id.
    pub fn session_id(&self) -> SessionId {
        SessionId(u64::from_be_bytes(self.array(field::SESSION_ID.start)))
    }

    /// The stream id.
    pub fn stream_id(&self) -> StreamId {
        StreamId(u32::from_be_bytes(self.array(field::STREAM_ID.start)))
    }

    /// The sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(u32::from_be_bytes(self.array(field::SEQ_NUMBER.start)))
    }

    /// The payload length field, in bytes.
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes(self.array(field::PAYLOAD_LEN.start))
    }

    /// The dtype: `Ok(None)` for code 0 (no tensor), or [`Error::UnknownDtype`].
    pub fn dtype(&self) -> Result<Option<Dtype>, Error> {
        match self.byte(field::DTYPE) {
            0 => Ok(None),
            code => Dtype::try_from(code).map(Some),
        }
    }

    /// The tensor rank (high nibble of byte 59).
    pub fn rank(&self) -> u8 {
        self.byte(field::RANK_ALIGN) >> 4
    }

    /// The alignment exponent (low nibble of byte 59).
    pub fn align_log2(&self) -> u8 {
        self.byte(field::RANK_ALIGN) & 0x0f
    }

    /// The innermost dimension in elements (0: not given).
    pub fn inner_dim(&self) -> u32 {
        u32::from_be_bytes(self.array(field::INNER_DIM.start))
    }

    /// The frame's length: header plus payload. Bytes after it in the buffer are not part of
    /// the frame.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The payload: exactly `payload_len` bytes after the header (trailing bytes excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.frame_len()]
    }

    /// Whether the checksum field matches the header.
    pub fn verify_checksum(&self) -> bool {
        self.checksum() == self.compute_checksum()
    }

    /// The Internet checksum of the header with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u16 {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(self.header());
        header[field::CHECKSUM].fill(0);
        checksum::checksum(&header)
    }

    fn byte(&self, offset: usize) -> u8 {
        self.buffer.as_ref()[offset]
    }

    fn array<const N: usize>(&self, start: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buffer.as_ref()[start..start + N]);
        out
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags, keeping the version nibble. Does not update the checksum.
    pub fn set_flags(&mut self, flags: Flags) {
        let byte = &mut self.buffer.as_mut()[field::VER_FLAGS];
        *byte = (*byte & 0xf0) | flags.bits();
    }

    /// Sets the frame type. Does not update the checksum.
    pub fn set_frame_type(&mut self, value: FrameType) {
        self.buffer.as_mut()[field::FRAME_TYPE] = value.into();
    }

    /// Sets the delivery mode. Does not update the checksum.
    pub fn set_delivery_mode(&mut self, value: DeliveryMode) {
        self.buffer.as_mut()[field::DELIVERY_MODE] = value.into();
    }

    /// Sets the traffic class, keeping the ECN bits. Does not update the checksum.
    pub fn set_traffic_class(&mut self, value: TrafficClass) {
        let byte = &mut self.buffer.as_mut()[field::TCLASS_ECN];
        *byte = (value.get() << 2) | (*byte & 0b11);
    }

    /// Sets the ECN code point, keeping the traffic class. Does not update the checksum (a
    /// forwarder marking congestion uses [`Packet::mark_congestion_experienced`]).
    pub fn set_ecn(&mut self, value: Ecn) {
        let byte = &mut self.buffer.as_mut()[field::TCLASS_ECN];
        *byte = (*byte & !0b11) | value.bits();
    }

    /// Sets the hop limit. Does not update the checksum (a forwarder uses
    /// [`Packet::decrement_hop_limit`]).
    pub fn set_hop_limit(&mut self, value: HopLimit) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value.get();
    }

    /// Sets the routing key. Does not update the checksum (a forwarder swapping the key uses
    /// [`Packet::rewrite_routing_key`]).
    pub fn set_routing_key(&mut self, value: RoutingKey) {
        self.buffer.as_mut()[field::ROUTING_KEY].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the source node tag. Does not update the checksum.
    pub fn set_src_tag(&mut self, value: NodeTag) {
        self.buffer.as_mut()[field::SRC_TAG].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the destination node tag. Does not update the checksum.
    pub fn set_dst_tag(&mut self, value: NodeTag) {
        self.buffer.as_mut()[field::DST_TAG].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the session id. Does not update the checksum.
    pub fn set_session_id(&mut self, value: SessionId) {
        self.buffer.as_mut()[field::SESSION_ID].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the stream id. Does not update the checksum.
    pub fn set_stream_id(&mut self, value: StreamId) {
        self.buffer.as_mut()[field::STREAM_ID].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the sequence number. Does not update the checksum.
    pub fn set_seq_number(&mut self, value: SeqNumber) {
        self.buffer.as_mut()[field::SEQ_NUMBER].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the payload length field. Does not update the checksum.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&value.to_be_bytes());
    }

    /// Writes the tensor metadata block; `None` writes zeros (no tensor). Does not update the
    /// checksum.
    pub fn set_tensor(&mut self, value: Option<TensorMeta>) {
        let mut block = [0u8; 6];
        if let Some(meta) = value {
            block[0] = meta.dtype().into();
            block[1] = (meta.rank() << 4) | meta.align_log2();
            block[2..].copy_from_slice(&meta.inner_dim().to_be_bytes());
        }
        self.buffer.as_mut()[field::TENSOR].copy_from_slice(&block);
    }

    /// Computes the header checksum and stores it.
    pub fn fill_checksum(&mut self) {
        let value = self.compute_checksum();
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// The payload, writable (exactly `payload_len` bytes after the header).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.frame_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// What a forwarder does before sending a frame on: lowers the hop limit by one and updates
    /// the checksum incrementally (RFC 1624), and returns the new hop limit.
    ///
    /// Fails, changing nothing, with [`Error::HopLimitExceeded`] if the hop limit is 1 (the
    /// frame may not cross another link; drop it) or [`Error::HopLimitZero`] if it is 0. A valid
    /// checksum stays valid and an invalid one stays invalid; the result is byte-identical to
    /// setting the field and calling [`Packet::fill_checksum`].
    pub fn decrement_hop_limit(&mut self) -> Result<HopLimit, Error> {
        let current = self.byte(field::HOP_LIMIT);
        if current == 0 {
            return Err(Error::HopLimitZero);
        }
        let lowered = HopLimit::new(current - 1).ok_or(Error::HopLimitExceeded)?;
        self.rewrite_word(field::HOP_LIMIT, |word| {
            word[0] = lowered.get();
        });
        Ok(lowered)
    }

    /// What a forwarder does when the chosen next hop swaps the routing key (a FIB next hop with
    /// a rewrite, `docs/nexlink.md` §7 item 3): writes `value` into the routing-key field and
    /// updates the checksum incrementally over the field's eight 16-bit words (RFC 1624 eqn. 3).
    ///
    /// A valid checksum stays valid and an invalid one stays invalid; the result is
    /// byte-identical to [`Packet::set_routing_key`] followed by [`Packet::fill_checksum`], at
    /// the cost of 16 word additions instead of 32.
    pub fn rewrite_routing_key(&mut self, value: RoutingKey) {
        let old: [u8; 16] = self.array(field::ROUTING_KEY.start);
        let new = value.0.to_be_bytes();
        let patched = checksum::update_words(self.checksum(), &old, &new);
        let buffer = self.buffer.as_mut();
        buffer[field::ROUTING_KEY].copy_from_slice(&new);
        buffer[field::CHECKSUM].copy_from_slice(&patched.to_be_bytes());
    }

    /// What a congested forwarder does instead of dropping an ECN-capable frame: sets ECN to
    /// CE and updates the checksum incrementally (RFC 1624).
    ///
    /// Returns `false`, changing nothing, for a not-ECN-capable frame (the forwarder must drop
    /// it instead); `true` otherwise (including a frame already marked CE, left unchanged).
    pub fn mark_congestion_experienced(&mut self) -> bool {
        match self.ecn() {
            Ecn::NotEct => false,
            Ecn::Ce => true,
            Ecn::Ect0 | Ecn::Ect1 => {
                self.rewrite_word(field::DELIVERY_MODE, |word| {
                    word[1] |= Ecn::Ce.bits();
                });
                true
            }
        }
    }

    /// Changes the 16-bit word at the even offset `start` with `change` and patches the
    /// checksum for the difference.
    fn rewrite_word(&mut self, start: usize, change: impl FnOnce(&mut [u8; 2])) {
        debug_assert!(start.is_multiple_of(2) && start != field::CHECKSUM.start);
        let mut word: [u8; 2] = self.array(start);
        let old = u16::from_be_bytes(word);
        change(&mut word);
        let new = u16::from_be_bytes(word);
        let patched = checksum::update(self.checksum(), old, new);
        let buffer = self.buffer.as_mut();
        buffer[start..start + 2].copy_from_slice(&word);
        buffer[field::CHECKSUM].copy_from_slice(&patched.to_be_bytes());
    }

    /// Writes byte 0 for version 1 with `flags`, and clears the reserved byte. Used by emit.
    pub(super) fn write_version_and_reserved(&mut self, flags: Flags) {
        let buffer = self.buffer.as_mut();
        buffer[field::VER_FLAGS] = (VERSION << 4) | flags.bits();
        buffer[field::RESERVED] = 0;
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
