//! Sans-IO membership for Nexus: SWIM (via the `foca` crate) wrapped in a core that takes
//! `(now, input)` and returns datagrams, events and its next deadline.
//!
//! It owns no socket, reads no clock and draws randomness only from the seed it is given, so the
//! node's gossip actor and the simulator drive the same code (see `docs/architecture.md`). Each
//! member carries a bounded metadata record ([`MemberMeta`]); a graceful leave is told apart from a
//! crash by a leave notice piggybacked on SWIM's own messages; periodic push-pull state sync
//! (anti-entropy) lets a node that missed updates catch up within a few rounds.
//!
//! The broadcast overlay ([`Overlay`], `overlay/`) is a second, separate core on the same socket:
//! HyParView active/passive views with Plumtree broadcast trees over them, which carries the
//! registry's signed capability adverts as opaque payloads (datagram kinds `0x10..=0x1f`, see
//! [`is_overlay_kind`] and `docs/protocols/overlay.md`). SWIM stays the source of liveness: the
//! driver feeds its verdicts to the overlay with [`Overlay::peer_up`] / [`Overlay::peer_down`].
//!
//! The fabric keyring ([`Keyring`], [`DatagramGuard`]) seals every datagram of both cores with a
//! shared symmetric key (XChaCha20-Poly1305) and opens incoming ones with any installed key, with
//! memberlist's migration switches; keyring operations travel between nodes as sealed
//! [`KeyringRequest`] / [`KeyringResponse`] datagrams (kinds `0x20..=0x2f`). A shared key
//! authenticates the fabric, not a single node: any holder of the key can speak for any member.
//! Vivaldi coordinates are the registry's (`nexus-registry`), fed from the RTT samples emitted as
//! [`Event::ProbeRtt`].
//!
//! [`mix`] holds the workspace's one SplitMix64 (seed derivation), word hash and FNV-1a: this is
//! the lowest crate the registry, the simulator and the node share. `testkit` (feature
//! `testkit`, tests only) holds the seeded datagram mutator of the decoder mutation tests.
#![deny(missing_docs)]

mod codec;
mod id;
mod keyring;
mod keyring_ops;
mod leave;
mod membership;
pub mod mix;
mod overlay;
mod settings;
#[cfg(feature = "testkit")]
pub mod testkit;
mod time;

pub use codec::{CodecError, PACKET_BYTES_MAX};
pub use id::{
    ID_WIRE_BYTES_MAX, IdDecodeError, MemberId, MemberMeta, MetaError, NAME_BYTES_MAX, NodeId,
    ROLE_BYTES_MAX, ROLES_MAX, VERSION_BYTES_MAX,
};
pub use keyring::{
    DatagramGuard, DropReason, GuardConfig, GuardStats, Incoming, KEY_BYTES, KEYS_MAX, KeyError,
    Keyring, KeyringError, KeyringFileError, KeyringOp, NONCE_BYTES, SEAL_OVERHEAD,
    SEALED_BYTES_MAX, SEALED_VERSION, SecretKey, TAG_BYTES, is_sealed_byte,
};
pub use keyring_ops::{
    KEYRING_ERROR_BYTES_MAX, KEYRING_WIRE_VERSION, KIND_KEYRING_REQUEST, KIND_KEYRING_RESPONSE,
    KeyringQuery, KeyringRequest, KeyringResponse, KeyringSummary, KeyringWireError, MemberOutcome,
    REPLAY_WINDOW_IDS, ReplayWindow, is_keyring_kind,
};
pub use leave::{LEAVE_NOTICES_MAX, LeaveDecodeError, LeaveNotice};
pub use membership::{
    ANTI_ENTROPY_PERIODS, ConfigError, Event, FLAG_REPLY_WANTED, InputError, KIND_SWIM,
    KIND_SYNC_PUSH, KIND_SYNC_REPLY, MemberState, MemberView, Membership, MembershipConfig,
    PINGS_IN_FLIGHT_MAX, SYNC_BUCKETS, SYNC_CHUNK_MEMBERS_MAX, Stats, TIMERS_PER_CALL_MAX,
    Transmit, WIRE_MAGIC, WIRE_VERSION,
};
pub use overlay::{
    ACTIVE_VIEW_MAX, ANNOUNCERS_MAX, FLAG_HIGH_PRIORITY, GRAFT_ATTEMPTS_MAX, GRAFT_IDS_MAX,
    IHAVE_IDS_MAX, KIND_DIRECT, KIND_DISCONNECT, KIND_FORWARD_JOIN, KIND_GOSSIP, KIND_GRAFT,
    KIND_IHAVE, KIND_JOIN, KIND_KEEPALIVE, KIND_NEIGHBOR, KIND_NEIGHBOR_ACCEPT,
    KIND_NEIGHBOR_REJECT, KIND_PRUNE, KIND_SHUFFLE, KIND_SHUFFLE_REPLY, KindCounts, MessageId,
    OVERLAY_PAYLOAD_MAX, OVERLAY_WIRE_VERSION, Overlay, OverlayConfig, OverlayError, OverlayEvent,
    OverlayStats, PASSIVE_VIEW_MAX, SHUFFLE_ADDRS_MAX, is_overlay_kind,
};
pub use settings::{MembershipSettings, TIMING_MS_MAX};
pub use time::Timestamp;
