//! Sans-IO membership for Nexus: SWIM (via [foca](https://docs.rs/foca)) wrapped in a core that
//! takes `(now, input)` and returns datagrams, events and its next deadline.
//!
//! It owns no socket, reads no clock and draws randomness only from the seed it is given, so the
//! node's gossip actor and the simulator drive the same code (see `docs/architecture.md`). Each
//! member carries a bounded metadata record ([`MemberMeta`]); a graceful leave is told apart from a
//! crash by a leave notice piggybacked on SWIM's own messages; periodic push-pull state sync
//! (anti-entropy) lets a node that missed updates catch up within a few rounds.
//!
//! What it does not do (yet): capability dissemination (adverts over HyParView/Plumtree are the
//! registry issue's; every node here holds the full member list), message authentication (the wire is unauthenticated UDP; node ids are
//! public keys so signing can be added without a format change), and Vivaldi coordinates (RTT
//! samples are already emitted as [`Event::ProbeRtt`]).
#![deny(missing_docs)]

mod codec;
mod id;
mod leave;
mod membership;
mod settings;
mod time;

pub use codec::{CodecError, PACKET_BYTES_MAX};
pub use id::{
    MemberId, MemberMeta, MetaError, NAME_BYTES_MAX, NodeId, ROLE_BYTES_MAX, ROLES_MAX,
    VERSION_BYTES_MAX,
};
pub use leave::{LEAVE_NOTICES_MAX, LeaveDecodeError, LeaveNotice};
pub use membership::{
    ANTI_ENTROPY_PERIODS, ConfigError, Event, FLAG_REPLY_WANTED, InputError, KIND_SWIM,
    KIND_SYNC_PUSH, KIND_SYNC_REPLY, MemberState, MemberView, Membership, MembershipConfig,
    PINGS_IN_FLIGHT_MAX, SYNC_CHUNK_MEMBERS_MAX, SYNC_MEMBERS_MAX, Stats, TIMERS_PER_CALL_MAX,
    Transmit, WIRE_MAGIC, WIRE_VERSION,
};
pub use settings::{MembershipSettings, TIMING_MS_MAX};
pub use time::Timestamp;
