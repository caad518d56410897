//! The Nexus data plane: the NexLink wire codec ([`wire`]), the compiled forwarding table
//! ([`fib`]; next hops may rewrite the routing key, MPLS-style; each generation carries the
//! source IPs it accepts frames from), and the forwarder ([`forward`], which drops frames from
//! any other source before looking at them):
//! a thread that reads the FIB without ever waiting on the control plane, over a batched I/O
//! trait with two backends — a portable UDP one (`recvmmsg`/`sendmmsg`) and an io_uring one
//! (multishot receive into a provided buffer ring, batched sends), both with UDP GSO on sends —
//! held to one conformance suite. [`conformance`] holds the packet-level cases (bytes in,
//! verdict out) that every forwarding target — this forwarder's [`forward::decide`], the P4
//! switch target, the XDP NIC target — must pass.
//!
//! The table compiler that installs generations (static routes and the registry's intent
//! routes, plus the local-endpoint table of registered services) is an actor in `nexus-actors`.
//! This crate publishes nothing to hardware targets (`nexus-p4`, `nexus-nic`); the `nexus`
//! binary does (see the README).
#![deny(missing_docs)]

pub mod conformance;
pub mod fib;
pub mod forward;
pub mod wire;
