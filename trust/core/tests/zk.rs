//! Attestations end to end: commitments, setup, prove, verify, batch verify, and every decoder's
//! bad inputs.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::OnceLock;

use ark_bn254::{Bn254, Fr};
use ark_ff::{BigInteger, Field, PrimeField};
use ark_groth16::Groth16;
use ark_serialize::CanonicalDeserialize;
use nexus_trust_core::zk::{
    ATTESTATION_BYTES, ATTESTATION_CIRCUIT_ID, Attestation, BatchItem, CircuitKeys, Commitment,
    OPENING_BYTES, Opening, PROOF_BYTES, PUBLIC_INPUTS, Predicate, PredicateViolation, Proof,
    Properties, ProvingKey, Salt, Verifier, VerifyingKey, ZkError, poseidon, prove, setup,
};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

/// BN254 scalar modulus r, little-endian.
const R_LE: [u8; 32] = [
    0x01, 0x00, 0x00, 0xf0, 0x93, 0xf5, 0xe1, 0x43, 0x91, 0x70, 0xb9, 0x79, 0x48, 0xe8, 0x33, 0x28,
    0x5d, 0x58, 0x81, 0x81, 0xb6, 0x45, 0x50, 0xb8, 0x29, 0xa0, 0x31, 0xe1, 0x72, 0x4e, 0x64, 0x30,
];

struct Fixture {
    keys: CircuitKeys,
    pk: ProvingKey,
    other_keys: CircuitKeys,
}

/// Key generation costs tens of ms; share two independent key pairs across tests.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = setup(&mut StdRng::seed_from_u64(1)).unwrap();
        let other_keys = setup(&mut StdRng::seed_from_u64(2)).unwrap();
        let pk = keys.proving_key().unwrap();
        Fixture {
            keys,
            pk,
            other_keys,
        }
    })
}

fn opening(score: u16, safety: bool, seed: u64) -> Opening {
    let props = Properties::new(score, safety, 0xDA7A_5E70 + seed).unwrap();
    Opening::new(props, &mut StdRng::seed_from_u64(seed))
}

const PRED: Predicate = Predicate {
    min_score: 800,
    require_safety: true,
};

fn valid_proof(seed: u64) -> (Opening, Proof) {
    let o = opening(870, true, seed);
    let proof = prove(
        &fixture().pk,
        &o,
        &PRED,
        &mut StdRng::seed_from_u64(100 + seed),
    )
    .unwrap();
    (o, proof)
}

#[test]
fn poseidon_parameters_and_test_vector_are_pinned() {
    let config = poseidon::poseidon_config();
    assert_eq!(
        (
            config.rate,
            config.capacity,
            config.full_rounds,
            config.partial_rounds,
            config.alpha
        ),
        (4, 1, 8, 60, 5)
    );
    assert_eq!(config.ark.len(), 68);
    assert!(config.ark.iter().all(|row| row.len() == 5));
    assert_eq!(config.mds.len(), 5);
    let hex_of = |x: &Fr| hex::encode(x.into_bigint().to_bytes_le());
    // First and last round constants and two MDS entries, as derived by
    // find_poseidon_ark_and_mds(254, 4, 8, 60, 0) in arkworks 0.6.
    assert_eq!(
        hex_of(&config.ark[0][0]),
        "91a86d1ad82b3c4f86c347bd4ebb89d8d78ec9ca9ce2537fda5d81e2fe44b50e"
    );
    assert_eq!(
        hex_of(&config.ark[67][4]),
        "72e5631f4d7815fd6d94bb539db20927a397684231413bb281d33a2ae41deb29"
    );
    assert_eq!(
        hex_of(&config.mds[0][0]),
        "a17d8df3bcfdc64ff6d73cce7ae5229f36e4b933f10a0b0880105999df7f1e25"
    );
    assert_eq!(
        hex_of(&config.mds[4][4]),
        "645ed6fe3b808dc9d9b6db727a4a9cb349fe354f1e17adc9812c984cb14b0714"
    );
    // Commitment of a fixed opening; any change to the parameters or their derivation moves it.
    let props = Properties::new(875, true, 42).unwrap();
    let salt = Salt::from_bytes(&[7u8; 32]).unwrap();
    let c = Opening {
        properties: props,
        salt,
    }
    .commitment();
    assert_eq!(hex::encode(c.to_bytes()), PINNED_COMMITMENT);
    // And the sponge agrees with a textbook permutation written from the constants: capacity
    // element first (zero), inputs in the rate, R_F/2 full, R_P partial, R_F/2 full rounds, each
    // round = add round constants, S-box x^5 (all lanes, or lane 0 in partial rounds), MDS.
    let inputs = [
        Fr::from(875u64),
        Fr::from(1u64),
        Fr::from(42u64),
        Fr::from_le_bytes_mod_order(&[7u8; 32]),
    ];
    let reference = reference_poseidon(config, &inputs);
    assert_eq!(reference.into_bigint().to_bytes_le(), c.to_bytes().to_vec());
    assert_eq!(poseidon::poseidon4(&inputs), reference);
}

fn reference_poseidon(
    config: &ark_crypto_primitives::sponge::poseidon::PoseidonConfig<Fr>,
    inputs: &[Fr; 4],
) -> Fr {
    let mut state = [Fr::from(0u64); 5];
    state[1..].copy_from_slice(inputs);
    let half = config.full_rounds / 2;
    for round in 0..config.full_rounds + config.partial_rounds {
        for (s, c) in state.iter_mut().zip(&config.ark[round]) {
            *s += c;
        }
        let full = round < half || round >= half + config.partial_rounds;
        for (i, s) in state.iter_mut().enumerate() {
            if full || i == 0 {
                *s = s.pow([5u64]);
            }
        }
        let mut next = [Fr::from(0u64); 5];
        for (row, out) in config.mds.iter().zip(next.iter_mut()) {
            for (m, s) in row.iter().zip(&state) {
                *out += *m * s;
            }
        }
        state = next;
    }
    state[1]
}

const PINNED_COMMITMENT: &str = "4b14471d179b84268c2a2c6c9643292a5bd0c30e705acd79bb7ef861882b6121";

#[test]
fn commitment_is_hiding_and_binding_on_inputs() {
    let props = Properties::new(500, false, 9).unwrap();
    let a = Opening::new(props, &mut StdRng::seed_from_u64(1));
    let b = Opening::new(props, &mut StdRng::seed_from_u64(2));
    assert_ne!(
        a.commitment(),
        b.commitment(),
        "different salts, different commitments"
    );
    let c = Opening {
        properties: Properties::new(501, false, 9).unwrap(),
        salt: a.salt,
    };
    assert_ne!(a.commitment(), c.commitment());
    let d = Opening {
        properties: Properties::new(500, true, 9).unwrap(),
        salt: a.salt,
    };
    assert_ne!(a.commitment(), d.commitment());
    let e = Opening {
        properties: Properties::new(500, false, 10).unwrap(),
        salt: a.salt,
    };
    assert_ne!(a.commitment(), e.commitment());
}

#[test]
fn commitment_bytes_round_trip_and_reject_non_canonical() {
    let c = opening(1, false, 3).commitment();
    assert_eq!(Commitment::from_bytes(&c.to_bytes()).unwrap(), c);
    assert_eq!(Commitment::from_slice(&c.to_bytes()).unwrap(), c);
    // r itself, r + 1, and all-ones are not canonical.
    assert_eq!(
        Commitment::from_bytes(&R_LE),
        Err(ZkError::NonCanonical { what: "commitment" })
    );
    let mut r_plus_one = R_LE;
    r_plus_one[0] += 1;
    assert!(matches!(
        Commitment::from_bytes(&r_plus_one),
        Err(ZkError::NonCanonical { .. })
    ));
    assert!(Commitment::from_bytes(&[0xff; 32]).is_err());
    // r - 1 is the largest canonical value.
    let mut r_minus_one = R_LE;
    r_minus_one[0] -= 1;
    assert_eq!(
        Commitment::from_bytes(&r_minus_one).unwrap().to_bytes(),
        r_minus_one
    );
    assert!(matches!(
        Commitment::from_slice(&[0u8; 31]),
        Err(ZkError::WrongLength { found: 31, .. })
    ));
    assert!(matches!(
        Salt::from_bytes(&R_LE),
        Err(ZkError::NonCanonical { what: "salt" })
    ));
}

#[test]
fn properties_and_opening_decoding_are_strict() {
    assert_eq!(
        Properties::new(1001, true, 0),
        Err(ZkError::ScoreOutOfRange { score: 1001 })
    );
    let o = opening(999, true, 4);
    let bytes = o.encode();
    assert_eq!(Opening::decode(&bytes).unwrap(), o);
    assert!(matches!(
        Opening::decode(&bytes[..OPENING_BYTES - 1]),
        Err(ZkError::WrongLength { .. })
    ));
    let mut bad = bytes;
    bad[2] = 2;
    assert!(matches!(
        Opening::decode(&bad),
        Err(ZkError::BadFlag { value: 2, .. })
    ));
    let mut bad = bytes;
    bad[0..2].copy_from_slice(&1001u16.to_le_bytes());
    assert!(matches!(
        Opening::decode(&bad),
        Err(ZkError::ScoreOutOfRange { score: 1001 })
    ));
    let mut bad = bytes;
    bad[11..].copy_from_slice(&R_LE);
    assert!(matches!(
        Opening::decode(&bad),
        Err(ZkError::NonCanonical { .. })
    ));
}

#[test]
fn valid_proof_verifies() {
    let (o, proof) = valid_proof(10);
    let mut v = Verifier::default();
    v.verify(
        &fixture().keys.verifying_key,
        &o.commitment(),
        &PRED,
        &proof,
    )
    .unwrap();
    // Boundary: score exactly at the minimum, safety not required and not passed.
    let edge = opening(800, false, 11);
    let pred = Predicate {
        min_score: 800,
        require_safety: false,
    };
    let p = prove(&fixture().pk, &edge, &pred, &mut StdRng::seed_from_u64(1)).unwrap();
    v.verify(&fixture().keys.verifying_key, &edge.commitment(), &pred, &p)
        .unwrap();
    // Extremes of the score range.
    for (score, min) in [(0, 0), (1000, 1000), (1000, 0)] {
        let o = opening(score, true, 12);
        let pred = Predicate {
            min_score: min,
            require_safety: true,
        };
        let p = prove(&fixture().pk, &o, &pred, &mut StdRng::seed_from_u64(2)).unwrap();
        v.verify(&fixture().keys.verifying_key, &o.commitment(), &pred, &p)
            .unwrap();
    }
    assert_eq!(v.cached_keys(), 1, "one prepared key, reused");
}

#[test]
fn false_predicate_is_refused_at_prove_time() {
    let pk = &fixture().pk;
    let low = opening(799, true, 20);
    assert_eq!(
        prove(pk, &low, &PRED, &mut StdRng::seed_from_u64(1)),
        Err(ZkError::PredicateFalse(PredicateViolation::ScoreTooLow {
            score: 799,
            min_score: 800
        }))
    );
    let unsafe_model = opening(900, false, 21);
    assert_eq!(
        prove(pk, &unsafe_model, &PRED, &mut StdRng::seed_from_u64(1)),
        Err(ZkError::PredicateFalse(PredicateViolation::SafetyNotPassed))
    );
    let err = prove(pk, &unsafe_model, &PRED, &mut StdRng::seed_from_u64(1)).unwrap_err();
    assert!(err.to_string().contains("safety"), "{err}");
}

#[test]
fn proof_under_the_wrong_verifying_key_is_rejected() {
    let (o, proof) = valid_proof(30);
    let mut v = Verifier::default();
    assert_eq!(
        v.verify(
            &fixture().other_keys.verifying_key,
            &o.commitment(),
            &PRED,
            &proof
        ),
        Err(ZkError::VerificationFailed)
    );
    // An attestation naming another circuit id.
    let att = Attestation {
        circuit: ATTESTATION_CIRCUIT_ID + 1,
        predicate: PRED,
        proof: proof.to_bytes(),
    };
    assert!(matches!(
        v.verify_attestation(
            ATTESTATION_CIRCUIT_ID,
            &fixture().keys.verifying_key,
            &o.commitment(),
            &att
        ),
        Err(ZkError::WrongKey { .. })
    ));
}

#[test]
fn tampered_proof_commitment_or_predicate_is_rejected() {
    let (o, proof) = valid_proof(40);
    let vk = &fixture().keys.verifying_key;
    let mut v = Verifier::default();
    // Another commitment (same properties, another salt).
    let other = Opening::new(o.properties, &mut StdRng::seed_from_u64(999)).commitment();
    assert_eq!(
        v.verify(vk, &other, &PRED, &proof),
        Err(ZkError::VerificationFailed)
    );
    // A stronger or weaker predicate than the one proven.
    for pred in [
        Predicate {
            min_score: 801,
            require_safety: true,
        },
        Predicate {
            min_score: 799,
            require_safety: true,
        },
        Predicate {
            min_score: 800,
            require_safety: false,
        },
    ] {
        assert_eq!(
            v.verify(vk, &o.commitment(), &pred, &proof),
            Err(ZkError::VerificationFailed),
            "{pred:?}"
        );
    }
    // Another valid proof for another statement.
    let (_, foreign) = valid_proof(41);
    assert_eq!(
        v.verify(vk, &o.commitment(), &PRED, &foreign),
        Err(ZkError::VerificationFailed)
    );
    // Bit flips in the proof bytes: either malformed or failing, never accepted.
    let bytes = proof.to_bytes();
    for i in [0usize, 5, 31, 32, 63, 64, 95, 96, 127] {
        let mut t = bytes;
        t[i] ^= 0x01;
        match Proof::from_bytes(&t) {
            Err(ZkError::MalformedProof { .. }) => {}
            Ok(p) => assert_eq!(
                v.verify(vk, &o.commitment(), &PRED, &p),
                Err(ZkError::VerificationFailed),
                "flip at byte {i}"
            ),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn wrong_number_of_public_inputs_is_rejected() {
    let (o, proof) = valid_proof(50);
    let keys = &fixture().keys;
    let mut v = Verifier::default();
    let prepared = v.prepare(&keys.verifying_key).unwrap();
    let inputs = [
        o.commitment().to_bytes(),
        {
            let mut b = [0u8; 32];
            b[..2].copy_from_slice(&800u16.to_le_bytes());
            b
        },
        {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        },
    ];
    prepared.verify_public_inputs(&inputs, &proof).unwrap();
    // The pitfall: ark-groth16 ignores extra trailing inputs (zip) and accepts.
    let vk_ark =
        ark_groth16::VerifyingKey::<Bn254>::deserialize_compressed(keys.verifying_key.as_slice())
            .unwrap();
    let pvk = ark_groth16::prepare_verifying_key(&vk_ark);
    let mut extra: Vec<Fr> = inputs
        .iter()
        .map(|b| Fr::from_le_bytes_mod_order(b))
        .collect();
    extra.push(Fr::from(12345u64));
    let raw = ark_groth16::Proof::<Bn254>::deserialize_compressed(&proof.to_bytes()[..]).unwrap();
    assert!(
        Groth16::<Bn254>::verify_proof(&pvk, &raw, &extra).unwrap(),
        "ark-groth16 accepts a trailing extra input (the pitfall this crate guards against)"
    );
    // This crate refuses both more and fewer.
    let mut four = inputs.to_vec();
    four.push([0u8; 32]);
    assert_eq!(
        prepared.verify_public_inputs(&four, &proof),
        Err(ZkError::PublicInputCount {
            expected: PUBLIC_INPUTS,
            found: 4
        })
    );
    assert_eq!(
        prepared.verify_public_inputs(&inputs[..2], &proof),
        Err(ZkError::PublicInputCount {
            expected: PUBLIC_INPUTS,
            found: 2
        })
    );
    // Non-canonical input (commitment + r encodes the same residue) is refused, not reduced.
    let mut non_canonical = inputs;
    non_canonical[1] = R_LE;
    non_canonical[1][0] = non_canonical[1][0].wrapping_add(0x20); // r + 800 (low byte 0x20)
    non_canonical[1][1] = non_canonical[1][1].wrapping_add(0x03);
    assert_eq!(
        prepared.verify_public_inputs(&non_canonical, &proof),
        Err(ZkError::NonCanonical {
            what: "public input"
        })
    );
}

#[test]
fn key_for_a_circuit_with_another_input_count_is_a_wrong_key() {
    // Drop the last IC point: a well-formed key with 2 public inputs.
    let mut vk = ark_groth16::VerifyingKey::<Bn254>::deserialize_compressed(
        fixture().keys.verifying_key.as_slice(),
    )
    .unwrap();
    vk.gamma_abc_g1.pop();
    let mut bytes = Vec::new();
    ark_serialize::CanonicalSerialize::serialize_compressed(&vk, &mut bytes).unwrap();
    assert!(matches!(
        VerifyingKey::from_bytes(&bytes),
        Err(ZkError::WrongKey { .. })
    ));
    let (o, proof) = valid_proof(55);
    assert!(matches!(
        Verifier::default().verify(&bytes, &o.commitment(), &PRED, &proof),
        Err(ZkError::WrongKey { .. })
    ));
}

#[test]
fn key_and_proof_decoders_reject_bad_bytes() {
    let keys = &fixture().keys;
    let vk = &keys.verifying_key;
    assert_eq!(VerifyingKey::from_bytes(vk).unwrap().to_bytes(), *vk);
    // Truncated, extended, garbage.
    assert!(matches!(
        VerifyingKey::from_bytes(&vk[..vk.len() - 1]),
        Err(ZkError::MalformedKey {
            which: "verifying",
            ..
        })
    ));
    let mut longer = vk.clone();
    longer.push(0);
    assert!(matches!(
        VerifyingKey::from_bytes(&longer),
        Err(ZkError::MalformedKey { .. })
    ));
    assert!(VerifyingKey::from_bytes(&[0xAB; 328]).is_err());
    assert!(VerifyingKey::from_bytes(&[]).is_err());
    assert!(ProvingKey::from_bytes(&keys.proving_key[..1000]).is_err());
    assert!(matches!(
        ProvingKey::from_bytes(&vec![0u8; nexus_trust_core::zk::PROVING_KEY_BYTES_MAX + 1]),
        Err(ZkError::MalformedKey {
            which: "proving",
            ..
        })
    ));
    let mut v = Verifier::default();
    let (o, proof) = valid_proof(60);
    assert!(matches!(
        v.verify(&vk[1..], &o.commitment(), &PRED, &proof),
        Err(ZkError::MalformedKey { .. })
    ));
    assert_eq!(v.cached_keys(), 0, "a malformed key is not cached");
    // Proof: all-0xff (x >= p with flags), and a G1 x that is not on the curve.
    assert!(matches!(
        Proof::from_bytes(&[0xff; PROOF_BYTES]),
        Err(ZkError::MalformedProof { .. })
    ));
    let mut off_curve = proof.to_bytes();
    // Find an x with no square root for y (about half of all x): try small values.
    let mut rejected = false;
    for x in 2u8..40 {
        off_curve[..32].fill(0);
        off_curve[0] = x;
        if Proof::from_bytes(&off_curve).is_err() {
            rejected = true;
            break;
        }
    }
    assert!(rejected, "some small x is not on BN254's G1");
}

#[test]
fn attestation_round_trips_and_decoding_is_strict() {
    let o = opening(900, true, 70);
    let att = Attestation::create(
        ATTESTATION_CIRCUIT_ID,
        &fixture().pk,
        &o,
        &PRED,
        &mut StdRng::seed_from_u64(3),
    )
    .unwrap();
    let bytes = att.encode();
    assert_eq!(bytes.len(), ATTESTATION_BYTES);
    assert_eq!(Attestation::decode(&bytes).unwrap(), att);
    let mut v = Verifier::default();
    v.verify_attestation(
        ATTESTATION_CIRCUIT_ID,
        &fixture().keys.verifying_key,
        &o.commitment(),
        &att,
    )
    .unwrap();
    assert!(matches!(
        Attestation::decode(&bytes[..ATTESTATION_BYTES - 1]),
        Err(ZkError::WrongLength { .. })
    ));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        Attestation::decode(&longer),
        Err(ZkError::WrongLength { .. })
    ));
    let mut bad = bytes;
    bad[4] = 2; // require_safety flag
    assert!(matches!(
        Attestation::decode(&bad),
        Err(ZkError::BadFlag { .. })
    ));
    let mut bad = bytes;
    bad[2..4].copy_from_slice(&1001u16.to_le_bytes());
    assert!(matches!(
        Attestation::decode(&bad),
        Err(ZkError::ScoreOutOfRange { .. })
    ));
    let mut bad = bytes;
    bad[5..].fill(0xff);
    assert!(matches!(
        Attestation::decode(&bad),
        Err(ZkError::MalformedProof { .. })
    ));
    // Predicate decoder.
    assert_eq!(Predicate::decode(&PRED.encode()).unwrap(), PRED);
    assert!(Predicate::decode(&[0, 0]).is_err());
}

#[test]
fn batch_of_valid_proofs_passes_and_a_bad_one_is_named() {
    let vk = &fixture().keys.verifying_key;
    let mut items: Vec<BatchItem> = (0..12u64)
        .map(|i| {
            let (o, proof) = valid_proof(200 + i);
            BatchItem {
                commitment: o.commitment(),
                predicate: PRED,
                proof,
            }
        })
        .collect();
    let mut v = Verifier::default();
    let mut rng = StdRng::seed_from_u64(7);
    v.verify_batch(vk, &items, &mut rng).unwrap();
    v.verify_batch(vk, &items[..1], &mut rng).unwrap();
    v.verify_batch(vk, &[], &mut rng).unwrap();

    // Swap two proofs: both now fail, each individually valid for the other item.
    let mut swapped = items.clone();
    swapped[3].proof = items[4].proof.clone();
    swapped[4].proof = items[3].proof.clone();
    assert_eq!(
        v.verify_batch(vk, &swapped, &mut rng),
        Err(ZkError::BatchRejected { failed: vec![3, 4] })
    );

    // One wrong predicate at index 9.
    items[9].predicate.min_score = 801;
    assert_eq!(
        v.verify_batch(vk, &items, &mut rng),
        Err(ZkError::BatchRejected { failed: vec![9] })
    );
    // The same batch under the wrong key: all fail.
    items[9].predicate = PRED;
    assert_eq!(
        v.verify_batch(&fixture().other_keys.verifying_key, &items[..3], &mut rng),
        Err(ZkError::BatchRejected {
            failed: vec![0, 1, 2]
        })
    );
    // Single-item batch with a bad proof.
    let mut one = items[0].clone();
    one.commitment = items[1].commitment;
    assert_eq!(
        v.verify_batch(vk, &[one], &mut rng),
        Err(ZkError::VerificationFailed)
    );
}

#[test]
fn verifier_cache_is_bounded() {
    let mut v = Verifier::new(1);
    let (o, proof) = valid_proof(80);
    let a = &fixture().keys.verifying_key;
    let b = &fixture().other_keys.verifying_key;
    v.verify(a, &o.commitment(), &PRED, &proof).unwrap();
    assert!(v.verify(b, &o.commitment(), &PRED, &proof).is_err());
    assert_eq!(v.cached_keys(), 1);
    v.verify(a, &o.commitment(), &PRED, &proof).unwrap();
    assert_eq!(v.cached_keys(), 1);
}

#[test]
fn same_seed_gives_same_keys_and_proof_bytes() {
    let k1 = setup(&mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(k1, fixture().keys, "setup is deterministic in its RNG");
    assert_ne!(k1.verifying_key, fixture().other_keys.verifying_key);
    let o = opening(900, true, 90);
    let p1 = prove(&fixture().pk, &o, &PRED, &mut StdRng::seed_from_u64(5)).unwrap();
    let p2 = prove(&fixture().pk, &o, &PRED, &mut StdRng::seed_from_u64(5)).unwrap();
    let p3 = prove(&fixture().pk, &o, &PRED, &mut StdRng::seed_from_u64(6)).unwrap();
    assert_eq!(p1.to_bytes(), p2.to_bytes());
    assert_ne!(
        p1.to_bytes(),
        p3.to_bytes(),
        "proofs are re-randomized by the RNG"
    );
    assert_eq!(
        Opening::new(o.properties, &mut StdRng::seed_from_u64(90)),
        o,
        "salt is deterministic in its RNG"
    );
}

/// The fuzz target's properties on seeded random mutations of a valid attestation (what
/// `cargo test` can run without libFuzzer): decode never panics, whatever it accepts re-encodes
/// to the input, and an accepted mutation never verifies for the original statement unless it
/// is the original.
#[test]
fn mutated_attestations_never_decode_to_something_else_that_verifies() {
    use rand_08::Rng;
    let (o, proof) = valid_proof(300);
    let att = Attestation {
        circuit: ATTESTATION_CIRCUIT_ID,
        predicate: PRED,
        proof: proof.to_bytes(),
    };
    let original = att.encode();
    let mut v = Verifier::default();
    let mut rng = StdRng::seed_from_u64(301);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..300 {
        let mut bytes = original.to_vec();
        match rng.gen_range(0..4) {
            0 => bytes.truncate(rng.gen_range(0..original.len())),
            1 => bytes.extend((0..rng.gen_range(1..8)).map(|_| rng.r#gen::<u8>())),
            _ => {
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.gen_range(0..8);
                }
            }
        }
        match Attestation::decode(&bytes) {
            Ok(decoded) => {
                accepted += 1;
                assert_eq!(decoded.encode().as_slice(), bytes.as_slice());
                if bytes.as_slice() != original.as_slice() {
                    assert!(
                        v.verify_attestation(
                            ATTESTATION_CIRCUIT_ID,
                            &fixture().keys.verifying_key,
                            &o.commitment(),
                            &decoded,
                        )
                        .is_err(),
                        "a mutated attestation verified"
                    );
                }
            }
            Err(_) => rejected += 1,
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}
