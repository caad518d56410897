//! The public statement an attestation proves about hidden [`Properties`].

use ark_bn254::Fr;
use serde::{Deserialize, Serialize};

use super::ZkError;
use super::commitment::{Commitment, Properties, SCORE_MAX, decode_bool};

/// "score ≥ `min_score` ∧ (`require_safety` → safety evaluation passed)".
///
/// `min_score` is per mille like [`Properties::score`]; a value above [`SCORE_MAX`] can never
/// hold, and [`Predicate::decode`] rejects it as malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Predicate {
    /// Lowest acceptable score (per mille).
    pub min_score: u16,
    /// Whether the safety evaluation must have passed.
    pub require_safety: bool,
}

/// Bytes of an encoded [`Predicate`]: `min_score u16 LE ‖ require_safety u8`.
pub const PREDICATE_BYTES: usize = 3;

/// Why a predicate does not hold for some properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PredicateViolation {
    /// The score is below the required minimum.
    #[error("score {score} is below the required minimum {min_score}")]
    ScoreTooLow {
        /// The hidden score.
        score: u16,
        /// The predicate's minimum.
        min_score: u16,
    },
    /// The predicate requires a passed safety evaluation; the properties say it did not pass.
    #[error("the predicate requires a passed safety evaluation and it did not pass")]
    SafetyNotPassed,
}

impl Predicate {
    /// Checks the predicate natively (what [`super::prove`] does before proving).
    pub fn check(&self, properties: &Properties) -> Result<(), PredicateViolation> {
        if properties.score() < self.min_score {
            return Err(PredicateViolation::ScoreTooLow {
                score: properties.score(),
                min_score: self.min_score,
            });
        }
        if self.require_safety && !properties.safety_passed() {
            return Err(PredicateViolation::SafetyNotPassed);
        }
        Ok(())
    }

    /// `min_score u16 LE ‖ require_safety u8 (0|1)`.
    pub fn encode(&self) -> [u8; PREDICATE_BYTES] {
        let [lo, hi] = self.min_score.to_le_bytes();
        [lo, hi, u8::from(self.require_safety)]
    }

    /// Strict decode: exactly 3 bytes, `min_score <= SCORE_MAX`, flag 0 or 1.
    pub fn decode(bytes: &[u8]) -> Result<Self, ZkError> {
        let [lo, hi, flag]: [u8; PREDICATE_BYTES] =
            bytes.try_into().map_err(|_| ZkError::WrongLength {
                what: "predicate",
                expected: PREDICATE_BYTES,
                found: bytes.len(),
            })?;
        let min_score = u16::from_le_bytes([lo, hi]);
        if min_score > SCORE_MAX {
            return Err(ZkError::ScoreOutOfRange { score: min_score });
        }
        Ok(Self {
            min_score,
            require_safety: decode_bool(flag, "predicate require_safety flag")?,
        })
    }
}

/// Number of Groth16 public inputs of the attestation circuit.
pub const PUBLIC_INPUTS: usize = 3;

/// The circuit's public inputs, in order: `[commitment, min_score, require_safety]`.
pub(crate) fn public_inputs(commitment: &Commitment, predicate: &Predicate) -> [Fr; PUBLIC_INPUTS] {
    [
        commitment.0,
        Fr::from(u64::from(predicate.min_score)),
        Fr::from(u64::from(predicate.require_safety)),
    ]
}
