//! Circuit keys: generation (`setup`), their byte form, and strict parsing.

use ark_bn254::Bn254;
use ark_groth16::Groth16;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize, Compress, Validate};
use ark_snark::SNARK;
use rand_08::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ZkError;
use super::circuit::AttestationCircuit;
use super::predicate::PUBLIC_INPUTS;

/// Upper bound on an encoded proving key (the real one is ~60 KB); decoding refuses larger input
/// before allocating.
pub const PROVING_KEY_BYTES_MAX: usize = 1 << 20;
/// Upper bound on an encoded verifying key (the real one is 328 B).
pub const VERIFYING_KEY_BYTES_MAX: usize = 4096;

/// Both Groth16 keys of the attestation circuit, as ark compressed serializations.
///
/// Produced by [`setup`] at CA bootstrap and stored in the CA state. Whoever ran `setup` saw the
/// toxic waste and could forge proofs (see `docs/trust.md`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitKeys {
    /// `ark_groth16::ProvingKey<Bn254>`, compressed.
    pub proving_key: Vec<u8>,
    /// `ark_groth16::VerifyingKey<Bn254>`, compressed.
    pub verifying_key: Vec<u8>,
}

impl std::fmt::Debug for CircuitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitKeys")
            .field("proving_key_bytes", &self.proving_key.len())
            .field(
                "verifying_key_id",
                &hex::encode(key_id(&self.verifying_key)),
            )
            .finish()
    }
}

impl CircuitKeys {
    /// Parses the proving key (strict; ~tens of ms: every point is checked).
    pub fn proving_key(&self) -> Result<ProvingKey, ZkError> {
        ProvingKey::from_bytes(&self.proving_key)
    }

    /// Parses the verifying key (strict).
    pub fn verifying_key(&self) -> Result<VerifyingKey, ZkError> {
        VerifyingKey::from_bytes(&self.verifying_key)
    }
}

/// SHA-256 of verifying-key bytes: the key's identity in the [`super::Verifier`] cache and in
/// batch transcripts.
pub fn key_id(verifying_key: &[u8]) -> [u8; 32] {
    Sha256::digest(verifying_key).into()
}

/// Generates fresh keys for the attestation circuit (Groth16 circuit-specific setup).
///
/// Deterministic in `rng`: the same seeded generator gives byte-identical keys.
pub fn setup<R: RngCore + CryptoRng>(rng: &mut R) -> Result<CircuitKeys, ZkError> {
    let (pk, vk) = Groth16::<Bn254>::circuit_specific_setup(AttestationCircuit::default(), rng)
        .map_err(|e| ZkError::Synthesis(e.to_string()))?;
    let mut proving_key = Vec::with_capacity(pk.compressed_size());
    pk.serialize_compressed(&mut proving_key)
        .map_err(|e| ZkError::Synthesis(e.to_string()))?;
    let mut verifying_key = Vec::with_capacity(vk.compressed_size());
    vk.serialize_compressed(&mut verifying_key)
        .map_err(|e| ZkError::Synthesis(e.to_string()))?;
    Ok(CircuitKeys {
        proving_key,
        verifying_key,
    })
}

/// Deserializes `bytes` strictly: compressed, every point on the curve and in the prime-order
/// subgroup, no trailing bytes, and the canonical encoding (re-encoding gives the same bytes).
pub(crate) fn decode_strict<T: CanonicalDeserialize + CanonicalSerialize>(
    bytes: &[u8],
) -> Result<T, String> {
    let mut reader = bytes;
    let value = T::deserialize_with_mode(&mut reader, Compress::Yes, Validate::Yes)
        .map_err(|e| e.to_string())?;
    if !reader.is_empty() {
        return Err(format!("{} trailing bytes", reader.len()));
    }
    let mut again = Vec::with_capacity(bytes.len());
    value
        .serialize_compressed(&mut again)
        .map_err(|e| e.to_string())?;
    if again != bytes {
        return Err("non-canonical encoding".to_owned());
    }
    Ok(value)
}

/// A parsed Groth16 proving key of the attestation circuit.
#[derive(Clone)]
pub struct ProvingKey(pub(crate) ark_groth16::ProvingKey<Bn254>);

impl std::fmt::Debug for ProvingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvingKey")
            .field("constraints_h_query", &self.0.h_query.len())
            .finish_non_exhaustive()
    }
}

impl ProvingKey {
    /// Strict parse of a compressed proving key; also checks it belongs to a circuit with
    /// [`PUBLIC_INPUTS`] public inputs.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        if bytes.len() > PROVING_KEY_BYTES_MAX {
            return Err(ZkError::MalformedKey {
                which: "proving",
                reason: format!("{} bytes exceeds {PROVING_KEY_BYTES_MAX}", bytes.len()),
            });
        }
        let pk: ark_groth16::ProvingKey<Bn254> =
            decode_strict(bytes).map_err(|reason| ZkError::MalformedKey {
                which: "proving",
                reason,
            })?;
        check_input_count(&pk.vk)?;
        Ok(Self(pk))
    }
}

/// A parsed Groth16 verifying key of the attestation circuit.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyingKey(pub(crate) ark_groth16::VerifyingKey<Bn254>);

impl Eq for VerifyingKey {}

impl VerifyingKey {
    /// Strict parse of a compressed verifying key; also checks it has exactly
    /// [`PUBLIC_INPUTS`] public inputs (a key for another circuit is [`ZkError::WrongKey`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        if bytes.len() > VERIFYING_KEY_BYTES_MAX {
            return Err(ZkError::MalformedKey {
                which: "verifying",
                reason: format!("{} bytes exceeds {VERIFYING_KEY_BYTES_MAX}", bytes.len()),
            });
        }
        let vk: ark_groth16::VerifyingKey<Bn254> =
            decode_strict(bytes).map_err(|reason| ZkError::MalformedKey {
                which: "verifying",
                reason,
            })?;
        check_input_count(&vk)?;
        Ok(Self(vk))
    }

    /// Compressed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.compressed_size());
        self.0
            .serialize_compressed(&mut out)
            .expect("serializing into a Vec cannot fail");
        out
    }

    /// Number of public inputs the key expects.
    pub fn public_inputs(&self) -> usize {
        self.0.gamma_abc_g1.len().saturating_sub(1)
    }
}

fn check_input_count(vk: &ark_groth16::VerifyingKey<Bn254>) -> Result<(), ZkError> {
    let found = vk.gamma_abc_g1.len().saturating_sub(1);
    if vk.gamma_abc_g1.len() != PUBLIC_INPUTS + 1 {
        return Err(ZkError::WrongKey {
            reason: format!(
                "the key is for a circuit with {found} public inputs, the attestation circuit has {PUBLIC_INPUTS}"
            ),
        });
    }
    Ok(())
}
