//! Seeded mutation testing of the three decoders (SAD, signed advert, digest), run on every
//! `cargo test`: valid encodings are bit-flipped, overwritten, truncated, extended and spliced.
//! Each decoder must return an error or a value that satisfies its own rules, never panic, and
//! a registry fed the mutated adverts must keep its invariants. (Coverage-guided fuzzing of the
//! same entry points: registry/fuzz.)

mod common;

use common::{chat, coord, key, maximal_sad, node};
use nexus_gossip::testkit::{self, Mutations};
use nexus_registry::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The datagram mutator, up to three edits per encoding.
fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let how = Mutations {
        edits_max: 3,
        keep_prefix: None,
    };
    testkit::mutate(rng, corpus, how)
}

fn sads() -> Vec<Sad> {
    let mut a = chat("a");
    a.arch_hash = Some([3; 32]);
    a.trust.mic_serial = Some(5);
    a.trust.attestations = vec!["att:1".into()];
    vec![a, Sad::new("b", "embedding"), maximal_sad()]
}

#[test]
fn mutated_sads_are_refused_or_valid() {
    let corpus: Vec<Vec<u8>> = sads().iter().map(|s| s.encode().expect("encode")).collect();
    let mut rng = StdRng::seed_from_u64(0x5ad);
    let mut refused = 0;
    for _ in 0..20_000 {
        let d = mutate(&mut rng, &corpus);
        match Sad::decode(&d) {
            Ok(sad) => {
                sad.validate().expect("decode validates");
                let again = sad.encode().expect("a decoded SAD re-encodes");
                assert_eq!(Sad::decode(&again).expect("round trip"), sad);
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 15_000,
        "mutations reach the error paths ({refused})"
    );
}

#[test]
fn mutated_adverts_never_panic_and_leave_the_registry_consistent() {
    let mut corpus = Vec::new();
    for (i, sad) in sads().into_iter().enumerate() {
        let i = i as u8 + 1;
        let mut sad = sad;
        sad.version = 3;
        let live = Advert {
            origin: node(i),
            service: sad.id.clone(),
            version: 3,
            body: AdvertBody::Live {
                sad: sad.clone().into(),
                coord: Some(coord(0.5, 0.25)),
                credentials: None,
            },
        };
        corpus.push(live.sign(&key(i)).expect("sign").to_bytes().to_vec());
        let gone = Advert {
            version: 4,
            body: AdvertBody::Withdrawn,
            ..live
        };
        corpus.push(gone.sign(&key(i)).expect("sign").to_bytes().to_vec());
    }
    let mut rng = StdRng::seed_from_u64(0xad);
    let mut registry = Registry::new(node(0));
    let (mut refused, mut bad_signature) = (0, 0);
    for n in 0..20_000u64 {
        let d = mutate(&mut rng, &corpus);
        match SignedAdvert::from_bytes(&d) {
            Ok(parsed) => {
                assert!(parsed.to_bytes().len() <= ADVERT_BYTES_MAX);
                match registry.apply(ms(n), &parsed) {
                    Err(AdvertError::Signature | AdvertError::OriginKey) => bad_signature += 1,
                    Err(e) => panic!("unexpected {e}"),
                    Ok(_) => {
                        // Only an unmutated advert (or an identical splice) verifies.
                        assert!(corpus.contains(&d), "a mutated advert verified");
                    }
                }
            }
            Err(_) => refused += 1,
        }
        if n % 1000 == 0 {
            registry.expire(ms(n));
            registry.check_invariants();
        }
    }
    registry.check_invariants();
    assert!(refused > 10_000, "{refused} refused by the parser");
    assert!(
        bad_signature > 500,
        "{bad_signature} refused by the signature"
    );
    // Still works: the originals apply.
    let fresh = SignedAdvert::from_bytes(&corpus[0]).expect("parse");
    assert!(registry.apply(ms(0), &fresh).is_ok());
}

#[test]
fn mutated_digests_are_refused_or_canonical() {
    let mut r = Registry::new(node(0));
    for i in 1..=30u8 {
        let mut sad = chat("s");
        sad.version = u64::from(i);
        let a = Advert {
            origin: node(i),
            service: "s".into(),
            version: u64::from(i),
            body: AdvertBody::Live {
                sad: sad.into(),
                coord: None,
                credentials: None,
            },
        };
        r.apply(ms(0), &a.sign(&key(i)).expect("sign"))
            .expect("apply");
    }
    let corpus: Vec<Vec<u8>> = std::iter::once(r.digest())
        .chain(r.digest().split(7))
        .map(|d| d.to_bytes())
        .collect();
    let mut rng = StdRng::seed_from_u64(0xd16);
    let mut refused = 0;
    let other = Registry::new(node(99));
    for _ in 0..20_000 {
        let d = mutate(&mut rng, &corpus);
        match Digest::from_bytes(&d) {
            Ok(digest) => {
                assert_eq!(digest.to_bytes(), d, "decoding is canonical");
                let diff = other.differing(&digest);
                assert!(diff.len() <= digest.origins.len());
                assert!(diff.windows(2).all(|w| w[0] < w[1]));
            }
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 10_000, "{refused}");
    assert!(matches!(
        Digest::from_bytes(&vec![0; DIGEST_BYTES_MAX + 1]),
        Err(DigestError::TooLarge(_))
    ));
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
