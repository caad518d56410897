//! CPU cost of the fabric keyring per gossip datagram, side by side in one run:
//!
//! - `seal/{bytes}`: [`DatagramGuard::outgoing`] (nonce from the seeded RNG, XChaCha20-Poly1305
//!   with the primary key) for a plaintext datagram of 64, 256, 512 and 1400 bytes (a SWIM ping
//!   is about 150–250 bytes with three identities; anti-entropy chunks and adverts fill 1400).
//! - `open/{bytes}`: [`DatagramGuard::incoming`] of a datagram sealed with the primary key.
//! - `open_second_key/{bytes}`: the same, sealed with the ring's second key (during a rotation
//!   the primary check fails first).
//! - `seal_open/{bytes}`: one seal plus one open, what a datagram costs the fabric end to end.
//! - `plain/{bytes}`: the guard with encryption off (one copy), the baseline.
//!
//! Run: `cargo bench -p nexus-gossip --bench seal` (about a minute on 2 cores).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nexus_gossip::{
    DatagramGuard, GuardConfig, Keyring, KeyringOp, PACKET_BYTES_MAX, SecretKey, WIRE_MAGIC,
};

const SIZES: [usize; 4] = [64, 256, 512, PACKET_BYTES_MAX];

fn datagram(len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len).map(|i| i as u8).collect();
    d[0] = WIRE_MAGIC;
    d
}

fn ring() -> Keyring {
    let mut ring = Keyring::new(SecretKey::from_bytes([1; 32]));
    ring.apply(&KeyringOp::Install(SecretKey::from_bytes([2; 32])))
        .expect("room for a second key");
    ring
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyring");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for len in SIZES {
        let plain = datagram(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut guard = DatagramGuard::new(GuardConfig::encrypted(ring()), [9; 32]);
        group.bench_with_input(BenchmarkId::new("seal", len), &plain, |b, p| {
            b.iter(|| black_box(guard.outgoing(black_box(p))))
        });
        let sealed = guard.outgoing(&plain);
        group.bench_with_input(BenchmarkId::new("open", len), &sealed, |b, s| {
            b.iter(|| black_box(guard.incoming(black_box(s)).is_ok()))
        });
        let mut second = DatagramGuard::new(
            GuardConfig::encrypted(Keyring::new(SecretKey::from_bytes([2; 32]))),
            [8; 32],
        );
        let sealed_second = second.outgoing(&plain);
        group.bench_with_input(
            BenchmarkId::new("open_second_key", len),
            &sealed_second,
            |b, s| b.iter(|| black_box(guard.incoming(black_box(s)).is_ok())),
        );
        let mut receiver = DatagramGuard::new(GuardConfig::encrypted(ring()), [7; 32]);
        group.bench_with_input(BenchmarkId::new("seal_open", len), &plain, |b, p| {
            b.iter(|| {
                let sealed = guard.outgoing(black_box(p));
                black_box(receiver.incoming(&sealed).is_ok())
            })
        });
        let mut plaintext = DatagramGuard::new(GuardConfig::plaintext(), [6; 32]);
        group.bench_with_input(BenchmarkId::new("plain", len), &plain, |b, p| {
            b.iter(|| {
                let out = plaintext.outgoing(black_box(p));
                black_box(plaintext.incoming(&out).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
