//! Any bytes as a signed advert: parse, verify, apply to a registry; never panic, invariants
//! hold afterwards.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_registry::{NodeId, Registry, SignedAdvert, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(advert) = SignedAdvert::from_bytes(data) else {
        return;
    };
    assert_eq!(advert.to_bytes(), data);
    let mut registry = Registry::new(NodeId([1; 32]));
    let _ = registry.apply(Timestamp::ZERO, &advert);
    registry.expire(Timestamp::from_micros(u64::MAX / 2));
    registry.check_invariants();
});
