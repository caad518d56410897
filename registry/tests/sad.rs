//! SAD parsing, limits, binary encoding and load updates.

mod common;

use common::{chat, coord, key, maximal_sad, node};
use nexus_registry::*;

fn err(json: &str) -> SadError {
    Sad::from_json(json.as_bytes()).expect_err(json)
}

const BASE: &str = r#""id":"svc-1","tasks":["llm.chat"]"#;

fn with(extra: &str) -> String {
    format!("{{{BASE},{extra}}}")
}

#[test]
fn minimal_json_gets_documented_defaults() {
    let sad = Sad::from_json(format!("{{{BASE}}}").as_bytes()).expect("minimal");
    assert_eq!(sad, Sad::new("svc-1", "llm.chat"));
    assert_eq!(sad.ttl_s, TTL_S_DEFAULT);
    assert_eq!(sad.endpoint, Endpoint::default());
}

#[test]
fn json_round_trip_with_hex_arch_hash() {
    let mut sad = chat("svc-1");
    sad.arch_hash = Some(std::array::from_fn(|i| i as u8));
    let json = serde_json::to_string(&sad).expect("json");
    assert!(
        json.contains(
            "\"arch_hash\":\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\""
        ),
        "{json}"
    );
    assert_eq!(Sad::from_json(json.as_bytes()).expect("parse"), sad);
}

#[test]
fn each_bad_input_names_its_field() {
    let long = |n: usize| "a".repeat(n);
    let cases: Vec<(String, &str)> = vec![
        (r#"{"tasks":["llm.chat"]}"#.into(), "id"),
        (
            r#"{"id":"svc","tasks":["llm.chat"],"colour":"red"}"#.into(),
            "colour",
        ),
        (with(r#""load":{"queue_depth":1,"spin":2}"#), "load.spin"),
        (with(r#""arch_hash":"abcd""#), "arch_hash"),
        (
            with(&format!(r#""arch_hash":"{}zz""#, "0".repeat(62))),
            "arch_hash",
        ),
        (
            with(r#""latency_ms_p50":300,"latency_ms_p99":200"#),
            "latency_ms_p99",
        ),
        (r#"{"id":"svc","tasks":[]}"#.into(), "tasks"),
        (r#"{"id":"svc","tasks":["LLM.Chat"]}"#.into(), "tasks[0]"),
        (r#"{"id":"svc","tasks":["llm..chat"]}"#.into(), "tasks[0]"),
        (
            format!(r#"{{"id":"svc","tasks":["{}"]}}"#, long(TASK_BYTES_MAX + 1)),
            "tasks[0]",
        ),
        (
            r#"{"id":"svc","tasks":["a","b","c","d","e","f","g","h","i"]}"#.into(),
            "tasks",
        ),
        (r#"{"id":"svc","tasks":["a","a"]}"#.into(), "tasks[1]"),
        (r#"{"id":"","tasks":["a"]}"#.into(), "id"),
        (r#"{"id":"Svc","tasks":["a"]}"#.into(), "id"),
        (
            format!(
                r#"{{"id":"{}","tasks":["a"]}}"#,
                long(SERVICE_ID_BYTES_MAX + 1)
            ),
            "id",
        ),
        (
            with(&format!(
                r#""model_family":"{}""#,
                long(MODEL_FAMILY_BYTES_MAX + 1)
            )),
            "model_family",
        ),
        (with(r#""modalities":["text","text"]"#), "modalities[1]"),
        (
            with(r#""modalities":["a","b","c","d","e","f","g"]"#),
            "modalities",
        ),
        (
            with(&format!(
                r#""modalities":["{}"]"#,
                long(MODALITY_BYTES_MAX + 1)
            )),
            "modalities[0]",
        ),
        (
            with(r#""load":{"utilization_pct":101}"#),
            "load.utilization_pct",
        ),
        (
            with(r#""load":{"utilization_pct":300}"#),
            "load.utilization_pct",
        ),
        (
            with(&format!(r#""region":"{}""#, long(REGION_BYTES_MAX + 1))),
            "region",
        ),
        (with(r#""region":"eu west""#), "region"),
        (
            with(&format!(r#""zone":"{}""#, long(ZONE_BYTES_MAX + 1))),
            "zone",
        ),
        (
            with(r#""trust":{"attestations":["a b"]}"#),
            "trust.attestations[0]",
        ),
        (
            with(r#""trust":{"attestations":["a","b","c","d"]}"#),
            "trust.attestations",
        ),
        (
            with(&format!(
                r#""trust":{{"attestations":["{}"]}}"#,
                long(ATTESTATION_BYTES_MAX + 1)
            )),
            "trust.attestations[0]",
        ),
        (with(r#""ttl_s":4"#), "ttl_s"),
        (with(r#""ttl_s":86401"#), "ttl_s"),
        (with(r#""context_window":-1"#), "context_window"),
        (with(r#""endpoint":{"port":70000}"#), "endpoint.port"),
        (format!("{{{BASE}}} trailing"), "json"),
        ("not json".into(), "json"),
    ];
    for (json, field) in cases {
        let e = err(&json);
        assert_eq!(e.field, field, "{json} -> {e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
    }
}

#[test]
fn oversized_json_is_refused_before_parsing() {
    let json = format!("{{{BASE},\"zone\":\"{}\"}}", "z".repeat(SAD_JSON_BYTES_MAX));
    assert_eq!(err(&json).field, "sad");
}

#[test]
fn every_limit_accepts_its_maximum_and_encodes_within_bounds() {
    let sad = maximal_sad();
    sad.validate().expect("maximal SAD is valid");
    let bytes = sad.encode().expect("encode");
    assert!(bytes.len() <= SAD_BYTES_MAX, "{} bytes", bytes.len());
    assert_eq!(Sad::decode(&bytes).expect("decode"), sad);
    // And the advert carrying it, with a coordinate, fits one datagram.
    let k = key(1);
    let advert = Advert {
        origin: node(1),
        service: sad.id.clone(),
        version: sad.version,
        body: AdvertBody::Live {
            sad: sad.into(),
            coord: Some(coord(0.5, 0.25)),
            credentials: None,
        },
    };
    let signed = advert.sign(&k).expect("sign");
    assert!(signed.to_bytes().len() <= ADVERT_BYTES_MAX);
}

#[test]
fn binary_round_trip_and_zero_copy_access() {
    let mut sad = chat("svc-1");
    sad.arch_hash = Some([7; 32]);
    sad.trust.mic_serial = Some(42);
    let bytes = sad.encode().expect("encode");
    assert_eq!(&bytes[0..4], &SAD_MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), SAD_FORMAT_VERSION);
    assert_eq!(Sad::decode(&bytes).expect("decode"), sad);

    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    let archived = access(&aligned).expect("access");
    assert_eq!(archived.id.as_str(), "svc-1");
    assert_eq!(archived.context_window.to_native(), 32_768);
    assert_eq!(archived.tasks[0].as_str(), "llm.chat");

    // One byte off alignment: refused with a clear error, not UB or a panic.
    let mut shifted = rkyv::util::AlignedVec::<16>::new();
    shifted.push(0);
    shifted.extend_from_slice(&bytes);
    assert_eq!(access(&shifted[1..]).err(), Some(DecodeError::Misaligned));
}

#[test]
fn decoder_refuses_bad_headers_and_newer_formats() {
    let bytes = chat("svc-1").encode().expect("encode");
    let mut newer = bytes.clone();
    newer[4..6].copy_from_slice(&(SAD_FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        Sad::decode(&newer),
        Err(DecodeError::UnsupportedFormat {
            found: SAD_FORMAT_VERSION + 1
        })
    );
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(Sad::decode(&magic), Err(DecodeError::Magic));
    let mut reserved = bytes.clone();
    reserved[13] = 1;
    assert_eq!(Sad::decode(&reserved), Err(DecodeError::Reserved));
    assert!(matches!(
        Sad::decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Length(_))
    ));
    assert!(matches!(
        Sad::decode(&bytes[..3]),
        Err(DecodeError::Length(_))
    ));
    assert_eq!(
        Sad::decode(&vec![0; SAD_BYTES_MAX + 1]),
        Err(DecodeError::TooLarge(SAD_BYTES_MAX + 1))
    );
}

#[test]
fn decode_validates_limits_that_bytecheck_cannot_know() {
    // A structurally fine archive whose content breaks a limit (encode refuses to write it,
    // so build the archive by hand).
    let mut sad = chat("svc-1");
    sad.load.utilization_pct = 150;
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&sad).expect("archive");
    let mut bytes = vec![0u8; SAD_HEADER_LEN];
    bytes[0..4].copy_from_slice(&SAD_MAGIC);
    bytes[4..6].copy_from_slice(&SAD_FORMAT_VERSION.to_le_bytes());
    bytes[8..12].copy_from_slice(&(archive.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&archive);
    match Sad::decode(&bytes) {
        Err(DecodeError::Invalid(e)) => assert_eq!(e.field, "load.utilization_pct"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sad.encode().expect_err("encode validates").field,
        "load.utilization_pct"
    );
}

#[test]
fn load_updates_apply_partially_and_atomically() {
    let mut sad = chat("svc-1");
    let update: LoadUpdate =
        serde_json::from_str(r#"{"queue_depth":7,"latency_ms_p50":90}"#).expect("json");
    sad.apply_load(&update).expect("apply");
    assert_eq!(sad.load.queue_depth, 7);
    assert_eq!(sad.latency_ms_p50, 90);
    assert_eq!(sad.latency_ms_p99, 400, "untouched");

    let before = sad.clone();
    let bad = LoadUpdate {
        queue_depth: Some(1),
        latency_ms_p50: Some(500),
        ..LoadUpdate::default()
    };
    assert_eq!(
        sad.apply_load(&bad).expect_err("p99 < p50").field,
        "latency_ms_p99"
    );
    let bad = LoadUpdate {
        queue_depth: Some(1),
        utilization_pct: Some(101),
        ..LoadUpdate::default()
    };
    assert_eq!(
        sad.apply_load(&bad).expect_err("util").field,
        "utilization_pct"
    );
    assert_eq!(sad, before, "a refused update changes nothing");
    assert!(serde_json::from_str::<LoadUpdate>(r#"{"load":1}"#).is_err());
}
