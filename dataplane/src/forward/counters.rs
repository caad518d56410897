//! [`ForwarderCounters`]: what a forwarder counted, as a plain snapshot, and drop reasons.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::nexlink::Error;

/// Every drop reason a forwarder counts: the NexLink receive checks and `hop_limit_exceeded`
/// ([`Error::REASONS`], same order), then `no_route` (the FIB has no entry for the key), then
/// `source_not_allowed` (the datagram's source IP is not in the generation's allowed-source
/// set; checked before anything else, so such a datagram counts under no other reason).
/// Stable labels for `nexus_dataplane_dropped_total{reason=..}`; the node exports every one,
/// so a reason that never happened reads 0.
pub const DROP_REASONS: [&str; DROP_REASON_COUNT] = drop_reasons();

/// Number of drop reasons.
pub const DROP_REASON_COUNT: usize = Error::REASONS.len() + 2;

/// Index of `no_route` in [`DROP_REASONS`].
pub(crate) const NO_ROUTE: usize = Error::REASONS.len();

/// Index of `source_not_allowed` in [`DROP_REASONS`].
pub(crate) const SOURCE_NOT_ALLOWED: usize = Error::REASONS.len() + 1;

const fn drop_reasons() -> [&'static str; DROP_REASON_COUNT] {
    let mut out = [""; DROP_REASON_COUNT];
    let mut i = 0;
    while i < Error::REASONS.len() {
        out[i] = Error::REASONS[i];
        i += 1;
    }
    out[NO_ROUTE] = "no_route";
    out[SOURCE_NOT_ALLOWED] = "source_not_allowed";
    out
}

/// The [`DROP_REASONS`] index of a NexLink error (its position in [`Error::REASONS`]).
pub(crate) const fn reason_index(error: &Error) -> usize {
    match error {
        Error::Truncated { .. } => 0,
        Error::BadVersion(_) => 1,
        Error::BadChecksum { .. } => 2,
        Error::PayloadLength { .. } => 3,
        Error::UnknownFrameType(_) => 4,
        Error::UnknownDeliveryMode(_) => 5,
        Error::HopLimitZero => 6,
        Error::Reserved { .. } => 7,
        Error::UnknownDtype(_) => 8,
        Error::TensorPayloadLength { .. } => 9,
        Error::HopLimitExceeded => 10,
    }
}

/// A forwarder's counters at one moment (monotonic since it started, except `generation`).
///
/// Every received datagram ends in exactly one of `forwarded`, `delivered_local` or one
/// `dropped` reason, so `received == forwarded + delivered_local + dropped_total()` once the
/// batch in flight is done. `send_errors` counts datagrams (already counted as forwarded or
/// delivered) that the backend failed to hand to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderCounters {
    /// Receive batches processed (batches that held at least one datagram).
    pub batches: u64,
    /// Datagrams received.
    pub received: u64,
    /// Frames sent on to a FIB next hop.
    pub forwarded: u64,
    /// Frames sent to a local endpoint.
    pub delivered_local: u64,
    /// Drops, indexed like [`DROP_REASONS`].
    pub dropped: [u64; DROP_REASON_COUNT],
    /// Datagrams the backend failed to send.
    pub send_errors: u64,
    /// Receive calls that failed.
    pub recv_errors: u64,
    /// The FIB generation the latest batch was looked up in (0 before the first batch).
    pub generation: u64,
    /// Send calls that carried two or more frames as UDP GSO segments (the backend's
    /// [`IoStats`](super::IoStats)); 0 where the backend has no GSO.
    pub gso_sends: u64,
    /// Frames sent as segments of those GSO sends.
    pub gso_segments: u64,
    /// GSO sends the kernel refused, whose frames were then sent one by one.
    pub gso_fallbacks: u64,
}

impl ForwarderCounters {
    /// Drops for `reason` (one of [`DROP_REASONS`]); `None` for an unknown label.
    pub fn dropped_for(&self, reason: &str) -> Option<u64> {
        DROP_REASONS
            .iter()
            .position(|r| *r == reason)
            .map(|index| self.dropped[index])
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(reason, count)` for every reason, in [`DROP_REASONS`] order (for a metrics exporter).
    pub fn drops(&self) -> impl ExactSizeIterator<Item = (&'static str, u64)> + '_ {
        DROP_REASONS
            .iter()
            .copied()
            .zip(self.dropped.iter().copied())
    }
}

/// The published copy of a forwarder's counters. Only the forwarder thread writes (whole
/// values, once per batch, so the hot loop touches no shared cache line per packet); any thread
/// reads. A snapshot may mix two consecutive batches' values.
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    batches: AtomicU64,
    received: AtomicU64,
    forwarded: AtomicU64,
    delivered_local: AtomicU64,
    dropped: [AtomicU64; DROP_REASON_COUNT],
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
    generation: AtomicU64,
    gso_sends: AtomicU64,
    gso_segments: AtomicU64,
    gso_fallbacks: AtomicU64,
}

impl SharedCounters {
    pub(crate) fn publish(&self, local: &ForwarderCounters) {
        let store = |cell: &AtomicU64, value: u64| cell.store(value, Ordering::Relaxed);
        store(&self.batches, local.batches);
        store(&self.received, local.received);
        store(&self.forwarded, local.forwarded);
        store(&self.delivered_local, local.delivered_local);
        for (cell, value) in self.dropped.iter().zip(local.dropped) {
            store(cell, value);
        }
        store(&self.send_errors, local.send_errors);
        store(&self.recv_errors, local.recv_errors);
        store(&self.generation, local.generation);
        store(&self.gso_sends, local.gso_sends);
        store(&self.gso_segments, local.gso_segments);
        store(&self.gso_fallbacks, local.gso_fallbacks);
    }

    pub(crate) fn snapshot(&self) -> ForwarderCounters {
        let load = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        ForwarderCounters {
            batches: load(&self.batches),
            received: load(&self.received),
            forwarded: load(&self.forwarded),
            delivered_local: load(&self.delivered_local),
            dropped: std::array::from_fn(|index| load(&self.dropped[index])),
            send_errors: load(&self.send_errors),
            recv_errors: load(&self.recv_errors),
            generation: load(&self.generation),
            gso_sends: load(&self.gso_sends),
            gso_segments: load(&self.gso_segments),
            gso_fallbacks: load(&self.gso_fallbacks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_extend_the_wire_reasons() {
        assert_eq!(&DROP_REASONS[..Error::REASONS.len()], &Error::REASONS[..]);
        assert_eq!(DROP_REASONS[NO_ROUTE], "no_route");
        assert_eq!(DROP_REASONS[SOURCE_NOT_ALLOWED], "source_not_allowed");
        assert_eq!(DROP_REASONS.last(), Some(&"source_not_allowed"));
        for error in Error::one_of_each() {
            assert_eq!(DROP_REASONS[reason_index(&error)], error.reason());
        }
    }
}
