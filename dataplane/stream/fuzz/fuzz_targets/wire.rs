//! Every NexStream decoder on arbitrary bytes: the `Hello`, stream headers (both stream
//! directions), datagram headers and the NexLink `Transport` carriage. None may panic; what
//! decodes must re-encode to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_stream::link;
use nexus_stream::wire::{DatagramHeader, Hello, StreamHeader};

fuzz_target!(|data: &[u8]| {
    nexus_stream::wire::check_decoders(data);
    if let Ok((repr, quic)) = link::decapsulate(data) {
        assert!(quic.len() <= data.len());
        assert_eq!(usize::from(repr.payload_len), quic.len());
    }
    // Decoders on their own, too, so a failure names the one that broke.
    let _ = Hello::frame_len(data);
    let _ = Hello::decode(data);
    let _ = StreamHeader::decode_prefix(data, true);
    let _ = StreamHeader::decode_prefix(data, false);
    let _ = DatagramHeader::decode(data);
});
