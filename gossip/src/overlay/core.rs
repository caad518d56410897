//! [`Overlay`]: the sans-IO HyParView + Plumtree core every node (and every simulated node) runs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::membership::Transmit;
use crate::overlay::cache::MessageCache;
use crate::overlay::config::OverlayConfig;
use crate::overlay::stats::OverlayStats;
use crate::overlay::wire::{
    GRAFT_IDS_MAX, IHAVE_IDS_MAX, Message, MessageId, OVERLAY_PAYLOAD_MAX, OverlayError,
};
use crate::time::Timestamp;

/// Peers remembered per missing message as sources to graft from (the first IHaves win).
pub const ANNOUNCERS_MAX: usize = 8;
/// Grafts sent for one missing message before it is given up (first after `graft_timeout`,
/// the rest `graft_timeout / 2` apart, rotating over the announcers).
pub const GRAFT_ATTEMPTS_MAX: u8 = 4;
/// Timers due at one instant processed by one [`Overlay::handle_timeout`] call.
const TIMERS_PER_CALL_MAX: usize = 10_000;

/// Something the driver (and the application above it) should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayEvent {
    /// A broadcast from another node arrived for the first time.
    Delivered {
        /// Its id.
        id: MessageId,
        /// The application payload, as the origin passed it to [`Overlay::broadcast`].
        payload: Vec<u8>,
        /// The neighbour it came from (not necessarily its origin).
        from: SocketAddr,
        /// Overlay hops from the origin to this node (1 for a neighbour of the origin).
        hops: u16,
    },
    /// A unicast application message ([`Overlay::send_direct`] on the sender).
    Direct {
        /// The sender's advertised address.
        from: SocketAddr,
        /// The application payload.
        payload: Vec<u8>,
    },
    /// A peer joined the active view.
    NeighborUp(SocketAddr),
    /// A peer left the active view.
    NeighborDown(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TimerKey {
    at: Timestamp,
    seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Shuffle,
    Repair,
    Flush,
    Graft(MessageId),
    NeighborTimeout(SocketAddr),
    /// Keepalive tick (only with `keepalive_period`).
    KeepAlive,
    /// Active-view rotation tick (only with `rotate_period`).
    Rotate,
}

#[derive(Debug)]
struct Missing {
    /// Peers that announced the message (IHave), in arrival order, with the hop count they
    /// announced.
    announcers: VecDeque<(SocketAddr, u16)>,
    timer: TimerKey,
    attempts: u8,
}

/// The broadcast overlay core: HyParView membership views and Plumtree broadcast trees.
///
/// It owns no socket, reads no clock and draws randomness only from its seed. Call order, as
/// for [`crate::Membership`]:
///
/// 1. [`Overlay::join`] once with a contact (any live member), and [`Overlay::peer_up`] /
///    [`Overlay::peer_down`] whenever SWIM reports a member alive or gone;
/// 2. [`Overlay::handle_datagram`] for every datagram whose kind [`crate::is_overlay_kind`];
/// 3. [`Overlay::handle_timeout`] when [`Overlay::poll_timeout`] is reached;
/// 4. after each of those (and after [`Overlay::broadcast`] / [`Overlay::send_direct`]), drain
///    [`Overlay::poll_transmit`] and [`Overlay::poll_event`], then re-read
///    [`Overlay::poll_timeout`].
///
/// Same seed and same inputs give the same outputs.
#[derive(Debug)]
pub struct Overlay {
    me: SocketAddr,
    config: OverlayConfig,
    rng: StdRng,
    nonce: u64,
    sequence: u64,
    started: bool,
    contact: Option<SocketAddr>,
    active: BTreeSet<SocketAddr>,
    /// When each neighbour was last heard from (any datagram); keys = `active`.
    heard: BTreeMap<SocketAddr, Timestamp>,
    passive: BTreeSet<SocketAddr>,
    /// Plumtree's split of the active view (eager ∪ lazy = active, disjoint).
    eager: BTreeSet<SocketAddr>,
    lazy: BTreeSet<SocketAddr>,
    /// Neighbor requests awaiting an answer, with their timeout timer.
    pending: BTreeMap<SocketAddr, TimerKey>,
    /// Peers that refused a Neighbor request since the last repair tick (not asked again).
    refused: BTreeSet<SocketAddr>,
    /// Addresses sent in the last shuffle (preferred victims when the reply is integrated).
    shuffle_sent: Vec<SocketAddr>,
    cache: MessageCache,
    missing: BTreeMap<MessageId, Missing>,
    lazy_queue: Vec<(SocketAddr, MessageId, u16)>,
    flush_armed: bool,
    timers: BTreeMap<TimerKey, Timer>,
    timer_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<OverlayEvent>,
    stats: OverlayStats,
}

impl Overlay {
    /// A core for the node advertised at `me`. `seed` drives every random choice and the
    /// message-id nonce: give each start of a node a fresh seed so ids never repeat.
    ///
    /// # Panics
    /// If `config` fails [`OverlayConfig::check`] (check it when it is loaded).
    pub fn new(me: SocketAddr, config: OverlayConfig, seed: u64) -> Self {
        if let Err(e) = config.check() {
            panic!("invalid overlay config: {e}");
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4f56_4552_4c41_5900);
        let nonce = rng.random::<u64>() ^ addr_hash(me);
        Overlay {
            me,
            cache: MessageCache::new(config.message_ttl, config.messages_max),
            config,
            rng,
            nonce,
            sequence: 0,
            started: false,
            contact: None,
            active: BTreeSet::new(),
            heard: BTreeMap::new(),
            passive: BTreeSet::new(),
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            pending: BTreeMap::new(),
            refused: BTreeSet::new(),
            shuffle_sent: Vec::new(),
            missing: BTreeMap::new(),
            lazy_queue: Vec::new(),
            flush_armed: false,
            timers: BTreeMap::new(),
            timer_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: OverlayStats::default(),
        }
    }

    /// This node's advertised address.
    pub fn local_addr(&self) -> SocketAddr {
        self.me
    }

    /// The settings in use.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// The active view (neighbours), sorted.
    pub fn active_view(&self) -> Vec<SocketAddr> {
        self.active.iter().copied().collect()
    }

    /// The passive view (backups), sorted.
    pub fn passive_view(&self) -> Vec<SocketAddr> {
        self.passive.iter().copied().collect()
    }

    /// The neighbours payloads are pushed to eagerly (Plumtree's eagerPushPeers), sorted.
    pub fn eager_peers(&self) -> Vec<SocketAddr> {
        self.eager.iter().copied().collect()
    }

    /// The neighbours that only get IHave announcements (lazyPushPeers), sorted.
    pub fn lazy_peers(&self) -> Vec<SocketAddr> {
        self.lazy.iter().copied().collect()
    }

    /// Messages currently remembered (duplicate suppression and graft answers).
    pub fn cached_messages(&self) -> usize {
        self.cache.len()
    }

    /// Missing messages currently awaited (announced, payload not yet received).
    pub fn missing_messages(&self) -> usize {
        self.missing.len()
    }

    /// A random neighbour, if any.
    pub fn random_active_peer(&mut self) -> Option<SocketAddr> {
        pick(&mut self.rng, &self.active, |_| true)
    }

    /// A random peer of either view (the registry's anti-entropy partner). Drawing from the
    /// passive view too matters after a partition heals: each side's active view may still hold
    /// only its own side, while the passive views (fed by membership) already hold the other.
    pub fn random_peer(&mut self) -> Option<SocketAddr> {
        let all: BTreeSet<SocketAddr> = self.active.union(&self.passive).copied().collect();
        pick(&mut self.rng, &all, |_| true)
    }

    /// Joins the overlay through `contact` (HyParView Join). The Join is repeated every
    /// `repair_period` while the node has no neighbour and no passive peer to ask.
    pub fn join(&mut self, now: Timestamp, contact: SocketAddr) {
        self.start(now);
        if contact == self.me {
            return;
        }
        self.contact = Some(contact);
        self.send(contact, Message::Join);
    }

    /// SWIM reports `peer` alive: it becomes a passive candidate and, while the active view
    /// (counting requests in flight) is under-full, is asked to become a neighbour.
    pub fn peer_up(&mut self, now: Timestamp, peer: SocketAddr) {
        self.start(now);
        if peer == self.me || self.active.contains(&peer) {
            return;
        }
        self.refused.remove(&peer);
        self.add_passive(peer, &[]);
        if self.active.len() + self.pending.len() < self.config.active_view
            && !self.pending.contains_key(&peer)
        {
            self.request_neighbor(now, peer);
        }
    }

    /// SWIM reports `peer` down or gone: it leaves both views and any pending request; the
    /// active view is repaired from the passive view, and Plumtree repairs its tree from lazy
    /// links (IHave → Graft) on the next broadcasts.
    pub fn peer_down(&mut self, now: Timestamp, peer: SocketAddr) {
        self.start(now);
        self.passive.remove(&peer);
        self.refused.remove(&peer);
        if let Some(key) = self.pending.remove(&peer) {
            self.timers.remove(&key);
        }
        if self.remove_active(peer) {
            self.repair(now);
        }
    }

    /// Takes one datagram (prefix included) received from `from`. The sender is identified by
    /// the address in the datagram (its advertised address), as in membership; `from` is not
    /// used beyond that. On `Err` nothing changed.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), OverlayError> {
        let _ = from;
        let (sender, msg) = match Message::decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.stats.rejected += 1;
                return Err(e);
            }
        };
        if sender == self.me {
            self.stats.rejected += 1;
            return Err(OverlayError::FromSelf);
        }
        self.start(now);
        self.stats.received.bump(msg.kind());
        self.stats.bytes_received += bytes.len() as u64;
        if let Some(heard) = self.heard.get_mut(&sender) {
            *heard = now;
        }
        self.on_message(now, sender, msg);
        self.debug_check();
        Ok(())
    }

    /// Runs every timer due at `now` (and forgets expired messages).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.cache.expire(now);
        let mut grafts: BTreeMap<SocketAddr, Vec<MessageId>> = BTreeMap::new();
        for _ in 0..TIMERS_PER_CALL_MAX {
            let Some(entry) = self.timers.first_entry() else {
                break;
            };
            if entry.key().at > now {
                break;
            }
            let timer = entry.remove();
            match timer {
                Timer::Shuffle => self.shuffle(now),
                Timer::Repair => {
                    self.refused.clear();
                    self.repair(now);
                    if self.active.is_empty()
                        && self.pending.is_empty()
                        && let Some(contact) = self.contact
                    {
                        self.send(contact, Message::Join);
                    }
                    self.schedule(now + self.config.repair_period, Timer::Repair);
                }
                Timer::Flush => {
                    self.flush_armed = false;
                    self.flush_lazy();
                }
                Timer::Graft(id) => self.graft_due(now, id, &mut grafts),
                Timer::NeighborTimeout(peer) => {
                    self.pending.remove(&peer);
                    self.passive.remove(&peer);
                    self.stats.neighbor_timeouts += 1;
                    self.repair(now);
                }
                Timer::KeepAlive => self.keepalive(now),
                Timer::Rotate => self.rotate(now),
            }
        }
        for (peer, ids) in grafts {
            for chunk in ids.chunks(GRAFT_IDS_MAX) {
                self.stats.graft_ids_sent += chunk.len() as u64;
                self.send(
                    peer,
                    Message::Graft {
                        ids: chunk.to_vec(),
                    },
                );
            }
        }
        self.debug_check();
    }

    /// When [`Overlay::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let timer = self.timers.keys().next().map(|k| k.at);
        match (timer, self.cache.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Broadcasts `payload` to every node (Plumtree eager push to eager peers, IHave to lazy
    /// ones). The originator gets no [`OverlayEvent::Delivered`] for its own message.
    pub fn broadcast(
        &mut self,
        now: Timestamp,
        payload: Vec<u8>,
    ) -> Result<MessageId, OverlayError> {
        if payload.len() > OVERLAY_PAYLOAD_MAX {
            self.stats.dropped_oversized += 1;
            return Err(OverlayError::TooLarge {
                size: payload.len(),
                limit: OVERLAY_PAYLOAD_MAX,
            });
        }
        self.start(now);
        self.sequence += 1;
        let id = MessageId::new(self.nonce, self.sequence);
        self.stats.broadcasts += 1;
        self.push(now, id, &payload, 0, None);
        self.stats.cache_evicted += self.cache.insert(now, id, payload, 0);
        self.debug_check();
        Ok(id)
    }

    /// Sends `payload` to `to` alone (not cached, not forwarded); it arrives as
    /// [`OverlayEvent::Direct`]. `to` need not be a neighbour.
    pub fn send_direct(&mut self, to: SocketAddr, payload: Vec<u8>) -> Result<(), OverlayError> {
        if payload.len() > OVERLAY_PAYLOAD_MAX {
            self.stats.dropped_oversized += 1;
            return Err(OverlayError::TooLarge {
                size: payload.len(),
                limit: OVERLAY_PAYLOAD_MAX,
            });
        }
        self.send(to, Message::Direct { payload });
        Ok(())
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<OverlayEvent> {
        self.events.pop_front()
    }

    /// Asserts what must always hold; run after every step in debug builds and in simulation.
    pub fn check_invariants(&self) {
        let c = &self.config;
        assert!(
            self.active.len() <= c.active_view,
            "active view over its size"
        );
        assert!(
            self.passive.len() <= c.passive_view,
            "passive view over its size"
        );
        assert!(!self.active.contains(&self.me), "self in the active view");
        assert!(!self.passive.contains(&self.me), "self in the passive view");
        assert!(
            self.active.is_disjoint(&self.passive),
            "a peer in both views"
        );
        assert!(
            self.eager.is_disjoint(&self.lazy),
            "a peer both eager and lazy"
        );
        assert!(
            self.eager.len() + self.lazy.len() == self.active.len()
                && self
                    .eager
                    .iter()
                    .chain(&self.lazy)
                    .all(|p| self.active.contains(p)),
            "eager ∪ lazy is not the active view"
        );
        assert!(
            self.pending.len() <= c.active_view,
            "more neighbour requests in flight than the active view holds"
        );
        assert!(
            self.missing.len() <= c.missing_max,
            "missing table over its bound"
        );
        assert!(
            self.lazy_queue.len() <= c.lazy_queue_max,
            "lazy queue over its bound"
        );
        assert!(
            self.transmits.len() <= c.transmit_queue_max,
            "transmit queue over its bound"
        );
        assert!(
            self.events.len() <= c.events_max,
            "event queue over its bound"
        );
        for m in self.missing.values() {
            assert!(
                self.timers.contains_key(&m.timer),
                "missing message without a graft timer"
            );
            assert!(m.announcers.len() <= ANNOUNCERS_MAX);
        }
        for (peer, key) in &self.pending {
            assert_eq!(
                self.timers.get(key),
                Some(&Timer::NeighborTimeout(*peer)),
                "pending request without its timeout"
            );
        }
        assert!(
            self.heard.len() == self.active.len()
                && self.heard.keys().all(|p| self.active.contains(p)),
            "keepalive clocks are not the active view"
        );
        // Periodic timers (shuffle, repair, keepalive, rotation), the flush, one per missing
        // message and one per pending request.
        assert!(
            self.timers.len() <= 5 + self.missing.len() + self.pending.len(),
            "timer queue holds stale timers"
        );
        self.cache.check_invariants();
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    // ----- plumbing -----

    fn start(&mut self, now: Timestamp) {
        if self.started {
            return;
        }
        self.started = true;
        // Spread the first shuffle over a period so nodes started together do not shuffle in
        // lock step.
        let period = u64::try_from(self.config.shuffle_period.as_micros()).unwrap_or(u64::MAX);
        let offset = Duration::from_micros(self.rng.random_range(0..period.max(1)));
        self.schedule(
            now + offset + self.config.shuffle_period / 2,
            Timer::Shuffle,
        );
        self.schedule(now + self.config.repair_period, Timer::Repair);
        // Keepalive and rotation (both off by default) start at random phases too.
        for (period, timer) in [
            (self.config.keepalive_period, Timer::KeepAlive),
            (self.config.rotate_period, Timer::Rotate),
        ] {
            if let Some(period) = period {
                let us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
                let offset = Duration::from_micros(self.rng.random_range(0..us.max(1)));
                self.schedule(now + offset + period / 2, timer);
            }
        }
    }

    fn schedule(&mut self, at: Timestamp, timer: Timer) -> TimerKey {
        self.timer_seq += 1;
        let key = TimerKey {
            at,
            seq: self.timer_seq,
        };
        self.timers.insert(key, timer);
        key
    }

    fn send(&mut self, dst: SocketAddr, msg: Message) {
        if self.transmits.len() >= self.config.transmit_queue_max {
            self.stats.dropped_queue_full += 1;
            return;
        }
        let payload = msg.encode(self.me);
        self.stats.sent.bump(msg.kind());
        self.stats.bytes_sent += payload.len() as u64;
        if let Message::Gossip { payload: p, .. } = &msg {
            self.stats.payload_bytes_sent += p.len() as u64;
        }
        self.transmits.push_back(Transmit { dst, payload });
    }

    fn emit(&mut self, event: OverlayEvent) {
        if self.events.len() >= self.config.events_max {
            self.stats.dropped_events += 1;
            return;
        }
        self.events.push_back(event);
    }

    // ----- HyParView -----

    fn on_message(&mut self, now: Timestamp, sender: SocketAddr, msg: Message) {
        match msg {
            Message::Join => self.on_join(now, sender),
            Message::ForwardJoin { new, ttl } => self.on_forward_join(now, sender, new, ttl),
            Message::Neighbor { high } => {
                if self.active.contains(&sender)
                    || high
                    || self.active.len() < self.config.active_view
                {
                    self.add_active(now, sender);
                    self.send(sender, Message::NeighborAccept);
                } else {
                    self.send(sender, Message::NeighborReject);
                }
            }
            Message::NeighborAccept => {
                let solicited = match self.pending.remove(&sender) {
                    Some(key) => {
                        self.timers.remove(&key);
                        true
                    }
                    None => false,
                };
                if !self.active.contains(&sender) {
                    self.add_active(now, sender);
                    // Unsolicited (the end of a ForwardJoin walk, a Join answer, or a stale
                    // accept that crossed our Disconnect): confirm, so that both ends hold the
                    // link even if the peer dropped us meanwhile. A peer that already holds us
                    // does not answer, so this ends after one round trip.
                    if !solicited {
                        self.send(sender, Message::NeighborAccept);
                    }
                }
            }
            Message::NeighborReject => {
                if let Some(key) = self.pending.remove(&sender) {
                    self.timers.remove(&key);
                    if self.refused.len() < self.config.passive_view {
                        self.refused.insert(sender);
                    }
                    self.repair(now);
                }
            }
            Message::Disconnect => {
                if self.remove_active(sender) {
                    self.add_passive(sender, &[]);
                    self.repair(now);
                }
            }
            Message::Shuffle { origin, ttl, addrs } => self.on_shuffle(sender, origin, ttl, addrs),
            Message::ShuffleReply { addrs } => {
                let sent = std::mem::take(&mut self.shuffle_sent);
                for a in addrs {
                    self.add_passive(a, &sent);
                }
            }
            Message::Gossip { id, hops, payload } => {
                self.stats.payload_bytes_received += payload.len() as u64;
                self.on_gossip(now, sender, id, hops, payload)
            }
            Message::IHave { ids } => self.on_ihave(now, sender, ids),
            Message::Graft { ids } => self.on_graft(sender, ids),
            Message::Prune => {
                if self.eager.remove(&sender) {
                    self.lazy.insert(sender);
                } else if !self.active.contains(&sender) {
                    self.stranger(sender);
                }
            }
            Message::Direct { payload } => self.emit(OverlayEvent::Direct {
                from: sender,
                payload,
            }),
            // A neighbour's keepalive only refreshes its clock (done for every datagram in
            // `handle_datagram`); one from a node that is not a neighbour means it still holds
            // a link we dropped: Disconnect restores symmetry.
            Message::KeepAlive => {
                if !self.active.contains(&sender) {
                    self.stranger(sender);
                }
            }
        }
    }

    /// Keepalive tick: drops every neighbour silent for `keepalive_timeout` (it is taken for
    /// dead or unreachable, as if `peer_down` had been called, and repaired), then sends
    /// KeepAlive to every neighbour. A dropped neighbour is kept as a passive candidate after the
    /// repair has picked its replacements: if it is only cut off by a partition it can be asked
    /// again after the heal, and if it is dead the request times out and removes it.
    fn keepalive(&mut self, now: Timestamp) {
        let Some(period) = self.config.keepalive_period else {
            return;
        };
        self.schedule(now + period, Timer::KeepAlive);
        let timeout = self.config.keepalive_timeout;
        let silent: Vec<SocketAddr> = self
            .heard
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= timeout)
            .map(|(p, _)| *p)
            .collect();
        for peer in &silent {
            self.stats.keepalive_timeouts += 1;
            self.remove_active(*peer);
        }
        if !silent.is_empty() {
            self.repair(now);
            for peer in silent {
                self.add_passive(peer, &[]);
            }
        }
        let peers: Vec<SocketAddr> = self.active.iter().copied().collect();
        for peer in peers {
            self.send(peer, Message::KeepAlive);
        }
    }

    /// Rotation tick: a node with at least one neighbour and no request in flight asks one
    /// random passive peer to become a neighbour with high priority (accepted even by a full
    /// view, which evicts a random neighbour; so does this node, if full, when the accept
    /// arrives). Under-full nodes rotate too: repair's low-priority requests are refused by full
    /// views, so a small island (two nodes holding only each other) would never get out.
    fn rotate(&mut self, now: Timestamp) {
        let Some(period) = self.config.rotate_period else {
            return;
        };
        self.schedule(now + period, Timer::Rotate);
        if self.active.is_empty() || !self.pending.is_empty() {
            return;
        }
        let Some(peer) = pick(&mut self.rng, &self.passive, |_| true) else {
            return;
        };
        self.stats.rotations += 1;
        let key = self.schedule(
            now + self.config.neighbor_timeout,
            Timer::NeighborTimeout(peer),
        );
        self.pending.insert(peer, key);
        self.send(peer, Message::Neighbor { high: true });
    }

    fn on_join(&mut self, now: Timestamp, new: SocketAddr) {
        if !self.active.contains(&new) {
            self.add_active(now, new);
            let others: Vec<SocketAddr> =
                self.active.iter().copied().filter(|p| *p != new).collect();
            for peer in others {
                self.send(
                    peer,
                    Message::ForwardJoin {
                        new,
                        ttl: self.config.active_walk,
                    },
                );
            }
        }
        // A repeated Join (the first answer was lost) is answered again.
        self.send(new, Message::NeighborAccept);
    }

    fn on_forward_join(&mut self, now: Timestamp, sender: SocketAddr, new: SocketAddr, ttl: u8) {
        if new == self.me || self.active.contains(&new) {
            return;
        }
        let ttl = ttl.min(self.config.active_walk);
        if ttl == 0 || self.active.len() <= 1 {
            self.add_active(now, new);
            self.send(new, Message::NeighborAccept);
            return;
        }
        if ttl == self.config.passive_walk {
            self.add_passive(new, &[]);
        }
        match pick(&mut self.rng, &self.active, |p| p != sender && p != new) {
            Some(next) => self.send(next, Message::ForwardJoin { new, ttl: ttl - 1 }),
            None => {
                self.add_active(now, new);
                self.send(new, Message::NeighborAccept);
            }
        }
    }

    fn on_shuffle(
        &mut self,
        sender: SocketAddr,
        origin: SocketAddr,
        ttl: u8,
        addrs: Vec<SocketAddr>,
    ) {
        if origin == self.me {
            return;
        }
        let ttl = ttl.min(self.config.active_walk).saturating_sub(1);
        if ttl > 0
            && self.active.len() > 1
            && let Some(next) = pick(&mut self.rng, &self.active, |p| p != sender && p != origin)
        {
            self.send(next, Message::Shuffle { origin, ttl, addrs });
            return;
        }
        let mut reply: Vec<SocketAddr> = self.passive.iter().copied().collect();
        reply.shuffle(&mut self.rng);
        reply.truncate(addrs.len());
        self.send(
            origin,
            Message::ShuffleReply {
                addrs: reply.clone(),
            },
        );
        for a in addrs {
            self.add_passive(a, &reply);
        }
    }

    fn shuffle(&mut self, now: Timestamp) {
        self.schedule(now + self.config.shuffle_period, Timer::Shuffle);
        let Some(target) = pick(&mut self.rng, &self.active, |_| true) else {
            return;
        };
        let mut act: Vec<SocketAddr> = self
            .active
            .iter()
            .copied()
            .filter(|p| *p != target)
            .collect();
        act.shuffle(&mut self.rng);
        act.truncate(self.config.shuffle_active);
        let mut pas: Vec<SocketAddr> = self.passive.iter().copied().collect();
        pas.shuffle(&mut self.rng);
        pas.truncate(self.config.shuffle_passive);
        let mut addrs = vec![self.me];
        addrs.extend(act);
        addrs.extend(pas);
        self.shuffle_sent = addrs[1..].to_vec();
        self.send(
            target,
            Message::Shuffle {
                origin: self.me,
                ttl: self.config.active_walk,
                addrs,
            },
        );
    }

    /// Adds `peer` to the active view (evicting a random neighbour if full, who gets a
    /// Disconnect and moves to the passive view).
    fn add_active(&mut self, now: Timestamp, peer: SocketAddr) {
        if peer == self.me || self.active.contains(&peer) {
            return;
        }
        if self.active.len() >= self.config.active_view
            && let Some(victim) = pick(&mut self.rng, &self.active, |_| true)
        {
            self.remove_active(victim);
            self.send(victim, Message::Disconnect);
            self.add_passive(victim, &[]);
        }
        self.passive.remove(&peer);
        self.refused.remove(&peer);
        if let Some(key) = self.pending.remove(&peer) {
            self.timers.remove(&key);
        }
        self.active.insert(peer);
        self.heard.insert(peer, now);
        // Plumtree: a new neighbour starts eager; redundant links are pruned by duplicates.
        self.eager.insert(peer);
        self.stats.neighbor_up += 1;
        self.emit(OverlayEvent::NeighborUp(peer));
    }

    fn remove_active(&mut self, peer: SocketAddr) -> bool {
        if !self.active.remove(&peer) {
            return false;
        }
        self.heard.remove(&peer);
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.stats.neighbor_down += 1;
        self.emit(OverlayEvent::NeighborDown(peer));
        true
    }

    /// Adds `peer` to the passive view; when full, evicts one of `prefer` if present there,
    /// else a random entry.
    fn add_passive(&mut self, peer: SocketAddr, prefer: &[SocketAddr]) {
        if peer == self.me || self.active.contains(&peer) || self.passive.contains(&peer) {
            return;
        }
        if self.passive.len() >= self.config.passive_view {
            let victim = prefer
                .iter()
                .copied()
                .find(|p| self.passive.contains(p) && !self.pending.contains_key(p))
                .or_else(|| {
                    let pending = &self.pending;
                    pick(&mut self.rng, &self.passive, |p| !pending.contains_key(&p))
                });
            match victim {
                Some(v) => {
                    self.passive.remove(&v);
                }
                None => return,
            }
        }
        self.passive.insert(peer);
    }

    fn request_neighbor(&mut self, now: Timestamp, peer: SocketAddr) {
        // High priority only for the first request of a node with no neighbour at all.
        let high = self.active.is_empty() && self.pending.is_empty();
        let key = self.schedule(
            now + self.config.neighbor_timeout,
            Timer::NeighborTimeout(peer),
        );
        self.pending.insert(peer, key);
        self.send(peer, Message::Neighbor { high });
    }

    /// Asks passive peers to become neighbours until the active view, counting requests in
    /// flight, would be full (HyParView's reaction to a failed or disconnected neighbour).
    fn repair(&mut self, now: Timestamp) {
        while self.active.len() + self.pending.len() < self.config.active_view {
            let (pending, refused) = (&self.pending, &self.refused);
            let Some(peer) = pick(&mut self.rng, &self.passive, |p| {
                !pending.contains_key(&p) && !refused.contains(&p)
            }) else {
                break;
            };
            self.request_neighbor(now, peer);
        }
    }

    /// A Plumtree message from a node outside the active view: it believes we are neighbours
    /// and we do not; a Disconnect restores symmetry.
    fn stranger(&mut self, sender: SocketAddr) {
        self.stats.dropped_unknown_sender += 1;
        self.send(sender, Message::Disconnect);
    }

    // ----- Plumtree -----

    fn on_gossip(
        &mut self,
        now: Timestamp,
        sender: SocketAddr,
        id: MessageId,
        hops: u16,
        payload: Vec<u8>,
    ) {
        let neighbour = self.active.contains(&sender);
        if self.cache.contains(&id) {
            self.stats.duplicates += 1;
            if neighbour {
                // A redundant eager link: make it lazy on both ends.
                if self.eager.remove(&sender) {
                    self.lazy.insert(sender);
                }
                self.send(sender, Message::Prune);
            } else {
                self.stranger(sender);
            }
            return;
        }
        if let Some(m) = self.missing.remove(&id) {
            self.timers.remove(&m.timer);
        }
        self.stats.delivered += 1;
        self.emit(OverlayEvent::Delivered {
            id,
            payload: payload.clone(),
            from: sender,
            hops,
        });
        if neighbour {
            if self.lazy.remove(&sender) {
                self.eager.insert(sender);
            }
        } else {
            // Delivered (it is new), but the sender is no neighbour: tell it so.
            self.stranger(sender);
        }
        self.push(now, id, &payload, hops, Some(sender));
        self.stats.cache_evicted += self.cache.insert(now, id, payload, hops);
    }

    /// Eager push to eager peers, lazy push (queued IHave) to lazy peers, except `skip`.
    fn push(
        &mut self,
        now: Timestamp,
        id: MessageId,
        payload: &[u8],
        hops: u16,
        skip: Option<SocketAddr>,
    ) {
        let next = hops.saturating_add(1);
        let eager: Vec<SocketAddr> = self
            .eager
            .iter()
            .copied()
            .filter(|p| Some(*p) != skip)
            .collect();
        if !eager.is_empty() {
            let msg = Message::Gossip {
                id,
                hops: next,
                payload: payload.to_vec(),
            };
            for peer in eager {
                self.send(peer, msg.clone());
            }
        }
        let lazy: Vec<SocketAddr> = self
            .lazy
            .iter()
            .copied()
            .filter(|p| Some(*p) != skip)
            .collect();
        for peer in lazy {
            if self.lazy_queue.len() >= self.config.lazy_queue_max {
                self.stats.dropped_lazy += 1;
                continue;
            }
            self.lazy_queue.push((peer, id, next));
        }
        if !self.lazy_queue.is_empty() && !self.flush_armed {
            self.flush_armed = true;
            self.schedule(now + self.config.ihave_flush, Timer::Flush);
        }
    }

    fn flush_lazy(&mut self) {
        let mut per_peer: BTreeMap<SocketAddr, Vec<(MessageId, u16)>> = BTreeMap::new();
        for (peer, id, hops) in std::mem::take(&mut self.lazy_queue) {
            if self.lazy.contains(&peer) || self.eager.contains(&peer) {
                per_peer.entry(peer).or_default().push((id, hops));
            }
        }
        for (peer, ids) in per_peer {
            for chunk in ids.chunks(IHAVE_IDS_MAX) {
                self.stats.ihave_ids_sent += chunk.len() as u64;
                self.send(
                    peer,
                    Message::IHave {
                        ids: chunk.to_vec(),
                    },
                );
            }
        }
    }

    fn on_ihave(&mut self, now: Timestamp, sender: SocketAddr, ids: Vec<(MessageId, u16)>) {
        if !self.active.contains(&sender) {
            self.stranger(sender);
            return;
        }
        for (id, hops) in ids {
            if self.cache.contains(&id) {
                continue;
            }
            if let Some(m) = self.missing.get_mut(&id) {
                if m.announcers.len() < ANNOUNCERS_MAX
                    && !m.announcers.iter().any(|(p, _)| *p == sender)
                {
                    m.announcers.push_back((sender, hops));
                }
                continue;
            }
            if self.missing.len() >= self.config.missing_max {
                self.stats.dropped_missing += 1;
                continue;
            }
            let timer = self.schedule(now + self.config.graft_timeout, Timer::Graft(id));
            self.missing.insert(
                id,
                Missing {
                    announcers: VecDeque::from([(sender, hops)]),
                    timer,
                    attempts: 0,
                },
            );
        }
    }

    /// A graft timer fired: ask the next announcer that is still a neighbour for the message,
    /// make the link eager, and retry later with the next one.
    fn graft_due(
        &mut self,
        now: Timestamp,
        id: MessageId,
        grafts: &mut BTreeMap<SocketAddr, Vec<MessageId>>,
    ) {
        let Some(mut m) = self.missing.remove(&id) else {
            return;
        };
        let mut target = None;
        while let Some((peer, hops)) = m.announcers.pop_front() {
            if self.active.contains(&peer) {
                target = Some(peer);
                m.announcers.push_back((peer, hops));
                break;
            }
        }
        let Some(peer) = target else {
            self.stats.grafts_abandoned += 1;
            return;
        };
        if self.lazy.remove(&peer) {
            self.eager.insert(peer);
        }
        grafts.entry(peer).or_default().push(id);
        m.attempts += 1;
        if m.attempts >= GRAFT_ATTEMPTS_MAX {
            // This attempt is the last; whatever it brings is delivered normally.
            self.stats.grafts_abandoned += 1;
            return;
        }
        m.timer = self.schedule(now + self.config.graft_timeout / 2, Timer::Graft(id));
        self.missing.insert(id, m);
    }

    fn on_graft(&mut self, sender: SocketAddr, ids: Vec<MessageId>) {
        if !self.active.contains(&sender) {
            self.stranger(sender);
            return;
        }
        if self.lazy.remove(&sender) {
            self.eager.insert(sender);
        }
        for id in ids {
            if let Some((payload, hops)) = self.cache.get(&id) {
                let msg = Message::Gossip {
                    id,
                    hops: hops.saturating_add(1),
                    payload: payload.to_vec(),
                };
                self.send(sender, msg);
            }
        }
    }
}

/// A random element of `set` satisfying `keep`, drawn from `rng`.
fn pick(
    rng: &mut StdRng,
    set: &BTreeSet<SocketAddr>,
    keep: impl Fn(SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let candidates = set.iter().filter(|p| keep(**p)).count();
    if candidates == 0 {
        return None;
    }
    let n = rng.random_range(0..candidates);
    set.iter().copied().filter(|p| keep(*p)).nth(n)
}

/// FNV-1a over the address's bytes: mixed into the id nonce so equal seeds on different nodes
/// still give different ids.
fn addr_hash(addr: SocketAddr) -> u64 {
    let mut bytes = Vec::with_capacity(18);
    match addr.ip() {
        std::net::IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&addr.port().to_be_bytes());
    crate::mix::fnv1a64(crate::mix::FNV1A64_OFFSET, &bytes)
}
