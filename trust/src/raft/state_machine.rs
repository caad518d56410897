//! The CA state machine behind openraft: [`CaState`] in memory, snapshots in sled.
//!
//! Applied state is not written to sled entry by entry. At start-up the state is the last
//! persisted snapshot (tree `raft/snapshot`), and openraft re-applies the committed log entries
//! after it. A snapshot is `CaState::snapshot()` bytes plus openraft's snapshot meta (last log id,
//! membership), written as one sled batch and flushed.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use super::{CaPeer, Entry, NodeId, StorageError, TypeConfig};
use crate::ca::{CaState, Command, Response};

/// Name of the sled tree holding the last snapshot.
pub const SNAPSHOT_TREE: &str = "raft/snapshot";

const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

/// What the state machine holds: the CA state and what openraft needs to know about it.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The CA's replicated state.
    pub ca: CaState,
    /// The last log entry applied to `ca`.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, CaPeer>,
    /// This member's serial reservations for its presigned issue batches not yet applied (local,
    /// not replicated; see [`Reservations`]).
    pub(crate) reservations: Reservations,
}

/// The leader's serial reservations for presigned issue batches ([`Command::IssueSigned`]) it
/// proposed and that are not applied yet: first presigned serial → (token, new MICs expected).
/// The next batch's first serial is the applied state's next serial plus all of them. Kept under
/// the same lock as the applied state and released by `apply` itself, so the sum is exact while
/// this member stays leader; a proposal that fails is released by its proposer (by token, so a
/// stale release never drops another batch's reservation).
#[derive(Clone, Debug, Default)]
pub(crate) struct Reservations {
    next_token: u64,
    pending: BTreeMap<u64, (u64, u64)>,
}

impl Reservations {
    /// The next serial once every reserved batch is applied.
    pub(crate) fn next_serial_after(&self, applied_next: u64) -> u64 {
        self.pending
            .values()
            .fold(applied_next, |s, (_, n)| s.saturating_add(*n))
    }

    /// Reserves `count` serials from `first`; returns the token that releases them.
    pub(crate) fn reserve(&mut self, first: u64, count: u64) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        if count > 0 {
            self.pending.insert(first, (token, count));
        }
        token
    }

    /// Releases the reservation starting at `first` if it is still the one `token` made.
    pub(crate) fn release(&mut self, first: u64, token: u64) {
        if self.pending.get(&first).is_some_and(|(t, _)| *t == token) {
            self.pending.remove(&first);
        }
    }

    /// An entry was applied: drop the reservation it fulfilled, if this member made one.
    fn applied(&mut self, cmd: &Command) {
        if let Command::IssueSigned { signatures, .. } = cmd
            && let Some(first) = signatures.iter().flatten().next()
        {
            self.pending.remove(&first.serial);
        }
    }
}

/// A shared, read-mostly handle on the applied state (what linearizable reads look at).
#[derive(Clone, Debug, Default)]
pub struct SharedState(Arc<RwLock<Applied>>);

impl SharedState {
    /// Read access. A poisoned lock still holds consistent data (apply never panics half-way
    /// through an entry by contract of `CaState::apply`), so poisoning is ignored.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access (apply, snapshot install, and the leader's serial reservations).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The openraft state machine of the CA group.
#[derive(Debug)]
pub struct SledStateMachine {
    state: SharedState,
    db: sled::Db,
    snapshots: sled::Tree,
}

/// Why the persisted snapshot could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The persisted snapshot meta is not valid JSON of the expected shape.
    #[error("persisted Raft snapshot meta is corrupt: {0}")]
    Meta(serde_json::Error),
    /// The snapshot meta is present but the data is missing (or the reverse).
    #[error("persisted Raft snapshot is incomplete (meta and data must both be present)")]
    Incomplete,
    /// The CA state in the snapshot does not restore.
    #[error(transparent)]
    State(#[from] crate::ca::SnapshotError),
}

type StoredSnapshot = (SnapshotMeta<NodeId, CaPeer>, Vec<u8>);

fn load_snapshot(tree: &sled::Tree) -> Result<Option<StoredSnapshot>, OpenError> {
    match (tree.get(KEY_META)?, tree.get(KEY_DATA)?) {
        (None, None) => Ok(None),
        (Some(meta), Some(data)) => {
            let meta = serde_json::from_slice(&meta).map_err(OpenError::Meta)?;
            Ok(Some((meta, data.to_vec())))
        }
        _ => Err(OpenError::Incomplete),
    }
}

async fn save_snapshot(
    db: &sled::Db,
    tree: &sled::Tree,
    meta: &SnapshotMeta<NodeId, CaPeer>,
    data: &[u8],
) -> Result<(), StorageError> {
    let sig = Some(meta.signature());
    let meta_bytes =
        serde_json::to_vec(meta).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
    let mut batch = sled::Batch::default();
    batch.insert(KEY_META, meta_bytes);
    batch.insert(KEY_DATA, data);
    tree.apply_batch(batch)
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
    crate::raft::log_store::flush_durably(db)
        .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
    Ok(())
}

impl SledStateMachine {
    /// Opens the state machine on `db`, restoring the CA state from the persisted snapshot if
    /// there is one.
    pub fn open(db: &sled::Db) -> Result<Self, OpenError> {
        let snapshots = db.open_tree(SNAPSHOT_TREE)?;
        let applied = match load_snapshot(&snapshots)? {
            None => Applied::default(),
            Some((meta, data)) => Applied {
                ca: CaState::restore(&data)?,
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
                reservations: Reservations::default(),
            },
        };
        Ok(Self {
            state: SharedState(Arc::new(RwLock::new(applied))),
            db: db.clone(),
            snapshots,
        })
    }

    /// The shared applied state, for reads.
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

/// Builds snapshots from the current applied state.
#[derive(Debug)]
pub struct SledSnapshotBuilder {
    state: SharedState,
    db: sled::Db,
    snapshots: sled::Tree,
}

impl RaftSnapshotBuilder<TypeConfig> for SledSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_log_id, last_membership) = {
            let applied = self.state.read();
            (
                applied.ca.snapshot(),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        let snapshot_id = match &last_log_id {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        save_snapshot(&self.db, &self.snapshots, &meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = SledSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, CaPeer>), StorageError> {
        let applied = self.state.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.state.write();
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                // A leader's blank entry still advances the CA's applied index.
                EntryPayload::Blank => applied.ca.apply(entry.log_id.index, &Command::Noop),
                EntryPayload::Normal(cmd) => {
                    let response = applied.ca.apply(entry.log_id.index, &cmd);
                    applied.reservations.applied(&cmd);
                    response
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    applied.ca.apply(entry.log_id.index, &Command::Noop)
                }
            };
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SledSnapshotBuilder {
            state: self.state.clone(),
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, CaPeer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let ca = CaState::restore(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        save_snapshot(&self.db, &self.snapshots, meta, &data).await?;
        let mut applied = self.state.write();
        applied.ca = ca;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored =
            load_snapshot(&self.snapshots).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Presigned;

    fn signed(serials: &[Option<u64>]) -> Command {
        Command::IssueSigned {
            now_ms: 0,
            ca_key_id: 1,
            requests: vec![],
            signatures: serials
                .iter()
                .map(|s| {
                    s.map(|serial| Presigned {
                        serial,
                        signature: [0; 64],
                        body_sha256: [0; 32],
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn reservations_add_up_and_are_released_by_apply_or_by_their_own_token() {
        let mut r = Reservations::default();
        assert_eq!(r.next_serial_after(5), 5);
        let a = r.reserve(5, 3);
        let b = r.reserve(8, 2);
        assert_eq!(r.next_serial_after(5), 10);
        // Applying batch a (first presigned serial 5, after a request with no serial) releases it.
        r.applied(&signed(&[None, Some(5), Some(6), Some(7)]));
        assert_eq!(r.next_serial_after(8), 10);
        // Releasing a again is harmless; a stale token does not drop b.
        r.release(5, a);
        r.release(8, a);
        assert_eq!(r.next_serial_after(8), 10);
        r.release(8, b);
        assert_eq!(r.next_serial_after(8), 8);
        // Entries that are not presigned, or carry no serial, release nothing.
        let c = r.reserve(8, 1);
        r.applied(&Command::Noop);
        r.applied(&signed(&[None]));
        assert_eq!(r.next_serial_after(8), 9);
        // A batch expecting no new MIC reserves nothing.
        r.release(8, c);
        r.reserve(8, 0);
        assert_eq!(r.next_serial_after(8), 8);
    }
}
