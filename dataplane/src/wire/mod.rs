//! Wire formats, in smoltcp's `wire/` style: for each format a zero-copy view over a byte buffer
//! (`Packet<T: AsRef<[u8]>>`, with getters and, over `AsMut<[u8]>`, setters) and a parsed,
//! typed representation (`Repr`) whose `parse` is the only place where bytes become meaning.
//!
//! - [`nexlink`]: the NexLink header, the fixed 64-byte header in front of every Nexus frame
//!   (specification: `docs/nexlink.md`).
//! - [`checksum`]: the Internet checksum (RFC 1071) and its incremental update (RFC 1624), which
//!   the NexLink header uses.
//!
//! Nothing here allocates, reads a clock or touches a socket; every decoder has a fuzz target
//! (`dataplane/fuzz`).

pub mod checksum;
pub mod nexlink;

pub use nexlink::{Error as NexLinkError, Packet as NexLinkPacket, Repr as NexLinkRepr};
