//! Credentials in adverts, verified inline against a real CA: a `CaState` bootstrapped in-process
//! with a seeded key issues MICs, seeded Groth16 keys prove attestations, and registry nodes must
//! accept, filter, explain and drop services exactly as their credentials deserve.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::{Arc, OnceLock};

use ed25519_dalek::SigningKey;
use nexus_registry::{
    ADVERT_BYTES_MAX, ADVERT_FLAG_CREDENTIALS, Advert, AdvertBody, AdvertError, Attested, Intent,
    MemoryStore, NodeError, Output, RegistryNode, RegistryStore, Resolution, ResolveContext, Sad,
    ServiceKey, SignedAdvert, TrustVerdict, node_id_of,
};
use nexus_trust_core::ca::{CaState, Command, Response, VALIDITY_MS_MIN};
use nexus_trust_core::mic::Mic;
use nexus_trust_core::revocation::RevocationReason;
use nexus_trust_core::testkit;
use nexus_trust_core::verify::{Credentials, TrustReject, TrustUpdate};
use nexus_trust_core::zk::{Attestation, Opening, ProvingKey};

/// Unix time (ms) of registry time 0 in these tests.
const EPOCH_MS: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

/// Serials, in issue order.
const ACME: u64 = 1; // score 870, safety passed; proves "≥ 800 ∧ safety"
const BETA: u64 = 2; // score 700, safety failed; proves "≥ 650"
const PLAIN: u64 = 3; // acme, no commitment, no attestations
const SHORT: u64 = 4; // acme, valid one minute
const DOOMED: u64 = 5; // acme, revoked by the tests that need it

struct Fixture {
    ca: CaState,
    mics: Vec<Mic>,
    acme_att: Attestation,
    acme_weak: Attestation,
    beta_att: Attestation,
    wrong_key_att: Attestation,
}

fn opening(score: u16, safety: bool, seed: u64) -> Opening {
    testkit::opening(score, safety, 7, seed)
}

fn attest(pk: &ProvingKey, o: &Opening, min_score: u16, require_safety: bool) -> Attestation {
    testkit::attest(pk, o, min_score, require_safety, u64::from(min_score))
}

/// Keys, MICs and proofs: built once per test binary (setup and proving cost tens of ms each).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (keys, pk) = testkit::circuit_keys(21);
        let (_, other_pk) = testkit::circuit_keys(22);
        let mut ca = testkit::bootstrapped_ca(testkit::seeded_bootstrap(23, 3, keys));
        let o_acme = opening(870, true, 1);
        let o_beta = opening(700, false, 2);
        let request = |publisher: &str, o: Option<&Opening>, validity_ms| {
            testkit::model_request([9; 32], publisher, o, validity_ms)
        };
        let requests = vec![
            request("acme", Some(&o_acme), 30 * DAY_MS),
            request("beta", Some(&o_beta), 30 * DAY_MS),
            request("acme", None, 30 * DAY_MS),
            request("acme", Some(&o_acme), VALIDITY_MS_MIN),
            request("acme", Some(&o_acme), 30 * DAY_MS),
        ];
        let mics = testkit::issue(&mut ca, 2, EPOCH_MS, requests);
        assert_eq!(
            mics.iter().map(|m| m.body.serial).collect::<Vec<_>>(),
            vec![ACME, BETA, PLAIN, SHORT, DOOMED]
        );
        Fixture {
            acme_att: attest(&pk, &o_acme, 800, true),
            acme_weak: attest(&pk, &o_acme, 700, false),
            beta_att: attest(&pk, &o_beta, 650, false),
            wrong_key_att: attest(&other_pk, &o_acme, 800, true),
            ca,
            mics,
        }
    })
}

fn mic(serial: u64) -> Mic {
    fixture().mics[serial as usize - 1].clone()
}

fn creds(serial: u64, attestations: Vec<Attestation>) -> Credentials {
    Credentials {
        mic: mic(serial),
        attestations,
    }
}

fn acme() -> Credentials {
    creds(ACME, vec![fixture().acme_att])
}

fn beta() -> Credentials {
    creds(BETA, vec![fixture().beta_att])
}

fn revoked_ca(serial: u64) -> CaState {
    let mut ca = fixture().ca.clone();
    let index = ca.last_applied().unwrap() + 1;
    assert!(matches!(
        ca.apply(
            index,
            &Command::Revoke {
                now_ms: EPOCH_MS + 1_000,
                serial,
                reason: RevocationReason::KeyCompromise,
            },
        ),
        Response::Revoked(Ok(_))
    ));
    ca
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn sad(id: &str) -> Sad {
    Sad::from_json(
        format!(
            r#"{{"id":"{id}","tasks":["llm.chat"],"context_window":131072,"latency_ms_p50":100,"latency_ms_p99":150,"ttl_s":3600}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A node whose registry time 0 is `EPOCH_MS`, following the fixture's CA.
fn node(n: u8) -> RegistryNode<MemoryStore> {
    let mut node = RegistryNode::new(ms(0), key(n), MemoryStore::default(), 0, Vec::new()).unwrap();
    node.set_unix_epoch_ms(EPOCH_MS);
    let report = node.on_trust_update(ms(0), &TrustUpdate::from_ca_state(&fixture().ca, 0));
    assert!(report.keys_changed() && report.rejected_circuits.is_empty());
    node
}

fn broadcasts<S: RegistryStore>(node: &mut RegistryNode<S>) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::Broadcast(b) => Some(b),
            _ => None,
        })
        .collect()
}

/// An advert signed by node `origin` for `id` with these credentials (bypassing the origin's
/// own checks, as a misbehaving node could).
fn crafted(origin: u8, id: &str, version: u64, credentials: Option<Credentials>) -> Vec<u8> {
    let mut s = sad(id);
    s.version = version;
    s.trust.mic_serial = credentials.as_ref().map(|c| c.mic.body.serial);
    Advert {
        origin: node_id_of(&key(origin)),
        service: id.into(),
        version,
        body: AdvertBody::Live {
            sad: Arc::new(s),
            coord: None,
            credentials: credentials.map(Arc::new),
        },
    }
    .sign(&key(origin))
    .unwrap()
    .to_bytes()
    .to_vec()
}

fn names(r: &Resolution) -> Vec<String> {
    let mut v: Vec<String> = r.candidates.iter().map(|c| c.service.clone()).collect();
    v.sort();
    v
}

fn reason(r: &Resolution, service: &str) -> String {
    r.excluded
        .iter()
        .find(|e| e.service == service)
        .map(|e| e.reason.clone())
        .unwrap_or_else(|| panic!("{service} not excluded: {r:?}"))
}

fn intent(f: impl FnOnce(&mut Intent)) -> Intent {
    let mut i = Intent::new("llm.chat");
    i.k = 64;
    f(&mut i);
    i.validate().unwrap();
    i
}

/// Resolves with and without explain and against the reference definition; all must agree.
fn resolve(node: &mut RegistryNode<MemoryStore>, now: u64, i: &Intent) -> Resolution {
    let plain = node.resolve(ms(now), i);
    let mut explained = i.clone();
    explained.explain = true;
    let with_reasons = node.resolve(ms(now), &explained);
    assert_eq!(names(&plain), names(&with_reasons), "{}", i.canonical());
    let ctx = ResolveContext {
        now: ms(now),
        local_coord: Some(node.coordinate()),
        trust: Some(node.trust()),
    };
    let reference = node.registry().resolve_reference(&explained, &ctx);
    assert_eq!(names(&reference), names(&with_reasons), "{}", i.canonical());
    assert_eq!(
        reference.excluded,
        with_reasons.excluded,
        "{}",
        i.canonical()
    );
    with_reasons
}

/// Node 1 holds a mix of services from node 2 (each with the credentials its name says).
fn mixed() -> RegistryNode<MemoryStore> {
    let f = fixture();
    let mut b = node(1);
    let mut forged = mic(ACME);
    forged = forged.body.sign(&key(66));
    let mut tampered = mic(ACME);
    tampered.body.publisher = "acme-premium".into();
    let adverts = [
        crafted(2, "plain", 1, None),
        crafted(2, "acme", 1, Some(acme())),
        crafted(2, "acme-bare", 1, Some(creds(PLAIN, vec![]))),
        crafted(2, "beta", 1, Some(beta())),
        crafted(
            2,
            "forged",
            1,
            Some(Credentials {
                mic: forged,
                attestations: vec![f.acme_att],
            }),
        ),
        crafted(
            2,
            "tampered",
            1,
            Some(Credentials {
                mic: tampered,
                attestations: vec![],
            }),
        ),
        crafted(2, "wrong-key", 1, Some(creds(ACME, vec![f.wrong_key_att]))),
        crafted(2, "short", 1, Some(creds(SHORT, vec![f.acme_att]))),
    ];
    for a in &adverts {
        b.on_delivered(ms(10), a);
    }
    b
}

#[test]
fn delivered_credentials_wait_for_one_batch_then_filter_resolves() {
    let mut b = mixed();
    // Applied at once (the CRDT does not wait), but not resolvable before verification.
    assert_eq!(b.registry().len(), 8);
    assert_eq!(b.registry().pending_len(), 7);
    let before = b.resolve_untracked(ms(10), &intent(|i| i.explain = true));
    assert_eq!(names(&before), vec!["plain"]);
    assert_eq!(reason(&before, "acme"), "credentials not verified yet");
    // One flush verifies all seven.
    assert_eq!(b.flush_trust(ms(20)), 7);
    assert_eq!(b.registry().pending_len(), 0);
    let report = b.take_report();
    assert_eq!((report.trust_verified, report.trust_rejected), (4, 3));
    assert_eq!(b.flush_trust(ms(20)), 0, "nothing left to verify");

    let all = resolve(&mut b, 30, &intent(|_| {}));
    assert_eq!(
        names(&all),
        vec!["acme", "acme-bare", "beta", "plain", "short"]
    );
    let forged = reason(&all, "forged");
    assert!(
        forged.starts_with("credentials rejected: MIC 1: signature does not verify"),
        "{forged}"
    );
    assert!(reason(&all, "tampered").contains("signature does not verify"));
    let wrong = reason(&all, "wrong-key");
    assert!(
        wrong.starts_with("credentials rejected: attestation proof invalid"),
        "{wrong}"
    );

    let with_mic = resolve(&mut b, 30, &intent(|i| i.require_mic = true));
    assert_eq!(names(&with_mic), vec!["acme", "acme-bare", "beta", "short"]);
    assert_eq!(
        reason(&with_mic, "plain"),
        "no verified MIC (the advert carries no credentials)"
    );

    let acme_only = resolve(&mut b, 30, &intent(|i| i.publishers = vec!["acme".into()]));
    assert_eq!(names(&acme_only), vec!["acme", "acme-bare", "short"]);
    assert_eq!(
        reason(&acme_only, "beta"),
        r#"publisher "beta" (MIC 2) not in ["acme"]"#
    );
    let either = resolve(
        &mut b,
        30,
        &intent(|i| i.publishers = vec!["beta".into(), "nobody".into()]),
    );
    assert_eq!(names(&either), vec!["beta"]);

    let strong = resolve(
        &mut b,
        30,
        &intent(|i| {
            i.attested = Some(Attested {
                min_score: 800,
                require_safety: true,
            })
        }),
    );
    assert_eq!(names(&strong), vec!["acme", "short"]);
    assert_eq!(
        reason(&strong, "beta"),
        "no attestation proves score >= 800 and safety passed (MIC 2 proves: score >= 650)"
    );
    assert_eq!(
        reason(&strong, "acme-bare"),
        "no attestation proves score >= 800 and safety passed (MIC 3 has none)"
    );
    let weaker = resolve(
        &mut b,
        30,
        &intent(|i| {
            i.attested = Some(Attested {
                min_score: 650,
                require_safety: false,
            })
        }),
    );
    assert_eq!(names(&weaker), vec!["acme", "beta", "short"]);
    // Stronger than anything proven.
    let none = resolve(
        &mut b,
        30,
        &intent(|i| {
            i.attested = Some(Attested {
                min_score: 801,
                require_safety: false,
            })
        }),
    );
    assert!(none.candidates.is_empty());
    // The explained candidate says why it qualified.
    let why = strong
        .candidates
        .iter()
        .find(|c| c.service == "acme")
        .unwrap()
        .why
        .join("; ");
    assert!(why.contains("MIC 1 verified (publisher \"acme\""), "{why}");
    assert!(
        why.contains("attested score >= 800 and safety passed"),
        "{why}"
    );
}

#[test]
fn expiry_is_checked_at_resolve_time() {
    let mut b = mixed();
    b.flush_trust(ms(20));
    let not_after = mic(SHORT).body.not_after_ms - EPOCH_MS;
    let at_end = resolve(&mut b, not_after, &intent(|i| i.require_mic = true));
    assert!(
        names(&at_end).contains(&"short".to_string()),
        "valid through not_after"
    );
    let after = resolve(&mut b, not_after + 1, &intent(|i| i.require_mic = true));
    assert!(!names(&after).contains(&"short".to_string()));
    let r = reason(&after, "short");
    assert!(r.starts_with("MIC 4 expired at"), "{r}");
    // Intents without trust constraints drop it too: expired credentials are worse than none.
    let plain = resolve(&mut b, not_after + 1, &intent(|_| {}));
    assert!(!names(&plain).contains(&"short".to_string()));
}

#[test]
fn a_revoked_serial_is_rejected_on_delivery_and_dropped_on_a_later_update() {
    // Dropped on a later update, with a route delta.
    let mut b = node(1);
    b.on_delivered(
        ms(10),
        &crafted(2, "doomed", 1, Some(creds(DOOMED, vec![]))),
    );
    b.on_delivered(ms(10), &crafted(2, "acme", 1, Some(acme())));
    b.flush_trust(ms(10));
    let class = intent(|i| i.publishers = vec!["acme".into()]);
    assert_eq!(names(&resolve(&mut b, 20, &class)), vec!["acme", "doomed"]);
    let (v1, routes) = b.routes();
    let hops: Vec<String> = routes[0].hops.iter().map(|h| h.service.clone()).collect();
    assert_eq!(routes.len(), 1);
    assert!(hops.contains(&"doomed".to_string()), "{hops:?}");

    let ca = revoked_ca(DOOMED);
    let report = b.on_trust_update(ms(30), &TrustUpdate::from_ca_state(&ca, 0));
    assert_eq!(report.revoked, vec![DOOMED]);
    assert!(matches!(
        b.registry()
            .get(&ServiceKey::new(node_id_of(&key(2)), "doomed"))
            .unwrap()
            .trust(),
        TrustVerdict::Rejected(TrustReject::Revoked { serial: DOOMED, .. })
    ));
    let (v2, routes) = b.routes();
    assert!(v2 > v1, "a route delta was emitted");
    let hops: Vec<String> = routes[0].hops.iter().map(|h| h.service.clone()).collect();
    assert_eq!(hops, vec!["acme"]);
    let after = resolve(&mut b, 40, &class);
    assert_eq!(names(&after), vec!["acme"]);
    let r = reason(&after, "doomed");
    assert!(
        r.starts_with("credentials rejected: MIC 5 revoked at"),
        "{r}"
    );

    // Rejected on delivery at a node that already knows the revocation.
    let mut c = node(3);
    c.on_trust_update(ms(0), &TrustUpdate::from_ca_state(&ca, 0));
    c.on_delivered(
        ms(50),
        &crafted(2, "doomed", 1, Some(creds(DOOMED, vec![]))),
    );
    c.flush_trust(ms(50));
    let r = resolve(&mut c, 50, &intent(|_| {}));
    assert!(r.candidates.is_empty());
    assert!(reason(&r, "doomed").contains("MIC 5 revoked at"));
    // The advert is still held (the CRDT converges regardless of verdicts).
    assert_eq!(c.registry().len(), 1);
}

#[test]
fn revocation_is_rechecked_at_resolve_time_even_before_the_verdict_changes() {
    let mut b = mixed();
    b.flush_trust(ms(20));
    // Resolve against a context that knows the revocation while the registry's verdicts do not
    // (what a resolve sees between an update's arrival and its re-evaluation).
    let mut ctx_trust = nexus_trust_core::verify::TrustContext::new();
    ctx_trust.apply_update(&TrustUpdate::from_ca_state(&revoked_ca(ACME), 0), EPOCH_MS);
    let ctx = ResolveContext {
        now: ms(30),
        local_coord: None,
        trust: Some(&ctx_trust),
    };
    let r = b
        .registry()
        .resolve(&intent(|i| i.require_mic = true), &ctx);
    assert!(!names(&r).contains(&"acme".to_string()), "{:?}", names(&r));
    let mut explained = intent(|i| i.require_mic = true);
    explained.explain = true;
    let r = b.registry().resolve(&explained, &ctx);
    assert!(reason(&r, "acme").starts_with("MIC 1 revoked at"));
}

#[test]
fn unknown_ca_until_the_first_update_then_verified() {
    let mut b = RegistryNode::new(ms(0), key(1), MemoryStore::default(), 0, Vec::new()).unwrap();
    b.set_unix_epoch_ms(EPOCH_MS);
    b.on_delivered(ms(10), &crafted(2, "acme", 1, Some(acme())));
    b.flush_trust(ms(10));
    let entry_key = ServiceKey::new(node_id_of(&key(2)), "acme");
    assert!(matches!(
        b.registry().get(&entry_key).unwrap().trust(),
        TrustVerdict::Rejected(TrustReject::UnknownCaKey { .. })
    ));
    b.on_trust_update(ms(20), &TrustUpdate::from_ca_state(&fixture().ca, 0));
    assert!(matches!(
        b.registry().get(&entry_key).unwrap().trust(),
        TrustVerdict::Verified(v) if v.serial == ACME
    ));
}

#[test]
fn a_new_version_with_the_same_credentials_keeps_its_verdict() {
    let mut b = node(1);
    b.on_delivered(ms(10), &crafted(2, "acme", 1, Some(acme())));
    assert_eq!(b.flush_trust(ms(10)), 1);
    b.on_delivered(ms(20), &crafted(2, "acme", 2, Some(acme())));
    assert_eq!(
        b.registry().pending_len(),
        0,
        "same credentials: no re-verification"
    );
    assert_eq!(b.flush_trust(ms(20)), 0);
    // Different credentials: verified again (and here, rejected).
    let f = fixture();
    b.on_delivered(
        ms(30),
        &crafted(2, "acme", 3, Some(creds(ACME, vec![f.wrong_key_att]))),
    );
    assert_eq!(b.flush_trust(ms(30)), 1);
    let entry = b
        .registry()
        .get(&ServiceKey::new(node_id_of(&key(2)), "acme"))
        .unwrap();
    assert!(matches!(entry.trust(), TrustVerdict::Rejected(_)));
    // Dropping the credentials makes it an ordinary service again.
    b.on_delivered(ms(40), &crafted(2, "acme", 4, None));
    let entry = b
        .registry()
        .get(&ServiceKey::new(node_id_of(&key(2)), "acme"))
        .unwrap();
    assert_eq!(entry.trust(), &TrustVerdict::Unclaimed);
}

#[test]
fn register_checks_credentials_before_accepting_and_persists_them() {
    let mut a = node(2);
    // Forged: refused, nothing stored or sent.
    let forged = Credentials {
        mic: mic(ACME).body.sign(&key(66)),
        attestations: vec![],
    };
    let err = a
        .register_with_credentials(ms(10), sad("svc"), Some(forged))
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Trust(TrustReject::BadSignature { serial: ACME, .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("credentials rejected: MIC 1"),
        "{err}"
    );
    assert!(a.store().services.is_empty() && broadcasts(&mut a).is_empty());
    // A proof that does not verify.
    let bad = creds(ACME, vec![fixture().wrong_key_att]);
    assert!(matches!(
        a.register_with_credentials(ms(10), sad("svc"), Some(bad)),
        Err(NodeError::Trust(TrustReject::AttestationInvalid { .. }))
    ));
    // The SAD may not name another MIC.
    let mut other = sad("svc");
    other.trust.mic_serial = Some(BETA);
    let err = a
        .register_with_credentials(ms(10), other, Some(acme()))
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Invalid(e) if e.field == "trust.mic_serial"),
        "{err:?}"
    );
    // Genuine: accepted, mic_serial filled in, persisted with the credentials, advertised.
    assert!(
        a.register_with_credentials(ms(10), sad("svc"), Some(acme()))
            .unwrap()
    );
    let local = &a.local_services()["svc"];
    assert_eq!(local.sad.trust.mic_serial, Some(ACME));
    assert_eq!(local.credentials.as_deref(), Some(&acme()));
    assert_eq!(
        a.store().registrations(),
        vec![(local.sad.clone(), Some(acme()))]
    );
    let sent = broadcasts(&mut a);
    let advert = SignedAdvert::from_bytes(&sent[0]).unwrap();
    assert_eq!(advert.credentials().map(|c| c.as_ref()), Some(&acme()));
    assert_eq!(
        sent[0][6] & ADVERT_FLAG_CREDENTIALS,
        ADVERT_FLAG_CREDENTIALS
    );
    // The local record is verified, so the node resolves its own service under trust constraints.
    let r = resolve(&mut a, 20, &intent(|i| i.publishers = vec!["acme".into()]));
    assert_eq!(names(&r), vec!["svc"]);
    // Another node accepts what it was sent.
    let mut b = node(1);
    b.on_delivered(ms(20), &sent[0]);
    b.flush_trust(ms(20));
    assert_eq!(
        names(&resolve(&mut b, 20, &intent(|i| i.require_mic = true))),
        vec!["svc"]
    );
    // Load updates and re-publishes keep the credentials.
    a.patch_load(
        ms(30),
        "svc",
        &serde_json::from_str(r#"{"queue_depth":3}"#).unwrap(),
    )
    .unwrap();
    let sent = broadcasts(&mut a);
    assert_eq!(
        SignedAdvert::from_bytes(&sent[0])
            .unwrap()
            .credentials()
            .map(|c| c.mic.body.serial),
        Some(ACME)
    );
    // A registration without credentials replaces them.
    a.register(ms(40), sad("svc")).unwrap();
    assert!(a.store().credentials.is_empty());
    assert!(a.local_services()["svc"].credentials.is_none());
}

#[test]
fn a_node_without_ca_keys_refuses_credentials_and_a_store_without_support_fails_loudly() {
    let mut a = RegistryNode::new(ms(0), key(2), MemoryStore::default(), 0, Vec::new()).unwrap();
    a.set_unix_epoch_ms(EPOCH_MS);
    assert!(matches!(
        a.register_with_credentials(ms(10), sad("svc"), Some(acme())),
        Err(NodeError::Trust(TrustReject::UnknownCaKey { .. }))
    ));

    /// A store that only knows SADs.
    #[derive(Default)]
    struct SadOnly(Vec<String>);
    impl RegistryStore for SadOnly {
        fn put_service(&mut self, sad: &Sad) -> Result<(), String> {
            self.0.push(sad.id.clone());
            Ok(())
        }
        fn delete_service(&mut self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn save_version_floor(&mut self, _: u64) -> Result<(), String> {
            Ok(())
        }
    }
    let mut n = RegistryNode::new(ms(0), key(2), SadOnly::default(), 0, Vec::new()).unwrap();
    n.set_unix_epoch_ms(EPOCH_MS);
    n.on_trust_update(ms(0), &TrustUpdate::from_ca_state(&fixture().ca, 0));
    assert!(matches!(
        n.register_with_credentials(ms(10), sad("svc"), Some(acme())),
        Err(NodeError::Storage(_))
    ));
    assert!(n.local_services().is_empty());
    assert!(n.register(ms(10), sad("svc")).unwrap());
}

#[test]
fn a_restarted_node_advertises_its_stored_credentials_again() {
    let mut a = node(2);
    a.register_with_credentials(ms(10), sad("svc"), Some(acme()))
        .unwrap();
    let store = a.store().clone();
    let mut restarted = RegistryNode::restore(
        ms(0),
        key(2),
        store.clone(),
        store.version_floor,
        store.registrations(),
    )
    .unwrap();
    let sent = broadcasts(&mut restarted);
    assert_eq!(
        SignedAdvert::from_bytes(&sent[0])
            .unwrap()
            .credentials()
            .map(|c| c.as_ref()),
        Some(&acme())
    );
    // Its own verdict waits for the trust context, then verifies.
    restarted.set_unix_epoch_ms(EPOCH_MS);
    restarted.on_trust_update(ms(5), &TrustUpdate::from_ca_state(&fixture().ca, 0));
    assert_eq!(
        names(&resolve(
            &mut restarted,
            5,
            &intent(|i| i.require_mic = true)
        )),
        vec!["svc"]
    );
}

#[test]
fn credentials_in_the_advert_frame_are_bounded_and_strict() {
    let a = crafted(2, "acme", 1, Some(acme()));
    let parsed = SignedAdvert::from_bytes(&a).unwrap();
    assert_eq!(parsed.credentials().map(|c| c.as_ref()), Some(&acme()));
    assert!(parsed.verify().is_ok());
    // Every byte flipped: refused by the parser or by the signature.
    for i in 0..a.len() {
        let mut b = a.clone();
        b[i] ^= 0x01;
        let ok = SignedAdvert::from_bytes(&b).and_then(|s| s.verify());
        assert!(ok.is_err(), "byte {i} flipped still verifies");
    }
    // The credentials section: the frame is header | SAD len | SAD | cred len | cred | sig.
    let split = a.len() - 64;
    let cred_len = acme().encode().len();
    let len_at = split - cred_len - 2;
    assert_eq!(
        u16::from_le_bytes([a[len_at], a[len_at + 1]]) as usize,
        cred_len
    );
    let mut longer = a.clone();
    longer[len_at] = longer[len_at].wrapping_add(1);
    assert!(matches!(
        SignedAdvert::from_bytes(&longer),
        Err(AdvertError::Frame(_))
    ));
    let mut garbage = a.clone();
    garbage[len_at + 2] = 9; // credentials version
    let err = SignedAdvert::from_bytes(&garbage).unwrap_err();
    assert!(matches!(err, AdvertError::Credentials(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("advert credentials: credentials:"),
        "{err}"
    );
    // The flag without a section.
    let plain = crafted(2, "plain", 1, None);
    let mut flagged = plain.clone();
    flagged[6] |= ADVERT_FLAG_CREDENTIALS;
    assert!(SignedAdvert::from_bytes(&flagged).is_err());
    // SAD and credentials disagree on the MIC.
    let mut s = sad("x");
    s.version = 1;
    s.trust.mic_serial = Some(BETA);
    let advert = Advert {
        origin: node_id_of(&key(2)),
        service: "x".into(),
        version: 1,
        body: AdvertBody::Live {
            sad: Arc::new(s),
            coord: None,
            credentials: Some(Arc::new(acme())),
        },
    };
    let err = advert.sign(&key(2)).unwrap_err();
    assert_eq!(err.field, "trust.mic_serial");
    // Too much for one datagram: the error names the credentials.
    let f = fixture();
    let mut big = sad("big");
    big.version = 1;
    big.trust.mic_serial = Some(ACME);
    big.modalities = (0..6).map(|i| format!("modality-{i:0>7}")).collect();
    big.tasks = (0..8).map(|i| format!("task.{i:0>27}")).collect();
    let advert = Advert {
        origin: node_id_of(&key(2)),
        service: "big".into(),
        version: 1,
        body: AdvertBody::Live {
            sad: Arc::new(big),
            coord: None,
            credentials: Some(Arc::new(creds(
                ACME,
                vec![f.acme_att, f.acme_weak, f.acme_att, f.acme_weak],
            ))),
        },
    };
    let err = advert.sign(&key(2)).unwrap_err();
    assert_eq!(err.field, "credentials", "{err}");
    assert!(
        err.reason.contains(&format!("at most {ADVERT_BYTES_MAX}")),
        "{err}"
    );
}

#[test]
fn intent_trust_constraints_are_validated_and_in_the_canonical_form() {
    let i = Intent::from_json(
        br#"{"task":"llm.chat","publishers":["acme","beta"],"attested":{"min_score":800,"require_safety":true}}"#,
    )
    .unwrap();
    assert!(i.canonical().contains("|pub=acme,beta|att=800+safety|"));
    let reordered = Intent::from_json(
        br#"{"task":"llm.chat","publishers":["beta","acme","acme"],"attested":{"min_score":800,"require_safety":true}}"#,
    )
    .unwrap();
    assert_eq!(i.routing_key(), reordered.routing_key());
    let weaker = Intent::from_json(
        br#"{"task":"llm.chat","publishers":["acme","beta"],"attested":{"min_score":800}}"#,
    )
    .unwrap();
    assert_ne!(i.routing_key(), weaker.routing_key());
    for (json, field) in [
        (
            r#"{"task":"llm.chat","attested":{"min_score":1001}}"#,
            "attested.min_score",
        ),
        (r#"{"task":"llm.chat","publishers":[""]}"#, "publishers[0]"),
        (
            r#"{"task":"llm.chat","publishers":["a","b|c"]}"#,
            "publishers[1]",
        ),
        (
            r#"{"task":"llm.chat","publishers":["a,b"]}"#,
            "publishers[0]",
        ),
        (
            r#"{"task":"llm.chat","publishers":["1","2","3","4","5","6","7","8","9"]}"#,
            "publishers",
        ),
        (
            r#"{"task":"llm.chat","attested":{"min_score":1,"extra":true}}"#,
            "attested",
        ),
        (
            r#"{"task":"llm.chat","attested":{"min_score":-1}}"#,
            "attested.min_score",
        ),
    ] {
        let err = Intent::from_json(json.as_bytes()).unwrap_err();
        assert!(err.field.starts_with(field), "{json}: {err}");
    }
    let long = format!(
        r#"{{"task":"llm.chat","publishers":["{}"]}}"#,
        "p".repeat(65)
    );
    assert_eq!(
        Intent::from_json(long.as_bytes()).unwrap_err().field,
        "publishers[0]"
    );
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
