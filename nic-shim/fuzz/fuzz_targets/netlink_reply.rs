//! Any bytes as a datagram from the kernel's rtnetlink socket, read as the answer to a request:
//! `decode_reply` returns the answer, an acknowledgement, a kernel error, `None` for messages
//! of other requests, or a decode error — never a panic. The first four input bytes pick the
//! request's sequence number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_nic::decode_reply;

fuzz_target!(|data: &[u8]| {
    let Some((sequence, datagram)) = data.split_first_chunk::<4>() else {
        return;
    };
    let sequence = u32::from_ne_bytes(*sequence);
    match decode_reply(datagram, sequence) {
        Ok(Some(answer)) => assert!(!answer.is_empty()),
        Ok(None) | Err(_) => {}
    }
    // An empty datagram holds no answer.
    assert_eq!(decode_reply(&[], sequence), Ok(None));
});
