//! Signed revocations and the revocation set: format, signatures, insert/prune/persist, and the
//! path from a CA `Revoke` to a node reporting the serial revoked.

use ed25519_dalek::SigningKey;
use nexus_trust_core::ca::{Bootstrap, CaState, Command};
use nexus_trust_core::mic::CaKeys;
use nexus_trust_core::revocation::{
    Inserted, REVOCATION_BYTES, RevocationError, RevocationField, RevocationReason, RevocationSet,
    SignedRevocation,
};
use nexus_trust_core::testkit;
use rand_08::{Rng, SeedableRng, rngs::StdRng};

fn ca_key() -> SigningKey {
    SigningKey::from_bytes(&[21; 32])
}

fn keys() -> CaKeys {
    [(4, ca_key().verifying_key())].into_iter().collect()
}

fn record(seq: u64, serial: u64, not_after_ms: u64) -> SignedRevocation {
    SignedRevocation::sign(
        &ca_key(),
        4,
        seq,
        serial,
        not_after_ms,
        500,
        RevocationReason::KeyCompromise,
    )
}

#[test]
fn round_trip_and_layout() {
    for reason in [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ] {
        let r = SignedRevocation::sign(&ca_key(), 4, 9, 77, 1_000, 500, reason);
        let bytes = r.encode();
        assert_eq!(bytes.len(), REVOCATION_BYTES);
        assert_eq!(&bytes[..4], b"NXRV");
        assert_eq!(&bytes[5..13], &9u64.to_be_bytes());
        assert_eq!(&bytes[13..21], &77u64.to_be_bytes());
        assert_eq!(bytes[37], reason.to_byte());
        assert_eq!(SignedRevocation::decode(&bytes), Ok(r.clone()));
        assert_eq!(r.verify(&keys()), Ok(()));
    }
}

#[test]
fn decode_is_strict() {
    let bytes = record(1, 2, 3).encode();
    for len in 0..bytes.len() {
        assert!(
            matches!(
                SignedRevocation::decode(&bytes[..len]),
                Err(RevocationError::Truncated { .. })
            ),
            "prefix {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(1);
    assert_eq!(
        SignedRevocation::decode(&longer),
        Err(RevocationError::TrailingBytes { count: 1 })
    );
    let with = |i: usize, v: u8| {
        let mut b = bytes.clone();
        b[i] = v;
        SignedRevocation::decode(&b)
    };
    assert_eq!(with(0, 0), Err(RevocationError::BadMagic));
    assert_eq!(
        with(4, 9),
        Err(RevocationError::UnsupportedVersion { version: 9 })
    );
    assert_eq!(
        with(37, 5),
        Err(RevocationError::UnknownReason { value: 5 })
    );
    let zero_seq = SignedRevocation::sign(&ca_key(), 4, 0, 2, 3, 0, RevocationReason::Unspecified);
    assert_eq!(
        SignedRevocation::decode(&zero_seq.encode()),
        Err(RevocationError::Zero {
            field: RevocationField::Seq
        })
    );
    let zero_serial =
        SignedRevocation::sign(&ca_key(), 4, 1, 0, 3, 0, RevocationReason::Unspecified);
    assert_eq!(
        SignedRevocation::decode(&zero_serial.encode()),
        Err(RevocationError::Zero {
            field: RevocationField::Serial
        })
    );
}

#[test]
fn signatures_are_checked() {
    let r = record(1, 2, 3);
    let unknown: CaKeys = [(5, ca_key().verifying_key())].into_iter().collect();
    assert_eq!(
        r.verify(&unknown),
        Err(RevocationError::UnknownCaKey { ca_key_id: 4 })
    );
    let wrong: CaKeys = [(4, SigningKey::from_bytes(&[1; 32]).verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(
        r.verify(&wrong),
        Err(RevocationError::BadSignature { ca_key_id: 4 })
    );
    let forged = SignedRevocation::sign(
        &SigningKey::from_bytes(&[2; 32]),
        4,
        1,
        2,
        3,
        0,
        RevocationReason::Unspecified,
    );
    assert_eq!(
        forged.verify(&keys()),
        Err(RevocationError::BadSignature { ca_key_id: 4 })
    );
    // Every single-bit change is caught by decode or by the signature.
    let bytes = r.encode();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut t = bytes.clone();
            t[i] ^= 1 << bit;
            if let Ok(decoded) = SignedRevocation::decode(&t) {
                assert!(decoded.verify(&keys()).is_err(), "bit {bit} of byte {i}");
            }
        }
    }
}

#[test]
fn seeded_random_mutations_never_panic() {
    let seed = record(3, 4, 5).encode();
    let mut rng = StdRng::seed_from_u64(77);
    for _ in 0..20_000 {
        let mut m = seed.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..m.len().max(1));
            match rng.gen_range(0..3) {
                0 if !m.is_empty() => m[i] = rng.r#gen(),
                1 if !m.is_empty() => {
                    m.remove(i);
                }
                _ => m.insert(i.min(m.len()), rng.r#gen()),
            }
        }
        if let Ok(r) = SignedRevocation::decode(&m) {
            assert_eq!(r.encode(), m);
            assert!(m == seed || r.verify(&keys()).is_err());
        }
    }
}

#[test]
fn set_inserts_verified_records_once() {
    let keys = keys();
    let mut set = RevocationSet::new();
    assert_eq!(
        set.insert(&keys, record(1, 10, 1_000), 0),
        Ok(Inserted::New)
    );
    assert_eq!(
        set.insert(&keys, record(1, 10, 1_000), 0),
        Ok(Inserted::Duplicate)
    );
    assert!(set.is_revoked(10));
    assert!(!set.is_revoked(11));
    assert_eq!(set.get(10), Some(&record(1, 10, 1_000)));
    let mut forged = record(2, 11, 1_000);
    forged.signature[0] ^= 1;
    assert_eq!(
        set.insert(&keys, forged, 0),
        Err(RevocationError::BadSignature { ca_key_id: 4 })
    );
    assert!(!set.is_revoked(11), "a forged record changes nothing");
    assert_eq!(set.contiguous_seq(), 1);
    // A record for an already expired MIC is not kept, but its seq counts.
    assert_eq!(
        set.insert(&keys, record(2, 11, 50), 100),
        Ok(Inserted::AlreadyExpired)
    );
    assert!(!set.is_revoked(11));
    assert_eq!(set.contiguous_seq(), 2);
    assert_eq!(set.len(), 1);
}

#[test]
fn prune_drops_records_after_the_mic_expired() {
    let keys = keys();
    let mut set = RevocationSet::new();
    set.insert(&keys, record(1, 1, 100), 0).expect("valid");
    set.insert(&keys, record(2, 2, 200), 0).expect("valid");
    set.insert(&keys, record(3, 3, 300), 0).expect("valid");
    assert_eq!(set.prune(100), 0, "still valid at its last instant");
    assert_eq!(set.prune(201), 2);
    assert!(!set.is_revoked(1) && !set.is_revoked(2) && set.is_revoked(3));
    // A late duplicate of a pruned record does not come back.
    assert_eq!(
        set.insert(&keys, record(1, 1, 100), 0),
        Ok(Inserted::Duplicate)
    );
    assert!(!set.is_revoked(1));
    assert_eq!(set.contiguous_seq(), 3);
}

#[test]
fn export_import_round_trip_and_rejects_damage() {
    let keys = keys();
    let mut set = RevocationSet::new();
    for (seq, serial) in [(1, 5), (2, 3), (4, 9), (7, 1)] {
        set.insert(&keys, record(seq, serial, 1_000), 0)
            .expect("valid");
    }
    assert_eq!(set.contiguous_seq(), 2);
    let bytes = set.export();
    assert_eq!(set.export(), bytes, "deterministic");
    let back = RevocationSet::import(&bytes, &keys).expect("import");
    assert_eq!(back, set);
    assert_eq!(back.export(), bytes);
    assert!(
        RevocationSet::import(&RevocationSet::new().export(), &keys)
            .expect("empty")
            .is_empty()
    );
    for len in 0..bytes.len() {
        assert!(
            RevocationSet::import(&bytes[..len], &keys).is_err(),
            "prefix {len}"
        );
    }
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x10;
        assert!(RevocationSet::import(&damaged, &keys).is_err(), "byte {i}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(RevocationSet::import(&longer, &keys).is_err());
    // Records signed by a key the importer does not trust are refused.
    let other: CaKeys = [(4, SigningKey::from_bytes(&[3; 32]).verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(
        RevocationSet::import(&bytes, &other),
        Err(RevocationError::BadSignature { ca_key_id: 4 })
    );
}

#[test]
fn ca_revocation_reaches_a_node_set() {
    let mut ca = CaState::default();
    ca.apply(
        1,
        &Command::Bootstrap(Box::new(Bootstrap {
            ca_secret_key: [9; 32],
            ca_key_id: 1,
            circuits: vec![],
        })),
    );
    let now_ms = 1_000_000;
    let requests = (1..=3u8)
        .map(|n| testkit::agent_request([n; 32], "p", 3_600_000))
        .collect();
    let mics = testkit::issue(&mut ca, 2, now_ms, requests);
    ca.apply(
        3,
        &Command::Revoke {
            now_ms,
            serial: 2,
            reason: RevocationReason::PrivilegeWithdrawn,
        },
    );
    // A node pulls the delta (as it would over gossip or from the CA) and applies it.
    let node_keys = ca.ca_keys().clone();
    let mut node = RevocationSet::new();
    for record in ca.revocations_after(node.contiguous_seq(), 100) {
        let wire = record.encode();
        let received = SignedRevocation::decode(&wire).expect("decodes");
        assert_eq!(node.insert(&node_keys, received, now_ms), Ok(Inserted::New));
    }
    assert_eq!(node.contiguous_seq(), 1);
    for mic in &mics {
        // The certificate itself still verifies; the revocation set is what rejects it.
        assert_eq!(mic.verify(&node_keys, now_ms), Ok(()));
        assert_eq!(node.is_revoked(mic.body.serial), mic.body.serial == 2);
    }
    assert_eq!(
        node.get(2).map(|r| r.reason),
        Some(RevocationReason::PrivilegeWithdrawn)
    );
    // Nothing new after the node's position.
    assert!(ca.revocations_after(node.contiguous_seq(), 100).is_empty());
    // After the revoked MIC expires, the node forgets the record.
    assert_eq!(node.prune(mics[1].body.not_after_ms + 1), 1);
}

#[test]
fn json_view_of_a_revocation() {
    let r = record(1, 2, 3);
    let value = serde_json::to_value(&r).expect("serialize");
    assert_eq!(value["reason"], "key_compromise");
    assert_eq!(value["signature"], hex::encode(r.signature));
    assert_eq!(
        serde_json::from_value::<SignedRevocation>(value).expect("parse"),
        r
    );
}
