//! The ACL token store decoder: arbitrary bytes either decode or are refused, never panic;
//! whatever decodes re-encodes to bytes that decode to the same tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_fabric::acl::{decode_store, encode_store};

fuzz_target!(|data: &[u8]| {
    if let Ok(tokens) = decode_store(data) {
        let again = encode_store(&tokens);
        assert_eq!(decode_store(&again).as_ref(), Ok(&tokens));
    }
});
