//! The CA state machine: a sans-IO, deterministic core that applies committed [`Command`]s in log
//! order. Applying the same log on every replica yields byte-identical certificates.
//!
//! The Raft layer treats [`Command`] and [`Response`] as opaque serde types and calls only
//! [`CaState::apply`], [`CaState::snapshot`] and [`CaState::restore`].

use serde::{Deserialize, Serialize};

/// An entry of the CA's replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing (a leader's no-op, a read barrier).
    Noop,
}

/// What applying a [`Command`] produced; returned to the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Nothing to report.
    Done,
}

/// An error restoring a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("CA snapshot is corrupt: {0}")]
pub struct SnapshotError(pub String);

/// The CA's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// Index of the last applied log entry.
    pub last_applied: u64,
}

impl CaState {
    /// Applies the entry at log `index`. Deterministic: depends only on `self`, `index` and `cmd`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Response {
        self.last_applied = index;
        match cmd {
            Command::Noop => Response::Done,
        }
    }

    /// The whole state as deterministic bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The state a [`CaState::snapshot`] described.
    pub fn restore(bytes: &[u8]) -> Result<CaState, SnapshotError> {
        serde_json::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))
    }
}
