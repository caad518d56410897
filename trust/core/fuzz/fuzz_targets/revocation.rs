//! Any bytes as a signed revocation: decode never panics; an accepted record is canonical; a
//! revocation set given it (it fails verification against an unrelated key) stays empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_trust_core::mic::CaKeys;
use nexus_trust_core::revocation::{RevocationSet, SignedRevocation};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SignedRevocation::decode(data) {
        assert_eq!(record.encode(), data);
        let mut set = RevocationSet::new();
        assert!(set.insert(&CaKeys::new(), record, 0).is_err());
        assert!(set.is_empty());
    }
    // The same bytes as a persisted revocation set.
    if let Ok(set) = RevocationSet::import(data, &CaKeys::new()) {
        assert_eq!(set.export(), data);
    }
});
