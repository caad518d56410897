//! [`PacketIo`]: the hardware boundary of the forwarder — batched datagram receive and send.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::batch::PacketBatch;

/// What a backend counted about its own sends: UDP GSO (`UDP_SEGMENT`) use. Monotonic; the
/// forwarder copies it into its [`super::ForwarderCounters`] after every batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Send calls (or ring entries) that carried two or more datagrams as GSO segments.
    pub gso_sends: u64,
    /// Datagrams sent as segments of those GSO sends.
    pub gso_segments: u64,
    /// GSO sends the kernel refused (`EINVAL`/`EMSGSIZE`, for example a segment too large for
    /// the route's MTU) whose datagrams were then sent one by one; the segment size is not
    /// offered to GSO again.
    pub gso_fallbacks: u64,
}

/// Batched datagram I/O on one bound socket (or ring): what a forwarding backend implements.
///
/// The portable backend is [`super::UdpIo`] (std sockets + `poll`); an io_uring backend will be
/// the second implementation, and both run the same conformance suite
/// (`dataplane/tests/forward.rs`). The contract, which that suite checks:
///
/// - [`recv_batch`](Self::recv_batch) appends received datagrams to `batch` (source address in
///   each slot) until the batch is full or no more are ready, waiting at most `timeout` for the
///   first one. It returns how many it appended; `Ok(0)` means the timeout passed with nothing
///   received (the forwarder then checks for shutdown). It must not block longer than `timeout`
///   (plus scheduling noise), so shutdown stays bounded. A datagram longer than
///   [`super::DATAGRAM_BYTES_MAX`] may be truncated to it.
/// - [`send_batch`](Self::send_batch) sends slots `from..batch.len()` in order, each to its
///   slot's address, like `sendmmsg`: it returns how many it sent starting at `from` (at least
///   one), or an error if the datagram at `from` could not be sent. The caller skips that one
///   and calls again for the rest. Sending must not block indefinitely.
/// - Neither allocates per datagram.
/// - A backend may send consecutive datagrams to one address as one UDP GSO send (the kernel
///   splits it into the same datagrams); it reports them as sent or failed together, still in
///   order. [`set_gso`](Self::set_gso) turns this off; [`stats`](Self::stats) counts it.
pub trait PacketIo: Send {
    /// Receives into `batch` (appending); see the trait docs.
    fn recv_batch(&mut self, batch: &mut PacketBatch, timeout: Duration) -> io::Result<usize>;

    /// Sends `batch[from..]`; see the trait docs.
    fn send_batch(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize>;

    /// The address this backend receives on.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Turns UDP GSO on sends on or off; returns whether it is on (`false` where the kernel or
    /// the backend has none). The default has none.
    fn set_gso(&mut self, enabled: bool) -> bool {
        let _ = enabled;
        false
    }

    /// The backend's own counters (GSO use). The default counts nothing.
    fn stats(&self) -> IoStats {
        IoStats::default()
    }
}
