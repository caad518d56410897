//! The on-the-wire and in-memory format of one table generation: a fixed header, then an rkyv
//! archive of [`TableRecord`]. This is the format the P4 and NIC targets will consume too, so it
//! is spelled out here.
//!
//! ```text
//!  0       8        12       16                24               32
//!  +-------+--------+--------+-----------------+----------------+------------------------+
//!  | magic | format | crc32  | generation (u64)| archive length | rkyv archive ...       |
//!  |  8 B  | u32 LE | u32 LE |      LE         |   (u64 LE)     | (16-byte aligned)      |
//!  +-------+--------+--------+-----------------+----------------+------------------------+
//! ```
//!
//! The CRC-32 (IEEE, as `crc32fast` computes it) covers every byte from offset 16 to the end:
//! the generation, the length and the archive. The archive is little-endian with 32-bit relative
//! pointers (rkyv 0.8 defaults), so an image must stay under 2 GiB; [`TABLE_BYTES_MAX`] keeps it
//! well under.
//!
//! Each next hop ([`HopRecord`]) is its node id (32 bytes), its address, its weight (u32), a
//! rewrite flag byte (0: the frame's routing key is sent unchanged; 1: it is replaced) and the
//! rewrite key (16 bytes in network byte order, exactly what goes into the NexLink header; all
//! zero when the flag is 0). Load refuses any other flag value, and a non-zero key under flag 0.
//!
//! Format version 3 (the current [`TABLE_FORMAT_VERSION`]) added the allowed-source set
//! ([`TableRecord::sources`], the last field of the root): the IP addresses the data plane
//! accepts frames from, each as 16 bytes in network byte order — an IPv6 address as is, an IPv4
//! address as its IPv4-mapped IPv6 address `::ffff:a.b.c.d` — in strictly ascending byte order
//! (so no address twice), at most [`SOURCES_MAX`] of them, each a unicast address (not `::`,
//! `::ffff:0.0.0.0`, multicast or `::ffff:255.255.255.255`). Load refuses a set that breaks any
//! of these. A P4 or NIC target can load the list as exact-match entries on the source address
//! as it is; the forwarder builds a hash set from it once, at load.
//!
//! History: version 1 had no rewrite; version 2 added the rewrite; version 3 the sources.

use std::mem::size_of;
use std::net::SocketAddr;

use rkyv::{Archive, Serialize};

use super::{NEXT_HOPS_TOTAL_MAX, ROUTES_MAX, SLOTS_MAX, SOURCES_MAX};

/// First 8 bytes of every table image.
pub const TABLE_MAGIC: [u8; 8] = *b"NEXUSFIB";

/// Version of the image format this build writes and reads.
///
/// History: 1 — first format; 2 — each next hop carries a routing-key rewrite (a flag byte and
/// 16 key bytes); 3 — the generation carries its allowed-source set (16-byte addresses in
/// ascending order). The layout is in this module's source, `fib/format.rs`. A build reads only
/// its own version: images are compiled by the same node that loads them, so there is nothing
/// to migrate.
pub const TABLE_FORMAT_VERSION: u32 = 3;

/// [`HopRecord::rewrite_flag`]: the next hop leaves the frame's routing key unchanged.
pub(crate) const REWRITE_NONE: u8 = 0;
/// [`HopRecord::rewrite_flag`]: the next hop writes [`HopRecord::rewrite_key`] into the frame.
pub(crate) const REWRITE_KEY: u8 = 1;

/// Length of the fixed header in front of the archive (a multiple of 16 so the archive stays
/// aligned inside an aligned buffer).
pub const HEADER_LEN: usize = 32;

/// The archive's alignment inside an image buffer.
pub(crate) const IMAGE_ALIGN: usize = 16;

/// Multiplier applied to a caller's flow hash before the weighted choice, so that flow hashes
/// with entropy only in their low bits (small counters) still spread over the whole range.
pub const FLOW_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Largest image [`FibTable::load`](super::FibTable::load) accepts: the sizes of the archived
/// arrays at their limits, plus a page of slack for the root and alignment padding. At the
/// limits this is about 0.4 GiB, inside rkyv's 2 GiB relative-pointer range.
pub const TABLE_BYTES_MAX: usize = HEADER_LEN
    + SLOTS_MAX * size_of::<ArchivedSlotRecord>()
    + ROUTES_MAX * size_of::<u32>()
    + ROUTES_MAX * size_of::<ArchivedGroupRecord>()
    + NEXT_HOPS_TOTAL_MAX * (size_of::<ArchivedHopRecord>() + size_of::<u32>())
    + SOURCES_MAX * size_of::<[u8; 16]>()
    + 4096;

const _: () = assert!(
    TABLE_BYTES_MAX < i32::MAX as usize,
    "rkyv relative pointers are i32"
);
const _: () = assert!(
    size_of::<ArchivedSlotRecord>() == 32,
    "two slots per cache line"
);

/// Header field offsets.
pub(crate) const MAGIC_AT: usize = 0;
pub(crate) const VERSION_AT: usize = 8;
pub(crate) const CRC_AT: usize = 12;
pub(crate) const GENERATION_AT: usize = 16;
pub(crate) const LENGTH_AT: usize = 24;
/// The checksum covers `bytes[CRC_FROM..]`.
pub(crate) const CRC_FROM: usize = 16;

/// The root of a table archive.
#[derive(Archive, Serialize, Debug)]
pub(crate) struct TableRecord {
    /// Must equal the header's generation.
    pub(crate) generation: u64,
    /// Seed of [`slot_hash`] for this generation.
    pub(crate) hash_seed: u64,
    /// Longest displacement of any key from its home slot; lookups probe at most this + 1 slots.
    pub(crate) probe_len_max: u32,
    /// Occupied slots (= routes).
    pub(crate) entry_count: u32,
    /// The hash table; its length is a power of two in `SLOTS_MIN..=SLOTS_MAX`.
    pub(crate) slots: Vec<SlotRecord>,
    /// Indices of the occupied slots in ascending key order (the `entries` view).
    pub(crate) order: Vec<u32>,
    /// Deduplicated next-hop groups.
    pub(crate) groups: Vec<GroupRecord>,
    /// Next hops of all groups, each group a contiguous run in canonical order.
    pub(crate) hops: Vec<HopRecord>,
    /// Parallel to `hops`: the running sum of weights within the hop's group (inclusive).
    pub(crate) cumulative: Vec<u32>,
    /// The allowed-source set: canonical 16-byte addresses
    /// ([`SourceIp`](super::SourceIp)), strictly ascending, each unicast.
    pub(crate) sources: Vec<[u8; 16]>,
}

/// One hash-table slot. Empty when `hop_count == 0` (an occupied slot has at least one hop).
/// The group's range and weight total are copied in so a hit needs no read of `groups`.
#[derive(Archive, Serialize, Debug, Clone, Copy, Default)]
pub(crate) struct SlotRecord {
    pub(crate) key_lo: u64,
    pub(crate) key_hi: u64,
    pub(crate) group: u32,
    pub(crate) hop_first: u32,
    pub(crate) hop_count: u32,
    pub(crate) weight_total: u32,
}

/// One deduplicated next-hop group: `hops[hop_first..hop_first + hop_count]`.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub(crate) struct GroupRecord {
    pub(crate) hop_first: u32,
    pub(crate) hop_count: u32,
    pub(crate) weight_total: u32,
}

/// One next hop.
///
/// The rewrite is a flag byte plus the key's 16 bytes in network byte order (exactly the bytes
/// the forwarder writes into the header, and what a P4 action takes as its parameter), rather
/// than an rkyv `Option`, so the layout is spelled out for the other targets. The flag is
/// [`REWRITE_NONE`] (then the key bytes are all zero) or [`REWRITE_KEY`]; load refuses anything
/// else.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub(crate) struct HopRecord {
    pub(crate) node: [u8; 32],
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) rewrite_flag: u8,
    pub(crate) rewrite_key: [u8; 16],
}

const MIX_HI: u64 = 0xa076_1d64_78bd_642f;
const MIX_LO: u64 = 0xe703_7ed1_a0b4_28db;

/// The slot hash of a key: a seeded 64×64→128-bit multiply folded to 64 bits (wyhash's `mum`),
/// which mixes all 128 key bits so patterned keys (small integers, shared halves) spread out.
/// The home slot is the top `log2(slots)` bits.
#[inline]
pub(crate) fn slot_hash(key: u128, seed: u64) -> u64 {
    let lo = (key as u64) ^ seed ^ MIX_LO;
    let hi = ((key >> 64) as u64) ^ seed.rotate_left(32) ^ MIX_HI;
    let product = u128::from(lo) * u128::from(hi);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The home slot of `key` in a table of `1 << slot_bits` slots.
#[inline]
pub(crate) fn home_slot(key: u128, seed: u64, slot_bits: u32) -> usize {
    // slot_bits is in 3..=21 (SLOTS_MIN..=SLOTS_MAX), so the shift is in 43..=61.
    (slot_hash(key, seed) >> (64 - slot_bits)) as usize
}

/// The point in `[0, weight_total)` a flow hash maps to.
#[inline]
pub(crate) fn flow_point(flow_hash: u64, weight_total: u32) -> u32 {
    let mixed = flow_hash.wrapping_mul(FLOW_MIX);
    // (mixed * weight_total) >> 64 < weight_total ≤ u32::MAX.
    ((u128::from(mixed) * u128::from(weight_total)) >> 64) as u32
}

/// The hash seeds the compiler tries, in order (fixed, so compiling is deterministic).
pub(crate) const HASH_SEEDS: [u64; super::HASH_SEED_ATTEMPTS] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_point_stays_below_the_total() {
        for total in [1u32, 2, 3, 7, 1000, u32::MAX] {
            for flow in [0u64, 1, 2, u64::MAX, u64::MAX / 2, 0x1234_5678_9abc_def0] {
                assert!(flow_point(flow, total) < total, "flow {flow} total {total}");
            }
        }
    }

    #[test]
    fn small_flow_hashes_spread() {
        // Sequential flow hashes (a weak caller hash) must not all land on one next hop.
        let mut buckets = [0u32; 4];
        for flow in 0..4000u64 {
            buckets[flow_point(flow, 4) as usize] += 1;
        }
        for count in buckets {
            assert!((900..=1100).contains(&count), "{buckets:?}");
        }
    }

    #[test]
    fn home_slot_is_in_range() {
        for bits in 3..=21 {
            for key in [0u128, 1, u128::MAX, 1 << 64, 12345] {
                assert!(home_slot(key, HASH_SEEDS[0], bits) < (1 << bits));
            }
        }
    }
}
