//! Generating the CA's first log entry ([`Bootstrap`]): a fresh CA Ed25519 key and the
//! attestation circuit's Groth16 keys, both drawn from one 32-byte seed.
//!
//! A plain (non-generic) function on purpose: the Groth16 setup is instantiated here, in this
//! crate, so it is compiled with this crate's optimisation level (the workspace's dev profile
//! optimises `nexus-trust`) rather than with the caller's.

use rand_08::SeedableRng;
use rand_08::rngs::StdRng;

use crate::ca::Bootstrap;
use crate::zk::{self, ZkError};

/// A bootstrap with CA key id `ca_key_id`, deterministic in `seed` (pass 32 bytes from the OS
/// RNG in production, a seed-derived value in the simulator).
pub fn generate(seed: [u8; 32], ca_key_id: u32) -> Result<Bootstrap, ZkError> {
    let mut rng = StdRng::from_seed(seed);
    let keys = zk::setup(&mut rng)?;
    Ok(Bootstrap::generate(
        &mut rng,
        ca_key_id,
        vec![(zk::ATTESTATION_CIRCUIT_ID, keys)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bootstrap() {
        let a = generate([3; 32], 1).expect("setup");
        let b = generate([3; 32], 1).expect("setup");
        assert_eq!(a, b);
        assert_eq!(a.circuits.len(), 1);
        assert_eq!(a.circuits[0].0, zk::ATTESTATION_CIRCUIT_ID);
        let c = generate([4; 32], 1).expect("setup");
        assert_ne!(a.ca_secret_key, c.ca_secret_key);
    }
}
