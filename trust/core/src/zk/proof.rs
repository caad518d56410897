//! Groth16 proofs of the attestation circuit and the `Attestation` an advert carries.

use ark_bn254::Bn254;
use ark_groth16::Groth16;
use ark_serialize::CanonicalSerialize;
use ark_snark::SNARK;
use rand_08::{CryptoRng, RngCore};

use super::ZkError;
use super::circuit::AttestationCircuit;
use super::commitment::Opening;
use super::keys::{ProvingKey, decode_strict};
use super::predicate::{PREDICATE_BYTES, Predicate};

/// Bytes of a compressed proof: A (G1, 32) ‖ B (G2, 64) ‖ C (G1, 32).
pub const PROOF_BYTES: usize = 128;

/// The circuit id of the attestation circuit in `ca::Bootstrap::circuits` and in
/// [`Attestation::circuit`].
pub const ATTESTATION_CIRCUIT_ID: u16 = 1;

/// A parsed Groth16 proof (points on the curve and in the prime-order subgroups).
#[derive(Clone, Debug, PartialEq)]
pub struct Proof(pub(crate) ark_groth16::Proof<Bn254>);

impl Eq for Proof {}

impl Proof {
    /// 128 compressed bytes.
    pub fn to_bytes(&self) -> [u8; PROOF_BYTES] {
        let mut out = [0u8; PROOF_BYTES];
        self.0
            .serialize_compressed(&mut out[..])
            .expect("a BN254 Groth16 proof compresses to exactly 128 bytes");
        out
    }

    /// Strict decode: canonical compressed points, on the curve, in the subgroup.
    pub fn from_bytes(bytes: &[u8; PROOF_BYTES]) -> Result<Self, ZkError> {
        decode_strict(bytes)
            .map(Self)
            .map_err(|reason| ZkError::MalformedProof { reason })
    }
}

/// Proves that `opening` satisfies `predicate`.
///
/// Refuses with [`ZkError::PredicateFalse`] (naming the failing clause) when it does not: no
/// proof is produced for a false statement. Deterministic in `rng`.
pub fn prove<R: RngCore + CryptoRng>(
    proving_key: &ProvingKey,
    opening: &Opening,
    predicate: &Predicate,
    rng: &mut R,
) -> Result<Proof, ZkError> {
    predicate
        .check(&opening.properties)
        .map_err(ZkError::PredicateFalse)?;
    let circuit = AttestationCircuit::assigned(opening, predicate);
    Groth16::<Bn254>::prove(&proving_key.0, circuit, rng)
        .map(Proof)
        .map_err(|e| ZkError::Synthesis(e.to_string()))
}

/// What an advert carries to claim a predicate over its MIC's committed properties.
///
/// Wire format ([`Attestation::encode`], 133 bytes):
/// `circuit u16 LE ‖ min_score u16 LE ‖ require_safety u8 (0|1) ‖ proof (128 B)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// Circuit id ([`ATTESTATION_CIRCUIT_ID`]); selects the verifying key in the CA state.
    pub circuit: u16,
    /// The public statement.
    pub predicate: Predicate,
    /// The compressed proof ([`Proof::to_bytes`]).
    pub proof: [u8; PROOF_BYTES],
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestation")
            .field("circuit", &self.circuit)
            .field("predicate", &self.predicate)
            .field("proof", &hex::encode(&self.proof[..8]))
            .finish_non_exhaustive()
    }
}

/// Bytes of an encoded [`Attestation`].
pub const ATTESTATION_BYTES: usize = 2 + PREDICATE_BYTES + PROOF_BYTES;

impl Attestation {
    /// Proves and packages in one step.
    pub fn create<R: RngCore + CryptoRng>(
        circuit: u16,
        proving_key: &ProvingKey,
        opening: &Opening,
        predicate: &Predicate,
        rng: &mut R,
    ) -> Result<Self, ZkError> {
        let proof = prove(proving_key, opening, predicate, rng)?;
        Ok(Self {
            circuit,
            predicate: *predicate,
            proof: proof.to_bytes(),
        })
    }

    /// The parsed proof (strict).
    pub fn parsed_proof(&self) -> Result<Proof, ZkError> {
        Proof::from_bytes(&self.proof)
    }

    /// Encodes to the 133-byte wire format.
    pub fn encode(&self) -> [u8; ATTESTATION_BYTES] {
        let mut out = [0u8; ATTESTATION_BYTES];
        out[0..2].copy_from_slice(&self.circuit.to_le_bytes());
        out[2..2 + PREDICATE_BYTES].copy_from_slice(&self.predicate.encode());
        out[2 + PREDICATE_BYTES..].copy_from_slice(&self.proof);
        out
    }

    /// Strict decode: exact length, a valid predicate, and proof bytes that parse as a canonical
    /// proof (so a decoded attestation never carries garbage points).
    pub fn decode(bytes: &[u8]) -> Result<Self, ZkError> {
        let bytes: &[u8; ATTESTATION_BYTES] =
            bytes.try_into().map_err(|_| ZkError::WrongLength {
                what: "attestation",
                expected: ATTESTATION_BYTES,
                found: bytes.len(),
            })?;
        let circuit = u16::from_le_bytes([bytes[0], bytes[1]]);
        let predicate = Predicate::decode(&bytes[2..2 + PREDICATE_BYTES])?;
        let mut proof = [0u8; PROOF_BYTES];
        proof.copy_from_slice(&bytes[2 + PREDICATE_BYTES..]);
        Proof::from_bytes(&proof)?;
        Ok(Self {
            circuit,
            predicate,
            proof,
        })
    }
}
