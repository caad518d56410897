//! Every NexAPI message decoder: arbitrary bytes either decode or are refused, never panic;
//! whatever decodes re-encodes to a message that decodes to the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nexus_api::wire::{Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        tensor_bytes_max: 1 << 20,
        payload_bytes_max: 1 << 20,
    };
    if let Ok(m) = Message::decode(&Bytes::copy_from_slice(data), &limits) {
        let again = m.encode();
        assert_eq!(Message::decode(&again, &limits).as_ref(), Ok(&m));
    }
});
