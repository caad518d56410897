//! [`UdpIo`]: the portable backend — a non-blocking std `UdpSocket`, `poll(2)` for the wait;
//! on Linux `recvmmsg`/`sendmmsg` batches and UDP GSO on sends.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::SockRef;

use super::batch::PacketBatch;
use super::io::{IoStats, PacketIo};

/// How long a send may wait for room in the socket's send buffer before the datagram counts as
/// failed. Loopback and most NICs drop rather than block, so this bounds a rare case.
pub const SEND_WAIT_MS_MAX: u16 = 10;

/// Most bytes one GSO send carries (all its segments together): below the 64 KiB IP datagram
/// limit with room for IPv4/IPv6 and UDP headers.
pub(crate) const GSO_BYTES_MAX: usize = 60_000;

/// The portable [`PacketIo`] backend: one non-blocking std [`UdpSocket`].
///
/// On Linux, receiving is one `recvmmsg` per batch (up to the batch's free slots, straight into
/// them) and `poll(2)` only when nothing at all was ready; sending is one `sendmmsg` per batch.
/// Where the kernel has UDP GSO (`UDP_SEGMENT`, Linux 4.18; probed when the backend is made),
/// consecutive datagrams to the same address whose sizes are equal (the last may be shorter)
/// go as one message with a `UDP_SEGMENT` control message: the kernel sends them as separate
/// datagrams, but the socket layer is crossed once. A GSO send the kernel refuses (`EINVAL` or
/// `EMSGSIZE`, for example a segment larger than the route's MTU allows) is sent again without
/// GSO, and that segment size is not offered to GSO again ([`IoStats::gso_fallbacks`]).
///
/// Elsewhere it is one `recv_from` / `send_to` per datagram.
///
/// The `mmsghdr` arrays are made once per thread on first use (they hold raw pointers, so they
/// stay with the thread that uses them rather than in this `Send` value); nothing is allocated
/// per batch after that.
#[derive(Debug)]
pub struct UdpIo {
    socket: UdpSocket,
    /// The socket is IPv6 (source addresses are `sockaddr_in6`).
    ipv6: bool,
    /// GSO is supported by the kernel (probed at construction).
    gso_supported: bool,
    /// GSO is on (supported and not turned off).
    gso: bool,
    /// Segment sizes at or above this are not offered to GSO (one was refused).
    gso_refused_from: usize,
    stats: IoStats,
}

impl UdpIo {
    /// Binds a UDP socket to `addr` (use port 0 for an ephemeral port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Uses an already bound socket (it is switched to non-blocking mode).
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let gso_supported = gso_supported(&socket);
        let ipv6 = socket.local_addr()?.is_ipv6();
        Ok(UdpIo {
            socket,
            ipv6,
            gso_supported,
            gso: gso_supported,
            gso_refused_from: usize::MAX,
            stats: IoStats::default(),
        })
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
        // One bounded wait at most: a full send buffer that stays full fails the datagram
        // instead of stalling the forwarder.
        let mut waited = false;
        loop {
            match self.send_some(batch, from) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    waited = true;
                    let wait = Duration::from_millis(SEND_WAIT_MS_MAX.into());
                    let _ready = self.wait(PollFlags::POLLOUT, wait)?;
                }
                result => return result,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn set_gso(&mut self, enabled: bool) -> bool {
        self.gso = enabled && self.gso_supported;
        self.gso
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

/// Whether the kernel has UDP GSO (`UDP_SEGMENT`, Linux 4.18) for `socket`.
#[cfg(target_os = "linux")]
pub(crate) fn gso_supported(socket: &UdpSocket) -> bool {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn gso_supported(_socket: &UdpSocket) -> bool {
    false
}

#[cfg(target_os = "linux")]
mod mmsg {
    use std::cell::RefCell;
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;
    use nix::sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
    };

    use super::super::batch::{BATCH_MAX, DATAGRAM_BYTES_MAX, PacketBatch};
    use super::{GSO_BYTES_MAX, UdpIo};

    /// The `mmsghdr` arrays of one thread: they hold raw pointers (not `Send`), so they live in
    /// a thread-local, made on first use.
    struct Headers {
        /// Whether `recv` was last used on an IPv6 socket: the kernel shrinks each header's
        /// `msg_namelen` to the address it wrote, so a socket of the other family needs fresh
        /// headers.
        recv_ipv6: bool,
        recv: MultiHeaders<SockaddrStorage>,
        send: MultiHeaders<SockaddrStorage>,
        /// Send headers with room for one `UDP_SEGMENT` control message each.
        gso: MultiHeaders<SockaddrStorage>,
    }

    impl Headers {
        fn new(recv_ipv6: bool) -> Headers {
            Headers {
                recv_ipv6,
                recv: MultiHeaders::preallocate(BATCH_MAX, None),
                send: MultiHeaders::preallocate(BATCH_MAX, None),
                gso: MultiHeaders::preallocate(BATCH_MAX, Some(nix::cmsg_space!(u16))),
            }
        }
    }

    thread_local! {
        static HEADERS: RefCell<Option<Headers>> = const { RefCell::new(None) };
    }

    fn with_headers<R>(ipv6: bool, f: impl FnOnce(&mut Headers) -> R) -> R {
        HEADERS.with(|cell| {
            let mut headers = cell.borrow_mut();
            let headers = match &mut *headers {
                Some(h) if h.recv_ipv6 == ipv6 => h,
                Some(h) => {
                    h.recv = MultiHeaders::preallocate(BATCH_MAX, None);
                    h.recv_ipv6 = ipv6;
                    h
                }
                slot @ None => slot.insert(Headers::new(ipv6)),
            };
            f(headers)
        })
    }

    fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }

    /// One send message planned from the batch: `frames` consecutive slots from `start`.
    #[derive(Clone, Copy, Default)]
    struct Message {
        start: usize,
        frames: usize,
    }

    impl UdpIo {
        /// One `recvmmsg` into the batch's free slots, without waiting.
        pub(super) fn drain(&mut self, batch: &mut PacketBatch) -> io::Result<usize> {
            let free = batch.free_slots().len();
            if free == 0 {
                return Ok(0);
            }
            let fd = self.socket.as_raw_fd();
            let ipv6 = self.ipv6;
            let mut lens = [0usize; BATCH_MAX];
            let mut sources: [Option<SocketAddr>; BATCH_MAX] = [None; BATCH_MAX];
            let received = loop {
                // A fresh borrow of the slots per attempt: `recvmmsg` ties them to the headers.
                let attempt = with_headers(ipv6, |headers| {
                    let mut slots = batch.free_slots();
                    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH_MAX] =
                        std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or(&mut []))]);
                    let flags = MsgFlags::MSG_DONTWAIT;
                    let results = recvmmsg(
                        fd,
                        &mut headers.recv,
                        iovs.iter_mut().take(free),
                        flags,
                        None,
                    )?;
                    let mut count = 0;
                    for (index, message) in results.enumerate() {
                        lens[index] = message.bytes.min(DATAGRAM_BYTES_MAX);
                        sources[index] = message.address.as_ref().and_then(to_std);
                        count = index + 1;
                    }
                    Ok(count)
                });
                match attempt {
                    Ok(count) => break count,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => return Ok(0),
                    Err(e) => return Err(io::Error::from(e)),
                }
            };
            // A datagram without an IPv4/IPv6 source cannot happen on a UDP socket; were it to,
            // receiving stops before it (the slots must stay in order); the rest are lost.
            let mut committed = 0;
            for (len, source) in lens.iter().zip(&sources).take(received) {
                let Some(source) = source else { break };
                batch.commit(*len, *source);
                committed += 1;
            }
            Ok(committed)
        }

        /// One `sendmmsg` from `from`: GSO messages where they apply, else one datagram each.
        pub(super) fn send_some(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
            if from >= batch.len() {
                return Ok(0);
            }
            if self.gso {
                let (segment, _) = batch.get(from);
                let segment = segment.len();
                if segment < self.gso_refused_from && segment > 0 {
                    match self.send_gso(batch, from, segment) {
                        Ok(Some(sent)) => return Ok(sent),
                        Ok(None) => {}
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(nix::libc::EINVAL | nix::libc::EMSGSIZE)
                            ) =>
                        {
                            // The first message was refused: nothing was sent, so sending
                            // it again without GSO keeps the order.
                            self.gso_refused_from = segment;
                            self.stats.gso_fallbacks += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            self.send_plain(batch, from)
        }

        /// Sends from `from` as GSO messages of `segment`-byte segments, as far as datagrams are
        /// no longer than `segment`. `Ok(None)` if no message would carry two datagrams (the
        /// caller sends them plainly).
        fn send_gso(
            &mut self,
            batch: &PacketBatch,
            from: usize,
            segment: usize,
        ) -> io::Result<Option<usize>> {
            let mut messages = [Message::default(); BATCH_MAX];
            let mut count = 0;
            let mut index = from;
            let mut any_gso = false;
            while index < batch.len() {
                let (datagram, to) = batch.get(index);
                if datagram.len() > segment || datagram.is_empty() {
                    break;
                }
                let start = index;
                let mut bytes = datagram.len();
                index += 1;
                // A shorter datagram can only end a message.
                while datagram.len() == segment && index < batch.len() {
                    let (next, next_to) = batch.get(index);
                    if next_to != to
                        || next.len() > segment
                        || next.is_empty()
                        || bytes + next.len() > GSO_BYTES_MAX
                    {
                        break;
                    }
                    bytes += next.len();
                    index += 1;
                    if next.len() < segment {
                        break;
                    }
                }
                messages[count] = Message {
                    start,
                    frames: index - start,
                };
                any_gso |= index - start > 1;
                count += 1;
            }
            if !any_gso {
                return Ok(None);
            }
            let mut iovs: [IoSlice<'_>; BATCH_MAX] = [IoSlice::new(&[]); BATCH_MAX];
            for (slot, iov) in iovs.iter_mut().enumerate().take(index - from) {
                *iov = IoSlice::new(batch.get(from + slot).0);
            }
            let mut groups: [&[IoSlice<'_>]; BATCH_MAX] = [&[]; BATCH_MAX];
            let mut addrs: [Option<SockaddrStorage>; BATCH_MAX] = [None; BATCH_MAX];
            for (message, (group, addr)) in messages
                .iter()
                .zip(groups.iter_mut().zip(addrs.iter_mut()))
                .take(count)
            {
                let offset = message.start - from;
                *group = &iovs[offset..offset + message.frames];
                *addr = Some(SockaddrStorage::from(batch.get(message.start).1));
            }
            let segment_size = u16::try_from(segment).unwrap_or(u16::MAX);
            let fd = self.socket.as_raw_fd();
            let ipv6 = self.ipv6;
            let sent_messages = with_headers(ipv6, |headers| {
                let cmsgs = [ControlMessage::UdpGsoSegments(&segment_size)];
                sendmmsg(
                    fd,
                    &mut headers.gso,
                    groups.iter().take(count),
                    &addrs[..count],
                    cmsgs,
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(Iterator::count)
                .map_err(io::Error::from)
            })?;
            let mut sent = 0;
            for message in &messages[..sent_messages] {
                sent += message.frames;
                if message.frames > 1 {
                    self.stats.gso_sends += 1;
                    self.stats.gso_segments += message.frames as u64;
                }
            }
            Ok(Some(sent))
        }

        /// One `sendmmsg` of every datagram from `from`, one message each.
        fn send_plain(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
            let count = batch.len() - from;
            let mut iovs: [[IoSlice<'_>; 1]; BATCH_MAX] = [[IoSlice::new(&[])]; BATCH_MAX];
            let mut addrs: [Option<SockaddrStorage>; BATCH_MAX] = [None; BATCH_MAX];
            for (slot, (iov, addr)) in iovs.iter_mut().zip(addrs.iter_mut()).enumerate() {
                if slot == count {
                    break;
                }
                let (datagram, to) = batch.get(from + slot);
                *iov = [IoSlice::new(datagram)];
                *addr = Some(SockaddrStorage::from(to));
            }
            let fd = self.socket.as_raw_fd();
            let ipv6 = self.ipv6;
            with_headers(ipv6, |headers| {
                sendmmsg(
                    fd,
                    &mut headers.send,
                    iovs.iter().take(count),
                    &addrs[..count],
                    [],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(Iterator::count)
                .map_err(io::Error::from)
            })
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl UdpIo {
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

    fn send_some(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
        let mut sent = 0;
        let mut index = from;
        while index < batch.len() {
            let (datagram, to) = batch.get(index);
            match self.socket.send_to(datagram, to) {
                Ok(_) => {
                    sent += 1;
                    index += 1;
                }
                Err(e) if sent > 0 && e.kind() != io::ErrorKind::Interrupted => return Ok(sent),
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}
