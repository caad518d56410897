//! [`OverlayConfig`]: view sizes, walk lengths, timers and the bounds of every cache and queue.

use std::time::Duration;

use crate::membership::ConfigError;
use crate::overlay::wire::SHUFFLE_ADDRS_MAX;

/// Largest active view the configuration accepts.
pub const ACTIVE_VIEW_MAX: usize = 64;
/// Largest passive view the configuration accepts.
pub const PASSIVE_VIEW_MAX: usize = 1024;

/// Settings of the broadcast overlay. The defaults follow the HyParView paper for the views
/// (active 5 = log10(10⁴)+1, passive 30, walks 6 and 3) and pick Plumtree timers for a LAN/WAN
/// fabric whose links take 1–100 ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Size of the active view (the neighbours broadcasts flow over).
    pub active_view: usize,
    /// Size of the passive view (backup candidates learned from joins and shuffles).
    pub passive_view: usize,
    /// Active random walk length (ARWL): hops a ForwardJoin travels.
    pub active_walk: u8,
    /// Passive random walk length (PRWL): at this remaining TTL a ForwardJoin's new node is
    /// added to the passive view of the node it passes.
    pub passive_walk: u8,
    /// How often a node starts a shuffle.
    pub shuffle_period: Duration,
    /// Active-view addresses a shuffle carries (ka).
    pub shuffle_active: usize,
    /// Passive-view addresses a shuffle carries (kp).
    pub shuffle_passive: usize,
    /// How often a node with an under-full active view asks a passive peer to become a
    /// neighbour (and, with no peer at all, repeats its Join). Repairs after a Disconnect or
    /// `peer_down` start at once; this is the retry period.
    pub repair_period: Duration,
    /// How long a Neighbor request waits for its answer before the peer is taken for dead and
    /// dropped from the passive view.
    pub neighbor_timeout: Duration,
    /// Lazy-push batching interval: ids waiting for an IHave are sent together this often.
    pub ihave_flush: Duration,
    /// How long after the first IHave for a missing message a node waits for the payload
    /// before it sends a Graft (Plumtree's `timeout1`); retries wait half of it (`timeout2`).
    pub graft_timeout: Duration,
    /// How long a message id is remembered (duplicate suppression) and its payload kept for
    /// answering Grafts.
    pub message_ttl: Duration,
    /// Messages remembered at most; the oldest is forgotten first when full.
    pub messages_max: usize,
    /// Missing messages (announced by IHave, payload not yet received) tracked at most.
    pub missing_max: usize,
    /// Ids waiting for the next IHave flush at most.
    pub lazy_queue_max: usize,
    /// Datagrams waiting in [`crate::Overlay::poll_transmit`] at most.
    pub transmit_queue_max: usize,
    /// Events waiting in [`crate::Overlay::poll_event`] at most.
    pub events_max: usize,
    /// Keepalive period (`None`, the default: off). When set, the overlay detects dead
    /// neighbours itself instead of waiting for the driver's [`crate::Overlay::peer_down`]:
    /// every period a node sends KeepAlive to each neighbour, and drops a neighbour it has heard
    /// nothing from for `keepalive_timeout`. For partial-view deployments with no SWIM beside
    /// the overlay; a node that runs SWIM leaves it off.
    pub keepalive_period: Option<Duration>,
    /// How long a neighbour may stay silent (no datagram of any kind) before it is dropped from
    /// the active view when keepalive is on; at least two keepalive periods.
    pub keepalive_timeout: Duration,
    /// Active-view rotation period (`None`, the default: off). When set, a node with a neighbour
    /// and no request in flight asks a random passive peer to become a neighbour with high
    /// priority every period,
    /// so views keep mixing and a partition that healed is bridged again even when no SWIM feeds
    /// `peer_up` (see `docs/protocols/overlay.md` §4.4).
    pub rotate_period: Option<Duration>,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            active_view: 5,
            passive_view: 30,
            active_walk: 6,
            passive_walk: 3,
            shuffle_period: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            repair_period: Duration::from_secs(1),
            neighbor_timeout: Duration::from_millis(500),
            ihave_flush: Duration::from_millis(200),
            graft_timeout: Duration::from_millis(500),
            message_ttl: Duration::from_secs(60),
            messages_max: 4096,
            missing_max: 1024,
            lazy_queue_max: 8192,
            transmit_queue_max: 4096,
            events_max: 4096,
            keepalive_period: None,
            keepalive_timeout: Duration::from_secs(3),
            rotate_period: None,
        }
    }
}

impl OverlayConfig {
    /// Checks the settings against each other and against the wire's limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        let err = |field, reason| Err(ConfigError { field, reason });
        if !(1..=ACTIVE_VIEW_MAX).contains(&self.active_view) {
            return err("overlay.active_view", "must be 1..=64");
        }
        if !(1..=PASSIVE_VIEW_MAX).contains(&self.passive_view) {
            return err("overlay.passive_view", "must be 1..=1024");
        }
        if self.active_walk == 0 || self.passive_walk > self.active_walk {
            return err(
                "overlay.passive_walk",
                "active_walk must be above 0 and passive_walk at most active_walk",
            );
        }
        if self.shuffle_active + self.shuffle_passive + 1 > SHUFFLE_ADDRS_MAX {
            return err(
                "overlay.shuffle_passive",
                "shuffle_active + shuffle_passive + 1 must be at most 32",
            );
        }
        if self.shuffle_period < Duration::from_millis(10) {
            return err("overlay.shuffle_period_ms", "must be at least 10");
        }
        if self.repair_period < Duration::from_millis(10) {
            return err("overlay.repair_period_ms", "must be at least 10");
        }
        if self.neighbor_timeout.is_zero() {
            return err("overlay.neighbor_timeout_ms", "must be above 0");
        }
        if self.ihave_flush.is_zero() {
            return err("overlay.ihave_flush_ms", "must be above 0");
        }
        if self.graft_timeout < Duration::from_millis(2) {
            return err("overlay.graft_timeout_ms", "must be at least 2");
        }
        if self.message_ttl < self.graft_timeout * 4 + self.ihave_flush {
            return err(
                "overlay.message_ttl_ms",
                "must cover an IHave flush and four graft timeouts",
            );
        }
        if self.messages_max == 0
            || self.missing_max == 0
            || self.lazy_queue_max == 0
            || self.transmit_queue_max == 0
            || self.events_max == 0
        {
            return err("overlay.*_max", "every bound must be above 0");
        }
        if let Some(period) = self.keepalive_period {
            if period < Duration::from_millis(10) {
                return err("overlay.keepalive_period_ms", "must be at least 10");
            }
            if self.keepalive_timeout < period * 2 {
                return err(
                    "overlay.keepalive_timeout_ms",
                    "must be at least two keepalive periods",
                );
            }
        }
        if self
            .rotate_period
            .is_some_and(|p| p < Duration::from_millis(10))
        {
            return err("overlay.rotate_period_ms", "must be at least 10");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        assert_eq!(OverlayConfig::default().check(), Ok(()));
        let bad = OverlayConfig {
            active_view: 0,
            ..OverlayConfig::default()
        };
        assert_eq!(bad.check().map_err(|e| e.field), Err("overlay.active_view"));
        let bad = OverlayConfig {
            shuffle_passive: 40,
            ..OverlayConfig::default()
        };
        assert_eq!(
            bad.check().map_err(|e| e.field),
            Err("overlay.shuffle_passive")
        );
        let bad = OverlayConfig {
            message_ttl: Duration::from_millis(100),
            ..OverlayConfig::default()
        };
        assert_eq!(
            bad.check().map_err(|e| e.field),
            Err("overlay.message_ttl_ms")
        );
        let bad = OverlayConfig {
            events_max: 0,
            ..OverlayConfig::default()
        };
        assert!(bad.check().is_err());
        let keepalive = OverlayConfig {
            keepalive_period: Some(Duration::from_secs(1)),
            keepalive_timeout: Duration::from_secs(3),
            rotate_period: Some(Duration::from_secs(10)),
            ..OverlayConfig::default()
        };
        assert_eq!(keepalive.check(), Ok(()));
        let bad = OverlayConfig {
            keepalive_timeout: Duration::from_millis(1500),
            ..keepalive.clone()
        };
        assert_eq!(
            bad.check().map_err(|e| e.field),
            Err("overlay.keepalive_timeout_ms")
        );
        let bad = OverlayConfig {
            keepalive_period: Some(Duration::from_millis(1)),
            ..keepalive.clone()
        };
        assert_eq!(
            bad.check().map_err(|e| e.field),
            Err("overlay.keepalive_period_ms")
        );
        let bad = OverlayConfig {
            rotate_period: Some(Duration::ZERO),
            ..keepalive
        };
        assert_eq!(
            bad.check().map_err(|e| e.field),
            Err("overlay.rotate_period_ms")
        );
        // The timeout is not checked while keepalive is off.
        let off = OverlayConfig {
            keepalive_timeout: Duration::ZERO,
            ..OverlayConfig::default()
        };
        assert_eq!(off.check(), Ok(()));
    }
}
