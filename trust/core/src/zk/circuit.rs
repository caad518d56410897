//! The attestation circuit (R1CS over BN254's scalar field).
//!
//! Public inputs, in order: `commitment`, `min_score`, `require_safety`.
//! Private witness: `score`, `safety_passed`, `dataset_id`, `salt`.
//!
//! Constraints:
//! 1. `Poseidon(score, safety_passed, dataset_id, salt) == commitment` (in-circuit sponge with the
//!    parameters of [`super::poseidon`]).
//! 2. `score` is a 16-bit integer (bit decomposition) and `SCORE_MAX - score` is a 16-bit integer,
//!    so `0 <= score <= SCORE_MAX`.
//! 3. `min_score` is a 16-bit integer (so a verifier-side value outside `u16` cannot make the
//!    comparison wrap) and `score - min_score` is a 16-bit integer. Both values are below
//!    `2^16 ≪ r`, so the difference is in `[0, 2^16)` exactly when `score >= min_score`; otherwise
//!    it is `r - k` for some `k < 2^16`, which has no 16-bit decomposition.
//! 4. `safety_passed` and `require_safety` are booleans and `require_safety → safety_passed`.
//!
//! `dataset_id` is not range-checked: it only enters the hash, and Poseidon's collision
//! resistance binds it to the committed value.

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::constraints::CryptographicSpongeVar;
use ark_crypto_primitives::sponge::poseidon::constraints::PoseidonSpongeVar;
use ark_ff::Field;
use ark_r1cs_std::alloc::AllocVar;
use ark_r1cs_std::boolean::Boolean;
use ark_r1cs_std::eq::EqGadget;
use ark_r1cs_std::fields::FieldVar;
use ark_r1cs_std::fields::fp::FpVar;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};

use super::commitment::{Commitment, Opening, SCORE_MAX};
use super::poseidon::poseidon_config;
use super::predicate::Predicate;

/// Bits of every range check.
const RANGE_BITS: usize = 16;

/// The attestation circuit. `None` values are for key generation (no witness).
#[derive(Clone, Debug, Default)]
pub(crate) struct AttestationCircuit {
    pub(crate) commitment: Option<Commitment>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) opening: Option<Opening>,
}

impl AttestationCircuit {
    /// A circuit with a full assignment, for proving.
    pub(crate) fn assigned(opening: &Opening, predicate: &Predicate) -> Self {
        Self {
            commitment: Some(opening.commitment()),
            predicate: Some(*predicate),
            opening: Some(*opening),
        }
    }
}

/// Allocates 16 witness bits of `value` and enforces that they pack to `var`.
fn enforce_u16(
    cs: &ConstraintSystemRef<Fr>,
    var: &FpVar<Fr>,
    value: Option<u64>,
) -> Result<(), SynthesisError> {
    let mut packed = FpVar::<Fr>::zero();
    let mut weight = Fr::ONE;
    for i in 0..RANGE_BITS {
        let bit = Boolean::new_witness(cs.clone(), || {
            value
                .map(|v| (v >> i) & 1 == 1)
                .ok_or(SynthesisError::AssignmentMissing)
        })?;
        packed += FpVar::from(bit) * weight;
        weight += weight;
    }
    packed.enforce_equal(var)
}

impl ConstraintSynthesizer<Fr> for AttestationCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let missing = || SynthesisError::AssignmentMissing;
        // Public inputs, in the order `predicate::public_inputs` lists them.
        let commitment = FpVar::new_input(cs.clone(), || {
            self.commitment.map(|c| c.0).ok_or_else(missing)
        })?;
        let min_score = FpVar::new_input(cs.clone(), || {
            self.predicate
                .map(|p| Fr::from(u64::from(p.min_score)))
                .ok_or_else(missing)
        })?;
        let require_safety = Boolean::new_input(cs.clone(), || {
            self.predicate.map(|p| p.require_safety).ok_or_else(missing)
        })?;

        // Private witness.
        let props = self.opening.map(|o| o.properties);
        let score_value = props.map(|p| u64::from(p.score()));
        let score =
            FpVar::new_witness(cs.clone(), || score_value.map(Fr::from).ok_or_else(missing))?;
        let safety_passed = Boolean::new_witness(cs.clone(), || {
            props.map(|p| p.safety_passed()).ok_or_else(missing)
        })?;
        let dataset_id = FpVar::new_witness(cs.clone(), || {
            props.map(|p| Fr::from(p.dataset_id())).ok_or_else(missing)
        })?;
        let salt = FpVar::new_witness(cs.clone(), || {
            self.opening.map(|o| o.salt.0).ok_or_else(missing)
        })?;

        // 1. The commitment opens.
        let mut sponge = PoseidonSpongeVar::new(cs.clone(), poseidon_config());
        sponge.absorb(&vec![
            score.clone(),
            FpVar::from(safety_passed.clone()),
            dataset_id,
            salt,
        ])?;
        let hash = sponge.squeeze_field_elements(1)?;
        hash.first()
            .ok_or(SynthesisError::Unsatisfiable)?
            .enforce_equal(&commitment)?;

        // 2. 0 <= score <= SCORE_MAX.
        enforce_u16(&cs, &score, score_value)?;
        let headroom = FpVar::constant(Fr::from(u64::from(SCORE_MAX))) - &score;
        enforce_u16(
            &cs,
            &headroom,
            score_value.map(|s| u64::from(SCORE_MAX).wrapping_sub(s)),
        )?;

        // 3. min_score is 16-bit and score >= min_score.
        let min_value = self.predicate.map(|p| u64::from(p.min_score));
        enforce_u16(&cs, &min_score, min_value)?;
        let margin = &score - &min_score;
        let margin_value = score_value.zip(min_value).map(|(s, m)| s.wrapping_sub(m));
        enforce_u16(&cs, &margin, margin_value)?;

        // 4. require_safety → safety_passed.
        safety_passed.conditional_enforce_equal(&Boolean::TRUE, &require_safety)?;
        Ok(())
    }
}

/// Number of constraints of the circuit (for docs and benches).
pub fn constraint_count() -> usize {
    use ark_relations::gr1cs::ConstraintSystem;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(ark_relations::gr1cs::SynthesisMode::Setup);
    AttestationCircuit::default()
        .generate_constraints(cs.clone())
        .expect("the circuit synthesizes in setup mode");
    cs.finalize();
    cs.num_constraints()
}

/// Whether the assigned circuit is satisfied (a test helper; `prove` checks the predicate
/// natively instead).
#[cfg(test)]
pub(crate) fn is_satisfied(circuit: AttestationCircuit) -> bool {
    use ark_relations::gr1cs::ConstraintSystem;
    let cs = ConstraintSystem::<Fr>::new_ref();
    circuit
        .generate_constraints(cs.clone())
        .expect("synthesis with a full assignment");
    cs.is_satisfied().expect("satisfiability check")
}

#[cfg(test)]
mod tests {
    use rand_08::SeedableRng;
    use rand_08::rngs::StdRng;

    use super::*;
    use crate::zk::commitment::Properties;

    fn opening(score: u16, safety: bool) -> Opening {
        let props = Properties::new(score, safety, 77).expect("valid score");
        Opening::new(props, &mut StdRng::seed_from_u64(1))
    }

    fn pred(min_score: u16, require_safety: bool) -> Predicate {
        Predicate {
            min_score,
            require_safety,
        }
    }

    #[test]
    fn true_statements_satisfy_the_circuit() {
        for (o, p) in [
            (opening(800, true), pred(800, true)),
            (opening(1000, false), pred(0, false)),
            (opening(0, false), pred(0, false)),
            (opening(1000, true), pred(1000, true)),
        ] {
            assert!(is_satisfied(AttestationCircuit::assigned(&o, &p)), "{p:?}");
        }
    }

    /// The circuit itself (not only `prove`'s native check) rejects false statements.
    #[test]
    fn false_statements_do_not_satisfy_the_circuit() {
        for (o, p) in [
            (opening(799, true), pred(800, true)),
            (opening(0, true), pred(1, false)),
            (opening(999, true), pred(1000, false)),
            (opening(1000, false), pred(0, true)),
        ] {
            assert!(!is_satisfied(AttestationCircuit::assigned(&o, &p)), "{p:?}");
        }
        // A commitment that the witness does not open.
        let o = opening(900, true);
        let mut circuit = AttestationCircuit::assigned(&o, &pred(800, true));
        circuit.commitment = Some(opening(901, true).commitment());
        assert!(!is_satisfied(circuit));
    }

    #[test]
    fn constraint_count_is_small() {
        let n = constraint_count();
        // Poseidon t=5 (8 full + 60 partial rounds) plus 4 x 16-bit range checks.
        assert!((300..500).contains(&n), "{n} constraints");
    }
}
