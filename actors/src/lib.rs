//! Nexus control-plane actors: the node's supervision tree ([`NodeSupervisor`]) and its children
//! — the gossip actor ([`GossipActor`]), the registry actor ([`RegistryActor`]), the trust actor
//! ([`TrustActor`]), the session actor ([`SessionActor`]) and the table compiler
//! ([`TableCompiler`]) — plus the node's metrics, identity key and the environment seams
//! (transport, storage) the simulator swaps out.
//!
//! Actors here own sockets, timers and mailboxes and nothing else; protocol logic lives in the
//! cores (`nexus-gossip`, `nexus-registry`, `nexus-trust-core`, `nexus-stream`). Actors talk by
//! messages — there are no locks shared between them. The admin HTTP server is a child too, but
//! it is defined by the `nexus` binary (`fabric/`), which composes the tree.
//!
//! The table compiler ([`TableCompiler`]) folds static routes and membership into forwarding-table
//! generations for the data plane.
//!
//! The registry actor ([`RegistryActor`]) owns the capability registry core: local
//! registrations (persisted), signed adverts spread through the gossip actor's broadcast
//! overlay, anti-entropy, intent resolution and the intent route table.
//!
//! The trust actor ([`TrustActor`]) runs the node's CA Raft member (CA voters) or a client of
//! the CA group and carries out the commands of the node's trust engine
//! (`nexus_trust::engine::TrustEngine`, which decides when to form the group, bootstrap the CA,
//! obtain or renew the node's own certificate and poll revocations); it keeps the node's
//! revocation set (revocations arrive by gossip and by polling the CA).
//!
//! The session actor ([`SessionActor`]) holds the node's NexStream sessions (`nexus-stream`):
//! one MIC-authenticated connection per peer node, carried through the data planes, opened on
//! demand and closed when idle, when the peer goes down or when its MIC is revoked.
#![deny(missing_docs)]

pub mod env;
mod gossip_actor;
mod identity;
pub mod metrics;
mod registry_actor;
pub mod session_actor;
mod supervisor;
mod table_compiler;
mod task;
pub mod trust_actor;

pub use gossip_actor::{
    GossipActor, GossipArgs, GossipMsg, GossipSecurity, GossipState, KEYRING_QUERIES_MAX,
    KEYRING_TIMEOUT_MAX, KNOWN_PEERS_MAX, persist_keyring_file, read_keyring_file,
};
pub use identity::{IdentityError, KEY_FILE, NodeKey};
pub use metrics::NodeMetrics;
pub use registry_actor::{
    INBOX_CAPACITY, KeyedResolution, Registered, RegistryActor, RegistryArgs, RegistryChanges,
    RegistryInbox, RegistryInput, RegistryMsg, RegistrySettings, RegistryState, Scope, ServiceView,
    StorageStore, registry_inbox,
};
pub use session_actor::{
    ProbeError, ProbeRequest, ProbeResult, ProbeSignal, SessionActor, SessionArgs, SessionMsg,
    SessionView, StreamSettings,
};
pub use supervisor::{
    ChildSpec, ChildStatus, NodeExit, NodeSupervisor, RestartPolicy, SupervisorArgs, SupervisorMsg,
    SupervisorState, TreeSnapshot,
};
pub use table_compiler::{
    FibView, RouteStatus, TableArgs, TableCompiler, TableError, TableGeneration, TableMsg,
    parse_node_id, parse_routing_key, routing_key_hex,
};
pub use trust_actor::{
    CaAccess, CaSettings, HandoffTcp, TrustActor, TrustArgs, TrustInbox, TrustInput, TrustMsg,
    TrustView, trust_inbox,
};
