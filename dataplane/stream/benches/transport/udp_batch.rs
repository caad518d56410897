//! Batched UDP I/O for the delay relay (Linux): `recvmmsg` with `UDP_GRO` in, `sendmmsg` with
//! `UDP_SEGMENT` (GSO) out, so that a burst costs the relay a few system calls instead of two
//! per datagram — as the TCP relay moves a burst in a few large reads and writes.
//!
//! A received *unit* is what one receive returned: one datagram, or with GRO several datagrams
//! of one sender, each `segment` bytes long (the last possibly shorter), which the kernel kept
//! together (on loopback a GSO send arrives unsplit). Sent back out as one GSO unit, the next
//! receiver sees the same datagrams, and in the same grouping, as it would without the relay.
//!
//! The system calls have no wrapper in the benches' dependencies (libc only): every `unsafe`
//! block here says what makes it sound.

#![allow(
    unsafe_code,
    reason = "recvmmsg, sendmmsg and their control messages through libc"
)]

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Receives (and sends) per system call at most.
pub const BATCH: usize = 32;
/// A GRO receive carries at most 64 KiB.
const UNIT_BYTES_MAX: usize = 1 << 16;
/// Room for one `int`-sized control message (UDP_GRO in, UDP_SEGMENT out), 8-byte aligned.
const CMSG_WORDS: usize = 4;

/// One received unit: `len` bytes of the buffer it was read into, from `from`, made of
/// datagrams of `segment` bytes each (the last possibly shorter) when the kernel coalesced them.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// The receive buffer it is in.
    slot: usize,
    pub len: usize,
    pub from: SocketAddr,
    pub segment: Option<u16>,
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`). A kernel that refuses hands
/// over one datagram per receive, which the relay handles as well.
pub fn enable_gro(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int for the duration of the call; the kernel copies it.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Buffers for one `recvmmsg` of up to [`BATCH`] units.
pub struct Receiver {
    bufs: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_WORDS]>,
    out: Vec<Received>,
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            bufs: (0..BATCH).map(|_| vec![0u8; UNIT_BYTES_MAX]).collect(),
            names: vec![zeroed_storage(); BATCH],
            cmsgs: vec![[0; CMSG_WORDS]; BATCH],
            out: Vec::with_capacity(BATCH),
        }
    }

    /// One non-blocking `recvmmsg` on `fd`: how many units it returned (see
    /// [`Receiver::units`]); `WouldBlock` when nothing was waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        for i in 0..BATCH {
            iovs[i].write(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            });
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths); the fields
            // that matter are set below.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<[u64; CMSG_WORDS]>() as _;
            hdrs[i].write(h);
        }
        // SAFETY: every header points at a live buffer, name and control area of the stated
        // sizes, all owned by `self` or this frame for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.out.clear();
        for (i, h) in hdrs.iter().take(n as usize).enumerate() {
            // SAFETY: the kernel filled the first `n` headers (they were initialised above).
            let h = unsafe { h.assume_init_ref() };
            let Some(from) = socket_addr(&self.names[i]) else {
                continue;
            };
            self.out.push(Received {
                slot: i,
                len: h.msg_len as usize,
                from,
                segment: gro_segment(&h.msg_hdr),
            });
        }
        Ok(self.out.len())
    }

    /// The units of the last [`Receiver::recv`], each with its bytes.
    pub fn units(&self) -> impl Iterator<Item = (Received, &[u8])> {
        self.out.iter().map(|r| (*r, &self.bufs[r.slot][..r.len]))
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage (an unspecified family).
    unsafe { zeroed() }
}

/// The segment size of a GRO receive, from its `UDP_GRO` control message.
fn gro_segment(hdr: &libc::msghdr) -> Option<u16> {
    // SAFETY: `hdr` came back from recvmmsg: its control pointer and length describe the
    // control area the kernel filled; the CMSG macros stay inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return u16::try_from(size).ok();
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut s = zeroed_storage();
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: a sockaddr_in fits in (and is aligned for) a sockaddr_storage.
            let v4 = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = a.port().to_be();
            v4.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: a sockaddr_in6 fits in (and is aligned for) a sockaddr_storage.
            let v6 = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            v6.sin6_port = a.port().to_be();
            v6.sin6_addr.s6_addr = a.ip().octets();
            v6.sin6_flowinfo = a.flowinfo();
            v6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// One unit to send: `bytes` to `to`, as datagrams of `segment` bytes (GSO) when set.
pub struct Unit<'a> {
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub segment: Option<u16>,
}

/// One non-blocking `sendmmsg` of `units` (at most [`BATCH`]) on `fd`: how many leading
/// units the kernel took; an error only when it took none (the first unit's error).
pub fn send(fd: RawFd, units: &[Unit<'_>]) -> io::Result<usize> {
    let units = &units[..units.len().min(BATCH)];
    let mut names = [zeroed_storage(); BATCH];
    let mut cmsgs = [[0u64; CMSG_WORDS]; BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
    for (i, u) in units.iter().enumerate() {
        let (name, name_len) = storage(u.to);
        names[i] = name;
        iovs[i].write(libc::iovec {
            iov_base: u.bytes.as_ptr() as *mut libc::c_void,
            iov_len: u.bytes.len(),
        });
        // SAFETY: an all-zero mmsghdr is valid; the fields that matter are set below.
        let mut h: libc::mmsghdr = unsafe { zeroed() };
        h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = name_len;
        h.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        h.msg_hdr.msg_iovlen = 1;
        if let Some(segment) = u.segment.filter(|&s| usize::from(s) < u.bytes.len()) {
            h.msg_hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE of an int is a constant computation.
            let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            debug_assert!(space <= size_of::<[u64; CMSG_WORDS]>());
            h.msg_hdr.msg_controllen = space as _;
            // SAFETY: the control area is `space` bytes of this frame's `cmsgs[i]`, aligned
            // for cmsghdr; CMSG_FIRSTHDR of a non-empty area is non-null.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
            }
        }
        hdrs[i].write(h);
    }
    // SAFETY: the first `units.len()` headers are initialised and point at names, control
    // areas and iovecs of this frame and at the units' bytes, all live for the call.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            units.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
