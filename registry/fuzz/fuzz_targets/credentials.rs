//! Any bytes as advert credentials (MIC + attestations): decoding fails cleanly or yields
//! credentials that re-encode to exactly the input, and checking them against a context that
//! knows no CA never panics and never accepts. The same bytes are also tried as the JSON form's
//! hex text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_registry::{Credentials, TrustContext};

fuzz_target!(|data: &[u8]| {
    let ctx = TrustContext::new();
    if let Ok(c) = Credentials::decode(data) {
        assert_eq!(c.encode(), data);
        assert!(ctx.check(&c, 0).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (mic, rest) = text.split_once(' ').unwrap_or((text, ""));
        let attestations: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        if let Ok(c) = Credentials::from_hex(mic, &attestations) {
            assert_eq!(Credentials::decode(&c.encode()), Ok(c.clone()));
            assert!(ctx.check(&c, u64::MAX).is_err());
        }
    }
});
