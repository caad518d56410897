//! Differential test of `Registry::resolve` (best-first search over the per-task k-d tree)
//! against `Registry::resolve_reference` (every live record scanned, checked exactly, fully
//! sorted): seeded random registries — inserts, updates, withdrawals, node down, lease ends
//! (before and after `expire`), credentials whose verdict is verified (from one of a few
//! publishers, with proven predicates and MIC expiries drawn at random), pending or rejected —
//! and random intents (every constraint kind, random weights,
//! k 1..=64, explain on and off, with and without a local coordinate). Every field of the
//! resolution must be equal, each score must match the formula of docs/sad.md, and the
//! candidates and exclusions must agree with the constraints as that document states them
//! (written in this file, independently of the crate's constraint code).

mod common;

use common::{key, node};
use nexus_registry::*;
use nexus_trust_core::mic::{MicBody, SubjectKind};
use nexus_trust_core::zk::Predicate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const NODES: u8 = 24;
const TASKS: [&str; 5] = ["llm.chat", "llm.code", "vision.detect", "audio.asr", "rare"];
const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", ""];
const FAMILIES: [&str; 4] = ["llama-3", "qwen-2", "mistral", ""];
const MODALITIES: [&str; 4] = ["text", "image", "audio", "video"];
const CTX: [u32; 6] = [4096, 8192, 32_768, 128_000, 200_000, 1_000_000];
const PUBLISHERS: [&str; 3] = ["acme", "beta", "cortex"];

/// A coordinate exact in f32 (the advert carries f32), on a coarse grid so ties happen.
fn coord(rng: &mut StdRng) -> Coord {
    let mut c = Coord::default();
    let spread = [8, 64][rng.random_range(0..2)];
    for x in &mut c.vec {
        *x = f64::from(rng.random_range(-spread..=spread)) / 128.0;
    }
    c.height = f64::from(rng.random_range(0..=4)) / 1024.0;
    c.adjustment = f64::from(rng.random_range(-2i32..=2)) / 1024.0;
    c.error = 0.25;
    c
}

fn sad(rng: &mut StdRng, id: String, same_terms: bool) -> Sad {
    let mut s = Sad::new(id, TASKS[rng.random_range(0..TASKS.len())]);
    for _ in 0..rng.random_range(0..3) {
        let t = TASKS[rng.random_range(0..TASKS.len() - 1)];
        if !s.tasks.iter().any(|x| x == t) {
            s.tasks.push(t.into());
        }
    }
    s.endpoint.port = rng.random_range(1024..65535);
    s.context_window = CTX[rng.random_range(0..CTX.len())];
    s.model_family = FAMILIES[rng.random_range(0..FAMILIES.len())].into();
    s.region = REGIONS[rng.random_range(0..REGIONS.len())].into();
    s.modalities = MODALITIES
        .iter()
        .filter(|_| rng.random_bool(0.4))
        .map(|m| (*m).to_string())
        .collect();
    // Coarse values, so equal scores (and key tie-breaks) are common.
    s.latency_ms_p50 = [0, 20, 50, 100, 200, 400, 1000][rng.random_range(0..7)];
    s.latency_ms_p99 = if s.latency_ms_p50 == 0 {
        [0, 300][rng.random_range(0..2)]
    } else {
        s.latency_ms_p50 * rng.random_range(1..5)
    };
    s.price_micros_per_1k = [0, 100, 500, 1000, 5000, 20_000][rng.random_range(0..6)];
    s.load.utilization_pct = [0, 10, 50, 90, 100][rng.random_range(0..5)];
    s.load.queue_depth = [0, 1, 16, 63][rng.random_range(0..4)];
    if rng.random_bool(0.3) {
        s.trust.mic_serial = Some(rng.random_range(1..1000));
    }
    if same_terms {
        s.latency_ms_p50 = 100;
        s.latency_ms_p99 = 300;
        s.price_micros_per_1k = 1000;
        s.load.utilization_pct = 50;
        s.load.queue_depth = 16;
    }
    s.ttl_s = rng.random_range(30..600);
    s
}

fn intent(rng: &mut StdRng) -> Intent {
    let mut i = Intent::new(TASKS[rng.random_range(0..TASKS.len())]);
    if rng.random_bool(0.02) {
        i.task = "absent".into();
    }
    if rng.random_bool(0.3) {
        i.min_context = Some(CTX[rng.random_range(0..CTX.len())]);
    }
    if rng.random_bool(0.25) {
        i.max_latency_ms = Some([20, 100, 400, 2000][rng.random_range(0..4)]);
    }
    if rng.random_bool(0.2) {
        i.max_latency_p99_ms = Some([100, 600, 4000][rng.random_range(0..3)]);
    }
    if rng.random_bool(0.25) {
        i.max_price_micros_per_1k = Some([0, 500, 5000][rng.random_range(0..3)]);
    }
    if rng.random_bool(0.2) {
        i.modalities = MODALITIES
            .iter()
            .filter(|_| rng.random_bool(0.4))
            .map(|m| (*m).to_string())
            .collect();
    }
    if rng.random_bool(0.2) {
        i.region = Some(REGIONS[rng.random_range(0..3)].into());
    }
    if rng.random_bool(0.15) {
        i.model_family = Some(FAMILIES[rng.random_range(0..3)].into());
    }
    i.require_mic = rng.random_bool(0.15);
    if rng.random_bool(0.15) {
        i.publishers = (0..rng.random_range(1..=3))
            .map(|_| ["acme", "beta", "cortex", "nobody"][rng.random_range(0..4)].to_string())
            .collect();
    }
    if rng.random_bool(0.15) {
        i.attested = Some(Attested {
            min_score: [500, 800, 950][rng.random_range(0..3)],
            require_safety: rng.random_bool(0.5),
        });
    }
    let w = |rng: &mut StdRng| match rng.random_range(0..6) {
        0 => 0.0,
        1 => 1.0,
        2 => 0.5,
        3 => 1000.0,
        _ => rng.random_range(0.0..10.0),
    };
    if rng.random_bool(0.15) {
        // Proximity alone: the coordinate bounds decide.
        i.prefer = Preferences {
            latency: 0.0,
            load: 0.0,
            price: 0.0,
            proximity: 1.0,
        };
    } else if rng.random_bool(0.7) {
        i.prefer = Preferences {
            latency: w(rng),
            load: w(rng),
            price: w(rng),
            proximity: w(rng),
        };
    }
    i.k = if rng.random_bool(0.3) {
        rng.random_range(1..=3)
    } else {
        rng.random_range(1..=K_MAX)
    };
    i.explain = rng.random_bool(0.25);
    i.validate().expect("generated intents are valid");
    i
}

/// The score of docs/sad.md §9, from the SAD and coordinates (f64 throughout).
fn documented_score(i: &Intent, sad: &Sad, coord: Option<&Coord>, local: Option<&Coord>) -> f64 {
    let latency = if sad.latency_ms_p50 == 0 {
        0.5
    } else {
        1.0 / (1.0 + f64::from(sad.latency_ms_p50) / 100.0)
    };
    let load = (1.0 - f64::from(sad.load.utilization_pct.min(100)) / 100.0)
        / (1.0 + f64::from(sad.load.queue_depth) / 16.0);
    let price = 1.0 / (1.0 + sad.price_micros_per_1k as f64 / 1000.0);
    let proximity = match (local, coord) {
        (Some(a), Some(b)) => 1.0 / (1.0 + a.distance_s(b) * 1000.0 / 50.0),
        _ => 0.5,
    };
    let p = &i.prefer;
    let sum = p.latency + p.load + p.price + p.proximity;
    if sum == 0.0 {
        return 0.0;
    }
    (p.latency * latency + p.load * load + p.price * price + p.proximity * proximity) / sum
}

fn check(r: &Registry, i: &Intent, ctx: &ResolveContext, step: &str) {
    let fast = r.resolve(i, ctx);
    let reference = r.resolve_reference(i, ctx);
    assert_eq!(fast, reference, "{step}: {i:?} at {ctx:?}");
    // Scores are bit-identical above; check them against the documented formula too.
    for c in &fast.candidates {
        let e = r
            .get(&ServiceKey::new(c.node, c.service.clone()))
            .expect("a candidate is live");
        let want = documented_score(i, &c.sad, e.coord(), ctx.local_coord.as_ref());
        assert!(
            (c.score - want).abs() < 1e-6,
            "{step}: score {} vs formula {want} for {}",
            c.score,
            c.service
        );
    }
    if !i.explain {
        assert_eq!(fast.excluded_total, 0, "{step}: counts only with explain");
    }
    // The constraints as docs/sad.md states them, written here against the SAD (not with the
    // crate's constraint code, which both resolve paths share): the candidates are records
    // that meet them, as many as there are up to k, and explain excludes exactly the rest.
    let meeting: BTreeSet<ServiceKey> = r
        .iter()
        .filter(|(_, e)| meets(i, e, ctx.now))
        .map(|(key, _)| key.clone())
        .collect();
    for c in &fast.candidates {
        let key = ServiceKey::new(c.node, c.service.clone());
        assert!(
            meeting.contains(&key),
            "{step}: {key:?} does not meet {i:?}"
        );
    }
    let k = i.k.clamp(1, K_MAX) as usize;
    assert_eq!(fast.candidates.len(), meeting.len().min(k), "{step}: {i:?}");
    if i.explain {
        assert_eq!(
            fast.excluded_total,
            fast.considered - meeting.len(),
            "{step}: {i:?}"
        );
    }
}

/// Whether a record meets an intent's task and hard constraints (docs/sad.md), at `now`.
fn meets(i: &Intent, e: &Entry, now: Timestamp) -> bool {
    let Some(sad) = e.shared_sad() else {
        return false;
    };
    let verified = e.trust().verified();
    sad.tasks.contains(&i.task)
        && e.expires_at() > now
        && !e.trust().blocks()
        // A verified MIC is good until the end of its last millisecond of validity (Unix ms;
        // the registry's epoch is Unix time 0 here).
        && verified.is_none_or(|v| now.as_millis() <= v.not_after_ms)
        && i.min_context.is_none_or(|m| sad.context_window >= m)
        && i.max_latency_ms
            .is_none_or(|m| sad.latency_ms_p50 != 0 && sad.latency_ms_p50 <= m)
        && i.max_latency_p99_ms
            .is_none_or(|m| sad.latency_ms_p99 != 0 && sad.latency_ms_p99 <= m)
        && i.max_price_micros_per_1k
            .is_none_or(|m| sad.price_micros_per_1k <= m)
        && i.modalities.iter().all(|m| sad.modalities.contains(m))
        && i.region.as_ref().is_none_or(|r| &sad.region == r)
        && i.model_family
            .as_ref()
            .is_none_or(|f| &sad.model_family == f)
        && (!i.require_mic || verified.is_some())
        && (i.publishers.is_empty()
            || verified.is_some_and(|v| i.publishers.contains(&v.publisher)))
        && i.attested
            .is_none_or(|a| verified.is_some_and(|v| v.proves(a.min_score, a.require_safety)))
}

fn publish(r: &mut Registry, now: Timestamp, n: u8, s: &Sad, c: Option<Coord>, version: u64) {
    publish_with(r, now, n, s, c, version, None);
}

/// Publishes with credentials for MIC `trusted.0` and sets the node's verdict on them to
/// `trusted.1` directly (this test is about resolve, not verification: the MIC's signature and
/// attestations are never checked).
fn publish_with(
    r: &mut Registry,
    now: Timestamp,
    n: u8,
    s: &Sad,
    c: Option<Coord>,
    version: u64,
    trusted: Option<(u64, TrustVerdict)>,
) {
    let mut s = s.clone();
    s.version = version;
    let credentials = trusted.as_ref().map(|(serial, _)| {
        s.trust.mic_serial = Some(*serial);
        Arc::new(Credentials {
            mic: MicBody {
                serial: *serial,
                subject_key: [3; 32],
                kind: SubjectKind::Model,
                model: None,
                publisher: "acme".into(),
                provenance: vec![],
                claims: vec![],
                zk_commitment: None,
                not_before_ms: 0,
                not_after_ms: u64::MAX,
                ca_key_id: 1,
            }
            .sign(&key(99)),
            attestations: vec![],
        })
    });
    let signed = Advert {
        origin: node(n),
        service: s.id.clone(),
        version,
        body: AdvertBody::Live {
            sad: s.clone().into(),
            coord: c,
            credentials,
        },
    }
    .sign(&key(n))
    .expect("sign");
    r.apply(now, &signed).expect("apply");
    if let Some((_, verdict)) = trusted {
        r.set_trust(&ServiceKey::new(node(n), s.id.clone()), verdict);
    }
}

/// Credentials for a service, or none (65 %): mostly verified, from one of [`PUBLISHERS`], with
/// 0–2 proven predicates and sometimes a MIC that expires during the run; else pending or
/// rejected.
fn credentials(rng: &mut StdRng) -> Option<(u64, TrustVerdict)> {
    if rng.random_bool(0.65) {
        return None;
    }
    let serial = rng.random_range(1..10_000);
    let verdict = match rng.random_range(0..10) {
        0 => TrustVerdict::Pending,
        1 => TrustVerdict::Rejected(TrustReject::UnknownCaKey {
            serial,
            ca_key_id: 1,
        }),
        _ => TrustVerdict::Verified(Arc::new(Verified {
            serial,
            kind: SubjectKind::Model,
            publisher: PUBLISHERS[rng.random_range(0..PUBLISHERS.len())].into(),
            subject_key: [3; 32],
            ca_key_id: 1,
            not_before_ms: 0,
            not_after_ms: if rng.random_bool(0.1) {
                rng.random_range(0..200_000)
            } else {
                u64::MAX
            },
            predicates: (0..rng.random_range(0..3))
                .map(|_| Predicate {
                    min_score: [500, 800, 950][rng.random_range(0..3)],
                    require_safety: rng.random_bool(0.5),
                })
                .collect(),
        })),
    };
    Some((serial, verdict))
}

fn withdraw(r: &mut Registry, now: Timestamp, n: u8, service: &str, version: u64) {
    let signed = Advert {
        origin: node(n),
        service: service.into(),
        version,
        body: AdvertBody::Withdrawn,
    }
    .sign(&key(n))
    .expect("sign");
    r.apply(now, &signed).expect("apply");
}

/// One seeded run: `ops` registry changes, checking `intents_per_check` random intents every
/// `check_every` changes.
/// With `same_terms`, every SAD has the same latency, load and price terms, so the trees split
/// on the coordinates and the proximity bounds decide the pruning.
fn run(seed: u64, ops: usize, check_every: usize, intents_per_check: usize, same_terms: bool) {
    run_with(
        seed,
        ops,
        check_every,
        intents_per_check,
        same_terms,
        2000,
        true,
    );
}

/// [`run`] with time advancing by `0..step_ms` per change and, without `nodes_fail`, no node
/// going down: short steps and no node failures keep most adverts live, so the registry grows
/// large.
fn run_with(
    seed: u64,
    ops: usize,
    check_every: usize,
    intents_per_check: usize,
    same_terms: bool,
    step_ms: u64,
    nodes_fail: bool,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let coords: Vec<Option<Coord>> = (0..NODES)
        .map(|_| rng.random_bool(0.85).then(|| coord(&mut rng)))
        .collect();
    let mut r = Registry::new(node(200));
    // (node, service) → (version, sad) of what we published (live or not).
    let mut held: Vec<(u8, String, u64)> = Vec::new();
    let mut now = Timestamp::ZERO;
    for op in 0..ops {
        now = now + Duration::from_millis(rng.random_range(0..step_ms));
        match rng.random_range(0..100) {
            0..=59 => {
                let n = rng.random_range(0..NODES);
                let id = format!("svc-{op}");
                let s = sad(&mut rng, id.clone(), same_terms);
                let trusted = credentials(&mut rng);
                publish_with(&mut r, now, n, &s, coords[n as usize], 1, trusted);
                held.push((n, id, 1));
            }
            60..=79 if !held.is_empty() => {
                // Update: new load, latency, price, maybe tasks and context (a re-index).
                let at = rng.random_range(0..held.len());
                let (n, id, v) = held[at].clone();
                let s = sad(&mut rng, id.clone(), same_terms);
                let trusted = credentials(&mut rng);
                publish_with(&mut r, now, n, &s, coords[n as usize], v + 1, trusted);
                held[at].2 = v + 1;
            }
            80..=87 if !held.is_empty() => {
                let at = rng.random_range(0..held.len());
                let (n, id, v) = held.swap_remove(at);
                withdraw(&mut r, now, n, &id, v + 1);
            }
            88..=90 if nodes_fail => {
                let n = rng.random_range(0..NODES);
                r.node_down(node(n));
            }
            91..=95 => {
                r.expire(now);
            }
            _ => {}
        }
        if op % check_every == check_every - 1 {
            r.check_invariants();
            for _ in 0..intents_per_check {
                let i = intent(&mut rng);
                // Sometimes resolve ahead of `expire`: leases that ended are still indexed.
                let at =
                    now + Duration::from_millis([0, 0, 30_000, 300_000][rng.random_range(0..4)]);
                let local = match rng.random_range(0..4) {
                    0 => None,
                    1 => coords[rng.random_range(0..NODES) as usize],
                    _ => Some(coord(&mut rng)),
                };
                let ctx = ResolveContext {
                    now: at,
                    local_coord: local,
                    trust: None,
                };
                check(&r, &i, &ctx, &format!("seed {seed} op {op}"));
            }
        }
    }
    r.check_invariants();
}

#[test]
fn resolve_equals_reference_on_small_churning_registries() {
    for seed in 0..10 {
        run(seed, 400, 20, 20, false);
    }
}

#[test]
fn resolve_equals_reference_on_a_larger_registry() {
    // 200–700 live adverts at the checks (leases end and nodes go down), trees a few levels
    // deep.
    for seed in [100, 101] {
        run(seed, 3500, 700, 150, false);
    }
}

#[test]
fn resolve_equals_reference_when_proximity_decides() {
    for seed in [200, 201] {
        run(seed, 2500, 500, 150, true);
    }
}

#[test]
fn resolve_equals_reference_on_deep_trees() {
    // ~6000 live adverts by the end: thousands of rows per task, trees of several levels with
    // leaves of up to 64 rows, so the search keeps a child in hand across many levels and the coordinate boxes
    // (with the local coordinate inside, on the edge of and outside them) decide the proximity
    // bounds; with and without equal static terms.
    run_with(300, 12_000, 4000, 120, false, 20, false);
    run_with(301, 12_000, 4000, 120, true, 20, false);
}

#[test]
fn unbounded_scores_fall_back_to_a_scan() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut r = Registry::new(node(200));
    for n in 0..400 {
        let s = sad(&mut rng, format!("svc-{n}"), false);
        let c = Some(coord(&mut rng));
        publish(
            &mut r,
            Timestamp::ZERO,
            (n % u32::from(NODES)) as u8,
            &s,
            c,
            1,
        );
    }
    let mut i = Intent::new("llm.chat");
    i.prefer = Preferences {
        latency: 0.0,
        load: 0.0,
        price: 0.0,
        proximity: 0.0,
    };
    i.k = 10;
    let ctx = ResolveContext {
        now: Timestamp::ZERO,
        local_coord: Some(coord(&mut rng)),
        trust: None,
    };
    // All weights 0: every score is 0, ranked by key.
    check(&r, &i, &ctx, "zero weights");
    // Weights beyond validation (their sum overflows) and a local coordinate with a negative
    // height: not bounded, scanned, still equal.
    i.prefer.latency = f64::MAX;
    i.prefer.load = f64::MAX;
    let fast = r.resolve(&i, &ctx);
    assert_eq!(fast, r.resolve_reference(&i, &ctx));
    i.prefer = Preferences::default();
    let mut odd = coord(&mut rng);
    odd.height = -0.01;
    let ctx = ResolveContext {
        now: Timestamp::ZERO,
        local_coord: Some(odd),
        trust: None,
    };
    assert_eq!(r.resolve(&i, &ctx), r.resolve_reference(&i, &ctx));
}
