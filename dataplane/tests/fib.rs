//! Behaviour of the forwarding table through its public API: compile → load round trips against a
//! `BTreeMap` reference, rejection of corrupted images, the weighted choice, and generation swaps
//! under concurrent lookups.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nexus_dataplane::fib::{
    Fib, FibTable, HEADER_LEN, InstallError, LoadError, NextHop, ROUTES_MAX, RollbackError,
    RouteError, RouteSet, RoutingKey, SourceIp, SourceSet, TABLE_FORMAT_VERSION, TableImage,
    compile,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn hop(node: u8, port: u16, weight: u32) -> NextHop {
    NextHop {
        node: [node; 32],
        addr: SocketAddr::from(([10, 0, 0, node], port)),
        weight,
        rewrite: None,
    }
}

fn load(routes: &RouteSet) -> FibTable {
    let image = compile(routes).expect("compiles");
    FibTable::load(image).expect("a freshly compiled image loads")
}

fn empty_fib() -> Fib {
    Fib::new(load(&RouteSet::new(0)))
}

/// A key drawn from one of several shapes: uniformly random, small integers, and keys that share
/// one 64-bit half (patterns a weak slot hash would pile up).
fn random_key(rng: &mut StdRng) -> RoutingKey {
    match rng.random_range(0..4) {
        0 => RoutingKey(rng.random()),
        1 => RoutingKey(rng.random_range(0..4096)),
        2 => RoutingKey(u128::from(rng.random::<u64>()) << 64 | 0xfeed),
        _ => RoutingKey(0xabcd << 64 | u128::from(rng.random::<u64>())),
    }
}

/// A per-service routing key for tests: service `service` on node `node`.
fn service_key(node: u8, service: u8) -> RoutingKey {
    RoutingKey(0x5e41_0000 | u128::from(node) << 8 | u128::from(service))
}

/// A random valid group: 1..=8 nodes from a pool of 24, so that groups repeat across keys
/// (deduplication) and also differ. A third of the nodes' hops rewrite the key to the node's
/// service 0, and a sixth of the nodes get two hops at one address rewriting to services 0 and
/// 1 (two services behind one data-plane address).
fn random_group(rng: &mut StdRng) -> Vec<NextHop> {
    let count = rng.random_range(1..=8);
    let mut nodes: Vec<u8> = Vec::new();
    while nodes.len() < count {
        let node = rng.random_range(1..=24u8);
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    let mut hops = Vec::new();
    for node in nodes {
        let base = hop(node, 7000 + u16::from(node), rng.random_range(1..=100));
        match rng.random_range(0..6) {
            0 | 1 => hops.push(NextHop {
                rewrite: Some(service_key(node, 0)),
                ..base
            }),
            2 => {
                hops.push(NextHop {
                    rewrite: Some(service_key(node, 0)),
                    ..base
                });
                hops.push(NextHop {
                    rewrite: Some(service_key(node, 1)),
                    weight: rng.random_range(1..=100),
                    ..base
                });
            }
            _ => hops.push(base),
        }
    }
    hops
}

fn random_route_set(
    seed: u64,
    routes_max: usize,
) -> (RouteSet, BTreeMap<RoutingKey, Vec<NextHop>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let count = rng.random_range(0..=routes_max);
    let mut set = RouteSet::new(seed + 1);
    let mut reference = BTreeMap::new();
    for _ in 0..count {
        let key = random_key(&mut rng);
        let mut group = random_group(&mut rng);
        set.insert(key, group.clone())
            .expect("valid by construction");
        group.sort();
        reference.insert(key, group);
    }
    (set, reference)
}

#[test]
fn round_trip_keeps_every_route() {
    let mut set = RouteSet::new(7);
    set.insert(RoutingKey(1), vec![hop(2, 9000, 1), hop(1, 9000, 3)])
        .expect("valid");
    set.insert(RoutingKey(u128::MAX), vec![hop(3, 9001, 5)])
        .expect("valid");
    set.insert(RoutingKey(0), vec![hop(1, 9000, 3), hop(2, 9000, 1)])
        .expect("valid");
    let table = load(&set);

    assert_eq!(table.generation(), 7);
    assert_eq!(table.len(), 3);
    let stats = table.stats();
    assert_eq!(stats.entries, 3);
    assert_eq!(stats.groups, 2, "keys 0 and 1 share one group");
    assert_eq!(stats.next_hops, 3);
    assert_eq!(stats.slots, 8);

    let group = table.lookup(RoutingKey(1)).expect("a route");
    assert_eq!(group.to_vec(), vec![hop(1, 9000, 3), hop(2, 9000, 1)]);
    assert_eq!(group.weight_total(), 4);
    assert_eq!(
        table.lookup(RoutingKey(0)).expect("a route").id(),
        group.id()
    );
    let max = table.lookup(RoutingKey(u128::MAX)).expect("a route");
    assert_eq!(max.to_vec(), vec![hop(3, 9001, 5)]);
    assert!(table.lookup(RoutingKey(2)).is_none());

    let keys: Vec<RoutingKey> = table.entries().map(|entry| entry.key).collect();
    assert_eq!(
        keys,
        vec![RoutingKey(0), RoutingKey(1), RoutingKey(u128::MAX)]
    );
}

#[test]
fn round_trip_keeps_rewrites_and_two_services_on_one_node() {
    // Intent class K: two services on node 2 behind its one data-plane address (each rewrites
    // to its own service key), and node 3, which keeps the key.
    let class = RoutingKey(0xc1a5_5000_0000_0000_0000_0000_0000_0001);
    let service = |id: u8, weight: u32| NextHop {
        rewrite: Some(service_key(2, id)),
        ..hop(2, 9000, weight)
    };
    let group = vec![service(1, 1), hop(3, 9000, 2), service(0, 3)];
    let mut set = RouteSet::new(9);
    set.insert(class, group.clone())
        .expect("distinct rewrites are distinct hops");
    // The same next hops without rewrites: a different group, not deduplicated with K's.
    let plain: Vec<NextHop> = group
        .iter()
        .map(|hop| NextHop {
            rewrite: None,
            ..*hop
        })
        .filter(|hop| hop.weight != 1)
        .collect();
    set.insert(RoutingKey(2), plain.clone()).expect("valid");
    let table = load(&set);
    assert_eq!(table.stats().groups, 2);
    assert_eq!(table.stats().next_hops, 5);

    let found = table.lookup(class).expect("a route");
    let mut expected = group.clone();
    expected.sort();
    assert_eq!(found.to_vec(), expected);
    assert_eq!(
        found.iter().map(|hop| hop.rewrite()).collect::<Vec<_>>(),
        vec![Some(service_key(2, 1)), Some(service_key(2, 0)), None],
        "canonical order: node, address, weight (1 before 3), rewrite"
    );
    assert_eq!(found.weight_total(), 6);
    let mut plain_sorted = plain;
    plain_sorted.sort();
    assert_eq!(
        table.lookup(RoutingKey(2)).expect("a route").to_vec(),
        plain_sorted
    );

    // Every flow lands on one of the three hops, in proportion 3 : 1 : 2, and the hop it lands
    // on carries that hop's rewrite.
    let mut counts: BTreeMap<Option<RoutingKey>, u32> = BTreeMap::new();
    for flow in 0..6000u64 {
        let chosen = table.route(class, flow).expect("a route");
        assert_eq!(chosen.to_next_hop().rewrite, chosen.rewrite());
        *counts.entry(chosen.rewrite()).or_default() += 1;
    }
    let share = |rewrite| counts.get(&rewrite).copied().unwrap_or(0);
    assert!(
        (2800..=3200).contains(&share(Some(service_key(2, 0)))),
        "{counts:?}"
    );
    assert!(
        (850..=1150).contains(&share(Some(service_key(2, 1)))),
        "{counts:?}"
    );
    assert!((1800..=2200).contains(&share(None)), "{counts:?}");

    // Two hops with one rewrite at one address are still a duplicate.
    let error = set
        .clone()
        .insert(class, vec![service(0, 1), service(0, 2)])
        .expect_err("a duplicate");
    assert_eq!(
        error,
        RouteError::DuplicateNextHop {
            key: class,
            node: [2; 32],
            addr: hop(2, 9000, 1).addr,
            rewrite: Some(service_key(2, 0)),
        }
    );
}

#[test]
fn a_corrupted_rewrite_flag_is_rejected() {
    // A rewrite key with a pattern found nowhere else in the image locates the hop's rewrite.
    let marker = RoutingKey(0xa5a5_5a5a_a5a5_5a5a_a5a5_5a5a_a5a5_5a5a);
    let mut set = RouteSet::new(4);
    set.insert(
        RoutingKey(1),
        vec![
            NextHop {
                rewrite: Some(marker),
                ..hop(1, 9000, 1)
            },
            hop(2, 9000, 1),
        ],
    )
    .expect("valid");
    let bytes = compile(&set).expect("compiles").as_bytes().to_vec();
    let pattern = marker.to_be_bytes();
    let at = bytes
        .windows(16)
        .position(|window| window == pattern)
        .expect("the rewrite key is stored in network byte order");
    // The flag byte sits right in front of the key (rkyv lays the record out in field order).
    let flag_at = at - 1;
    assert_eq!(bytes[flag_at], 1, "the flag of a hop with a rewrite");

    for flag in [2u8, 0x80, 0xff] {
        let mut corrupted = bytes.clone();
        corrupted[flag_at] = flag;
        reseal(&mut corrupted);
        let error = FibTable::load(TableImage::from_bytes(&corrupted)).expect_err("bad flag");
        match &error {
            LoadError::Inconsistent { generation, detail } => {
                assert_eq!(*generation, 4);
                assert!(
                    detail.contains(&format!("rewrite flag {flag} is neither 0 (none) nor 1")),
                    "{detail}"
                );
            }
            other => panic!("expected an inconsistent table, got {other:?}"),
        }
    }
    // Flag "none" in front of a non-zero key: one encoding per hop, so refused too.
    let mut corrupted = bytes.clone();
    corrupted[flag_at] = 0;
    reseal(&mut corrupted);
    let error = FibTable::load(TableImage::from_bytes(&corrupted)).expect_err("stray key");
    assert!(
        error
            .to_string()
            .contains("no rewrite (flag 0) but a non-zero rewrite key"),
        "{error}"
    );
    // Untouched, it loads and keeps the rewrite.
    let table = FibTable::load(TableImage::from_bytes(&bytes)).expect("loads");
    let group = table.lookup(RoutingKey(1)).expect("a route");
    assert_eq!(
        group.iter().map(|hop| hop.rewrite()).collect::<Vec<_>>(),
        vec![Some(marker), None]
    );
}

#[test]
fn allowed_sources_round_trip_and_swap_with_the_routes() {
    let ips: Vec<IpAddr> = ["10.0.0.7", "127.0.0.1", "2001:db8::5", "::ffff:10.0.0.7"]
        .iter()
        .map(|text| text.parse().expect("ip"))
        .collect();
    let mut set = RouteSet::new(1);
    set.insert(RoutingKey(1), vec![hop(1, 9000, 1)])
        .expect("valid");
    set.set_sources(SourceSet::try_from(ips).expect("unicast"));
    assert_eq!(
        set.sources().len(),
        3,
        "an IPv4 address and its mapped form are one"
    );
    let table = load(&set);
    let listed: Vec<String> = table.sources().map(|s| s.to_string()).collect();
    assert_eq!(listed, ["10.0.0.7", "127.0.0.1", "2001:db8::5"]);
    assert_eq!(table.stats().sources, 3);
    for allowed in ["10.0.0.7", "::ffff:10.0.0.7", "127.0.0.1", "2001:db8::5"] {
        assert!(
            table.allows_source(allowed.parse().expect("ip")),
            "{allowed}"
        );
    }
    for other in ["10.0.0.8", "127.0.0.2", "::1", "2001:db8::6"] {
        assert!(!table.allows_source(other.parse().expect("ip")), "{other}");
    }

    // Installing a generation swaps the set with the routes; rollback brings both back.
    let fib = Fib::new(table);
    let mut next = RouteSet::new(2);
    next.insert(RoutingKey(2), vec![hop(2, 9000, 1)])
        .expect("valid");
    next.set_sources(SourceSet::try_from(vec!["10.9.9.9".parse().expect("ip")]).expect("unicast"));
    fib.install(load(&next)).expect("newer");
    let current = fib.load();
    assert!(current.allows_source("10.9.9.9".parse().expect("ip")));
    assert!(!current.allows_source("127.0.0.1".parse().expect("ip")));
    assert!(current.lookup(RoutingKey(1)).is_none());
    drop(current);
    fib.rollback().expect("a previous generation");
    let current = fib.load();
    assert!(current.allows_source("127.0.0.1".parse().expect("ip")));
    assert!(!current.allows_source("10.9.9.9".parse().expect("ip")));
    assert!(current.lookup(RoutingKey(1)).is_some());
}

/// Placeholder sources found nowhere else in an image: 2001:db8::1:0:n.
fn placeholder_source(n: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 1, 0, n as u16 + 1))
}

/// An image with `count` placeholder sources, and the offset of its first source entry.
fn image_with_placeholder_sources(count: usize) -> (Vec<u8>, usize) {
    let mut set = RouteSet::new(6);
    set.insert(RoutingKey(1), vec![hop(1, 9000, 1)])
        .expect("valid");
    let ips: Vec<IpAddr> = (0..count).map(placeholder_source).collect();
    set.set_sources(SourceSet::try_from(ips.clone()).expect("unicast"));
    let bytes = compile(&set).expect("compiles").as_bytes().to_vec();
    let stored: Vec<u8> = ips
        .iter()
        .flat_map(|ip| SourceIp::new(*ip).to_be_bytes())
        .collect();
    let at = bytes
        .windows(stored.len())
        .position(|window| window == stored)
        .expect("the sources are stored back to back, 16 bytes each, in ascending order");
    (bytes, at)
}

/// The set's rules written out plainly: the index of the first entry that breaks one.
fn reference_source_check(entries: &[[u8; 16]]) -> Result<(), usize> {
    for (index, entry) in entries.iter().enumerate() {
        let unicast = match Ipv6Addr::from(*entry).to_canonical() {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        };
        if !unicast || (index > 0 && entries[index - 1] >= *entry) {
            return Err(index);
        }
    }
    Ok(())
}

/// Writes `entries` over the placeholder sources, reseals, and checks that load agrees with the
/// reference: a valid set loads as written, a malformed one is refused naming its first bad
/// entry. (The fuzz target `fib_image` checks the same over arbitrary bytes.)
fn load_with_sources(entries: &[[u8; 16]]) -> Result<(), String> {
    let (mut bytes, at) = image_with_placeholder_sources(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        bytes[at + 16 * index..at + 16 * (index + 1)].copy_from_slice(entry);
    }
    reseal(&mut bytes);
    let loaded = FibTable::load(TableImage::from_bytes(&bytes));
    match (loaded, reference_source_check(entries)) {
        (Ok(table), Ok(())) => {
            let listed: Vec<[u8; 16]> = table.sources().map(SourceIp::to_be_bytes).collect();
            assert_eq!(listed, entries);
            for entry in entries {
                assert!(table.allows_source(Ipv6Addr::from(*entry).into()));
            }
            Ok(())
        }
        (Err(LoadError::Inconsistent { generation, detail }), Err(index)) => {
            assert_eq!(generation, 6);
            assert!(
                detail.starts_with(&format!("allowed source {index}: ")),
                "entry {index}: {detail}"
            );
            Err(detail)
        }
        (loaded, expected) => panic!("load gave {loaded:?}, the reference {expected:?}"),
    }
}

#[test]
fn a_malformed_source_set_is_refused_with_the_bad_entry_named() {
    let v4 = |text: &str| SourceIp::new(text.parse().expect("ip")).to_be_bytes();
    let cases: [(&[[u8; 16]], &str); 6] = [
        (
            &[v4("10.0.0.2"), v4("10.0.0.1")],
            "allowed source 1: 10.0.0.1 does not ascend after 10.0.0.2 (duplicate or misordered address)",
        ),
        (
            &[v4("10.0.0.1"), v4("10.0.0.1")],
            "allowed source 1: 10.0.0.1 does not ascend after 10.0.0.1 (duplicate or misordered address)",
        ),
        (&[[0; 16]], "allowed source 0: :: is not a unicast address"),
        (
            &[v4("10.0.0.1"), v4("0.0.0.0")],
            "allowed source 1: 0.0.0.0 is not a unicast address",
        ),
        (
            &[v4("239.1.1.1")],
            "allowed source 0: 239.1.1.1 is not a unicast address",
        ),
        (
            &[v4("10.0.0.1"), v4("ff05::2")],
            "allowed source 1: ff05::2 is not a unicast address",
        ),
    ];
    for (entries, message) in cases {
        let detail = load_with_sources(entries).expect_err("malformed");
        assert_eq!(detail, message);
    }
    assert_eq!(
        load_with_sources(&[v4("10.0.0.1"), v4("2001:db8::1")]),
        Ok(())
    );
}

#[test]
fn seeded_mutations_of_the_source_set_are_refused_exactly_when_malformed() {
    let mut rng = StdRng::seed_from_u64(0x5eed_50c5);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..2000 {
        let count = rng.random_range(1..=8);
        // Start from a valid ascending set and mutate: a byte, a swap, a copy, or a zeroed entry.
        let mut entries: Vec<[u8; 16]> = (0..count)
            .map(|n| {
                SourceIp::new(IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8])).to_be_bytes()
            })
            .collect();
        match rng.random_range(0..5) {
            0 => {
                let (entry, byte) = (rng.random_range(0..count), rng.random_range(0..16));
                entries[entry][byte] = rng.random();
            }
            1 if count > 1 => {
                let entry = rng.random_range(1..count);
                entries.swap(entry - 1, entry);
            }
            2 if count > 1 => {
                let entry = rng.random_range(1..count);
                entries[entry] = entries[entry - 1];
            }
            3 => entries[rng.random_range(0..count)] = [0; 16],
            _ => entries[rng.random_range(0..count)] = rng.random(),
        }
        match load_with_sources(&entries) {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 500 && accepted > 100,
        "{refused} refused, {accepted} accepted"
    );
}

#[test]
fn compiling_is_deterministic() {
    let (set, _) = random_route_set(42, 3000);
    let first = compile(&set).expect("compiles");
    let second = compile(&set.clone()).expect("compiles");
    assert_eq!(first.as_bytes(), second.as_bytes());
    // Inserting the same routes in another order gives the same image.
    let mut reversed = RouteSet::new(set.generation());
    for (key, hops) in set.routes().iter().rev() {
        let mut hops = hops.clone();
        hops.reverse();
        reversed.insert(*key, hops).expect("valid");
    }
    assert_eq!(
        compile(&reversed).expect("compiles").as_bytes(),
        first.as_bytes()
    );
}

#[test]
fn empty_table_misses_everything() {
    let table = load(&RouteSet::new(0));
    assert!(table.is_empty());
    assert_eq!(table.entries().count(), 0);
    for key in [0u128, 1, u128::MAX] {
        assert!(table.lookup(RoutingKey(key)).is_none());
    }
}

#[test]
fn lookups_match_a_btreemap_reference_over_seeded_route_sets() {
    for seed in 0..60u64 {
        let (set, reference) = random_route_set(seed, 2500);
        let table = load(&set);
        assert_eq!(table.len(), reference.len(), "seed {seed}");
        for (key, hops) in &reference {
            let group = table
                .lookup(*key)
                .unwrap_or_else(|| panic!("seed {seed}: key {key} missing"));
            assert_eq!(&group.to_vec(), hops, "seed {seed}: key {key}");
            let total: u32 = hops.iter().map(|hop| hop.weight).sum();
            assert_eq!(group.weight_total(), total, "seed {seed}: key {key}");
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        for _ in 0..2000 {
            let key = random_key(&mut rng);
            assert_eq!(
                table.lookup(key).map(|group| group.to_vec()).as_ref(),
                reference.get(&key),
                "seed {seed}: probe {key}"
            );
        }
        let entries: Vec<(RoutingKey, Vec<NextHop>)> = table
            .entries()
            .map(|entry| (entry.key, entry.group.to_vec()))
            .collect();
        let expected: Vec<(RoutingKey, Vec<NextHop>)> =
            reference.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(entries, expected, "seed {seed}: entries in key order");

        let from = random_key(&mut rng);
        let page: Vec<RoutingKey> = table.entries_from(from).take(10).map(|e| e.key).collect();
        let expected_page: Vec<RoutingKey> =
            reference.range(from..).take(10).map(|(k, _)| *k).collect();
        assert_eq!(page, expected_page, "seed {seed}: page from {from}");
    }
}

#[test]
fn every_flipped_byte_is_rejected() {
    let mut set = RouteSet::new(3);
    set.insert(RoutingKey(10), vec![hop(1, 9000, 2), hop(2, 9001, 1)])
        .expect("valid");
    set.insert(RoutingKey(20), vec![hop(3, 9002, 1)])
        .expect("valid");
    let image = compile(&set).expect("compiles");
    let bytes = image.as_bytes().to_vec();
    for position in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut corrupted = bytes.clone();
            corrupted[position] ^= bit;
            let error = FibTable::load(TableImage::from_bytes(&corrupted))
                .expect_err("a corrupted image must not load");
            let expected_kind = match position {
                0..8 => matches!(error, LoadError::BadMagic { .. }),
                8..12 => matches!(error, LoadError::UnsupportedVersion { .. }),
                24..32 => matches!(error, LoadError::LengthMismatch { .. }),
                _ => matches!(error, LoadError::ChecksumMismatch { .. }),
            };
            assert!(expected_kind, "byte {position} bit {bit:#x}: {error}");
        }
    }
}

#[test]
fn truncated_and_extended_images_are_rejected() {
    let (set, _) = random_route_set(9, 50);
    let bytes = compile(&set).expect("compiles").as_bytes().to_vec();
    for len in [0, 1, HEADER_LEN - 1] {
        let error = FibTable::load(TableImage::from_bytes(&bytes[..len])).expect_err("truncated");
        assert_eq!(error, LoadError::Truncated { len });
        assert!(
            error
                .to_string()
                .contains("shorter than its 32-byte header"),
            "{error}"
        );
    }
    for len in [HEADER_LEN, HEADER_LEN + 1, bytes.len() / 2, bytes.len() - 1] {
        let error = FibTable::load(TableImage::from_bytes(&bytes[..len])).expect_err("truncated");
        assert!(
            matches!(error, LoadError::LengthMismatch { .. }),
            "len {len}: {error}"
        );
        assert!(
            error.to_string().contains("truncated or extended"),
            "{error}"
        );
    }
    let mut extended = bytes.clone();
    extended.push(0);
    let error = FibTable::load(TableImage::from_bytes(&extended)).expect_err("extended");
    assert!(matches!(error, LoadError::LengthMismatch { .. }), "{error}");
}

/// Rewrites the length and checksum fields so a corruption gets past the header checks.
fn reseal(bytes: &mut [u8]) {
    let length = (bytes.len() - HEADER_LEN) as u64;
    bytes[24..32].copy_from_slice(&length.to_le_bytes());
    let crc = crc32fast::hash(&bytes[16..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn corruption_behind_a_valid_checksum_is_still_rejected() {
    let (set, _) = random_route_set(11, 200);
    let bytes = compile(&set).expect("compiles").as_bytes().to_vec();

    // A header generation that disagrees with the archive.
    let mut relabelled = bytes.clone();
    relabelled[16..24].copy_from_slice(&99u64.to_le_bytes());
    reseal(&mut relabelled);
    let error = FibTable::load(TableImage::from_bytes(&relabelled)).expect_err("mismatch");
    assert_eq!(
        error,
        LoadError::GenerationMismatch {
            header: 99,
            archive: set.generation()
        }
    );

    // An archive cut short (the root is at its end): rkyv's bytecheck refuses it.
    let mut cut = bytes[..bytes.len() - 8].to_vec();
    reseal(&mut cut);
    let error = FibTable::load(TableImage::from_bytes(&cut)).expect_err("cut archive");
    assert!(
        matches!(
            error,
            LoadError::Archive { .. }
                | LoadError::Inconsistent { .. }
                | LoadError::GenerationMismatch { .. }
        ),
        "{error}"
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let error = FibTable::load(TableImage::from_bytes(&[0u8; 40])).expect_err("not an image");
    assert_eq!(
        error.to_string().split(':').next(),
        Some("not a table image")
    );
    let (set, _) = random_route_set(5, 10);
    let mut bytes = compile(&set).expect("compiles").as_bytes().to_vec();
    assert_eq!(
        TABLE_FORMAT_VERSION, 3,
        "version 3: a generation carries its allowed sources"
    );
    bytes[8] = 2;
    let error = FibTable::load(TableImage::from_bytes(&bytes)).expect_err("version");
    assert_eq!(
        error.to_string(),
        "table image format version 2; this build reads version 3"
    );
    bytes[8] = 3;
    bytes[40] ^= 0xff;
    let error = FibTable::load(TableImage::from_bytes(&bytes)).expect_err("checksum");
    assert!(
        error
            .to_string()
            .starts_with("table image checksum mismatch"),
        "{error}"
    );
}

#[test]
fn weighted_choice_follows_the_weights() {
    let weights = [1u32, 2, 3, 4, 10];
    let hops: Vec<NextHop> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| hop(u8::try_from(i + 1).expect("small"), 9000, w))
        .collect();
    let mut set = RouteSet::new(1);
    set.insert(RoutingKey(5), hops).expect("valid");
    let table = load(&set);
    let group = table.lookup(RoutingKey(5)).expect("a route");
    let total: u32 = weights.iter().sum();

    let flows = 400_000u64;
    let mut rng = StdRng::seed_from_u64(77);
    // Random flow hashes, and sequential ones (a weak caller hash).
    for (label, random) in [("random", true), ("sequential", false)] {
        let mut counts = [0u64; 5];
        for flow in 0..flows {
            let flow_hash = if random { rng.random() } else { flow };
            let chosen = group.select(flow_hash);
            counts[usize::from(chosen.node()[0]) - 1] += 1;
        }
        for (i, &count) in counts.iter().enumerate() {
            let expected = f64::from(weights[i]) / f64::from(total);
            let seen = count as f64 / flows as f64;
            // The standard error at 400k flows is below 0.1 percentage point.
            assert!(
                (seen - expected).abs() < 0.005,
                "{label}: next hop {i} got {seen:.4}, expected {expected:.4} ({counts:?})"
            );
        }
    }
}

#[test]
fn a_flow_keeps_its_next_hop() {
    let hops: Vec<NextHop> = (1..=6).map(|n| hop(n, 9000, u32::from(n) * 3)).collect();
    let mut set = RouteSet::new(1);
    set.insert(RoutingKey(5), hops.clone()).expect("valid");
    let table = load(&set);
    // The same group in another generation, given in another order, behind other keys.
    let mut other = RouteSet::new(2);
    for key in 100..600u128 {
        other
            .insert(RoutingKey(key), vec![hop(9, 1, 1)])
            .expect("valid");
    }
    let mut shuffled = hops;
    shuffled.reverse();
    other.insert(RoutingKey(5), shuffled).expect("valid");
    let other_table = load(&other);

    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..10_000 {
        let flow_hash: u64 = rng.random();
        let first = table
            .route(RoutingKey(5), flow_hash)
            .expect("a route")
            .to_next_hop();
        for _ in 0..3 {
            assert_eq!(
                table
                    .route(RoutingKey(5), flow_hash)
                    .expect("a route")
                    .to_next_hop(),
                first
            );
        }
        assert_eq!(
            other_table
                .route(RoutingKey(5), flow_hash)
                .expect("a route")
                .to_next_hop(),
            first,
            "flow {flow_hash:#x} moved between generations"
        );
    }
}

#[test]
fn flows_stay_put_when_an_unrelated_key_changes() {
    let (mut set, reference) = random_route_set(21, 3000);
    let watched: Vec<RoutingKey> = reference.keys().copied().step_by(7).collect();
    assert!(watched.len() > 50);
    let before = load(&set);

    // Change one key's group, remove some keys and add many others: the slot layout, group ids
    // and next-hop offsets all change.
    let changed = *reference.keys().nth(3).expect("enough keys");
    set.insert(changed, vec![hop(200, 1, 1), hop(201, 1, 9)])
        .expect("valid");
    for key in reference.keys().skip(1).step_by(7).take(100) {
        set.remove(*key);
    }
    for key in 0..2000u128 {
        set.insert(RoutingKey(0x7777 << 64 | key), vec![hop(100, 2, 1)])
            .expect("valid");
    }
    set.set_generation(set.generation() + 1);
    let after = load(&set);
    assert_ne!(before.stats().slots, 0);

    let mut rng = StdRng::seed_from_u64(99);
    let mut compared = 0;
    for key in watched
        .iter()
        .filter(|key| **key != changed && set.get(**key).is_some())
    {
        for _ in 0..50 {
            let flow_hash: u64 = rng.random();
            let old = before
                .route(*key, flow_hash)
                .expect("a route")
                .to_next_hop();
            let new = after.route(*key, flow_hash).expect("a route").to_next_hop();
            assert_eq!(old, new, "key {key} flow {flow_hash:#x}");
            compared += 1;
        }
    }
    assert!(compared > 2000, "{compared}");
}

#[test]
fn route_set_refuses_more_than_routes_max() {
    let mut set = RouteSet::new(1);
    let group = vec![hop(1, 1, 1)];
    for key in 0..ROUTES_MAX as u128 {
        set.insert(RoutingKey(key), group.clone())
            .expect("within the limit");
    }
    let key = RoutingKey(u128::MAX);
    let error = set.insert(key, group.clone()).expect_err("over the limit");
    assert_eq!(error, RouteError::TooManyRoutes { key });
    assert!(
        error.to_string().contains("ROUTES_MAX = 1048576"),
        "{error}"
    );
    // Replacing an existing key at the limit is still allowed.
    set.insert(RoutingKey(0), vec![hop(2, 2, 2)])
        .expect("replace");

    // The full-size table compiles and loads within TABLE_BYTES_MAX with a short probe bound.
    let table = load(&set);
    let stats = table.stats();
    assert_eq!(stats.entries, ROUTES_MAX);
    assert_eq!(stats.slots, 2 * ROUTES_MAX);
    assert!(stats.probe_len_max <= 64, "{stats:?}");
    assert_eq!(
        table.lookup(RoutingKey(0)).expect("a route").to_vec(),
        vec![hop(2, 2, 2)]
    );
    assert!(table.lookup(RoutingKey(ROUTES_MAX as u128)).is_none());
}

/// A route set for generation `generation` in which every next hop of every key encodes the
/// generation (its port is the generation, its weight the generation + 1), plus a generation-dependent number of filler keys so the
/// slot layout differs from one generation to the next.
fn encoded_generation(generation: u16, keys: &[RoutingKey]) -> RouteSet {
    let mut set = RouteSet::new(u64::from(generation));
    for key in keys {
        let hops = (1..=3)
            .map(|node| hop(node, generation, u32::from(generation) + 1))
            .collect();
        set.insert(*key, hops).expect("valid");
    }
    for filler in 0..(u128::from(generation) * 37 % 300) {
        set.insert(RoutingKey(0xf111 << 64 | filler), vec![hop(50, 1, 1)])
            .expect("valid");
    }
    set
}

#[test]
// A test driver, not a core: a wall-clock deadline makes a reader that never sees the last
// generation fail the test instead of hanging it.
#[allow(clippy::disallowed_methods)]
fn swaps_under_concurrent_lookups_never_mix_generations() {
    const GENERATIONS: u16 = 400;
    const KEYS: usize = 64;
    let mut rng = StdRng::seed_from_u64(2024);
    let keys: Arc<Vec<RoutingKey>> =
        Arc::new((0..KEYS).map(|_| RoutingKey(rng.random())).collect());
    let fib = Fib::new(load(&encoded_generation(0, &keys)));
    let writer_done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(60);

    // Reader 0 loads a guard per lookup pair; reader 1 uses a cached FibReader.
    let readers: Vec<_> = (0..2)
        .map(|reader_index| {
            let fib = fib.clone();
            let keys = Arc::clone(&keys);
            let writer_done = Arc::clone(&writer_done);
            thread::spawn(move || {
                let mut cached = fib.reader();
                let mut mixed = 0u64;
                let mut reads = 0u64;
                let mut generations_seen = 0u64;
                let mut last = 0u64;
                let mut step = 0usize;
                loop {
                    let guard;
                    let table = if reader_index == 0 {
                        guard = fib.load();
                        &*guard
                    } else {
                        cached.table()
                    };
                    let generation = table.generation();
                    assert!(
                        generation >= last,
                        "generation went back from {last} to {generation}"
                    );
                    if generation != last {
                        generations_seen += 1;
                        last = generation;
                    }
                    let a = keys[step % KEYS];
                    let b = keys[(step * 31 + 7) % KEYS];
                    let flow = step as u64;
                    let hop_a = table
                        .route(a, flow)
                        .expect("every generation routes every key");
                    let hop_b = table
                        .route(b, flow.rotate_left(17))
                        .expect("every generation routes every key");
                    for hop in [hop_a, hop_b] {
                        if u64::from(hop.addr().port()) != generation
                            || u64::from(hop.weight()) != generation + 1
                        {
                            mixed += 1;
                        }
                    }
                    reads += 1;
                    step += 1;
                    if generation == u64::from(GENERATIONS) && writer_done.load(Ordering::Acquire) {
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "reader {reader_index} never saw generation {GENERATIONS} (last {last})"
                        );
                    }
                }
                (mixed, reads, generations_seen, last)
            })
        })
        .collect();

    for generation in 1..=GENERATIONS {
        let table = load(&encoded_generation(generation, &keys));
        assert_eq!(fib.install(table), Ok(u64::from(generation) - 1));
        if generation % 16 == 0 {
            thread::yield_now();
        }
    }
    writer_done.store(true, Ordering::Release);

    for (index, reader) in readers.into_iter().enumerate() {
        let (mixed, reads, generations_seen, last) = reader.join().expect("reader ran");
        assert_eq!(
            mixed, 0,
            "reader {index}: {mixed} lookups saw another generation's next hop"
        );
        assert_eq!(last, u64::from(GENERATIONS));
        assert!(
            reads > 0 && generations_seen >= 1,
            "reader {index}: {reads} reads"
        );
        eprintln!(
            "reader {index}: {reads} lookup pairs over {generations_seen} generations, 0 mixed"
        );
    }
    assert_eq!(fib.generation(), u64::from(GENERATIONS));
    assert_eq!(fib.counters().installs, u64::from(GENERATIONS));
}

fn single_route(generation: u64, port: u16) -> FibTable {
    let mut set = RouteSet::new(generation);
    set.insert(RoutingKey(1), vec![hop(1, port, 1)])
        .expect("valid");
    load(&set)
}

#[test]
fn rollback_restores_the_previous_generation_once() {
    let fib = empty_fib();
    assert_eq!(
        fib.rollback(),
        Err(RollbackError::NoPrevious { current: 0 })
    );
    assert_eq!(fib.install(single_route(1, 1001)), Ok(0));
    assert_eq!(fib.install(single_route(2, 1002)), Ok(1));
    assert_eq!(fib.previous_generation(), Some(1));
    let port = |fib: &Fib| {
        fib.load()
            .route(RoutingKey(1), 0)
            .map(|hop| hop.addr().port())
    };
    assert_eq!(port(&fib), Some(1002));

    assert_eq!(fib.rollback(), Ok(1));
    assert_eq!(fib.generation(), 1);
    assert_eq!(port(&fib), Some(1001));
    assert_eq!(fib.previous_generation(), None);
    let error = fib.rollback().expect_err("only one level");
    assert_eq!(error, RollbackError::NoPrevious { current: 1 });
    assert!(error.to_string().contains("nothing changed"), "{error}");

    // The rolled-back generation number is used up: the next install must be above it.
    assert_eq!(
        fib.install(single_route(2, 1002)),
        Err(InstallError::Stale {
            offered: 2,
            generation_max: 2
        })
    );
    assert_eq!(fib.install(single_route(3, 1003)), Ok(1));
    assert_eq!(port(&fib), Some(1003));
    assert_eq!(fib.rollback(), Ok(1));

    let counters = fib.counters();
    assert_eq!(counters.installs, 3);
    assert_eq!(counters.installs_refused, 1);
    assert_eq!(counters.rollbacks, 2);
    assert_eq!(counters.rollbacks_refused, 2);
}

#[test]
fn stale_installs_are_refused_and_change_nothing() {
    let fib = empty_fib();
    assert_eq!(fib.install(single_route(5, 1005)), Ok(0));
    for stale in [0, 4, 5] {
        let error = fib.install(single_route(stale, 2000)).expect_err("stale");
        assert_eq!(
            error,
            InstallError::Stale {
                offered: stale,
                generation_max: 5
            }
        );
        assert!(error.to_string().contains("nothing changed"), "{error}");
    }
    assert_eq!(fib.generation(), 5);
    assert_eq!(fib.generation_max(), 5);
    assert_eq!(fib.previous_generation(), Some(0));
    assert_eq!(
        fib.load()
            .route(RoutingKey(1), 0)
            .map(|hop| hop.addr().port()),
        Some(1005)
    );
    assert_eq!(fib.counters().installs_refused, 3);
}

#[test]
fn a_reader_follows_installs_and_a_held_table_stays_valid() {
    let fib = empty_fib();
    let mut reader = fib.reader();
    assert_eq!(reader.table().generation(), 0);
    let held = fib.snapshot();
    fib.install(single_route(1, 1001)).expect("installs");
    fib.install(single_route(2, 1002)).expect("installs");
    // The generation-0 table is no longer held by the handle but a snapshot keeps it readable.
    assert_eq!(held.generation(), 0);
    assert!(held.lookup(RoutingKey(1)).is_none());
    assert_eq!(reader.table().generation(), 2);
    let clone = fib.clone();
    clone
        .install(single_route(3, 1003))
        .expect("installs through a clone");
    assert_eq!(reader.table().generation(), 3);
    assert_eq!(fib.generation(), 3);
}
