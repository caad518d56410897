//! NexStream: one MIC-authenticated, multiplexed connection per peer with four delivery modes.
//!
//! NexStream is a layer over [quinn-proto](quinn_proto) (sans-IO QUIC): quinn-proto does loss
//! recovery, congestion control (one controller per connection, shared by every mode), pacing,
//! flow control and path-MTU discovery; this crate adds what the fabric needs on top:
//!
//! - **Identity** ([`identity`]): the TLS 1.3 handshake authenticates both ends by their
//!   Ed25519 node keys as RFC 7250 raw public keys (rustls, X25519 only, no resumption, no early
//!   data). The client pins the server's key (a node id, known from membership or a resolve
//!   answer). Each side then sends a `Hello` carrying its credentials (MIC + attestations) on
//!   its control stream; a session is *established* only when the peer's MIC verifies against
//!   the fabric's CA keys on the injected clock, is not revoked and certifies exactly the key
//!   the handshake authenticated. A later revocation closes the session
//!   ([`Endpoint::update_trust`]).
//! - **Four delivery modes on one connection** ([`Mode`]): reliable-ordered flows (a
//!   bidirectional stream each, length-prefixed messages), reliable-unordered messages (a
//!   unidirectional stream each, read unordered and placed by offset), best-effort datagrams
//!   (QUIC DATAGRAM frames with an expiry; messages too large for a datagram go on a stream
//!   reset at their deadline) and probabilistic datagrams (delivered with a configured
//!   probability: Bernoulli thinning below the path's loss, redundant copies above it, from the
//!   endpoint's seeded RNG). Per-stream deadlines, cancellation and priorities; hedged requests
//!   to several sessions, first answer wins.
//! - **Admission above quinn** ([`admission`]): quinn writes DATAGRAM frames before STREAM
//!   frames, so datagrams are queued here and handed to quinn only within their share of the
//!   bytes sent while streams have data waiting.
//! - **NexLink carriage** ([`link`]): every QUIC datagram travels in a NexLink frame of type
//!   `Transport` over UDP, capped so that frame, UDP and IP headers fit a 1500-byte MTU.
//!
//! The [`Endpoint`] is sans-IO in quinn-proto's shape: time (`now: Instant`, plus the Unix
//! milliseconds of one anchor instant for MIC validity), randomness (a seed) and datagrams come
//! in; datagrams to send ([`Endpoint::poll_transmit`]), a timeout ([`Endpoint::poll_timeout`])
//! and [`Event`]s come out. With a seed, every random draw — quinn's, rustls' and the X25519
//! ephemeral keys ([`seeded`]) — comes from it, so one seed gives one run. Drivers: [`udp`]
//! (tokio UDP sockets, NexLink framing).
//!
//! What this crate does not do: pick peers (the node's session manager does), resolve intents,
//! or send 0-RTT data.

#![deny(missing_docs)]

pub mod admission;
mod endpoint;
mod error;
pub mod identity;
pub mod link;
mod mode;
pub mod seeded;
mod session;
mod timer;
pub mod udp;
pub mod wire;

pub use endpoint::{Endpoint, EndpointConfig, Event, LinkRoute, Transmit};
pub use error::{CloseReason, ConnectError, ErrorCode, SendError};
pub use mode::{DatagramOptions, FlowOptions, MessageOptions, Mode, Probability};
pub use session::{ModeCounters, SessionId, SessionStats, StreamRef};

/// The ALPN protocol id of NexStream version 1.
pub const ALPN: &[u8] = b"nexstream/1";

/// Largest QUIC datagram NexStream sends: a 1500-byte MTU less IPv4 (20), UDP (8) and the
/// NexLink header (64).
pub const QUIC_DATAGRAM_BYTES_MAX: u16 =
    1500 - 20 - 8 - nexus_dataplane::wire::nexlink::HEADER_LEN as u16;
