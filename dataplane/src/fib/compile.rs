//! Compiling a [`RouteSet`] into a table image.

use std::collections::HashMap;
use std::fmt;

use rkyv::util::AlignedVec;

use super::format::{
    CRC_AT, CRC_FROM, GENERATION_AT, GroupRecord, HASH_SEEDS, HEADER_LEN, HopRecord, IMAGE_ALIGN,
    LENGTH_AT, MAGIC_AT, REWRITE_KEY, REWRITE_NONE, SlotRecord, TABLE_FORMAT_VERSION, TABLE_MAGIC,
    TableRecord, VERSION_AT, home_slot,
};
use super::route::{NextHop, RouteSet};
use super::{PROBE_LEN_TARGET, SLOTS_MIN};

/// The bytes of one compiled table generation: header + rkyv archive in a 16-byte aligned
/// buffer. Not validated by itself: [`FibTable::load`](super::FibTable::load) validates it.
///
/// This is what the table compiler publishes: to the dataplane (via `load`), and as plain bytes
/// ([`as_bytes`](Self::as_bytes)) to storage or the P4 and NIC targets.
#[derive(Clone)]
pub struct TableImage {
    bytes: AlignedVec<IMAGE_ALIGN>,
}

impl TableImage {
    /// An image from bytes received or read from storage (copied into an aligned buffer).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Self { bytes: aligned }
    }

    /// The image's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The image's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the image has no bytes (never true for a compiled one).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn into_aligned(self) -> AlignedVec<IMAGE_ALIGN> {
        self.bytes
    }
}

impl PartialEq for TableImage {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TableImage {}

impl fmt::Debug for TableImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableImage")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Why a route set could not be compiled. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// rkyv refused to serialize the table. With the route-set limits in force this does not
    /// happen short of running out of memory; it is reported rather than assumed.
    #[error("serializing table generation {generation} failed: {reason}")]
    Serialize {
        /// The generation being compiled.
        generation: u64,
        /// rkyv's message.
        reason: String,
    },
}

/// Compiles `routes` (and its allowed-source set) into a table image for generation
/// `routes.generation()`.
///
/// Deterministic: the same route set gives byte-identical images (groups are numbered in key
/// order, hash seeds are tried in a fixed order). Cost is linear in the routes plus the next hops.
pub fn compile(routes: &RouteSet) -> Result<TableImage, CompileError> {
    let record = build_record(routes);
    serialize(&record)
}

/// Lays out the table (hash slots, groups, next hops) in native form.
pub(crate) fn build_record(routes: &RouteSet) -> TableRecord {
    let mut groups: Vec<GroupRecord> = Vec::new();
    let mut hops: Vec<HopRecord> = Vec::new();
    let mut cumulative: Vec<u32> = Vec::new();
    // Keys are routes' group contents; only probed, never iterated, so the hasher cannot reach
    // the output (group ids follow key order).
    let mut group_ids: HashMap<&[NextHop], u32> = HashMap::new();
    let mut key_groups: Vec<(u128, u32)> = Vec::with_capacity(routes.len());

    for (key, next_hops) in routes.routes() {
        let group = *group_ids.entry(next_hops.as_slice()).or_insert_with(|| {
            let id = len_u32(groups.len());
            let hop_first = len_u32(hops.len());
            let mut running: u32 = 0;
            for hop in next_hops {
                // RouteSet guarantees the sum fits WEIGHT_TOTAL_MAX = u32::MAX.
                running += hop.weight;
                let (rewrite_flag, rewrite_key) = match hop.rewrite {
                    None => (REWRITE_NONE, [0u8; 16]),
                    Some(key) => (REWRITE_KEY, key.to_be_bytes()),
                };
                hops.push(HopRecord {
                    node: hop.node,
                    addr: hop.addr,
                    weight: hop.weight,
                    rewrite_flag,
                    rewrite_key,
                });
                cumulative.push(running);
            }
            groups.push(GroupRecord {
                hop_first,
                hop_count: len_u32(next_hops.len()),
                weight_total: running,
            });
            id
        });
        key_groups.push((key.0, group));
    }

    let slot_count = (routes.len() * 2).next_power_of_two().max(SLOTS_MIN);
    let slot_bits = slot_count.trailing_zeros();
    // Fixed seed order keeps compiling deterministic; a later seed is tried only when the
    // earlier layout's longest probe is over the target, and the shortest one wins.
    let mut placement = place(&key_groups, &groups, HASH_SEEDS[0], slot_bits);
    for &seed in &HASH_SEEDS[1..] {
        if placement.probe_len_max <= PROBE_LEN_TARGET {
            break;
        }
        let candidate = place(&key_groups, &groups, seed, slot_bits);
        if candidate.probe_len_max < placement.probe_len_max {
            placement = candidate;
        }
    }

    TableRecord {
        generation: routes.generation(),
        hash_seed: placement.seed,
        probe_len_max: placement.probe_len_max,
        entry_count: len_u32(key_groups.len()),
        slots: placement.slots,
        order: placement.order,
        groups,
        hops,
        cumulative,
        // SourceIp orders as its big-endian bytes: ascending here is ascending in the image.
        sources: routes
            .sources()
            .iter()
            .map(|source| source.to_be_bytes())
            .collect(),
    }
}

struct Placement {
    seed: u64,
    probe_len_max: u32,
    slots: Vec<SlotRecord>,
    order: Vec<u32>,
}

/// Linear-probing placement of the keys (in key order) with one hash seed.
fn place(
    key_groups: &[(u128, u32)],
    groups: &[GroupRecord],
    seed: u64,
    slot_bits: u32,
) -> Placement {
    let slot_count = 1usize << slot_bits;
    let mask = slot_count - 1;
    let mut slots = vec![SlotRecord::default(); slot_count];
    let mut order = Vec::with_capacity(key_groups.len());
    let mut probe_len_max = 0u32;
    for &(key, group) in key_groups {
        let mut position = home_slot(key, seed, slot_bits);
        let mut displacement = 0u32;
        // The load factor is at most 1/2, so a free slot is always found.
        while slots[position].hop_count != 0 {
            position = (position + 1) & mask;
            displacement += 1;
        }
        let record = &groups[group as usize];
        slots[position] = SlotRecord {
            key_lo: key as u64,
            key_hi: (key >> 64) as u64,
            group,
            hop_first: record.hop_first,
            hop_count: record.hop_count,
            weight_total: record.weight_total,
        };
        order.push(len_u32(position));
        probe_len_max = probe_len_max.max(displacement);
    }
    Placement {
        seed,
        probe_len_max,
        slots,
        order,
    }
}

/// Serializes a record behind a header into an aligned image.
pub(crate) fn serialize(record: &TableRecord) -> Result<TableImage, CompileError> {
    let mut writer = AlignedVec::<IMAGE_ALIGN>::new();
    writer.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(record, writer)
        .map_err(|error| CompileError::Serialize {
            generation: record.generation,
            reason: error.to_string(),
        })?;
    let archive_len = (bytes.len() - HEADER_LEN) as u64;
    bytes[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(&TABLE_MAGIC);
    bytes[VERSION_AT..VERSION_AT + 4].copy_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
    bytes[GENERATION_AT..GENERATION_AT + 8].copy_from_slice(&record.generation.to_le_bytes());
    bytes[LENGTH_AT..LENGTH_AT + 8].copy_from_slice(&archive_len.to_le_bytes());
    let crc = crc32fast::hash(&bytes[CRC_FROM..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(TableImage { bytes })
}

/// A length or index as u32. Every count in a table is bounded by `SLOTS_MAX` or
/// `NEXT_HOPS_TOTAL_MAX`, both far below `u32::MAX`.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| unreachable!("table counts are bounded below u32::MAX"))
}
