//! The Nexus data plane (in progress): the NexLink wire codec ([`wire`]), the compiled
//! forwarding table ([`fib`]), and the forwarder ([`forward`]): a thread that reads the FIB
//! without ever waiting on the control plane, over a batched I/O trait with a portable UDP
//! backend.
//!
//! The table compiler that installs generations is an actor in `nexus-actors`. Not built yet:
//! the io_uring backend, the node's UDP overlay wiring and the demo; see the README.
#![deny(missing_docs)]

pub mod fib;
pub mod forward;
pub mod wire;
