//! Any bytes as an encoded SAD: `Sad::decode` returns an error or a valid SAD that re-encodes
//! and decodes to itself; `access` never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_registry::{Sad, access};

fuzz_target!(|data: &[u8]| {
    if let Ok(sad) = Sad::decode(data) {
        sad.validate().expect("decode validates");
        let again = sad.encode().expect("a decoded SAD re-encodes");
        assert_eq!(Sad::decode(&again).expect("round trip"), sad);
    }
    let _ = access(data);
    let _ = Sad::from_json(data);
});
