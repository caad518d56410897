//! NexTrust: the fabric's certificate authority and verifier.
//!
//! A small set of CA nodes runs an openraft group whose state machine ([`ca::CaState`], sans-IO
//! and deterministic) issues, renews and revokes Model Identity Certificates ([`mic`]) for nodes,
//! models and agents. A MIC may commit (Poseidon) to hidden model properties; the holder proves
//! predicates over them with Groth16 proofs ([`zk`]) that any node verifies inline.
//! Revocations are committed through Raft and spread by gossip as signed deltas.
//!
//! Module map (each owns its files):
//! - [`mic`] — the MIC binary format, signing and verification (spec: `docs/trust.md`).
//! - [`ca`] — the CA state machine: commands, responses, snapshots, revocation deltas.
//! - [`zk`] — Poseidon commitments, the attestation circuit, Groth16 prove / verify / batch
//!   verify, prepared-key cache, snarkjs export.
//! - [`revocation`] — signed revocation deltas and the revocation set every node keeps.
//! - [`raft`] — openraft type config, seeded runtime, sled log + state-machine storage, the
//!   authenticated (TLS 1.3, raw Ed25519 keys) transport over TCP, and the CA node handle an
//!   actor drives.
//! - [`tls`] — Ed25519 node keys as RFC 7250 raw public keys in rustls: the provider, the
//!   configurations and the key-checking verifiers the CA links and NexStream share.
//! - [`verify`] — inline verification of a service's credentials (MIC + attestations) against
//!   what a node knows of the CA: the context the registry checks adverts with.

pub mod ca;
pub mod mic;
pub mod raft;
pub mod revocation;
pub mod tls;
pub mod verify;
pub mod zk;
