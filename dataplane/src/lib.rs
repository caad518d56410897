//! The Nexus data plane (in progress): the NexLink wire codec ([`wire`]) and the compiled
//! forwarding table ([`fib`]) that the forwarder reads without ever waiting on the control plane.
//!
//! Not built yet: the forwarder thread and its I/O backends (io_uring and portable), the UDP
//! overlay, the table compiler actor and the admin endpoints; see the README.
#![deny(missing_docs)]

pub mod fib;
pub mod wire;
