//! `RegistryNode`: one node's registry as its actor and the simulator drive it — registration,
//! leases, versions across restarts, anti-entropy, storage failures, rejoin.

use std::net::SocketAddr;

use ed25519_dalek::SigningKey;
use nexus_registry::{
    Intent, LoadUpdate, MemoryStore, NodeError, Output, RegistryNode, RegistryStore, Sad,
    SignedAdvert, TAG_ADVERT, TAG_DIGEST_PUSH, TAG_DIGEST_REPLY,
};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn sad(id: &str, ttl_s: u32) -> Sad {
    Sad::from_json(
        format!(
            r#"{{"id":"{id}","tasks":["llm.code"],"context_window":131072,"latency_ms_p50":100,"latency_ms_p99":150,"ttl_s":{ttl_s}}}"#
        )
        .as_bytes(),
    )
    .expect("valid sad")
}

fn outputs<S: RegistryStore>(node: &mut RegistryNode<S>) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn broadcasts(out: &[Output]) -> Vec<SignedAdvert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(b) => Some(SignedAdvert::from_bytes(b).expect("advert")),
            _ => None,
        })
        .collect()
}

fn node(n: u8) -> RegistryNode<MemoryStore> {
    RegistryNode::new(ms(0), key(n), MemoryStore::default(), 0, Vec::new()).expect("node")
}

#[test]
fn register_renew_and_deregister_broadcast_signed_versions() {
    let mut a = node(1);
    assert!(a.register(ms(0), sad("svc", 30)).expect("register"));
    let first = broadcasts(&outputs(&mut a));
    assert_eq!(first.len(), 1);
    let v1 = first[0].version();
    assert!(first[0].verify().is_ok());
    assert_eq!(
        a.store().services.len(),
        1,
        "persisted before it is advertised"
    );

    // Same id again: a renewal, not a new service, with a higher version.
    assert!(!a.register(ms(10), sad("svc", 30)).expect("renew"));
    let second = broadcasts(&outputs(&mut a));
    assert!(second[0].version() > v1);

    a.deregister(ms(20), "svc").expect("deregister");
    let third = broadcasts(&outputs(&mut a));
    assert!(third[0].is_withdrawal());
    assert!(third[0].version() > second[0].version());
    assert!(a.store().services.is_empty());
    assert!(matches!(
        a.deregister(ms(21), "svc"),
        Err(NodeError::Unknown(_))
    ));
    // Registering the id again outranks the tombstone everywhere.
    a.register(ms(30), sad("svc", 30)).expect("again");
    let fourth = broadcasts(&outputs(&mut a));
    assert!(fourth[0].version() > third[0].version());
}

#[test]
fn other_nodes_apply_adverts_and_withdrawals() {
    let (mut a, mut b) = (node(1), node(2));
    a.register(ms(0), sad("svc", 30)).expect("register");
    for o in outputs(&mut a) {
        if let Output::Broadcast(bytes) = o {
            b.on_delivered(ms(0), &bytes);
        }
    }
    let intent = Intent::from_json(br#"{"task":"llm.code"}"#).expect("intent");
    let r = b.resolve(ms(1), &intent);
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(r.candidates[0].node, a.node_id());
    assert_eq!(b.take_report().applied, 1);
    // A tampered advert is rejected and counted.
    a.patch_load(
        ms(5),
        "svc",
        &LoadUpdate {
            queue_depth: Some(3),
            utilization_pct: Some(40),
            latency_ms_p50: None,
            latency_ms_p99: None,
        },
    )
    .expect("load");
    let Some(Output::Broadcast(mut bytes)) = a.poll_output() else {
        panic!("load update is broadcast");
    };
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    b.on_delivered(ms(6), &bytes);
    assert_eq!(b.take_report().rejected, 1);
    // Membership says a is down: its service is gone from b's answers.
    b.on_member_down(ms(7), a.node_id());
    assert!(b.resolve(ms(8), &intent).candidates.is_empty());
}

#[test]
fn unrenewed_leases_expire_and_are_withdrawn() {
    let mut a = node(1);
    a.register(ms(0), sad("short", 5)).expect("register");
    outputs(&mut a);
    // Re-published every ttl/3 while the lease runs...
    a.refresh(ms(2_000));
    assert_eq!(broadcasts(&outputs(&mut a)).len(), 1);
    // ...and withdrawn once it ends.
    a.refresh(ms(5_000));
    let out = broadcasts(&outputs(&mut a));
    assert!(out.iter().any(SignedAdvert::is_withdrawal), "{out:?}");
    assert!(a.local_services().is_empty());
    assert!(a.store().services.is_empty());
    assert_eq!(a.take_report().leases_expired, 1);
}

#[test]
fn a_restarted_node_restores_and_outranks_its_old_adverts() {
    let mut a = node(1);
    a.register(ms(0), sad("svc", 30)).expect("register");
    let old = broadcasts(&outputs(&mut a))[0].version();
    let store = a.store().clone();
    // Restart from what was stored: services come back re-advertised with higher versions.
    let mut again = RegistryNode::new(
        ms(0),
        key(1),
        store.clone(),
        store.version_floor,
        store.services.clone(),
    )
    .expect("restart");
    let restored = broadcasts(&outputs(&mut again));
    assert_eq!(restored.len(), 1);
    assert!(
        restored[0].version() > old,
        "{} > {old}",
        restored[0].version()
    );
    assert_eq!(again.local_services().len(), 1);
}

#[test]
fn digest_exchange_repairs_a_missed_advert() {
    let (mut a, mut b) = (node(1), node(2));
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    a.register(ms(0), sad("svc", 30)).expect("register");
    outputs(&mut a); // The broadcast is lost.
    b.anti_entropy();
    let push: Vec<Vec<u8>> = outputs(&mut b)
        .into_iter()
        .filter_map(|o| match o {
            Output::DirectToRandomNeighbor(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(!push.is_empty() && push.iter().all(|p| p[0] == TAG_DIGEST_PUSH));
    for p in &push {
        a.on_direct(ms(1), peer, p);
    }
    let answers = outputs(&mut a);
    assert!(
        answers
            .iter()
            .any(|o| matches!(o, Output::Direct(_, p) if p[0] == TAG_ADVERT))
    );
    assert!(
        answers
            .iter()
            .any(|o| matches!(o, Output::Direct(_, p) if p[0] == TAG_DIGEST_REPLY))
    );
    for o in answers {
        if let Output::Direct(_, p) = o {
            b.on_direct(ms(2), peer, &p);
        }
    }
    assert_eq!(b.registry().len(), 1, "b learned a's service");
    assert_eq!(a.take_report().repaired, 1);
    // Garbage is counted, not applied.
    b.on_direct(ms(3), peer, &[]);
    b.on_direct(ms(3), peer, &[0x7f, 1, 2]);
    b.on_direct(ms(3), peer, &[TAG_DIGEST_PUSH, 1, 2, 3]);
    assert_eq!(b.take_report().rejected, 3);
}

#[derive(Default)]
struct FailingStore {
    fail: bool,
    inner: MemoryStore,
}

impl RegistryStore for FailingStore {
    fn put_service(&mut self, sad: &Sad) -> Result<(), String> {
        if self.fail {
            return Err("disk full".into());
        }
        self.inner.put_service(sad)
    }

    fn delete_service(&mut self, id: &str) -> Result<(), String> {
        if self.fail {
            return Err("disk full".into());
        }
        self.inner.delete_service(id)
    }

    fn save_version_floor(&mut self, floor: u64) -> Result<(), String> {
        self.inner.save_version_floor(floor)
    }
}

#[test]
fn a_failed_write_changes_nothing() {
    let store = FailingStore {
        fail: true,
        ..FailingStore::default()
    };
    let mut a = RegistryNode::new(ms(0), key(1), store, 0, Vec::new()).expect("node");
    assert!(matches!(
        a.register(ms(0), sad("svc", 30)),
        Err(NodeError::Storage(_))
    ));
    assert!(a.local_services().is_empty());
    assert_eq!(a.registry().len(), 0);
    assert!(outputs(&mut a).is_empty(), "nothing advertised");
}

#[test]
fn rejoining_republishes_at_once() {
    let mut a = node(1);
    a.register(ms(0), sad("svc", 300)).expect("register");
    let v = broadcasts(&outputs(&mut a))[0].version();
    a.refresh(ms(1_000));
    assert!(outputs(&mut a).is_empty(), "not due for 100 s");
    a.on_rejoined(ms(1_000));
    let out = broadcasts(&outputs(&mut a));
    assert_eq!(out.len(), 1);
    assert!(out[0].version() > v);
}

/// Registry time `ms` milliseconds after the epoch.
fn ms(ms: u64) -> nexus_registry::Timestamp {
    nexus_registry::Timestamp::from_millis(ms)
}
