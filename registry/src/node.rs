//! [`RegistryNode`]: everything one node's registry does, sans-IO — local registrations with
//! leases, advert versions that survive restarts, the anti-entropy exchange, reactions to
//! membership, Vivaldi updates and the intent route table. The node's registry actor and the
//! simulator drive the same code: they feed it `(now, input)` and carry out its outputs (a
//! broadcast, a unicast to a peer, a unicast to a random overlay neighbour, a request for the
//! member list).
//!
//! Timers are the node's own (quinn-proto's shape): once [`RegistryNode::start_timers`] gave it
//! the periods, the driver wakes it at [`RegistryNode::poll_timeout`] and calls
//! [`RegistryNode::handle_timeout`], which runs the refresh (leases, expiry, routes) and the
//! anti-entropy round when each is due. After a refresh the node asks for the member list
//! ([`Output::ReadMembers`]); the driver hands it to [`RegistryNode::on_members`], which
//! withdraws the services of members shown down or left.
//!
//! Storage is injected ([`RegistryStore`]): the registrations and the version floor are written
//! through it *before* the advert that depends on them is emitted, and a failed write leaves the
//! node unchanged.
//!
//! Trust: the node keeps a [`TrustContext`] (fed by [`RegistryNode::on_trust_update`]). A local
//! registration's credentials are checked before it is accepted. Adverts received with
//! credentials are applied at once (the CRDT must not depend on local verdicts) but stay out of
//! every resolve until verified: [`RegistryNode::flush_trust`] verifies everything queued in one
//! batch — the driver calls it after a burst of inputs; `refresh`, `resolve` and trust updates
//! call it too. A verdict is kept per advert version and carried over to newer versions with the
//! same credentials, so re-publishes cost no proof verification. A trust update that brings
//! revocations (or changes keys) re-evaluates the held verdicts and recomputes the routes, so
//! route deltas drop revoked services.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_gossip::{MemberState, MemberView};
use nexus_trust_core::verify::{Credentials, TrustContext, TrustReject, TrustUpdate, UpdateReport};
use rand_08::SeedableRng;
use rand_08::rngs::StdRng;
use sha2::Digest as _;

use crate::advert::check_advert_fits;
use crate::trust::TrustVerdict;
use crate::{
    Applied, Coord, DIGEST_CHUNK_ORIGINS, Digest, Intent, LoadUpdate, NodeId, Registry, Resolution,
    ResolveContext, Route, RouteTable, Sad, SadError, ServiceKey, SignedAdvert, Timestamp, Vivaldi,
};

/// Versions reserved per storage write: the version counter is persisted as a floor this far
/// ahead, so signing adverts writes to storage once per this many.
pub const VERSION_BLOCK: u64 = 1024;
/// Services one node may register (the registry holds at most
/// [`crate::SERVICES_PER_NODE_MAX`] per origin).
pub const LOCAL_SERVICES_MAX: usize = crate::SERVICES_PER_NODE_MAX;
/// Adverts one anti-entropy answer sends at most.
pub const ANTI_ENTROPY_ADVERTS_MAX: usize = 256;
/// Credentials verified in one batch by [`RegistryNode::flush_trust`] (it runs batches until
/// nothing is pending).
pub const TRUST_BATCH_MAX: usize = 256;
/// Domain tag of the batch-verification RNG seed derived from the node key.
const TRUST_SEED_DOMAIN: &[u8] = b"nexus-registry/trust-batch-rng/v1\0";
/// Domain tag of the timer phases derived from the node key.
const TIMER_SEED_DOMAIN: &[u8] = b"nexus-registry/timer-phase/v1\0";

/// First byte of an anti-entropy unicast: a digest that wants the receiver's digest back.
pub const TAG_DIGEST_PUSH: u8 = 0x01;
/// First byte of an anti-entropy unicast: the answer digest.
pub const TAG_DIGEST_REPLY: u8 = 0x02;
/// First byte of an anti-entropy unicast: one signed advert.
pub const TAG_ADVERT: u8 = 0x03;

/// Durable storage for one node's registry: one record per registration (so registering costs
/// one small write however many services the node holds) and the version floor. Each call is
/// durable when it returns `Ok`.
pub trait RegistryStore {
    /// Stores (or replaces) the registration `sad.id`.
    fn put_service(&mut self, sad: &Sad) -> Result<(), String>;
    /// Removes the registration `id` (absent is not an error).
    fn delete_service(&mut self, id: &str) -> Result<(), String>;
    /// Stores the version floor (every version below it may have been used).
    fn save_version_floor(&mut self, floor: u64) -> Result<(), String>;
    /// Stores (or replaces) the registration `sad.id` together with its credentials, in one
    /// durable write (`None`: no credentials; any stored before are dropped). The default
    /// handles `None` with [`RegistryStore::put_service`] and refuses credentials, so a store that
    /// cannot keep them fails the registration instead of losing them at the next restart.
    fn put_service_with_credentials(
        &mut self,
        sad: &Sad,
        credentials: Option<&Credentials>,
    ) -> Result<(), String> {
        match credentials {
            None => self.put_service(sad),
            Some(_) => Err("this store cannot persist credentials".into()),
        }
    }
}

/// An in-memory [`RegistryStore`] (tests and the simulator, whose "disks" survive crashes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryStore {
    /// The stored registrations, by id.
    pub services: Vec<Sad>,
    /// The stored version floor.
    pub version_floor: u64,
    /// Encoded credentials of the registrations that have them, by id.
    pub credentials: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// The stored registrations with their credentials, for [`RegistryNode::restore`].
    /// Credentials that no longer decode are dropped (the service restarts without them).
    pub fn registrations(&self) -> Vec<(Sad, Option<Credentials>)> {
        self.services
            .iter()
            .map(|sad| {
                let creds = self
                    .credentials
                    .get(&sad.id)
                    .and_then(|b| Credentials::decode(b).ok());
                (sad.clone(), creds)
            })
            .collect()
    }
}

impl RegistryStore for MemoryStore {
    fn put_service(&mut self, sad: &Sad) -> Result<(), String> {
        self.put_service_with_credentials(sad, None)
    }

    fn put_service_with_credentials(
        &mut self,
        sad: &Sad,
        credentials: Option<&Credentials>,
    ) -> Result<(), String> {
        match self.services.binary_search_by(|s| s.id.cmp(&sad.id)) {
            Ok(i) => self.services[i] = sad.clone(),
            Err(i) => self.services.insert(i, sad.clone()),
        }
        match credentials {
            Some(c) => self.credentials.insert(sad.id.clone(), c.encode()),
            None => self.credentials.remove(&sad.id),
        };
        Ok(())
    }

    fn delete_service(&mut self, id: &str) -> Result<(), String> {
        if let Ok(i) = self.services.binary_search_by(|s| s.id.as_str().cmp(id)) {
            self.services.remove(i);
        }
        self.credentials.remove(id);
        Ok(())
    }

    fn save_version_floor(&mut self, floor: u64) -> Result<(), String> {
        self.version_floor = floor;
        Ok(())
    }
}

/// What a node's registry asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Broadcast a signed advert to every node (overlay).
    Broadcast(Vec<u8>),
    /// Send an anti-entropy message to this peer (overlay unicast).
    Direct(SocketAddr, Vec<u8>),
    /// Send an anti-entropy message to one random overlay neighbour.
    DirectToRandomNeighbor(Vec<u8>),
    /// Read the member list from membership and hand it to [`RegistryNode::on_members`] (asked
    /// after every refresh; if membership cannot answer, skipping it is safe: the next refresh
    /// asks again).
    ReadMembers,
}

/// An event from the node's gossip layer, as the registry actor's inbox and the simulator hand
/// it to [`RegistryNode::handle_input`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeInput {
    /// An overlay broadcast was delivered (a signed advert).
    Delivered(Vec<u8>),
    /// A unicast overlay message (anti-entropy) from a neighbour.
    Direct(SocketAddr, Vec<u8>),
    /// Membership declared a node down (or it left).
    MemberDown(NodeId),
    /// A direct probe's round trip, for the Vivaldi coordinate.
    Rtt(NodeId, Duration),
    /// This node was declared down and rejoined: re-advertise its services.
    Rejoined,
}

/// The periods of the node's timers (the `[registry]` settings of a node's config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimers {
    /// How often leases, expiry, membership and routes are checked (whole milliseconds, at
    /// least 1).
    pub refresh: Duration,
    /// How often a digest goes to a random overlay neighbour (whole milliseconds, at least 1);
    /// `None`: never.
    pub anti_entropy: Option<Duration>,
}

/// When the node's timers fire next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerState {
    periods: NodeTimers,
    next_refresh: Timestamp,
    next_anti_entropy: Option<Timestamp>,
}

/// The first deadline after `now` of a timer due at `at` with `period`, stepping from `at` by
/// whole periods.
fn next_after(at: Timestamp, period: Duration, now: Timestamp) -> Timestamp {
    if at > now {
        return at;
    }
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
    let steps = (now - at).as_micros() / u128::from(period_us) + 1;
    let step_us = u128::from(period_us) * steps;
    at + Duration::from_micros(u64::try_from(step_us).unwrap_or(u64::MAX))
}

/// A timer period in whole milliseconds, at least 1.
fn period_ms(period: Duration) -> u64 {
    u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a registry request failed. Nothing changed in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeError {
    /// The descriptor or update is invalid.
    #[error("{0}")]
    Invalid(#[from] SadError),
    /// No such local service.
    #[error("no service {0:?} is registered on this node")]
    Unknown(String),
    /// The node holds [`LOCAL_SERVICES_MAX`] services.
    #[error("this node already holds {LOCAL_SERVICES_MAX} services")]
    Full,
    /// Persisting failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The registration's credentials did not verify against this node's trust context.
    #[error("credentials rejected: {0}")]
    Trust(TrustReject),
}

/// A local service's descriptor and lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    /// The descriptor as last advertised (its `version` is the advert version).
    pub sad: Sad,
    /// When the lease ends unless renewed.
    pub lease_until: Timestamp,
    /// The credentials advertised with it.
    pub credentials: Option<Arc<Credentials>>,
    republish_at: Timestamp,
}

/// What changed in a step, for the driver's metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Remote adverts that changed the registry.
    pub applied: u32,
    /// Adverts or digests rejected.
    pub rejected: u32,
    /// Adverts sent by anti-entropy.
    pub repaired: u32,
    /// Services withdrawn because their node is down.
    pub withdrawn_down: u32,
    /// Local leases that expired.
    pub leases_expired: u32,
    /// Credentials verified (inline checks of received adverts, and re-checks).
    pub trust_verified: u32,
    /// Credentials refused, or verdicts revoked by a trust update.
    pub trust_rejected: u32,
}

/// One node's registry, sans-IO.
pub struct RegistryNode<S: RegistryStore> {
    key: SigningKey,
    local_id: NodeId,
    store: S,
    core: Registry,
    routes: RouteTable,
    vivaldi: Vivaldi,
    coords: BTreeMap<NodeId, Coord>,
    local: BTreeMap<String, LocalService>,
    version_next: u64,
    version_floor: u64,
    compiled: BTreeMap<u128, Route>,
    compiled_version: u64,
    outputs: VecDeque<Output>,
    report: StepReport,
    trust: TrustContext,
    /// Seeded from the node key: batch verification's nonces (deterministic per node).
    trust_rng: StdRng,
    /// Derived from the node key: where in its period each timer first fires.
    timer_phase: u64,
    timers: Option<TimerState>,
}

impl<S: RegistryStore> std::fmt::Debug for RegistryNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryNode")
            .field("node", &self.local_id)
            .field("adverts", &self.core.len())
            .field("local", &self.local.len())
            .finish_non_exhaustive()
    }
}

/// How often a local service is re-published: a third of its lease (at least a second).
fn republish_interval(sad: &Sad) -> Duration {
    Duration::from_millis(u64::from(sad.ttl_s) * 1000 / 3).max(Duration::from_secs(1))
}

fn lease(sad: &Sad) -> Duration {
    Duration::from_secs(u64::from(sad.ttl_s))
}

impl<S: RegistryStore> RegistryNode<S> {
    /// A node's registry, restoring `stored` registrations (re-advertised with a fresh lease)
    /// after a restart. `version_floor` is the last floor saved through the store.
    pub fn new(
        now: Timestamp,
        key: SigningKey,
        store: S,
        version_floor: u64,
        stored: Vec<Sad>,
    ) -> Result<Self, NodeError> {
        let stored = stored.into_iter().map(|sad| (sad, None)).collect();
        Self::restore(now, key, store, version_floor, stored)
    }

    /// [`RegistryNode::new`] with each stored registration's credentials. They are advertised
    /// again as they are; their local verdict waits for the trust context (the first
    /// [`RegistryNode::on_trust_update`]).
    pub fn restore(
        now: Timestamp,
        key: SigningKey,
        store: S,
        version_floor: u64,
        stored: Vec<(Sad, Option<Credentials>)>,
    ) -> Result<Self, NodeError> {
        let local_id = NodeId(key.verifying_key().to_bytes());
        let seed: [u8; 32] = sha2::Sha256::new()
            .chain_update(TRUST_SEED_DOMAIN)
            .chain_update(key.to_bytes())
            .finalize()
            .into();
        let phase: [u8; 32] = sha2::Sha256::new()
            .chain_update(TIMER_SEED_DOMAIN)
            .chain_update(key.to_bytes())
            .finalize()
            .into();
        let mut timer_phase = [0u8; 8];
        timer_phase.copy_from_slice(&phase[..8]);
        let mut node = RegistryNode {
            core: Registry::new(local_id),
            key,
            local_id,
            store,
            routes: RouteTable::new(),
            vivaldi: Vivaldi::new(),
            coords: BTreeMap::new(),
            local: BTreeMap::new(),
            // Everything below the stored floor may have been used before a crash.
            version_next: version_floor.max(1),
            version_floor,
            compiled: BTreeMap::new(),
            compiled_version: 0,
            outputs: VecDeque::new(),
            report: StepReport::default(),
            trust: TrustContext::new(),
            trust_rng: StdRng::from_seed(seed),
            timer_phase: u64::from_le_bytes(timer_phase),
            timers: None,
        };
        for (mut sad, credentials) in stored.into_iter().take(LOCAL_SERVICES_MAX) {
            if sad.validate().is_err() {
                continue;
            }
            let credentials = credentials.map(Arc::new);
            let advert = node.sign(now, &mut sad, credentials.clone())?;
            node.local.insert(
                sad.id.clone(),
                LocalService {
                    lease_until: now + lease(&sad),
                    republish_at: now + republish_interval(&sad),
                    credentials,
                    sad,
                },
            );
            node.outputs
                .push_back(Output::Broadcast(advert.to_bytes().to_vec()));
        }
        Ok(node)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.local_id
    }

    /// The registry core (every advert this node holds).
    pub fn registry(&self) -> &Registry {
        &self.core
    }

    /// The injected store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Services registered on this node, by id.
    pub fn local_services(&self) -> &BTreeMap<String, LocalService> {
        &self.local
    }

    /// The trust context adverts are verified against.
    pub fn trust(&self) -> &TrustContext {
        &self.trust
    }

    /// Sets the Unix time (ms) of the node's epoch (the `now` the node is driven with is a
    /// [`Timestamp`] since that epoch); MIC validity windows are in Unix time. Default 0: `now`
    /// is Unix time.
    pub fn set_unix_epoch_ms(&mut self, unix_epoch_ms: u64) {
        self.core.set_unix_epoch_ms(unix_epoch_ms);
    }

    fn unix_now(&self, now: Timestamp) -> u64 {
        crate::trust::unix_ms_at(now, self.core.unix_epoch_ms())
    }

    /// This node's Vivaldi coordinate.
    pub fn coordinate(&self) -> Coord {
        self.vivaldi.coord()
    }

    /// The version of the last route delta (what [`RegistryNode::routes`] returns first),
    /// without copying the routes.
    pub fn routes_version(&self) -> u64 {
        self.compiled_version
    }

    /// The compiled intent routes and the version of the last route delta.
    pub fn routes(&self) -> (u64, Vec<Route>) {
        (
            self.compiled_version,
            self.compiled.values().cloned().collect(),
        )
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// What changed since the last call.
    pub fn take_report(&mut self) -> StepReport {
        std::mem::take(&mut self.report)
    }

    /// The next advert version, persisting a new floor when the reserved block is used up.
    fn next_version(&mut self) -> Result<u64, NodeError> {
        if self.version_next >= self.version_floor {
            let floor = self.version_next + VERSION_BLOCK;
            self.store
                .save_version_floor(floor)
                .map_err(NodeError::Storage)?;
            self.version_floor = floor;
        }
        let v = self.version_next;
        self.version_next += 1;
        Ok(v)
    }

    /// Gives `sad` the next version and signs and applies it locally.
    fn sign(
        &mut self,
        now: Timestamp,
        sad: &mut Sad,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<SignedAdvert, NodeError> {
        sad.version = self.next_version()?;
        let coord = Some(self.vivaldi.coord());
        Ok(self
            .core
            .publish_with(now, sad.clone(), coord, credentials, &self.key)?)
    }

    /// Registers or renews (same id) a local service without credentials; returns whether it was
    /// new. The lease runs `ttl_s` from `now`. See
    /// [`RegistryNode::register_with_credentials`].
    pub fn register(&mut self, now: Timestamp, sad: Sad) -> Result<bool, NodeError> {
        self.register_with_credentials(now, sad, None)
    }

    /// Registers or renews (same id) a local service, advertising `credentials` with it (its MIC
    /// and attestations, as the registering client supplied them); returns whether it was new.
    ///
    /// Credentials are checked against this node's trust context before anything changes
    /// ([`NodeError::Trust`] names the reason); the SAD's `trust.mic_serial` is set to the MIC's
    /// serial (a different serial there is [`NodeError::Invalid`]), and the advert must still fit
    /// one datagram (else [`NodeError::Invalid`] naming `credentials`). A registration replaces
    /// the previous one of the same id, credentials included.
    pub fn register_with_credentials(
        &mut self,
        now: Timestamp,
        mut sad: Sad,
        credentials: Option<Credentials>,
    ) -> Result<bool, NodeError> {
        sad.validate()?;
        let verified = match &credentials {
            None => None,
            Some(c) => {
                let serial = c.mic.body.serial;
                match sad.trust.mic_serial {
                    None => sad.trust.mic_serial = Some(serial),
                    Some(s) if s == serial => {}
                    Some(s) => {
                        return Err(NodeError::Invalid(SadError::new(
                            "trust.mic_serial",
                            format!("names MIC {s} but the credentials carry MIC {serial}"),
                        )));
                    }
                }
                check_advert_fits(&sad, Some(c))?;
                Some(
                    self.trust
                        .check(c, self.unix_now(now))
                        .map_err(NodeError::Trust)?,
                )
            }
        };
        let created = !self.local.contains_key(&sad.id);
        if created && self.local.len() >= LOCAL_SERVICES_MAX {
            return Err(NodeError::Full);
        }
        sad.version = self.next_version()?;
        // Persist first: if the write fails nothing changes, so the answer and the store agree.
        self.store
            .put_service_with_credentials(&sad, credentials.as_ref())
            .map_err(NodeError::Storage)?;
        let credentials = credentials.map(Arc::new);
        self.local.insert(
            sad.id.clone(),
            LocalService {
                lease_until: now + lease(&sad),
                republish_at: now + republish_interval(&sad),
                credentials: credentials.clone(),
                sad: sad.clone(),
            },
        );
        let coord = Some(self.vivaldi.coord());
        let service_key = ServiceKey::new(self.local_id, sad.id.clone());
        let advert = self
            .core
            .publish_with(now, sad, coord, credentials, &self.key)?;
        if let Some(v) = verified {
            self.core
                .set_trust(&service_key, TrustVerdict::Verified(Arc::new(v)));
        }
        self.outputs
            .push_back(Output::Broadcast(advert.to_bytes().to_vec()));
        self.recompute_routes(now);
        Ok(created)
    }

    /// Verifies the credentials of every advert received since the last call, in batches of
    /// [`TRUST_BATCH_MAX`] (one Groth16 batch check per circuit per batch), records the verdicts
    /// and recomputes the routes if any changed. Returns how many were verified. Call it after a
    /// burst of [`RegistryNode::on_delivered`] / [`RegistryNode::on_direct`].
    pub fn flush_trust(&mut self, now: Timestamp) -> usize {
        let unix_now = self.unix_now(now);
        let mut done = 0;
        loop {
            let keys = self.core.take_pending(TRUST_BATCH_MAX);
            if keys.is_empty() {
                break;
            }
            let items: Vec<(ServiceKey, Arc<Credentials>)> = keys
                .into_iter()
                .filter_map(|k| {
                    let c = Arc::clone(self.core.record(&k)?.credentials()?);
                    Some((k, c))
                })
                .collect();
            let refs: Vec<&Credentials> = items.iter().map(|(_, c)| c.as_ref()).collect();
            let results = self.trust.check_batch(&refs, unix_now, &mut self.trust_rng);
            for ((key, _), result) in items.iter().zip(results) {
                let verdict = match result {
                    Ok(v) => {
                        self.report.trust_verified += 1;
                        TrustVerdict::Verified(Arc::new(v))
                    }
                    Err(reject) => {
                        self.report.trust_rejected += 1;
                        TrustVerdict::Rejected(reject)
                    }
                };
                self.core.set_trust(key, verdict);
            }
            done += items.len();
        }
        if done > 0 {
            self.recompute_routes(now);
        }
        done
    }

    /// The TrustActor's update: new CA keys, circuit keys and revocations. Verdicts are
    /// re-evaluated: a verified record whose MIC is now revoked, expired or signed by a key no
    /// longer trusted becomes rejected; if keys changed, rejections that new keys may cure
    /// (unknown CA key, no verifying key) are verified again, as are not-yet-valid ones. Routes
    /// are recomputed, so the route delta drops revoked services. Costs O(records with
    /// credentials) lookups, plus proofs only for re-verified records.
    pub fn on_trust_update(&mut self, now: Timestamp, update: &TrustUpdate) -> UpdateReport {
        let unix_now = self.unix_now(now);
        let report = self.trust.apply_update(update, unix_now);
        self.flush_trust(now);
        let mut changes: Vec<(ServiceKey, TrustVerdict)> = Vec::new();
        for (key, entry) in self.core.credentialed() {
            match entry.trust() {
                TrustVerdict::Verified(v) => {
                    if let Err(reject) = self.trust.status(v, unix_now) {
                        changes.push((key.clone(), TrustVerdict::Rejected(reject)));
                    }
                }
                TrustVerdict::Rejected(r)
                    if r.is_transient()
                        && (report.keys_changed()
                            || matches!(r, TrustReject::NotYetValid { .. })) =>
                {
                    changes.push((key.clone(), TrustVerdict::Pending));
                }
                _ => {}
            }
        }
        for (key, verdict) in changes {
            if matches!(verdict, TrustVerdict::Rejected(_)) {
                self.report.trust_rejected += 1;
            }
            self.core.set_trust(&key, verdict);
        }
        self.flush_trust(now);
        self.recompute_routes(now);
        report
    }

    /// Withdraws a local service everywhere.
    pub fn deregister(&mut self, now: Timestamp, id: &str) -> Result<(), NodeError> {
        if !self.local.contains_key(id) {
            return Err(NodeError::Unknown(id.to_owned()));
        }
        self.store.delete_service(id).map_err(NodeError::Storage)?;
        self.local.remove(id);
        self.withdraw_local(now, id);
        self.recompute_routes(now);
        Ok(())
    }

    fn withdraw_local(&mut self, now: Timestamp, id: &str) {
        // The tombstone takes the held version + 1; consume a version so a later registration
        // of the same id outranks the tombstone.
        let _ = self.next_version();
        if let Some(advert) = self.core.withdraw(now, id, &self.key) {
            self.outputs
                .push_back(Output::Broadcast(advert.to_bytes().to_vec()));
        }
    }

    /// Updates a local service's load/latency, re-advertises it and renews its lease.
    pub fn patch_load(
        &mut self,
        now: Timestamp,
        id: &str,
        update: &LoadUpdate,
    ) -> Result<&LocalService, NodeError> {
        let Some(mut sad) = self.local.get(id).map(|s| s.sad.clone()) else {
            return Err(NodeError::Unknown(id.to_owned()));
        };
        sad.apply_load(update)?;
        let credentials = self.local.get(id).and_then(|s| s.credentials.clone());
        let advert = self.sign(now, &mut sad, credentials.clone())?;
        self.outputs
            .push_back(Output::Broadcast(advert.to_bytes().to_vec()));
        let entry = LocalService {
            lease_until: now + lease(&sad),
            republish_at: now + republish_interval(&sad),
            credentials,
            sad,
        };
        self.local.insert(id.to_owned(), entry);
        self.recompute_routes(now);
        self.local
            .get(id)
            .ok_or_else(|| NodeError::Unknown(id.to_owned()))
    }

    /// Resolves an intent and tracks its class in the route table (credentials still pending
    /// are verified first).
    pub fn resolve(&mut self, now: Timestamp, intent: &Intent) -> Resolution {
        self.flush_trust(now);
        let ctx = ResolveContext {
            now,
            local_coord: Some(self.vivaldi.coord()),
            trust: Some(&self.trust),
        };
        let resolution = self.core.resolve(intent, &ctx);
        self.routes.track(now, intent);
        self.recompute_routes(now);
        resolution
    }

    /// Resolves without tracking the class (for observers such as the simulator's checks).
    /// Credentials still pending count as not verified.
    pub fn resolve_untracked(&self, now: Timestamp, intent: &Intent) -> Resolution {
        let ctx = ResolveContext {
            now,
            local_coord: Some(self.vivaldi.coord()),
            trust: Some(&self.trust),
        };
        self.core.resolve(intent, &ctx)
    }

    fn recompute_routes(&mut self, now: Timestamp) {
        let ctx = ResolveContext {
            now,
            local_coord: Some(self.vivaldi.coord()),
            trust: Some(&self.trust),
        };
        if let Some(delta) = self.routes.recompute(&self.core, &ctx) {
            for key in &delta.removals {
                self.compiled.remove(key);
            }
            for route in delta.upserts {
                self.compiled.insert(route.key, route);
            }
            self.compiled_version = delta.version;
        }
    }

    fn apply_remote(&mut self, now: Timestamp, bytes: &[u8]) {
        let advert = match SignedAdvert::from_bytes(bytes) {
            Ok(a) => a,
            Err(_) => {
                self.report.rejected += 1;
                return;
            }
        };
        if advert.origin() == self.local_id {
            // Our own advert came back (relayed, or by anti-entropy): we hold it already.
            return;
        }
        match self.core.apply(now, &advert) {
            Ok(Applied::Stale) => {}
            Ok(_) => {
                self.report.applied += 1;
                let key = ServiceKey {
                    node: advert.origin(),
                    service: advert.service().to_owned(),
                };
                if let Some(coord) = self.core.get(&key).and_then(|e| e.coord()) {
                    self.coords.insert(advert.origin(), *coord);
                }
            }
            Err(_) => self.report.rejected += 1,
        }
    }

    /// One event from the gossip layer (see [`NodeInput`]). Credentials that arrive with adverts
    /// wait for [`RegistryNode::flush_trust`].
    pub fn handle_input(&mut self, now: Timestamp, input: NodeInput) {
        match input {
            NodeInput::Delivered(bytes) => self.on_delivered(now, &bytes),
            NodeInput::Direct(from, bytes) => self.on_direct(now, from, &bytes),
            NodeInput::MemberDown(node) => self.on_member_down(now, node),
            NodeInput::Rtt(node, rtt) => self.on_rtt(node, rtt),
            NodeInput::Rejoined => self.on_rejoined(now),
        }
    }

    /// A broadcast the overlay delivered (a signed advert).
    pub fn on_delivered(&mut self, now: Timestamp, payload: &[u8]) {
        self.apply_remote(now, payload);
    }

    /// An anti-entropy unicast from `from`.
    pub fn on_direct(&mut self, now: Timestamp, from: SocketAddr, payload: &[u8]) {
        let Some((&tag, rest)) = payload.split_first() else {
            self.report.rejected += 1;
            return;
        };
        match tag {
            TAG_ADVERT => self.apply_remote(now, rest),
            TAG_DIGEST_PUSH | TAG_DIGEST_REPLY => {
                let Ok(digest) = Digest::from_bytes(rest) else {
                    self.report.rejected += 1;
                    return;
                };
                let mut sent = 0usize;
                'origins: for origin in self.core.differing(&digest) {
                    for advert in self.core.adverts_of(origin) {
                        if sent >= ANTI_ENTROPY_ADVERTS_MAX {
                            break 'origins;
                        }
                        let mut out = Vec::with_capacity(1 + advert.to_bytes().len());
                        out.push(TAG_ADVERT);
                        out.extend_from_slice(advert.to_bytes());
                        self.outputs.push_back(Output::Direct(from, out));
                        sent += 1;
                    }
                }
                self.report.repaired += sent as u32;
                if tag == TAG_DIGEST_PUSH {
                    for reply in self.digest_payloads(TAG_DIGEST_REPLY) {
                        self.outputs.push_back(Output::Direct(from, reply));
                    }
                }
            }
            _ => self.report.rejected += 1,
        }
    }

    /// The registry's digest in datagram-sized range chunks, each tagged.
    fn digest_payloads(&self, tag: u8) -> Vec<Vec<u8>> {
        self.core
            .digest()
            .split(DIGEST_CHUNK_ORIGINS)
            .iter()
            .map(|chunk| {
                let bytes = chunk.to_bytes();
                let mut out = Vec::with_capacity(1 + bytes.len());
                out.push(tag);
                out.extend_from_slice(&bytes);
                out
            })
            .collect()
    }

    /// Membership declared `node` down (or it left): withdraw its services here.
    pub fn on_member_down(&mut self, now: Timestamp, node: NodeId) {
        if node == self.local_id {
            return;
        }
        let gone = self.core.node_down(node);
        if !gone.is_empty() {
            self.report.withdrawn_down += gone.len() as u32;
            self.recompute_routes(now);
        }
    }

    /// This node was declared down by the others and rejoined (e.g. after a partition healed):
    /// they withdrew its services, and only a newer version brings them back, so re-publish
    /// every local service now instead of at its next `ttl_s / 3`.
    pub fn on_rejoined(&mut self, now: Timestamp) {
        let ids: Vec<String> = self.local.keys().cloned().collect();
        for id in ids {
            if let Some(s) = self.local.get_mut(&id) {
                s.republish_at = now;
            }
        }
        self.republish_due(now);
    }

    /// A direct probe's round trip to `node`, for the Vivaldi coordinate.
    pub fn on_rtt(&mut self, node: NodeId, rtt: Duration) {
        if let Some(coord) = self.coords.get(&node) {
            self.vivaldi.update(rtt, coord);
        }
    }

    /// Periodic work: local leases (withdraw unrenewed services, re-publish the rest every
    /// `ttl_s / 3`), expiry of remote copies, routes ([`RegistryNode::handle_timeout`] runs it
    /// every refresh period).
    pub fn refresh(&mut self, now: Timestamp) {
        self.flush_trust(now);
        let expired: Vec<String> = self
            .local
            .iter()
            .filter(|(_, s)| s.lease_until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.local.remove(id);
            self.withdraw_local(now, id);
            self.report.leases_expired += 1;
            // A failed delete only means a restart re-advertises it once more (and its lease
            // then expires again).
            let _ = self.store.delete_service(id);
        }
        self.republish_due(now);
        self.core.expire(now);
        self.recompute_routes(now);
    }

    /// Re-publishes the local services whose re-publish time has come.
    fn republish_due(&mut self, now: Timestamp) {
        let due: Vec<String> = self
            .local
            .iter()
            .filter(|(_, s)| s.republish_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some((mut sad, credentials)) = self
                .local
                .get(&id)
                .map(|s| (s.sad.clone(), s.credentials.clone()))
            else {
                continue;
            };
            // A failure (storage) is retried at the next refresh.
            if let Ok(advert) = self.sign(now, &mut sad, credentials) {
                self.outputs
                    .push_back(Output::Broadcast(advert.to_bytes().to_vec()));
                if let Some(s) = self.local.get_mut(&id) {
                    s.republish_at = now + republish_interval(&sad);
                    s.sad = sad;
                }
            }
        }
    }

    /// Starts (or restarts with new periods) the node's timers at `now`. Periods are taken in
    /// whole milliseconds (at least 1). Each first fires at a whole millisecond within its
    /// period derived from the node key, so nodes started together do not all refresh at one
    /// instant; then every period. Until this is called the node has no timers.
    pub fn start_timers(&mut self, now: Timestamp, periods: NodeTimers) {
        let refresh_ms = period_ms(periods.refresh);
        let anti_entropy_ms = periods.anti_entropy.map(period_ms);
        let phase = self.timer_phase;
        self.timers = Some(TimerState {
            periods: NodeTimers {
                refresh: Duration::from_millis(refresh_ms),
                anti_entropy: anti_entropy_ms.map(Duration::from_millis),
            },
            next_refresh: now + Duration::from_millis(1 + phase % refresh_ms),
            next_anti_entropy: anti_entropy_ms
                .map(|p| now + Duration::from_millis(1 + phase.rotate_left(32) % p)),
        });
    }

    /// When [`RegistryNode::handle_timeout`] is next due (`None`: no timers started).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let t = self.timers.as_ref()?;
        Some(
            t.next_anti_entropy
                .map_or(t.next_refresh, |a| a.min(t.next_refresh)),
        )
    }

    /// Runs the timers due at `now`: the refresh ([`RegistryNode::refresh`], then
    /// [`Output::ReadMembers`]) and the anti-entropy round ([`RegistryNode::anti_entropy`]).
    /// Early calls do nothing; a timer that missed several periods fires once.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(mut t) = self.timers else {
            return;
        };
        let refresh_due = now >= t.next_refresh;
        if refresh_due {
            t.next_refresh = next_after(t.next_refresh, t.periods.refresh, now);
        }
        let anti_entropy_due = match (t.next_anti_entropy, t.periods.anti_entropy) {
            (Some(at), Some(period)) if now >= at => {
                t.next_anti_entropy = Some(next_after(at, period, now));
                true
            }
            _ => false,
        };
        self.timers = Some(t);
        if refresh_due {
            self.refresh(now);
            self.outputs.push_back(Output::ReadMembers);
        }
        if anti_entropy_due {
            self.anti_entropy();
        }
    }

    /// The member list ([`Output::ReadMembers`]'s answer): withdraws the services of every
    /// member shown down or left and not alive under another generation.
    pub fn on_members(&mut self, now: Timestamp, members: &[MemberView]) {
        let alive: BTreeSet<NodeId> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.id.node_id())
            .collect();
        let dead: BTreeSet<NodeId> = members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Down | MemberState::Left))
            .map(|m| m.id.node_id())
            .filter(|id| !alive.contains(id))
            .collect();
        for node in dead {
            self.on_member_down(now, node);
        }
    }

    /// Periodic anti-entropy: a digest to one random neighbour ([`RegistryNode::handle_timeout`]
    /// runs it every anti-entropy period).
    pub fn anti_entropy(&mut self) {
        for payload in self.digest_payloads(TAG_DIGEST_PUSH) {
            self.outputs
                .push_back(Output::DirectToRandomNeighbor(payload));
        }
    }
}
