//! FIB benchmarks, side by side in one run:
//!
//! - `lookup_hit/*`, `lookup_miss/*`: one exact-match lookup of a random key, at 1k / 100k / 1M
//!   keys, for the FIB and for `BTreeMap<u128, u32>`, `std::collections::HashMap<u128, u32>`
//!   (SipHash) and a sorted `Vec<u128>` with binary search. Lookups run back to back with
//!   independent keys, so the CPU overlaps their cache misses: this is per-packet cost in a batch.
//! - `lookup_hit_chained/*`: the next key depends on the previous result, so cache misses cannot
//!   overlap: the latency of one isolated lookup.
//! - `route_hit/*`: lookup plus the weighted next-hop choice (what the forwarder calls).
//! - `select/*`: the weighted choice alone, for groups of 1 / 4 / 16 / 64 next hops.
//! - `handle/*`: the cost of getting the current generation (`Fib::load` guard vs a cached
//!   `FibReader`) plus one lookup, at 100k keys.
//! - `build_1m/*`: compiling 1M routes into an image, and loading (validating) that image.
//!
//! Run: `cargo bench -p nexus-dataplane --bench fib` (about 2–3 minutes on 2 cores). On a noisy
//! shared machine compare ratios within one run rather than absolute figures across runs.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use nexus_dataplane::fib::{Fib, FibTable, NextHop, RouteSet, RoutingKey, compile};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Random probe keys cycled through by each lookup benchmark (1 MiB of keys: stays in L2).
const PROBES: usize = 1 << 16;
const PROBE_MASK: usize = PROBES - 1;
/// Distinct next-hop groups the keys share (many capability classes, few endpoint sets).
const GROUPS: usize = 1024;

fn hop(node: u16, weight: u32) -> NextHop {
    let [hi, lo] = node.to_be_bytes();
    NextHop {
        node: [lo; 32],
        addr: SocketAddr::from(([10, 1, hi, lo], 7000)),
        weight,
        rewrite: None,
    }
}

fn group_pool(rng: &mut StdRng) -> Vec<Vec<NextHop>> {
    (0..GROUPS)
        .map(|g| {
            let count = 1 + g % 4;
            (0..count)
                .map(|i| {
                    hop(
                        u16::try_from(g * 4 + i).expect("small"),
                        rng.random_range(1..=100),
                    )
                })
                .collect()
        })
        .collect()
}

struct Fixture {
    size: usize,
    table: FibTable,
    hits: Vec<RoutingKey>,
    misses: Vec<RoutingKey>,
    btree: BTreeMap<u128, u32>,
    hash: HashMap<u128, u32>,
    sorted: Vec<u128>,
}

fn route_set(size: usize, seed: u64) -> (RouteSet, Vec<(u128, u32)>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let pool = group_pool(&mut rng);
    let mut set = RouteSet::new(1);
    let mut pairs = Vec::with_capacity(size);
    while set.len() < size {
        let key: u128 = rng.random();
        let group = rng.random_range(0..GROUPS);
        if set.get(RoutingKey(key)).is_none() {
            set.insert(RoutingKey(key), pool[group].clone())
                .expect("valid route");
            pairs.push((key, u32::try_from(group).expect("small")));
        }
    }
    (set, pairs)
}

fn fixture(size: usize) -> Fixture {
    let (set, pairs) = route_set(size, size as u64);
    let table = FibTable::load(compile(&set).expect("compiles")).expect("loads");
    let mut rng = StdRng::seed_from_u64(0xbe7c);
    let hits: Vec<RoutingKey> = (0..PROBES)
        .map(|_| RoutingKey(pairs[rng.random_range(0..pairs.len())].0))
        .collect();
    let misses: Vec<RoutingKey> = (0..PROBES)
        .map(|_| {
            let key = RoutingKey(rng.random());
            assert!(set.get(key).is_none(), "a random 128-bit key is a miss");
            key
        })
        .collect();
    let btree: BTreeMap<u128, u32> = pairs.iter().copied().collect();
    let hash: HashMap<u128, u32> = pairs.iter().copied().collect();
    let mut sorted: Vec<u128> = pairs.iter().map(|(key, _)| *key).collect();
    sorted.sort_unstable();
    Fixture {
        size,
        table,
        hits,
        misses,
        btree,
        hash,
        sorted,
    }
}

fn lookups(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = SIZES.iter().map(|&size| fixture(size)).collect();
    for f in &fixtures {
        let stats = f.table.stats();
        eprintln!(
            "fib {} keys: {} slots, {} groups, {} next hops, probe bound {}, image {} bytes",
            f.size,
            stats.slots,
            stats.groups,
            stats.next_hops,
            stats.probe_len_max,
            stats.image_bytes
        );
    }

    let mut group = c.benchmark_group("lookup_hit");
    for f in &fixtures {
        group.bench_with_input(BenchmarkId::new("fib", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.table.lookup(black_box(f.hits[i])))
            });
        });
        group.bench_with_input(BenchmarkId::new("std_hashmap", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.hash.get(&black_box(f.hits[i].0)))
            });
        });
        group.bench_with_input(BenchmarkId::new("btreemap", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.btree.get(&black_box(f.hits[i].0)))
            });
        });
        group.bench_with_input(BenchmarkId::new("sorted_vec", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.sorted.binary_search(&black_box(f.hits[i].0)))
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lookup_miss");
    for f in &fixtures {
        group.bench_with_input(BenchmarkId::new("fib", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.table.lookup(black_box(f.misses[i])))
            });
        });
        group.bench_with_input(BenchmarkId::new("std_hashmap", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.hash.get(&black_box(f.misses[i].0)))
            });
        });
        group.bench_with_input(BenchmarkId::new("btreemap", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(f.btree.get(&black_box(f.misses[i].0)))
            });
        });
    }
    group.finish();

    // Each probe index depends on the previous result, so misses cannot overlap.
    let mut group = c.benchmark_group("lookup_hit_chained");
    for f in &fixtures {
        group.bench_with_input(BenchmarkId::new("fib", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                let total = f.table.lookup(f.hits[i]).map_or(0, |g| g.weight_total());
                i = (i + 1 + (total as usize & 1)) & PROBE_MASK;
                total
            });
        });
        group.bench_with_input(BenchmarkId::new("std_hashmap", f.size), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                let group = f.hash.get(&f.hits[i].0).copied().unwrap_or(0);
                i = (i + 1 + (group as usize & 1)) & PROBE_MASK;
                group
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route_hit");
    for f in &fixtures {
        group.bench_with_input(BenchmarkId::new("fib", f.size), f, |b, f| {
            let mut i = 0;
            let mut flow = 0u64;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                flow = flow.wrapping_add(0x9e37_79b9);
                black_box(
                    f.table
                        .route(black_box(f.hits[i]), flow)
                        .map(|hop| hop.weight()),
                )
            });
        });
    }
    group.finish();

    let mut fixtures = fixtures;
    let Fixture {
        size, table, hits, ..
    } = fixtures.swap_remove(1);
    let fib = Fib::new(table);
    let mut group = c.benchmark_group("handle");
    group.bench_function(BenchmarkId::new("fib_load_then_lookup", size), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & PROBE_MASK;
            let table = fib.load();
            black_box(table.lookup(black_box(hits[i])).map(|g| g.weight_total()))
        });
    });
    group.bench_function(BenchmarkId::new("reader_table_then_lookup", size), |b| {
        let mut reader = fib.reader();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & PROBE_MASK;
            let table = reader.table();
            black_box(table.lookup(black_box(hits[i])).map(|g| g.weight_total()))
        });
    });
    group.finish();
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    let mut rng = StdRng::seed_from_u64(5);
    for hops in [1usize, 4, 16, 64] {
        let mut set = RouteSet::new(1);
        let group_hops: Vec<NextHop> = (0..hops)
            .map(|i| hop(u16::try_from(i).expect("small"), rng.random_range(1..=1000)))
            .collect();
        set.insert(RoutingKey(1), group_hops).expect("valid");
        let table = FibTable::load(compile(&set).expect("compiles")).expect("loads");
        let mut flows: Vec<u64> = (0..PROBES as u64).map(|_| rng.random()).collect();
        flows.shuffle(&mut rng);
        group.bench_with_input(BenchmarkId::new("next_hops", hops), &hops, |b, _| {
            let next_hops = table.lookup(RoutingKey(1)).expect("a route");
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & PROBE_MASK;
                black_box(next_hops.select(black_box(flows[i])).weight())
            });
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let (set, _) = route_set(1_000_000, 1_000_000);
    let image = compile(&set).expect("compiles");
    let mut group = c.benchmark_group("build_1m");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("compile", |b| {
        b.iter(|| black_box(compile(&set).expect("compiles").len()))
    });
    group.bench_function("load", |b| {
        b.iter_batched(
            || image.clone(),
            |image| black_box(FibTable::load(image).expect("loads").len()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups, selection, build
}
criterion_main!(benches);
