//! The MIC format: round trips, every limit, strict decoding, signature and validity checks,
//! tampering, seeded random mutations, and the JSON views.

use ed25519_dalek::{Signer, SigningKey};
use nexus_trust_core::ca::IssueRequest;
use nexus_trust_core::mic::{
    CLAIM_KEY_BYTES_MAX, CLAIM_VALUE_BYTES_MAX, CLAIMS_MAX, CaKeys, Claim, MIC_BYTES_MAX,
    MIC_BYTES_MIN, MIC_VERSION, Mic, MicBody, MicError, MicField, ModelIdentity, PROVENANCE_MAX,
    PUBLISHER_BYTES_MAX, SubjectKind,
};
use rand_08::{Rng, SeedableRng, rngs::StdRng};

const CA_KEY_ID: u32 = 3;

fn ca_key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

fn keys() -> CaKeys {
    [(CA_KEY_ID, ca_key().verifying_key())]
        .into_iter()
        .collect()
}

fn full_body() -> MicBody {
    MicBody {
        serial: 0x0102_0304_0506_0708,
        subject_key: [0xAA; 32],
        kind: SubjectKind::Model,
        model: Some(ModelIdentity {
            arch_hash: [0xBB; 32],
            weights_commitment: [0xCC; 32],
        }),
        publisher: "acme labs ✓".into(),
        provenance: vec![1, 5, 9],
        claims: vec![
            Claim {
                key: "task".into(),
                value: "chat".into(),
            },
            Claim {
                key: "lang".into(),
                value: "de,en".into(),
            },
        ],
        zk_commitment: Some([0xDD; 32]),
        not_before_ms: 1_000,
        not_after_ms: 9_000,
        ca_key_id: CA_KEY_ID,
    }
}

/// A body with no optional parts.
fn bare_body() -> MicBody {
    MicBody {
        kind: SubjectKind::Node,
        model: None,
        publisher: String::new(),
        provenance: vec![],
        claims: vec![],
        zk_commitment: None,
        ..full_body()
    }
}

fn signed(body: MicBody) -> Mic {
    body.sign(&ca_key())
}

/// Offset of the publisher length byte in an encoding of `body`.
fn publisher_at(body: &MicBody) -> usize {
    4 + 1 + 8 + 32 + 1 + 1 + if body.model.is_some() { 64 } else { 0 }
}

#[test]
fn round_trips_every_shape() {
    let shapes = [
        full_body(),
        bare_body(),
        MicBody {
            kind: SubjectKind::Agent,
            ..full_body()
        },
        MicBody {
            zk_commitment: None,
            ..full_body()
        },
        MicBody {
            model: None,
            ..full_body()
        },
        MicBody {
            not_before_ms: 5,
            not_after_ms: 5,
            ..bare_body()
        },
        MicBody {
            serial: u64::MAX,
            not_before_ms: 0,
            not_after_ms: u64::MAX,
            ca_key_id: u32::MAX,
            ..full_body()
        },
    ];
    for body in shapes {
        let mic = signed(body);
        let bytes = mic.encode();
        assert!((MIC_BYTES_MIN..=MIC_BYTES_MAX).contains(&bytes.len()));
        assert_eq!(&bytes[..4], b"NXMC");
        assert_eq!(bytes[4], MIC_VERSION);
        let decoded = Mic::decode(&bytes).expect("decodes");
        assert_eq!(decoded, mic);
        assert_eq!(decoded.encode(), bytes);
    }
}

#[test]
fn fixed_fields_are_big_endian_in_order() {
    let bytes = signed(full_body()).encode();
    assert_eq!(&bytes[5..13], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&bytes[13..45], &[0xAA; 32]);
    assert_eq!(bytes[45], 2, "kind model");
    assert_eq!(bytes[46], 1, "model present");
    let tail = &bytes[bytes.len() - 64 - 4 - 16..bytes.len() - 64];
    assert_eq!(&tail[..8], &1_000u64.to_be_bytes());
    assert_eq!(&tail[8..16], &9_000u64.to_be_bytes());
    assert_eq!(&tail[16..], &CA_KEY_ID.to_be_bytes());
}

/// Encodes `body` (which may break limits) and decodes it.
fn decode_body(body: MicBody) -> Result<Mic, MicError> {
    Mic::decode(&signed(body).encode())
}

#[test]
fn every_limit_is_enforced_exactly() {
    let at_limit = MicBody {
        publisher: "é".repeat(PUBLISHER_BYTES_MAX / 2),
        provenance: (1..=PROVENANCE_MAX as u64).collect(),
        claims: (0..CLAIMS_MAX)
            .map(|i| Claim {
                key: format!("{i:x>width$}", width = CLAIM_KEY_BYTES_MAX),
                value: "v".repeat(CLAIM_VALUE_BYTES_MAX),
            })
            .collect(),
        ..full_body()
    };
    assert_eq!(at_limit.publisher.len(), PUBLISHER_BYTES_MAX);
    let encoded = signed(at_limit.clone()).encode();
    assert_eq!(encoded.len(), MIC_BYTES_MAX);
    assert!(Mic::decode(&encoded).is_ok());

    let too_long = |field, len, max| MicError::TooLong { field, len, max };
    let mut b = at_limit.clone();
    b.publisher.push('x');
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::Publisher, 65, PUBLISHER_BYTES_MAX))
    );
    let mut b = at_limit.clone();
    b.provenance.push(100);
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::Provenance, 9, PROVENANCE_MAX))
    );
    let mut b = at_limit.clone();
    b.claims.push(Claim {
        key: "extra".into(),
        value: String::new(),
    });
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::Claims, 17, CLAIMS_MAX))
    );
    let mut b = at_limit.clone();
    b.claims[3].key.push('k');
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::ClaimKey, 33, CLAIM_KEY_BYTES_MAX))
    );
    let mut b = at_limit.clone();
    b.claims[15].value.push('v');
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::ClaimValue, 65, CLAIM_VALUE_BYTES_MAX))
    );
    // Lengths that do not fit a byte saturate at 255 and are rejected at that field.
    let mut b = at_limit;
    b.publisher = "p".repeat(1_000);
    assert_eq!(
        decode_body(b),
        Err(too_long(MicField::Publisher, 255, PUBLISHER_BYTES_MAX))
    );
}

#[test]
fn check_agrees_with_decode() {
    let mut b = full_body();
    b.claims[1].value = "v".repeat(CLAIM_VALUE_BYTES_MAX + 1);
    let err = b.check().expect_err("over limit");
    assert_eq!(decode_body(b), Err(err));
}

#[test]
fn content_rules_are_enforced() {
    let mut b = full_body();
    b.claims[1].key = "task".into();
    assert_eq!(
        decode_body(b),
        Err(MicError::DuplicateClaimKey { key: "task".into() })
    );
    let mut b = full_body();
    b.claims[1].key = String::new();
    assert_eq!(decode_body(b), Err(MicError::EmptyClaimKey { index: 1 }));
    let mut b = full_body();
    b.provenance = vec![4, 0];
    assert_eq!(decode_body(b), Err(MicError::BadProvenance { serial: 0 }));
    let mut b = full_body();
    b.provenance = vec![4, 7, 4];
    assert_eq!(decode_body(b), Err(MicError::BadProvenance { serial: 4 }));
    let mut b = full_body();
    b.not_before_ms = 9_001;
    assert_eq!(
        decode_body(b),
        Err(MicError::EmptyValidity {
            not_before_ms: 9_001,
            not_after_ms: 9_000
        })
    );
}

#[test]
fn header_kind_and_tags_are_strict() {
    let bytes = signed(full_body()).encode();
    let with = |i: usize, v: u8| {
        let mut b = bytes.clone();
        b[i] = v;
        Mic::decode(&b)
    };
    assert_eq!(with(0, b'X'), Err(MicError::BadMagic));
    assert_eq!(with(4, 2), Err(MicError::UnsupportedVersion { version: 2 }));
    assert_eq!(with(4, 0), Err(MicError::UnsupportedVersion { version: 0 }));
    assert_eq!(with(45, 0), Err(MicError::UnknownKind { value: 0 }));
    assert_eq!(with(45, 4), Err(MicError::UnknownKind { value: 4 }));
    assert_eq!(
        with(46, 2),
        Err(MicError::BadPresenceTag {
            field: MicField::Model,
            value: 2
        })
    );
    let zk_tag_at = bytes.len() - 64 - 4 - 16 - 32 - 1;
    assert_eq!(bytes[zk_tag_at], 1);
    assert_eq!(
        with(zk_tag_at, 7),
        Err(MicError::BadPresenceTag {
            field: MicField::ZkCommitment,
            value: 7
        })
    );
}

#[test]
fn non_utf8_strings_are_rejected_by_field() {
    let body = full_body();
    let bytes = signed(body.clone()).encode();
    let publisher = publisher_at(&body);
    let mut bad = bytes.clone();
    bad[publisher + 1] = 0xFF;
    assert_eq!(
        Mic::decode(&bad),
        Err(MicError::NotUtf8 {
            field: MicField::Publisher
        })
    );
    // First claim's key starts after publisher, provenance count + serials, claims count, key len.
    let claim_key = publisher + 1 + body.publisher.len() + 1 + 8 * body.provenance.len() + 1 + 1;
    assert_eq!(&bytes[claim_key..claim_key + 4], b"task");
    let mut bad = bytes.clone();
    bad[claim_key] = 0xC0;
    assert_eq!(
        Mic::decode(&bad),
        Err(MicError::NotUtf8 {
            field: MicField::ClaimKey
        })
    );
    let claim_value = claim_key + 4 + 1;
    assert_eq!(&bytes[claim_value..claim_value + 4], b"chat");
    let mut bad = bytes;
    bad[claim_value + 2] = 0x80;
    assert_eq!(
        Mic::decode(&bad),
        Err(MicError::NotUtf8 {
            field: MicField::ClaimValue
        })
    );
}

#[test]
fn every_truncation_and_any_trailing_byte_is_rejected() {
    for body in [full_body(), bare_body()] {
        let bytes = signed(body).encode();
        for len in 0..bytes.len() {
            match Mic::decode(&bytes[..len]) {
                Err(MicError::Truncated { .. }) => {}
                other => panic!("prefix of {len} bytes gave {other:?}"),
            }
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 0]);
        assert_eq!(
            Mic::decode(&longer),
            Err(MicError::TrailingBytes { count: 2 })
        );
    }
    assert_eq!(
        Mic::decode(&[]),
        Err(MicError::Truncated {
            field: MicField::Magic
        })
    );
}

#[test]
fn verify_checks_key_signature_and_window() {
    let mic = signed(full_body());
    let keys = keys();
    assert_eq!(mic.verify(&keys, 1_000), Ok(()), "first valid instant");
    assert_eq!(mic.verify(&keys, 9_000), Ok(()), "last valid instant");
    assert_eq!(
        mic.verify(&keys, 999),
        Err(MicError::NotYetValid {
            now_ms: 999,
            not_before_ms: 1_000
        })
    );
    assert_eq!(
        mic.verify(&keys, 9_001),
        Err(MicError::Expired {
            now_ms: 9_001,
            not_after_ms: 9_000
        })
    );
    // Unknown key id.
    let other_id: CaKeys = [(CA_KEY_ID + 1, ca_key().verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(
        mic.verify(&other_id, 5_000),
        Err(MicError::UnknownCaKey {
            ca_key_id: CA_KEY_ID
        })
    );
    // Right id, wrong key.
    let wrong: CaKeys = [(CA_KEY_ID, SigningKey::from_bytes(&[12; 32]).verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(
        mic.verify(&wrong, 5_000),
        Err(MicError::BadSignature {
            ca_key_id: CA_KEY_ID
        })
    );
    // Signed by another key (a forger with its own key).
    let forged = full_body().sign(&SigningKey::from_bytes(&[13; 32]));
    assert_eq!(
        forged.verify(&keys, 5_000),
        Err(MicError::BadSignature {
            ca_key_id: CA_KEY_ID
        })
    );
    // A signature check comes before the window check: an expired forgery reports the forgery.
    assert_eq!(
        forged.verify(&keys, 99_999),
        Err(MicError::BadSignature {
            ca_key_id: CA_KEY_ID
        })
    );
    // A genuine signature moved onto another body.
    let mut moved = signed(full_body());
    moved.body.not_after_ms += 1;
    assert!(matches!(
        moved.verify(&keys, 5_000),
        Err(MicError::BadSignature { .. })
    ));
    // A zero and a random signature.
    let mut zero = signed(full_body());
    zero.signature = [0; 64];
    assert!(zero.verify(&keys, 5_000).is_err());
    let mut random = signed(full_body());
    StdRng::seed_from_u64(1).fill(&mut random.signature[..]);
    assert!(random.verify(&keys, 5_000).is_err());
    // A signature by the CA key over the body bytes without the domain prefix.
    let mut undomained = signed(full_body());
    undomained.signature = ca_key().sign(&undomained.body.encode()).to_bytes();
    assert!(undomained.verify(&keys, 5_000).is_err());
}

#[test]
fn flipping_any_bit_of_an_encoded_mic_is_rejected() {
    let keys = keys();
    for body in [full_body(), bare_body()] {
        let bytes = signed(body).encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                if let Ok(mic) = Mic::decode(&tampered) {
                    assert!(
                        mic.verify_signature(&keys).is_err(),
                        "flipping bit {bit} of byte {i} still verified"
                    );
                }
            }
        }
    }
}

#[test]
fn seeded_random_mutations_never_panic_and_decoding_is_canonical() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let seeds = [signed(full_body()).encode(), signed(bare_body()).encode()];
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut m = seeds[round % 2].clone();
        for _ in 0..rng.gen_range(1..6) {
            if m.is_empty() {
                break;
            }
            let i = rng.gen_range(0..m.len());
            match rng.gen_range(0..4) {
                0 => m[i] = rng.r#gen(),
                1 => {
                    m.remove(i);
                }
                2 => m.insert(i, rng.r#gen()),
                _ => m.truncate(i),
            }
        }
        if let Ok(mic) = Mic::decode(&m) {
            accepted += 1;
            assert_eq!(mic.encode(), m, "decode accepted a non-canonical encoding");
            assert!(mic.verify_signature(&keys()).is_err() || m == seeds[round % 2]);
        }
    }
    // Some mutations (e.g. inside hashes) stay decodable: the assertions above ran.
    assert!(accepted > 0);
}

#[test]
fn fingerprint_names_serial_and_signature() {
    let mic = signed(full_body());
    let fp = mic.fingerprint();
    assert_eq!(
        fp,
        format!(
            "mic-{}-{}",
            mic.body.serial,
            hex::encode(&mic.signature[..8])
        )
    );
    assert_ne!(fp, signed(bare_body()).fingerprint());
}

#[test]
fn json_view_uses_hex_and_lowercase_kind() {
    let mic = signed(full_body());
    let value = serde_json::to_value(&mic).expect("serialize");
    assert_eq!(value["body"]["kind"], "model");
    assert_eq!(value["body"]["subject_key"], "aa".repeat(32));
    assert_eq!(value["body"]["model"]["arch_hash"], "bb".repeat(32));
    assert_eq!(value["body"]["zk_commitment"], "dd".repeat(32));
    assert_eq!(value["signature"], hex::encode(mic.signature));
    let back: Mic = serde_json::from_value(value).expect("parse");
    assert_eq!(back, mic);
    let bare = serde_json::to_value(signed(bare_body())).expect("serialize");
    assert_eq!(bare["body"]["zk_commitment"], serde_json::Value::Null);
    assert_eq!(bare["body"]["kind"], "node");
}

fn parse_request(json: &str) -> Result<IssueRequest, (String, String)> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

const GOOD_REQUEST: &str = r#"{
    "request_id": "000102030405060708090a0b0c0d0e0f",
    "subject_key": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "kind": "model",
    "model": {
        "arch_hash": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "weights_commitment": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    },
    "publisher": "acme",
    "provenance": [1, 2],
    "claims": [{"key": "task", "value": "chat"}],
    "zk_commitment": null,
    "validity_ms": 86400000
}"#;

#[test]
fn issue_request_parses_from_json() {
    let request = parse_request(GOOD_REQUEST).expect("parses");
    assert_eq!(
        request.request_id,
        Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    );
    assert_eq!(request.kind, SubjectKind::Model);
    assert_eq!(
        request.model.map(|m| m.weights_commitment),
        Some([0xCC; 32])
    );
    assert_eq!(request.provenance, vec![1, 2]);
    assert_eq!(request.zk_commitment, None);
    // Optional fields may be left out.
    let minimal = r#"{"subject_key": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "kind": "node", "publisher": "op", "validity_ms": 60000}"#;
    let request = parse_request(minimal).expect("parses");
    assert_eq!(request.request_id, None);
    assert!(request.claims.is_empty() && request.provenance.is_empty());
    // And it round-trips through its own JSON.
    let again = serde_json::to_string(&request).expect("serialize");
    assert_eq!(parse_request(&again), Ok(request));
}

#[test]
fn bad_issue_requests_name_the_field() {
    let good: serde_json::Value = serde_json::from_str(GOOD_REQUEST).expect("json");
    let cases: Vec<(&str, serde_json::Value, &str, &str)> = vec![
        (
            "unknown top-level field",
            serde_json::json!({"color": "red"}),
            "color",
            "unknown field",
        ),
        (
            "short subject key",
            serde_json::json!({"subject_key": "abcd"}),
            "subject_key",
            "expected 64 hex characters",
        ),
        (
            "non-hex subject key",
            serde_json::json!({"subject_key": "zz".repeat(32)}),
            "subject_key",
            "invalid hex",
        ),
        (
            "subject key as number",
            serde_json::json!({"subject_key": 5}),
            "subject_key",
            "invalid type",
        ),
        (
            "unknown kind",
            serde_json::json!({"kind": "robot"}),
            "kind",
            "unknown variant",
        ),
        (
            "capitalised kind",
            serde_json::json!({"kind": "Model"}),
            "kind",
            "unknown variant",
        ),
        (
            "bad arch hash",
            serde_json::json!({"model": {"arch_hash": "00", "weights_commitment": "cc".repeat(32)}}),
            "model.arch_hash",
            "expected 64 hex characters",
        ),
        (
            "unknown model field",
            serde_json::json!({"model": {"arch_hash": "bb".repeat(32), "weights_commitment": "cc".repeat(32), "x": 1}}),
            "model.x",
            "unknown field",
        ),
        (
            "claim missing value",
            serde_json::json!({"claims": [{"key": "k", "value": "v"}, {"key": "k2"}]}),
            "claims[1]",
            "missing field `value`",
        ),
        (
            "claim with extra field",
            serde_json::json!({"claims": [{"key": "k", "value": "v", "note": 1}]}),
            "claims[0].note",
            "unknown field",
        ),
        (
            "negative provenance",
            serde_json::json!({"provenance": [1, -2]}),
            "provenance[1]",
            "invalid value",
        ),
        (
            "request id too long",
            serde_json::json!({"request_id": "00".repeat(17)}),
            "request_id",
            "expected 32 hex characters",
        ),
        (
            "zk commitment odd",
            serde_json::json!({"zk_commitment": "abc"}),
            "zk_commitment",
            "expected 64 hex characters",
        ),
        (
            "validity as string",
            serde_json::json!({"validity_ms": "1d"}),
            "validity_ms",
            "invalid type",
        ),
    ];
    for (name, patch, path, message) in cases {
        let mut value = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            value[k] = v.clone();
        }
        let (got_path, got_message) = parse_request(&value.to_string()).expect_err(name);
        assert_eq!(got_path, path, "{name}: {got_message}");
        assert!(got_message.contains(message), "{name}: {got_message}");
    }
    // A missing required field is reported too.
    let mut value = good.clone();
    value.as_object_mut().expect("object").remove("validity_ms");
    let (_, message) = parse_request(&value.to_string()).expect_err("missing");
    assert!(message.contains("missing field `validity_ms`"), "{message}");
}
