//! The safetensors reader: arbitrary bytes are read or refused, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nexus_api::wire::Limits;

fuzz_target!(|data: &[u8]| {
    let _ = nexus_api::safetensors::read(&Bytes::copy_from_slice(data), 0, &Limits::default());
});
