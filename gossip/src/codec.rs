//! The wire codec for SWIM messages: bincode (serde) with a size limit, plus the metadata limits
//! checked on every identity that is decoded (identities use their canonical encoding,
//! [`MemberId::wire`], as a byte string).

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};

use crate::id::MemberId;

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
    /// bincode rejected the bytes (truncated, bad tag, over the limit), or an identity in them
    /// is not a valid canonical identity (bad encoding, metadata over a limit: see
    /// [`crate::IdDecodeError`], whose message the error carries).
    #[error("malformed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// Decodes one `T` from the front of `buf`, borrowing from it (so identities the thread already
/// holds are found by their bytes, without allocating) when the bytes are contiguous.
fn decode_front<T: serde::de::DeserializeOwned>(
    config: Limited,
    mut buf: impl Buf,
) -> Result<T, CodecError> {
    if buf.chunk().len() == buf.remaining() {
        let (value, used) = bincode::serde::borrow_decode_from_slice::<T, _>(buf.chunk(), config)?;
        buf.advance(used);
        Ok(value)
    } else {
        Ok(bincode::serde::decode_from_std_read(
            &mut buf.reader(),
            config,
        )?)
    }
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
        // Every identity in the header is checked as it is decoded (`MemberId::from_wire`).
        decode_front(self.0, buf)
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
        decode_front(self.0, buf)
    }
}
