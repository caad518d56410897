//! The Poseidon permutation parameters every node uses, and the native 4-to-1 hash.
//!
//! BN254 has no built-in Poseidon parameters in arkworks, so they are derived once, at first use,
//! with arkworks' `find_poseidon_ark_and_mds` (the Grain LFSR of the Poseidon paper) from these
//! fixed inputs:
//!
//! | parameter | value | why |
//! |---|---|---|
//! | field | BN254 scalar field `Fr` (254-bit prime) | the Groth16 circuit field |
//! | width `t` | 5 (rate 4 + capacity 1) | the commitment absorbs exactly 4 elements: one permutation |
//! | S-box | `x^5` (`alpha = 5`, `gcd(5, r - 1) = 1`) | the usual choice for BN254 |
//! | full rounds `R_F` | 8 | Poseidon paper, 128-bit security |
//! | partial rounds `R_P` | 60 | Poseidon paper table for `t = 5`, `alpha = 5`, 254-bit field (as circomlib) |
//! | skipped MDS matrices | 0 | the first Grain-generated Cauchy matrix that passes |
//!
//! The constants are *not* circomlib's (circomlib derives them with different Grain settings), so
//! this hash is not interchangeable with circomlib's `Poseidon(4)`. `tests/zk.rs` pins a test
//! vector and a few round constants: a change of arkworks' derivation or of any parameter above
//! fails that test instead of silently making nodes disagree.
//!
//! The hash is a fixed-length sponge: the capacity element starts at zero, the 4 inputs fill the
//! rate, one permutation, the first rate element is the output. Its only user hashes exactly 4
//! elements, so no padding or length tag is needed.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::CryptographicSponge;
use ark_crypto_primitives::sponge::poseidon::{
    PoseidonConfig, PoseidonSponge, find_poseidon_ark_and_mds,
};

/// Field elements absorbed per permutation.
pub const POSEIDON_RATE: usize = 4;
/// Capacity (field elements).
pub const POSEIDON_CAPACITY: usize = 1;
/// Full rounds (`R_F`).
pub const POSEIDON_FULL_ROUNDS: usize = 8;
/// Partial rounds (`R_P`).
pub const POSEIDON_PARTIAL_ROUNDS: usize = 60;
/// S-box exponent.
pub const POSEIDON_ALPHA: u64 = 5;
/// Bit length of the BN254 scalar field modulus, an input of the Grain LFSR.
const PRIME_BITS: u64 = 254;

/// The fixed Poseidon parameters (derived on first call, then shared).
pub fn poseidon_config() -> &'static PoseidonConfig<Fr> {
    static CONFIG: OnceLock<PoseidonConfig<Fr>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (ark, mds) = find_poseidon_ark_and_mds::<Fr>(
            PRIME_BITS,
            POSEIDON_RATE,
            POSEIDON_FULL_ROUNDS as u64,
            POSEIDON_PARTIAL_ROUNDS as u64,
            0,
        );
        PoseidonConfig::new(
            POSEIDON_FULL_ROUNDS,
            POSEIDON_PARTIAL_ROUNDS,
            POSEIDON_ALPHA,
            mds,
            ark,
            POSEIDON_RATE,
            POSEIDON_CAPACITY,
        )
    })
}

/// Poseidon over exactly four field elements (one permutation).
pub fn poseidon4(inputs: &[Fr; 4]) -> Fr {
    let mut sponge = PoseidonSponge::<Fr>::new(poseidon_config());
    sponge.absorb(&inputs.as_slice());
    let out: Vec<Fr> = sponge.squeeze_field_elements(1);
    *out.first()
        .expect("squeeze_field_elements(1) returns one element")
}
