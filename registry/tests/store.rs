//! The CRDT store: merge order independence, leases, tombstones, node down, anti-entropy.

mod common;

use common::{chat, coord, key, node};
use nexus_registry::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn live(i: u8, service: &str, version: u64, ctx: u32) -> SignedAdvert {
    let mut sad = chat(service);
    sad.version = version;
    sad.context_window = ctx;
    Advert {
        origin: node(i),
        service: service.into(),
        version,
        body: AdvertBody::Live {
            sad: sad.into(),
            coord: Some(coord(0.5, 0.25)),
            credentials: None,
        },
    }
    .sign(&key(i))
    .expect("sign")
}

fn withdrawn(i: u8, service: &str, version: u64) -> SignedAdvert {
    Advert {
        origin: node(i),
        service: service.into(),
        version,
        body: AdvertBody::Withdrawn,
    }
    .sign(&key(i))
    .expect("sign")
}

/// Everything observable about a registry's state, for comparisons.
fn snapshot(r: &Registry) -> Vec<(ServiceKey, u64, RecordState, Vec<u8>)> {
    r.records()
        .map(|(k, e)| {
            (
                k.clone(),
                e.version(),
                e.state(),
                e.signed().to_bytes().to_vec(),
            )
        })
        .collect()
}

#[test]
fn merge_is_order_independent() {
    // Three origins, four services each, several versions, withdrawals, and an equivocation
    // (two different adverts with one version).
    let mut adverts = Vec::new();
    for i in 1..=3u8 {
        for s in 0..4 {
            let service = format!("svc-{s}");
            for v in 1..=4u64 {
                adverts.push(live(i, &service, v, 1000 * v as u32));
            }
            if s % 2 == 0 {
                adverts.push(withdrawn(i, &service, 3));
            }
            if s == 3 {
                adverts.push(withdrawn(i, &service, 5));
                adverts.push(live(i, &service, 5, 77));
            }
        }
        adverts.push(live(i, "equivocal", 9, 1));
        adverts.push(live(i, "equivocal", 9, 2));
    }
    let reference = {
        let mut r = Registry::new(node(0));
        for a in &adverts {
            r.apply(ms(0), a).expect("apply");
        }
        r.check_invariants();
        r
    };
    assert!(!reference.is_empty());
    for seed in 0..40u64 {
        let mut order = adverts.clone();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut r = Registry::new(node(0));
        for a in &order {
            r.apply(ms(0), a).expect("apply");
            // Duplicates are always stale.
            assert_eq!(r.apply(ms(0), a), Ok(Applied::Stale));
        }
        r.check_invariants();
        assert!(
            snapshot(&r) == snapshot(&reference),
            "seed {seed}: state differs"
        );
        assert_eq!(r.digest(), reference.digest(), "seed {seed}");
    }
    // The winners: version 4 live for odd services, withdrawal at 5 for svc-3.
    let svc1 = reference
        .get(&ServiceKey::new(node(1), "svc-1"))
        .expect("live");
    assert_eq!(svc1.version(), 4);
    let svc3 = reference
        .record(&ServiceKey::new(node(1), "svc-3"))
        .expect("held");
    assert_eq!((svc3.version(), svc3.state()), (5, RecordState::Withdrawn));
}

#[test]
fn apply_reports_what_changed() {
    let mut r = Registry::new(node(0));
    assert_eq!(r.apply(ms(0), &live(1, "a", 2, 10)), Ok(Applied::Inserted));
    assert_eq!(r.apply(ms(0), &live(1, "a", 1, 10)), Ok(Applied::Stale));
    assert_eq!(r.apply(ms(0), &live(1, "a", 3, 10)), Ok(Applied::Updated));
    assert_eq!(
        r.apply(ms(0), &withdrawn(1, "a", 3)),
        Ok(Applied::Withdrawn),
        "withdrawal wins a tie"
    );
    assert_eq!(r.apply(ms(0), &live(1, "a", 3, 10)), Ok(Applied::Stale));
    assert_eq!(
        r.apply(ms(0), &live(1, "a", 4, 10)),
        Ok(Applied::Inserted),
        "a newer version re-adds"
    );
    r.check_invariants();
}

#[test]
fn leases_expire_and_guards_are_dropped_later() {
    let mut r = Registry::new(node(0));
    let a = live(1, "a", 1, 10); // ttl 30 s
    r.apply(ms(1_000), &a).expect("apply");
    let k = ServiceKey::new(node(1), "a");
    assert_eq!(r.get(&k).expect("live").expires_at(), ms(31_000));
    assert_eq!(r.poll_timeout(), Some(ms(31_000)));
    assert!(r.expire(ms(30_999)).is_empty());
    // Resolve already ignores an entry whose lease ended, before expire runs.
    let intent = Intent::new("llm.chat");
    let at = |now| ResolveContext {
        now,
        local_coord: None,
        trust: None,
    };
    assert_eq!(r.resolve(&intent, &at(ms(30_999))).candidates.len(), 1);
    assert_eq!(r.resolve(&intent, &at(ms(31_000))).candidates.len(), 0);
    assert_eq!(r.expire(ms(31_000)), vec![k.clone()]);
    assert!(r.get(&k).is_none());
    assert_eq!(r.record(&k).expect("guard").state(), RecordState::Expired);
    // The same version gossiped again does not come back; a newer one does.
    assert_eq!(r.apply(ms(32_000), &a), Ok(Applied::Stale));
    assert_eq!(r.poll_timeout(), Some(ms(31_000) + TOMBSTONE_TTL));
    assert!(r.expire(ms(31_000) + TOMBSTONE_TTL).is_empty());
    assert!(r.record(&k).is_none(), "guard dropped");
    assert_eq!(r.stats().records, 0);
    r.check_invariants();
}

#[test]
fn resolve_sees_a_lease_end_to_the_microsecond() {
    // Applied half a millisecond after a whole one: the lease (30 s) ends at 31 000 500 µs, and
    // resolve keeps it until then, not until a rounded millisecond.
    let mut r = Registry::new(node(0));
    r.apply(Timestamp::from_micros(1_000_500), &live(1, "a", 1, 10))
        .expect("apply");
    let k = ServiceKey::new(node(1), "a");
    let end = Timestamp::from_micros(31_000_500);
    assert_eq!(r.get(&k).expect("live").expires_at(), end);
    let intent = Intent::new("llm.chat");
    let at = |now| ResolveContext {
        now,
        local_coord: None,
        trust: None,
    };
    let before = Timestamp::from_micros(31_000_499);
    assert_eq!(r.resolve(&intent, &at(before)).candidates.len(), 1);
    assert_eq!(
        r.resolve_reference(&intent, &at(before)).candidates.len(),
        1
    );
    let mut explained = intent.clone();
    explained.explain = true;
    let ended = r.resolve(&explained, &at(end));
    assert!(ended.candidates.is_empty());
    // The explanation still counts in whole milliseconds.
    assert_eq!(ended.excluded.len(), 1);
    assert_eq!(
        ended.excluded[0].reason,
        "lease ended at 31000 ms (now 31000 ms)"
    );
}

#[test]
fn a_newer_version_renews_the_lease() {
    let mut r = Registry::new(node(0));
    r.apply(ms(0), &live(1, "a", 1, 10)).expect("apply");
    r.apply(ms(20_000), &live(1, "a", 2, 10)).expect("apply");
    assert!(r.expire(ms(30_000)).is_empty());
    assert_eq!(r.expire(ms(50_000)).len(), 1);
}

#[test]
fn tombstones_prevent_resurrection_until_their_ttl() {
    let mut r = Registry::new(node(0));
    r.apply(ms(0), &live(1, "a", 1, 10)).expect("apply");
    assert_eq!(
        r.apply(ms(0), &withdrawn(1, "a", 2)),
        Ok(Applied::Withdrawn)
    );
    assert!(r.is_empty());
    assert_eq!(r.apply(ms(5), &live(1, "a", 1, 10)), Ok(Applied::Stale));
    assert_eq!(r.apply(ms(5), &live(1, "a", 2, 10)), Ok(Applied::Stale));
    assert!(r.is_empty());
    // A withdrawal that arrives before the live advert it supersedes.
    let mut r2 = Registry::new(node(0));
    r2.apply(ms(0), &withdrawn(1, "b", 5)).expect("apply");
    assert_eq!(r2.apply(ms(0), &live(1, "b", 4, 10)), Ok(Applied::Stale));
    assert!(r2.is_empty());
    // After the tombstone TTL it is gone, and then (only then) an old advert could return.
    assert!(r2.expire(Timestamp::ZERO + TOMBSTONE_TTL).is_empty());
    assert_eq!(r2.stats().records, 0);
}

#[test]
fn node_down_withdraws_and_guards() {
    let mut r = Registry::new(node(0));
    for s in ["a", "b", "c"] {
        r.apply(ms(0), &live(1, s, 3, 10)).expect("apply");
    }
    r.apply(ms(0), &live(2, "a", 1, 10)).expect("apply");
    let digest_before = r.digest();
    let down = r.node_down(node(1));
    assert_eq!(down.len(), 3);
    assert_eq!(r.len(), 1);
    assert!(r.iter().all(|(k, _)| k.node == node(2)));
    // The signed state is unchanged, so the digest is too (down is a local view).
    assert_eq!(r.digest(), digest_before);
    assert_eq!(r.adverts_of(node(1)).len(), 3);
    assert!(r.node_down(node(1)).is_empty(), "idempotent");
    // Re-gossiped old adverts do not revive; a newer version does.
    assert_eq!(r.apply(ms(0), &live(1, "a", 3, 10)), Ok(Applied::Stale));
    assert_eq!(r.apply(ms(0), &live(1, "a", 4, 10)), Ok(Applied::Inserted));
    assert_eq!(r.len(), 2);
    r.check_invariants();
}

#[test]
fn publish_and_withdraw_local_services() {
    let me = key(7);
    let mut r = Registry::new(node(7));
    let a1 = r.publish(ms(0), chat("svc"), None, &me).expect("publish");
    assert_eq!(a1.version(), 1);
    let a2 = r
        .publish(ms(0), chat("svc"), Some(coord(1.0, 0.0)), &me)
        .expect("publish");
    assert_eq!(a2.version(), 2);
    let mut min = chat("svc");
    min.version = 100;
    assert_eq!(
        r.publish(ms(0), min, None, &me).expect("publish").version(),
        100
    );
    assert_eq!(r.local_services().count(), 1);
    assert_eq!(
        r.local_services()
            .next()
            .expect("one")
            .sad()
            .expect("sad")
            .version,
        100
    );
    // Wrong key, invalid SAD.
    assert_eq!(
        r.publish(ms(0), chat("x"), None, &key(1))
            .expect_err("key")
            .field,
        "key"
    );
    let mut bad = chat("x");
    bad.ttl_s = 1;
    assert_eq!(
        r.publish(ms(0), bad, None, &me).expect_err("ttl").field,
        "ttl_s"
    );

    let w = r.withdraw(ms(0), "svc", &me).expect("withdraw");
    assert_eq!(w.version(), 101);
    assert!(w.is_withdrawal());
    assert!(r.withdraw(ms(0), "svc", &me).is_none(), "already withdrawn");
    assert!(r.withdraw(ms(0), "nope", &me).is_none());
    assert_eq!(r.local_services().count(), 0);

    // Other nodes accept both, in either order, and end withdrawn.
    let mut other = Registry::new(node(8));
    assert_eq!(other.apply(ms(0), &w), Ok(Applied::Withdrawn));
    assert_eq!(other.apply(ms(0), &a2), Ok(Applied::Stale));
    r.check_invariants();
}

#[test]
fn version_floor_outranks_pre_restart_adverts() {
    let me = key(7);
    let mut before = Registry::new(node(7));
    before.set_version_floor(version_floor(1));
    let mut old = None;
    for _ in 0..5 {
        old = Some(
            before
                .publish(ms(0), chat("svc"), None, &me)
                .expect("publish"),
        );
    }
    let old = old.expect("published");
    // Restart: empty store, next generation.
    let mut after = Registry::new(node(7));
    after.set_version_floor(version_floor(2));
    let new = after
        .publish(ms(0), chat("svc"), None, &me)
        .expect("publish");
    assert!(new.version() > old.version());
    let mut peer = Registry::new(node(1));
    peer.apply(ms(0), &new).expect("apply");
    assert_eq!(peer.apply(ms(0), &old), Ok(Applied::Stale));
}

#[test]
fn capacity_per_node_is_enforced() {
    let me = key(3);
    let mut r = Registry::new(node(3));
    for s in 0..SERVICES_PER_NODE_MAX {
        r.publish(ms(0), chat(&format!("s{s}")), None, &me)
            .expect("publish");
    }
    let extra = live(3, "one-too-many", 1, 10);
    let mut other = Registry::new(node(0));
    for a in r.adverts_of(node(3)) {
        other.apply(ms(0), &a).expect("apply");
    }
    assert!(matches!(
        other.apply(ms(0), &extra),
        Err(AdvertError::Full(_))
    ));
    assert_eq!(other.len(), SERVICES_PER_NODE_MAX);
    // Updates of held services still go through.
    assert_eq!(
        other.apply(ms(0), &live(3, "s0", 50, 10)),
        Ok(Applied::Updated)
    );
}

/// One anti-entropy exchange in both directions, through the wire form of the digests
/// (split into datagram-sized chunks).
fn exchange(a: &mut Registry, b: &mut Registry, now: Timestamp) -> usize {
    let mut sent = 0;
    for chunk in a.digest().split(DIGEST_CHUNK_ORIGINS) {
        let bytes = chunk.to_bytes();
        assert!(bytes.len() <= 1200);
        let remote = Digest::from_bytes(&bytes).expect("digest");
        for origin in b.differing(&remote) {
            for advert in b.adverts_of(origin) {
                let wire = SignedAdvert::from_bytes(advert.to_bytes()).expect("advert");
                a.apply(now, &wire).expect("apply");
                sent += 1;
            }
        }
    }
    for chunk in b.digest().split(DIGEST_CHUNK_ORIGINS) {
        let remote = Digest::from_bytes(&chunk.to_bytes()).expect("digest");
        for origin in a.differing(&remote) {
            for advert in a.adverts_of(origin) {
                b.apply(now, &advert).expect("apply");
                sent += 1;
            }
        }
    }
    sent
}

#[test]
fn two_diverged_registries_converge_by_digest_exchange() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut all = Vec::new();
    for i in 1..=40u8 {
        for s in 0..3 {
            let service = format!("svc-{s}");
            let v = rng.random_range(1..5u64);
            all.push(live(i, &service, v, 100));
            if rng.random_bool(0.2) {
                all.push(withdrawn(i, &service, v + 1));
            }
            if rng.random_bool(0.3) {
                all.push(live(i, &service, v + 2, 200));
            }
        }
    }
    let mut a = Registry::new(node(100));
    let mut b = Registry::new(node(101));
    let mut union = Registry::new(node(102));
    for advert in &all {
        // Each side saw a random ~60 % of the traffic.
        let to_a = rng.random_bool(0.6);
        let to_b = rng.random_bool(0.6);
        if to_a {
            a.apply(ms(0), advert).expect("apply");
        }
        if to_b {
            b.apply(ms(0), advert).expect("apply");
        }
        if to_a || to_b {
            union.apply(ms(0), advert).expect("apply");
        }
    }
    assert_ne!(a.digest(), b.digest());
    assert!(!a.differing(&b.digest()).is_empty());
    let first = exchange(&mut a, &mut b, Timestamp::ZERO);
    assert!(first > 0);
    assert_eq!(a.digest(), b.digest());
    assert!(a.differing(&b.digest()).is_empty());
    assert!(
        snapshot(&a) == snapshot(&b),
        "same records after one exchange"
    );
    // And both equal a registry that saw everything either of them saw.
    assert!(
        snapshot(&a) == snapshot(&union),
        "a = union of what a and b saw"
    );
    assert_eq!(
        exchange(&mut a, &mut b, Timestamp::ZERO),
        0,
        "nothing left to send"
    );
    a.check_invariants();
    b.check_invariants();
}

#[test]
fn differing_respects_a_partial_range() {
    let mut a = Registry::new(node(100));
    for i in 1..=60u8 {
        a.apply(ms(0), &live(i, "s", 1, 1)).expect("apply");
    }
    let b = Registry::new(node(101));
    let chunks = a.digest().split(DIGEST_CHUNK_ORIGINS);
    assert_eq!(chunks.len(), 3);
    let mut seen = Vec::new();
    for c in &chunks {
        // b is empty: it lacks exactly the origins in this chunk, nothing outside it.
        let diff = b.differing(c);
        assert_eq!(diff, c.origins.iter().map(|o| o.node).collect::<Vec<_>>());
        seen.extend(diff);
    }
    assert_eq!(seen.len(), 60);
    // Chunks tile the id space without overlap.
    for w in chunks.windows(2) {
        assert!(w[0].last < w[1].first);
    }
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
