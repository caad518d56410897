//! [`XskSocket`]: an AF_XDP socket on raw `libc` — a UMEM of fixed-size frames shared with the
//! kernel and its four rings (fill, completion, receive, transmit) — through which the XDP
//! program hands local-delivery frames to user space without the kernel's network stack.
//!
//! The only module of the crate allowed `unsafe`: the rings and the UMEM are memory shared with
//! the kernel, reached through `mmap`ed pointers. Every `unsafe` block states the invariant it
//! relies on.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// How an AF_XDP socket is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame (a power of two, 2048 or 4096).
    pub frame_size: u32,
    /// Frames in the UMEM; half serve receive, half transmit.
    pub frame_count: u32,
    /// Entries per ring (a power of two).
    pub ring_size: u32,
    /// Ask for zero-copy; when the driver refuses (`EOPNOTSUPP`, e.g. veth) the socket binds in
    /// copy mode instead.
    pub zero_copy: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 2048,
            frame_count: 4096,
            ring_size: 2048,
            zero_copy: false,
        }
    }
}

/// The mode the socket was bound in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    /// The kernel copies frames between its buffers and the UMEM.
    Copy,
    /// The NIC reads and writes the UMEM directly.
    ZeroCopy,
}

/// One `mmap`ed region.
#[derive(Debug)]
struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: Option<BorrowedFd<'_>>, len: usize, offset: u64) -> io::Result<Mapping> {
        let (flags, raw_fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr null); the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw_fd,
                offset as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr =
            NonNull::new(addr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: addr/len are exactly what mmap returned; nothing borrows the region past self.
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.len);
        }
    }
}

/// A single-producer single-consumer ring shared with the kernel.
#[derive(Debug)]
struct Ring {
    map: Mapping,
    producer: usize,
    consumer: usize,
    desc: usize,
    mask: u32,
}

impl Ring {
    fn atomic(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offset is the kernel-reported producer/consumer offset inside the mapping, a
        // 4-byte-aligned u32 the kernel only accesses atomically.
        unsafe { &*self.map.addr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn producer(&self) -> &AtomicU32 {
        self.atomic(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.atomic(self.consumer)
    }

    /// Pointer to entry `index` (masked) of `size` bytes.
    fn entry(&self, index: u32, size: usize) -> *mut u8 {
        let slot = (index & self.mask) as usize;
        // SAFETY: slot < ring size and the descriptor array holds ring-size entries of `size`.
        unsafe { self.map.addr.as_ptr().add(self.desc + slot * size) }
    }
}

/// An AF_XDP socket bound to one receive queue of one interface.
#[derive(Debug)]
pub struct XskSocket {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring,
    completion: Ring,
    rx: Ring,
    tx: Ring,
    frame_size: u32,
    tx_free: Vec<u64>,
    mode: XskMode,
}

// SAFETY: the mappings are owned by the socket and reached only through &mut self.
unsafe impl Send for XskSocket {}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points at a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl XskSocket {
    /// Creates the socket and its UMEM and binds it to queue `queue` of interface `ifindex`
    /// (copy mode, or zero-copy with fallback to copy when `config.zero_copy`). Register it
    /// with [`XdpTarget::register_xsk`](crate::XdpTarget::register_xsk) to receive frames.
    pub fn bind(ifindex: u32, queue: u32, config: XskConfig) -> io::Result<XskSocket> {
        let valid = config.frame_size.is_power_of_two()
            && (2048..=4096).contains(&config.frame_size)
            && config.ring_size.is_power_of_two()
            && config.frame_count >= 2
            && config.frame_count / 2 >= config.ring_size;
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "AF_XDP config {config:?}: frame size 2048 or 4096, ring size a power of two, at least 2 × ring size frames"
                ),
            ));
        }
        // SAFETY: plain socket(2) call; the result is checked before it is owned.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = config.frame_size as usize * config.frame_count as usize;
        let umem = Mapping::new(None, umem_len, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.addr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &reg)?;
        let size = config.ring_size;
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &size)?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &size)?;
        setsockopt(&fd, libc::XDP_RX_RING, &size)?;
        setsockopt(&fd, libc::XDP_TX_RING, &size)?;
        // SAFETY: zeroed is a valid xdp_mmap_offsets (plain integers); the kernel fills it.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: offsets/len describe a writable buffer of that size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ring = |off: &libc::xdp_ring_offset, entry: usize, pgoff: u64| -> io::Result<Ring> {
            let map_len = off.desc as usize + size as usize * entry;
            Ok(Ring {
                map: Mapping::new(Some(fd.as_fd()), map_len, pgoff)?,
                producer: off.producer as usize,
                consumer: off.consumer as usize,
                desc: off.desc as usize,
                mask: size - 1,
            })
        };
        let desc = size_of::<libc::xdp_desc>();
        let fill = ring(&offsets.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = ring(&offsets.cr, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = ring(&offsets.rx, desc, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = ring(&offsets.tx, desc, libc::XDP_PGOFF_TX_RING as u64)?;

        let bind = |flags: u16| -> io::Result<()> {
            let addr = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: addr is a valid sockaddr_xdp of the given length.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        let mode = if config.zero_copy {
            match bind(libc::XDP_ZEROCOPY) {
                Ok(()) => XskMode::ZeroCopy,
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    bind(libc::XDP_COPY)?;
                    XskMode::Copy
                }
                Err(e) => return Err(e),
            }
        } else {
            bind(libc::XDP_COPY)?;
            XskMode::Copy
        };
        let half = config.frame_count / 2;
        let mut socket = XskSocket {
            fd,
            umem,
            fill,
            completion,
            rx,
            tx,
            frame_size: config.frame_size,
            tx_free: (half..config.frame_count)
                .map(|i| u64::from(i) * u64::from(config.frame_size))
                .collect(),
            mode,
        };
        // Receive frames: the first half of the UMEM, as many as the fill ring holds.
        for i in 0..half.min(size) {
            socket.push_fill(u64::from(i) * u64::from(config.frame_size));
        }
        Ok(socket)
    }

    /// The mode the socket is bound in.
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    fn push_fill(&mut self, addr: u64) {
        let producer = self.fill.producer().load(Ordering::Relaxed);
        // SAFETY: the entry is a u64 slot of the fill ring that the kernel does not read until
        // the producer index is published below.
        unsafe { self.fill.entry(producer, 8).cast::<u64>().write(addr) };
        self.fill
            .producer()
            .store(producer.wrapping_add(1), Ordering::Release);
    }

    /// Copies up to `max` received frames into `out` (each a `Vec<u8>`), returning how many,
    /// and gives their UMEM frames back to the kernel. Does not wait.
    pub fn recv(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> usize {
        let producer = self.rx.producer().load(Ordering::Acquire);
        let mut consumer = self.rx.consumer().load(Ordering::Relaxed);
        let mut taken = 0;
        while consumer != producer && taken < max {
            // SAFETY: entries between consumer and producer were published by the kernel.
            let desc = unsafe {
                self.rx
                    .entry(consumer, size_of::<libc::xdp_desc>())
                    .cast::<libc::xdp_desc>()
                    .read()
            };
            let start = desc.addr as usize;
            let len = desc.len as usize;
            if start + len <= self.umem.len {
                // SAFETY: the range is inside the UMEM (checked) and owned by user space until
                // the frame is put back on the fill ring.
                let bytes =
                    unsafe { std::slice::from_raw_parts(self.umem.addr.as_ptr().add(start), len) };
                out.push(bytes.to_vec());
            }
            consumer = consumer.wrapping_add(1);
            taken += 1;
            let frame = desc.addr - desc.addr % u64::from(self.frame_size);
            self.push_fill(frame);
        }
        self.rx.consumer().store(consumer, Ordering::Release);
        taken
    }

    /// Queues `frame` (a whole Ethernet frame) for sending and wakes the kernel. Returns
    /// `Ok(false)` when every transmit frame is in flight (try again after completions).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.reclaim();
        if frame.len() > self.frame_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes exceeds the {}-byte UMEM frame",
                    frame.len(),
                    self.frame_size
                ),
            ));
        }
        let Some(addr) = self.tx_free.pop() else {
            return Ok(false);
        };
        // SAFETY: addr is a transmit frame owned by user space (on tx_free) and frame fits it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.umem.addr.as_ptr().add(addr as usize),
                frame.len(),
            );
        }
        let producer = self.tx.producer().load(Ordering::Relaxed);
        let desc = libc::xdp_desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        };
        // SAFETY: a tx ring slot not yet published to the kernel.
        unsafe {
            self.tx
                .entry(producer, size_of::<libc::xdp_desc>())
                .cast::<libc::xdp_desc>()
                .write(desc)
        };
        self.tx
            .producer()
            .store(producer.wrapping_add(1), Ordering::Release);
        // SAFETY: a zero-length sendto on our own socket only kicks the transmit path.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            let busy = matches!(
                error.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
            );
            if !busy {
                return Err(error);
            }
        }
        Ok(true)
    }

    /// Takes transmitted frames back from the completion ring.
    fn reclaim(&mut self) {
        let producer = self.completion.producer().load(Ordering::Acquire);
        let mut consumer = self.completion.consumer().load(Ordering::Relaxed);
        while consumer != producer {
            // SAFETY: entries between consumer and producer were published by the kernel.
            let addr = unsafe { self.completion.entry(consumer, 8).cast::<u64>().read() };
            self.tx_free.push(addr);
            consumer = consumer.wrapping_add(1);
        }
        self.completion
            .consumer()
            .store(consumer, Ordering::Release);
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
