//! Signed adverts: round trip, signature checks, frame rules.

mod common;

use common::{chat, coord, key, node};
use nexus_registry::*;

fn live(i: u8, service: &str, version: u64) -> Advert {
    let mut sad = chat(service);
    sad.version = version;
    Advert {
        origin: node(i),
        service: service.into(),
        version,
        body: AdvertBody::Live {
            sad: sad.into(),
            coord: Some(coord(0.5, -0.25)),
            credentials: None,
        },
    }
}

#[test]
fn sign_verify_round_trip_live_and_withdrawn() {
    for advert in [
        live(1, "svc-a", 7),
        Advert {
            origin: node(1),
            service: "svc-a".into(),
            version: 8,
            body: AdvertBody::Withdrawn,
        },
    ] {
        let signed = advert.sign(&key(1)).expect("sign");
        let parsed = SignedAdvert::from_bytes(signed.to_bytes()).expect("parse");
        assert_eq!(parsed.origin(), node(1));
        assert_eq!(parsed.service(), "svc-a");
        assert_eq!(parsed.version(), advert.version);
        assert_eq!(parsed.verify().expect("verify"), advert);
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let signed = live(2, "svc-b", 3).sign(&key(2)).expect("sign");
    let bytes = signed.to_bytes();
    let mut by_signature = 0;
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = bytes.to_vec();
            tampered[i] ^= bit;
            let result = SignedAdvert::from_bytes(&tampered).and_then(|a| a.verify());
            match result {
                Err(AdvertError::Signature) => by_signature += 1,
                Err(_) => {}
                Ok(a) => panic!("byte {i} bit {bit:#x} flipped and still accepted: {a:?}"),
            }
        }
    }
    // Most flips (the SAD's numbers, the coordinate, the signature) parse fine and are caught by
    // the signature alone.
    assert!(
        by_signature > bytes.len(),
        "{by_signature} of {}",
        2 * bytes.len()
    );
}

#[test]
fn tampered_advert_is_rejected_by_the_registry() {
    let signed = live(2, "svc-b", 3).sign(&key(2)).expect("sign");
    let mut tampered = signed.to_bytes().to_vec();
    // The version field (offset 40) is covered by the signature; SAD version must agree, so
    // tamper the SAD's price instead: a byte in the middle of the frame.
    let at = tampered.len() / 2;
    tampered[at] ^= 0x10;
    let parsed = SignedAdvert::from_bytes(&tampered).expect("still well-formed");
    let mut registry = Registry::new(node(9));
    assert_eq!(registry.apply(ms(0), &parsed), Err(AdvertError::Signature));
    assert!(registry.is_empty());
    assert_eq!(registry.apply(ms(0), &signed), Ok(Applied::Inserted));
}

#[test]
fn another_nodes_key_cannot_sign_or_be_passed_off() {
    let advert = live(1, "svc-a", 1);
    assert_eq!(advert.sign(&key(2)).expect_err("wrong key").field, "origin");
    // Re-label node 2's advert as node 1's: the signature no longer matches.
    let signed = live(2, "svc-a", 1).sign(&key(2)).expect("sign");
    let mut bytes = signed.to_bytes().to_vec();
    bytes[8..40].copy_from_slice(&node(1).0);
    let relabelled = SignedAdvert::from_bytes(&bytes).expect("parse");
    assert_eq!(relabelled.verify(), Err(AdvertError::Signature));
}

#[test]
fn inconsistent_adverts_cannot_be_signed() {
    let mut a = live(1, "svc-a", 5);
    a.service = "other".into();
    assert_eq!(a.sign(&key(1)).expect_err("id").field, "id");
    let mut a = live(1, "svc-a", 5);
    a.version = 6;
    assert_eq!(a.sign(&key(1)).expect_err("version").field, "version");
    let mut a = live(1, "svc-a", 5);
    if let AdvertBody::Live { coord, .. } = &mut a.body {
        *coord = Some(Coord {
            error: f64::NAN,
            ..Coord::default()
        });
    }
    assert_eq!(a.sign(&key(1)).expect_err("coord").field, "coord");
    let w = Advert {
        origin: node(1),
        service: "Bad Name".into(),
        version: 1,
        body: AdvertBody::Withdrawn,
    };
    assert_eq!(w.sign(&key(1)).expect_err("service").field, "service");
}

#[test]
fn frame_errors_are_specific() {
    let signed = live(1, "svc-a", 1).sign(&key(1)).expect("sign");
    let bytes = signed.to_bytes();
    assert_eq!(
        SignedAdvert::from_bytes(&vec![0; ADVERT_BYTES_MAX + 1]),
        Err(AdvertError::TooLarge(ADVERT_BYTES_MAX + 1))
    );
    let mut b = bytes.to_vec();
    b[0] = 0;
    assert_eq!(SignedAdvert::from_bytes(&b), Err(AdvertError::Magic));
    let mut b = bytes.to_vec();
    b[4] = ADVERT_FORMAT_VERSION + 1;
    assert_eq!(
        SignedAdvert::from_bytes(&b),
        Err(AdvertError::UnsupportedFormat {
            found: ADVERT_FORMAT_VERSION + 1
        })
    );
    let mut b = bytes.to_vec();
    b[5] = 9;
    assert!(matches!(
        SignedAdvert::from_bytes(&b),
        Err(AdvertError::Kind(_))
    ));
    let mut b = bytes.to_vec();
    b[6] |= 0x40;
    assert!(matches!(
        SignedAdvert::from_bytes(&b),
        Err(AdvertError::Kind(_))
    ));
    for cut in [0, 10, ADVERT_HEADER_LEN, bytes.len() - 1] {
        assert!(
            SignedAdvert::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // The version in the header is also inside the SAD: changing one is an inconsistency.
    let mut b = bytes.to_vec();
    b[40] ^= 1;
    assert!(matches!(
        SignedAdvert::from_bytes(&b),
        Err(AdvertError::Inconsistent(_))
    ));
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
