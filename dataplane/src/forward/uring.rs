//! [`UringIo`]: the io_uring backend — multishot `recvmsg` into a provided buffer ring, and
//! batched `sendmsg` (one `io_uring_enter` per batch).
//!
//! The only module of the crate allowed `unsafe`: sharing memory with the kernel through a ring
//! is unsafe by nature. Every `unsafe` block states the invariant it relies on.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, CancelBuilder, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, types};
use nix::libc;
use socket2::{SockAddr, SockRef};

use super::batch::{BATCH_MAX, DATAGRAM_BYTES_MAX, PacketBatch};
use super::io::{IoStats, PacketIo};
use super::udp::{GSO_BYTES_MAX, SEND_WAIT_MS_MAX, gso_supported};

/// Buffers in the provided buffer ring: datagrams the kernel can receive ahead of the forwarder
/// before the multishot receive ends with `ENOBUFS` (then further datagrams wait in the socket's
/// receive buffer until the ring is refilled and the receive resubmitted). A power of two.
pub const RECV_BUFFERS: u16 = 128;

/// Bytes of each provided buffer: the kernel's `io_uring_recvmsg_out` header (four `u32`), the
/// source address field, and [`DATAGRAM_BYTES_MAX`] of payload, rounded up to a cache line. A
/// longer datagram is truncated to [`DATAGRAM_BYTES_MAX`], as the [`PacketIo`] contract allows.
pub const RECV_BUFFER_BYTES: usize =
    (RECV_OUT_HEADER_BYTES + RECV_NAME_BYTES + DATAGRAM_BYTES_MAX).next_multiple_of(64);

/// `size_of::<io_uring_recvmsg_out>()`: namelen, controllen, payloadlen, flags.
const RECV_OUT_HEADER_BYTES: usize = 16;
/// Room for the source address in each buffer: large enough for IPv4 and IPv6.
const RECV_NAME_BYTES: usize = size_of::<libc::sockaddr_in6>();
/// The provided buffer group id (one group per receive ring).
const BUFFER_GROUP: u16 = 0;
/// `user_data` of the multishot receive (send entries use their batch index).
const RECV_USER_DATA: u64 = u64::MAX;
/// Submission entries of the receive ring: one multishot receive at a time.
const RECV_SQ_ENTRIES: u32 = 4;
/// Completion entries of the receive ring: each unread data completion holds one buffer, so at
/// most [`RECV_BUFFERS`] of them plus one final completion are ever pending.
const RECV_CQ_ENTRIES: u32 = 2 * RECV_BUFFERS as u32;
/// A send result slot not completed yet (no real result is this negative).
const SEND_PENDING: i32 = i32::MIN;

/// The io_uring [`PacketIo`] backend on one UDP socket.
///
/// Receiving: one multishot `IORING_OP_RECVMSG` picks a buffer from a provided buffer ring
/// ([`RECV_BUFFERS`] × [`RECV_BUFFER_BYTES`]) per datagram, with the source address in the buffer
/// ahead of the payload. [`recv_batch`](PacketIo::recv_batch) copies each completed datagram into
/// the batch, returns its buffer to the ring, and resubmits the receive whenever a completion
/// arrives without the "more" flag (the kernel ended it, for example when the ring ran dry).
/// Waiting is one `io_uring_enter` with a timeout, so it never blocks past `timeout`.
///
/// Sending: [`send_batch`](PacketIo::send_batch) submits up to [`BATCH_MAX`] `IORING_OP_SENDMSG`
/// entries with one `io_uring_enter` and waits for their completions. Each carries
/// `MSG_DONTWAIT`, so the kernel issues them in order during the submit and a full send buffer
/// fails the datagram (`EAGAIN`) instead of parking it for a retry that later datagrams could
/// overtake: order is kept without linking the entries (linked entries measured ~20 % slower
/// here). If a datagram fails but later ones were sent, the following calls report those from
/// the recorded results instead of sending them again, so the caller sees `sendmmsg` semantics.
/// Should entries still be in flight after [`SEND_WAIT_MS_MAX`] ms they are cancelled.
///
/// Receive and send use separate rings, so a send never has to set receive completions aside.
/// Nothing is allocated after construction. The receive is first submitted by the first
/// `recv_batch`, so on the thread that then owns the backend.
pub struct UringIo {
    // Declared first: dropped (closed) before the memory the kernel was given.
    recv_ring: IoUring,
    send_ring: IoUring,
    buffers: BufRing,
    /// The msghdr template of the multishot receive: only `msg_namelen` is set. Boxed so its
    /// address stays fixed while the receive is armed.
    recv_msg: Box<libc::msghdr>,
    send: Box<SendSlots>,
    /// Results of the last send batch when a failed datagram was followed by sent ones.
    send_done: Option<SendDone>,
    recv_armed: bool,
    /// A receive error seen after datagrams were already taken; reported by the next call.
    recv_error: Option<io::Error>,
    /// The kernel has UDP GSO (probed at construction).
    gso_supported: bool,
    /// GSO is on (supported and not turned off).
    gso: bool,
    /// Segment sizes at or above this are not offered to GSO (one was refused).
    gso_refused_from: usize,
    stats: IoStats,
    socket: UdpSocket,
}

// SAFETY: the raw pointers inside `UringIo` (the msghdr/iovec arrays, the buffer ring memory)
// point only into heap memory this value owns, or, for send iovecs, into the caller's batch for
// the duration of one `send_batch` call. Nothing is shared with another thread: moving the
// value moves sole ownership of that memory and of both rings (`IoUring` is itself `Send`).
unsafe impl Send for UringIo {}

impl UringIo {
    /// Binds a UDP socket to `addr` (use port 0 for an ephemeral port) and sets up the rings.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Uses an already bound socket (it is switched to non-blocking mode).
    ///
    /// Fails with [`io::ErrorKind::Unsupported`] or [`io::ErrorKind::PermissionDenied`] and a
    /// message saying why when io_uring is not available: disabled by
    /// `kernel.io_uring_disabled`, refused by a seccomp filter, or a kernel older than 6.0
    /// (provided buffer rings need 5.19, multishot `recvmsg` 6.0).
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        check_not_disabled()?;
        socket.set_nonblocking(true)?;
        let gso_supported = gso_supported(&socket);
        let recv_ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(RECV_CQ_ENTRIES)
            .build(RECV_SQ_ENTRIES)
            .map_err(|e| unavailable("creating the receive ring", e))?;
        let send_ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(2 * BATCH_MAX as u32)
            .build(BATCH_MAX as u32)
            .map_err(|e| unavailable("creating the send ring", e))?;
        let mut buffers = BufRing::new()?;
        for bid in 0..RECV_BUFFERS {
            buffers.push(bid);
        }
        buffers.publish();
        // SAFETY: the ring entries are RECV_BUFFERS page-aligned `BufRingEntry`s owned by
        // `buffers`, which is dropped only after `recv_ring` (field order; `Drop` cancels the
        // receive first), so they stay valid as long as the group is registered.
        unsafe {
            recv_ring.submitter().register_buf_ring_with_flags(
                buffers.entries.ptr.as_ptr() as u64,
                RECV_BUFFERS,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(|e| unavailable("registering the provided buffer ring (Linux 5.19+)", e))?;

        // SAFETY: `msghdr` is plain data (pointers, lengths, flags); all-zero is a valid value
        // (null pointers, zero lengths).
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = RECV_NAME_BYTES as libc::socklen_t;

        Ok(UringIo {
            recv_ring,
            send_ring,
            buffers,
            recv_msg,
            send: Box::new(SendSlots::new()),
            send_done: None,
            recv_armed: false,
            recv_error: None,
            gso_supported,
            gso: gso_supported,
            gso_refused_from: usize::MAX,
            stats: IoStats::default(),
            socket,
        })
    }

    /// Asks the kernel for `recv_bytes` / `send_bytes` of socket buffer (capped at
    /// `net.core.rmem_max` / `wmem_max`), as [`super::UdpIo::set_buffer_sizes`].
    pub fn set_buffer_sizes(&self, recv_bytes: usize, send_bytes: usize) -> io::Result<()> {
        let socket = SockRef::from(&self.socket);
        socket.set_recv_buffer_size(recv_bytes)?;
        socket.set_send_buffer_size(send_bytes)
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Queues the multishot receive (submitted by the next `io_uring_enter`).
    fn arm_recv(&mut self) {
        let entry = opcode::RecvMsgMulti::new(
            types::Fd(self.socket.as_raw_fd()),
            &*self.recv_msg as *const libc::msghdr,
            BUFFER_GROUP,
        )
        .build()
        .user_data(RECV_USER_DATA);
        // SAFETY: the entry points at `recv_msg` (boxed, owned by `self`, freed only after the
        // receive is cancelled in `Drop`) and at buffer group BUFFER_GROUP, registered for the
        // life of the ring; the socket fd outlives the ring the same way.
        let pushed = unsafe { self.recv_ring.submission().push(&entry) };
        pushed.expect("the receive ring holds one entry at a time");
        self.recv_armed = true;
    }

    /// Takes completed receives into `batch` until it is full or none are left; leaves the rest
    /// in the completion queue.
    fn drain_recv(&mut self, batch: &mut PacketBatch) -> io::Result<usize> {
        let mut received = 0;
        let mut recycled = false;
        let mut error = None;
        let mut completions = self.recv_ring.completion();
        while !batch.is_full() {
            let Some(completion) = completions.next() else {
                break;
            };
            let (result, flags) = (completion.result(), completion.flags());
            if !cqueue::more(flags) {
                self.recv_armed = false;
            }
            if let Some(bid) = cqueue::buffer_select(flags) {
                if let Ok(len) = usize::try_from(result)
                    && copy_datagram(&self.buffers, &self.recv_msg, bid, len, batch)
                {
                    received += 1;
                }
                self.buffers.push(bid);
                recycled = true;
            } else if result < 0 && result != -libc::ENOBUFS && error.is_none() {
                // ENOBUFS only says the ring ran dry: the receive is resubmitted.
                error = Some(io::Error::from_raw_os_error(-result));
            }
        }
        drop(completions);
        if recycled {
            self.buffers.publish();
        }
        match error {
            Some(e) if received == 0 => Err(e),
            Some(e) => {
                self.recv_error = Some(e);
                Ok(received)
            }
            None => Ok(received),
        }
    }

    /// Rearms the receive if the kernel ended it, submitting without waiting so datagrams keep
    /// landing in the ring while the caller forwards this batch. If this submit fails the entry
    /// stays queued: the next wait submits it again and reports an error that persists, so the
    /// datagrams already in the batch are not lost to it.
    fn rearm_now(&mut self) {
        if !self.recv_armed {
            self.arm_recv();
            let _submitted = self.recv_ring.submit();
        }
    }
}

impl PacketIo for UringIo {
    fn recv_batch(&mut self, batch: &mut PacketBatch, timeout: Duration) -> io::Result<usize> {
        if let Some(e) = self.recv_error.take() {
            return Err(e);
        }
        let received = self.drain_recv(batch)?;
        if received > 0 || batch.is_full() {
            self.rearm_now();
            return Ok(received);
        }
        if !self.recv_armed {
            self.arm_recv();
        }
        let timespec = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&timespec);
        match self.recv_ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
        let received = self.drain_recv(batch)?;
        self.rearm_now();
        Ok(received)
    }

    fn send_batch(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
        if let Some(done) = self.send_done.take()
            && let Some(offset) = done.offset(batch, from)
        {
            return self.report_done(done, offset);
        }
        let available = batch.len().saturating_sub(from).min(BATCH_MAX);
        if available == 0 {
            return Ok(0);
        }
        let slots = &mut *self.send;
        let (count, messages) = plan_messages(
            batch,
            from,
            available,
            self.gso.then_some(self.gso_refused_from),
            &mut slots.plan,
        );
        let fd = types::Fd(self.socket.as_raw_fd());
        {
            let mut submission = self.send_ring.submission();
            for index in 0..count {
                slots.iovs[index] = libc::iovec {
                    iov_base: batch.get(from + index).0.as_ptr().cast_mut().cast(),
                    iov_len: batch.get(from + index).0.len(),
                };
                slots.results[index] = SEND_PENDING;
            }
            for message in 0..messages {
                let Planned {
                    start,
                    frames,
                    segment,
                } = slots.plan[message];
                slots.addrs[message] = SockAddr::from(batch.get(from + start).1);
                let msg = &mut slots.msgs[message];
                msg.msg_name = slots.addrs[message].as_ptr().cast_mut().cast();
                msg.msg_namelen = slots.addrs[message].len();
                msg.msg_iov = &mut slots.iovs[start];
                msg.msg_iovlen = frames;
                if frames > 1 {
                    slots.cmsgs[message].segment = segment;
                    msg.msg_control = std::ptr::from_mut(&mut slots.cmsgs[message]).cast();
                    msg.msg_controllen = size_of::<GsoCmsg>();
                } else {
                    msg.msg_control = std::ptr::null_mut();
                    msg.msg_controllen = 0;
                }
                slots.msg_results[message] = SEND_PENDING;
                let entry = opcode::SendMsg::new(fd, msg as *const libc::msghdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(message as u64);
                // SAFETY: the entry points at `msgs[message]`, the iovecs `iovs[start..start +
                // frames]`, `addrs[message]` and `cmsgs[message]` (boxed, owned by `self`) and at
                // the datagrams in `batch`, borrowed for this whole call; the loop below does
                // not return before every entry has completed (or been cancelled and
                // completed), so all of it outlives the operation.
                let pushed = unsafe { submission.push(&entry) };
                pushed.expect("the send ring holds BATCH_MAX entries and is empty between calls");
            }
        }

        let wait = Timespec::from(Duration::from_millis(SEND_WAIT_MS_MAX.into()));
        let mut completed = 0;
        let mut cancelled = false;
        loop {
            for completion in self.send_ring.completion() {
                let index = usize::try_from(completion.user_data()).unwrap_or(usize::MAX);
                assert!(
                    index < messages,
                    "send completion for entry {index} of {messages}"
                );
                slots.msg_results[index] = completion.result();
                completed += 1;
            }
            if completed == messages {
                break;
            }
            let waited = if cancelled {
                self.send_ring.submit_and_wait(messages - completed)
            } else {
                let args = SubmitArgs::new().timespec(&wait);
                self.send_ring
                    .submitter()
                    .submit_with_args(messages - completed, &args)
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if !cancelled => {
                    // Timed out (ETIME) or the wait itself failed: cancel what is left and wait
                    // for those completions, which must arrive before the memory is released.
                    let _ = e;
                    match self
                        .send_ring
                        .submitter()
                        .register_sync_cancel(None, CancelBuilder::any().all())
                    {
                        Ok(()) => {}
                        // Nothing left to cancel: they completed meanwhile.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => panic!("cancelling in-flight sends failed: {e}"),
                    }
                    cancelled = true;
                }
                Err(e) => panic!("waiting for cancelled sends failed: {e}"),
            }
        }

        self.finish_messages(batch, from, messages);
        self.report_done(
            SendDone {
                batch: std::ptr::from_ref(batch) as usize,
                len: batch.len(),
                base: from,
                count,
            },
            0,
        )
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

impl UringIo {
    /// Spreads each message's result over its datagrams and counts GSO sends. A GSO message
    /// the kernel refused (`EINVAL`/`EMSGSIZE`) is sent again datagram by datagram with plain
    /// `send_to`: [`plan_messages`] put no later datagram to the same address in this
    /// submission, so this keeps that address's order.
    fn finish_messages(&mut self, batch: &PacketBatch, from: usize, messages: usize) {
        for message in 0..messages {
            let Planned {
                start,
                frames,
                segment,
            } = self.send.plan[message];
            let result = self.send.msg_results[message];
            if frames > 1 && (result == -libc::EINVAL || result == -libc::EMSGSIZE) {
                self.gso_refused_from = self.gso_refused_from.min(usize::from(segment));
                self.stats.gso_fallbacks += 1;
                for index in start..start + frames {
                    let (datagram, to) = batch.get(from + index);
                    self.send.results[index] = match self.socket.send_to(datagram, to) {
                        Ok(_) => 0,
                        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                    };
                }
                continue;
            }
            if frames > 1 && result >= 0 {
                self.stats.gso_sends += 1;
                self.stats.gso_segments += frames as u64;
            }
            self.send.results[start..start + frames].fill(result);
        }
    }

    /// Reports the send results of `done` from slot `offset` on, `sendmmsg`-style, and keeps
    /// `done` for the next call if a later datagram was sent after a failed one.
    fn report_done(&mut self, done: SendDone, offset: usize) -> io::Result<usize> {
        let results = &self.send.results[offset..done.count];
        let sent = results.iter().take_while(|&&result| result >= 0).count();
        let reported = sent.max(1);
        if results[reported..].iter().any(|&result| result >= 0) {
            self.send_done = Some(done);
        }
        if sent > 0 {
            return Ok(sent);
        }
        Err(match results[0] {
            result if result == -libc::ECANCELED => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("send did not complete within {SEND_WAIT_MS_MAX} ms"),
            ),
            result => io::Error::from_raw_os_error(-result),
        })
    }
}

/// Where the last send batch's results apply: slots `base..base + count` of the batch at
/// address `batch` holding `len` datagrams. Only compared, never dereferenced.
#[derive(Clone, Copy, Debug)]
struct SendDone {
    batch: usize,
    len: usize,
    base: usize,
    count: usize,
}

impl SendDone {
    /// The result index for a call `send_batch(batch, from)` that continues this batch. A call
    /// at `from == base` is a new submission (the forwarder starts every batch at 0), so it
    /// never matches.
    fn offset(&self, batch: &PacketBatch, from: usize) -> Option<usize> {
        let same = std::ptr::from_ref(batch) as usize == self.batch && batch.len() == self.len;
        (same && from > self.base && from < self.base + self.count).then(|| from - self.base)
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Cancel the multishot receive synchronously so the kernel writes no more into the
        // buffers this value is about to free. Sends never outlive `send_batch`. A failure here
        // (nothing to cancel) changes nothing: closing the ring cancels as well.
        let _ = self
            .recv_ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any().all());
    }
}

impl fmt::Debug for UringIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringIo")
            .field("socket", &self.socket)
            .field("recv_armed", &self.recv_armed)
            .finish_non_exhaustive()
    }
}

/// Copies the datagram in buffer `bid` (`len` bytes written by the kernel) into the next slot
/// of `batch`. Returns `false`, copying nothing, if the buffer does not parse or carries no
/// IPv4/IPv6 source address (it is then only returned to the ring).
fn copy_datagram(
    buffers: &BufRing,
    template: &libc::msghdr,
    bid: u16,
    len: usize,
    batch: &mut PacketBatch,
) -> bool {
    let Ok(out) = RecvMsgOut::parse(buffers.buffer(bid, len), template) else {
        return false;
    };
    let Some(source) = parse_sockaddr(out.name_data()) else {
        return false;
    };
    let payload = out.payload_data();
    let payload = &payload[..payload.len().min(DATAGRAM_BYTES_MAX)];
    let Some(slot) = batch.next_slot() else {
        return false;
    };
    slot[..payload.len()].copy_from_slice(payload);
    batch.commit(payload.len(), source);
    true
}

/// A `sockaddr_in` / `sockaddr_in6` as the kernel wrote it (native-endian family, network-order
/// port and address).
fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope_id,
            )))
        }
        _ => None,
    }
}

fn check_not_disabled() -> io::Result<()> {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(value) if value.trim() != "0" => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring unavailable: kernel.io_uring_disabled = {}",
                value.trim()
            ),
        )),
        // Absent on kernels before 6.6, where io_uring cannot be disabled this way.
        _ => Ok(()),
    }
}

fn unavailable(what: &str, e: io::Error) -> io::Error {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL) => io::ErrorKind::Unsupported,
        Some(libc::EPERM | libc::EACCES) => io::ErrorKind::PermissionDenied,
        _ => e.kind(),
    };
    io::Error::new(kind, format!("io_uring unavailable: {what}: {e}"))
}

/// Splits `batch[from..from + available]` into send messages: a run of datagrams to one
/// address whose sizes equal the first's (the last may be shorter) is one GSO message if
/// `gso_below` allows that size, anything else one message per datagram. A datagram to an
/// address that already has a GSO message in this plan ends the plan (it goes in the next
/// submission), so a refused GSO message can be resent without overtaking a later datagram to
/// the same address. Returns (datagrams planned, messages).
fn plan_messages(
    batch: &PacketBatch,
    from: usize,
    available: usize,
    gso_below: Option<usize>,
    plan: &mut [Planned; BATCH_MAX],
) -> (usize, usize) {
    let mut gso_addrs = [None::<SocketAddr>; BATCH_MAX];
    let mut gso_count = 0;
    let mut index = 0;
    let mut messages = 0;
    while index < available {
        let (datagram, to) = batch.get(from + index);
        if gso_addrs[..gso_count].contains(&Some(to)) {
            break;
        }
        let segment = datagram.len();
        let mut frames = 1;
        if let Some(limit) = gso_below
            && segment > 0
            && segment < limit
        {
            let mut bytes = segment;
            while index + frames < available {
                let (next, next_to) = batch.get(from + index + frames);
                if next_to != to
                    || next.is_empty()
                    || next.len() > segment
                    || bytes + next.len() > GSO_BYTES_MAX
                {
                    break;
                }
                bytes += next.len();
                frames += 1;
                if next.len() < segment {
                    break;
                }
            }
        }
        if frames > 1 {
            gso_addrs[gso_count] = Some(to);
            gso_count += 1;
        }
        plan[messages] = Planned {
            start: index,
            frames,
            segment: u16::try_from(segment).unwrap_or(u16::MAX),
        };
        messages += 1;
        index += frames;
    }
    (index, messages)
}

/// One planned send message: `frames` datagrams from batch offset `start`; a GSO message (more
/// than one frame) has segments of `segment` bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Planned {
    start: usize,
    frames: usize,
    segment: u16,
}

/// A `cmsghdr` carrying `UDP_SEGMENT`, laid out as `CMSG_SPACE(sizeof(u16))` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoCmsg {
    header: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

impl GsoCmsg {
    fn new() -> GsoCmsg {
        // SAFETY: `cmsghdr` is plain data (a length and two ints); all-zero is a valid value.
        let mut header: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: CMSG_LEN only computes a length.
        header.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<u16>() as u32) } as _;
        header.cmsg_level = libc::SOL_UDP;
        header.cmsg_type = libc::UDP_SEGMENT;
        GsoCmsg {
            header,
            segment: 0,
            _pad: [0; 6],
        }
    }
}

// The data of a control message starts right after the (aligned) header, and the whole takes
// CMSG_SPACE bytes: the layout above must match.
const _: () = assert!(size_of::<libc::cmsghdr>().is_multiple_of(size_of::<usize>()));
const _: () = assert!(
    std::mem::offset_of!(GsoCmsg, segment) == size_of::<libc::cmsghdr>()
        && size_of::<GsoCmsg>() == size_of::<libc::cmsghdr>() + size_of::<usize>()
);

/// Per-slot send state: each in-flight `sendmsg` needs its own header, address and control
/// message; iovecs are per datagram (a GSO message points at several consecutive ones).
struct SendSlots {
    msgs: [libc::msghdr; BATCH_MAX],
    iovs: [libc::iovec; BATCH_MAX],
    addrs: [SockAddr; BATCH_MAX],
    cmsgs: [GsoCmsg; BATCH_MAX],
    plan: [Planned; BATCH_MAX],
    /// Per message.
    msg_results: [i32; BATCH_MAX],
    /// Per datagram, as `sendmmsg` would report them.
    results: [i32; BATCH_MAX],
}

impl SendSlots {
    fn new() -> Self {
        let unspecified = SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        SendSlots {
            // SAFETY: `msghdr` is plain data; all-zero is a valid value (null pointers, zero
            // lengths).
            msgs: [unsafe { std::mem::zeroed() }; BATCH_MAX],
            iovs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH_MAX],
            addrs: std::array::from_fn(|_| unspecified.clone()),
            cmsgs: [GsoCmsg::new(); BATCH_MAX],
            plan: [Planned::default(); BATCH_MAX],
            msg_results: [SEND_PENDING; BATCH_MAX],
            results: [SEND_PENDING; BATCH_MAX],
        }
    }
}

/// A zeroed heap allocation with a chosen alignment, freed on drop.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn zeroed(size: usize, align: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(size, align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        assert!(layout.size() > 0, "empty region");
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly `layout`, and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The provided buffer ring: RECV_BUFFERS ring entries (page-aligned, shared with the kernel)
/// and the buffers they point at.
struct BufRing {
    entries: Region,
    buffers: Region,
    /// Our copy of the ring tail: entries published so far.
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        const _: () = assert!(RECV_BUFFERS.is_power_of_two() && RECV_BUFFERS <= 32768);
        Ok(BufRing {
            entries: Region::zeroed(RECV_BUFFERS as usize * size_of::<BufRingEntry>(), 4096)?,
            buffers: Region::zeroed(RECV_BUFFERS as usize * RECV_BUFFER_BYTES, 64)?,
            tail: 0,
        })
    }

    /// Writes buffer `bid` into the next ring entry; the kernel sees it after
    /// [`publish`](Self::publish).
    fn push(&mut self, bid: u16) {
        assert!(bid < RECV_BUFFERS, "buffer id {bid}");
        let index = usize::from(self.tail & (RECV_BUFFERS - 1));
        let entries = self.entries.ptr.as_ptr().cast::<BufRingEntry>();
        let addr = self.buffers.ptr.as_ptr() as u64 + u64::from(bid) * RECV_BUFFER_BYTES as u64;
        // SAFETY: `index < RECV_BUFFERS`, so the entry lies inside the allocation. The kernel
        // reads only entries between its head and the published tail; this one is past the
        // published tail (every buffer is at most once in the ring, and there are RECV_BUFFERS
        // entries), so nothing reads it while it is written. The setters write addr, len and
        // bid, never the `resv` field that holds the tail in entry 0.
        unsafe {
            let entry = &mut *entries.add(index);
            entry.set_addr(addr);
            entry.set_len(RECV_BUFFER_BYTES as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries pushed so far visible to the kernel.
    fn publish(&self) {
        let base = self
            .entries
            .ptr
            .as_ptr()
            .cast::<BufRingEntry>()
            .cast_const();
        // SAFETY: `base` is the page-aligned start of the registered ring; `BufRingEntry::tail`
        // only computes the address of the tail (entry 0's `resv`, a 2-aligned u16 inside the
        // allocation). The kernel reads that u16 concurrently, hence the atomic release store,
        // which also orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(base).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has handed back in a completion.
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < RECV_BUFFERS, "buffer id {bid}");
        let len = len.min(RECV_BUFFER_BYTES);
        // SAFETY: buffer `bid` lies inside the allocation (bid < RECV_BUFFERS, len clamped to
        // one buffer). A completion for `bid` means the kernel has finished writing it and will
        // not write it again until it is pushed back into the ring, which the caller does only
        // after it stops using this slice (the borrow of `self` ends first).
        unsafe {
            std::slice::from_raw_parts(
                self.buffers
                    .ptr
                    .as_ptr()
                    .add(usize::from(bid) * RECV_BUFFER_BYTES),
                len,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn pair() -> (UringIo, UdpSocket) {
        let io = UringIo::bind("127.0.0.1:0").expect("io_uring available on this machine");
        io.set_buffer_sizes(1 << 22, 1 << 22).expect("buffers");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        (io, peer)
    }

    /// Receives until `count` datagrams arrived or a bounded number of empty waits passed.
    fn receive(io: &mut UringIo, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let mut batch = PacketBatch::new();
        let mut empty_waits = 0;
        while out.len() < count && empty_waits < 50 {
            batch.clear();
            let n = io
                .recv_batch(&mut batch, Duration::from_millis(20))
                .expect("recv");
            if n == 0 {
                empty_waits += 1;
            }
            out.extend(batch.iter().map(|(d, a)| (d.to_vec(), a)));
        }
        out
    }

    #[test]
    fn more_datagrams_than_ring_buffers_all_arrive_in_order() {
        let (mut io, peer) = pair();
        let to = io.local_addr().expect("addr");
        let count = 3 * usize::from(RECV_BUFFERS) + 5;
        // Arm the receive first so the ring runs dry and the multishot must be resubmitted.
        let _ = receive(&mut io, 0);
        for i in 0..count {
            peer.send_to(&u32::try_from(i).expect("small").to_be_bytes(), to)
                .expect("send");
        }
        let got = receive(&mut io, count);
        assert_eq!(got.len(), count);
        let peer_addr = peer.local_addr().expect("peer addr");
        for (i, (datagram, from)) in got.iter().enumerate() {
            assert_eq!(*from, peer_addr);
            assert_eq!(
                datagram[..],
                u32::try_from(i).expect("small").to_be_bytes()[..]
            );
        }
    }

    #[test]
    fn oversized_datagram_is_truncated() {
        let (mut io, peer) = pair();
        let big = vec![7u8; DATAGRAM_BYTES_MAX + 100];
        peer.send_to(&big, io.local_addr().expect("addr"))
            .expect("send");
        let got = receive(&mut io, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), DATAGRAM_BYTES_MAX);
    }

    #[test]
    // The test measures how long a receive blocks: it has to read the clock.
    #[allow(clippy::disallowed_methods)]
    fn idle_receive_returns_zero_within_timeout() {
        let (mut io, _peer) = pair();
        let mut batch = PacketBatch::new();
        for _ in 0..3 {
            let start = Instant::now();
            let n = io
                .recv_batch(&mut batch, Duration::from_millis(30))
                .expect("recv");
            assert_eq!(n, 0);
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn send_batch_sends_in_order_and_reports_addresses() {
        let (mut io, peer) = pair();
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let to = peer.local_addr().expect("peer addr");
        let mut batch = PacketBatch::new();
        for i in 0..BATCH_MAX {
            assert!(batch.push(&[u8::try_from(i).expect("small")], to));
        }
        let mut from = 0;
        while from < batch.len() {
            from += io.send_batch(&batch, from).expect("send");
        }
        let mut buf = [0u8; 16];
        for i in 0..BATCH_MAX {
            let (len, source) = peer.recv_from(&mut buf).expect("recv");
            assert_eq!(source, io.local_addr().expect("addr"));
            assert_eq!(buf[..len], [u8::try_from(i).expect("small")]);
        }
    }

    #[test]
    fn failed_datagram_mid_batch_is_reported_like_sendmmsg_without_resending() {
        let (mut io, peer) = pair();
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let to = peer.local_addr().expect("peer addr");
        // An IPv6 destination on an IPv4 socket fails at once (EAFNOSUPPORT).
        let bad = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        let mut batch = PacketBatch::new();
        for (i, addr) in [to, to, bad, bad, to, to].into_iter().enumerate() {
            assert!(batch.push(&[u8::try_from(i).expect("small")], addr));
        }
        assert_eq!(io.send_batch(&batch, 0).expect("first two"), 2);
        assert!(io.send_batch(&batch, 2).is_err());
        assert!(io.send_batch(&batch, 3).is_err());
        assert_eq!(io.send_batch(&batch, 4).expect("last two"), 2);
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        while let Ok((len, _)) = peer.recv_from(&mut buf) {
            got.push(buf[..len].to_vec());
        }
        assert_eq!(got, [[0u8], [1], [4], [5]]);
    }

    /// `SO_NO_CHECK` makes the kernel refuse every GSO send with `EINVAL` (UDP GSO needs
    /// checksums) while plain sends work: the fallback path, for both backends.
    fn refuse_gso(socket: &UdpSocket) {
        let one: libc::c_int = 1;
        // SAFETY (test): a valid fd, and a pointer to a c_int of the length given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
    }

    fn refused_gso_falls_back_in_order(io: &mut dyn PacketIo, peer: &UdpSocket) {
        assert!(io.set_gso(true), "this kernel has UDP GSO");
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let to = peer.local_addr().expect("peer addr");
        let mut batch = PacketBatch::new();
        for i in 0..10u8 {
            // Two GSO candidates (sizes 100 then 50), the second below the refused size.
            let size = if i < 5 { 100 } else { 50 };
            assert!(batch.push(&vec![i; size], to));
        }
        for _ in 0..2 {
            let mut from = 0;
            while from < batch.len() {
                from += io.send_batch(&batch, from).expect("send");
            }
        }
        let mut buf = [0u8; 256];
        for _ in 0..2 {
            for i in 0..10u8 {
                let (len, _) = peer.recv_from(&mut buf).expect("recv");
                assert_eq!(buf[..len], vec![i; if i < 5 { 100 } else { 50 }][..]);
            }
        }
        assert!(peer.recv_from(&mut buf).is_err(), "no duplicates");
        let stats = io.stats();
        // 100 is refused (and 50, below it, at most once more); later batches go plainly.
        assert!((1..=2).contains(&stats.gso_fallbacks), "{stats:?}");
        assert_eq!(stats.gso_sends, 0, "{stats:?}");
    }

    #[test]
    fn refused_gso_falls_back_to_plain_sends_in_order_uring() {
        let (mut io, peer) = pair();
        refuse_gso(io.socket());
        refused_gso_falls_back_in_order(&mut io, &peer);
    }

    #[test]
    fn refused_gso_falls_back_to_plain_sends_in_order_udp() {
        let mut io = super::super::UdpIo::bind("127.0.0.1:0").expect("bind");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        refuse_gso(io.socket());
        refused_gso_falls_back_in_order(&mut io, &peer);
    }

    #[test]
    fn plan_keeps_later_datagrams_to_a_gso_address_for_the_next_submission() {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        let mut batch = PacketBatch::new();
        for (addr, size) in [(a, 10), (a, 10), (a, 4), (b, 10), (b, 10), (a, 10), (b, 3)] {
            assert!(batch.push(&vec![0; size], addr));
        }
        let mut plan = [Planned::default(); BATCH_MAX];
        let (count, messages) = plan_messages(&batch, 0, batch.len(), Some(usize::MAX), &mut plan);
        // [a a a(short)] [b b] — then a again: next submission.
        assert_eq!((count, messages), (5, 2));
        assert_eq!(
            (plan[0].frames, plan[0].segment, plan[1].frames),
            (3, 10, 2)
        );
        let (count, messages) = plan_messages(&batch, 5, 2, Some(usize::MAX), &mut plan);
        assert_eq!((count, messages), (2, 2));
        // Without GSO every datagram is its own message and nothing is held back.
        let (count, messages) = plan_messages(&batch, 0, batch.len(), None, &mut plan);
        assert_eq!((count, messages), (7, 7));
        // Sizes at or above the refused size are not GSO candidates.
        let (count, messages) = plan_messages(&batch, 0, batch.len(), Some(10), &mut plan);
        assert_eq!((count, messages), (7, 7));
    }

    #[test]
    fn parses_ipv4_and_ipv6_sockaddrs() {
        for addr in [
            SocketAddr::from(([10, 1, 2, 3], 4242)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 9)),
        ] {
            let raw = SockAddr::from(addr);
            // SAFETY (test): `as_ptr` points at a sockaddr_storage of at least `len` bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(parse_sockaddr(bytes), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[0, 0]), None);
    }
}
