//! Why a NexLink header was refused.

use super::fields::Dtype;

/// Why a NexLink header was refused, or why a header operation could not be done.
///
/// No variant means that anything changed: decoding only reads, and the operations that write
/// ([`super::Repr::emit`], [`super::Packet::decrement_hop_limit`]) check before they write.
/// The receive checks run in a fixed order (`docs/nexlink.md` §6) and report the first failure;
/// [`Error::reason`] names each variant with a stable string for drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the 64-byte header.
    #[error("truncated: {len} bytes, a NexLink header is 64")]
    Truncated {
        /// The buffer's length.
        len: usize,
    },
    /// The version nibble is not 1, the only version this code speaks.
    #[error("unsupported NexLink version {0}")]
    BadVersion(u8),
    /// The header checksum does not match the header.
    #[error("header checksum {stored:#06x}, computed {computed:#06x}")]
    BadChecksum {
        /// The checksum in the header.
        stored: u16,
        /// The checksum of the header as received.
        computed: u16,
    },
    /// The payload length field claims more bytes than follow the header.
    #[error("payload length {declared} but {available} bytes follow the header")]
    PayloadLength {
        /// The payload length field.
        declared: u16,
        /// Bytes after the header in the buffer.
        available: usize,
    },
    /// The frame type code is not defined in this version.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// The delivery mode code is not defined in this version.
    #[error("unknown delivery mode {0:#04x}")]
    UnknownDeliveryMode(u8),
    /// The hop limit is 0: no frame may be sent with it.
    #[error("hop limit is 0")]
    HopLimitZero,
    /// A bit that is reserved (always, or for this frame type or tensor layout) is set.
    #[error("reserved bits set in header byte {offset}")]
    Reserved {
        /// The header byte holding the first reserved bit that is set.
        offset: usize,
    },
    /// The dtype code is neither 0 (no tensor) nor defined in this version.
    #[error("unknown dtype {0:#04x}")]
    UnknownDtype(u8),
    /// A tensor frame's payload is not a whole number of elements.
    #[error("payload length {payload_len} is not a multiple of the {dtype:?} element size")]
    TensorPayloadLength {
        /// The frame's dtype.
        dtype: Dtype,
        /// The payload length field.
        payload_len: u16,
    },
    /// Forwarding would send the frame with hop limit 0 (it arrived with 1): the frame must be
    /// dropped, not forwarded. Never returned by decoding.
    #[error("hop limit exhausted: the frame cannot be forwarded")]
    HopLimitExceeded,
}

impl Error {
    /// Every reason string, in the order the receive checks run, then `hop_limit_exceeded`
    /// (a forwarding outcome, not a decoding one). Use it to pre-register counter labels.
    pub const REASONS: [&'static str; 11] = [
        "truncated",
        "bad_version",
        "bad_checksum",
        "payload_length",
        "unknown_frame_type",
        "unknown_delivery_mode",
        "hop_limit_zero",
        "reserved",
        "unknown_dtype",
        "tensor_payload_length",
        "hop_limit_exceeded",
    ];

    /// A stable, lowercase label for drop counters (`nexus_dataplane_drops_total{reason=..}`).
    /// These strings are part of the spec (`docs/nexlink.md` §6) and do not change.
    pub const fn reason(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "truncated",
            Error::BadVersion(_) => "bad_version",
            Error::BadChecksum { .. } => "bad_checksum",
            Error::PayloadLength { .. } => "payload_length",
            Error::UnknownFrameType(_) => "unknown_frame_type",
            Error::UnknownDeliveryMode(_) => "unknown_delivery_mode",
            Error::HopLimitZero => "hop_limit_zero",
            Error::Reserved { .. } => "reserved",
            Error::UnknownDtype(_) => "unknown_dtype",
            Error::TensorPayloadLength { .. } => "tensor_payload_length",
            Error::HopLimitExceeded => "hop_limit_exceeded",
        }
    }
}

impl Error {
    /// One error of each kind, in the order of [`Error::REASONS`] (for tests that cover every
    /// reason).
    #[cfg(test)]
    pub(crate) fn one_of_each() -> [Error; Error::REASONS.len()] {
        [
            Error::Truncated { len: 0 },
            Error::BadVersion(0),
            Error::BadChecksum {
                stored: 0,
                computed: 1,
            },
            Error::PayloadLength {
                declared: 1,
                available: 0,
            },
            Error::UnknownFrameType(0),
            Error::UnknownDeliveryMode(0),
            Error::HopLimitZero,
            Error::Reserved { offset: 5 },
            Error::UnknownDtype(0xff),
            Error::TensorPayloadLength {
                dtype: Dtype::F32,
                payload_len: 3,
            },
            Error::HopLimitExceeded,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_once_each() {
        let reasons: Vec<&str> = Error::one_of_each().iter().map(Error::reason).collect();
        assert_eq!(reasons, Error::REASONS);
        let mut unique = reasons.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), reasons.len());
    }
}
