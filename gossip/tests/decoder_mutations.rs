//! Seeded mutation testing of the membership decoder, run on every `cargo test`: real datagrams
//! captured from a small cluster are bit-flipped, truncated, extended and spliced, and fed to a
//! live core. The core must reject or accept each one without panicking, keep its invariants,
//! and keep working afterwards. (Coverage-guided fuzzing of the same entry point: gossip/fuzz.)

use std::net::SocketAddr;
use std::time::Duration;

use nexus_gossip::testkit::{self, Mutations};
use nexus_gossip::{
    MemberId, MemberMeta, MemberState, Membership, MembershipConfig, NodeId, Timestamp,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i))
}

fn core(i: u16) -> Membership {
    let meta = MemberMeta::new(format!("m{i}"), Some(addr(100 + i)), "1", vec!["ca".into()])
        .expect("meta");
    Membership::new(
        MemberId::new(addr(i), NodeId([i as u8 + 1; 32]), 1, meta),
        MembershipConfig::default(),
        i as u64,
    )
}

/// Runs two cores against each other for a while and returns every datagram they exchanged.
fn capture() -> Vec<Vec<u8>> {
    let mut a = core(0);
    let mut b = core(1);
    let mut now = Timestamp::ZERO;
    a.join(now, &[]);
    b.join(now, &[addr(0)]);
    let mut captured = Vec::new();
    for _ in 0..400 {
        now = now + Duration::from_millis(50);
        a.handle_timeout(now);
        b.handle_timeout(now);
        let mut to_a = Vec::new();
        let mut to_b = Vec::new();
        while let Some(t) = a.poll_transmit() {
            to_b.push(t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            to_a.push(t.payload);
        }
        for p in to_a {
            let _ = a.handle_datagram(now, addr(1), &p);
            captured.push(p);
        }
        for p in to_b {
            let _ = b.handle_datagram(now, addr(0), &p);
            captured.push(p);
        }
    }
    b.leave(now);
    while let Some(t) = b.poll_transmit() {
        captured.push(t.payload);
    }
    captured
}

/// The datagram mutator with the wire prefix kept valid by one kind of edit, so mutations reach
/// foca's decoder.
fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let prefix = [nexus_gossip::WIRE_MAGIC, nexus_gossip::WIRE_VERSION];
    let how = Mutations {
        edits_max: 4,
        keep_prefix: Some(&prefix),
    };
    testkit::mutate(rng, corpus, how)
}

#[test]
fn mutated_datagrams_never_panic_and_leave_the_core_working() {
    let corpus = capture();
    assert!(corpus.len() > 50, "captured {} datagrams", corpus.len());
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut victim = core(5);
    let mut now = Timestamp::ZERO;
    victim.join(now, &[]);
    let mut rejected = 0u64;
    for i in 0..20_000u32 {
        let d = mutate(&mut rng, &corpus);
        if victim.handle_datagram(now, addr(9), &d).is_err() {
            rejected += 1;
        }
        while victim.poll_transmit().is_some() {}
        while victim.poll_event().is_some() {}
        if i % 100 == 0 {
            now = now + Duration::from_millis(100);
            victim.handle_timeout(now);
        }
        victim.check_invariants();
    }
    assert!(
        rejected > 1000,
        "mutations reach the error paths ({rejected} rejected)"
    );
    assert_eq!(victim.stats().rejected_in, rejected);
    // Still functional: a fresh peer can join it.
    let mut peer = core(6);
    peer.join(now, &[addr(5)]);
    for _ in 0..40 {
        now = now + Duration::from_millis(50);
        peer.handle_timeout(now);
        victim.handle_timeout(now);
        while let Some(t) = peer.poll_transmit() {
            if t.dst == addr(5) {
                let _ = victim.handle_datagram(now, addr(6), &t.payload);
            }
        }
        while let Some(t) = victim.poll_transmit() {
            if t.dst == addr(6) {
                let _ = peer.handle_datagram(now, addr(5), &t.payload);
            }
        }
    }
    assert!(
        peer.members()
            .iter()
            .any(|m| m.id.addr() == addr(5) && m.state == MemberState::Alive),
        "{:?}",
        peer.members()
    );
}
