//! Resolve latency at 1k / 10k / 100k live adverts.
//!
//! Builds registries from signed adverts with a seeded, skewed distribution (48 task tags with
//! Zipf-like popularity, 1–3 tags per service, varied context windows, latency, price, load,
//! regions, families, modalities, MIC serials and coordinates over 1000 origin nodes), then times
//! individual `Registry::resolve` calls for a fixed set of representative intents, interleaved,
//! and prints p50 / p99 / mean per size and per intent.
//!
//! The 30 % of services with a MIC carry credentials in their advert (a CA-signed MIC from one of
//! 8 publishers and one attestation) and are given a `Verified` verdict directly with
//! `Registry::set_trust` (with a proven predicate drawn per service): this bench times resolve,
//! not verification (which `RegistryNode` does once per credential, in batches).
//!
//! `cargo bench -p nexus-registry --bench resolve` (sizes: `NEXUS_REGISTRY_BENCH_SIZES`, default
//! `1000,10000,100000`; calls per intent: `NEXUS_REGISTRY_BENCH_CALLS`, default 2000; only the
//! intents whose name contains `NEXUS_REGISTRY_BENCH_INTENTS`, e.g. `k=64`, to profile one).
//! After each build it prints the process's resident memory (`VmRSS`, Linux).
//!
//! With `NEXUS_REGISTRY_BENCH_ORIGINS=n` it also resolves each intent from `n` other resolving
//! coordinates (drawn like the adverts' own), 200 calls from each after 10 warm-up calls, one
//! origin at a time, and prints the spread of the per-origin medians and of the per-origin
//! p99 / p50 ratio: whether a slow call comes from a slow origin (the search does more work
//! there) or from the same query taking longer now and then.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![allow(clippy::unwrap_used, reason = "bench binary")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nexus_registry::{
    Advert, AdvertBody, Attested, Coord, Credentials, Intent, Preferences, Registry,
    ResolveContext, Sad, ServiceKey, Timestamp, TrustContext, TrustUpdate, TrustVerdict, Verified,
    node_id_of,
};
use nexus_trust_core::mic::{MicBody, SubjectKind};
use nexus_trust_core::zk::{ATTESTATION_CIRCUIT_ID, Attestation, Opening, Predicate, Properties};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 1000;
const TASKS: usize = 48;

fn task_name(i: usize) -> String {
    const FAMILIES: [&str; 6] = ["llm", "vision", "audio", "embedding", "rerank", "agent"];
    const VERBS: [&str; 8] = [
        "chat",
        "code",
        "summarize",
        "detect",
        "classify",
        "transcribe",
        "translate",
        "plan",
    ];
    format!("{}.{}", FAMILIES[i % 6], VERBS[i / 6])
}

/// Tag index with Zipf-like popularity (tag 0 most popular).
fn pick_task(rng: &mut StdRng) -> usize {
    let u: f64 = rng.random();
    ((TASKS as f64).powf(u) - 1.0) as usize % TASKS
}

fn sad_for(rng: &mut StdRng, id: String) -> Sad {
    const CTX: [u32; 7] = [4096, 8192, 16_384, 32_768, 128_000, 200_000, 1_000_000];
    const REGIONS: [&str; 8] = [
        "eu-west",
        "eu-central",
        "us-east",
        "us-west",
        "ap-south",
        "ap-east",
        "sa-east",
        "af-south",
    ];
    const FAMILIES: [&str; 12] = [
        "llama-3",
        "qwen-2",
        "mistral",
        "gemma",
        "phi-3",
        "deepseek",
        "yi",
        "falcon",
        "mpt",
        "olmo",
        "granite",
        "command-r",
    ];
    const MODALITIES: [&str; 4] = ["text", "image", "audio", "video"];
    let mut sad = Sad::new(id, task_name(pick_task(rng)));
    for _ in 0..rng.random_range(0..3) {
        let t = task_name(pick_task(rng));
        if !sad.tasks.contains(&t) {
            sad.tasks.push(t);
        }
    }
    sad.endpoint.port = rng.random_range(1024..65535);
    sad.context_window = CTX[rng.random_range(0..CTX.len())];
    sad.model_family = FAMILIES[rng.random_range(0..FAMILIES.len())].into();
    sad.modalities = vec!["text".into()];
    for m in &MODALITIES[1..] {
        if rng.random_bool(0.25) {
            sad.modalities.push((*m).into());
        }
    }
    sad.latency_ms_p50 = (20.0 * 100f64.powf(rng.random::<f64>())) as u32;
    sad.latency_ms_p99 = (sad.latency_ms_p50 as f64 * rng.random_range(1.5..5.0)) as u32;
    sad.price_micros_per_1k = rng.random_range(0..20_000);
    sad.load.utilization_pct = rng.random_range(0..=100);
    sad.load.queue_depth = rng.random_range(0..64);
    sad.region = REGIONS[rng.random_range(0..REGIONS.len())].into();
    sad.zone = format!("{}-{}", sad.region, rng.random_range(0..3));
    if rng.random_bool(0.3) {
        sad.trust.mic_serial = Some(rng.random());
    }
    sad.ttl_s = 3600;
    sad
}

fn coord(rng: &mut StdRng) -> Coord {
    let mut c = Coord::default();
    for x in &mut c.vec {
        *x = rng.random_range(-0.05..0.05);
    }
    c.height = rng.random_range(0.0001..0.002);
    c.error = 0.2;
    c
}

const PUBLISHERS: [&str; 8] = [
    "acme",
    "beta-ai",
    "cortex",
    "deepnet",
    "evals-r-us",
    "fathom",
    "gradient",
    "helix",
];

/// The CA key MICs are signed with, and a genuine attestation (one proof, reused: the bench does
/// not verify it).
struct Trust {
    ca: SigningKey,
    attestation: Attestation,
    commitment: [u8; 32],
}

fn trust() -> Trust {
    use rand_08::SeedableRng as _;
    let mut rng = rand_08::rngs::StdRng::seed_from_u64(5);
    let keys = nexus_trust_core::zk::setup(&mut rng).unwrap();
    let opening = Opening::new(Properties::new(900, true, 1).unwrap(), &mut rng);
    let predicate = Predicate {
        min_score: 800,
        require_safety: true,
    };
    let attestation = Attestation::create(
        ATTESTATION_CIRCUIT_ID,
        &keys.proving_key().unwrap(),
        &opening,
        &predicate,
        &mut rng,
    )
    .unwrap();
    Trust {
        ca: SigningKey::from_bytes(&[77; 32]),
        attestation,
        commitment: opening.commitment().to_bytes(),
    }
}

/// Credentials for MIC `serial` and the verdict a node would reach on them (publisher and
/// proven predicate drawn from the serial, so the main stream of draws is unchanged).
fn credentials(t: &Trust, serial: u64) -> (Credentials, Verified) {
    let mut rng = StdRng::seed_from_u64(serial);
    let publisher = PUBLISHERS[rng.random_range(0..PUBLISHERS.len())].to_string();
    let predicate = Predicate {
        min_score: rng.random_range(500..=1000),
        require_safety: rng.random_bool(0.7),
    };
    let mic = MicBody {
        serial,
        subject_key: [3; 32],
        kind: SubjectKind::Model,
        model: None,
        publisher: publisher.clone(),
        provenance: vec![],
        claims: vec![],
        zk_commitment: Some(t.commitment),
        not_before_ms: 0,
        not_after_ms: u64::MAX,
        ca_key_id: 1,
    }
    .sign(&t.ca);
    let verified = Verified {
        serial,
        kind: SubjectKind::Model,
        publisher,
        subject_key: [3; 32],
        ca_key_id: 1,
        not_before_ms: 0,
        not_after_ms: u64::MAX,
        predicates: vec![predicate],
    };
    let attestation = Attestation {
        predicate,
        ..t.attestation
    };
    (
        Credentials {
            mic,
            attestations: vec![attestation],
        },
        verified,
    )
}

fn build(size: usize, seed: u64) -> Registry {
    let t = trust();
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<SigningKey> = (0..NODES)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            SigningKey::from_bytes(&b)
        })
        .collect();
    let coords: Vec<Coord> = (0..NODES).map(|_| coord(&mut rng)).collect();
    let mut registry = Registry::new(node_id_of(&keys[0]));
    for n in 0..size {
        let node = n % NODES;
        let mut sad = sad_for(&mut rng, format!("svc-{n}"));
        sad.version = 1;
        let trusted = sad
            .trust
            .mic_serial
            .map(|serial| credentials(&t, serial.max(1)));
        if let Some((c, _)) = &trusted {
            sad.trust.mic_serial = Some(c.mic.body.serial);
        }
        let key = ServiceKey::new(node_id_of(&keys[node]), sad.id.clone());
        let advert = Advert {
            origin: node_id_of(&keys[node]),
            service: sad.id.clone(),
            version: 1,
            body: AdvertBody::Live {
                sad: sad.into(),
                coord: Some(coords[node]),
                credentials: trusted.as_ref().map(|(c, _)| Arc::new(c.clone())),
            },
        };
        registry
            .apply(
                nexus_registry::Timestamp::ZERO,
                &advert.sign(&keys[node]).unwrap(),
            )
            .unwrap();
        if let Some((_, verified)) = trusted {
            registry.set_trust(&key, TrustVerdict::Verified(Arc::new(verified)));
        }
    }
    assert_eq!(registry.pending_len(), 0);
    assert_eq!(registry.len(), size);
    registry
}

fn intents() -> Vec<(&'static str, Intent)> {
    let popular = task_name(0);
    let mid = task_name(7);
    let rare = task_name(40);
    vec![
        ("popular task, defaults (k=3)", Intent::new(popular.clone())),
        (
            "popular, ctx>=128k p50<=200 eu-west k=5",
            Intent {
                min_context: Some(128_000),
                max_latency_ms: Some(200),
                region: Some("eu-west".into()),
                k: 5,
                ..Intent::new(popular.clone())
            },
        ),
        (
            "popular, ctx>=1M (narrow range) price<=5000",
            Intent {
                min_context: Some(1_000_000),
                max_price_micros_per_1k: Some(5000),
                ..Intent::new(popular.clone())
            },
        ),
        (
            "mid task, image modality, require_mic, k=10",
            Intent {
                modalities: vec!["image".into()],
                require_mic: true,
                k: 10,
                ..Intent::new(mid)
            },
        ),
        (
            "popular, publisher in {acme,helix}, attested>=800+safety, k=5",
            Intent {
                publishers: vec!["acme".into(), "helix".into()],
                attested: Some(Attested {
                    min_score: 800,
                    require_safety: true,
                }),
                k: 5,
                ..Intent::new(popular.clone())
            },
        ),
        (
            "popular, proximity-weighted, k=64",
            Intent {
                prefer: Preferences {
                    proximity: 4.0,
                    ..Preferences::default()
                },
                k: 64,
                ..Intent::new(popular)
            },
        ),
        ("rare task, defaults", Intent::new(rare)),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The process's resident memory (`VmRSS` from `/proc/self/status`), as the kernel prints it.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NEXUS_REGISTRY_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let calls: usize = std::env::var("NEXUS_REGISTRY_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let origins: usize = std::env::var("NEXUS_REGISTRY_BENCH_ORIGINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let only = std::env::var("NEXUS_REGISTRY_BENCH_INTENTS").unwrap_or_default();
    let intents: Vec<_> = intents()
        .into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect();
    let mut rng = StdRng::seed_from_u64(99);
    // A trust context with a CA key and no revocations: candidates with a MIC are re-checked
    // against it (expiry, CA key, revocation), as on a node.
    let mut trust_ctx = TrustContext::new();
    trust_ctx.apply_update(
        &TrustUpdate {
            ca_keys: [(1, trust().ca.verifying_key())].into_iter().collect(),
            circuits: vec![],
            revocations: vec![],
        },
        1,
    );
    let ctx = ResolveContext {
        now: Timestamp::from_millis(1),
        local_coord: Some(coord(&mut rng)),
        trust: Some(&trust_ctx),
    };
    println!("resolve latency, {calls} calls per intent, interleaved; times in µs");
    for size in sizes {
        let started = Instant::now();
        let registry = build(size, 7);
        let build_s = started.elapsed().as_secs_f64();
        let stats = registry.stats();
        println!(
            "\n== {size} adverts (built + verified in {build_s:.1} s; {} index rows over {} tags; \
             process RSS {}) ==",
            stats.index_rows,
            stats.index_tasks,
            rss()
        );
        // Warm-up.
        for (_, intent) in &intents {
            for _ in 0..50 {
                black_box(registry.resolve(intent, &ctx));
            }
        }
        let mut per_intent: Vec<Vec<Duration>> = vec![Vec::with_capacity(calls); intents.len()];
        let mut info = vec![(0usize, 0usize); intents.len()];
        for _ in 0..calls {
            for (i, (_, intent)) in intents.iter().enumerate() {
                let t = Instant::now();
                let res = registry.resolve(black_box(intent), &ctx);
                let dt = t.elapsed();
                per_intent[i].push(dt);
                info[i] = (res.considered, res.candidates.len());
                black_box(res);
            }
        }
        let mut all: Vec<Duration> = per_intent.iter().flatten().copied().collect();
        all.sort_unstable();
        let mean = all.iter().sum::<Duration>() / all.len() as u32;
        println!(
            "{:<62} {:>9} {:>4} {:>8} {:>8} {:>8}",
            "intent", "considered", "k'", "p50", "p99", "mean"
        );
        for (i, (name, _)) in intents.iter().enumerate() {
            let mut v = per_intent[i].clone();
            v.sort_unstable();
            let m = v.iter().sum::<Duration>() / v.len() as u32;
            println!(
                "{:<62} {:>9} {:>4} {:>8.2} {:>8.2} {:>8.2}",
                name,
                info[i].0,
                info[i].1,
                us(percentile(&v, 0.5)),
                us(percentile(&v, 0.99)),
                us(m)
            );
        }
        println!(
            "{:<62} {:>9} {:>4} {:>8.2} {:>8.2} {:>8.2}",
            "ALL",
            "",
            "",
            us(percentile(&all, 0.5)),
            us(percentile(&all, 0.99)),
            us(mean)
        );
        if origins > 0 {
            per_origin(&registry, &intents, origins, &trust_ctx);
        }
    }
}

/// Resolves each intent from `origins` resolving coordinates, one origin at a time, and prints
/// the spread over origins of the median call and of the p99 / p50 ratio within an origin.
fn per_origin(
    registry: &Registry,
    intents: &[(&'static str, Intent)],
    origins: usize,
    trust_ctx: &TrustContext,
) {
    const CALLS: usize = 200;
    let mut rng = StdRng::seed_from_u64(1234);
    let coords: Vec<Coord> = (0..origins).map(|_| coord(&mut rng)).collect();
    println!(
        "\nper origin ({origins} resolving coordinates, {CALLS} calls each): spread of the \
         per-origin p50 (min / p50 / p90 / max, µs) and of p99/p50 within an origin"
    );
    for (name, intent) in intents {
        let mut medians = Vec::with_capacity(origins);
        let mut ratios = Vec::with_capacity(origins);
        for c in &coords {
            let ctx = ResolveContext {
                now: Timestamp::from_millis(1),
                local_coord: Some(*c),
                trust: Some(trust_ctx),
            };
            for _ in 0..10 {
                black_box(registry.resolve(intent, &ctx));
            }
            let mut v: Vec<Duration> = (0..CALLS)
                .map(|_| {
                    let t = Instant::now();
                    black_box(registry.resolve(black_box(intent), &ctx));
                    t.elapsed()
                })
                .collect();
            v.sort_unstable();
            let p50 = us(percentile(&v, 0.5));
            medians.push(p50);
            ratios.push(us(percentile(&v, 0.99)) / p50);
        }
        medians.sort_by(f64::total_cmp);
        ratios.sort_by(f64::total_cmp);
        let q = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{:<62} p50 {:>7.2} {:>7.2} {:>7.2} {:>7.2}   p99/p50 {:>5.2} {:>5.2} {:>5.2} {:>5.2}",
            name,
            q(&medians, 0.0),
            q(&medians, 0.5),
            q(&medians, 0.9),
            q(&medians, 1.0),
            q(&ratios, 0.0),
            q(&ratios, 0.5),
            q(&ratios, 0.9),
            q(&ratios, 1.0),
        );
    }
}
