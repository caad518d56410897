//! The forwarding information base (FIB): exact match on a 128-bit [`RoutingKey`] → a weighted
//! next-hop group, compiled by the control plane and read by the data plane without locks.
//!
//! What it does: a [`RouteSet`] (what the registry's route deltas fold into) is [`compile`]d into
//! a [`TableImage`] — an rkyv 0.8 archive behind a 32-byte header carrying a magic, a format
//! version, a CRC-32, the generation number and the archive length. [`FibTable::load`] validates
//! an image once (header, checksum, rkyv bytecheck, then the table's own invariants); after that
//! lookups read the archive in place, never deserializing it. A [`Fib`] handle swaps whole
//! generations atomically (`arc-swap`): a lookup made on one loaded generation sees that
//! generation only — the old table or the new one, never a mix. The previous generation is kept
//! for [`Fib::rollback`]. Each generation also carries its allowed-source set ([`SourceSet`]:
//! the IPs its data plane accepts frames from, checked by [`FibTable::allows_source`]), so an
//! install or a rollback swaps the sources with the routes.
//!
//! What it does not do: it does not fold route deltas (that is the table-compiler actor's job; it
//! keeps a [`RouteSet`] and calls [`compile`]), does no longest-prefix or wildcard matching (the
//! control plane resolves intents to exact keys), and keeps no per-packet counters (a forwarder
//! thread counts its own hits and misses; shared counters on the hot path would bounce a cache
//! line between cores).
//!
//! # Call order
//!
//! Control plane (table compiler): `RouteSet::new(g)` → `insert`/`remove` → `set_sources` →
//! `set_generation(g+1)` → [`compile`] → (publish [`TableImage::as_bytes`] to other targets) → [`FibTable::load`] →
//! [`Fib::install`]. Operator: [`Fib::rollback`], [`Fib::snapshot`] + [`FibTable::entries_from`]
//! for a paged `GET /v1/fib`.
//!
//! Data plane (forwarder thread): [`Fib::reader`] once, then per batch of packets
//! `let table = reader.table();` and per packet `table.allows_source(ip)` (with the source check
//! on), then `table.route(key, flow_hash)`.
//!
//! # Layout of a generation
//!
//! An open-addressing hash table laid out in the archive: a power-of-two array of 32-byte slots
//! (`key` as two u64, the group id, and the group's next-hop range and weight total inlined so a
//! hit costs one slot read plus the next-hop read), load factor at most 1/2, linear probing with
//! a seeded multiply-fold hash and a probe bound measured at compile time and checked at load.
//! Next-hop groups are deduplicated (many keys usually share one group), each stored as a run of
//! next hops plus a parallel run of cumulative weights. Each next hop carries an optional
//! routing-key rewrite ([`NextHop::rewrite`], [`NextHopRef::rewrite`]): the key the forwarder
//! writes into a frame it sends to that hop (an MPLS-style label swap, so an intent-class key
//! at the ingress becomes the per-service key the egress node delivers by). A hop is identified
//! by (node id, address, rewrite), so one node address may appear in a group once per service.
//! The image format is in `format.rs` ([`TABLE_FORMAT_VERSION`] 2 added the rewrite, 3 the
//! allowed-source set: 16-byte addresses in ascending order, read into a hash set at load). A
//! key-sorted index of slots serves the ordered `entries` view. `benches/fib.rs` measures it
//! against a sorted array, `BTreeMap` and `HashMap` at 1k, 100k and 1M keys.
//!
//! # Weighted choice
//!
//! [`NextHopGroup::select`] maps a caller's 64-bit flow hash to a point in `[0, weight_total)`
//! (`((flow_hash * FLOW_MIX mod 2^64) * weight_total) >> 64`) and picks the next hop whose
//! cumulative-weight range holds it. The same flow hash on the same group always picks the same
//! next hop, exactly in proportion to the weights, at the cost of one multiply and a binary search
//! over at most [`NEXT_HOPS_MAX`] u32s. The trade-off against a Maglev-style slot table: no
//! per-group table (memory stays proportional to the next hops, not to groups × table size) and
//! exact proportions, but when a group's membership or weights change, flows move between
//! next hops in proportion to how much the cumulative ranges shift (a removed next hop can move
//! some flows of the survivors too), where Maglev would move close to the minimum. Flows of
//! other keys never move: the choice depends only on the group's own next hops, which are kept
//! sorted by (node id, address, weight, rewrite) so it does not depend on the order the
//! registry emitted them.

mod compile;
mod format;
mod handle;
mod route;
mod source;
mod table;
mod validate;

pub use compile::{CompileError, TableImage, compile};
pub use format::{FLOW_MIX, HEADER_LEN, TABLE_BYTES_MAX, TABLE_FORMAT_VERSION, TABLE_MAGIC};
pub use handle::{Fib, FibCounters, FibGuard, FibReader, InstallError, RollbackError};
pub use route::{NextHop, NodeIdHex, RouteError, RouteSet, RoutingKey};
pub use source::{SourceError, SourceIp, SourceSet};
pub use table::{Entries, FibEntry, FibTable, LoadError, NextHopGroup, NextHopRef, TableStats};

/// Most routes (keys) in one generation. Sized for a 1M-key table with headroom to the
/// next power of two; it bounds the slot array at [`SLOTS_MAX`].
pub const ROUTES_MAX: usize = 1 << 20;

/// Most next hops in one key's group. A flow's choice is a binary search over this many weights.
pub const NEXT_HOPS_MAX: usize = 64;

/// Most next hops summed over all routes of a generation (before groups are deduplicated). This,
/// with [`ROUTES_MAX`], bounds a compiled image below [`TABLE_BYTES_MAX`].
pub const NEXT_HOPS_TOTAL_MAX: usize = 1 << 22;

/// Most addresses in one generation's allowed-source set ([`SourceSet`]): the data planes of a
/// large fabric's members plus the node's local addresses, with room to spare.
pub const SOURCES_MAX: usize = 1 << 16;

/// Largest sum of the weights of one group: cumulative weights are archived as u32.
pub const WEIGHT_TOTAL_MAX: u32 = u32::MAX;

/// Most slots in a generation's hash table: the load factor stays at or below 1/2.
pub const SLOTS_MAX: usize = (ROUTES_MAX * 2).next_power_of_two();

/// Fewest slots in a generation's hash table (an empty table still has this many).
pub const SLOTS_MIN: usize = 8;

/// Longest probe sequence the compiler aims for. If a hash seed gives a longer one it tries the
/// next of [`HASH_SEED_ATTEMPTS`] seeds and keeps the shortest; the probe length actually reached
/// is stored in the table and bounds every lookup, hit or miss.
pub const PROBE_LEN_TARGET: u32 = 64;

/// How many hash seeds the compiler tries before keeping the best layout it found.
pub const HASH_SEED_ATTEMPTS: usize = 4;
