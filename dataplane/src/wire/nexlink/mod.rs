//! NexLink: the fixed 64-byte header in front of every Nexus frame (`docs/nexlink.md`).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+-+-+-+-+---------------+---------------+-----------+---+
//! |Version|B|E|F|I|  Frame Type   | Delivery Mode | Tr. Class |ECN|   0
//! +-------+-+-+-+-+---------------+---------------+-----------+---+
//! |   Hop Limit   |   Reserved    |        Header Checksum        |   4
//! +---------------+---------------+-------------------------------+
//! |                   Routing Key (128 bits)                      |   8
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                 Source Node Tag (64 bits)                     |  24
//! +---------------------------------------------------------------+
//! |              Destination Node Tag (64 bits)                   |  32
//! +---------------------------------------------------------------+
//! |                    Session Id (64 bits)                       |  40
//! +---------------------------------------------------------------+
//! |                          Stream Id                            |  48
//! +---------------------------------------------------------------+
//! |                       Sequence Number                         |  52
//! +-------------------------------+---------------+-------+-------+
//! |        Payload Length         |     Dtype     | Rank  | Align |  56
//! +-------------------------------+---------------+-------+-------+
//! |                   Inner Dimension (shape hint)                |  60
//! +---------------------------------------------------------------+
//! ```
//!
//! Everything is big-endian at fixed offsets ([`field`]), so a P4 parser extracts the header as
//! one 512-bit structure. The checksum is the Internet checksum (RFC 1071) over the 64 header
//! bytes with the checksum field taken as zero; it does not cover the payload.
//!
//! # Receiving
//!
//! ```
//! use nexus_dataplane::wire::nexlink::{Packet, Repr};
//!
//! fn receive(datagram: &[u8]) -> Result<(Repr, &[u8]), &'static str> {
//!     let packet = Packet::new_unchecked(datagram);
//!     // Every receive check, in the spec's order; the error's reason labels the drop counter.
//!     let repr = Repr::parse(&packet).map_err(|e| e.reason())?;
//!     Ok((repr, &datagram[64..repr.buffer_len()]))
//! }
//! # let _ = receive;
//! ```
//!
//! [`Packet::new_checked`] runs only the structural checks (length, version, checksum, payload
//! length): enough to read any field of an intact header without panicking. [`Repr::parse`]
//! runs those and the semantic ones; a forwarder runs it on every frame, then, to send the frame
//! on, [`Packet::decrement_hop_limit`] on the view (an incremental checksum update).

mod error;
mod fields;
mod packet;
mod repr;

pub use error::Error;
pub use fields::{
    DeliveryMode, Dtype, Ecn, Flags, FrameType, HopLimit, NodeTag, RoutingKey, SeqNumber,
    SessionId, StreamId, TensorMeta, TrafficClass,
};
pub use packet::{Packet, field};
pub use repr::Repr;

/// The header's length in bytes, in every frame of version 1.
pub const HEADER_LEN: usize = 64;

/// The protocol version this code reads and writes (the high nibble of byte 0).
pub const VERSION: u8 = 1;
