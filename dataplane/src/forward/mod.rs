//! The forwarder: a data-plane thread that receives NexLink frames over UDP in batches, drops
//! those from sources the FIB generation does not allow ([`ForwarderConfig::source_check`]),
//! checks the rest, delivers frames for local services, and sends the others on to the FIB's
//! next hop.
//!
//! What it does: [`decide`] is the per-datagram decision as a pure function (bytes and one
//! table generation in, a [`Verdict`] out), the definition every target is held to
//! ([`crate::conformance`]). [`Forwarder::spawn`] starts the loop described on [`Forwarder`] on its own OS
//! thread over any [`PacketIo`] backend; [`ForwarderHandle`] reads its [`ForwarderCounters`]
//! (forwarded, delivered locally, dropped per [`DROP_REASONS`] label, batches, FIB generation),
//! replaces its [`LocalEndpoints`] and shuts it down. New FIB generations reach it through the
//! [`Fib`](crate::fib::Fib) handle it was started with: each receive batch is looked up in one
//! generation.
//!
//! Backends ([`PacketIo`], one conformance suite in `dataplane/tests/forward.rs`):
//! - [`UdpIo`], the portable one: a non-blocking std UDP socket, `poll(2)` only when idle; on
//!   Linux one `recvmmsg` and one `sendmmsg` per batch, elsewhere `recv_from`/`send_to` per
//!   datagram;
//! - [`UringIo`], Linux io_uring: multishot `recvmsg` into a provided buffer ring and
//!   `sendmsg` batches, one `io_uring_enter` each (the only module allowed `unsafe`).
//!
//! Both send a run of consecutive frames to one next hop with equal sizes (the last may be
//! shorter) as one UDP GSO send (`UDP_SEGMENT`, Linux 4.18+, probed when the backend is made;
//! [`ForwarderConfig::gso`], on by default): the kernel emits the same datagrams, in order, but
//! the socket layer is crossed once per run. A GSO send the kernel refuses is resent frame by
//! frame without overtaking any later frame to that next hop, and its segment size is not
//! offered to GSO again; [`ForwarderCounters`] counts `gso_sends`, `gso_segments` and
//! `gso_fallbacks` ([`IoStats`]).
//!
//! What it does not do (yet): Prometheus export (the control plane reads the counter snapshot
//! and exports it), ECN marking or queueing by traffic class, split horizon (a frame may be sent
//! back where it came from if the FIB says so), UDP GRO on receive, grouping a batch's frames by
//! next hop so interleaved flows form GSO runs, busy-polling before parking.
//!
//! # Call order
//!
//! `Fib::new` (control plane) → `UdpIo::bind` → [`Forwarder::spawn`] → any number of
//! `Fib::install` / [`ForwarderHandle::set_local_endpoints`] / [`ForwarderHandle::counters`]
//! → [`ForwarderHandle::shutdown`] (or drop the handle).

mod batch;
mod counters;
mod decide;
mod forwarder;
mod io;
mod local;
mod udp;
#[cfg(target_os = "linux")]
mod uring;

pub use batch::{BATCH_MAX, DATAGRAM_BYTES_MAX, PacketBatch};
pub use counters::{DROP_REASON_COUNT, DROP_REASONS, ForwarderCounters};
pub use decide::{DropReason, Verdict, decide};
pub use forwarder::{
    CountersReader, Forwarder, ForwarderConfig, ForwarderError, ForwarderHandle,
    RECV_ERRORS_CONSECUTIVE_MAX, RECV_TIMEOUT_MS_MAX, flow_hash,
};
pub use io::{IoStats, PacketIo};
pub use local::{LOCAL_ENDPOINTS_MAX, LocalEndpoints, LocalEndpointsFull};
pub use udp::{SEND_WAIT_MS_MAX, UdpIo};
#[cfg(target_os = "linux")]
pub use uring::{RECV_BUFFER_BYTES, RECV_BUFFERS, UringIo};
