//! Any bytes as a CA snapshot: restore never panics; a restored state satisfies the state
//! machine's invariants and snapshots back to the same bytes.
//!
//! The snapshot ends in a SHA-256 of its content, which a fuzzer cannot forge, so each input is
//! also tried "resealed" (its last 32 bytes replaced by the digest of the rest): that lets the
//! fuzzer reach states that pass every structural check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_trust_core::ca::CaState;
use sha2::{Digest, Sha256};

fn check(data: &[u8]) {
    let Ok(state) = CaState::restore(data) else {
        return;
    };
    state.check_invariants();
    assert_eq!(state.snapshot(), data);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 32 {
        let content = data.len() - 32;
        let mut resealed = data[..content].to_vec();
        resealed.extend_from_slice(&Sha256::digest(&data[..content]));
        check(&resealed);
    }
});
