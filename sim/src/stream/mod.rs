//! NexStream in the simulator: scenarios with a `[stream]` table run a NexStream
//! [`Endpoint`](nexus_stream::Endpoint) per node — the sans-IO transport over quinn-proto with
//! MIC-authenticated sessions — on core mode's discrete-event engine: the same event queue
//! ([`crate::queue`]), network model ([`crate::net::Net`]: topology latency, jitter, loss,
//! duplication, reordering, bandwidth, partitions), seeds ([`crate::engine::derive_seed`]),
//! timeline, trace hash and report. No tokio, sockets or threads.
//!
//! # What runs
//!
//! - **Identities** ([`fixture`]): a CA key and every node's Ed25519 key derive from the run
//!   seed; the CA issues each node a node MIC (serial `i + 1`). Every endpoint trusts the CA
//!   key and is seeded from the run seed, so quinn's, rustls' and the key exchange's draws are
//!   the seed's too: same seed, same run.
//! - **Sessions**: node `i` opens a session to `i+1 … i+peers` (mod N) at time zero, and reopens
//!   one `reconnect` after it closed or was refused — the node's session manager in miniature.
//! - **Traffic** ([`payload`]): both ends of every established session send each mode as a
//!   Poisson process at the mode's `rate`: reliable-ordered messages round-robin over `flows`
//!   flows, reliable-unordered messages, best-effort datagrams expiring `expiry` after they are
//!   sent, probabilistic datagrams with probability `p`. Every payload names itself (sender,
//!   receiver, flow, index, expiry) and its body is a function of that name, so receivers'
//!   deliveries are checked byte for byte without keeping copies.
//! - **Timeline**: `partition` (two-way or one-way), `heal`, `loss`, and `revoke` — the CA
//!   revokes the nodes' MICs and every other node applies the revocation
//!   ([`Endpoint::update_trust`](nexus_stream::Endpoint::update_trust)) `delay` later. Crashes,
//!   pauses and clock skew are refused when the scenario is loaded.
//! - **Settle**: at `duration` traffic stops, every cut is healed and loss is set to 0; the run
//!   continues for `[stream] settle`, then the checkers give their verdicts
//!   ([`crate::invariants::stream`]).
//!
//! Virtual time is `Instant`s counted from one base instant read once per process (quinn uses
//! only differences of instants); MIC validity is checked on Unix milliseconds anchored at
//! [`fixture::ANCHOR_UNIX_MS`] for virtual time zero.

mod engine;
pub mod fixture;
pub mod payload;

pub use engine::StreamSim;
