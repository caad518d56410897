//! Any bytes as a digest: decode fails cleanly or re-encodes to the same bytes, and
//! `Registry::differing` on it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_registry::{Digest, NodeId, Registry};

fuzz_target!(|data: &[u8]| {
    if let Ok(digest) = Digest::from_bytes(data) {
        assert_eq!(digest.to_bytes(), data);
        let registry = Registry::new(NodeId([1; 32]));
        let diff = registry.differing(&digest);
        assert!(diff.len() <= digest.origins.len());
    }
});
