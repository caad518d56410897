//! [`Repr`]: a NexLink header parsed into typed values.

use super::fields::{
    DeliveryMode, Dtype, Ecn, Flags, FrameType, HopLimit, NodeTag, RoutingKey, SeqNumber,
    SessionId, StreamId, TensorMeta, TrafficClass,
};
use super::packet::{Packet, field};
use super::{Error, HEADER_LEN};

/// A NexLink header as typed values. [`Repr::parse`] is the only way received bytes become a
/// `Repr`, and it runs every receive check; [`Repr::emit`] writes one back, byte for byte.
///
/// Every field type holds only values its wire field can carry. The rules that tie fields
/// together (flags and tensor metadata allowed per frame type, whole tensor elements per frame)
/// are checked by `emit`, which refuses a `Repr` that receivers would drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// What the frame is.
    pub frame_type: FrameType,
    /// Header flags; only those in `frame_type.allowed_flags()` may be set.
    pub flags: Flags,
    /// The delivery mode of the stream the frame belongs to.
    pub delivery_mode: DeliveryMode,
    /// Queueing class.
    pub traffic_class: TrafficClass,
    /// ECN code point.
    pub ecn: Ecn,
    /// Links the frame may still cross.
    pub hop_limit: HopLimit,
    /// What forwarders look up.
    pub routing_key: RoutingKey,
    /// The sending node.
    pub src: NodeTag,
    /// The node the frame is for, or [`NodeTag::UNSPECIFIED`].
    pub dst: NodeTag,
    /// The NexStream session.
    pub session: SessionId,
    /// The stream within the session.
    pub stream: StreamId,
    /// The sequence number (NexStream's).
    pub seq: SeqNumber,
    /// Payload bytes after the header.
    pub payload_len: u16,
    /// Tensor metadata; only data frames carry it.
    pub tensor: Option<TensorMeta>,
}

impl Repr {
    /// Parses a header, running every receive check in the spec's order (`docs/nexlink.md` §6)
    /// and returning the first failure:
    ///
    /// 1–4. the structural checks of [`Packet::check`] (length, version, checksum, payload
    ///    length), so `packet` may come from [`Packet::new_unchecked`];
    /// 5. frame type known ([`Error::UnknownFrameType`]);
    /// 6. delivery mode known ([`Error::UnknownDeliveryMode`]);
    /// 7. hop limit not 0 ([`Error::HopLimitZero`]);
    /// 8. reserved bits zero ([`Error::Reserved`]): flags the frame type does not allow, byte 5,
    ///    the tensor block of a non-data frame or of a data frame with dtype 0, and the inner
    ///    dimension of a rank-0 tensor;
    /// 9. dtype known ([`Error::UnknownDtype`]);
    /// 10. a tensor payload holds whole elements ([`Error::TensorPayloadLength`]).
    ///
    /// On success the payload ([`Packet::payload`]) is present and emitting the result writes
    /// the same 64 header bytes.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check()?;
        let frame_type = packet.frame_type()?;
        let delivery_mode = packet.delivery_mode()?;
        let hop_limit = packet.hop_limit()?;
        let flags = packet.flags();
        if !frame_type.allowed_flags().contains(flags) {
            return Err(Error::Reserved {
                offset: field::VER_FLAGS,
            });
        }
        let header = packet.header();
        if header[field::RESERVED] != 0 {
            return Err(Error::Reserved {
                offset: field::RESERVED,
            });
        }
        let payload_len = packet.payload_len();
        let tensor = parse_tensor(packet, frame_type, payload_len)?;
        Ok(Repr {
            frame_type,
            flags,
            delivery_mode,
            traffic_class: packet.traffic_class(),
            ecn: packet.ecn(),
            hop_limit,
            routing_key: packet.routing_key(),
            src: packet.src_tag(),
            dst: packet.dst_tag(),
            session: packet.session_id(),
            stream: packet.stream_id(),
            seq: packet.seq_number(),
            payload_len,
            tensor,
        })
    }

    /// Header plus payload: the buffer length this header describes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Checks the cross-field rules a receiver enforces, in the order `parse` checks them:
    /// flags allowed for the frame type and tensor metadata only on data frames
    /// ([`Error::Reserved`]), whole tensor elements ([`Error::TensorPayloadLength`]).
    pub fn check(&self) -> Result<(), Error> {
        if !self.frame_type.allowed_flags().contains(self.flags) {
            return Err(Error::Reserved {
                offset: field::VER_FLAGS,
            });
        }
        if let Some(meta) = self.tensor {
            if !self.frame_type.carries_tensor() {
                return Err(Error::Reserved {
                    offset: field::DTYPE,
                });
            }
            check_whole_elements(meta, self.payload_len)?;
        }
        Ok(())
    }

    /// Writes the header into the first 64 bytes of `packet` and fills the checksum. The
    /// payload is not touched (write it before or after; the checksum covers the header only).
    ///
    /// Fails, writing nothing, if the buffer is shorter than the header
    /// ([`Error::Truncated`]) or if [`Repr::check`] fails.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        let len = packet.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len });
        }
        self.check()?;
        packet.write_version_and_reserved(self.flags);
        packet.set_frame_type(self.frame_type);
        packet.set_delivery_mode(self.delivery_mode);
        packet.set_traffic_class(self.traffic_class);
        packet.set_ecn(self.ecn);
        packet.set_hop_limit(self.hop_limit);
        packet.set_routing_key(self.routing_key);
        packet.set_src_tag(self.src);
        packet.set_dst_tag(self.dst);
        packet.set_session_id(self.session);
        packet.set_stream_id(self.stream);
        packet.set_seq_number(self.seq);
        packet.set_payload_len(self.payload_len);
        packet.set_tensor(self.tensor);
        packet.fill_checksum();
        Ok(())
    }
}

/// Steps 8 (tensor part), 9 and 10 of [`Repr::parse`].
fn parse_tensor<T: AsRef<[u8]>>(
    packet: &Packet<T>,
    frame_type: FrameType,
    payload_len: u16,
) -> Result<Option<TensorMeta>, Error> {
    let block = &packet.header()[field::TENSOR];
    let dtype_code = block[0];
    if !frame_type.carries_tensor() || dtype_code == 0 {
        // The whole block is reserved: report the first byte with a bit set.
        return match block.iter().position(|b| *b != 0) {
            Some(i) => Err(Error::Reserved {
                offset: field::TENSOR.start + i,
            }),
            None => Ok(None),
        };
    }
    let rank = packet.rank();
    let inner_dim = packet.inner_dim();
    if rank == 0 && inner_dim != 0 {
        return Err(Error::Reserved {
            offset: field::INNER_DIM.start,
        });
    }
    let dtype = Dtype::try_from(dtype_code)?;
    // rank and align_log2 are nibbles (<= 15) and a rank-0 tensor has inner_dim 0 (checked
    // above), so the constructor's conditions hold.
    let meta =
        TensorMeta::new(dtype, rank, packet.align_log2(), inner_dim).ok_or(Error::Reserved {
            offset: field::RANK_ALIGN,
        })?;
    check_whole_elements(meta, payload_len)?;
    Ok(Some(meta))
}

fn check_whole_elements(meta: TensorMeta, payload_len: u16) -> Result<(), Error> {
    if !payload_len.is_multiple_of(meta.dtype().element_bytes()) {
        return Err(Error::TensorPayloadLength {
            dtype: meta.dtype(),
            payload_len,
        });
    }
    Ok(())
}
