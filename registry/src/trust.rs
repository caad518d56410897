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

use crate::Timestamp;

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

/// The registry-time instant after which a MIC valid until `not_after_ms` (Unix ms, inclusive:
/// the whole of that millisecond) no longer is, given the Unix time of the node's epoch: a
/// record is live while `now < this`.
pub(crate) fn mic_deadline(not_after_ms: u64, unix_epoch_ms: u64) -> Timestamp {
    match not_after_ms.checked_sub(unix_epoch_ms) {
        Some(d) => Timestamp::from_millis(d.saturating_add(1)),
        None => Timestamp::ZERO,
    }
}

/// The Unix time (ms) at registry time `now`, given the Unix time (ms) of the node's epoch
/// (whole milliseconds, rounded down: the resolution of MIC validity windows).
pub(crate) fn unix_ms_at(now: Timestamp, unix_epoch_ms: u64) -> u64 {
    unix_epoch_ms.saturating_add(now.as_micros() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mic_is_live_through_its_last_millisecond_and_agrees_with_the_unix_check() {
        // Epoch at Unix 10 000 ms; the MIC is valid until Unix 12 345 ms inclusive.
        let deadline = mic_deadline(12_345, 10_000);
        let last = Timestamp::from_micros(2_345_999);
        assert!(last < deadline);
        assert!(Timestamp::from_micros(2_346_000) >= deadline);
        // The deadline and the Unix-ms check of the same instant agree on both sides.
        for now in [last, Timestamp::from_micros(2_346_000)] {
            assert_eq!(now < deadline, unix_ms_at(now, 10_000) <= 12_345, "{now:?}");
        }
        // A MIC that ended before the epoch is never live.
        assert_eq!(mic_deadline(9_999, 10_000), Timestamp::ZERO);
        assert_eq!(mic_deadline(u64::MAX, 0), Timestamp::from_micros(u64::MAX));
    }
}
