//! Seeded CA fixtures for tests (feature `testkit`): a CA state bootstrapped in-process, model
//! MIC requests, commitment openings and attestations, each from a fixed seed so every run
//! issues the same certificates and proofs. The keys these produce are public knowledge: never
//! use them outside tests.
//!
//! The helpers panic when the core refuses what they build (a test fixture that does not hold
//! is a broken test, not an input error).

use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

use crate::ca::{Bootstrap, CaState, Command, IssueRequest, Response};
use crate::mic::{Mic, ModelIdentity, SubjectKind};
use crate::zk::{
    ATTESTATION_CIRCUIT_ID, Attestation, CircuitKeys, Opening, Predicate, Properties, ProvingKey,
    setup,
};

/// The attestation circuit's Groth16 keys from `seed`, with the proving key parsed.
pub fn circuit_keys(seed: u64) -> (CircuitKeys, ProvingKey) {
    let keys = setup(&mut StdRng::seed_from_u64(seed)).expect("circuit setup");
    let pk = keys.proving_key().expect("proving key of a fresh setup");
    (keys, pk)
}

/// A CA state that applied `bootstrap` at log index 1.
pub fn bootstrapped_ca(bootstrap: Bootstrap) -> CaState {
    let ca_key_id = bootstrap.ca_key_id;
    let mut ca = CaState::default();
    assert_eq!(
        ca.apply(1, &Command::Bootstrap(Box::new(bootstrap))),
        Response::Bootstrapped { ca_key_id },
        "bootstrap of a fresh CA state"
    );
    ca
}

/// A bootstrap with a CA key from `seed` and the attestation circuit's `keys`.
pub fn seeded_bootstrap(seed: u64, ca_key_id: u32, keys: CircuitKeys) -> Bootstrap {
    Bootstrap::generate(
        &mut StdRng::seed_from_u64(seed),
        ca_key_id,
        vec![(ATTESTATION_CIRCUIT_ID, keys)],
    )
}

/// An opening of hidden model properties (score, safety, dataset id) with a salt from `seed`.
pub fn opening(score: u16, safety: bool, dataset_id: u64, seed: u64) -> Opening {
    Opening::new(
        Properties::new(score, safety, dataset_id).expect("score in range"),
        &mut StdRng::seed_from_u64(seed),
    )
}

/// A request for a model MIC (fixed model identity) for `subject_key`, published by
/// `publisher`, committing to `commitment`'s properties if given.
pub fn model_request(
    subject_key: [u8; 32],
    publisher: &str,
    commitment: Option<&Opening>,
    validity_ms: u64,
) -> IssueRequest {
    IssueRequest {
        request_id: None,
        subject_key,
        kind: SubjectKind::Model,
        model: Some(ModelIdentity {
            arch_hash: [1; 32],
            weights_commitment: [2; 32],
        }),
        publisher: publisher.into(),
        provenance: vec![],
        claims: vec![],
        zk_commitment: commitment.map(|o| o.commitment().to_bytes()),
        validity_ms,
    }
}

/// A request for an agent MIC (no model identity, claims or commitment) for `subject_key`,
/// published by `publisher`.
pub fn agent_request(subject_key: [u8; 32], publisher: &str, validity_ms: u64) -> IssueRequest {
    IssueRequest {
        request_id: None,
        subject_key,
        kind: SubjectKind::Agent,
        model: None,
        publisher: publisher.into(),
        provenance: vec![],
        claims: vec![],
        zk_commitment: None,
        validity_ms,
    }
}

/// Applies one issue command at log `index` and returns the MICs, in request order.
pub fn issue(ca: &mut CaState, index: u64, now_ms: u64, requests: Vec<IssueRequest>) -> Vec<Mic> {
    match ca.apply(index, &Command::Issue { now_ms, requests }) {
        Response::Issued(results) => results
            .into_iter()
            .map(|r| r.expect("the fixture's request is valid"))
            .collect(),
        other => panic!("expected Issued, got {other:?}"),
    }
}

/// A proof that `o`'s properties satisfy "score ≥ `min_score`" (∧ safety if
/// `require_safety`), with proving randomness from `seed`.
pub fn attest(
    pk: &ProvingKey,
    o: &Opening,
    min_score: u16,
    require_safety: bool,
    seed: u64,
) -> Attestation {
    Attestation::create(
        ATTESTATION_CIRCUIT_ID,
        pk,
        o,
        &Predicate {
            min_score,
            require_safety,
        },
        &mut StdRng::seed_from_u64(seed),
    )
    .expect("the fixture's properties satisfy the predicate")
}
