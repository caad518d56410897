//! The CA on openraft 0.9: type config, seeded runtime, sled storage, TCP transport, node handle.
//!
//! What is here, bottom up:
//! - [`TypeConfig`] — openraft's type configuration: log entries carry [`crate::ca::Command`],
//!   applying one yields a [`crate::ca::Response`], nodes are `u64` ids with a [`CaPeer`] address.
//! - [`runtime`] — [`SeededRuntime`]: tokio with a seeded thread-local RNG, so election timeouts
//!   (openraft's only randomness) are a function of the node seed.
//! - [`log_store`] / [`state_machine`] — [`SledLogStore`] and [`SledStateMachine`] on the node's
//!   one `sled::Db` (trees `raft/log`, `raft/meta`, `raft/snapshot`); every append is one sled
//!   batch and one flush before openraft is told it is durable.
//! - [`wire`] / [`transport`] / [`network`] / [`server`] — length-prefixed frames over one
//!   persistent, multiplexed connection per peer ([`PeerLink`]); the listener serves Raft RPCs
//!   and client requests (writes, read indexes, membership changes, status).
//! - [`tls_transport`] / [`policy`] — [`TlsTransport`]: the links as mutually authenticated
//!   TLS 1.3 with the nodes' Ed25519 keys as raw public keys, and the [`LinkPolicy`] it
//!   enforces: only keys the policy admits complete a handshake, only voters send Raft RPCs
//!   (checked per frame), the policy follows the Raft membership. The protocol is specified in
//!   `docs/protocols/ca-raft.md`.
//! - [`node`] / [`batcher`] / [`client`] — [`CaNode`], the handle the TrustActor drives, and
//!   [`CaClient`] for nodes that are not CA members.
//!
//! What it does not do: check MICs on the links (a link authenticates the node key; whether
//! that key is a fabric member or a voter is the policy's question), or authenticate peers on
//! a plain [`TcpTransport`] — some tests and benchmarks use plain links; a node and the
//! simulator use [`TlsTransport`].

pub mod batcher;
pub mod bootstrap;
pub mod client;
pub mod log_store;
pub mod network;
pub mod node;
pub mod policy;
pub mod remote_read;
pub mod runtime;
pub mod server;
pub mod state_machine;
pub mod tls_transport;
pub mod transport;
pub mod wire;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use client::CaClient;
pub use log_store::SledLogStore;
pub use network::{LinkError, PeerLink};
pub use node::{
    CaClientError, CaNode, CaNodeConfig, CaRole, CaStatus, CaTimings, PresignStats, SnapshotPolicy,
    StartError,
};
pub use policy::{LinkPolicy, LinkStats, MessageKind, Refusal};
pub use remote_read::{CaAnswer, CaKeyEntry, CaQuery};
pub use runtime::{SeededRuntime, SeededThreadRng, seed_thread_rng, set_default_seed};
pub use state_machine::SledStateMachine;
pub use tls_transport::TlsTransport;
pub use transport::{TcpTransport, Transport};
pub use wire::FrameError;

/// Where a CA member is reached and who it is; the `Node` type of the Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CaPeer {
    /// The member's Raft listener (`host:port`), which also serves client requests.
    pub addr: String,
    /// The member's Ed25519 node id, lowercase hex.
    pub node: String,
}

impl fmt::Display for CaPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node, self.addr)
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the CA group.
    pub TypeConfig:
        D = crate::ca::Command,
        R = crate::ca::Response,
        NodeId = u64,
        Node = CaPeer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = SeededRuntime,
);

/// A Raft node id of the CA group.
pub type NodeId = u64;
/// A log entry of the CA group.
pub type Entry = openraft::Entry<TypeConfig>;
/// The openraft instance of the CA group.
pub type CaRaft = openraft::Raft<TypeConfig>;
/// A storage error in this type config.
pub type StorageError = openraft::StorageError<NodeId>;
