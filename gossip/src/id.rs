//! Who a member is: its stable node id, the address peers use, its generation and its metadata.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Bytes allowed in [`MemberMeta::name`].
pub const NAME_BYTES_MAX: usize = 64;
/// Bytes allowed in [`MemberMeta::version`].
pub const VERSION_BYTES_MAX: usize = 32;
/// Roles a member may carry.
pub const ROLES_MAX: usize = 8;
/// Bytes allowed in one role name.
pub const ROLE_BYTES_MAX: usize = 16;

/// A node's stable identifier: its Ed25519 public key.
///
/// Using the public key itself (rather than a hash of it) lets any peer verify what the node signs
/// without a lookup.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// The first 12 hex digits, for tables and log lines.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(12);
        hex
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A bounded metadata record every member carries: who it is, where its admin API is, what it
/// runs and which roles it has.
///
/// Construct it with [`MemberMeta::new`], which enforces the limits; decoded records are checked
/// against the same limits by the wire codec.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    name: String,
    admin: Option<SocketAddr>,
    version: String,
    roles: Vec<String>,
    dataplane: Option<SocketAddr>,
    /// Where the member's CA Raft listener is, if it is a CA voter.
    ca_raft: Option<SocketAddr>,
}

/// A metadata field broke its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The name is empty or longer than [`NAME_BYTES_MAX`].
    #[error("name must be 1..={NAME_BYTES_MAX} bytes, got {0}")]
    NameLength(usize),
    /// The name has a character other than `[A-Za-z0-9._-]`.
    #[error("name may only contain letters, digits, '.', '_' and '-'")]
    NameCharset,
    /// The version string is longer than [`VERSION_BYTES_MAX`].
    #[error("version must be at most {VERSION_BYTES_MAX} bytes, got {0}")]
    VersionLength(usize),
    /// More than [`ROLES_MAX`] roles.
    #[error("at most {ROLES_MAX} roles, got {0}")]
    TooManyRoles(usize),
    /// A role is empty, too long or not `[a-z0-9-]`.
    #[error("role {0:?} must be 1..={ROLE_BYTES_MAX} bytes of [a-z0-9-]")]
    BadRole(String),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl MemberMeta {
    /// A metadata record, checked against the limits above.
    pub fn new(
        name: impl Into<String>,
        admin: Option<SocketAddr>,
        version: impl Into<String>,
        roles: Vec<String>,
    ) -> Result<Self, MetaError> {
        let meta = MemberMeta {
            name: name.into(),
            admin,
            version: version.into(),
            roles,
            dataplane: None,
            ca_raft: None,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Checks every limit; used on construction and on decode.
    pub fn check(&self) -> Result<(), MetaError> {
        if self.name.is_empty() || self.name.len() > NAME_BYTES_MAX {
            return Err(MetaError::NameLength(self.name.len()));
        }
        if !self.name.chars().all(is_name_char) {
            return Err(MetaError::NameCharset);
        }
        if self.version.len() > VERSION_BYTES_MAX {
            return Err(MetaError::VersionLength(self.version.len()));
        }
        if self.roles.len() > ROLES_MAX {
            return Err(MetaError::TooManyRoles(self.roles.len()));
        }
        for role in &self.roles {
            let ok = !role.is_empty()
                && role.len() <= ROLE_BYTES_MAX
                && role
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(MetaError::BadRole(role.clone()));
            }
        }
        Ok(())
    }

    /// The node's human name (unique by convention, not enforced).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the node's admin API listens, if it said.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The software version the node runs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The node's roles (e.g. `ca`).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Where the node's data plane receives NexLink frames, if it runs one.
    pub fn dataplane(&self) -> Option<SocketAddr> {
        self.dataplane
    }

    /// The same record, saying where the node's data plane receives frames.
    pub fn with_dataplane(mut self, dataplane: Option<SocketAddr>) -> Self {
        self.dataplane = dataplane;
        self
    }

    /// Where the node's CA Raft listener accepts peers and clients, if it is a CA voter.
    pub fn ca_raft(&self) -> Option<SocketAddr> {
        self.ca_raft
    }

    /// The same record, saying where the node's CA Raft listener is (CA voters only).
    pub fn with_ca_raft(mut self, ca_raft: Option<SocketAddr>) -> Self {
        self.ca_raft = ca_raft;
        self
    }
}

/// A member's identity as SWIM sees it.
///
/// `addr` is the address peers send to; `node_id` is stable across restarts; `generation` grows
/// on every (re)start and on every automatic rejoin, so a restarted node replaces its old entry
/// (foca's "rename") instead of being confused with it.
///
/// Cheap to clone and compare: the fields live behind an [`Arc`] together with the identity's
/// canonical encoding (the bytes it has on the wire, see `docs/protocols/membership.md`), and
/// identities are interned per thread by that encoding, so every copy of one identity a thread
/// decodes or builds shares one allocation. Two identities are equal when their encodings are
/// (pointer-equal in the common case). The order is that of the fields: address, node id,
/// generation, metadata.
#[derive(Clone)]
pub struct MemberId(Arc<IdInner>);

struct IdInner {
    addr: SocketAddr,
    node_id: NodeId,
    generation: u64,
    meta: MemberMeta,
    /// The canonical encoding of the four fields above.
    wire: WireBytes,
    /// A fixed 64-bit hash of `wire` (the interning key's hash, reused by state-sync digests).
    hash: u64,
    /// Why the fields would be refused on decode (built locally with metadata over a limit),
    /// so an interned identity is not accepted from the wire without the check.
    invalid: Option<MetaError>,
    /// This address's number in the process-wide [`addr_slots`] table (`None` once the table
    /// is full), set when the identity is interned.
    slot: Option<u32>,
}

/// Encodings up to this many bytes are kept inside the identity's own allocation.
const WIRE_INLINE_BYTES: usize = 126;

/// The bytes of a canonical encoding, kept inside the identity's allocation when short (every
/// identity whose metadata is not near its limits is), so comparing bytes against an interned
/// identity reads one allocation rather than two: decoding an identity the thread already holds
/// was dominated by those two cache misses in simulations of thousands of nodes.
enum WireBytes {
    Inline {
        len: u8,
        bytes: [u8; WIRE_INLINE_BYTES],
    },
    Heap(Box<[u8]>),
}

impl WireBytes {
    fn new(wire: &[u8]) -> Self {
        match u8::try_from(wire.len()) {
            Ok(len) if wire.len() <= WIRE_INLINE_BYTES => {
                let mut bytes = [0u8; WIRE_INLINE_BYTES];
                bytes[..wire.len()].copy_from_slice(wire);
                WireBytes::Inline { len, bytes }
            }
            _ => WireBytes::Heap(wire.into()),
        }
    }
}

impl std::ops::Deref for WireBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            WireBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            WireBytes::Heap(bytes) => bytes,
        }
    }
}

/// Whether decoding these fields must fail: metadata over a limit, except for the seed
/// placeholder (zero node id, default metadata).
fn meta_problem(node_id: &NodeId, meta: &MemberMeta) -> Option<MetaError> {
    if node_id.0 == [0; 32] && *meta == MemberMeta::default() {
        return None;
    }
    meta.check().err()
}

/// Longest canonical identity encoding accepted on decode, in bytes (the metadata limits keep
/// real ones under 300).
pub const ID_WIRE_BYTES_MAX: usize = 512;

/// Why bytes are not a canonical identity encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdDecodeError {
    /// The bytes end inside a field.
    #[error("identity truncated in {0}")]
    Truncated(&'static str),
    /// An address tag other than 4 (IPv4) or 6 (IPv6), or an option tag other than 0.
    #[error("bad address tag {0}")]
    BadAddrTag(u8),
    /// A varint longer than 10 bytes or above `u64::MAX`.
    #[error("bad varint in {0}")]
    BadVarint(&'static str),
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes left after the last field.
    #[error("{0} trailing bytes after the identity")]
    Trailing(usize),
    /// Longer than [`ID_WIRE_BYTES_MAX`].
    #[error("identity encoding of {0} bytes is over the limit of {ID_WIRE_BYTES_MAX}")]
    TooLong(usize),
    /// The metadata breaks a limit.
    #[error("member metadata: {0}")]
    Meta(#[from] MetaError),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Addresses as the canonical encoding keeps them (no IPv6 flow info or scope id).
fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::V4(a),
        SocketAddr::V6(a) => SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), a.port(), 0, 0)),
    }
}

fn encode_fields(
    addr: &SocketAddr,
    node_id: &NodeId,
    generation: u64,
    meta: &MemberMeta,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + meta.name.len() + meta.version.len());
    put_addr(&mut out, addr);
    out.extend_from_slice(&node_id.0);
    put_varint(&mut out, generation);
    put_str(&mut out, &meta.name);
    match &meta.admin {
        None => out.push(0),
        Some(a) => put_addr(&mut out, a),
    }
    put_str(&mut out, &meta.version);
    put_varint(&mut out, meta.roles.len() as u64);
    for role in &meta.roles {
        put_str(&mut out, role);
    }
    match &meta.dataplane {
        None => out.push(0),
        Some(a) => put_addr(&mut out, a),
    }
    match &meta.ca_raft {
        None => out.push(0),
        Some(a) => put_addr(&mut out, a),
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], IdDecodeError> {
        if self.0.len() < n {
            return Err(IdDecodeError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, IdDecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, IdDecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte(what)?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err(IdDecodeError::BadVarint(what));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(IdDecodeError::BadVarint(what))
    }

    fn addr_body(&mut self, tag: u8, what: &'static str) -> Result<SocketAddr, IdDecodeError> {
        match tag {
            4 => {
                let b = self.take(6, what)?;
                let ip = std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                Ok(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
            }
            6 => {
                let b = self.take(18, what)?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[..16]);
                let ip = std::net::Ipv6Addr::from(octets);
                Ok(SocketAddr::new(
                    ip.into(),
                    u16::from_be_bytes([b[16], b[17]]),
                ))
            }
            other => Err(IdDecodeError::BadAddrTag(other)),
        }
    }

    fn addr(&mut self, what: &'static str) -> Result<SocketAddr, IdDecodeError> {
        let tag = self.byte(what)?;
        self.addr_body(tag, what)
    }

    fn opt_addr(&mut self, what: &'static str) -> Result<Option<SocketAddr>, IdDecodeError> {
        match self.byte(what)? {
            0 => Ok(None),
            tag => self.addr_body(tag, what).map(Some),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, IdDecodeError> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).map_err(|_| IdDecodeError::Truncated(what))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| IdDecodeError::NotUtf8(what))
    }
}

fn decode_fields(wire: &[u8]) -> Result<(SocketAddr, NodeId, u64, MemberMeta), IdDecodeError> {
    if wire.len() > ID_WIRE_BYTES_MAX {
        return Err(IdDecodeError::TooLong(wire.len()));
    }
    let mut r = Reader(wire);
    let addr = r.addr("addr")?;
    let mut node_id = [0u8; 32];
    node_id.copy_from_slice(r.take(32, "node id")?);
    let generation = r.varint("generation")?;
    let name = r.string("name")?;
    let admin = r.opt_addr("admin")?;
    let version = r.string("version")?;
    let count = r.varint("roles")?;
    let mut roles = Vec::new();
    for _ in 0..count.min(ROLES_MAX as u64 + 1) {
        roles.push(r.string("role")?);
    }
    if count > ROLES_MAX as u64 {
        return Err(IdDecodeError::Meta(MetaError::TooManyRoles(
            usize::try_from(count).unwrap_or(usize::MAX),
        )));
    }
    let dataplane = r.opt_addr("dataplane")?;
    let ca_raft = r.opt_addr("ca_raft")?;
    if !r.0.is_empty() {
        return Err(IdDecodeError::Trailing(r.0.len()));
    }
    let meta = MemberMeta {
        name,
        admin,
        version,
        roles,
        dataplane,
        ca_raft,
    };
    let node_id = NodeId(node_id);
    if let Some(problem) = meta_problem(&node_id, &meta) {
        return Err(problem.into());
    }
    Ok((addr, node_id, generation, meta))
}

/// Per-thread table of live identities by canonical encoding.
mod intern {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::IdInner;

    /// A fixed, unkeyed hash (the table is never iterated into any output): the word hash
    /// ([`crate::mix::WordHash`]) from the length, then murmur3's finaliser so the low bits
    /// (bucket) and top bits (control byte) both depend on every input bit.
    pub(super) fn hash(bytes: &[u8]) -> u64 {
        let mut words = crate::mix::WordHash::new(bytes.len() as u64);
        words.words(bytes);
        let mut h = words.state();
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    #[derive(Default)]
    struct Table {
        ids: hashbrown::HashTable<Arc<IdInner>>,
        /// Size after the last sweep; the next sweep runs at twice this.
        swept_at: usize,
    }

    thread_local! {
        static TABLE: RefCell<Table> = RefCell::new(Table::default());
    }

    /// The live identity with this encoding, if this thread holds one.
    pub(super) fn find(wire: &[u8]) -> Option<Arc<IdInner>> {
        let h = hash(wire);
        TABLE.with(|t| t.borrow().ids.find(h, |id| *id.wire == *wire).cloned())
    }

    /// Interns `inner` (or returns the equal identity already interned).
    pub(super) fn insert(mut inner: IdInner) -> Arc<IdInner> {
        let h = inner.hash;
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(found) = t.ids.find(h, |id| *id.wire == *inner.wire) {
                return found.clone();
            }
            if t.ids.len() >= (2 * t.swept_at).max(1024) {
                // Forget identities nobody holds any more.
                t.ids.retain(|id| Arc::strong_count(id) > 1);
                t.swept_at = t.ids.len();
            }
            inner.slot = super::addr_slots::slot_of(inner.addr);
            let arc = Arc::new(inner);
            t.ids.insert_unique(h, arc.clone(), |id| id.hash);
            arc
        })
    }
}

/// Process-wide numbering of the addresses identities carry, for foca's member tables
/// ([`foca::Identity::addr_slot`]): a table finds the member holding an address by reading one
/// vector element at the address's slot instead of probing a hash index. Slots are handed out
/// densely in order of first sight, never reused and never freed (so identities with one
/// address always share one slot, whichever thread interned them), up to [`ADDR_SLOTS_MAX`];
/// identities with addresses first seen after that have no slot and are found through the hash
/// index. Slots only locate members: they never reach the wire, an output or a trace.
mod addr_slots {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::{Mutex, PoisonError};

    static SLOTS: Mutex<BTreeMap<SocketAddr, u32>> = Mutex::new(BTreeMap::new());

    /// The slot of `addr`, handing out the next one on first sight (`None` once
    /// [`super::ADDR_SLOTS_MAX`] are handed out).
    pub(super) fn slot_of(addr: SocketAddr) -> Option<u32> {
        // The map is only ever read or extended under the lock; a panic elsewhere while it was
        // held cannot leave it half-updated, so a poisoned lock is still consistent.
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&slot) = slots.get(&addr) {
            return Some(slot);
        }
        if slots.len() >= super::ADDR_SLOTS_MAX {
            return None;
        }
        let slot = u32::try_from(slots.len()).ok()?;
        slots.insert(addr, slot);
        Some(slot)
    }
}

/// Addresses given a slot for foca's member tables per process (see [`MemberId`]'s
/// `addr_slot`): beyond this many distinct addresses, identities are found through the tables'
/// hash index instead. Each member table holds four bytes per slot up to the highest slot among
/// its members, so this bounds that vector at 4 MiB.
pub const ADDR_SLOTS_MAX: usize = 1 << 20;

impl MemberId {
    /// A member identity.
    pub fn new(addr: SocketAddr, node_id: NodeId, generation: u64, meta: MemberMeta) -> Self {
        let addr = canonical_addr(addr);
        let wire = encode_fields(&addr, &node_id, generation, &meta);
        if let Some(found) = intern::find(&wire) {
            return MemberId(found);
        }
        let invalid = meta_problem(&node_id, &meta);
        MemberId(intern::insert(IdInner {
            addr,
            node_id,
            generation,
            meta,
            invalid,
            slot: None,
            hash: intern::hash(&wire),
            wire: WireBytes::new(&wire),
        }))
    }

    /// Decodes a canonical encoding ([`MemberId::wire`]), checking the metadata limits. An
    /// encoding this thread already holds costs one table lookup and no allocation.
    pub fn from_wire(wire: &[u8]) -> Result<Self, IdDecodeError> {
        if let Some(found) = intern::find(wire) {
            return match &found.invalid {
                Some(problem) => Err(problem.clone().into()),
                None => Ok(MemberId(found)),
            };
        }
        let (addr, node_id, generation, meta) = decode_fields(wire)?;
        Ok(MemberId(intern::insert(IdInner {
            addr,
            node_id,
            generation,
            meta,
            invalid: None,
            slot: None,
            hash: intern::hash(wire),
            wire: WireBytes::new(wire),
        })))
    }

    /// A fixed (unkeyed, the same on every node and platform) 64-bit hash of
    /// [`MemberId::wire`].
    pub fn wire_hash(&self) -> u64 {
        self.0.hash
    }

    /// The canonical encoding: what this identity is on the wire.
    pub fn wire(&self) -> &[u8] {
        &self.0.wire
    }

    /// The identity used to announce to a seed whose node id is not known yet.
    ///
    /// foca accepts an `Announce` addressed to any identity with the receiver's address.
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        MemberId::new(addr, NodeId([0; 32]), 0, MemberMeta::default())
    }

    /// The address peers send to.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// The stable node id.
    pub fn node_id(&self) -> NodeId {
        self.0.node_id
    }

    /// The (re)start generation.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// The metadata record.
    pub fn meta(&self) -> &MemberMeta {
        &self.0.meta
    }

    fn fields(&self) -> (&SocketAddr, &NodeId, u64, &MemberMeta) {
        (
            &self.0.addr,
            &self.0.node_id,
            self.0.generation,
            &self.0.meta,
        )
    }
}

impl PartialEq for MemberId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0.wire == *other.0.wire
    }
}

impl Eq for MemberId {}

impl PartialOrd for MemberId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MemberId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.fields().cmp(&other.fields())
    }
}

impl std::hash::Hash for MemberId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberId")
            .field("addr", &self.0.addr)
            .field("node_id", &self.0.node_id)
            .field("generation", &self.0.generation)
            .field("meta", &self.0.meta)
            .finish()
    }
}

impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.wire)
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MemberId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a canonical member identity encoding")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<MemberId, E> {
                MemberId::from_wire(v).map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MemberId, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if bytes.len() >= ID_WIRE_BYTES_MAX {
                        return Err(serde::de::Error::custom(IdDecodeError::TooLong(
                            bytes.len() + 1,
                        )));
                    }
                    bytes.push(b);
                }
                MemberId::from_wire(&bytes).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (e.g. after a long pause): come back as a newer generation.
        Some(MemberId::new(
            self.addr(),
            self.node_id(),
            self.generation().saturating_add(1),
            self.meta().clone(),
        ))
    }

    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    fn addr_slot(&self) -> Option<u32> {
        self.0.slot
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Newer generation wins; on a tie (two data dirs behind one address) the order is
        // arbitrary but the same on every node.
        (self.generation(), self.node_id()) > (adversary.generation(), adversary.node_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn meta(name: &str) -> MemberMeta {
        MemberMeta::new(name, None, "0.1.0", vec!["ca".into()]).expect("valid meta")
    }

    #[test]
    fn meta_limits() {
        assert!(matches!(
            MemberMeta::new("", None, "", vec![]),
            Err(MetaError::NameLength(0))
        ));
        assert!(matches!(
            MemberMeta::new("a".repeat(65), None, "", vec![]),
            Err(MetaError::NameLength(65))
        ));
        assert_eq!(
            MemberMeta::new("bad name", None, "", vec![]),
            Err(MetaError::NameCharset)
        );
        assert!(matches!(
            MemberMeta::new("n", None, "v".repeat(33), vec![]),
            Err(MetaError::VersionLength(33))
        ));
        assert!(matches!(
            MemberMeta::new("n", None, "", vec!["x".into(); 9]),
            Err(MetaError::TooManyRoles(9))
        ));
        assert!(matches!(
            MemberMeta::new("n", None, "", vec!["Upper".into()]),
            Err(MetaError::BadRole(_))
        ));
        assert!(MemberMeta::new("node-1.a_b", None, "0.1.0", vec!["ca".into()]).is_ok());
    }

    #[test]
    fn short_and_long_encodings_intern_and_compare_alike() {
        let addr: SocketAddr = "127.0.0.1:7".parse().expect("addr");
        let short = MemberId::new(addr, NodeId([7; 32]), 1, meta("s"));
        let roles: Vec<String> = (0..ROLES_MAX).map(|k| format!("role-{k:0>10}")).collect();
        let long_meta =
            MemberMeta::new("l".repeat(NAME_BYTES_MAX), None, "v", roles).expect("meta");
        let long = MemberId::new(addr, NodeId([7; 32]), 1, long_meta);
        assert!(short.wire().len() <= WIRE_INLINE_BYTES);
        assert!(long.wire().len() > WIRE_INLINE_BYTES);
        for id in [&short, &long] {
            let back = MemberId::from_wire(id.wire()).expect("decodes");
            assert!(Arc::ptr_eq(&back.0, &id.0), "interned: the same allocation");
            assert_eq!(&back, id);
            assert_eq!(back.wire(), id.wire());
        }
        assert_ne!(short, long);
        assert_eq!(short.addr_slot(), long.addr_slot(), "one address, one slot");
        let other: SocketAddr = "127.0.0.1:8".parse().expect("addr");
        let elsewhere = MemberId::new(other, NodeId([7; 32]), 1, meta("s"));
        assert!(short.addr_slot().is_some());
        assert_ne!(short.addr_slot(), elsewhere.addr_slot());
    }

    #[test]
    fn newer_generation_wins_address_conflict() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let old = MemberId::new(addr, NodeId([1; 32]), 3, meta("a"));
        let new = old.renew().expect("renewable");
        assert_eq!(new.generation(), 4);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn ca_raft_address_roundtrips_on_the_wire() {
        let addr: SocketAddr = "127.0.0.1:7946".parse().expect("addr");
        let raft: SocketAddr = "[::1]:7800".parse().expect("raft addr");
        let with = MemberId::new(addr, NodeId([5; 32]), 2, meta("v").with_ca_raft(Some(raft)));
        let back = MemberId::from_wire(with.wire()).expect("decodes");
        assert_eq!(back.meta().ca_raft(), Some(raft));
        let without = MemberId::new(addr, NodeId([5; 32]), 2, meta("v"));
        assert_ne!(with.wire(), without.wire());
        assert_eq!(
            MemberId::from_wire(without.wire())
                .expect("decodes")
                .meta()
                .ca_raft(),
            None
        );
        // A truncated trailing address is refused, not read as absent.
        let wire = with.wire();
        assert!(MemberId::from_wire(&wire[..wire.len() - 3]).is_err());
    }

    #[test]
    fn node_id_hex() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.short(), "abababababab");
    }
}
