//! Any bytes as an encoded MIC: decode never panics; an accepted encoding is canonical (it
//! re-encodes to the input), passes the body checks, and verifying it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_trust_core::mic::{CaKeys, Mic};

fuzz_target!(|data: &[u8]| {
    let Ok(mic) = Mic::decode(data) else {
        return;
    };
    assert_eq!(mic.encode(), data);
    assert!(mic.body.check().is_ok());
    let _ = mic.verify(&CaKeys::new(), mic.body.not_before_ms);
    let _ = mic.fingerprint();
});
