//! Groth16 attestation costs: setup, prove, verify with a prepared key, and batch verification
//! against one-by-one verification of the same proofs in the same run (batch sizes 1/8/32/128).
//!
//! Every figure is the median of its repetitions, in wall-clock time and in this thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`). On a shared, oversubscribed machine the CPU time is the figure to
//! compare (it leaves out the time the thread waited for a core); the wall time says what a caller
//! saw in that run.
//!
//! `cargo bench -p nexus-trust-core --bench zk` (repetitions per batch measurement:
//! `NEXUS_ZK_BENCH_REPS`, default 10, at least 256 / batch size). Prints markdown tables; figures
//! go to docs/BENCHMARKS.md.
//!
//! `NEXUS_ZK_BENCH_VERIFY_LOOP=n` instead runs only key generation, one proof and `n` prepared-key
//! verifications, for instruction counts that a shared machine's load does not disturb: run it
//! under `valgrind --tool=callgrind` with `n = 0` and with `n = 100`; the difference / 100 is the
//! instruction count of one verification.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![allow(clippy::unwrap_used, reason = "bench binary")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use nexus_trust_core::zk::{
    ATTESTATION_BYTES, ATTESTATION_CIRCUIT_ID, Attestation, BatchItem, Opening, Predicate,
    PreparedKey, Properties, Verifier, constraint_count, prove, setup,
};
use nix::time::{ClockId, clock_gettime};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

const BATCH_SIZES: [usize; 4] = [1, 8, 32, 128];

/// This thread's CPU time.
fn cpu_now() -> Duration {
    Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap())
}

/// Wall and CPU time of one call.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn sample(f: &mut impl FnMut()) -> Sample {
    let (wall, cpu) = (Instant::now(), cpu_now());
    f();
    Sample {
        wall: wall.elapsed(),
        cpu: cpu_now() - cpu,
    }
}

/// Medians (wall, CPU) and the wall p99 of `samples`.
struct Stats {
    wall: Duration,
    cpu: Duration,
    wall_p99: Duration,
}

fn stats(samples: &[Sample]) -> Stats {
    let mut wall: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    let mut cpu: Vec<Duration> = samples.iter().map(|s| s.cpu).collect();
    wall.sort();
    cpu.sort();
    Stats {
        wall: wall[wall.len() / 2],
        cpu: cpu[cpu.len() / 2],
        wall_p99: wall[(wall.len() * 99 / 100).min(wall.len() - 1)],
    }
}

fn measure(runs: usize, mut f: impl FnMut()) -> Stats {
    let samples: Vec<Sample> = (0..runs).map(|_| sample(&mut f)).collect();
    stats(&samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn row(step: &str, s: &Stats) {
    println!(
        "| {step} | {:.3} ms | {:.3} ms | {:.3} ms |",
        ms(s.cpu),
        ms(s.wall),
        ms(s.wall_p99)
    );
}

/// Key generation, one proof, `n` verifications (see the module docs).
fn verify_loop(n: u64) {
    let mut rng = StdRng::seed_from_u64(0x2b);
    let keys = setup(&mut rng).unwrap();
    let pk = keys.proving_key().unwrap();
    let prepared = PreparedKey::from_bytes(&keys.verifying_key).unwrap();
    let predicate = Predicate {
        min_score: 800,
        require_safety: true,
    };
    let opening = Opening::new(Properties::new(900, true, 7).unwrap(), &mut rng);
    let proof = prove(&pk, &opening, &predicate, &mut rng).unwrap();
    let commitment = opening.commitment();
    for _ in 0..n {
        prepared
            .verify(black_box(&commitment), &predicate, black_box(&proof))
            .unwrap();
    }
    println!("{n} verifications");
}

fn main() {
    if let Some(n) = std::env::var("NEXUS_ZK_BENCH_VERIFY_LOOP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        verify_loop(n);
        return;
    }
    let reps: usize = std::env::var("NEXUS_ZK_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = StdRng::seed_from_u64(0x2b);

    println!("attestation circuit: {} constraints", constraint_count());

    let setup_stats = measure(5, || {
        black_box(setup(&mut rng).unwrap());
    });
    let keys = setup(&mut rng).unwrap();
    let parse_pk = measure(5, || {
        black_box(keys.proving_key().unwrap());
    });
    let pk = keys.proving_key().unwrap();
    let prepare = measure(20, || {
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
    let mut prove_samples = Vec::with_capacity(max);
    let items: Vec<BatchItem> = (0..max as u64)
        .map(|i| {
            let props = Properties::new(800 + (i % 200) as u16, true, i).unwrap();
            let opening = Opening::new(props, &mut rng);
            let mut proof = None;
            prove_samples.push(sample(&mut || {
                proof = Some(prove(&pk, &opening, &predicate, &mut rng).unwrap());
            }));
            BatchItem {
                commitment: opening.commitment(),
                predicate,
                proof: proof.unwrap(),
            }
        })
        .collect();

    let verify_runs = 200;
    let mut k = 0;
    let verify = measure(verify_runs, || {
        let it = &items[k % items.len()];
        k += 1;
        prepared
            .verify(&it.commitment, &it.predicate, &it.proof)
            .unwrap();
    });

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
    let decode = measure(verify_runs, || {
        black_box(Attestation::decode(&encoded[0]).unwrap());
    });
    let mut k = 0;
    let advert = measure(verify_runs, || {
        let i = k % items.len();
        k += 1;
        let att = Attestation::decode(&encoded[i]).unwrap();
        verifier
            .verify_attestation(
                ATTESTATION_CIRCUIT_ID,
                &keys.verifying_key,
                &items[i].commitment,
                &att,
            )
            .unwrap();
    });

    println!();
    println!("| step | CPU (median) | wall (median) | wall p99 |");
    println!("|---|---:|---:|---:|");
    row("setup (keygen, 5 runs)", &setup_stats);
    row("parse proving key (strict, 5 runs)", &parse_pk);
    row("parse + prepare verifying key (20 runs)", &prepare);
    row(&format!("prove ({max} proofs)"), &stats(&prove_samples));
    row(
        &format!("verify, prepared key ({verify_runs} runs)"),
        &verify,
    );
    row(
        &format!("decode attestation, strict ({verify_runs} runs)"),
        &decode,
    );
    row(
        &format!("decode + Verifier::verify_attestation, cached key ({verify_runs} runs)"),
        &advert,
    );

    println!();
    println!(
        "| batch | reps | one-by-one per proof, CPU | batched per proof, CPU | speed-up, CPU | speed-up, wall |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in &BATCH_SIZES {
        let batch = &items[..n];
        // Small batches are short: repeat them more so a median means something.
        let reps = reps.max(256 / n);
        // Interleave the two methods so drift affects both alike.
        let mut single = Vec::with_capacity(reps);
        let mut batched = Vec::with_capacity(reps);
        for _ in 0..reps {
            single.push(sample(&mut || {
                for it in batch {
                    prepared
                        .verify(&it.commitment, &it.predicate, &it.proof)
                        .unwrap();
                }
            }));
            batched.push(sample(&mut || {
                prepared.verify_batch(batch, &mut rng).unwrap();
            }));
        }
        let (s, b) = (stats(&single), stats(&batched));
        println!(
            "| {n} | {reps} | {:.0} µs | {:.0} µs | {:.2}× | {:.2}× |",
            us(s.cpu) / n as f64,
            us(b.cpu) / n as f64,
            s.cpu.as_secs_f64() / b.cpu.as_secs_f64(),
            s.wall.as_secs_f64() / b.wall.as_secs_f64()
        );
    }

    // The cost of finding bad proofs: a batch of 32 with one bad proof.
    let mut bad = items[..32].to_vec();
    bad[17].predicate.min_score = 801;
    let fallback = measure(reps, || {
        assert!(prepared.verify_batch(&bad, &mut rng).is_err());
    });
    println!();
    println!(
        "batch of 32 with one bad proof (batch check + one-by-one fallback): CPU {:.2} ms, wall {:.2} ms",
        ms(fallback.cpu),
        ms(fallback.wall)
    );
}
