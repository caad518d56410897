//! One loaded, validated, immutable table generation, and the read-only views lookups return.

use std::collections::HashSet;
use std::fmt;
use std::iter::FusedIterator;
use std::net::{IpAddr, SocketAddr};

use rkyv::Archived;
use rkyv::util::AlignedVec;
use rustc_hash::FxBuildHasher;
use yoke::Yoke;

use super::compile::TableImage;
use super::format::{
    ArchivedHopRecord, ArchivedSlotRecord, ArchivedTableRecord, CRC_AT, CRC_FROM, GENERATION_AT,
    HEADER_LEN, IMAGE_ALIGN, LENGTH_AT, MAGIC_AT, REWRITE_NONE, TABLE_BYTES_MAX,
    TABLE_FORMAT_VERSION, TABLE_MAGIC, VERSION_AT, flow_point, home_slot,
};
use super::route::{NextHop, RoutingKey};
use super::source::SourceIp;
use super::validate::check_table;

/// Why a table image was refused. Nothing was loaded or installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Shorter than the fixed header.
    #[error("table image is {len} bytes, shorter than its {HEADER_LEN}-byte header (truncated)")]
    Truncated {
        /// The image's length.
        len: usize,
    },
    /// Longer than [`TABLE_BYTES_MAX`].
    #[error("table image is {len} bytes, more than TABLE_BYTES_MAX = {TABLE_BYTES_MAX}")]
    TooLarge {
        /// The image's length.
        len: usize,
    },
    /// The first 8 bytes are not [`TABLE_MAGIC`].
    #[error("not a table image: magic is {found:02x?}, expected {TABLE_MAGIC:02x?} (\"NEXUSFIB\")")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// A format version this build does not read.
    #[error("table image format version {found}; this build reads version {TABLE_FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// The header's archive length disagrees with the bytes that follow it.
    #[error(
        "table image header says the archive is {header} bytes but {actual} bytes follow the header (truncated or extended)"
    )]
    LengthMismatch {
        /// The length the header states.
        header: u64,
        /// The bytes actually after the header.
        actual: u64,
    },
    /// The CRC-32 over the generation, length and archive does not match.
    #[error(
        "table image checksum mismatch: header says {expected:#010x}, bytes hash to {actual:#010x} (corrupted)"
    )]
    ChecksumMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the bytes.
        actual: u32,
    },
    /// rkyv's bytecheck refused the archive.
    #[error("table archive failed rkyv validation: {reason}")]
    Archive {
        /// rkyv's message.
        reason: String,
    },
    /// The header and the archive name different generations.
    #[error(
        "table image header says generation {header} but its archive holds generation {archive}"
    )]
    GenerationMismatch {
        /// The header's generation.
        header: u64,
        /// The archive's generation.
        archive: u64,
    },
    /// The archive is memory-safe but not a consistent table.
    #[error("table generation {generation} is inconsistent: {detail}")]
    Inconsistent {
        /// The archive's generation.
        generation: u64,
        /// What is wrong, and where.
        detail: String,
    },
}

/// Counts and sizes of one generation (for metrics and the `GET /v1/fib` summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// The generation number.
    pub generation: u64,
    /// Routes (keys).
    pub entries: usize,
    /// Distinct next-hop groups.
    pub groups: usize,
    /// Next hops over all distinct groups.
    pub next_hops: usize,
    /// Hash-table slots (a power of two, at least twice the entries).
    pub slots: usize,
    /// The longest probe a lookup can make, minus one.
    pub probe_len_max: u32,
    /// Addresses in the allowed-source set.
    pub sources: usize,
    /// Size of the image in bytes.
    pub image_bytes: usize,
    /// The image's CRC-32.
    pub crc32: u32,
}

/// The image buffer together with the archive reference validated at load. `yoke` keeps the
/// buffer (at a stable heap address) and the reference borrowed from it in one value, so lookups
/// use the once-checked reference without `unsafe` (no `access_unchecked`) and without
/// re-validating per lookup.
type ArchiveCell = Yoke<&'static ArchivedTableRecord, Box<AlignedVec<IMAGE_ALIGN>>>;

/// One validated table generation, read in place.
///
/// Immutable: a new generation is a new `FibTable`. Lookups take `&self`, lock nothing and
/// allocate nothing; the buffer is owned here together with the validated archive reference, so
/// the table can be shared across threads in an `Arc` (which is what [`Fib`](super::Fib) does).
///
/// The routes are read in place; the allowed-source set is also copied once, at load, into a
/// hash set of canonical addresses ([`allows_source`](Self::allows_source): one multiply-hash
/// and one probe group per frame), which lives and is swapped with the generation.
pub struct FibTable {
    archive: ArchiveCell,
    /// The archive's `sources` as canonical u128s (FxHash: the keys are the control plane's, and
    /// an attacker choosing the probed address cannot make a probe longer than the longest
    /// collision chain among those keys).
    sources: HashSet<u128, FxBuildHasher>,
    generation: u64,
    hash_seed: u64,
    slot_bits: u32,
    slot_mask: usize,
    probe_len_max: u32,
    image_bytes: usize,
    crc32: u32,
}

impl FibTable {
    /// Validates an image once — header, checksum, rkyv bytecheck, then the table's invariants —
    /// and keeps it for in-place lookups. The image's buffer is reused, not copied.
    pub fn load(image: TableImage) -> Result<FibTable, LoadError> {
        let bytes = image.into_aligned();
        let header = check_header(&bytes)?;
        let archive: ArchiveCell = Yoke::try_attach_to_cart(
            Box::new(bytes),
            |bytes: &AlignedVec<IMAGE_ALIGN>| -> Result<&ArchivedTableRecord, LoadError> {
                let table =
                    rkyv::access::<ArchivedTableRecord, rkyv::rancor::Error>(&bytes[HEADER_LEN..])
                        .map_err(|error| LoadError::Archive {
                            reason: error.to_string(),
                        })?;
                let generation = table.generation.to_native();
                if generation != header.generation {
                    return Err(LoadError::GenerationMismatch {
                        header: header.generation,
                        archive: generation,
                    });
                }
                check_table(table)
                    .map_err(|detail| LoadError::Inconsistent { generation, detail })?;
                Ok(table)
            },
        )?;
        let table: &ArchivedTableRecord = archive.get();
        let slot_count = table.slots.len();
        let sources = table
            .sources
            .iter()
            .map(|bytes| SourceIp::from_be_bytes(*bytes).to_bits())
            .collect();
        Ok(FibTable {
            sources,
            generation: header.generation,
            hash_seed: table.hash_seed.to_native(),
            slot_bits: slot_count.trailing_zeros(),
            slot_mask: slot_count - 1,
            probe_len_max: table.probe_len_max.to_native(),
            image_bytes: header.image_bytes,
            crc32: header.crc32,
            archive,
        })
    }

    #[inline]
    fn record(&self) -> &ArchivedTableRecord {
        self.archive.get()
    }

    /// This table's generation number.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many routes (keys) the table holds.
    pub fn len(&self) -> usize {
        self.record().order.len()
    }

    /// Whether the table holds no routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next-hop group of `key`, or `None` if the table has no route for it. Probes at most
    /// `probe_len_max + 1` slots, hit or miss.
    #[inline]
    pub fn lookup(&self, key: RoutingKey) -> Option<NextHopGroup<'_>> {
        let table = self.record();
        let slots = table.slots.as_slice();
        let key_lo = key.0 as u64;
        let key_hi = (key.0 >> 64) as u64;
        let mut position = home_slot(key.0, self.hash_seed, self.slot_bits);
        for _ in 0..=self.probe_len_max {
            // position ≤ slot_mask < slots.len(): the length was checked to be a power of two.
            let slot = &slots[position];
            if slot.hop_count == 0 {
                return None;
            }
            if slot.key_lo == key_lo && slot.key_hi == key_hi {
                return Some(NextHopGroup::of_slot(table, slot));
            }
            position = (position + 1) & self.slot_mask;
        }
        None
    }

    /// The next hop for one packet: the group of `key`, then the weighted choice for
    /// `flow_hash` (see [`NextHopGroup::select`]). `None` if the table has no route for `key`.
    #[inline]
    pub fn route(&self, key: RoutingKey, flow_hash: u64) -> Option<NextHopRef<'_>> {
        self.lookup(key).map(|group| group.select(flow_hash))
    }

    /// Whether this generation accepts frames from `ip` (an IPv4 address and its IPv4-mapped
    /// IPv6 form are the same source). One hash and one probe; no allocation.
    #[inline]
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        self.sources.contains(&SourceIp::new(ip).to_bits())
    }

    /// The allowed-source set in canonical (ascending) order, read from the image.
    pub fn sources(&self) -> impl ExactSizeIterator<Item = SourceIp> + '_ {
        self.record()
            .sources
            .iter()
            .map(|bytes| SourceIp::from_be_bytes(*bytes))
    }

    /// All routes in ascending key order.
    pub fn entries(&self) -> Entries<'_> {
        let table = self.record();
        Entries {
            table,
            order: table.order.as_slice().iter(),
        }
    }

    /// Routes with keys `>= from`, in ascending key order (for a paged `GET /v1/fib`: pass the
    /// last key shown plus one and `take` a page).
    pub fn entries_from(&self, from: RoutingKey) -> Entries<'_> {
        let table = self.record();
        let order = table.order.as_slice();
        let slots = table.slots.as_slice();
        let start = order
            .partition_point(|position| slot_key(&slots[position.to_native() as usize]) < from);
        Entries {
            table,
            order: order[start..].iter(),
        }
    }

    /// Counts and sizes of this generation.
    pub fn stats(&self) -> TableStats {
        let table = self.record();
        TableStats {
            generation: self.generation,
            entries: table.order.len(),
            groups: table.groups.len(),
            next_hops: table.hops.len(),
            slots: table.slots.len(),
            probe_len_max: self.probe_len_max,
            sources: table.sources.len(),
            image_bytes: self.image_bytes,
            crc32: self.crc32,
        }
    }
}

impl fmt::Debug for FibTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FibTable")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Header {
    generation: u64,
    image_bytes: usize,
    crc32: u32,
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0u8; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(field)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(field)
}

/// Checks everything in front of the archive, and the checksum over it.
fn check_header(bytes: &[u8]) -> Result<Header, LoadError> {
    let len = bytes.len();
    if len < HEADER_LEN {
        return Err(LoadError::Truncated { len });
    }
    if len > TABLE_BYTES_MAX {
        return Err(LoadError::TooLarge { len });
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[MAGIC_AT..MAGIC_AT + 8]);
    if magic != TABLE_MAGIC {
        return Err(LoadError::BadMagic { found: magic });
    }
    let version = le_u32(bytes, VERSION_AT);
    if version != TABLE_FORMAT_VERSION {
        return Err(LoadError::UnsupportedVersion { found: version });
    }
    let stated = le_u64(bytes, LENGTH_AT);
    let actual = (len - HEADER_LEN) as u64;
    if stated != actual {
        return Err(LoadError::LengthMismatch {
            header: stated,
            actual,
        });
    }
    let expected = le_u32(bytes, CRC_AT);
    let computed = crc32fast::hash(&bytes[CRC_FROM..]);
    if expected != computed {
        return Err(LoadError::ChecksumMismatch {
            expected,
            actual: computed,
        });
    }
    Ok(Header {
        generation: le_u64(bytes, GENERATION_AT),
        image_bytes: len,
        crc32: computed,
    })
}

fn slot_key(slot: &ArchivedSlotRecord) -> RoutingKey {
    RoutingKey(u128::from(slot.key_lo.to_native()) | (u128::from(slot.key_hi.to_native()) << 64))
}

/// A route's weighted next-hop group, borrowed from a loaded table.
#[derive(Clone, Copy)]
pub struct NextHopGroup<'a> {
    id: u32,
    weight_total: u32,
    hops: &'a [ArchivedHopRecord],
    cumulative: &'a [Archived<u32>],
}

impl<'a> NextHopGroup<'a> {
    #[inline]
    fn of_slot(table: &'a ArchivedTableRecord, slot: &ArchivedSlotRecord) -> Self {
        let first = slot.hop_first.to_native() as usize;
        let end = first + slot.hop_count.to_native() as usize;
        // In range: checked against the group table on load.
        NextHopGroup {
            id: slot.group.to_native(),
            weight_total: slot.weight_total.to_native(),
            hops: &table.hops.as_slice()[first..end],
            cumulative: &table.cumulative.as_slice()[first..end],
        }
    }

    /// The next hop for the flow with hash `flow_hash`, chosen with probability ∝ weight; always
    /// the same next hop for the same flow hash and the same group contents.
    ///
    /// The flow hash is the caller's hash of (source, session, stream); it is multiplied by
    /// [`FLOW_MIX`](super::FLOW_MIX) first, so even a weak hash spreads. Next hop `i` is chosen
    /// when `((flow_hash * FLOW_MIX mod 2^64) * weight_total) >> 64` falls in
    /// `[cumulative[i-1], cumulative[i])`.
    #[inline]
    pub fn select(&self, flow_hash: u64) -> NextHopRef<'a> {
        let index = if self.hops.len() == 1 {
            0
        } else {
            let point = flow_point(flow_hash, self.weight_total);
            self.cumulative
                .partition_point(|cumulative| cumulative.to_native() <= point)
        };
        // point < weight_total = the last cumulative weight, so index < len.
        NextHopRef(&self.hops[index])
    }

    /// The group's id within its generation (groups with identical next hops share one id;
    /// ids are not stable across generations).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The sum of the group's weights.
    pub fn weight_total(&self) -> u32 {
        self.weight_total
    }

    /// How many next hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Always false: a group has at least one next hop.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The next hops in canonical order (node id, address, weight, rewrite).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = NextHopRef<'a>> + 'a {
        self.hops.iter().map(NextHopRef)
    }

    /// The next hops as owned values.
    pub fn to_vec(&self) -> Vec<NextHop> {
        self.iter().map(|hop| hop.to_next_hop()).collect()
    }
}

impl fmt::Debug for NextHopGroup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextHopGroup")
            .field("id", &self.id)
            .field("weight_total", &self.weight_total)
            .field("hops", &self.to_vec())
            .finish()
    }
}

/// One next hop, borrowed from a loaded table.
#[derive(Clone, Copy)]
pub struct NextHopRef<'a>(&'a ArchivedHopRecord);

impl<'a> NextHopRef<'a> {
    /// The next hop's node id.
    #[inline]
    pub fn node(&self) -> &'a [u8; 32] {
        &self.0.node
    }

    /// The address to send to.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.0.addr.as_socket_addr()
    }

    /// The next hop's weight.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.0.weight.to_native()
    }

    /// The routing key a frame sent to this hop carries on the wire (see [`NextHop::rewrite`]);
    /// `None` leaves the frame's key unchanged. The flag byte was checked on load to be one of
    /// the two defined values.
    #[inline]
    pub fn rewrite(&self) -> Option<RoutingKey> {
        if self.0.rewrite_flag == REWRITE_NONE {
            None
        } else {
            Some(RoutingKey::from_be_bytes(self.0.rewrite_key))
        }
    }

    /// As an owned value.
    pub fn to_next_hop(&self) -> NextHop {
        NextHop {
            node: *self.node(),
            addr: self.addr(),
            weight: self.weight(),
            rewrite: self.rewrite(),
        }
    }
}

impl fmt::Debug for NextHopRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_next_hop(), f)
    }
}

/// One route of a loaded table.
#[derive(Debug, Clone, Copy)]
pub struct FibEntry<'a> {
    /// The routing key.
    pub key: RoutingKey,
    /// Its next-hop group.
    pub group: NextHopGroup<'a>,
}

/// Iterator over a table's routes in ascending key order ([`FibTable::entries`]).
#[derive(Clone)]
pub struct Entries<'a> {
    table: &'a ArchivedTableRecord,
    order: std::slice::Iter<'a, Archived<u32>>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = FibEntry<'a>;

    fn next(&mut self) -> Option<FibEntry<'a>> {
        let position = self.order.next()?.to_native() as usize;
        // Every order entry names an occupied slot: checked on load.
        let slot = &self.table.slots.as_slice()[position];
        Some(FibEntry {
            key: slot_key(slot),
            group: NextHopGroup::of_slot(self.table, slot),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.order.size_hint()
    }
}

impl ExactSizeIterator for Entries<'_> {}
impl FusedIterator for Entries<'_> {}

impl fmt::Debug for Entries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entries")
            .field("remaining", &self.order.len())
            .finish()
    }
}
