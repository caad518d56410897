//! Drives several membership cores over an in-test network in virtual time and asserts on what
//! they report: join, crash detection within the configured bound, graceful leave, restart as a
//! newer generation, determinism, and rejection of bad datagrams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nexus_gossip::{
    Event, InputError, MemberId, MemberMeta, MemberState, Membership, MembershipConfig, NodeId,
    Timestamp,
};

const LATENCY: Duration = Duration::from_millis(2);

fn config() -> MembershipConfig {
    MembershipConfig {
        probe_period: Duration::from_millis(200),
        probe_rtt: Duration::from_millis(80),
        suspect_to_down: Duration::from_millis(600),
        join_retry_min: Duration::from_millis(100),
        join_retry_max: Duration::from_millis(800),
        ..MembershipConfig::default()
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

fn identity(i: usize, generation: u64) -> MemberId {
    let meta = MemberMeta::new(format!("n{i}"), None, "test", vec![]).expect("meta");
    MemberId::new(addr(i), NodeId([i as u8 + 1; 32]), generation, meta)
}

/// A tiny discrete-event network: fixed latency, nodes that can be crashed.
struct Net {
    now: Timestamp,
    nodes: BTreeMap<SocketAddr, Membership>,
    in_flight: BTreeMap<(Timestamp, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    log: Vec<String>,
    /// Directed links whose datagrams are dropped.
    blocked: Vec<(SocketAddr, SocketAddr)>,
}

impl Net {
    fn new() -> Self {
        Net {
            now: Timestamp::ZERO,
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
            blocked: Vec::new(),
        }
    }

    fn start(&mut self, i: usize, generation: u64, seeds: &[SocketAddr], seed: u64) {
        let mut core = Membership::new(identity(i, generation), config(), seed + i as u64);
        core.join(self.now, seeds);
        self.nodes.insert(addr(i), core);
        self.flush(addr(i));
    }

    fn flush(&mut self, from: SocketAddr) {
        let Some(core) = self.nodes.get_mut(&from) else {
            return;
        };
        core.check_invariants();
        while let Some(t) = core.poll_transmit() {
            self.log.push(format!(
                "{} {from} -> {} {}B",
                self.now.as_micros(),
                t.dst,
                t.payload.len()
            ));
            self.seq += 1;
            self.in_flight
                .insert((self.now + LATENCY, self.seq), (from, t.dst, t.payload));
        }
        while let Some(event) = core.poll_event() {
            if !matches!(event, Event::ProbeRtt { .. }) {
                self.log
                    .push(format!("{} {from} {event:?}", self.now.as_micros()));
            }
        }
    }

    /// Advances virtual time to `until`, delivering datagrams and firing timers in order.
    fn run_until(&mut self, until: Timestamp) {
        loop {
            let next_msg = self.in_flight.keys().next().map(|k| k.0);
            let next_timer = self.nodes.values().filter_map(|c| c.poll_timeout()).min();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = next;
            if let Some(entry) = self.in_flight.first_entry()
                && entry.key().0 <= self.now
            {
                let (from, to, payload) = entry.remove();
                if self.blocked.contains(&(from, to)) {
                    continue;
                }
                if let Some(core) = self.nodes.get_mut(&to) {
                    let _ = core.handle_datagram(self.now, from, &payload);
                    self.flush(to);
                }
                continue;
            }
            let due: Vec<SocketAddr> = self
                .nodes
                .iter()
                .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= self.now))
                .map(|(a, _)| *a)
                .collect();
            for a in due {
                if let Some(core) = self.nodes.get_mut(&a) {
                    core.handle_timeout(self.now);
                }
                self.flush(a);
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn state_of(&self, viewer: usize, subject: usize) -> Option<MemberState> {
        self.nodes[&addr(viewer)]
            .members()
            .into_iter()
            .find(|m| m.id.addr() == addr(subject))
            .map(|m| m.state)
    }

    fn alive_count(&self, viewer: usize) -> usize {
        self.nodes[&addr(viewer)]
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
    }
}

fn three_nodes(seed: u64) -> Net {
    let mut net = Net::new();
    net.start(0, 1, &[], seed);
    net.start(1, 1, &[addr(0)], seed);
    net.start(2, 1, &[addr(0)], seed);
    net.run_for(Duration::from_secs(3));
    net
}

#[test]
fn three_nodes_join_through_one_seed() {
    let net = three_nodes(1);
    for i in 0..3 {
        assert_eq!(
            net.alive_count(i),
            3,
            "node {i} sees {:?}",
            net.nodes[&addr(i)].members()
        );
    }
    let me = &net.nodes[&addr(1)].members()[0];
    assert!(me.local);
    assert_eq!(me.id.meta().name(), "n1");
}

#[test]
fn join_retries_with_backoff_until_the_seed_appears() {
    let mut net = Net::new();
    net.start(1, 1, &[addr(0)], 5);
    net.run_for(Duration::from_secs(3));
    let attempts = net.nodes[&addr(1)].stats().join_attempts;
    // 100, 200, 400, 800, 800, … ms: 5 or 6 attempts in 3 s, not 30.
    assert!((4..=7).contains(&attempts), "attempts = {attempts}");
    net.start(0, 1, &[], 5);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.alive_count(1), 2);
    assert_eq!(net.alive_count(0), 2);
}

#[test]
fn crash_is_detected_within_the_configured_bound() {
    let mut net = three_nodes(2);
    net.nodes.remove(&addr(2));
    let crashed_at = net.now;
    let bound = config().detection_bound(3);
    let step = Duration::from_millis(10);
    let mut seen_suspect = false;
    while net.now - crashed_at <= bound {
        net.run_for(step);
        seen_suspect |= net.state_of(0, 2) == Some(MemberState::Suspect)
            || net.state_of(1, 2) == Some(MemberState::Suspect);
        if net.state_of(0, 2) == Some(MemberState::Down)
            && net.state_of(1, 2) == Some(MemberState::Down)
        {
            break;
        }
    }
    assert_eq!(net.state_of(0, 2), Some(MemberState::Down));
    assert_eq!(net.state_of(1, 2), Some(MemberState::Down));
    assert!(
        seen_suspect,
        "a member is suspected before it is declared down"
    );
    assert!(
        net.log
            .iter()
            .any(|l| l.contains("MemberDown") && l.contains("left: false"))
    );
}

#[test]
fn graceful_leave_is_reported_as_left() {
    let mut net = three_nodes(3);
    let now = net.now;
    let core = net.nodes.get_mut(&addr(2)).expect("node 2");
    core.leave(now);
    assert_eq!(core.members()[0].state, MemberState::Left);
    net.flush(addr(2));
    net.run_for(Duration::from_millis(100));
    net.nodes.remove(&addr(2));
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.state_of(0, 2), Some(MemberState::Left));
    assert_eq!(net.state_of(1, 2), Some(MemberState::Left));
}

#[test]
fn restart_rejoins_as_a_newer_generation() {
    let mut net = three_nodes(4);
    net.nodes.remove(&addr(2));
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.state_of(0, 2), Some(MemberState::Down));
    net.start(2, 2, &[addr(0)], 4);
    net.run_for(Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(net.alive_count(i), 3, "node {i}");
    }
    let row = net.nodes[&addr(0)]
        .members()
        .into_iter()
        .find(|m| m.id.addr() == addr(2))
        .expect("row");
    assert_eq!(row.id.generation(), 2);
    // One row per node id: the old generation is replaced, not listed beside the new one.
    assert_eq!(net.nodes[&addr(0)].members().len(), 3);
    assert!(net.log.iter().any(|l| l.contains("MemberReplaced")));
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let run = |seed| {
        let mut net = three_nodes(seed);
        net.nodes.remove(&addr(1));
        net.run_for(Duration::from_secs(3));
        net.log
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn bad_datagrams_are_rejected_and_change_nothing() {
    let mut net = three_nodes(6);
    let now = net.now;
    let core = net.nodes.get_mut(&addr(0)).expect("node 0");
    let before = core.members();
    let from = addr(9);
    const V: u8 = nexus_gossip::WIRE_VERSION;
    assert!(matches!(
        core.handle_datagram(now, from, &[]),
        Err(InputError::Short(0))
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &[0x00, 1, 2, 3]),
        Err(InputError::BadMagic(0))
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &[0x4e, 9, 0]),
        Err(InputError::UnsupportedVersion(9))
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &vec![0x4e; 5000]),
        Err(InputError::TooBig(5000))
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &[0x4e, V, 1, 0, 0xff, 0xff, 0xff]),
        Err(InputError::Rejected(_))
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &[0x4e, V, 9, 0, 1]),
        Err(InputError::UnknownKind { kind: 9, flags: 0 })
    ));
    assert!(matches!(
        core.handle_datagram(now, from, &[0x4e, V, 1, 7, 1]),
        Err(InputError::UnknownKind { kind: 1, flags: 7 })
    ));
    // State sync chunks: zero members, a count above the chunk limit, a truncated member.
    // Digests: a truncated sender, a wrong bucket count, a short body, our own identity.
    let own = core.identity().clone();
    let digest = |id: &MemberId, buckets: u16, body: usize| {
        let mut d = vec![0x4e, V, 2, 1];
        // A member: the identity as a byte string, incarnation 0, state alive (bincode varints).
        d.push(id.wire().len() as u8);
        d.extend_from_slice(id.wire());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&buckets.to_be_bytes());
        d.extend(std::iter::repeat_n(0u8, body));
        d
    };
    let meta = MemberMeta::new("x", None, "1", vec![]).expect("meta");
    let stranger = MemberId::new(addr(9), NodeId([9; 32]), 1, meta);
    for bad in [
        vec![0x4e, V, 3, 0, 0, 0],
        vec![0x4e, V, 3, 0, 0xff, 0xff],
        vec![0x4e, V, 3, 0, 0, 1, 0xab],
        vec![0x4e, V, 2, 1, 0x30, 4, 127],
        digest(&stranger, 64, 640),
        digest(&stranger, nexus_gossip::SYNC_BUCKETS as u16, 100),
        digest(
            &own,
            nexus_gossip::SYNC_BUCKETS as u16,
            nexus_gossip::SYNC_BUCKETS * 10,
        ),
    ] {
        assert!(
            matches!(
                core.handle_datagram(now, from, &bad),
                Err(InputError::BadSync(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(core.stats().rejected_in, 14);
    assert_eq!(core.members(), before);
}

#[test]
fn state_sync_fills_in_members_a_lost_reply_left_out() {
    // Node 3 joins through node 0, but every datagram from 0 to 3 is lost, so it never gets the
    // seed's reply and must learn the members (node 0 included) from the others.
    let mut net = three_nodes(8);
    net.blocked.push((addr(0), addr(3)));
    net.start(3, 1, &[addr(0)], 8);
    let sync_period = config().probe_period * nexus_gossip::ANTI_ENTROPY_PERIODS;
    net.run_for(sync_period * 3);
    assert_eq!(net.alive_count(3), 4, "{:?}", net.nodes[&addr(3)].members());
    assert!(net.nodes.values().any(|c| c.stats().sync_rounds > 0));
}
