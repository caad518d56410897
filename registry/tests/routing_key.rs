//! The routing key is computed by streaming the canonical form into xxh3-128 (no string is
//! built). Keys are persisted in route tables and appear in the API, so the streamed bytes must
//! be exactly `Intent::canonical()` and the key exactly `xxh3_128(canonical())`: checked on
//! golden values (fixed before the streaming version existed, re-fixed when the canonical form
//! became `nxi2` with the publisher and attestation constraints) and on many random intents
//! (including weights, modality and publisher lists that validation would refuse).

use nexus_registry::{Attested, Intent, MODALITIES_MAX, PUBLISHERS_MAX, Preferences};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn streamed(i: &Intent) -> Vec<u8> {
    let mut out = Vec::new();
    i.write_canonical(&mut |b: &[u8]| out.extend_from_slice(b));
    out
}

fn check(i: &Intent) {
    let canonical = i.canonical();
    assert_eq!(
        String::from_utf8(streamed(i)).expect("UTF-8"),
        canonical,
        "{i:?}"
    );
    assert_eq!(
        i.routing_key(),
        xxhash_rust::xxh3::xxh3_128(canonical.as_bytes()),
        "{canonical}"
    );
}

#[test]
fn golden_keys_are_unchanged() {
    let mut golden = Vec::new();
    golden.push((
        Intent::new("llm.chat"),
        0x0cc38c11dfa7d5d73b8c1830a6b9aa2fu128,
        "nxi2|task=llm.chat|ctx=-|p50=-|p99=-|price=-|mod=-|region=-|family=-|mic=0|pub=-|att=-|w=1,1,0.5,0.5",
    ));
    let mut i = Intent::new("llm.chat");
    i.min_context = Some(128_000);
    i.max_latency_ms = Some(200);
    i.modalities = vec!["text".into(), "image".into()];
    golden.push((
        i,
        0x6215cae12c9bc92e919a2b817c5ddd40,
        "nxi2|task=llm.chat|ctx=128000|p50=200|p99=-|price=-|mod=image,text|region=-|family=-|mic=0|pub=-|att=-|w=1,1,0.5,0.5",
    ));
    let mut i = Intent::new("vision.detect");
    i.max_latency_p99_ms = Some(4000);
    i.max_price_micros_per_1k = Some(5000);
    i.modalities = vec!["video".into(), "audio".into(), "video".into()];
    i.region = Some("eu-west".into());
    i.model_family = Some("llama-3".into());
    i.require_mic = true;
    i.publishers = vec!["zeta labs".into(), "acme".into(), "zeta labs".into()];
    i.attested = Some(Attested {
        min_score: 800,
        require_safety: true,
    });
    i.prefer = Preferences {
        latency: 0.1,
        load: 1000.0,
        price: 0.0,
        proximity: 1.0 / 3.0,
    };
    i.k = 17;
    i.explain = true;
    golden.push((
        i,
        0xfa59882b89006316b4344747f388cb06,
        "nxi2|task=vision.detect|ctx=-|p50=-|p99=4000|price=5000|mod=audio,video|region=eu-west|family=llama-3|mic=1|pub=acme,zeta labs|att=800+safety|w=0.1,1000,0,0.3333333333333333",
    ));
    let mut i = Intent::new("audio.asr");
    i.attested = Some(Attested {
        min_score: 0,
        require_safety: false,
    });
    i.prefer = Preferences {
        latency: 2.5,
        load: 7.0,
        price: 123.456,
        proximity: 1e-7,
    };
    golden.push((
        i,
        0x92c64a3e0cd2507a36997eabc4bf3c49,
        "nxi2|task=audio.asr|ctx=-|p50=-|p99=-|price=-|mod=-|region=-|family=-|mic=0|pub=-|att=0|w=2.5,7,123.456,0.0000001",
    ));
    for (i, key, canonical) in golden {
        assert_eq!(i.canonical(), canonical);
        assert_eq!(i.routing_key(), key, "{canonical}");
        check(&i);
    }
}

fn weight(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..16) {
        0 => 0.0,
        1 => -0.0,
        2 => 1.0,
        3 => 0.5,
        4 => f64::from(rng.random_range(0..=2000u32)) / 2.0,
        5 => -f64::from(rng.random_range(0..=2000u32)) / 2.0,
        6 => f64::from(rng.random_range(0..=4000u32)) / 4.0,
        7 => rng.random_range(0.0..1000.0),
        8 => rng.random_range(0.0..1e-6),
        9 => [
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::EPSILON,
            1e15,
            1e16 + 2.0,
            (1u64 << 50) as f64 - 0.5,
            (1u64 << 50) as f64,
            (1u64 << 50) as f64 + 1.0,
            (1u64 << 53) as f64 + 2.0,
            0.1 + 0.2,
        ][rng.random_range(0..14)],
        10 => f64::from_bits(rng.random()),
        11 => rng.random_range(-1e20..1e20),
        12 => rng.random_range(0..1u64 << 60) as f64 / 2.0,
        _ => f64::from(rng.random_range(0..=10u32)) / 10.0,
    }
}

fn word(rng: &mut StdRng, alphabet: &[&str]) -> String {
    if rng.random_bool(0.2) {
        (0..rng.random_range(0..40))
            .map(|_| char::from(rng.random_range(b' '..=b'~')))
            .collect()
    } else {
        alphabet[rng.random_range(0..alphabet.len())].to_string()
    }
}

#[test]
fn streamed_form_equals_canonical_on_random_intents() {
    const TASKS: [&str; 4] = ["llm.chat", "vision.detect", "a", "x.y.z-1_2"];
    const MODALITIES: [&str; 6] = ["text", "image", "audio", "video", "", "t"];
    let mut rng = StdRng::seed_from_u64(17);
    for _ in 0..50_000 {
        let mut i = Intent::new(word(&mut rng, &TASKS));
        let opt = |rng: &mut StdRng| -> Option<u64> {
            match rng.random_range(0..4) {
                0 => None,
                1 => Some(0),
                2 => Some(rng.random_range(0..100_000)),
                _ => Some(rng.random()),
            }
        };
        i.min_context = opt(&mut rng).map(|v| v as u32);
        i.max_latency_ms = opt(&mut rng).map(|v| v as u32);
        i.max_latency_p99_ms = opt(&mut rng).map(|v| v as u32);
        i.max_price_micros_per_1k = opt(&mut rng);
        // Up to twice the limit (the sort falls back to a vector past MODALITIES_MAX),
        // duplicates likely.
        i.modalities = (0..rng.random_range(0..=2 * MODALITIES_MAX))
            .map(|_| word(&mut rng, &MODALITIES))
            .collect();
        i.region = rng
            .random_bool(0.5)
            .then(|| word(&mut rng, &["eu-west", "us-east", "", "-"]));
        i.model_family = rng
            .random_bool(0.5)
            .then(|| word(&mut rng, &["llama-3", "qwen-2", ""]));
        i.require_mic = rng.random_bool(0.5);
        // Up to twice the limit (the sort falls back to a vector past PUBLISHERS_MAX).
        i.publishers = (0..rng.random_range(0..=2 * PUBLISHERS_MAX))
            .map(|_| word(&mut rng, &["acme", "Zeta Labs", "acme", "ünïcode"]))
            .collect();
        i.attested = rng.random_bool(0.5).then(|| Attested {
            min_score: rng.random(),
            require_safety: rng.random_bool(0.5),
        });
        i.prefer = Preferences {
            latency: weight(&mut rng),
            load: weight(&mut rng),
            price: weight(&mut rng),
            proximity: weight(&mut rng),
        };
        i.k = rng.random();
        i.explain = rng.random_bool(0.5);
        check(&i);
    }
}
