//! The Nexus P4 switch target: `nexus.p4` (P4_16, v1model) does in a switch what the software
//! forwarder does per datagram, and this crate is its control plane and its reference.
//!
//! What it does:
//! - [`program`]: the program's tables, actions, ids and bit widths, described once; builds
//!   the P4Info;
//! - [`entries`]: a table generation (routes, weighted next-hop groups, allowed sources) and
//!   the local endpoints as the program's entries, the P4Runtime updates between two states
//!   (INSERT/MODIFY/DELETE; selector members and weighted groups), and the checked decoder
//!   that applies an update;
//! - [`controller`]: the sans-IO record of what is installed and what was before (rollback);
//! - [`client`]: the P4Runtime gRPC client (arbitration on `StreamChannel`,
//!   `SetForwardingPipelineConfig`, `Write`, `Read`) that pushes each generation and restores
//!   the previous state when a push fails;
//! - [`publisher`]: a task that keeps one switch on the latest generation the table compiler
//!   hands it (reconnecting and reinstalling after a failure);
//! - [`reference`](mod@reference): the program executed in Rust, fed only through P4Runtime updates; it runs
//!   the data plane's packet-level conformance cases
//!   ([`nexus_dataplane::conformance`]) and must agree with the software forwarder on each.
//! - `testkit` (feature `testkit`, tests only): the P4Runtime test server of this crate's
//!   tests as a process other crates' tests start too.
//!
//! What it does not do: compile `nexus.p4` (no P4 compiler exists for this machine; see the
//! README for the p4c and BMv2 commands), forward IPv6, read the program's counters or
//! receive its digests over P4Runtime.
#![deny(missing_docs)]

pub mod client;
pub mod controller;
pub mod entries;
pub mod program;
pub mod proto;
pub mod publisher;
pub mod reference;
#[cfg(feature = "testkit")]
pub mod testkit;
