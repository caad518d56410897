//! The Raft-replicated CA in the simulator: scenarios with a `[ca]` table run 1–7 CA voters,
//! each the real [`nexus_trust::raft::CaNode`] inside a turmoil host, plus client hosts that
//! issue, renew, revoke, get and list concurrently while the timeline partitions, kills and
//! restarts voters; then check the recorded history for linearizability
//! ([`linearizability`]) and the voters' final states for agreement.
//!
//! # What runs
//!
//! - **Voters** `n1..nN`: `CaNode<TlsTransport<TurmoilTransport>>` ([`transport`]) with the
//!   production Raft layer (openraft, sled log and state machine, framed peer links,
//!   forwarding) over the node's authenticated links: TLS 1.3 with node keys derived from the
//!   run seed, the link policy admitting the voters (docs/protocols/ca-raft.md). TLS draws its
//!   handshake randomness from the OS, which changes the bytes on the wire but not their
//!   lengths or timing, so runs stay reproducible. openraft's
//!   only randomness (election timeouts) comes from `SeededRuntime`'s thread RNG, which
//!   `CaNode::start` seeds from the voter's seed (derived from the run seed and its boot count);
//!   the CA clock stamped into commands is turmoil's virtual time. Each voter also serves an
//!   admin endpoint standing in for the node's admin API (`runner`).
//! - **Storage**: each voter's `sled::Db` is opened with `temporary(true)` and held by the
//!   simulator, so a `kill` (turmoil crash: the runtime, every task, the listener and the peer
//!   links are dropped) and `restart` (a new `CaNode::start` on the same `Db`) model a process
//!   crash whose disk survives. What it does **not** model: losing writes sled had not flushed
//!   (the same in-memory `Db` object survives, so unflushed pages survive too — the kill -9
//!   tests in `trust/tests` cover real durability), torn writes, or disk errors.
//! - **Clients** `c1..cK` (not addressable by timeline selectors; never partitioned or killed):
//!   each keeps one connection per voter and one operation outstanding, picks a voter, and on a
//!   failure or a deadline (`[ca] op_timeout`) records the attempt as "not applied" or "unknown"
//!   and retries at another voter — issues with the same request id, revokes, gets and lists as
//!   they are; renews are never retried (no request id: a blind retry could renew twice).
//!   Client `c1` bootstraps the CA first (a CA key derived from the seed, no circuits).
//! - **End**: at `duration` the driver heals every cut and restarts every killed voter; clients
//!   stop starting operations; after `[ca] settle`, `c1` reads every voter's whole state through
//!   that voter's linearizable read.
//!
//! # Determinism
//!
//! Everything runs on one thread in turmoil's virtual time: same seed, same trace hash (tested
//! across processes in `sim/tests/ca.rs`). The trace has every timeline action, every client
//! attempt with its result and times, each voter's final state size and any violation.

pub mod history;
pub mod linearizability;
pub mod revocation_spread;
pub mod runner;
pub mod transport;

pub use runner::run;
pub use transport::TurmoilTransport;
