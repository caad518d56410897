//! [`OverlayStats`]: plain counters, so simulations can sum, diff and hash them.

use crate::overlay::wire::{
    KIND_DIRECT, KIND_DISCONNECT, KIND_FORWARD_JOIN, KIND_GOSSIP, KIND_GRAFT, KIND_IHAVE,
    KIND_JOIN, KIND_KEEPALIVE, KIND_NEIGHBOR, KIND_NEIGHBOR_ACCEPT, KIND_NEIGHBOR_REJECT,
    KIND_PRUNE, KIND_SHUFFLE, KIND_SHUFFLE_REPLY,
};

/// Datagrams counted per overlay message kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Join.
    pub join: u64,
    /// ForwardJoin.
    pub forward_join: u64,
    /// Neighbor requests.
    pub neighbor: u64,
    /// Neighbor accepts.
    pub neighbor_accept: u64,
    /// Neighbor rejects.
    pub neighbor_reject: u64,
    /// Disconnect.
    pub disconnect: u64,
    /// Shuffle.
    pub shuffle: u64,
    /// ShuffleReply.
    pub shuffle_reply: u64,
    /// Gossip (payload, eager push).
    pub gossip: u64,
    /// IHave (lazy push announcements).
    pub ihave: u64,
    /// Graft.
    pub graft: u64,
    /// Prune.
    pub prune: u64,
    /// Direct (unicast application messages).
    pub direct: u64,
    /// KeepAlive (only with keepalive on).
    pub keepalive: u64,
}

impl KindCounts {
    pub(crate) fn bump(&mut self, kind: u8) {
        let slot = match kind {
            KIND_JOIN => &mut self.join,
            KIND_FORWARD_JOIN => &mut self.forward_join,
            KIND_NEIGHBOR => &mut self.neighbor,
            KIND_NEIGHBOR_ACCEPT => &mut self.neighbor_accept,
            KIND_NEIGHBOR_REJECT => &mut self.neighbor_reject,
            KIND_DISCONNECT => &mut self.disconnect,
            KIND_SHUFFLE => &mut self.shuffle,
            KIND_SHUFFLE_REPLY => &mut self.shuffle_reply,
            KIND_GOSSIP => &mut self.gossip,
            KIND_IHAVE => &mut self.ihave,
            KIND_GRAFT => &mut self.graft,
            KIND_PRUNE => &mut self.prune,
            KIND_DIRECT => &mut self.direct,
            KIND_KEEPALIVE => &mut self.keepalive,
            _ => return,
        };
        *slot += 1;
    }

    /// HyParView membership datagrams (Join … ShuffleReply, KeepAlive).
    pub fn membership(&self) -> u64 {
        self.join
            + self.forward_join
            + self.neighbor
            + self.neighbor_accept
            + self.neighbor_reject
            + self.disconnect
            + self.shuffle
            + self.shuffle_reply
            + self.keepalive
    }

    /// Plumtree control datagrams (IHave, Graft, Prune).
    pub fn tree_control(&self) -> u64 {
        self.ihave + self.graft + self.prune
    }

    /// Every datagram counted.
    pub fn total(&self) -> u64 {
        self.membership() + self.gossip + self.tree_control() + self.direct
    }
}

/// Counters of what one overlay core did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Datagrams emitted, per kind.
    pub sent: KindCounts,
    /// Datagrams accepted (decoded), per kind.
    pub received: KindCounts,
    /// Bytes of emitted datagrams.
    pub bytes_sent: u64,
    /// Bytes of accepted datagrams.
    pub bytes_received: u64,
    /// Application payload bytes sent in Gossip datagrams.
    pub payload_bytes_sent: u64,
    /// Application payload bytes received in Gossip datagrams.
    pub payload_bytes_received: u64,
    /// Broadcasts this node originated.
    pub broadcasts: u64,
    /// Messages delivered to the application (first receipt of another node's broadcast).
    pub delivered: u64,
    /// Gossip datagrams carrying a message already seen.
    pub duplicates: u64,
    /// Message ids announced in IHave datagrams.
    pub ihave_ids_sent: u64,
    /// Message ids requested in Graft datagrams.
    pub graft_ids_sent: u64,
    /// Missing messages given up after every graft attempt (or with no neighbour to ask).
    pub grafts_abandoned: u64,
    /// Datagrams that did not decode (any [`crate::OverlayError`]).
    pub rejected: u64,
    /// Datagrams dropped because the transmit queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped because the event queue was full.
    pub dropped_events: u64,
    /// Payloads refused by `broadcast`/`send_direct` for being over the size limit.
    pub dropped_oversized: u64,
    /// Plumtree messages from a node outside the active view (answered with Disconnect).
    pub dropped_unknown_sender: u64,
    /// Lazy-push ids dropped because the IHave queue was full.
    pub dropped_lazy: u64,
    /// IHave announcements ignored because the missing-message table was full.
    pub dropped_missing: u64,
    /// Messages forgotten before their TTL because the message cache was full.
    pub cache_evicted: u64,
    /// Peers added to the active view.
    pub neighbor_up: u64,
    /// Peers removed from the active view.
    pub neighbor_down: u64,
    /// Neighbor requests that timed out.
    pub neighbor_timeouts: u64,
    /// Neighbours dropped because nothing came from them for `keepalive_timeout`.
    pub keepalive_timeouts: u64,
    /// High-priority Neighbor requests sent by active-view rotation.
    pub rotations: u64,
}
