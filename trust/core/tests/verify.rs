//! Inline credential verification (`verify`): a real CA state bootstrapped in-process with
//! seeded keys issues MICs, seeded Groth16 keys prove attestations, and `TrustContext` must
//! accept exactly the genuine ones — with a reason naming what is wrong otherwise.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use nexus_trust_core::ca::{Bootstrap, CaState, Command, IssueRequest, Response};
use nexus_trust_core::mic::{CaKeys, Mic, MicError, SubjectKind};
use nexus_trust_core::revocation::{RevocationReason, SignedRevocation};
use nexus_trust_core::testkit;
use nexus_trust_core::verify::{
    CREDENTIAL_ATTESTATIONS_MAX, CREDENTIALS_BYTES_MAX, Credentials, CredentialsError,
    CredentialsJson, TrustContext, TrustReject, TrustUpdate,
};
use nexus_trust_core::zk::{
    ATTESTATION_BYTES, ATTESTATION_CIRCUIT_ID, Attestation, CircuitKeys, Opening, Predicate,
    ProvingKey, ZkError,
};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

const DAY_MS: u64 = 86_400_000;
const NOW_MS: u64 = 1_700_000_000_000;
const CA_KEY_ID: u32 = 7;

struct Keys {
    circuit: CircuitKeys,
    pk: ProvingKey,
    other: CircuitKeys,
    other_pk: ProvingKey,
}

/// Groth16 setup costs tens of ms: once per test binary.
fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let (circuit, pk) = testkit::circuit_keys(11);
        let (other, other_pk) = testkit::circuit_keys(12);
        Keys {
            circuit,
            pk,
            other,
            other_pk,
        }
    })
}

/// A bootstrapped CA (log index 1) whose circuit 1 is `keys().circuit`.
fn ca() -> CaState {
    testkit::bootstrapped_ca(Bootstrap {
        ca_secret_key: [42; 32],
        ca_key_id: CA_KEY_ID,
        circuits: vec![(ATTESTATION_CIRCUIT_ID, keys().circuit.clone())],
    })
}

fn opening(score: u16, safety: bool, seed: u64) -> Opening {
    testkit::opening(score, safety, 99, seed)
}

fn request(publisher: &str, commitment: Option<&Opening>, validity_ms: u64) -> IssueRequest {
    testkit::model_request([5; 32], publisher, commitment, validity_ms)
}

fn issue(ca: &mut CaState, index: u64, request: IssueRequest) -> Mic {
    testkit::issue(ca, index, NOW_MS, vec![request]).remove(0)
}

use testkit::attest;

fn context(ca: &CaState) -> TrustContext {
    let mut ctx = TrustContext::new();
    let report = ctx.apply_update(&TrustUpdate::from_ca_state(ca, 0), NOW_MS);
    assert!(
        report.ca_keys_changed && report.circuits_changed,
        "{report:?}"
    );
    assert!(report.rejected_circuits.is_empty(), "{report:?}");
    ctx
}

/// A CA, a MIC committing to (score 870, safety passed) and credentials proving
/// "score ≥ 800 ∧ safety".
fn genuine() -> (CaState, Opening, Credentials) {
    let mut ca = ca();
    let o = opening(870, true, 1);
    let mic = issue(&mut ca, 2, request("acme", Some(&o), 30 * DAY_MS));
    let attestation = attest(&keys().pk, &o, 800, true, 2);
    (
        ca,
        o,
        Credentials {
            mic,
            attestations: vec![attestation],
        },
    )
}

#[test]
fn genuine_credentials_verify_and_say_what_they_prove() {
    let (ca, _, creds) = genuine();
    let ctx = context(&ca);
    let v = ctx.check(&creds, NOW_MS).unwrap();
    assert_eq!(v.serial, creds.mic.body.serial);
    assert_eq!(v.publisher, "acme");
    assert_eq!(v.kind, SubjectKind::Model);
    assert_eq!(v.ca_key_id, CA_KEY_ID);
    assert_eq!(v.not_after_ms, creds.mic.body.not_after_ms);
    assert_eq!(
        v.predicates,
        vec![Predicate {
            min_score: 800,
            require_safety: true
        }]
    );
    // At least as strong: a lower minimum, with or without safety.
    assert!(v.proves(800, true) && v.proves(500, false) && v.proves(0, true));
    // Stronger than proven: a higher minimum.
    assert!(!v.proves(801, false) && !v.proves(900, true));
    assert_eq!(ctx.status(&v, NOW_MS), Ok(()));
    // A MIC without attestations verifies too, and proves nothing.
    let bare = Credentials {
        mic: creds.mic.clone(),
        attestations: vec![],
    };
    let v = ctx.check(&bare, NOW_MS).unwrap();
    assert!(v.predicates.is_empty() && !v.proves(0, false));
}

#[test]
fn a_proof_for_safety_does_not_stand_in_for_one_without_and_vice_versa() {
    let mut ca = ca();
    let o = opening(900, false, 3);
    let mic = issue(&mut ca, 2, request("acme", Some(&o), DAY_MS));
    let creds = Credentials {
        mic,
        attestations: vec![attest(&keys().pk, &o, 850, false, 4)],
    };
    let v = context(&ca).check(&creds, NOW_MS).unwrap();
    assert!(v.proves(850, false));
    assert!(!v.proves(850, true), "no proven predicate requires safety");
    assert_eq!(v.best_score(), Some(850));
    assert_eq!(v.best_safe_score(), None);
}

#[test]
fn a_context_without_ca_keys_rejects_then_accepts_after_an_update() {
    let (ca, _, creds) = genuine();
    let mut ctx = TrustContext::new();
    let reject = ctx.check(&creds, NOW_MS).unwrap_err();
    assert_eq!(
        reject,
        TrustReject::UnknownCaKey {
            serial: creds.mic.body.serial,
            ca_key_id: CA_KEY_ID
        }
    );
    assert!(reject.is_transient());
    assert!(reject.to_string().contains("unknown CA key 7"), "{reject}");
    ctx.apply_update(&TrustUpdate::from_ca_state(&ca, 0), NOW_MS);
    assert!(ctx.check(&creds, NOW_MS).is_ok());
    // The same update again changes nothing.
    let again = ctx.apply_update(&TrustUpdate::from_ca_state(&ca, 0), NOW_MS);
    assert!(!again.keys_changed(), "{again:?}");
}

#[test]
fn forged_mic_is_rejected() {
    let (ca, _, creds) = genuine();
    let ctx = context(&ca);
    // Signed by an impostor's key under the CA's key id.
    let forged = creds
        .mic
        .body
        .clone()
        .sign(&SigningKey::from_bytes(&[9; 32]));
    let reject = ctx
        .check(
            &Credentials {
                mic: forged,
                attestations: creds.attestations.clone(),
            },
            NOW_MS,
        )
        .unwrap_err();
    assert_eq!(
        reject,
        TrustReject::BadSignature {
            serial: creds.mic.body.serial,
            ca_key_id: CA_KEY_ID
        }
    );
    assert!(!reject.is_transient());
}

#[test]
fn tampered_mic_is_rejected() {
    let (ca, _, creds) = genuine();
    let ctx = context(&ca);
    for tamper in [
        (|m: &mut Mic| m.body.publisher = "evil".into()) as fn(&mut Mic),
        |m| m.body.not_after_ms += DAY_MS,
        |m| m.body.serial += 1,
        |m| m.body.kind = SubjectKind::Agent,
        |m| m.signature[0] ^= 1,
    ] {
        let mut mic = creds.mic.clone();
        tamper(&mut mic);
        let reject = ctx
            .check(
                &Credentials {
                    mic: mic.clone(),
                    attestations: vec![],
                },
                NOW_MS,
            )
            .unwrap_err();
        assert!(
            matches!(
                reject,
                TrustReject::BadSignature {
                    ca_key_id: CA_KEY_ID,
                    ..
                }
            ),
            "{reject:?}"
        );
    }
    // Every single bit flipped in the encoding is refused by the decoder or the check.
    let bytes = Credentials {
        mic: creds.mic.clone(),
        attestations: vec![],
    }
    .encode();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(c) = Credentials::decode(&b) {
            assert!(
                ctx.check(&c, NOW_MS).is_err(),
                "bit {i} flipped still verifies"
            );
        }
    }
}

#[test]
fn expired_and_not_yet_valid_mics_are_rejected() {
    let (ca, _, creds) = genuine();
    let ctx = context(&ca);
    let body = &creds.mic.body;
    let after = body.not_after_ms + 1;
    assert_eq!(
        ctx.check(&creds, after),
        Err(TrustReject::Expired {
            serial: body.serial,
            now_ms: after,
            not_after_ms: body.not_after_ms
        })
    );
    // Inclusive at both ends.
    assert!(ctx.check(&creds, body.not_after_ms).is_ok());
    assert!(ctx.check(&creds, body.not_before_ms).is_ok());
    let before = body.not_before_ms - 1;
    let reject = ctx.check(&creds, before).unwrap_err();
    assert!(
        matches!(reject, TrustReject::NotYetValid { now_ms, .. } if now_ms == before),
        "{reject:?}"
    );
    assert!(reject.is_transient());
    let v = ctx.check(&creds, NOW_MS).unwrap();
    assert!(matches!(
        ctx.status(&v, after),
        Err(TrustReject::Expired { .. })
    ));
    assert!(
        TrustReject::Expired {
            serial: 17,
            now_ms: 2,
            not_after_ms: 1
        }
        .to_string()
        .contains("MIC 17 expired")
    );
}

#[test]
fn revoked_serial_is_rejected_and_status_notices() {
    let (mut ca, _, creds) = genuine();
    let mut ctx = context(&ca);
    let v = ctx.check(&creds, NOW_MS).unwrap();
    let serial = creds.mic.body.serial;
    let record = match ca.apply(
        3,
        &Command::Revoke {
            now_ms: NOW_MS + 5,
            serial,
            reason: RevocationReason::KeyCompromise,
        },
    ) {
        Response::Revoked(r) => r.unwrap(),
        other => panic!("{other:?}"),
    };
    let report = ctx.apply_update(&TrustUpdate::from_ca_state(&ca, 0), NOW_MS + 10);
    assert_eq!(report.revoked, vec![serial]);
    assert!(!report.keys_changed());
    let expected = TrustReject::Revoked {
        serial,
        revoked_at_ms: record.revoked_at_ms,
        reason: RevocationReason::KeyCompromise,
    };
    assert_eq!(ctx.check(&creds, NOW_MS + 10), Err(expected.clone()));
    assert_eq!(ctx.status(&v, NOW_MS + 10), Err(expected.clone()));
    assert!(ctx.is_revoked(serial));
    assert!(
        expected
            .to_string()
            .starts_with(&format!("MIC {serial} revoked at")),
        "{expected}"
    );
}

#[test]
fn revocations_not_signed_by_the_ca_are_refused() {
    let (ca, _, creds) = genuine();
    let mut ctx = context(&ca);
    let serial = creds.mic.body.serial;
    let forged = SignedRevocation::sign(
        &SigningKey::from_bytes(&[9; 32]),
        CA_KEY_ID,
        1,
        serial,
        u64::MAX,
        NOW_MS,
        RevocationReason::Unspecified,
    );
    let mut update = TrustUpdate::from_ca_state(&ca, 0);
    update.revocations.push(forged);
    let report = ctx.apply_update(&update, NOW_MS);
    assert_eq!(report.revoked, Vec::<u64>::new());
    assert_eq!(report.rejected_revocations.len(), 1);
    assert!(ctx.check(&creds, NOW_MS).is_ok());
}

#[test]
fn proof_under_the_wrong_key_is_rejected() {
    let (ca, o, creds) = genuine();
    let ctx = context(&ca);
    // Proven with another setup's proving key.
    let wrong = Credentials {
        mic: creds.mic.clone(),
        attestations: vec![attest(&keys().other_pk, &o, 800, true, 5)],
    };
    let reject = ctx.check(&wrong, NOW_MS).unwrap_err();
    assert!(
        matches!(
            reject,
            TrustReject::AttestationInvalid {
                index: 0,
                circuit: 1,
                ..
            }
        ),
        "{reject:?}"
    );
    assert!(
        reject.to_string().starts_with("attestation proof invalid"),
        "{reject}"
    );
    // A context holding the other verifying key rejects the genuine proof.
    let mut other = TrustContext::new();
    other.apply_update(
        &TrustUpdate {
            ca_keys: ca.ca_keys().clone(),
            circuits: vec![(ATTESTATION_CIRCUIT_ID, keys().other.verifying_key.clone())],
            revocations: vec![],
        },
        NOW_MS,
    );
    assert!(matches!(
        other.check(&creds, NOW_MS),
        Err(TrustReject::AttestationInvalid { .. })
    ));
}

#[test]
fn false_predicate_cannot_be_proven_and_a_relabelled_weaker_proof_fails() {
    let (ca, o, creds) = genuine();
    let ctx = context(&ca);
    // The prover refuses a false statement outright (score 870 < 900).
    let refused = Attestation::create(
        ATTESTATION_CIRCUIT_ID,
        &keys().pk,
        &o,
        &Predicate {
            min_score: 900,
            require_safety: true,
        },
        &mut StdRng::seed_from_u64(6),
    );
    assert!(
        matches!(refused, Err(ZkError::PredicateFalse(_))),
        "{refused:?}"
    );
    // A proof of the weaker "score ≥ 700" relabelled as "score ≥ 900" does not verify.
    let mut relabelled = attest(&keys().pk, &o, 700, true, 7);
    relabelled.predicate.min_score = 900;
    let reject = ctx
        .check(
            &Credentials {
                mic: creds.mic.clone(),
                attestations: vec![relabelled],
            },
            NOW_MS,
        )
        .unwrap_err();
    assert!(
        matches!(&reject, TrustReject::AttestationInvalid { predicate, .. } if predicate.contains("900")),
        "{reject:?}"
    );
    // Dropping the safety requirement from a proof that had it also fails.
    let mut unsafe_label = creds.attestations[0];
    unsafe_label.predicate.require_safety = false;
    assert!(matches!(
        ctx.check(
            &Credentials {
                mic: creds.mic.clone(),
                attestations: vec![unsafe_label],
            },
            NOW_MS
        ),
        Err(TrustReject::AttestationInvalid { .. })
    ));
}

#[test]
fn proof_for_another_mics_commitment_is_rejected() {
    let (mut ca, _, creds) = genuine();
    let other_opening = opening(990, true, 8);
    let other_mic = issue(&mut ca, 3, request("acme", Some(&other_opening), DAY_MS));
    let ctx = context(&ca);
    // creds' proof (over its own commitment) presented with the other MIC.
    let reject = ctx
        .check(
            &Credentials {
                mic: other_mic,
                attestations: creds.attestations.clone(),
            },
            NOW_MS,
        )
        .unwrap_err();
    assert!(
        matches!(reject, TrustReject::AttestationInvalid { .. }),
        "{reject:?}"
    );
}

#[test]
fn attestations_need_a_commitment_and_a_known_circuit() {
    let (mut ca, _, creds) = genuine();
    let plain = issue(&mut ca, 3, request("acme", None, DAY_MS));
    let ctx = context(&ca);
    assert_eq!(
        ctx.check(
            &Credentials {
                mic: plain.clone(),
                attestations: creds.attestations.clone(),
            },
            NOW_MS
        ),
        Err(TrustReject::NoCommitment {
            serial: plain.body.serial
        })
    );
    let mut unknown = creds.attestations[0];
    unknown.circuit = 2;
    let reject = ctx
        .check(
            &Credentials {
                mic: creds.mic.clone(),
                attestations: vec![creds.attestations[0], unknown],
            },
            NOW_MS,
        )
        .unwrap_err();
    assert_eq!(
        reject,
        TrustReject::NoVerifyingKey {
            circuit: 2,
            index: 1
        }
    );
    assert!(
        reject
            .to_string()
            .contains("no verifying key for circuit 2")
    );
    // A malformed verifying key in an update is reported and not installed.
    let mut bad = TrustContext::new();
    let report = bad.apply_update(
        &TrustUpdate {
            ca_keys: ca.ca_keys().clone(),
            circuits: vec![(ATTESTATION_CIRCUIT_ID, vec![1, 2, 3])],
            revocations: vec![],
        },
        NOW_MS,
    );
    assert_eq!(report.rejected_circuits.len(), 1);
    assert_eq!(bad.circuits().count(), 0);
    assert!(matches!(
        bad.check(&creds, NOW_MS),
        Err(TrustReject::NoVerifyingKey { circuit: 1, .. })
    ));
}

#[test]
fn batch_results_match_one_by_one_and_name_the_bad_ones() {
    let (mut ca, o, creds) = genuine();
    let o2 = opening(950, true, 9);
    let mic2 = issue(&mut ca, 3, request("beta", Some(&o2), DAY_MS));
    let good2 = Credentials {
        mic: mic2.clone(),
        attestations: vec![
            attest(&keys().pk, &o2, 900, true, 10),
            attest(&keys().pk, &o2, 940, false, 11),
        ],
    };
    let mut relabelled = attest(&keys().pk, &o, 700, false, 12);
    relabelled.predicate.min_score = 860;
    let bad_proof = Credentials {
        mic: creds.mic.clone(),
        attestations: vec![creds.attestations[0], relabelled],
    };
    let wrong_key = Credentials {
        mic: mic2,
        attestations: vec![attest(&keys().other_pk, &o2, 900, false, 13)],
    };
    let forged = Credentials {
        mic: creds
            .mic
            .body
            .clone()
            .sign(&SigningKey::from_bytes(&[9; 32])),
        attestations: creds.attestations.clone(),
    };
    let ctx = context(&ca);
    let all = [&creds, &good2, &bad_proof, &wrong_key, &forged, &creds];
    let batch = ctx.check_batch(&all, NOW_MS, &mut StdRng::seed_from_u64(14));
    let single: Vec<_> = all.iter().map(|c| ctx.check(c, NOW_MS)).collect();
    assert_eq!(batch, single);
    assert!(batch[0].is_ok() && batch[1].is_ok() && batch[5].is_ok());
    assert!(
        matches!(
            batch[2],
            Err(TrustReject::AttestationInvalid { index: 1, .. })
        ),
        "{:?}",
        batch[2]
    );
    assert!(matches!(
        batch[3],
        Err(TrustReject::AttestationInvalid { index: 0, .. })
    ));
    assert!(matches!(batch[4], Err(TrustReject::BadSignature { .. })));
    // All good: one batch, all verified.
    let good = ctx.check_batch(&[&creds, &good2], NOW_MS, &mut StdRng::seed_from_u64(15));
    assert!(good.iter().all(Result::is_ok));
    assert!(
        ctx.check_batch(&[], NOW_MS, &mut StdRng::seed_from_u64(16))
            .is_empty()
    );
}

#[test]
fn credentials_round_trip_in_binary_and_json() {
    let (_, o, creds) = genuine();
    let bytes = creds.encode();
    assert_eq!(Credentials::decode(&bytes), Ok(creds.clone()));
    let json = serde_json::to_string(&creds.to_json()).unwrap();
    let back: CredentialsJson = serde_json::from_str(&json).unwrap();
    assert_eq!(Credentials::try_from(back), Ok(creds.clone()));
    // The largest allowed count decodes; bounds are consistent.
    let many = Credentials {
        mic: creds.mic.clone(),
        attestations: vec![attest(&keys().pk, &o, 1, false, 17); CREDENTIAL_ATTESTATIONS_MAX],
    };
    assert_eq!(Credentials::decode(&many.encode()), Ok(many.clone()));
    assert!(many.encode().len() <= CREDENTIALS_BYTES_MAX);
}

#[test]
fn credentials_decoder_refuses_bad_input_naming_the_field() {
    let (_, o, creds) = genuine();
    let bytes = creds.encode();
    // Every truncation.
    for n in 0..bytes.len() {
        let err = Credentials::decode(&bytes[..n]).unwrap_err();
        assert!(
            matches!(
                err,
                CredentialsError::Truncated { .. }
                    | CredentialsError::Mic(MicError::Truncated { .. })
            ),
            "{n}: {err:?}"
        );
    }
    assert_eq!(
        Credentials::decode(&[]),
        Err(CredentialsError::Truncated {
            field: "version".into()
        })
    );
    let mut b = bytes.clone();
    b[0] = 2;
    assert_eq!(
        Credentials::decode(&b),
        Err(CredentialsError::UnsupportedVersion { version: 2 })
    );
    let mut b = bytes.clone();
    b[1] = 0xff;
    b[2] = 0xff;
    assert!(matches!(
        Credentials::decode(&b),
        Err(CredentialsError::MicLength { len: 65535, .. })
    ));
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        Credentials::decode(&b),
        Err(CredentialsError::TrailingBytes { count: 1 })
    );
    let err = Credentials::decode(&vec![1; CREDENTIALS_BYTES_MAX + 1]).unwrap_err();
    assert!(matches!(err, CredentialsError::TooLarge { .. }));
    assert_eq!(err.field(), "credentials");
    // Count above the limit.
    let mic_end = 3 + creds.mic.encode().len();
    let mut b = bytes[..mic_end].to_vec();
    b.push((CREDENTIAL_ATTESTATIONS_MAX + 1) as u8);
    let err = Credentials::decode(&b).unwrap_err();
    assert!(matches!(err, CredentialsError::TooManyAttestations { .. }));
    assert_eq!(err.field(), "attestations");
    // A garbage proof point in attestation 0.
    let mut b = bytes.clone();
    let proof_at = mic_end + 1 + 5;
    b[proof_at..proof_at + 32].fill(0xff);
    let err = Credentials::decode(&b).unwrap_err();
    assert!(
        matches!(err, CredentialsError::Attestation { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(err.field(), "attestations[0]");
    // A broken MIC inside.
    let mut b = bytes.clone();
    b[3] = b'X';
    let err = Credentials::decode(&b).unwrap_err();
    assert_eq!(err, CredentialsError::Mic(MicError::BadMagic));
    assert_eq!(err.field(), "mic");
    // JSON form: bad hex and wrong lengths name the field.
    let mic_hex = hex::encode(creds.mic.encode());
    let att_hex = hex::encode(creds.attestations[0].encode());
    let err = Credentials::from_hex("zz", &[]).unwrap_err();
    assert_eq!(err.field(), "mic");
    let err = Credentials::from_hex(&mic_hex, &[att_hex.clone(), "0g".into()]).unwrap_err();
    assert_eq!(err.field(), "attestations[1]");
    assert!(err.to_string().contains("not valid hex"), "{err}");
    let err = Credentials::from_hex(&mic_hex, &["00".repeat(ATTESTATION_BYTES + 1)]).unwrap_err();
    assert_eq!(err.field(), "attestations[0]");
    let too_many = vec![att_hex; CREDENTIAL_ATTESTATIONS_MAX + 1];
    assert!(matches!(
        Credentials::from_hex(&mic_hex, &too_many),
        Err(CredentialsError::TooManyAttestations { .. })
    ));
    let err = Credentials::from_hex(&"00".repeat(5000), &[]).unwrap_err();
    assert_eq!(err.field(), "mic");
    assert!(serde_json::from_str::<CredentialsJson>(r#"{"mic":"00","extra":1}"#).is_err());
    let _ = o;
}

#[test]
fn an_update_drops_keys_it_no_longer_lists() {
    let (ca, _, creds) = genuine();
    let mut ctx = context(&ca);
    let v = ctx.check(&creds, NOW_MS).unwrap();
    let report = ctx.apply_update(&TrustUpdate::default(), NOW_MS);
    assert!(report.ca_keys_changed && report.circuits_changed);
    assert!(matches!(
        ctx.status(&v, NOW_MS),
        Err(TrustReject::UnknownCaKey { .. })
    ));
    let _ = CaKeys::new();
}
