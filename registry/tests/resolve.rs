//! Intent validation, canonical form, matching and ranking, explain, route deltas.

mod common;

use common::{chat, coord, key, node};
use nexus_registry::*;

fn ctx() -> ResolveContext<'static> {
    ResolveContext {
        now: Timestamp::ZERO,
        local_coord: None,
        trust: None,
    }
}

fn publish(r: &mut Registry, i: u8, mut sad: Sad, c: Option<Coord>) {
    sad.version = 1;
    let signed = Advert {
        origin: node(i),
        service: sad.id.clone(),
        version: 1,
        body: AdvertBody::Live {
            sad: sad.into(),
            coord: c,
            credentials: None,
        },
    }
    .sign(&key(i))
    .expect("sign");
    r.apply(ms(0), &signed).expect("apply");
}

fn names(res: &Resolution) -> Vec<String> {
    res.candidates.iter().map(|c| c.service.clone()).collect()
}

fn resolved(r: &Registry, intent: &Intent) -> Vec<String> {
    intent.validate().expect("valid intent");
    let plain = r.resolve(intent, &ctx());
    let mut explained = intent.clone();
    explained.explain = true;
    let with_reasons = r.resolve(&explained, &ctx());
    // The explain path (exact checks on every SAD) and the index path agree.
    assert_eq!(names(&plain), names(&with_reasons), "{intent:?}");
    assert_eq!(plain.routing_key, with_reasons.routing_key);
    names(&plain)
}

#[test]
fn each_constraint_excludes_exactly_what_it_should() {
    let mut r = Registry::new(node(0));
    let base = chat("base");
    type Variant = (&'static str, Box<dyn Fn(&mut Sad)>);
    let variants: Vec<Variant> = vec![
        ("base", Box::new(|_| {})),
        ("small-ctx", Box::new(|s| s.context_window = 8192)),
        (
            "slow",
            Box::new(|s| {
                s.latency_ms_p50 = 900;
                s.latency_ms_p99 = 2000;
            }),
        ),
        (
            "unknown-latency",
            Box::new(|s| {
                s.latency_ms_p50 = 0;
                s.latency_ms_p99 = 0;
            }),
        ),
        ("spiky", Box::new(|s| s.latency_ms_p99 = 5000)),
        ("pricey", Box::new(|s| s.price_micros_per_1k = 9000)),
        (
            "vision",
            Box::new(|s| s.modalities = vec!["text".into(), "image".into()]),
        ),
        ("us", Box::new(|s| s.region = "us-east".into())),
        ("qwen", Box::new(|s| s.model_family = "qwen".into())),
        ("mic", Box::new(|s| s.trust.mic_serial = Some(9))),
        ("coder", Box::new(|s| s.tasks = vec!["llm.code".into()])),
    ];
    for (name, f) in &variants {
        let mut s = base.clone();
        s.id = (*name).into();
        f(&mut s);
        publish(&mut r, 1, s, None);
    }
    let all_chat: Vec<&str> = variants
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "coder")
        .collect();
    let expect = |intent: Intent, excluded: &[&str]| {
        let mut intent = intent;
        intent.k = K_MAX;
        let mut got = resolved(&r, &intent);
        got.sort();
        let mut want: Vec<String> = all_chat
            .iter()
            .filter(|n| !excluded.contains(n))
            .map(|n| n.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want, "{}", intent.canonical());
    };
    let i = Intent::new("llm.chat");
    expect(i.clone(), &[]);
    expect(
        Intent {
            min_context: Some(32_768),
            ..i.clone()
        },
        &["small-ctx"],
    );
    expect(
        Intent {
            min_context: Some(32_769),
            ..i.clone()
        },
        &all_chat,
    );
    expect(
        Intent {
            max_latency_ms: Some(120),
            ..i.clone()
        },
        &["slow", "unknown-latency"],
    );
    expect(
        Intent {
            max_latency_p99_ms: Some(400),
            ..i.clone()
        },
        &["slow", "unknown-latency", "spiky"],
    );
    expect(
        Intent {
            max_price_micros_per_1k: Some(500),
            ..i.clone()
        },
        &["pricey"],
    );
    let non_vision: Vec<&str> = all_chat
        .iter()
        .copied()
        .filter(|n| *n != "vision")
        .collect();
    expect(
        Intent {
            modalities: vec!["image".into()],
            ..i.clone()
        },
        &non_vision,
    );
    expect(
        Intent {
            modalities: vec!["image".into(), "text".into()],
            ..i.clone()
        },
        &non_vision,
    );
    expect(
        Intent {
            region: Some("eu-west".into()),
            ..i.clone()
        },
        &["us"],
    );
    expect(
        Intent {
            model_family: Some("llama-3".into()),
            ..i.clone()
        },
        &["qwen"],
    );
    // A SAD that merely names a MIC serial (no credentials in the advert) is not verified:
    // `require_mic` excludes it like every other (tests/trust.rs covers verified MICs).
    expect(
        Intent {
            require_mic: true,
            ..i.clone()
        },
        &all_chat,
    );
    assert_eq!(
        resolved(&r, &Intent::new("llm.code")),
        vec!["coder".to_string()]
    );
    assert!(resolved(&r, &Intent::new("embedding")).is_empty());
    let res = r.resolve(&Intent::new("llm.chat"), &ctx());
    assert_eq!(res.considered, all_chat.len());
}

#[test]
fn explain_names_the_failed_constraint_and_the_terms() {
    let mut r = Registry::new(node(0));
    let mut small = chat("small");
    small.context_window = 32_768;
    publish(&mut r, 1, small, None);
    let mut big = chat("big");
    big.context_window = 200_000;
    publish(&mut r, 1, big, None);
    let intent = Intent {
        min_context: Some(128_000),
        max_latency_ms: Some(200),
        explain: true,
        ..Intent::new("llm.chat")
    };
    let res = r.resolve(&intent, &ctx());
    assert_eq!(res.excluded_total, 1);
    assert_eq!(res.excluded[0].service, "small");
    assert_eq!(
        res.excluded[0].reason,
        "context_window 32768 < min_context 128000"
    );
    let why = &res.candidates[0].why;
    assert!(
        why.iter().any(|w| w == "latency_p50 120 ms <= 200"),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w == "context_window 200000 >= 128000"),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w.starts_with("latency 0.455 x 1")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.starts_with("proximity 0.5 (no coordinate)")),
        "{why:?}"
    );
    // Without explain: no reasons, no exclusions.
    let quiet = r.resolve(
        &Intent {
            explain: false,
            ..intent
        },
        &ctx(),
    );
    assert!(quiet.candidates[0].why.is_empty() && quiet.excluded.is_empty());
}

#[test]
fn ranking_follows_the_documented_formula() {
    let mut r = Registry::new(node(0));
    let mk = |id: &str, p50: u32, util: u8, queue: u32, price: u64| {
        let mut s = chat(id);
        s.latency_ms_p50 = p50;
        s.latency_ms_p99 = p50;
        s.load.utilization_pct = util;
        s.load.queue_depth = queue;
        s.price_micros_per_1k = price;
        s
    };
    publish(&mut r, 1, mk("fast", 50, 50, 0, 1000), None);
    publish(&mut r, 1, mk("idle", 200, 0, 0, 1000), None);
    publish(&mut r, 1, mk("cheap", 200, 50, 0, 0), None);
    let by = |latency, load, price| {
        let intent = Intent {
            prefer: Preferences {
                latency,
                load,
                price,
                proximity: 0.0,
            },
            k: 3,
            ..Intent::new("llm.chat")
        };
        r.resolve(&intent, &ctx())
    };
    assert_eq!(names(&by(1.0, 0.0, 0.0))[0], "fast");
    assert_eq!(names(&by(0.0, 1.0, 0.0))[0], "idle");
    assert_eq!(names(&by(0.0, 0.0, 1.0))[0], "cheap");
    // Exact value: latency 1/(1+50/100), load (1-0.5)/(1+0), price 1/(1+1000/1000), weights 1,1,0.5.
    let res = by(1.0, 1.0, 0.5);
    let fast = res
        .candidates
        .iter()
        .find(|c| c.service == "fast")
        .expect("fast");
    let want = (1.0 / 1.5 + 0.5 + 0.5 * 0.5) / 2.5;
    assert!(
        (fast.score - want).abs() < 1e-12,
        "{} vs {want}",
        fast.score
    );
    assert!(res.candidates.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn proximity_prefers_the_nearer_coordinate_and_is_neutral_without_one() {
    let mut r = Registry::new(node(0));
    publish(&mut r, 1, chat("near"), Some(coord(0.0, 0.0)));
    publish(&mut r, 2, chat("far"), Some(coord(0.25, 0.0)));
    publish(&mut r, 3, chat("unknown"), None);
    let intent = Intent {
        prefer: Preferences {
            latency: 0.0,
            load: 0.0,
            price: 0.0,
            proximity: 1.0,
        },
        ..Intent::new("llm.chat")
    };
    let here = ResolveContext {
        now: Timestamp::ZERO,
        local_coord: Some(coord(0.0, 0.0)),
        trust: None,
    };
    let res = r.resolve(&intent, &here);
    assert_eq!(names(&res), ["near", "unknown", "far"]);
    let unknown = &res.candidates[1];
    assert_eq!(unknown.score, NEUTRAL_TERM);
    // Without a local coordinate everything is neutral: ties broken by (node, service).
    let res = r.resolve(&intent, &ctx());
    assert!(res.candidates.iter().all(|c| c.score == NEUTRAL_TERM));
    let keys: Vec<_> = res
        .candidates
        .iter()
        .map(|c| (c.node, c.service.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn ties_are_broken_by_node_then_service_and_k_bounds_hold() {
    let mut r = Registry::new(node(0));
    for i in [5u8, 3, 9, 1] {
        for s in ["b", "a", "c"] {
            publish(&mut r, i, chat(s), None);
        }
    }
    let mut all: Vec<(NodeId, String)> =
        r.iter().map(|(k, _)| (k.node, k.service.clone())).collect();
    all.sort();
    for k in [1u32, 3, 12, 64] {
        let res = r.resolve(
            &Intent {
                k,
                ..Intent::new("llm.chat")
            },
            &ctx(),
        );
        let got: Vec<_> = res
            .candidates
            .iter()
            .map(|c| (c.node, c.service.clone()))
            .collect();
        assert_eq!(got, all[..(k as usize).min(all.len())].to_vec(), "k = {k}");
    }
    let mut i = Intent::new("llm.chat");
    i.k = 0;
    assert_eq!(i.validate().expect_err("k").field, "k");
    i.k = K_MAX + 1;
    assert_eq!(i.validate().expect_err("k").field, "k");
    // resolve clamps rather than failing.
    assert_eq!(r.resolve(&i, &ctx()).candidates.len(), 12);
}

#[test]
fn intent_json_errors_and_canonical_form() {
    let i = Intent::from_json(br#"{"task":"llm.chat","min_context":128000,"max_latency_ms":200,"modalities":["text","image"],"k":5}"#).expect("intent");
    assert_eq!(
        i.canonical(),
        "nxi2|task=llm.chat|ctx=128000|p50=200|p99=-|price=-|mod=image,text|region=-|family=-|mic=0|pub=-|att=-|w=1,1,0.5,0.5"
    );
    // k and explain are not part of the class; modality order is not either.
    let j = Intent::from_json(br#"{"task":"llm.chat","min_context":128000,"max_latency_ms":200,"modalities":["image","text"],"explain":true}"#).expect("intent");
    assert_eq!(i.routing_key(), j.routing_key());
    let other = Intent::from_json(br#"{"task":"llm.chat","min_context":128001,"max_latency_ms":200,"modalities":["image","text"]}"#).expect("intent");
    assert_ne!(i.routing_key(), other.routing_key());
    assert_eq!(i.routing_key(), xxhash_rust_check(&i.canonical()));
    for (json, field) in [
        (r#"{"task":"llm.chat","colour":1}"#, "colour"),
        (r#"{"min_context":5}"#, "task"),
        (r#"{"task":"LLM"}"#, "task"),
        (r#"{"task":"llm.chat","k":0}"#, "k"),
        (r#"{"task":"llm.chat","k":65}"#, "k"),
        (
            r#"{"task":"llm.chat","prefer":{"latency":-1}}"#,
            "prefer.latency",
        ),
        (
            r#"{"task":"llm.chat","prefer":{"price":1e9}}"#,
            "prefer.price",
        ),
        (
            r#"{"task":"llm.chat","prefer":{"speed":1}}"#,
            "prefer.speed",
        ),
        (
            r#"{"task":"llm.chat","modalities":["x y"]}"#,
            "modalities[0]",
        ),
        (r#"{"task":"llm.chat","region":""}"#, "region"),
        (r#"{"task":"llm.chat","min_context":"big"}"#, "min_context"),
    ] {
        let e = Intent::from_json(json.as_bytes()).expect_err(json);
        assert_eq!(e.field, field, "{json}: {e}");
    }
}

/// The routing key is xxh3-128 of the canonical string (checked against a second hash path:
/// the streaming hasher).
fn xxhash_rust_check(s: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(s.as_bytes());
    h.digest128()
}

#[test]
fn route_table_emits_deltas_only_on_change() {
    let mut r = Registry::new(node(0));
    let me = key(0);
    let mut sad = chat("svc");
    sad.endpoint.port = 7000;
    r.publish(ms(0), sad.clone(), None, &me).expect("publish");
    let mut table = RouteTable::new();
    let intent = Intent::new("llm.chat");
    let k = table.track(ms(0), &intent);
    assert_eq!(k, intent.routing_key());
    let d1 = table.recompute(&r, &ctx()).expect("first delta");
    assert_eq!(d1.version, 1);
    assert_eq!(d1.upserts.len(), 1);
    assert_eq!(d1.upserts[0].key, k);
    assert_eq!(d1.upserts[0].class, intent.canonical());
    assert_eq!(d1.upserts[0].hops[0].port, 7000);
    assert!(d1.upserts[0].hops[0].weight >= 1);
    assert!(table.recompute(&r, &ctx()).is_none(), "nothing changed");
    // A load change changes the score and so the weight.
    sad.load.utilization_pct = 90;
    r.publish(ms(0), sad, None, &me).expect("publish");
    let d2 = table.recompute(&r, &ctx()).expect("weight changed");
    assert_eq!(d2.version, 2);
    assert!(d2.upserts[0].hops[0].weight < d1.upserts[0].hops[0].weight);
    // Withdrawn: the route goes away.
    r.withdraw(ms(0), "svc", &me).expect("withdraw");
    let d3 = table.recompute(&r, &ctx()).expect("removed");
    assert_eq!(d3.removals, vec![k]);
    assert!(d3.upserts.is_empty());
    let json = serde_json::to_string(&d3).expect("serde");
    assert_eq!(
        serde_json::from_str::<RouteDelta>(&json).expect("serde"),
        d3
    );
}

#[test]
fn route_table_evicts_the_least_recently_resolved_class() {
    let mut r = Registry::new(node(0));
    r.publish(ms(0), chat("svc"), None, &key(0))
        .expect("publish");
    let mut table = RouteTable::new();
    let intent = |ctx: u32| Intent {
        min_context: Some(ctx),
        ..Intent::new("llm.chat")
    };
    for c in 0..ROUTE_CLASSES_MAX as u32 {
        table.track(ms(u64::from(c)), &intent(c));
    }
    table.track(ms(ROUTE_CLASSES_MAX as u64), &intent(0)); // refresh: now the most recent
    assert!(table.recompute(&r, &ctx()).is_some());
    let evicted = intent(1).routing_key();
    table.track(ms(1_000_000), &intent(999_999));
    assert_eq!(table.len(), ROUTE_CLASSES_MAX);
    let delta = table.recompute(&r, &ctx()).expect("eviction");
    assert!(delta.removals.contains(&evicted), "{:?}", delta.removals);
    // The new class has no candidate (context too large), so no upsert for it.
    assert!(delta.upserts.is_empty());
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
