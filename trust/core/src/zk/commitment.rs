//! Hidden model properties, their opening (properties + salt) and the Poseidon commitment.

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField, UniformRand};
use rand_08::{CryptoRng, RngCore};

use super::ZkError;
use super::poseidon::poseidon4;

/// Highest score a [`Properties`] may hold: scores are per mille (0 = 0 %, 1000 = 100 %).
pub const SCORE_MAX: u16 = 1000;

/// Bytes of a canonical field element encoding (little-endian, `< r`).
pub const FIELD_BYTES: usize = 32;

/// Encodes a BN254 scalar as 32 canonical little-endian bytes.
pub(crate) fn fr_to_bytes(value: &Fr) -> [u8; FIELD_BYTES] {
    let mut out = [0u8; FIELD_BYTES];
    let bytes = value.into_bigint().to_bytes_le();
    out.copy_from_slice(&bytes);
    out
}

/// Decodes 32 little-endian bytes into a BN254 scalar; `None` unless the integer is `< r`.
pub(crate) fn fr_from_bytes(bytes: &[u8; FIELD_BYTES]) -> Option<Fr> {
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
    }
    Fr::from_bigint(ark_ff::BigInt::new(limbs))
}

/// The hidden properties a publisher attests to.
///
/// Built only through [`Properties::new`], so `score <= SCORE_MAX` always holds (the circuit
/// enforces the same bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Properties {
    score: u16,
    safety_passed: bool,
    dataset_id: u64,
}

impl Properties {
    /// Checked constructor: `score` is per mille and must be `<= SCORE_MAX`.
    pub fn new(score: u16, safety_passed: bool, dataset_id: u64) -> Result<Self, ZkError> {
        if score > SCORE_MAX {
            return Err(ZkError::ScoreOutOfRange { score });
        }
        Ok(Self {
            score,
            safety_passed,
            dataset_id,
        })
    }

    /// Benchmark score, per mille.
    pub fn score(&self) -> u16 {
        self.score
    }

    /// Whether the safety evaluation passed.
    pub fn safety_passed(&self) -> bool {
        self.safety_passed
    }

    /// Identifier of the training/evaluation dataset.
    pub fn dataset_id(&self) -> u64 {
        self.dataset_id
    }

    /// The three properties as field elements, in hashing order.
    pub(crate) fn field_elements(&self) -> [Fr; 3] {
        [
            Fr::from(u64::from(self.score)),
            Fr::from(u64::from(self.safety_passed)),
            Fr::from(self.dataset_id),
        ]
    }
}

/// The commitment's blinding factor: a uniformly random BN254 scalar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub(crate) Fr);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salt is what hides the properties; keep it out of logs.
        f.write_str("Salt(..)")
    }
}

impl Salt {
    /// Draws a fresh salt.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(Fr::rand(rng))
    }

    /// 32 canonical little-endian bytes.
    pub fn to_bytes(&self) -> [u8; FIELD_BYTES] {
        fr_to_bytes(&self.0)
    }

    /// Strict decode: rejects an integer `>= r`.
    pub fn from_bytes(bytes: &[u8; FIELD_BYTES]) -> Result<Self, ZkError> {
        fr_from_bytes(bytes)
            .map(Self)
            .ok_or(ZkError::NonCanonical { what: "salt" })
    }
}

/// A Poseidon commitment to [`Properties`]:
/// `Poseidon(score, safety_passed, dataset_id, salt)` (see [`super::poseidon`]).
///
/// Encodes as 32 canonical little-endian bytes (a BN254 scalar `< r`); that is what
/// `MicBody::zk_commitment` holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Commitment(pub(crate) Fr);

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Commitment({})", hex::encode(self.to_bytes()))
    }
}

impl Commitment {
    /// 32 canonical little-endian bytes.
    pub fn to_bytes(&self) -> [u8; FIELD_BYTES] {
        fr_to_bytes(&self.0)
    }

    /// Strict decode: rejects an integer `>= r` (the BN254 scalar modulus).
    pub fn from_bytes(bytes: &[u8; FIELD_BYTES]) -> Result<Self, ZkError> {
        fr_from_bytes(bytes)
            .map(Self)
            .ok_or(ZkError::NonCanonical { what: "commitment" })
    }

    /// Decodes a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ZkError> {
        let array: &[u8; FIELD_BYTES] = bytes.try_into().map_err(|_| ZkError::WrongLength {
            what: "commitment",
            expected: FIELD_BYTES,
            found: bytes.len(),
        })?;
        Self::from_bytes(array)
    }
}

/// What the holder keeps secret: the properties and the salt that open a [`Commitment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The committed properties.
    pub properties: Properties,
    /// The blinding factor.
    pub salt: Salt,
}

/// Bytes of an encoded [`Opening`]: score (2) + safety (1) + dataset id (8) + salt (32).
pub const OPENING_BYTES: usize = 2 + 1 + 8 + FIELD_BYTES;

impl Opening {
    /// Opens fresh: the properties with a new random salt.
    pub fn new<R: RngCore + CryptoRng>(properties: Properties, rng: &mut R) -> Self {
        Self {
            properties,
            salt: Salt::random(rng),
        }
    }

    /// The commitment this opening opens.
    pub fn commitment(&self) -> Commitment {
        let [score, safety, dataset] = self.properties.field_elements();
        Commitment(poseidon4(&[score, safety, dataset, self.salt.0]))
    }

    /// Encodes as `score u16 LE ‖ safety u8 (0|1) ‖ dataset_id u64 LE ‖ salt (32 B)`.
    pub fn encode(&self) -> [u8; OPENING_BYTES] {
        let mut out = [0u8; OPENING_BYTES];
        out[0..2].copy_from_slice(&self.properties.score.to_le_bytes());
        out[2] = u8::from(self.properties.safety_passed);
        out[3..11].copy_from_slice(&self.properties.dataset_id.to_le_bytes());
        out[11..].copy_from_slice(&self.salt.to_bytes());
        out
    }

    /// Strict decode of [`Opening::encode`]: exact length, score `<= SCORE_MAX`, safety byte 0 or
    /// 1, canonical salt.
    pub fn decode(bytes: &[u8]) -> Result<Self, ZkError> {
        let bytes: &[u8; OPENING_BYTES] = bytes.try_into().map_err(|_| ZkError::WrongLength {
            what: "opening",
            expected: OPENING_BYTES,
            found: bytes.len(),
        })?;
        let score = u16::from_le_bytes([bytes[0], bytes[1]]);
        let safety_passed = decode_bool(bytes[2], "opening safety flag")?;
        let mut dataset = [0u8; 8];
        dataset.copy_from_slice(&bytes[3..11]);
        let mut salt = [0u8; FIELD_BYTES];
        salt.copy_from_slice(&bytes[11..]);
        Ok(Self {
            properties: Properties::new(score, safety_passed, u64::from_le_bytes(dataset))?,
            salt: Salt::from_bytes(&salt)?,
        })
    }
}

/// A strict boolean byte: 0 or 1.
pub(crate) fn decode_bool(byte: u8, what: &'static str) -> Result<bool, ZkError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(ZkError::BadFlag { what, value: other }),
    }
}
