//! NexTrust: the fabric's certificate authority and verifier, as a node runs it.
//!
//! A small set of CA nodes runs an openraft group whose state machine ([`ca::CaState`]) issues,
//! renews and revokes Model Identity Certificates ([`mic`]) for nodes, models and agents;
//! revocations are committed through Raft and spread by gossip as signed deltas. This crate is
//! the runtime part (tokio, sled, openraft, tokio-rustls); the sans-IO part — the MIC format, the
//! CA state machine, revocations, Groth16 attestations, inline verification and the raw-key TLS
//! configurations — is `nexus-trust-core`, whose modules are re-exported here under the same
//! paths.
//!
//! Module map:
//! - [`raft`] — openraft type config, seeded runtime, sled log + state-machine storage, the
//!   authenticated (TLS 1.3, raw Ed25519 keys) transport over TCP, and the CA node handle an
//!   actor drives.
//! - [`mic`], [`ca`], [`zk`], [`revocation`], [`verify`], [`engine`], [`tls`] — re-exported
//!   from `nexus-trust-core` (`tls`: Ed25519 node keys as RFC 7250 raw public keys in rustls,
//!   the provider, configurations and key-checking verifiers the CA links and NexStream share).

pub use nexus_trust_core::{ca, engine, mic, revocation, tls, verify, zk};

pub mod raft;
