//! [`PacketBatch`]: a fixed-capacity set of datagram slots, allocated once and reused.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Most datagrams in one batch: one receive batch and one send batch. 32 matches the usual
/// `recvmmsg`/`sendmmsg` vector length and keeps a batch's headers within a few cache lines.
pub const BATCH_MAX: usize = 32;

/// Largest datagram a slot holds, in bytes: a 64-byte NexLink header plus a jumbo-frame payload.
/// A longer datagram is cut to this length by the backend (UDP truncates silently), so its
/// declared payload length no longer fits and the forwarder drops it as `payload_length`.
pub const DATAGRAM_BYTES_MAX: usize = 9216;

/// A fixed-capacity batch of datagrams, each with an address: the source for a received batch,
/// the destination for a batch to send.
///
/// All storage (`BATCH_MAX × DATAGRAM_BYTES_MAX` bytes, one allocation) is made by
/// [`PacketBatch::new`]; filling, reading and clearing never allocate. Slots `0..len()` are
/// filled, in order.
///
/// Two ways to fill a slot: [`push`](Self::push) copies a datagram in (the forwarder building
/// its send batch), and [`next_slot`](Self::next_slot) + [`commit`](Self::commit) let a backend
/// receive straight into the slot's buffer without a copy.
pub struct PacketBatch {
    storage: Box<[u8]>,
    lens: [usize; BATCH_MAX],
    addrs: [SocketAddr; BATCH_MAX],
    len: usize,
}

impl PacketBatch {
    /// An empty batch with all its storage allocated.
    pub fn new() -> Self {
        PacketBatch {
            storage: vec![0u8; BATCH_MAX * DATAGRAM_BYTES_MAX].into_boxed_slice(),
            lens: [0; BATCH_MAX],
            addrs: [SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); BATCH_MAX],
            len: 0,
        }
    }

    /// Filled slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is filled.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every slot is filled.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BATCH_MAX
    }

    /// Empties the batch (the storage is kept).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Datagram `index` and its address. Panics if `index >= len()` (a caller bug).
    #[inline]
    pub fn get(&self, index: usize) -> (&[u8], SocketAddr) {
        assert!(index < self.len, "slot {index} of a batch of {}", self.len);
        let start = index * DATAGRAM_BYTES_MAX;
        (
            &self.storage[start..start + self.lens[index]],
            self.addrs[index],
        )
    }

    /// The address of slot `index` (the source of a received datagram). Panics if
    /// `index >= len()`.
    #[inline]
    pub fn addr(&self, index: usize) -> SocketAddr {
        assert!(index < self.len, "slot {index} of a batch of {}", self.len);
        self.addrs[index]
    }

    /// Datagram `index`, writable (a forwarder rewrites the header in place). Panics if
    /// `index >= len()`.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> &mut [u8] {
        assert!(index < self.len, "slot {index} of a batch of {}", self.len);
        let start = index * DATAGRAM_BYTES_MAX;
        &mut self.storage[start..start + self.lens[index]]
    }

    /// Iterates over the filled slots in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.len).map(|index| self.get(index))
    }

    /// Copies `datagram` into the next slot with address `addr`. Returns `false`, changing
    /// nothing, if the batch is full or the datagram is longer than [`DATAGRAM_BYTES_MAX`].
    #[inline]
    pub fn push(&mut self, datagram: &[u8], addr: SocketAddr) -> bool {
        if self.is_full() || datagram.len() > DATAGRAM_BYTES_MAX {
            return false;
        }
        let start = self.len * DATAGRAM_BYTES_MAX;
        self.storage[start..start + datagram.len()].copy_from_slice(datagram);
        self.lens[self.len] = datagram.len();
        self.addrs[self.len] = addr;
        self.len += 1;
        true
    }

    /// The whole buffer of the next free slot ([`DATAGRAM_BYTES_MAX`] bytes), for a backend to
    /// receive into; `None` if the batch is full. The slot counts only after
    /// [`commit`](Self::commit).
    #[inline]
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.len * DATAGRAM_BYTES_MAX;
        Some(&mut self.storage[start..start + DATAGRAM_BYTES_MAX])
    }

    /// The buffers of every free slot, in slot order ([`DATAGRAM_BYTES_MAX`] bytes each), for a
    /// backend that receives several datagrams with one call (`recvmmsg`). The `n` datagrams it
    /// received then count after `n` calls of [`commit`](Self::commit), in the same order.
    pub fn free_slots(&mut self) -> impl ExactSizeIterator<Item = &mut [u8]> + '_ {
        let start = self.len * DATAGRAM_BYTES_MAX;
        self.storage[start..].chunks_mut(DATAGRAM_BYTES_MAX)
    }

    /// Counts the next free slot as filled with its first `len` bytes, from or to `addr`.
    /// Panics if the batch is full or `len > DATAGRAM_BYTES_MAX` (a backend bug: it wrote past
    /// the slot [`next_slot`](Self::next_slot) lent it).
    #[inline]
    pub fn commit(&mut self, len: usize, addr: SocketAddr) {
        assert!(!self.is_full(), "commit on a full batch");
        assert!(len <= DATAGRAM_BYTES_MAX, "datagram of {len} bytes");
        self.lens[self.len] = len;
        self.addrs[self.len] = addr;
        self.len += 1;
    }
}

impl Default for PacketBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PacketBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBatch")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_commit_and_limits() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut batch = PacketBatch::new();
        assert!(batch.is_empty());
        assert!(batch.push(b"abc", addr));
        let slot = batch.next_slot().expect("room");
        slot[..2].copy_from_slice(b"xy");
        batch.commit(2, addr);
        assert_eq!(batch.get(0), (&b"abc"[..], addr));
        assert_eq!(batch.get(1), (&b"xy"[..], addr));
        assert_eq!(batch.addr(1), addr);
        batch.get_mut(1)[0] = b'z';
        assert_eq!(batch.get(1).0, b"zy");
        assert!(!batch.push(&[0; DATAGRAM_BYTES_MAX + 1], addr));
        while batch.push(b"f", addr) {}
        assert!(batch.is_full());
        assert_eq!(batch.len(), BATCH_MAX);
        assert!(batch.next_slot().is_none());
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.free_slots().len(), BATCH_MAX);
        batch.free_slots().nth(1).expect("slot 1")[0] = b'q';
        batch.commit(0, addr);
        batch.commit(1, addr);
        assert_eq!(batch.get(1).0, b"q");
        assert_eq!(batch.free_slots().len(), BATCH_MAX - 2);
    }
}
