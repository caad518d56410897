//! The wire codec for SWIM messages: bincode (serde) with a size limit, plus the metadata limits
//! checked on every identity that is decoded.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Message};

use crate::id::{MemberId, MetaError};

/// Largest datagram the membership layer sends or accepts, in bytes.
pub const PACKET_BYTES_MAX: usize = 1400;

type Limited = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<PACKET_BYTES_MAX>,
>;

/// A bincode codec bounded by [`PACKET_BYTES_MAX`] (so no length prefix can make it allocate more),
/// rejecting identities that break the [`crate::MemberMeta`] limits.
#[derive(Clone, Copy)]
pub struct WireCodec(Limited);

impl std::fmt::Debug for WireCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireCodec(bincode, limit {PACKET_BYTES_MAX})")
    }
}

impl Default for WireCodec {
    fn default() -> Self {
        WireCodec(bincode::config::standard().with_limit::<PACKET_BYTES_MAX>())
    }
}

/// Why a datagram could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// bincode could not encode the value (it exceeds the packet limit).
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// bincode rejected the bytes (truncated, bad tag, over the limit).
    #[error("malformed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// An identity in the message breaks a metadata limit.
    #[error("member metadata: {0}")]
    Meta(#[from] MetaError),
}

fn check_id(id: &MemberId) -> Result<(), CodecError> {
    // A zero node id is the placeholder used to announce to a seed; it carries no metadata.
    if id.node_id().0 == [0; 32] && id.meta() == &crate::MemberMeta::default() {
        return Ok(());
    }
    id.meta().check().map_err(CodecError::from)
}

impl Codec<MemberId> for WireCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        bincode::serde::encode_into_std_write(header, &mut buf.writer(), self.0)?;
        Ok(())
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<MemberId>, Self::Error> {
        let header: Header<MemberId> =
            bincode::serde::decode_from_std_read(&mut buf.reader(), self.0)?;
        check_id(&header.src)?;
        check_id(&header.dst)?;
        match &header.message {
            Message::PingReq { target, .. } | Message::IndirectAck { target, .. } => {
                check_id(target)?
            }
            Message::IndirectPing { origin, .. } | Message::ForwardedAck { origin, .. } => {
                check_id(origin)?
            }
            _ => {}
        }
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        bincode::serde::encode_into_std_write(member, &mut buf.writer(), self.0)?;
        Ok(())
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<MemberId>, Self::Error> {
        let member: Member<MemberId> =
            bincode::serde::decode_from_std_read(&mut buf.reader(), self.0)?;
        check_id(member.id())?;
        Ok(member)
    }
}
