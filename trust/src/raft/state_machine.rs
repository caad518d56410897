//! The CA state machine behind openraft: [`CaState`] in memory, snapshots in sled.
//!
//! Applied state is not written to sled entry by entry. At start-up the state is the last
//! persisted snapshot (tree `raft/snapshot`), and openraft re-applies the committed log entries
//! after it. A snapshot is `CaState::snapshot()` bytes plus openraft's snapshot meta (last log id,
//! membership), written as one sled batch and flushed.

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

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
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
                EntryPayload::Normal(cmd) => applied.ca.apply(entry.log_id.index, &cmd),
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
