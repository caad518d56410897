//! Any bytes as the ZK wire items: the `Attestation`, `Predicate`, `Opening` and `Commitment`
//! decoders never panic, and whatever they accept is canonical (re-encodes to the input); an
//! accepted attestation's proof parses and re-encodes to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_trust_core::zk::{Attestation, Commitment, Opening, Predicate};

fuzz_target!(|data: &[u8]| {
    if let Ok(att) = Attestation::decode(data) {
        assert_eq!(att.encode().as_slice(), data);
        let proof = att.parsed_proof().expect("decode checked the proof");
        assert_eq!(proof.to_bytes(), att.proof);
    }
    if let Ok(predicate) = Predicate::decode(data) {
        assert_eq!(predicate.encode().as_slice(), data);
    }
    if let Ok(opening) = Opening::decode(data) {
        assert_eq!(opening.encode().as_slice(), data);
    }
    if let Ok(commitment) = Commitment::from_slice(data) {
        assert_eq!(commitment.to_bytes().as_slice(), data);
    }
});
