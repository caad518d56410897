//! NexStream's own encodings inside QUIC: the `Hello`, stream headers and datagram headers.
//!
//! Layouts (all integers big-endian; `docs/protocols/nexstream.md` §5.2 and §6 are the specification):
//!
//! ```text
//! Hello (control stream)   "NXS" ‖ version u8 (1) ‖ creds_len u16 ‖ credentials
//! Flow header (RO, bidi)   mode u8 (1)
//! RO message               len u32 ‖ payload
//! Message header (RU, uni) mode u8 (2) ‖ len u32                       then payload
//! BE stream header (uni)   mode u8 (3) ‖ expires_ms u64 ‖ len u32       then payload
//! Datagram header (BE, PR) mode u8 (3|4) ‖ flow u32 ‖ seq u64 ‖ expires_ms u64 then payload
//! ```
//!
//! `expires_ms` is milliseconds since the Unix epoch, `0` for "never". `creds_len` may be 0
//! (no credentials). Every decoder checks lengths before reading and refuses trailing or missing
//! bytes; the fuzz target `fuzz/fuzz_targets/wire.rs` drives them all.

use nexus_trust_core::verify::{Credentials, CredentialsError};

use crate::Mode;

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// The `Hello` magic.
pub const HELLO_MAGIC: [u8; 3] = *b"NXS";
/// Fixed part of a `Hello`.
pub const HELLO_HEADER_LEN: usize = 3 + 1 + 2;
/// Largest `Hello`.
pub const HELLO_BYTES_MAX: usize =
    HELLO_HEADER_LEN + nexus_trust_core::verify::CREDENTIALS_BYTES_MAX;
/// Reliable-unordered message header length.
pub const MESSAGE_HEADER_LEN: usize = 1 + 4;
/// Best-effort stream header length.
pub const BE_STREAM_HEADER_LEN: usize = 1 + 8 + 4;
/// Datagram header length.
pub const DATAGRAM_HEADER_LEN: usize = 1 + 4 + 8 + 8;
/// Length prefix of a reliable-ordered message.
pub const RO_LEN_PREFIX: usize = 4;

/// Input could not be decoded. Nothing was consumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the layout needs.
    #[error("truncated: {needed} bytes needed, {got} present")]
    Truncated {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// More bytes than the layout holds.
    #[error("{extra} trailing bytes")]
    Trailing {
        /// Bytes left over.
        extra: usize,
    },
    /// The `Hello` magic is wrong.
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A mode code that is not valid here.
    #[error("mode code {0} not allowed here")]
    BadMode(u8),
    /// The credentials inside a `Hello` were refused.
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// A length larger than the limit.
    #[error("length {len} exceeds {max}")]
    TooLong {
        /// The length given.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// The first message on each side's control stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's credentials: a MIC for the key its handshake proved, with attestations.
    pub credentials: Option<Credentials>,
}

impl Hello {
    /// Encodes; at most [`HELLO_BYTES_MAX`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let creds = self
            .credentials
            .as_ref()
            .map(Credentials::encode)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HELLO_HEADER_LEN + creds.len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.push(VERSION);
        // Credentials encode to at most CREDENTIALS_BYTES_MAX, far below 64 KiB.
        out.extend_from_slice(&(creds.len() as u16).to_be_bytes());
        out.extend_from_slice(&creds);
        out
    }

    /// How many bytes the `Hello` at the start of `bytes` occupies, once its header is there:
    /// `Ok(None)` while fewer than [`HELLO_HEADER_LEN`] bytes are present.
    pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, WireError> {
        if bytes.len() < HELLO_HEADER_LEN {
            return Ok(None);
        }
        if bytes[..3] != HELLO_MAGIC {
            return Err(WireError::BadMagic);
        }
        if bytes[3] != VERSION {
            return Err(WireError::Version(bytes[3]));
        }
        let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        if len > nexus_trust_core::verify::CREDENTIALS_BYTES_MAX {
            return Err(WireError::TooLong {
                len: len as u64,
                max: nexus_trust_core::verify::CREDENTIALS_BYTES_MAX as u64,
            });
        }
        Ok(Some(HELLO_HEADER_LEN + len))
    }

    /// Decodes exactly one `Hello`.
    pub fn decode(bytes: &[u8]) -> Result<Hello, WireError> {
        let len = Hello::frame_len(bytes)?.ok_or(WireError::Truncated {
            needed: HELLO_HEADER_LEN,
            got: bytes.len(),
        })?;
        if bytes.len() < len {
            return Err(WireError::Truncated {
                needed: len,
                got: bytes.len(),
            });
        }
        if bytes.len() > len {
            return Err(WireError::Trailing {
                extra: bytes.len() - len,
            });
        }
        let creds = &bytes[HELLO_HEADER_LEN..];
        let credentials = if creds.is_empty() {
            None
        } else {
            Some(Credentials::decode(creds)?)
        };
        Ok(Hello { credentials })
    }
}

/// The header that starts every application stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamHeader {
    /// A reliable-ordered flow (bidirectional); length-prefixed messages follow.
    Flow,
    /// One reliable-unordered message of `len` bytes.
    Message {
        /// Payload length.
        len: u32,
    },
    /// One best-effort message of `len` bytes, not to be delivered after `expires_ms`.
    BestEffort {
        /// Unix milliseconds; 0 = never.
        expires_ms: u64,
        /// Payload length.
        len: u32,
    },
}

impl StreamHeader {
    /// Encoded length of this header.
    pub fn len(&self) -> usize {
        match self {
            StreamHeader::Flow => 1,
            StreamHeader::Message { .. } => MESSAGE_HEADER_LEN,
            StreamHeader::BestEffort { .. } => BE_STREAM_HEADER_LEN,
        }
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        match *self {
            StreamHeader::Flow => out.push(Mode::ReliableOrdered.code()),
            StreamHeader::Message { len } => {
                out.push(Mode::ReliableUnordered.code());
                out.extend_from_slice(&len.to_be_bytes());
            }
            StreamHeader::BestEffort { expires_ms, len } => {
                out.push(Mode::BestEffort.code());
                out.extend_from_slice(&expires_ms.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out
    }

    /// Decodes the header at the start of `bytes`: `Ok(None)` while more bytes are needed,
    /// else the header and its length. `bidi` says which kind of stream it arrived on: a flow
    /// only on a bidirectional stream, messages only on unidirectional ones.
    pub fn decode_prefix(bytes: &[u8], bidi: bool) -> Result<Option<StreamHeader>, WireError> {
        let Some(&code) = bytes.first() else {
            return Ok(None);
        };
        match (Mode::from_code(code), bidi) {
            (Some(Mode::ReliableOrdered), true) => Ok(Some(StreamHeader::Flow)),
            (Some(Mode::ReliableUnordered), false) => {
                if bytes.len() < MESSAGE_HEADER_LEN {
                    return Ok(None);
                }
                Ok(Some(StreamHeader::Message {
                    len: be_u32(&bytes[1..5]),
                }))
            }
            (Some(Mode::BestEffort), false) => {
                if bytes.len() < BE_STREAM_HEADER_LEN {
                    return Ok(None);
                }
                Ok(Some(StreamHeader::BestEffort {
                    expires_ms: be_u64(&bytes[1..9]),
                    len: be_u32(&bytes[9..13]),
                }))
            }
            _ => Err(WireError::BadMode(code)),
        }
    }
}

/// The header of a best-effort or probabilistic datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramHeader {
    /// [`Mode::BestEffort`] or [`Mode::Probabilistic`].
    pub mode: Mode,
    /// The application's flow label.
    pub flow: u32,
    /// Per-flow sequence number (copies of one probabilistic message share it).
    pub seq: u64,
    /// Unix milliseconds after which the receiver drops it; 0 = never.
    pub expires_ms: u64,
}

impl DatagramHeader {
    /// Writes the header to the start of `out` (at least [`DATAGRAM_HEADER_LEN`] bytes).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.mode.code());
        out.extend_from_slice(&self.flow.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
    }

    /// Splits a datagram into its header and payload.
    pub fn decode(bytes: &[u8]) -> Result<(DatagramHeader, &[u8]), WireError> {
        if bytes.len() < DATAGRAM_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: DATAGRAM_HEADER_LEN,
                got: bytes.len(),
            });
        }
        let mode = match Mode::from_code(bytes[0]) {
            Some(m @ (Mode::BestEffort | Mode::Probabilistic)) => m,
            _ => return Err(WireError::BadMode(bytes[0])),
        };
        Ok((
            DatagramHeader {
                mode,
                flow: be_u32(&bytes[1..5]),
                seq: be_u64(&bytes[5..13]),
                expires_ms: be_u64(&bytes[13..21]),
            },
            &bytes[DATAGRAM_HEADER_LEN..],
        ))
    }
}

/// Runs every decoder of this module on `data` and checks that what decodes re-encodes to
/// exactly the bytes it came from; panics otherwise. The fuzz target and the seeded mutation
/// tests call it.
pub fn check_decoders(data: &[u8]) {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(hello.encode(), data, "Hello re-encodes differently");
    }
    if let Ok(Some(len)) = Hello::frame_len(data) {
        assert!((HELLO_HEADER_LEN..=HELLO_BYTES_MAX).contains(&len));
    }
    for bidi in [true, false] {
        if let Ok(Some(h)) = StreamHeader::decode_prefix(data, bidi) {
            assert_eq!(
                h.encode(),
                data[..h.len()],
                "stream header re-encodes differently"
            );
            assert_eq!(matches!(h, StreamHeader::Flow), bidi);
        }
    }
    if let Ok((h, payload)) = DatagramHeader::decode(data) {
        let mut out = Vec::with_capacity(data.len());
        h.write(&mut out);
        out.extend_from_slice(payload);
        assert_eq!(out, data, "datagram header re-encodes differently");
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_bound_is_the_documented_one() {
        // docs/protocols/nexstream.md §5.2.
        assert_eq!(HELLO_BYTES_MAX, 2_469);
    }

    #[test]
    fn hello_without_credentials_round_trips() {
        let h = Hello { credentials: None };
        let bytes = h.encode();
        assert_eq!(bytes, b"NXS\x01\x00\x00");
        assert_eq!(Hello::decode(&bytes), Ok(h));
        assert_eq!(Hello::frame_len(&bytes), Ok(Some(6)));
        assert_eq!(Hello::frame_len(&bytes[..5]), Ok(None));
    }

    #[test]
    fn hello_bad_input() {
        assert_eq!(Hello::decode(b"NXT\x01\x00\x00"), Err(WireError::BadMagic));
        assert_eq!(
            Hello::decode(b"NXS\x02\x00\x00"),
            Err(WireError::Version(2))
        );
        assert!(matches!(
            Hello::decode(b"NXS\x01\x00\x05ab"),
            Err(WireError::Truncated { needed: 11, got: 8 })
        ));
        assert_eq!(
            Hello::decode(b"NXS\x01\x00\x00x"),
            Err(WireError::Trailing { extra: 1 })
        );
        assert!(matches!(
            Hello::decode(b"NXS\x01\xff\xff"),
            Err(WireError::TooLong { .. })
        ));
        assert!(matches!(
            Hello::decode(b"NXS\x01\x00\x03abc"),
            Err(WireError::Credentials(_))
        ));
        assert!(matches!(
            Hello::decode(b"NX"),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn stream_headers_round_trip_and_refuse_wrong_direction() {
        for (h, bidi) in [
            (StreamHeader::Flow, true),
            (StreamHeader::Message { len: 70_000 }, false),
            (
                StreamHeader::BestEffort {
                    expires_ms: 1_700_000_000_123,
                    len: 9,
                },
                false,
            ),
        ] {
            let bytes = h.encode();
            assert_eq!(bytes.len(), h.len());
            assert_eq!(StreamHeader::decode_prefix(&bytes, bidi), Ok(Some(h)));
            assert_eq!(
                StreamHeader::decode_prefix(&bytes[..bytes.len() - 1], bidi),
                Ok(None)
            );
            assert_eq!(
                StreamHeader::decode_prefix(&bytes, !bidi),
                Err(WireError::BadMode(bytes[0]))
            );
        }
        assert_eq!(StreamHeader::decode_prefix(&[], true), Ok(None));
        assert_eq!(
            StreamHeader::decode_prefix(&[4], false),
            Err(WireError::BadMode(4))
        );
        assert_eq!(
            StreamHeader::decode_prefix(&[0], true),
            Err(WireError::BadMode(0))
        );
    }

    #[test]
    fn datagram_header_round_trips_and_refuses_stream_modes() {
        let h = DatagramHeader {
            mode: Mode::Probabilistic,
            flow: 7,
            seq: 1 << 40,
            expires_ms: 99,
        };
        let mut bytes = Vec::new();
        h.write(&mut bytes);
        bytes.extend_from_slice(b"payload");
        assert_eq!(DatagramHeader::decode(&bytes), Ok((h, &b"payload"[..])));
        bytes[0] = Mode::ReliableOrdered.code();
        assert_eq!(DatagramHeader::decode(&bytes), Err(WireError::BadMode(1)));
        assert!(matches!(
            DatagramHeader::decode(&bytes[..20]),
            Err(WireError::Truncated {
                needed: 21,
                got: 20
            })
        ));
    }
}
