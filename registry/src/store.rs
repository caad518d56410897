//! [`Registry`]: the CRDT of signed adverts, one record per (origin node, service), merged
//! last-writer-wins by version; leases, tombstones, anti-entropy digests and the resolve index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_trust_core::verify::Credentials;

use crate::advert::{Advert, AdvertBody, AdvertError, SignedAdvert, node_id_of};
use crate::digest::{Digest, OriginSummary, record_hash};
use crate::index::Index;
use crate::sad::{Sad, SadError};
use crate::trust::TrustVerdict;
use crate::vivaldi::Coord;
use crate::{NodeId, Timestamp};

/// How long a withdrawal, an expired lease or a node-down mark is remembered after it happens
/// (10 minutes): while it is, an older or equal version of the advert cannot bring the service
/// back. Must exceed the time a withdrawal takes to reach every node.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(10 * 60);
/// Services one origin node may have records for (live or not).
pub const SERVICES_PER_NODE_MAX: usize = 1024;
/// Records one registry holds (live or not).
pub const RECORDS_MAX: usize = 1 << 20;

/// Identifies one record: a service on a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The origin node.
    pub node: NodeId,
    /// The service id on that node.
    pub service: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(node: NodeId, service: impl Into<String>) -> Self {
        ServiceKey {
            node,
            service: service.into(),
        }
    }
}

/// What [`Registry::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A service became live that was not live here before.
    Inserted,
    /// A live service got a newer version.
    Updated,
    /// A service was withdrawn (a tombstone is kept).
    Withdrawn,
    /// Nothing changed: the advert is older than or equal to what is held (tombstones and
    /// inactive marks included).
    Stale,
}

/// Why a record is not live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Live: resolvable until its lease runs out.
    Live,
    /// Its lease ran out ([`Registry::expire`]); held as a version guard.
    Expired,
    /// Its node went down ([`Registry::node_down`]); held as a version guard.
    NodeDown,
    /// Its origin withdrew it (a signed tombstone).
    Withdrawn,
}

/// One record: the signed advert and its local state.
#[derive(Clone, Debug)]
pub struct Entry {
    signed: SignedAdvert,
    state: RecordState,
    expires_at: Timestamp,
    deadline: Timestamp,
    trust: TrustVerdict,
}

impl Entry {
    /// The descriptor (`None` for a withdrawal).
    pub fn sad(&self) -> Option<&Sad> {
        self.shared_sad().map(Arc::as_ref)
    }

    /// The descriptor as the shared allocation the advert holds (cloning it is a reference
    /// count increment); `None` for a withdrawal.
    pub fn shared_sad(&self) -> Option<&Arc<Sad>> {
        match self.signed.body() {
            AdvertBody::Live { sad, .. } => Some(sad),
            AdvertBody::Withdrawn => None,
        }
    }

    /// The advert's version.
    pub fn version(&self) -> u64 {
        self.signed.version()
    }

    /// When the lease ends (now + ttl at the apply of this version).
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The origin's coordinate from the advert.
    pub fn coord(&self) -> Option<&Coord> {
        match self.signed.body() {
            AdvertBody::Live { coord, .. } => coord.as_ref(),
            AdvertBody::Withdrawn => None,
        }
    }

    /// The signed advert as received (re-send these bytes).
    pub fn signed(&self) -> &SignedAdvert {
        &self.signed
    }

    /// Live, expired, node down or withdrawn.
    pub fn state(&self) -> RecordState {
        self.state
    }

    /// The origin node.
    pub fn origin(&self) -> NodeId {
        self.signed.origin()
    }

    /// The service id.
    pub fn service(&self) -> &str {
        self.signed.service()
    }

    /// This node's verdict on the advert's credentials.
    pub fn trust(&self) -> &TrustVerdict {
        &self.trust
    }

    /// The credentials the advert carries.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        self.signed.credentials()
    }
}

/// The merge order of two adverts of one key: version, then a withdrawal over a live advert,
/// then the signed bytes. A total order, so merging is commutative even if an origin signs two
/// different adverts with one version.
fn outranks(new: &SignedAdvert, held: &SignedAdvert) -> bool {
    (new.version(), new.is_withdrawal(), new.to_bytes())
        > (held.version(), held.is_withdrawal(), held.to_bytes())
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Records held (live or not).
    pub records: usize,
    /// Live records.
    pub live: usize,
    /// Rows in the resolve index (one per live record per task tag).
    pub index_rows: usize,
    /// Distinct task tags in the index.
    pub index_tasks: usize,
    /// Origin nodes with at least one record.
    pub origins: usize,
}

/// The capability registry of one node.
///
/// Sans-IO: time comes in as `now` (a [`Timestamp`] on the driver's monotonic clock), nothing reads a clock,
/// nothing is random, every iteration is in key order. Call order:
///
/// 1. [`Registry::new`] with the local node id (and [`Registry::set_version_floor`] after a
///    restart, see there);
/// 2. [`Registry::publish`] / [`Registry::withdraw`] for local services; gossip what they return;
/// 3. [`Registry::apply`] for every advert received;
/// 4. [`Registry::expire`] when [`Registry::poll_timeout`] is due;
/// 5. [`Registry::node_down`] when membership reports a node down;
/// 6. anti-entropy: send [`Registry::digest`]; on a peer's digest, send it
///    [`Registry::adverts_of`] each origin in [`Registry::differing`];
/// 7. [`Registry::resolve`] to answer intents.
#[derive(Debug)]
pub struct Registry {
    local: NodeId,
    records: BTreeMap<ServiceKey, Entry>,
    deadlines: BTreeSet<(Timestamp, ServiceKey)>,
    origins: BTreeMap<NodeId, (u32, u64)>,
    pub(crate) index: Index,
    live: usize,
    version_floor: u64,
    /// Records whose credentials wait for verification ([`TrustVerdict::Pending`]).
    pending: BTreeSet<ServiceKey>,
    /// Unix time (ms) of the node's epoch: converts MIC validity (Unix ms) to registry time.
    unix_epoch_ms: u64,
}

impl Registry {
    /// An empty registry for the node `local`.
    pub fn new(local: NodeId) -> Registry {
        Registry {
            local,
            records: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            origins: BTreeMap::new(),
            index: Index::default(),
            live: 0,
            version_floor: 0,
            pending: BTreeSet::new(),
            unix_epoch_ms: 0,
        }
    }

    /// Sets the Unix time (ms) of the node's epoch (registry time 0), which MIC validity windows
    /// are compared in. Default 0: registry time is Unix time. Re-indexes verified records.
    pub fn set_unix_epoch_ms(&mut self, unix_epoch_ms: u64) {
        if unix_epoch_ms == self.unix_epoch_ms {
            return;
        }
        self.unix_epoch_ms = unix_epoch_ms;
        let verified: Vec<ServiceKey> = self
            .records
            .iter()
            .filter(|(_, e)| e.state == RecordState::Live && e.trust.verified().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in verified {
            self.reindex(&key);
        }
    }

    /// The Unix time (ms) of the node's epoch.
    pub fn unix_epoch_ms(&self) -> u64 {
        self.unix_epoch_ms
    }

    /// Records whose credentials wait for verification, in key order, and forgets them (the
    /// caller verifies and calls [`Registry::set_trust`]). At most `max`.
    pub fn take_pending(&mut self, max: usize) -> Vec<ServiceKey> {
        let mut out = Vec::with_capacity(self.pending.len().min(max));
        while out.len() < max {
            let Some(key) = self.pending.pop_first() else {
                break;
            };
            out.push(key);
        }
        out
    }

    /// Records waiting for verification.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Sets this node's verdict on a record's credentials (its index row follows). A record
    /// without credentials stays [`TrustVerdict::Unclaimed`]. Returns whether anything changed.
    pub fn set_trust(&mut self, key: &ServiceKey, verdict: TrustVerdict) -> bool {
        let Some(entry) = self.records.get_mut(key) else {
            return false;
        };
        if entry.signed.credentials().is_none() || entry.trust == verdict {
            return false;
        }
        if verdict == TrustVerdict::Pending {
            self.pending.insert(key.clone());
        } else {
            self.pending.remove(key);
        }
        entry.trust = verdict;
        if entry.state == RecordState::Live {
            self.reindex(key);
        }
        true
    }

    /// Records with credentials (any state of verdict) in key order: what a trust update
    /// re-evaluates.
    pub fn credentialed(&self) -> impl Iterator<Item = (&ServiceKey, &Entry)> {
        self.records
            .iter()
            .filter(|(_, e)| e.signed.credentials().is_some())
    }

    /// Replaces a live record's index rows (after its verdict or the epoch changed).
    fn reindex(&mut self, key: &ServiceKey) {
        let Some(entry) = self.records.get(key) else {
            return;
        };
        if entry.state != RecordState::Live {
            return;
        }
        if let AdvertBody::Live { sad, coord, .. } = entry.signed.body() {
            self.index.remove(key, sad);
            self.index.insert(
                key,
                sad,
                coord.as_ref(),
                entry.expires_at,
                &entry.trust,
                self.unix_epoch_ms,
            );
        }
    }

    /// The local node id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Sets the lowest version [`Registry::publish`] and [`Registry::withdraw`] will use.
    ///
    /// A restarted node starts with an empty store but its old adverts may still circulate with
    /// high versions; its new adverts must outrank them. The registry reads no clock, so the
    /// caller supplies a floor that grows across restarts. Recommended: [`version_floor`] of the
    /// node's persisted generation (incremented on every start), i.e. `generation << 32`: every
    /// start gets 2^32 versions of its own. Adverts of our own node received from gossip after a
    /// restart are applied like any other, so the next publish also outranks them.
    pub fn set_version_floor(&mut self, floor: u64) {
        self.version_floor = floor;
    }

    /// Live records.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            records: self.records.len(),
            live: self.live,
            index_rows: self.index.rows(),
            index_tasks: self.index.tasks(),
            origins: self.origins.len(),
        }
    }

    /// A live record.
    pub fn get(&self, key: &ServiceKey) -> Option<&Entry> {
        self.records
            .get(key)
            .filter(|e| e.state == RecordState::Live)
    }

    /// Any record, live or not.
    pub fn record(&self, key: &ServiceKey) -> Option<&Entry> {
        self.records.get(key)
    }

    /// Live records in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Entry)> {
        self.records
            .iter()
            .filter(|(_, e)| e.state == RecordState::Live)
    }

    /// Every record (live, inactive and withdrawn) in key order.
    pub fn records(&self) -> impl Iterator<Item = (&ServiceKey, &Entry)> {
        self.records.iter()
    }

    fn node_range(&self, node: NodeId) -> impl Iterator<Item = (&ServiceKey, &Entry)> {
        self.records
            .range(ServiceKey::new(node, String::new())..)
            .take_while(move |(k, _)| k.node == node)
    }

    /// The local node's live services.
    pub fn local_services(&self) -> impl Iterator<Item = &Entry> {
        self.node_range(self.local)
            .map(|(_, e)| e)
            .filter(|e| e.state == RecordState::Live)
    }

    /// The earliest time [`Registry::expire`] has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Verifies a received advert and merges it: per (origin, service) the higher version wins
    /// (see [`Applied`]); a newer live version (re)starts the lease at `now + ttl_s` seconds.
    /// On `Err` nothing changed.
    pub fn apply(&mut self, now: Timestamp, advert: &SignedAdvert) -> Result<Applied, AdvertError> {
        advert.check_signature()?;
        self.install(now, advert.clone())
    }

    fn install(&mut self, now: Timestamp, signed: SignedAdvert) -> Result<Applied, AdvertError> {
        let key = ServiceKey::new(signed.origin(), signed.service());
        let held = self.records.get(&key);
        if let Some(held) = held {
            if !outranks(&signed, &held.signed) {
                return Ok(Applied::Stale);
            }
        } else {
            if self.records.len() >= RECORDS_MAX {
                return Err(AdvertError::Full(format!("{RECORDS_MAX} records")));
            }
            let per_node = self.origins.get(&key.node).map_or(0, |o| o.0 as usize);
            if per_node >= SERVICES_PER_NODE_MAX {
                return Err(AdvertError::Full(format!(
                    "{SERVICES_PER_NODE_MAX} services of node {}",
                    key.node.short()
                )));
            }
        }
        let was_live = self
            .records
            .get(&key)
            .is_some_and(|e| e.state == RecordState::Live);
        // A new version with the same credentials keeps a positive verdict (re-publishes every
        // ttl/3 must not re-verify proofs); anything else is verified again.
        let trust = match (signed.credentials(), self.records.get(&key)) {
            (None, _) => TrustVerdict::Unclaimed,
            (Some(c), Some(held))
                if held.trust.verified().is_some()
                    && held.signed.credentials().is_some_and(|h| h == c) =>
            {
                held.trust.clone()
            }
            (Some(_), _) => TrustVerdict::Pending,
        };
        self.remove_record(&key);
        let (state, expires_at, deadline, applied) = match signed.body() {
            AdvertBody::Live { sad, .. } => {
                let expires_at = now + Duration::from_secs(u64::from(sad.ttl_s));
                let applied = if was_live {
                    Applied::Updated
                } else {
                    Applied::Inserted
                };
                (RecordState::Live, expires_at, expires_at, applied)
            }
            AdvertBody::Withdrawn => (
                RecordState::Withdrawn,
                now,
                now + TOMBSTONE_TTL,
                Applied::Withdrawn,
            ),
        };
        self.insert_record(
            key,
            Entry {
                signed,
                state,
                expires_at,
                deadline,
                trust,
            },
        );
        Ok(applied)
    }

    fn insert_record(&mut self, key: ServiceKey, entry: Entry) {
        let origin = self.origins.entry(key.node).or_insert((0, 0));
        origin.0 += 1;
        origin.1 = origin.1.wrapping_add(record_hash(
            &key.service,
            entry.version(),
            entry.signed.is_withdrawal(),
        ));
        self.deadlines.insert((entry.deadline, key.clone()));
        if entry.trust == TrustVerdict::Pending {
            self.pending.insert(key.clone());
        }
        if entry.state == RecordState::Live {
            if let AdvertBody::Live { sad, coord, .. } = entry.signed.body() {
                self.index.insert(
                    &key,
                    sad,
                    coord.as_ref(),
                    entry.expires_at,
                    &entry.trust,
                    self.unix_epoch_ms,
                );
            }
            self.live += 1;
        }
        self.records.insert(key, entry);
    }

    fn remove_record(&mut self, key: &ServiceKey) -> Option<Entry> {
        let entry = self.records.remove(key)?;
        if let Some(origin) = self.origins.get_mut(&key.node) {
            origin.0 -= 1;
            origin.1 = origin.1.wrapping_sub(record_hash(
                &key.service,
                entry.version(),
                entry.signed.is_withdrawal(),
            ));
            if origin.0 == 0 {
                self.origins.remove(&key.node);
            }
        }
        self.deadlines.remove(&(entry.deadline, key.clone()));
        self.pending.remove(key);
        if entry.state == RecordState::Live {
            self.deactivate_index(key, &entry);
        }
        Some(entry)
    }

    fn deactivate_index(&mut self, key: &ServiceKey, entry: &Entry) {
        if let Some(sad) = entry.sad() {
            self.index.remove(key, sad);
        }
        self.live -= 1;
    }

    /// Turns a live record inactive (kept as a version guard until `deadline`).
    fn deactivate(&mut self, key: &ServiceKey, state: RecordState, deadline: Timestamp) -> bool {
        let Some(entry) = self.records.get(key) else {
            return false;
        };
        if entry.state != RecordState::Live {
            return false;
        }
        let entry = entry.clone();
        self.deactivate_index(key, &entry);
        self.deadlines.remove(&(entry.deadline, key.clone()));
        self.deadlines.insert((deadline, key.clone()));
        if let Some(e) = self.records.get_mut(key) {
            e.state = state;
            e.deadline = deadline;
        }
        true
    }

    /// Publishes a local service: validates `sad`, picks the version (the highest of: the held
    /// version + 1, `sad.version` as the caller's minimum, and the version floor), signs, stores
    /// and returns the advert to gossip. `key` must be the local node's.
    pub fn publish(
        &mut self,
        now: Timestamp,
        sad: Sad,
        coord: Option<Coord>,
        key: &SigningKey,
    ) -> Result<SignedAdvert, SadError> {
        self.publish_with(now, sad, coord, None, key)
    }

    /// [`Registry::publish`] with credentials in the advert. The record's verdict starts
    /// [`TrustVerdict::Pending`] (or keeps a positive verdict if the held version carried the
    /// same credentials); the caller that verified them sets it with [`Registry::set_trust`].
    pub fn publish_with(
        &mut self,
        now: Timestamp,
        mut sad: Sad,
        coord: Option<Coord>,
        credentials: Option<Arc<Credentials>>,
        key: &SigningKey,
    ) -> Result<SignedAdvert, SadError> {
        if node_id_of(key) != self.local {
            return Err(SadError::new(
                "key",
                "the signing key is not the local node's",
            ));
        }
        sad.validate()?;
        let service_key = ServiceKey::new(self.local, sad.id.clone());
        let version = self.next_version(&service_key, sad.version)?;
        sad.version = version;
        let advert = Advert {
            origin: self.local,
            service: sad.id.clone(),
            version,
            body: AdvertBody::Live {
                sad: Arc::new(sad),
                coord,
                credentials,
            },
        };
        let signed = advert.sign(key)?;
        self.install(now, signed.clone())
            .map_err(|e| SadError::new("registry", e.to_string()))?;
        Ok(signed)
    }

    fn next_version(&self, key: &ServiceKey, minimum: u64) -> Result<u64, SadError> {
        let after_held = match self.records.get(key) {
            Some(e) => e
                .version()
                .checked_add(1)
                .ok_or_else(|| SadError::new("version", "version space exhausted"))?,
            None => 0,
        };
        Ok(after_held.max(minimum).max(self.version_floor).max(1))
    }

    /// Withdraws a local service that has a record here (live or inactive, not already
    /// withdrawn): signs a tombstone one version above, stores it and returns it to gossip.
    /// `None` if there is nothing to withdraw or `key` is not the local node's.
    pub fn withdraw(
        &mut self,
        now: Timestamp,
        service: &str,
        key: &SigningKey,
    ) -> Option<SignedAdvert> {
        if node_id_of(key) != self.local {
            return None;
        }
        let service_key = ServiceKey::new(self.local, service);
        let held = self.records.get(&service_key)?;
        if held.state == RecordState::Withdrawn {
            return None;
        }
        let version = self.next_version(&service_key, 0).ok()?;
        let signed = Advert {
            origin: self.local,
            service: service.to_string(),
            version,
            body: AdvertBody::Withdrawn,
        }
        .sign(key)
        .ok()?;
        self.install(now, signed.clone()).ok()?;
        Some(signed)
    }

    /// Ends leases past due (the records stay as version guards for [`TOMBSTONE_TTL`]) and
    /// drops guards and tombstones past their time. Returns the keys that stopped being live.
    pub fn expire(&mut self, now: Timestamp) -> Vec<ServiceKey> {
        let mut ended = Vec::new();
        while let Some((deadline, key)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            let state = self.records.get(&key).map(|e| e.state);
            match state {
                Some(RecordState::Live) => {
                    self.deactivate(&key, RecordState::Expired, now + TOMBSTONE_TTL);
                    ended.push(key);
                }
                Some(_) => {
                    self.remove_record(&key);
                }
                None => {
                    // Unreachable while the deadline set mirrors the records; drop the stray.
                    self.deadlines.remove(&(deadline, key));
                }
            }
        }
        ended
    }

    /// Marks every live service of `node` down (membership saw the node fail). The records stay
    /// as version guards until their lease end + [`TOMBSTONE_TTL`], so older or equal versions
    /// gossiped again do not revive them; a newer version does. Returns the keys that stopped
    /// being live.
    pub fn node_down(&mut self, node: NodeId) -> Vec<ServiceKey> {
        let keys: Vec<(ServiceKey, Timestamp)> = self
            .node_range(node)
            .filter(|(_, e)| e.state == RecordState::Live)
            .map(|(k, e)| (k.clone(), e.expires_at))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for (key, expires_at) in keys {
            if self.deactivate(&key, RecordState::NodeDown, expires_at + TOMBSTONE_TTL) {
                out.push(key);
            }
        }
        out
    }

    /// Per-origin summaries of every record held (signed state: live, inactive and withdrawn).
    pub fn digest(&self) -> Digest {
        Digest::full(
            self.origins
                .iter()
                .map(|(node, (count, hash))| OriginSummary {
                    node: *node,
                    count: *count,
                    hash: *hash,
                })
                .collect(),
        )
    }

    /// Origins within `remote`'s range whose summary differs from ours (including origins only
    /// one side has), in node-id order.
    pub fn differing(&self, remote: &Digest) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut ours = self
            .origins
            .range(remote.first..=remote.last)
            .map(|(n, (c, h))| (*n, *c, *h))
            .peekable();
        let mut theirs = remote
            .origins
            .iter()
            .filter(|o| remote.covers(&o.node))
            .map(|o| (o.node, o.count, o.hash))
            .peekable();
        loop {
            match (ours.peek().copied(), theirs.peek().copied()) {
                (None, None) => break,
                (Some(a), None) => {
                    out.push(a.0);
                    ours.next();
                }
                (None, Some(b)) => {
                    out.push(b.0);
                    theirs.next();
                }
                (Some(a), Some(b)) => {
                    if a.0 < b.0 {
                        out.push(a.0);
                        ours.next();
                    } else if b.0 < a.0 {
                        out.push(b.0);
                        theirs.next();
                    } else {
                        if a != b {
                            out.push(a.0);
                        }
                        ours.next();
                        theirs.next();
                    }
                }
            }
        }
        out
    }

    /// Every signed advert held for `node` (live, inactive and tombstones), in service order.
    pub fn adverts_of(&self, node: NodeId) -> Vec<SignedAdvert> {
        self.node_range(node)
            .map(|(_, e)| e.signed.clone())
            .collect()
    }

    /// Asserts the registry's invariants (the live count, the per-origin summaries, the deadline
    /// set and the index all agree with the records). Costs O(records); for tests and debug
    /// builds.
    pub fn check_invariants(&self) {
        let live = self
            .records
            .values()
            .filter(|e| e.state == RecordState::Live)
            .count();
        assert_eq!(live, self.live, "live count");
        let mut origins: BTreeMap<NodeId, (u32, u64)> = BTreeMap::new();
        let mut rows = 0;
        for (key, e) in &self.records {
            assert_eq!(key.node, e.origin(), "key node = advert origin");
            assert_eq!(key.service, e.service(), "key service = advert service");
            assert!(
                self.deadlines.contains(&(e.deadline, key.clone())),
                "deadline of {key:?}"
            );
            let o = origins.entry(key.node).or_insert((0, 0));
            o.0 += 1;
            o.1 = o.1.wrapping_add(record_hash(
                &key.service,
                e.version(),
                e.signed.is_withdrawal(),
            ));
            if e.state == RecordState::Live {
                let sad = e.sad().expect("a live record has a SAD");
                rows += sad.tasks.len();
                for task in &sad.tasks {
                    let indexed = self.index.contains(task, sad.context_window, key);
                    assert!(indexed, "{key:?} indexed under {task}");
                }
            }
        }
        assert_eq!(
            self.deadlines.len(),
            self.records.len(),
            "one deadline per record"
        );
        assert_eq!(origins, self.origins, "origin summaries");
        for (key, e) in &self.records {
            assert_eq!(
                self.pending.contains(key),
                e.trust == TrustVerdict::Pending,
                "pending set mirrors the verdicts ({key:?})"
            );
            assert_eq!(
                e.signed.credentials().is_none(),
                e.trust == TrustVerdict::Unclaimed,
                "a verdict exactly for records with credentials ({key:?})"
            );
        }
        assert_eq!(rows, self.index.rows(), "index rows");
        self.index.check_invariants();
    }
}

/// The recommended version floor for a node's `generation` (persisted, incremented on every
/// start): `generation << 32`.
pub fn version_floor(generation: u64) -> u64 {
    generation << 32
}
