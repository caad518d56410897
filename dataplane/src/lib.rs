//! The Nexus data plane (in progress): the NexLink wire codec ([`wire`]), the compiled
//! forwarding table ([`fib`]), and the forwarder ([`forward`]): a thread that reads the FIB
//! without ever waiting on the control plane, over a batched I/O trait with two backends — a
//! portable UDP one and an io_uring one (multishot receive into a provided buffer ring, batched
//! sends), held to one conformance suite.
//!
//! The table compiler that installs generations is an actor in `nexus-actors`. Not built yet:
//! local endpoints from service registrations and the demo's use of the data plane; see the
//! README.
#![deny(missing_docs)]

pub mod fib;
pub mod forward;
pub mod wire;
