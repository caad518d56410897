//! The Raft log on sled: entries in tree `raft/log` keyed by big-endian index, vote / committed /
//! last-purged log id in tree `raft/meta`.
//!
//! Durability: [`SledLogStore::append`] writes all entries of one call as one sled batch and
//! flushes before it reports the entries durable to openraft; votes are flushed before
//! `save_vote` returns. A node killed at any point comes back with every entry it acknowledged.

#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the error type its storage traits require"
)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, NodeId, StorageError, TypeConfig};

/// Name of the sled tree holding log entries.
pub const LOG_TREE: &str = "raft/log";
/// Name of the sled tree holding the vote, the committed and the last purged log id.
pub const META_TREE: &str = "raft/meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The CA's Raft log and vote, stored in the node's sled database. Cheap to clone (sled trees
/// are shared handles); the clone is also the log reader openraft asks for.
#[derive(Clone, Debug)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Flushes `db` to disk on the calling task. sled's `flush_async` completes on sled's own I/O
/// thread pool: when it completes is up to the OS scheduler (so a simulated run is not
/// reproducible), and with several flushes in flight the pool's threads were seen waiting on each
/// other (a hang). A synchronous flush has neither problem; on a multi-thread runtime it runs
/// under `block_in_place` so the worker's other tasks move to another thread meanwhile.
pub(crate) fn flush_durably(db: &sled::Db) -> Result<(), sled::Error> {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
        tokio::task::block_in_place(|| db.flush()).map(|_| ())
    } else {
        db.flush().map(|_| ())
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_error(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

impl SledLogStore {
    /// Opens (creating if absent) the log trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
        })
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        err: fn(openraft::AnyError) -> StorageIOError<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| err(openraft::AnyError::new(&e)))?
        else {
            return Ok(None);
        };
        decode(&bytes)
            .map(Some)
            .map_err(|e| err(openraft::AnyError::new(&e)).into())
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        err: fn(openraft::AnyError) -> StorageIOError<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| err(openraft::AnyError::new(&e)))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| err(openraft::AnyError::new(&e)))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        flush_durably(&self.db).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError> {
        let Some((_, bytes)) = self.log.last().map_err(|e| StorageIOError::read_logs(&e))? else {
            return Ok(None);
        };
        let entry: Entry = decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(Some(*entry.get_log_id()))
    }

    /// Number of entries currently held (for tests and status).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (key, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry: Entry = decode(&bytes).map_err(|e| {
                let index = key
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                StorageIOError::read_log_at_index(index, &e)
            })?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(KEY_LAST_PURGED, StorageIOError::read_logs)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, StorageIOError::write_vote)?;
        flush_durably(&self.db).map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE, StorageIOError::read_vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // Not flushed on purpose: a stale committed id only means re-applying fewer entries at
        // start-up; openraft re-learns the rest from the leader.
        self.write_meta(KEY_COMMITTED, &committed, StorageIOError::write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED, StorageIOError::read)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = match encode(&entry) {
                Ok(b) => b,
                Err(e) => {
                    let err = StorageIOError::write_log_entry(*entry.get_log_id(), &e);
                    callback.log_io_completed(Err(io_error(e)));
                    return Err(err.into());
                }
            };
            batch.insert(&index_key(entry.get_log_id().index), bytes);
        }
        let result = match self.log.apply_batch(batch) {
            Ok(()) => flush_durably(&self.db),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(io_error(e)));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(log_id.index)..).keys() {
            batch.remove(key.map_err(|e| StorageIOError::write_logs(&e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // The purge mark goes first: sled recovers a prefix of writes, so a crash never leaves
        // entries removed without the mark that says they were purged.
        self.write_meta(KEY_LAST_PURGED, &log_id, StorageIOError::write_logs)?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(log_id.index)).keys() {
            batch.remove(key.map_err(|e| StorageIOError::write_logs(&e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush().await
    }
}
