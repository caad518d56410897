//! Export to snarkjs's Groth16 JSON (`verification_key.json`, `proof.json`, `public.json`) so a
//! party outside the fabric can check a proof with an independent implementation:
//! `snarkjs groth16 verify verification_key.json public.json proof.json`.
//!
//! Layout (checked against snarkjs 0.7.6, `tests/snarkjs.rs`): every number is the decimal string
//! of the reduced integer; G1 points are `[x, y, "1"]`; G2 points are
//! `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]`; `IC` is the key's `gamma_abc_g1` in order and
//! `nPublic = IC.len() - 1`; `curve` is `"bn128"` (snarkjs's name for BN254).
//!
//! snarkjs does not check that `public.json` has exactly `nPublic` entries; whoever feeds it
//! inputs from elsewhere must check that (this crate's own verifier does).

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::PrimeField;
use serde_json::{Value, json};

use super::commitment::Commitment;
use super::keys::VerifyingKey;
use super::predicate::{Predicate, public_inputs};
use super::proof::Proof;

fn dec(x: &Fq) -> Value {
    Value::String(x.into_bigint().to_string())
}

fn dec2(x: &Fq2) -> Value {
    json!([dec(&x.c0), dec(&x.c1)])
}

fn g1(p: &G1Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([dec(&x), dec(&y), "1"]),
        None => json!(["0", "1", "0"]),
    }
}

fn g2(p: &G2Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([dec2(&x), dec2(&y), ["1", "0"]]),
        None => json!([["0", "0"], ["1", "0"], ["0", "0"]]),
    }
}

/// `verification_key.json`.
pub fn verification_key_json(vk: &VerifyingKey) -> Value {
    let vk = &vk.0;
    json!({
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": vk.gamma_abc_g1.len().saturating_sub(1),
        "vk_alpha_1": g1(&vk.alpha_g1),
        "vk_beta_2": g2(&vk.beta_g2),
        "vk_gamma_2": g2(&vk.gamma_g2),
        "vk_delta_2": g2(&vk.delta_g2),
        "IC": vk.gamma_abc_g1.iter().map(g1).collect::<Vec<_>>(),
    })
}

/// `proof.json`.
pub fn proof_json(proof: &Proof) -> Value {
    let p = &proof.0;
    json!({
        "pi_a": g1(&p.a),
        "pi_b": g2(&p.b),
        "pi_c": g1(&p.c),
        "protocol": "groth16",
        "curve": "bn128",
    })
}

/// `public.json`: `[commitment, min_score, require_safety]` as decimal strings.
pub fn public_json(commitment: &Commitment, predicate: &Predicate) -> Value {
    Value::Array(
        public_inputs(commitment, predicate)
            .iter()
            .map(|x| Value::String(x.into_bigint().to_string()))
            .collect(),
    )
}
