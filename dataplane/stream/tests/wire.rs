//! NexStream's decoders on seeded random and mutated inputs: the properties of the fuzz target
//! (`fuzz/fuzz_targets/wire.rs`) on every `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::Ca;
use nexus_dataplane::wire::nexlink::NodeTag;
use nexus_stream::Mode;
use nexus_stream::link::{self, LinkAddress};
use nexus_stream::wire::{DatagramHeader, Hello, StreamHeader, check_decoders};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn valid_inputs() -> Vec<Vec<u8>> {
    let mut ca = Ca::new(4);
    let creds = ca.issue([7; 32]);
    let mut out = vec![
        Hello { credentials: None }.encode(),
        Hello {
            credentials: Some(creds),
        }
        .encode(),
        StreamHeader::Flow.encode(),
        StreamHeader::Message { len: 99 }.encode(),
        StreamHeader::BestEffort {
            expires_ms: 5,
            len: 1 << 20,
        }
        .encode(),
    ];
    for mode in [Mode::BestEffort, Mode::Probabilistic] {
        let mut d = Vec::new();
        DatagramHeader {
            mode,
            flow: 3,
            seq: 44,
            expires_ms: 9,
        }
        .write(&mut d);
        d.extend_from_slice(b"payload");
        out.push(d);
    }
    let mut frame = Vec::new();
    link::encapsulate(
        &LinkAddress {
            routing_key: link::session_key(NodeTag(5)),
            src: NodeTag(1),
            dst: NodeTag(5),
            session: 2,
        },
        7,
        &[0xc0; 1200],
        &mut frame,
    )
    .unwrap();
    out.push(frame);
    out
}

fn check(data: &[u8]) {
    check_decoders(data);
    if let Ok((repr, quic)) = link::decapsulate(data) {
        assert_eq!(usize::from(repr.payload_len), quic.len());
    }
}

#[test]
fn valid_encodings_decode_and_re_encode() {
    for v in valid_inputs() {
        check(&v);
    }
    // And they do decode (the properties above would hold vacuously otherwise).
    let v = valid_inputs();
    assert!(Hello::decode(&v[1]).unwrap().credentials.is_some());
    assert!(DatagramHeader::decode(&v[6]).is_ok());
    assert!(link::decapsulate(&v[7]).is_ok());
}

#[test]
fn mutated_and_random_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let valid = valid_inputs();
    let mut decoded = 0usize;
    for round in 0..20_000 {
        let mut data = if round % 4 == 0 {
            let len = rng.random_range(0..300);
            (0..len).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            valid[rng.random_range(0..valid.len())].clone()
        };
        for _ in 0..rng.random_range(1..4) {
            if data.is_empty() {
                break;
            }
            match rng.random_range(0..3) {
                0 => {
                    let i = rng.random_range(0..data.len());
                    data[i] ^= 1 << rng.random_range(0..8);
                }
                1 => {
                    let cut = rng.random_range(0..data.len());
                    data.truncate(cut);
                }
                _ => data.push(rng.random()),
            }
        }
        check(&data);
        decoded +=
            usize::from(Hello::decode(&data).is_ok() || DatagramHeader::decode(&data).is_ok());
    }
    // Mutations keep some inputs decodable, so the re-encoding property was exercised.
    assert!(decoded > 100, "{decoded}");
}
