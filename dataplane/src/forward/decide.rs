//! [`decide`]: the forwarder's per-datagram decision as a pure function — the one definition of
//! what the software data plane does with a frame, which every other target is held to.

use std::net::{IpAddr, SocketAddr};

use super::counters::{DROP_REASONS, NO_ROUTE, SOURCE_NOT_ALLOWED, reason_index};
use super::forwarder::flow_hash;
use super::local::LocalEndpoints;
use crate::fib::{FibTable, RoutingKey};
use crate::wire::nexlink::{Error as WireError, Packet, Repr, RoutingKey as WireRoutingKey};

/// Why a datagram was dropped: an index into [`DROP_REASONS`], so a forwarder counts it with
/// one array increment and a test or another target compares it by its stable label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason(usize);

impl DropReason {
    /// The FIB generation has no route for the key.
    pub const NO_ROUTE: DropReason = DropReason(NO_ROUTE);
    /// The datagram's source IP is not in the generation's allowed-source set.
    pub const SOURCE_NOT_ALLOWED: DropReason = DropReason(SOURCE_NOT_ALLOWED);

    /// The reason a NexLink error is counted under.
    pub const fn of_error(error: &WireError) -> DropReason {
        DropReason(reason_index(error))
    }

    /// The reason labelled `label` in [`DROP_REASONS`], if there is one.
    pub fn from_label(label: &str) -> Option<DropReason> {
        DROP_REASONS
            .iter()
            .position(|l| *l == label)
            .map(DropReason)
    }

    /// Its position in [`DROP_REASONS`] (and in [`ForwarderCounters::dropped`](super::ForwarderCounters::dropped)).
    pub const fn index(self) -> usize {
        self.0
    }

    /// Its stable label (`nexus_dataplane_dropped_total{reason=..}`).
    pub const fn label(self) -> &'static str {
        DROP_REASONS[self.0]
    }
}

/// What [`decide`] made of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the first `len` bytes of the (rewritten) datagram — the NexLink frame — to `to`, a
    /// FIB next hop.
    Forward {
        /// The chosen next hop's address.
        to: SocketAddr,
        /// The frame's length (header + declared payload); later bytes are not part of it.
        len: usize,
    },
    /// Send the first `len` bytes of the datagram, unchanged, to the local endpoint `to`.
    Local {
        /// The local service's address.
        to: SocketAddr,
        /// The frame's length (header + declared payload).
        len: usize,
    },
    /// Drop the datagram.
    Drop(DropReason),
}

/// Decides one received datagram against one FIB generation and local-endpoint table, writing
/// the forwarding changes (hop limit, routing-key rewrite, header checksum) into `datagram`.
///
/// `source` is the datagram's source IP to check against the generation's allowed sources, or
/// `None` to skip the check (source check off, or the caller already knows the source is
/// allowed). The steps, in order (the first that refuses decides):
///
/// 0. a `source` the generation does not allow → `Drop(source_not_allowed)`, before parsing;
/// 1. [`Repr::parse`] (every NexLink receive check) → `Drop` under the error's reason;
/// 2. a routing key in `local` → `Local`, the frame unchanged (no hop-limit decrement);
/// 3. [`Packet::decrement_hop_limit`] → `Drop(hop_limit_exceeded)` when it arrived with 1;
/// 4. `table.route(key, flow_hash(src, session, stream))` → `Drop(no_route)` on a miss;
/// 5. the next hop's rewrite, if any, written with [`Packet::rewrite_routing_key`] → `Forward`.
///
/// A dropped datagram may have been changed (a hop limit decremented before a miss); its bytes
/// are not used. Pure: no I/O, no clock, no shared state.
#[inline]
pub fn decide(
    table: &FibTable,
    local: &LocalEndpoints,
    source: Option<IpAddr>,
    datagram: &mut [u8],
) -> Verdict {
    if let Some(ip) = source
        && !table.allows_source(ip)
    {
        return Verdict::Drop(DropReason::SOURCE_NOT_ALLOWED);
    }
    let repr = match Repr::parse(&Packet::new_unchecked(&*datagram)) {
        Ok(repr) => repr,
        Err(e) => return Verdict::Drop(DropReason::of_error(&e)),
    };
    // parse checked that the declared payload is present.
    let len = repr.buffer_len();
    let frame = &mut datagram[..len];
    let key = RoutingKey(repr.routing_key.0);
    if let Some(to) = local.get(key) {
        return Verdict::Local { to, len };
    }
    if let Err(e) = Packet::new_unchecked(&mut *frame).decrement_hop_limit() {
        debug_assert_eq!(e, WireError::HopLimitExceeded, "parse refused hop limit 0");
        return Verdict::Drop(DropReason::of_error(&e));
    }
    match table.route(key, flow_hash(repr.src, repr.session, repr.stream)) {
        Some(next_hop) => {
            if let Some(rewrite) = next_hop.rewrite() {
                Packet::new_unchecked(&mut *frame).rewrite_routing_key(WireRoutingKey(rewrite.0));
            }
            Verdict::Forward {
                to: next_hop.addr(),
                len,
            }
        }
        None => Verdict::Drop(DropReason::NO_ROUTE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_round_trip_through_labels() {
        for (index, label) in DROP_REASONS.iter().enumerate() {
            let reason = DropReason::from_label(label).expect("listed label");
            assert_eq!(reason.index(), index);
            assert_eq!(reason.label(), *label);
        }
        assert_eq!(DropReason::from_label("no_such_reason"), None);
        assert_eq!(DropReason::NO_ROUTE.label(), "no_route");
        assert_eq!(DropReason::SOURCE_NOT_ALLOWED.label(), "source_not_allowed");
        assert_eq!(
            DropReason::of_error(&WireError::HopLimitExceeded).label(),
            "hop_limit_exceeded"
        );
    }
}
