//! [`UdpIo`]: the portable backend — a non-blocking std `UdpSocket`, `poll(2)` for the wait.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::SockRef;

use super::batch::PacketBatch;
use super::io::PacketIo;

/// How long a send may wait for room in the socket's send buffer before the datagram counts as
/// failed. Loopback and most NICs drop rather than block, so this bounds a rare case.
pub const SEND_WAIT_MS_MAX: u16 = 10;

/// The portable [`PacketIo`] backend: one non-blocking std [`UdpSocket`].
///
/// Receiving drains the socket with `recv_from` until the batch is full or it would block, and
/// calls `poll(2)` only when nothing at all was ready, so a loaded forwarder makes one syscall
/// per datagram and none for waiting. Sending is one `send_to` per datagram (a `sendmmsg`
/// variant would save roughly 20 % per datagram on this machine's kernel; not done yet).
#[derive(Debug)]
pub struct UdpIo {
    socket: UdpSocket,
}

impl UdpIo {
    /// Binds a UDP socket to `addr` (use port 0 for an ephemeral port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Uses an already bound socket (it is switched to non-blocking mode).
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(UdpIo { socket })
    }

    /// Asks the kernel for `recv_bytes` / `send_bytes` of socket buffer (it caps them at
    /// `net.core.rmem_max` / `wmem_max`). Larger receive buffers absorb bursts while the
    /// forwarder thread is descheduled.
    pub fn set_buffer_sizes(&self, recv_bytes: usize, send_bytes: usize) -> io::Result<()> {
        let socket = SockRef::from(&self.socket);
        socket.set_recv_buffer_size(recv_bytes)?;
        socket.set_send_buffer_size(send_bytes)
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    fn drain(&mut self, batch: &mut PacketBatch) -> io::Result<usize> {
        let mut received = 0;
        while let Some(slot) = batch.next_slot() {
            match self.socket.recv_from(slot) {
                Ok((len, from)) => {
                    batch.commit(len, from);
                    received += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued on the socket surfaces on the next receive; it says
                // nothing about the datagrams already taken, so it ends this drain only (the
                // next call reports it).
                Err(_) if received > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(received)
    }

    fn wait(&self, events: PollFlags, timeout: Duration) -> io::Result<bool> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), events)];
        match poll(&mut fds, timeout) {
            Ok(ready) => Ok(ready > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl PacketIo for UdpIo {
    fn recv_batch(&mut self, batch: &mut PacketBatch, timeout: Duration) -> io::Result<usize> {
        let received = self.drain(batch)?;
        if received > 0 || batch.is_full() {
            return Ok(received);
        }
        if !self.wait(PollFlags::POLLIN, timeout)? {
            return Ok(0);
        }
        self.drain(batch)
    }

    fn send_batch(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
        let mut sent = 0;
        let mut index = from;
        // One bounded wait per datagram at most: a full send buffer that stays full fails the
        // datagram instead of stalling the forwarder.
        let mut waited = false;
        while index < batch.len() {
            let (datagram, to) = batch.get(index);
            match self.socket.send_to(datagram, to) {
                Ok(_) => {
                    sent += 1;
                    index += 1;
                    waited = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    waited = true;
                    let wait = Duration::from_millis(SEND_WAIT_MS_MAX.into());
                    let _ready = self.wait(PollFlags::POLLOUT, wait)?;
                }
                Err(e) => return if sent > 0 { Ok(sent) } else { Err(e) },
            }
        }
        Ok(sent)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
