//! The broadcast overlay: HyParView views with Plumtree broadcast trees on top, as one sans-IO
//! core ([`Overlay`]). Specified in `docs/protocols/overlay.md`.
//!
//! Membership (who exists, who is alive) stays SWIM's; the driver feeds SWIM's verdicts in with
//! [`Overlay::peer_up`] / [`Overlay::peer_down`]. The overlay decides whom each node talks to
//! (a small symmetric active view, a larger passive view of backups) and spreads broadcasts
//! along a tree inside the active view, repairing it from lazy links when a branch breaks.

mod cache;
mod config;
mod core;
mod stats;
pub(crate) mod wire;

pub use config::{ACTIVE_VIEW_MAX, OverlayConfig, PASSIVE_VIEW_MAX};
pub use core::{ANNOUNCERS_MAX, GRAFT_ATTEMPTS_MAX, Overlay, OverlayEvent};
pub use stats::{KindCounts, OverlayStats};
pub use wire::{
    FLAG_HIGH_PRIORITY, GRAFT_IDS_MAX, IHAVE_IDS_MAX, KIND_DIRECT, KIND_DISCONNECT,
    KIND_FORWARD_JOIN, KIND_GOSSIP, KIND_GRAFT, KIND_IHAVE, KIND_JOIN, KIND_KEEPALIVE,
    KIND_NEIGHBOR, KIND_NEIGHBOR_ACCEPT, KIND_NEIGHBOR_REJECT, KIND_PRUNE, KIND_SHUFFLE,
    KIND_SHUFFLE_REPLY, MessageId, OVERLAY_PAYLOAD_MAX, OVERLAY_WIRE_VERSION, OverlayError,
    SHUFFLE_ADDRS_MAX, is_overlay_kind,
};
