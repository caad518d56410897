//! What a registry knows about the trust of each advert: the [`TrustVerdict`] a node reached on
//! the credentials an advert carries, and how it turns into index fields.
//!
//! Verdicts are local: every node holds the same signed adverts (the CRDT), but each verifies
//! their credentials against its own trust context (CA keys, circuit keys, revocations), so two
//! nodes may disagree for a while after a revocation. A record whose credentials were rejected
//! (or are not verified yet) stays in the CRDT — so anti-entropy converges — but is excluded from
//! every resolve, with the reason in explain mode.

use std::sync::Arc;

use nexus_trust_core::verify::{TrustReject, Verified};

use crate::{Millis, Timestamp};

/// A node's verdict on the credentials of one advert version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustVerdict {
    /// The advert carries no credentials: resolvable for intents without trust constraints.
    Unclaimed,
    /// The advert carries credentials not verified yet (queued for the next batch): excluded.
    Pending,
    /// The credentials verified; what they establish. Expiry and revocation are re-checked when
    /// resolving.
    Verified(Arc<Verified>),
    /// The credentials were refused: excluded from every resolve.
    Rejected(TrustReject),
}

impl TrustVerdict {
    /// The verified credentials, if any.
    pub fn verified(&self) -> Option<&Arc<Verified>> {
        match self {
            TrustVerdict::Verified(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the record is excluded from every resolve (pending or rejected).
    pub fn blocks(&self) -> bool {
        matches!(self, TrustVerdict::Pending | TrustVerdict::Rejected(_))
    }
}

/// The registry-time instant (ms since the node's epoch) after which a MIC valid until
/// `not_after_ms` (Unix ms, inclusive) no longer is, given the Unix time of the node's epoch:
/// a record is live while `now < this`.
pub(crate) fn mic_deadline(not_after_ms: u64, unix_epoch_ms: u64) -> Millis {
    match not_after_ms.checked_sub(unix_epoch_ms) {
        Some(d) => d.saturating_add(1),
        None => 0,
    }
}

/// The Unix time (ms) at registry time `now`, given the Unix time (ms) of the node's epoch
/// (whole milliseconds, rounded down: the resolution of MIC validity windows).
pub(crate) fn unix_ms_at(now: Timestamp, unix_epoch_ms: u64) -> u64 {
    unix_epoch_ms.saturating_add(now.as_micros() / 1000)
}
