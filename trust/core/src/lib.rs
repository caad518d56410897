//! The sans-IO core of NexTrust, the fabric's certificate authority and verifier: everything a
//! node needs to check credentials and everything the CA decides, with no async runtime, storage
//! or network (no tokio, sled or openraft; rustls only with the `tls` feature). `nexus-trust`
//! runs the CA group over Raft on top of this crate and re-exports its modules; the registry,
//! NexStream and NexAPI depend on this crate alone.
//!
//! The CA state machine ([`ca::CaState`], deterministic) issues, renews and revokes Model
//! Identity Certificates ([`mic`]) for nodes, models and agents. A MIC may commit (Poseidon) to
//! hidden model properties; the holder proves predicates over them with Groth16 proofs ([`zk`])
//! that any node verifies inline. Revocations are signed records ([`revocation`]) every node
//! keeps in a verified set.
//!
//! Module map (each owns its files):
//! - [`mic`] — the MIC binary format, signing and verification (spec: `docs/trust.md`).
//! - [`ca`] — the CA state machine: commands, responses, snapshots, revocation deltas.
//! - [`zk`] — Poseidon commitments, the attestation circuit, Groth16 prove / verify / batch
//!   verify, prepared-key cache, snarkjs export.
//! - [`revocation`] — signed revocation deltas and the revocation set every node keeps.
//! - [`engine`] — the node's trust decisions (forming the CA group, bootstrap, reading the CA
//!   keys, obtaining and renewing the node MIC, polling revocations) as a sans-IO engine that
//!   emits commands the trust actor carries out.
//! - [`verify`] — inline verification of a service's credentials (MIC + attestations) against
//!   what a node knows of the CA: the context the registry checks adverts with.
//! - `tls` (feature `tls`) — Ed25519 node keys as raw public keys in TLS 1.3 (rustls): the
//!   provider, configurations and key checks the CA's Raft links and NexStream's handshake
//!   share.
//! - `testkit` (feature `testkit`, tests only) — seeded CA fixtures: a bootstrapped CA state,
//!   MIC requests, openings and attestations from fixed seeds.

pub mod ca;
pub mod engine;
pub mod mic;
pub mod revocation;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "tls")]
pub mod tls;
pub mod verify;
pub mod zk;
