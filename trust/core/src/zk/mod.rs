//! Groth16 attestations over Poseidon commitments (BN254).
//!
//! A publisher commits to hidden model [`Properties`] (score, safety evaluation, dataset id) with
//! a random [`Salt`]: [`Commitment`] `= Poseidon(score, safety_passed, dataset_id, salt)`, 32
//! canonical bytes that go into the MIC. The holder of the [`Opening`] proves a [`Predicate`]
//! ("score ≥ m ∧ (safety required → passed)") without revealing the values; any node checks
//! the proof against the circuit's verifying key with a [`Verifier`] (prepared-key cache, batch
//! verification). Proofs and keys export to snarkjs's JSON ([`snarkjs`]) for independent checks.
//!
//! Call order: CA bootstrap runs [`setup`] once → [`CircuitKeys`] in the CA state; a publisher
//! makes an [`Opening`] and puts [`Opening::commitment`] in the MIC; the holder calls [`prove`]
//! (or [`Attestation::create`]) with the parsed [`ProvingKey`]; verifiers call
//! [`Verifier::verify_attestation`] / [`Verifier::verify_batch`].
//!
//! Sans-IO and deterministic: all randomness comes from a passed-in rand 0.8
//! `RngCore + CryptoRng`; no clock. What this module does not do: it does not run a multi-party
//! setup ceremony (whoever runs [`setup`] can forge proofs; `docs/trust.md`) and it does not bind
//! a proof to a session or a holder key (a proof is a public, replayable statement about a
//! commitment; binding the commitment to a subject is the MIC's job).
//!
//! The Poseidon parameters are fixed in [`poseidon`]; the circuit is described in `circuit.rs`.

mod circuit;
mod commitment;
mod keys;
pub mod poseidon;
mod predicate;
mod proof;
pub mod snarkjs;
mod verifier;

pub use circuit::constraint_count;
pub use commitment::{
    Commitment, FIELD_BYTES, OPENING_BYTES, Opening, Properties, SCORE_MAX, Salt,
};
pub use keys::{
    CircuitKeys, PROVING_KEY_BYTES_MAX, ProvingKey, VERIFYING_KEY_BYTES_MAX, VerifyingKey, key_id,
    setup,
};
pub use predicate::{PREDICATE_BYTES, PUBLIC_INPUTS, Predicate, PredicateViolation};
pub use proof::{
    ATTESTATION_BYTES, ATTESTATION_CIRCUIT_ID, Attestation, PROOF_BYTES, Proof, prove,
};
pub use verifier::{BatchItem, PREPARED_KEYS_MAX_DEFAULT, PreparedKey, Verifier};

/// What can go wrong with commitments, keys, proofs and attestations. No variant leaves state
/// changed (a [`Verifier`] only caches keys that parsed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZkError {
    /// A byte string had the wrong length.
    #[error("{what}: expected {expected} bytes, found {found}")]
    WrongLength {
        /// What was being decoded.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// A field element's encoding is not canonical (the integer is `>= r`).
    #[error("{what}: not a canonical BN254 scalar (integer >= r)")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
    },
    /// A flag byte was neither 0 nor 1.
    #[error("{what}: flag byte must be 0 or 1, found {value}")]
    BadFlag {
        /// What was being decoded.
        what: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A score (or predicate minimum) above [`SCORE_MAX`].
    #[error("score {score} is out of range 0..={SCORE_MAX}")]
    ScoreOutOfRange {
        /// The offending value.
        score: u16,
    },
    /// Proof bytes do not decode to valid curve points.
    #[error("malformed proof: {reason}")]
    MalformedProof {
        /// What the decoder rejected.
        reason: String,
    },
    /// Key bytes do not decode.
    #[error("malformed {which} key: {reason}")]
    MalformedKey {
        /// `"proving"` or `"verifying"`.
        which: &'static str,
        /// What the decoder rejected.
        reason: String,
    },
    /// A well-formed key that is not the attestation circuit's (other input count, other
    /// circuit id).
    #[error("wrong key: {reason}")]
    WrongKey {
        /// Why the key does not fit.
        reason: String,
    },
    /// Raw public inputs of the wrong count (ark-groth16 and snarkjs do not check this).
    #[error("expected {expected} public inputs, found {found}")]
    PublicInputCount {
        /// [`PUBLIC_INPUTS`].
        expected: usize,
        /// Given count.
        found: usize,
    },
    /// `prove` refused: the predicate is false for the opening.
    #[error("refusing to prove a false predicate: {0}")]
    PredicateFalse(PredicateViolation),
    /// The proof does not verify for this key, commitment and predicate.
    #[error("proof does not verify for this verifying key, commitment and predicate")]
    VerificationFailed,
    /// A batch failed; these items (indices into the batch) fail on their own.
    #[error("batch verification failed; bad items at indices {failed:?}")]
    BatchRejected {
        /// Indices of the proofs that do not verify.
        failed: Vec<usize>,
    },
    /// arkworks reported a synthesis or serialization error (a bug, not peer input).
    #[error("constraint synthesis failed: {0}")]
    Synthesis(String),
}
