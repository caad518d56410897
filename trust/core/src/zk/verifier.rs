//! Groth16 verification: prepared keys, a bounded prepared-key cache, and batch verification.
//!
//! # Batch verification and why it is sound
//!
//! One proof `(A, B, C)` for public inputs `x` verifies when
//! `e(A, B) · e(IC(x), −γ) · e(C, −δ) · e(α, −β) = 1` in `G_T`, where
//! `IC(x) = γ_abc[0] + Σ_j x_j · γ_abc[j]`. For `n` proofs under one key the batch check is
//!
//! `Π_i e(r_i·A_i, B_i) · e(Σ_i r_i·IC(x_i), −γ) · e(Σ_i r_i·C_i, −δ) · e((Σ_i r_i)·α, −β) = 1`
//!
//! with one multi-Miller loop over `n + 3` pairs and one final exponentiation. By bilinearity the
//! left side equals `Π_i t_i^{r_i}` where `t_i` is proof `i`'s own check value. `G_T` has prime
//! order `r`, so if some `t_k ≠ 1` then, for any fixed choice of the other `r_i`, at most one
//! value of `r_k` modulo `r` makes the product 1. The `r_i` are 128-bit and, per proof, nonzero;
//! an adversary who must fix the proofs before the `r_i` are known passes a batch containing a
//! bad proof with probability at most `2^-128` (the small-exponent test of Bellare, Garay and
//! Rabin, 1998). All points are already checked to lie in the prime-order subgroups when a
//! [`Proof`] or key is decoded, which this argument needs.
//!
//! The `r_i` are unpredictable to whoever chose the proofs in two independent ways, and either
//! suffices: they are derived with SHA-256 from a transcript of *everything* being checked
//! (domain tag, verifying-key id, count, and every commitment, predicate and proof), and that
//! transcript also absorbs a 32-byte nonce drawn from the caller's RNG. Changing any proof changes
//! every `r_i` (Fiat–Shamir: the prover cannot fix proofs after seeing the scalars), and a
//! secret nonce protects even a verifier whose inputs an adversary fully controls. A seeded RNG
//! keeps the simulator deterministic.
//!
//! When the batch check fails, every proof is verified on its own to name the bad ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
use ark_ff::{One, PrimeField};
use ark_groth16::{Groth16, PreparedVerifyingKey, prepare_verifying_key};
use rand_08::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use super::ZkError;
use super::commitment::{Commitment, FIELD_BYTES, fr_from_bytes};
use super::keys::{VerifyingKey, key_id};
use super::predicate::{PUBLIC_INPUTS, Predicate, public_inputs};
use super::proof::{Attestation, Proof};

/// Default bound on the prepared keys a [`Verifier`] keeps.
pub const PREPARED_KEYS_MAX_DEFAULT: usize = 16;

/// Domain-separation tag of the batch transcript.
const BATCH_DOMAIN: &[u8] = b"nexus/zk/groth16-batch/v1";

/// A verifying key prepared for fast verification (the `e(α, β)` pairing and the negated, prepared
/// `γ`, `δ`, `β` are precomputed).
pub struct PreparedKey {
    id: [u8; 32],
    pvk: PreparedVerifyingKey<Bn254>,
    beta_g2_neg: <Bn254 as Pairing>::G2Prepared,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

/// One entry of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    /// The MIC's commitment.
    pub commitment: Commitment,
    /// The claimed predicate.
    pub predicate: Predicate,
    /// The proof.
    pub proof: Proof,
}

impl PreparedKey {
    /// Prepares a parsed key. `id` is [`key_id`] of its compressed bytes.
    pub fn new(vk: &VerifyingKey) -> Self {
        let beta_g2_neg = (-vk.0.beta_g2.into_group()).into_affine().into();
        Self {
            id: key_id(&vk.to_bytes()),
            pvk: prepare_verifying_key(&vk.0),
            beta_g2_neg,
        }
    }

    /// Parses (strictly) and prepares compressed verifying-key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        Ok(Self::new(&VerifyingKey::from_bytes(bytes)?))
    }

    /// SHA-256 of the compressed key bytes.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// Verifies one proof of "the properties committed in `commitment` satisfy `predicate`".
    pub fn verify(
        &self,
        commitment: &Commitment,
        predicate: &Predicate,
        proof: &Proof,
    ) -> Result<(), ZkError> {
        self.verify_fields(&public_inputs(commitment, predicate), proof)
    }

    /// Verifies with raw public inputs (32-byte canonical little-endian scalars), e.g. from an
    /// external source. Enforces what Groth16 verifiers commonly do not: exactly
    /// [`PUBLIC_INPUTS`] inputs ([`ZkError::PublicInputCount`]), each `< r`
    /// ([`ZkError::NonCanonical`]).
    pub fn verify_public_inputs(
        &self,
        inputs: &[[u8; FIELD_BYTES]],
        proof: &Proof,
    ) -> Result<(), ZkError> {
        if inputs.len() != PUBLIC_INPUTS {
            return Err(ZkError::PublicInputCount {
                expected: PUBLIC_INPUTS,
                found: inputs.len(),
            });
        }
        let mut fields = [Fr::from(0u64); PUBLIC_INPUTS];
        for (field, bytes) in fields.iter_mut().zip(inputs) {
            *field = fr_from_bytes(bytes).ok_or(ZkError::NonCanonical {
                what: "public input",
            })?;
        }
        self.verify_fields(&fields, proof)
    }

    fn verify_fields(&self, inputs: &[Fr; PUBLIC_INPUTS], proof: &Proof) -> Result<(), ZkError> {
        // `prepare_inputs` zips inputs with the key's IC points without checking the counts; the
        // key was checked to have exactly PUBLIC_INPUTS + 1 of them when it was parsed.
        debug_assert_eq!(self.pvk.vk.gamma_abc_g1.len(), PUBLIC_INPUTS + 1);
        match Groth16::<Bn254>::verify_proof(&self.pvk, &proof.0, inputs) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ZkError::VerificationFailed),
            Err(e) => Err(ZkError::Synthesis(e.to_string())),
        }
    }

    /// Verifies many proofs with one multi-Miller loop and one final exponentiation (see the
    /// module docs for the soundness argument). On failure verifies each proof alone and returns
    /// [`ZkError::BatchRejected`] with the indices of the bad ones. An empty batch passes.
    pub fn verify_batch<R: RngCore + CryptoRng>(
        &self,
        items: &[BatchItem],
        rng: &mut R,
    ) -> Result<(), ZkError> {
        match items {
            [] => return Ok(()),
            [one] => return self.verify(&one.commitment, &one.predicate, &one.proof),
            _ => {}
        }
        if self.batch_holds(items, rng) {
            return Ok(());
        }
        let failed: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| {
                self.verify(&it.commitment, &it.predicate, &it.proof)
                    .is_err()
            })
            .map(|(i, _)| i)
            .collect();
        if failed.is_empty() {
            // Every proof verifies on its own: the one-by-one checks are authoritative. Reaching
            // this means the batch equation was wrong, which the 2^-128 bound says cannot happen
            // for valid proofs; surface it loudly in debug builds.
            debug_assert!(false, "batch check failed but every proof verifies alone");
            return Ok(());
        }
        Err(ZkError::BatchRejected { failed })
    }

    /// The 128-bit batching scalars (see the module docs).
    fn batch_scalars<R: RngCore + CryptoRng>(&self, items: &[BatchItem], rng: &mut R) -> Vec<u128> {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let mut transcript = Sha256::new();
        transcript.update(BATCH_DOMAIN);
        transcript.update(nonce);
        transcript.update(self.id);
        transcript.update((items.len() as u64).to_le_bytes());
        for item in items {
            transcript.update(item.commitment.to_bytes());
            transcript.update(item.predicate.encode());
            transcript.update(item.proof.to_bytes());
        }
        let seed = transcript.finalize();
        (0..items.len() as u64)
            .map(|i| {
                let digest = Sha256::new()
                    .chain_update(seed)
                    .chain_update(i.to_le_bytes())
                    .finalize();
                let mut half = [0u8; 16];
                half.copy_from_slice(&digest[..16]);
                u128::from_le_bytes(half).max(1)
            })
            .collect()
    }

    fn batch_holds<R: RngCore + CryptoRng>(&self, items: &[BatchItem], rng: &mut R) -> bool {
        let scalars = self.batch_scalars(items, rng);
        let vk = &self.pvk.vk;
        let r_fields: Vec<Fr> = scalars.iter().map(|&r| Fr::from(r)).collect();

        // r_i·A_i (128-bit scalars: half the doublings of a full multiplication).
        let scaled_a: Vec<G1Projective> = items
            .iter()
            .zip(&scalars)
            .map(|(item, &r)| item.proof.0.a.mul_bigint([r as u64, (r >> 64) as u64]))
            .collect();
        let scaled_a = G1Projective::normalize_batch(&scaled_a);

        // Σ r_i·C_i.
        let c_points: Vec<G1Affine> = items.iter().map(|it| it.proof.0.c).collect();
        let sum_c = G1Projective::msm_unchecked(&c_points, &r_fields);

        // Σ r_i·IC(x_i) = (Σ r_i)·γ_abc[0] + Σ_j (Σ_i r_i·x_ij)·γ_abc[j].
        let mut ic_scalars = [Fr::from(0u64); PUBLIC_INPUTS + 1];
        for (item, r) in items.iter().zip(&r_fields) {
            ic_scalars[0] += r;
            let x = public_inputs(&item.commitment, &item.predicate);
            for (acc, xj) in ic_scalars[1..].iter_mut().zip(x) {
                *acc += *r * xj;
            }
        }
        let sum_ic = G1Projective::msm_unchecked(&vk.gamma_abc_g1, &ic_scalars);
        let sum_alpha = vk.alpha_g1.mul_bigint(ic_scalars[0].into_bigint());

        let tail = G1Projective::normalize_batch(&[sum_ic, sum_c, sum_alpha]);
        let g1: Vec<<Bn254 as Pairing>::G1Prepared> =
            scaled_a.into_iter().chain(tail).map(Into::into).collect();
        let g2: Vec<<Bn254 as Pairing>::G2Prepared> = items
            .iter()
            .map(|it| it.proof.0.b.into())
            .chain([
                self.pvk.gamma_g2_neg_pc.clone(),
                self.pvk.delta_g2_neg_pc.clone(),
                self.beta_g2_neg.clone(),
            ])
            .collect();
        let miller = Bn254::multi_miller_loop(g1, g2);
        match Bn254::final_exponentiation(miller) {
            Some(out) => out.0.is_one(),
            None => false,
        }
    }
}

struct CacheEntry {
    last_used: u64,
    key: Arc<PreparedKey>,
}

/// Verifies attestations, keeping up to `prepared_keys_max` prepared verifying keys (keyed by
/// SHA-256 of the key bytes, least recently used evicted first; deterministic).
///
/// Sans-IO: it holds no clock; batch verification takes the caller's RNG.
pub struct Verifier {
    cache: BTreeMap<[u8; 32], CacheEntry>,
    tick: u64,
    prepared_keys_max: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("prepared_keys", &self.cache.len())
            .field("prepared_keys_max", &self.prepared_keys_max)
            .finish()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(PREPARED_KEYS_MAX_DEFAULT)
    }
}

impl Verifier {
    /// A verifier caching at most `prepared_keys_max` prepared keys (at least 1).
    pub fn new(prepared_keys_max: usize) -> Self {
        Self {
            cache: BTreeMap::new(),
            tick: 0,
            prepared_keys_max: prepared_keys_max.max(1),
        }
    }

    /// Number of prepared keys held.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// The prepared form of `verifying_key` (compressed bytes), from the cache or freshly parsed
    /// and prepared. A malformed key is not cached.
    pub fn prepare(&mut self, verifying_key: &[u8]) -> Result<Arc<PreparedKey>, ZkError> {
        let id = key_id(verifying_key);
        self.tick += 1;
        if let Some(entry) = self.cache.get_mut(&id) {
            entry.last_used = self.tick;
            return Ok(Arc::clone(&entry.key));
        }
        let key = Arc::new(PreparedKey::from_bytes(verifying_key)?);
        while self.cache.len() >= self.prepared_keys_max {
            let oldest = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
                .expect("the cache is non-empty here");
            self.cache.remove(&oldest);
        }
        self.cache.insert(
            id,
            CacheEntry {
                last_used: self.tick,
                key: Arc::clone(&key),
            },
        );
        Ok(key)
    }

    /// Verifies one proof under `verifying_key` (compressed bytes).
    pub fn verify(
        &mut self,
        verifying_key: &[u8],
        commitment: &Commitment,
        predicate: &Predicate,
        proof: &Proof,
    ) -> Result<(), ZkError> {
        self.prepare(verifying_key)?
            .verify(commitment, predicate, proof)
    }

    /// Verifies an [`Attestation`] against a MIC's commitment. `circuit` is the circuit id the
    /// verifying key belongs to; a mismatch is [`ZkError::WrongKey`].
    pub fn verify_attestation(
        &mut self,
        circuit: u16,
        verifying_key: &[u8],
        commitment: &Commitment,
        attestation: &Attestation,
    ) -> Result<(), ZkError> {
        if attestation.circuit != circuit {
            return Err(ZkError::WrongKey {
                reason: format!(
                    "the attestation names circuit {}, the key is for circuit {circuit}",
                    attestation.circuit
                ),
            });
        }
        let proof = attestation.parsed_proof()?;
        self.verify(verifying_key, commitment, &attestation.predicate, &proof)
    }

    /// Batch-verifies under one key; see [`PreparedKey::verify_batch`].
    pub fn verify_batch<R: RngCore + CryptoRng>(
        &mut self,
        verifying_key: &[u8],
        items: &[BatchItem],
        rng: &mut R,
    ) -> Result<(), ZkError> {
        self.prepare(verifying_key)?.verify_batch(items, rng)
    }
}
