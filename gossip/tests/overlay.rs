//! The broadcast overlay driven over an in-test network in virtual time: views fill and stay
//! symmetric, failures are repaired, the Plumtree tree prunes redundant links and recovers a
//! lost payload through IHave → Graft, duplicates are suppressed, every cache stays bounded under
//! a flood, and the same seed gives the same run. Datagrams in the unit-level tests are built by
//! hand from `docs/protocols/overlay.md` §3, so the documented layout is tested too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nexus_gossip::mix::fnv1a64;
use nexus_gossip::{
    KIND_DISCONNECT, KIND_GOSSIP, KIND_IHAVE, KIND_KEEPALIVE, KIND_NEIGHBOR, KIND_PRUNE, MessageId,
    OVERLAY_PAYLOAD_MAX, Overlay, OverlayConfig, OverlayError, OverlayEvent, PACKET_BYTES_MAX,
    Timestamp, is_overlay_kind,
};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7000))
}

fn index(a: SocketAddr) -> usize {
    match a {
        SocketAddr::V4(v4) => {
            let o = v4.ip().octets();
            (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        SocketAddr::V6(_) => usize::MAX,
    }
}

type DropFn = Box<dyn FnMut(Timestamp, usize, usize, &[u8]) -> bool>;

/// N cores, 5 ms links, a 1 ms tick.
struct Net {
    nodes: Vec<Overlay>,
    alive: Vec<bool>,
    queue: BTreeMap<(Timestamp, u64), (usize, usize, Vec<u8>)>,
    seq: u64,
    now: Timestamp,
    drop: DropFn,
    delivered: Vec<Vec<(MessageId, u16)>>,
    events: Vec<Vec<OverlayEvent>>,
    log_hash: u64,
}

impl Net {
    fn new(n: usize, config: OverlayConfig, seed: u64) -> Self {
        Net {
            nodes: (0..n)
                .map(|i| Overlay::new(addr(i), config.clone(), seed * 1000 + i as u64))
                .collect(),
            alive: vec![true; n],
            queue: BTreeMap::new(),
            seq: 0,
            now: Timestamp::ZERO,
            drop: Box::new(|_, _, _, _| false),
            delivered: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            log_hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    /// Joins every node through a random earlier one, telling it of two more (seeded).
    fn bootstrap(n: usize, config: OverlayConfig, seed: u64) -> Self {
        let mut net = Net::new(n, config, seed);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        for i in 1..n {
            let now = net.now;
            net.nodes[i].join(now, addr(rnd(i)));
            for _ in 0..2 {
                let j = rnd(i);
                net.nodes[i].peer_up(now, addr(j));
            }
            net.drain(i);
            net.run(Duration::from_millis(20));
        }
        net.run(Duration::from_secs(30));
        net
    }

    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            assert!(t.payload.len() <= PACKET_BYTES_MAX);
            assert!(is_overlay_kind(t.payload[2]));
            let j = index(t.dst);
            self.log_hash = fnv1a64(
                fnv1a64(self.log_hash, &t.payload),
                &(j as u64).to_le_bytes(),
            );
            if j >= self.nodes.len() || (self.drop)(self.now, i, j, &t.payload) {
                continue;
            }
            self.seq += 1;
            self.queue.insert(
                (self.now + Duration::from_millis(5), self.seq),
                (i, j, t.payload),
            );
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            if let OverlayEvent::Delivered { id, hops, .. } = &ev {
                self.delivered[i].push((*id, *hops));
            }
            self.events[i].push(ev);
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + Duration::from_millis(1);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (from, to, bytes) = entry.remove();
                if self.alive[to] {
                    let now = self.now;
                    self.nodes[to]
                        .handle_datagram(now, addr(from), &bytes)
                        .expect("cores emit valid datagrams");
                    self.drain(to);
                }
            }
            for i in 0..self.nodes.len() {
                if self.alive[i] && self.nodes[i].poll_timeout().is_some_and(|d| d <= self.now) {
                    let now = self.now;
                    self.nodes[i].handle_timeout(now);
                    self.drain(i);
                }
            }
        }
    }

    fn broadcast(&mut self, i: usize, payload: &[u8]) -> MessageId {
        let now = self.now;
        let id = self.nodes[i]
            .broadcast(now, payload.to_vec())
            .expect("broadcast");
        self.drain(i);
        id
    }

    fn reached(&self, id: MessageId) -> usize {
        self.delivered
            .iter()
            .filter(|d| d.iter().any(|(m, _)| *m == id))
            .count()
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.alive[*i])
    }

    /// Links (i, j) held by i but not by j, between live nodes.
    fn one_sided(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in self.live() {
            for p in self.nodes[i].active_view() {
                let j = index(p);
                if self.alive[j] && !self.nodes[j].active_view().contains(&addr(i)) {
                    out.push((i, j));
                }
            }
        }
        out
    }

    fn assert_symmetric(&self) {
        for i in self.live() {
            for p in self.nodes[i].active_view() {
                assert!(
                    self.nodes[index(p)].active_view().contains(&addr(i)),
                    "{} has {p} as neighbour, not the other way round",
                    addr(i)
                );
            }
        }
    }
}

fn config() -> OverlayConfig {
    OverlayConfig {
        shuffle_period: Duration::from_secs(2),
        ..OverlayConfig::default()
    }
}

// ----- hand-built datagrams (docs/protocols/overlay.md §3) -----

fn header(kind: u8, flags: u8, sender: SocketAddr) -> Vec<u8> {
    let mut v = vec![0x4e, 1, kind, flags];
    put_addr(&mut v, sender);
    v
}

fn put_addr(v: &mut Vec<u8>, a: SocketAddr) {
    let SocketAddr::V4(a) = a else {
        panic!("v4 only in these tests")
    };
    v.push(4);
    v.extend_from_slice(&a.ip().octets());
    v.extend_from_slice(&a.port().to_be_bytes());
}

fn accept(sender: SocketAddr) -> Vec<u8> {
    header(0x13, 0, sender)
}

fn gossip(sender: SocketAddr, id: MessageId, hops: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = header(KIND_GOSSIP, 0, sender);
    v.extend_from_slice(&id.0);
    v.extend_from_slice(&hops.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ihave(sender: SocketAddr, ids: &[MessageId]) -> Vec<u8> {
    let mut v = header(KIND_IHAVE, 0, sender);
    v.push(ids.len() as u8);
    for id in ids {
        v.extend_from_slice(&id.0);
        v.extend_from_slice(&1u16.to_be_bytes());
    }
    v
}

fn id(n: u64) -> MessageId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&0xabcd_u64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    MessageId(b)
}

fn transmits(core: &mut Overlay) -> Vec<(SocketAddr, u8)> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| (t.dst, t.payload[2]))
        .collect()
}

/// A core at addr(0) with addr(1) and addr(2) as neighbours.
fn core_with_neighbours(config: OverlayConfig) -> Overlay {
    let mut core = Overlay::new(addr(0), config, 5);
    let t = Timestamp::from_micros(1);
    for p in [1, 2] {
        core.handle_datagram(t, addr(p), &accept(addr(p)))
            .expect("accept");
    }
    assert_eq!(core.active_view(), vec![addr(1), addr(2)]);
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core
}

// ----- HyParView -----

#[test]
fn join_fills_views_and_links_are_symmetric() {
    let net = Net::bootstrap(40, config(), 1);
    let c = config();
    let mut active_total = 0;
    for i in 0..40 {
        let a = net.nodes[i].active_view().len();
        let p = net.nodes[i].passive_view().len();
        active_total += a;
        assert!(
            a >= c.active_view - 1 && a <= c.active_view,
            "node {i}: active {a}"
        );
        assert!(p >= 10 && p <= c.passive_view, "node {i}: passive {p}");
        net.nodes[i].check_invariants();
    }
    assert!(
        active_total * 10 >= 40 * c.active_view * 9,
        "active views mostly full: {active_total} of {}",
        40 * c.active_view
    );
    net.assert_symmetric();
}

#[test]
fn peer_down_repairs_the_active_view_and_broadcasts_reach_every_survivor() {
    let mut net = Net::bootstrap(40, config(), 2);
    let dead: Vec<usize> = (0..40).filter(|i| i % 4 == 1).collect();
    for &d in &dead {
        net.alive[d] = false;
    }
    let survivors: Vec<usize> = net.live().collect();
    for &i in &survivors {
        let now = net.now;
        let was_neighbour: Vec<usize> = net.nodes[i]
            .active_view()
            .into_iter()
            .map(index)
            .filter(|j| dead.contains(j))
            .collect();
        for &d in &dead {
            net.nodes[i].peer_down(now, addr(d));
        }
        net.drain(i);
        for d in was_neighbour {
            assert!(
                net.events[i].contains(&OverlayEvent::NeighborDown(addr(d))),
                "node {i} reported no NeighborDown for {d}"
            );
        }
    }
    net.run(Duration::from_secs(5));
    for &i in &survivors {
        let act = net.nodes[i].active_view();
        assert!(
            act.iter().all(|p| !dead.contains(&index(*p))),
            "node {i}: {act:?}"
        );
        assert!(
            act.len() >= config().active_view - 1,
            "node {i} not repaired: {act:?}"
        );
    }
    net.assert_symmetric();
    let id = net.broadcast(survivors[3], b"after repair");
    net.run(Duration::from_secs(3));
    assert_eq!(net.reached(id), survivors.len() - 1);
}

// ----- keepalive and rotation (partial-view deployments, off by default) -----

fn keepalive_config() -> OverlayConfig {
    OverlayConfig {
        keepalive_period: Some(Duration::from_secs(1)),
        keepalive_timeout: Duration::from_secs(3),
        ..config()
    }
}

fn keepalive(sender: SocketAddr) -> Vec<u8> {
    header(KIND_KEEPALIVE, 0, sender)
}

#[test]
fn keepalive_drops_a_silent_neighbour_and_keeps_a_talking_one() {
    let mut core = core_with_neighbours(keepalive_config());
    let mut sent_to_1 = 0;
    let mut asked_2 = 0;
    for s in 1..=6u64 {
        let t = Timestamp::from_micros(s * 1_000_000);
        // addr(1) keeps talking; addr(2) went silent after the accept at t ≈ 0.
        core.handle_datagram(t, addr(1), &keepalive(addr(1)))
            .expect("keepalive");
        core.handle_timeout(t);
        core.check_invariants();
        let out = transmits(&mut core);
        sent_to_1 += out
            .iter()
            .filter(|(to, kind)| *to == addr(1) && *kind == KIND_KEEPALIVE)
            .count();
        asked_2 += out
            .iter()
            .filter(|(to, kind)| *to == addr(2) && *kind == KIND_NEIGHBOR)
            .count();
    }
    assert_eq!(core.active_view(), vec![addr(1)]);
    assert_eq!(core.stats().keepalive_timeouts, 1);
    // Kept as a candidate (a partition may be all that cut it off), so a later repair asked it
    // again; with no answer that request timed out and removed it from both views.
    assert!(asked_2 >= 1, "the dropped peer was never asked again");
    assert!(core.stats().neighbor_timeouts >= 1);
    assert!(!core.passive_view().contains(&addr(2)));
    let events: Vec<OverlayEvent> = std::iter::from_fn(|| core.poll_event()).collect();
    assert!(events.contains(&OverlayEvent::NeighborDown(addr(2))));
    assert!(!events.contains(&OverlayEvent::NeighborDown(addr(1))));
    assert!(sent_to_1 >= 5, "one KeepAlive per period: {sent_to_1}");
}

#[test]
fn keepalive_off_sends_nothing_and_drops_nobody() {
    let mut core = core_with_neighbours(config());
    for s in 1..=30u64 {
        core.handle_timeout(Timestamp::from_micros(s * 1_000_000));
        assert!(
            transmits(&mut core)
                .iter()
                .all(|(_, kind)| *kind != KIND_KEEPALIVE)
        );
    }
    assert_eq!(core.active_view(), vec![addr(1), addr(2)]);
    assert_eq!(core.stats().keepalive_timeouts, 0);
}

#[test]
fn a_keepalive_from_a_non_neighbour_is_answered_with_disconnect() {
    let mut core = core_with_neighbours(keepalive_config());
    let t = Timestamp::from_micros(10);
    core.handle_datagram(t, addr(7), &keepalive(addr(7)))
        .expect("keepalive");
    assert_eq!(transmits(&mut core), vec![(addr(7), KIND_DISCONNECT)]);
    assert!(!core.active_view().contains(&addr(7)));
}

#[test]
fn keepalive_does_not_flap_healthy_neighbours_under_loss() {
    let mut net = Net::bootstrap(30, keepalive_config(), 4);
    // 2 % loss on every datagram, decided by a hash of (time, link, bytes): deterministic.
    net.drop = Box::new(|now, i, j, bytes| {
        let h = now.as_micros() ^ ((i as u64) << 20) ^ ((j as u64) << 40);
        fnv1a64(h, bytes).is_multiple_of(50)
    });
    let before: u64 = net.nodes.iter().map(|c| c.stats().keepalive_timeouts).sum();
    net.run(Duration::from_secs(60));
    let after: u64 = net.nodes.iter().map(|c| c.stats().keepalive_timeouts).sum();
    assert_eq!(after - before, 0, "a healthy neighbour was dropped");
    net.assert_symmetric();
}

#[test]
fn keepalive_alone_removes_a_crashed_node_and_repairs() {
    let mut net = Net::bootstrap(30, keepalive_config(), 5);
    let dead = [3, 11, 17];
    for d in dead {
        net.alive[d] = false;
    }
    // No peer_down anywhere: detection is the keepalive's.
    net.run(Duration::from_secs(8));
    for i in net.live().collect::<Vec<_>>() {
        let act = net.nodes[i].active_view();
        assert!(
            act.iter().all(|p| !dead.contains(&index(*p))),
            "node {i} still holds a dead neighbour: {act:?}"
        );
        assert!(!act.is_empty(), "node {i} isolated");
    }
    net.assert_symmetric();
    let origin = net.live().next().expect("a survivor");
    let id = net.broadcast(origin, b"after the crash");
    net.run(Duration::from_secs(3));
    assert_eq!(net.reached(id), 30 - dead.len() - 1);
}

#[test]
fn rotation_bridges_a_healed_partition() {
    let cfg = OverlayConfig {
        rotate_period: Some(Duration::from_secs(5)),
        ..keepalive_config()
    };
    let mut net = Net::bootstrap(40, cfg, 6);
    let start = net.now;
    let (cut, heal) = (
        start + Duration::from_secs(1),
        start + Duration::from_secs(31),
    );
    net.drop = Box::new(move |now, i, j, _| now >= cut && now < heal && (i < 20) != (j < 20));
    net.run(Duration::from_secs(31));
    // Cut off: no link crosses the partition any more.
    for i in 0..40 {
        assert!(
            net.nodes[i]
                .active_view()
                .iter()
                .all(|p| (index(*p) < 20) == (i < 20)),
            "node {i} kept a neighbour across the partition"
        );
    }
    net.run(Duration::from_secs(30));
    // Healed: rotation asked passive peers across, so one component again.
    let mut seen = [false; 40];
    let mut stack = vec![0usize];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for p in net.nodes[i].active_view() {
            let j = index(p);
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    assert!(seen.iter().all(|s| *s), "still split after the heal");
    let rotations: u64 = net.nodes.iter().map(|c| c.stats().rotations).sum();
    assert!(rotations > 0);
    // A rotation in flight leaves a link one-sided for a round trip; none may last (a stale
    // one is cut by the Disconnect answering its next KeepAlive).
    let first = net.one_sided();
    net.run(Duration::from_millis(1500));
    let later = net.one_sided();
    let lasting: Vec<_> = first.iter().filter(|l| later.contains(l)).collect();
    assert!(lasting.is_empty(), "one-sided links lasted: {lasting:?}");
}

#[test]
fn an_under_full_node_refused_by_full_peers_rotates_out_with_high_priority() {
    // Two neighbours of five, repair slow: the only passive peer refuses the low-priority
    // request (its view is full). Without rotation this node would stay under-full — and two
    // such nodes holding only each other would be an island for ever.
    let cfg = OverlayConfig {
        repair_period: Duration::from_secs(60),
        rotate_period: Some(Duration::from_secs(1)),
        ..config()
    };
    let mut core = core_with_neighbours(cfg);
    let t = Timestamp::from_micros(2);
    core.peer_up(t, addr(5));
    assert_eq!(transmits(&mut core), vec![(addr(5), KIND_NEIGHBOR)]);
    core.handle_datagram(t, addr(5), &header(0x14, 0, addr(5)))
        .expect("reject");
    let _ = transmits(&mut core);
    core.handle_timeout(Timestamp::from_micros(5_000_000));
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| core.poll_transmit())
        .filter(|t| t.dst == addr(5) && t.payload[2] == KIND_NEIGHBOR)
        .map(|t| t.payload)
        .collect();
    assert_eq!(sent.len(), 1, "one rotation while its request is in flight");
    assert_eq!(sent[0][3], 0x01, "high priority");
    assert_eq!(core.stats().rotations, 1);
    core.check_invariants();
}

#[test]
fn rotation_asks_a_passive_peer_with_high_priority() {
    let cfg = OverlayConfig {
        active_view: 2,
        rotate_period: Some(Duration::from_secs(1)),
        ..config()
    };
    let mut core = core_with_neighbours(cfg);
    let t = Timestamp::from_micros(2);
    core.peer_up(t, addr(5));
    let _ = transmits(&mut core);
    core.handle_timeout(Timestamp::from_micros(5_000_000));
    let out: Vec<(SocketAddr, u8)> = transmits(&mut core)
        .into_iter()
        .filter(|(_, k)| *k == KIND_NEIGHBOR)
        .collect();
    assert_eq!(out, vec![(addr(5), KIND_NEIGHBOR)]);
    assert_eq!(core.stats().rotations, 1);
    // Accepted: the new neighbour is in, a random old one was evicted with Disconnect.
    let t = Timestamp::from_micros(5_100_000);
    core.handle_datagram(t, addr(5), &accept(addr(5)))
        .expect("accept");
    assert!(core.active_view().contains(&addr(5)));
    assert_eq!(core.active_view().len(), 2);
    assert!(
        transmits(&mut core)
            .iter()
            .any(|(_, k)| *k == KIND_DISCONNECT)
    );
    core.check_invariants();
}

// ----- Plumtree -----

#[test]
fn tree_prunes_redundant_links_then_costs_one_payload_per_node() {
    let n = 40;
    let mut net = Net::bootstrap(n, config(), 3);
    // The first broadcast floods every link: duplicates, answered with Prune.
    let first = net.broadcast(0, b"first");
    net.run(Duration::from_secs(2));
    assert_eq!(net.reached(first), n - 1);
    let dup: u64 = net.nodes.iter().map(|c| c.stats().duplicates).sum();
    let prunes: u64 = net.nodes.iter().map(|c| c.stats().sent.prune).sum();
    assert!(
        dup > 0 && prunes == dup,
        "duplicates {dup}, prunes {prunes}"
    );
    for k in 1..10 {
        net.broadcast(k * 3 % n, b"warm-up");
        net.run(Duration::from_secs(1));
    }
    let before: u64 = net.nodes.iter().map(|c| c.stats().sent.gossip).sum();
    let dup_before: u64 = net.nodes.iter().map(|c| c.stats().duplicates).sum();
    for k in 0..5 {
        let id = net.broadcast(k * 7 % n, b"on the tree");
        net.run(Duration::from_secs(2));
        assert_eq!(net.reached(id), n - 1);
    }
    let gossip: u64 = net.nodes.iter().map(|c| c.stats().sent.gossip).sum::<u64>() - before;
    let dup: u64 = net.nodes.iter().map(|c| c.stats().duplicates).sum::<u64>() - dup_before;
    // A spanning tree: exactly one payload per receiving node, no duplicate.
    assert_eq!(dup, 0);
    assert_eq!(gossip, 5 * (n as u64 - 1));
    // Eager links form a tree (n-1 links, counted from both ends) and stay symmetric.
    let eager: usize = net.nodes.iter().map(|c| c.eager_peers().len()).sum();
    assert_eq!(eager, 2 * (n - 1));
    for i in 0..n {
        for p in net.nodes[i].eager_peers() {
            assert!(net.nodes[index(p)].eager_peers().contains(&addr(i)));
        }
    }
}

#[test]
fn a_lost_payload_is_recovered_through_ihave_and_graft() {
    let n = 30;
    let mut net = Net::bootstrap(n, config(), 4);
    for k in 0..8 {
        net.broadcast(k, b"warm-up");
        net.run(Duration::from_secs(1));
    }
    // Every eager-push payload to node 7 is lost for 100 ms (the grafted copy comes later).
    let victim = 7;
    let t0 = net.now;
    net.drop = Box::new(move |now, _, to, bytes| {
        to == victim && bytes[2] == KIND_GOSSIP && now < t0 + Duration::from_millis(100)
    });
    let grafts_before = net.nodes[victim].stats().sent.graft;
    let id = net.broadcast(20, b"lost once");
    // The IHaves come after the flush (200 ms); the graft timer (500 ms) has not fired yet.
    net.run(Duration::from_millis(300));
    assert!(!net.delivered[victim].iter().any(|(m, _)| *m == id));
    assert_eq!(
        net.nodes[victim].missing_messages(),
        1,
        "IHave announced it"
    );
    net.run(Duration::from_secs(2));
    assert_eq!(net.reached(id), n - 1);
    assert!(net.delivered[victim].iter().any(|(m, _)| *m == id));
    assert!(net.nodes[victim].stats().sent.graft > grafts_before);
    assert_eq!(net.nodes[victim].missing_messages(), 0);
}

#[test]
fn duplicates_are_suppressed_and_pruned() {
    let mut core = core_with_neighbours(OverlayConfig::default());
    let t = Timestamp::from_micros(10);
    let m = gossip(addr(1), id(1), 1, b"advert");
    core.handle_datagram(t, addr(1), &m).expect("gossip");
    let events: Vec<OverlayEvent> = std::iter::from_fn(|| core.poll_event()).collect();
    assert_eq!(
        events,
        vec![OverlayEvent::Delivered {
            id: id(1),
            payload: b"advert".to_vec(),
            from: addr(1),
            hops: 1
        }]
    );
    // Forwarded eagerly to the other neighbour only, one hop further.
    let out: Vec<_> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, addr(2));
    assert_eq!(out[0].payload, gossip(addr(0), id(1), 2, b"advert"));
    // The same message from the other neighbour: not delivered again, that link is pruned.
    let m2 = gossip(addr(2), id(1), 3, b"advert");
    core.handle_datagram(t, addr(2), &m2).expect("dup");
    assert_eq!(core.poll_event(), None);
    assert_eq!(transmits(&mut core), vec![(addr(2), KIND_PRUNE)]);
    assert_eq!(core.stats().duplicates, 1);
    assert_eq!(core.eager_peers(), vec![addr(1)]);
    assert_eq!(core.lazy_peers(), vec![addr(2)]);
    // A later message goes eagerly to addr(1) and is announced lazily to addr(2) at the flush.
    core.handle_datagram(t, addr(2), &header(KIND_PRUNE, 0, addr(2)))
        .expect("prune");
    core.broadcast(t, b"mine".to_vec()).expect("broadcast");
    assert_eq!(
        core.poll_event(),
        None,
        "no Delivered for our own broadcast"
    );
    assert_eq!(transmits(&mut core), vec![(addr(1), KIND_GOSSIP)]);
    let flush = core.poll_timeout().expect("flush armed");
    assert_eq!(flush, t + OverlayConfig::default().ihave_flush);
    core.handle_timeout(flush);
    assert_eq!(transmits(&mut core), vec![(addr(2), KIND_IHAVE)]);
    core.check_invariants();
}

#[test]
fn plumtree_messages_from_strangers_are_answered_with_disconnect() {
    let mut core = core_with_neighbours(OverlayConfig::default());
    let t = Timestamp::from_micros(10);
    let stranger = addr(9);
    // A new payload from a non-neighbour is still delivered (it is new), not made eager.
    core.handle_datagram(t, stranger, &gossip(stranger, id(5), 2, b"x"))
        .expect("gossip");
    assert!(matches!(
        core.poll_event(),
        Some(OverlayEvent::Delivered { hops: 2, .. })
    ));
    let out = transmits(&mut core);
    assert!(out.contains(&(stranger, KIND_DISCONNECT)), "{out:?}");
    assert!(!core.eager_peers().contains(&stranger));
    // IHave from a stranger: nothing tracked.
    core.handle_datagram(t, stranger, &ihave(stranger, &[id(6)]))
        .expect("ihave");
    assert_eq!(core.missing_messages(), 0);
    assert_eq!(transmits(&mut core), vec![(stranger, KIND_DISCONNECT)]);
    assert_eq!(core.stats().dropped_unknown_sender, 2);
}

#[test]
fn direct_messages_and_payload_limits() {
    let mut core = core_with_neighbours(OverlayConfig::default());
    let t = Timestamp::from_micros(10);
    core.send_direct(addr(9), b"digest".to_vec())
        .expect("direct");
    let t1 = core.poll_transmit().expect("direct datagram");
    assert_eq!(t1.dst, addr(9));
    let mut other = Overlay::new(addr(9), OverlayConfig::default(), 1);
    other
        .handle_datagram(t, addr(0), &t1.payload)
        .expect("direct in");
    assert_eq!(
        other.poll_event(),
        Some(OverlayEvent::Direct {
            from: addr(0),
            payload: b"digest".to_vec()
        })
    );
    let big = vec![0u8; OVERLAY_PAYLOAD_MAX + 1];
    assert!(matches!(
        core.broadcast(t, big.clone()),
        Err(OverlayError::TooLarge { .. })
    ));
    assert!(matches!(
        core.send_direct(addr(1), big),
        Err(OverlayError::TooLarge { .. })
    ));
    assert_eq!(core.stats().dropped_oversized, 2);
    assert!(core.broadcast(t, vec![7; OVERLAY_PAYLOAD_MAX]).is_ok());
    assert!(
        core.poll_transmit()
            .is_some_and(|t| t.payload.len() <= PACKET_BYTES_MAX)
    );
}

#[test]
fn every_cache_and_queue_stays_bounded_under_a_flood() {
    let cfg = OverlayConfig {
        messages_max: 16,
        missing_max: 8,
        lazy_queue_max: 16,
        transmit_queue_max: 32,
        events_max: 8,
        ..OverlayConfig::default()
    };
    let mut core = core_with_neighbours(cfg.clone());
    // addr(2) becomes lazy so that payloads are announced to it.
    let t = Timestamp::from_micros(10);
    core.handle_datagram(t, addr(2), &header(KIND_PRUNE, 0, addr(2)))
        .expect("prune");
    for n in 0..1000u64 {
        let t = Timestamp::from_micros(10 + n);
        core.handle_datagram(t, addr(1), &gossip(addr(1), id(n), 1, b"p"))
            .expect("gossip");
        core.handle_datagram(t, addr(1), &ihave(addr(1), &[id(100_000 + n)]))
            .expect("ihave");
        core.broadcast(t, b"own".to_vec()).expect("broadcast");
        // Nothing is drained: the driver has stalled.
        assert!(core.cached_messages() <= cfg.messages_max);
        assert!(core.missing_messages() <= cfg.missing_max);
        core.check_invariants();
    }
    let s = core.stats();
    assert_eq!(s.delivered, 1000, "every payload was new");
    assert_eq!(s.cache_evicted, 2000 - cfg.messages_max as u64);
    assert_eq!(s.dropped_missing, 1000 - cfg.missing_max as u64);
    assert_eq!(s.dropped_events, 1000 - cfg.events_max as u64);
    // Both the received and the own messages are announced to the lazy neighbour.
    assert_eq!(s.dropped_lazy, 2000 - cfg.lazy_queue_max as u64);
    // One Gossip per own broadcast to the eager neighbour; the queue holds 32 of them.
    assert_eq!(s.dropped_queue_full, 1000 - cfg.transmit_queue_max as u64);
    // Timers stay bounded too, and draining lets the core work normally again.
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    let end = Timestamp::from_micros(10) + Duration::from_secs(120);
    let mut now = Timestamp::from_micros(10);
    while let Some(d) = core.poll_timeout() {
        if d > end {
            break;
        }
        now = d;
        core.handle_timeout(now);
        while core.poll_transmit().is_some() {}
    }
    assert_eq!(core.missing_messages(), 0, "grafts given up");
    assert_eq!(
        core.cached_messages(),
        0,
        "every id expired after message_ttl"
    );
    core.handle_datagram(now, addr(1), &gossip(addr(1), id(5), 1, b"again"))
        .expect("after the flood");
    assert!(matches!(
        core.poll_event(),
        Some(OverlayEvent::Delivered { .. })
    ));
}

#[test]
fn bad_datagrams_are_rejected_and_change_nothing() {
    // Keepalive and rotation on, so their paths (and timers) are exercised too.
    let mut core = core_with_neighbours(OverlayConfig {
        rotate_period: Some(Duration::from_secs(5)),
        ..keepalive_config()
    });
    let t = Timestamp::from_micros(10);
    let good = gossip(addr(1), id(1), 1, b"payload");
    let before = (core.active_view(), core.cached_messages());
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut rejected = 0;
    for cut in 0..good.len() {
        assert!(core.handle_datagram(t, addr(1), &good[..cut]).is_err());
        rejected += 1;
    }
    let too_big = vec![0x4e; PACKET_BYTES_MAX + 1];
    assert!(matches!(
        core.handle_datagram(t, addr(1), &too_big),
        Err(OverlayError::TooLarge { .. })
    ));
    rejected += 1;
    let mut oversized_payload = header(KIND_GOSSIP, 0, addr(1));
    oversized_payload.extend_from_slice(&id(2).0);
    oversized_payload.extend_from_slice(&[0, 1, 0x05, 0x00]);
    oversized_payload.resize(PACKET_BYTES_MAX, 0);
    assert!(matches!(
        core.handle_datagram(t, addr(1), &oversized_payload),
        Err(OverlayError::TooLarge { .. })
    ));
    rejected += 1;
    let from_self = gossip(addr(0), id(3), 1, b"me");
    assert_eq!(
        core.handle_datagram(t, addr(1), &from_self),
        Err(OverlayError::FromSelf)
    );
    rejected += 1;
    assert_eq!(core.stats().rejected, rejected);
    assert_eq!((core.active_view(), core.cached_messages()), before);
    // Random mutations of real datagrams of every kind: accepted or refused, never a panic.
    let samples = [
        good.clone(),
        ihave(addr(2), &[id(7), id(8)]),
        accept(addr(3)),
        keepalive(addr(2)),
        header(0x11, 0, addr(1)),
        header(0x16, 0, addr(1)),
    ];
    for round in 0..3000 {
        let mut m = samples[round % samples.len()].clone();
        for _ in 0..(1 + rnd() % 4) {
            match rnd() % 3 {
                0 if !m.is_empty() => {
                    let i = (rnd() as usize) % m.len();
                    m[i] ^= 1 << (rnd() % 8);
                }
                1 => m.push(rnd() as u8),
                _ => {
                    let keep = (rnd() as usize) % (m.len() + 1);
                    m.truncate(keep);
                }
            }
        }
        let _ = core.handle_datagram(t, addr(1), &m);
        core.check_invariants();
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
    }
    core.handle_timeout(t + Duration::from_secs(100));
    core.check_invariants();
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut net = Net::bootstrap(25, config(), seed);
        for k in 0..5 {
            net.broadcast(k * 4, b"x");
            net.run(Duration::from_millis(500));
        }
        (
            net.log_hash,
            net.nodes.iter().map(|c| c.stats()).collect::<Vec<_>>(),
        )
    };
    let a = run(9);
    assert_eq!(a, run(9));
    assert_ne!(a.0, run(10).0);
}
