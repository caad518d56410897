//! Any bytes as a NexLink frame: `Packet::new_checked` and `Repr::parse` return an error or
//! accept them, never panic; whatever parses re-emits to the same 64 header bytes, and the
//! forwarding updates (hop limit, ECN, routing-key rewrite) keep the checksum equal to a full
//! recomputation.
//!
//! Each input runs twice: as received (mostly refused by the checksum) and with its checksum
//! fixed, so that the semantic checks behind the checksum are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_dataplane::wire::nexlink::{Error, HEADER_LEN, Packet, Repr, RoutingKey};

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        Packet::new_unchecked(&mut fixed[..]).fill_checksum();
        check(&fixed);
    }
});

fn check(frame: &[u8]) {
    let checked = Packet::new_checked(frame);
    let parsed = Repr::parse(&Packet::new_unchecked(frame));
    match parsed {
        Ok(repr) => {
            let packet = checked.expect("what parses passes the structural checks");
            assert_eq!(packet.payload().len(), usize::from(repr.payload_len));

            let mut header = [0u8; HEADER_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut header[..]))
                .expect("a parsed repr emits");
            assert_eq!(header[..], frame[..HEADER_LEN], "re-emitted header differs");

            let mut forwarded = frame.to_vec();
            let mut view = Packet::new_unchecked(&mut forwarded[..]);
            match view.decrement_hop_limit() {
                Ok(_) => assert!(view.verify_checksum(), "incremental hop-limit update"),
                Err(err) => assert_eq!(err, Error::HopLimitExceeded),
            }
            view.mark_congestion_experienced();
            assert!(view.verify_checksum(), "incremental ECN update");

            // A key derived from the frame, so the fuzzer steers which words change.
            let key = RoutingKey(repr.routing_key.0.rotate_left(17) ^ u128::from(frame[4]));
            let mut recomputed = forwarded.clone();
            let mut full = Packet::new_unchecked(&mut recomputed[..]);
            full.set_routing_key(key);
            full.fill_checksum();
            let mut view = Packet::new_unchecked(&mut forwarded[..]);
            view.rewrite_routing_key(key);
            assert_eq!(forwarded, recomputed, "incremental routing-key rewrite");
        }
        Err(err) => {
            assert!(Error::REASONS.contains(&err.reason()));
            // The structural checks are the first four steps of parse.
            if let Err(structural) = checked {
                assert_eq!(structural, err);
            }
        }
    }
}
