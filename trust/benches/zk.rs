//! Groth16 attestation costs: setup, prove, verify with a prepared key, and batch verification
//! against one-by-one verification of the same proofs in the same run (batch sizes 1/8/32/128).
//!
//! `cargo bench -p nexus-trust --bench zk` (repetitions per batch measurement:
//! `NEXUS_ZK_BENCH_REPS`, default 10, at least 256 / batch size). Prints a table; figures go to
//! docs/BENCHMARKS.md.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![allow(clippy::unwrap_used, reason = "bench binary")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use nexus_trust::zk::{
    ATTESTATION_BYTES, ATTESTATION_CIRCUIT_ID, Attestation, BatchItem, Opening, Predicate,
    PreparedKey, Properties, Verifier, constraint_count, prove, setup,
};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

const BATCH_SIZES: [usize; 4] = [1, 8, 32, 128];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median of `runs` timings of `f`.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("NEXUS_ZK_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = StdRng::seed_from_u64(0x2b);

    println!("attestation circuit: {} constraints", constraint_count());

    let setup_time = median_of(5, || {
        black_box(setup(&mut rng).unwrap());
    });
    let keys = setup(&mut rng).unwrap();
    let parse_pk = median_of(5, || {
        black_box(keys.proving_key().unwrap());
    });
    let pk = keys.proving_key().unwrap();
    let prepare = median_of(20, || {
        black_box(PreparedKey::from_bytes(&keys.verifying_key).unwrap());
    });
    let prepared = PreparedKey::from_bytes(&keys.verifying_key).unwrap();
    println!(
        "proving key {} B, verifying key {} B, proof 128 B",
        keys.proving_key.len(),
        keys.verifying_key.len()
    );

    let predicate = Predicate {
        min_score: 800,
        require_safety: true,
    };
    let max = *BATCH_SIZES.iter().max().unwrap();
    let mut prove_times = Vec::with_capacity(max);
    let items: Vec<BatchItem> = (0..max as u64)
        .map(|i| {
            let props = Properties::new(800 + (i % 200) as u16, true, i).unwrap();
            let opening = Opening::new(props, &mut rng);
            let start = Instant::now();
            let proof = prove(&pk, &opening, &predicate, &mut rng).unwrap();
            prove_times.push(start.elapsed());
            BatchItem {
                commitment: opening.commitment(),
                predicate,
                proof,
            }
        })
        .collect();
    prove_times.sort();
    let prove_p50 = prove_times[prove_times.len() / 2];

    let verify_runs = 200;
    let mut verify_times: Vec<Duration> = (0..verify_runs)
        .map(|i| {
            let it = &items[i % items.len()];
            let start = Instant::now();
            prepared
                .verify(&it.commitment, &it.predicate, &it.proof)
                .unwrap();
            start.elapsed()
        })
        .collect();
    verify_times.sort();
    let verify_p50 = verify_times[verify_runs / 2];
    let verify_p99 = verify_times[verify_runs * 99 / 100];

    // What an advert check costs end to end: strict attestation decode (point and subgroup
    // checks), cache lookup (SHA-256 of the key bytes), verify.
    let mut verifier = Verifier::default();
    let encoded: Vec<[u8; ATTESTATION_BYTES]> = items
        .iter()
        .map(|it| {
            Attestation {
                circuit: ATTESTATION_CIRCUIT_ID,
                predicate: it.predicate,
                proof: it.proof.to_bytes(),
            }
            .encode()
        })
        .collect();
    let decode = median_of(verify_runs, || {
        black_box(Attestation::decode(&encoded[0]).unwrap());
    });
    let mut advert_times: Vec<Duration> = (0..verify_runs)
        .map(|i| {
            let k = i % items.len();
            let start = Instant::now();
            let att = Attestation::decode(&encoded[k]).unwrap();
            verifier
                .verify_attestation(
                    ATTESTATION_CIRCUIT_ID,
                    &keys.verifying_key,
                    &items[k].commitment,
                    &att,
                )
                .unwrap();
            start.elapsed()
        })
        .collect();
    advert_times.sort();
    let advert_p50 = advert_times[verify_runs / 2];

    println!();
    println!("| step | time |");
    println!("|---|---|");
    println!("| setup (keygen) | {:.1} ms |", ms(setup_time));
    println!("| parse proving key (strict) | {:.1} ms |", ms(parse_pk));
    println!("| parse + prepare verifying key | {:.2} ms |", ms(prepare));
    println!("| prove (p50 of {max}) | {:.1} ms |", ms(prove_p50));
    println!(
        "| verify, prepared key (p50 / p99 of {verify_runs}) | {:.3} / {:.3} ms |",
        ms(verify_p50),
        ms(verify_p99)
    );
    println!(
        "| decode attestation (strict, 133 B) | {:.3} ms |",
        ms(decode)
    );
    println!(
        "| decode + Verifier::verify_attestation (cached key, p50) | {:.3} ms |",
        ms(advert_p50)
    );

    println!();
    println!("| batch | one-by-one | batched | per proof (one-by-one / batched) | speed-up |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in &BATCH_SIZES {
        let batch = &items[..n];
        // Small batches are short: repeat them more so a median means something.
        let reps = reps.max(256 / n);
        // Interleave the two methods so drift affects both alike.
        let mut single = Vec::with_capacity(reps);
        let mut batched = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            for it in batch {
                prepared
                    .verify(&it.commitment, &it.predicate, &it.proof)
                    .unwrap();
            }
            single.push(start.elapsed());
            let start = Instant::now();
            prepared.verify_batch(batch, &mut rng).unwrap();
            batched.push(start.elapsed());
        }
        single.sort();
        batched.sort();
        let (s, b) = (single[reps / 2], batched[reps / 2]);
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.0} / {:.0} µs | {:.2}× |",
            ms(s),
            ms(b),
            us(s) / n as f64,
            us(b) / n as f64,
            s.as_secs_f64() / b.as_secs_f64()
        );
    }

    // The cost of finding bad proofs: a batch of 32 with one bad proof.
    let mut bad = items[..32].to_vec();
    bad[17].predicate.min_score = 801;
    let fallback = median_of(reps, || {
        assert!(prepared.verify_batch(&bad, &mut rng).is_err());
    });
    println!();
    println!(
        "batch of 32 with one bad proof (batch check + one-by-one fallback): {:.2} ms",
        ms(fallback)
    );
}
