//! Fabric-wide keyring operations over gossip, as `serf keys` does them: the node an operator
//! asks sends a [`KeyringRequest`] to every alive member, each applies it to its own keyring and
//! answers with a [`KeyringResponse`]; [`KeyringQuery`] collects the answers into a
//! [`KeyringSummary`] (how many members hold each key, who refused, who did not answer).
//!
//! Both messages travel only sealed (a driver MUST drop a keyring message that arrived in
//! plaintext), after the shared four-byte prefix `[WIRE_MAGIC, KEYRING_WIRE_VERSION, kind, 0]`
//! with kinds `0x20..=0x2f` (see [`is_keyring_kind`] and `docs/protocols/membership.md`,
//! "Keyring operations"). Every decode checks lengths against the bytes present before reading.
//!
//! [`ReplayWindow`] remembers recent request ids so a captured request replayed under a key
//! that is still installed is refused instead of applied again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::PACKET_BYTES_MAX;
use crate::keyring::{KEY_BYTES, KEYS_MAX, KeyringOp, SecretKey};
use crate::membership::WIRE_MAGIC;
use crate::overlay::wire::put_addr;

/// Second byte of a keyring message.
pub const KEYRING_WIRE_VERSION: u8 = 1;
/// A keyring operation for the receiver to apply.
pub const KIND_KEYRING_REQUEST: u8 = 0x20;
/// The answer to a [`KIND_KEYRING_REQUEST`].
pub const KIND_KEYRING_RESPONSE: u8 = 0x21;
/// Longest error text a response carries, bytes.
pub const KEYRING_ERROR_BYTES_MAX: usize = 200;
/// Request ids a [`ReplayWindow`] remembers.
pub const REPLAY_WINDOW_IDS: usize = 1024;

const PREFIX_BYTES: usize = 4;
const OP_LIST: u8 = 0;
const OP_INSTALL: u8 = 1;
const OP_USE: u8 = 2;
const OP_REMOVE: u8 = 3;

/// Whether a plaintext datagram's kind byte (its third byte) is a keyring message's.
pub fn is_keyring_kind(kind: u8) -> bool {
    (0x20..=0x2f).contains(&kind)
}

/// Why a keyring message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringWireError {
    /// Fewer bytes than the fields need.
    #[error("truncated ({0} bytes)")]
    Truncated(usize),
    /// Longer than [`PACKET_BYTES_MAX`].
    #[error("too long ({0} bytes)")]
    TooLong(usize),
    /// The prefix is not `[WIRE_MAGIC, KEYRING_WIRE_VERSION, kind, 0]` with a known kind.
    #[error("bad prefix {0:02x?}")]
    Prefix([u8; 4]),
    /// An unknown operation code.
    #[error("unknown operation {0}")]
    Op(u8),
    /// An address tag other than 4 or 6.
    #[error("bad address tag {0}")]
    AddrTag(u8),
    /// A status other than 0 (ok) or 1 (refused), or an error text on success.
    #[error("bad status {0}")]
    Status(u8),
    /// The error text is not UTF-8 or longer than [`KEYRING_ERROR_BYTES_MAX`].
    #[error("bad error text")]
    ErrorText,
    /// More than [`KEYS_MAX`] keys.
    #[error("{0} keys, at most {KEYS_MAX}")]
    TooManyKeys(usize),
    /// Bytes after the last field.
    #[error("{0} bytes left over")]
    Trailing(usize),
}

/// A keyring operation sent to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringRequest {
    /// Chosen at random by the sender; the response carries it back.
    pub id: u64,
    /// What to do.
    pub op: KeyringOp,
}

/// A member's answer: the outcome and its keyring afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringResponse {
    /// The request's id.
    pub id: u64,
    /// The responder's gossip address (its member address).
    pub member: SocketAddr,
    /// `None` if the operation was applied (or changed nothing), else why it was refused.
    pub error: Option<String>,
    /// The responder's keys after the operation, the primary first (empty without a keyring).
    pub keys: Vec<SecretKey>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyringWireError> {
        if self.bytes.len() - self.pos < n {
            return Err(KeyringWireError::Truncated(self.bytes.len()));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, KeyringWireError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KeyringWireError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn key(&mut self) -> Result<SecretKey, KeyringWireError> {
        Ok(SecretKey::from_bytes(self.array::<KEY_BYTES>()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, KeyringWireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            tag => return Err(KeyringWireError::AddrTag(tag)),
        };
        Ok(SocketAddr::new(ip, u16::from_be_bytes(self.array::<2>()?)))
    }

    fn finish(&self) -> Result<(), KeyringWireError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(KeyringWireError::Trailing(n)),
        }
    }
}

fn reader(bytes: &[u8], kind: u8) -> Result<Reader<'_>, KeyringWireError> {
    if bytes.len() > PACKET_BYTES_MAX {
        return Err(KeyringWireError::TooLong(bytes.len()));
    }
    let mut r = Reader { bytes, pos: 0 };
    let prefix = r.array::<PREFIX_BYTES>()?;
    if prefix != [WIRE_MAGIC, KEYRING_WIRE_VERSION, kind, 0] {
        return Err(KeyringWireError::Prefix(prefix));
    }
    Ok(r)
}

impl KeyringRequest {
    /// The datagram (plaintext; seal it before sending).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_MAGIC, KEYRING_WIRE_VERSION, KIND_KEYRING_REQUEST, 0];
        out.extend_from_slice(&self.id.to_be_bytes());
        let (code, key) = match &self.op {
            KeyringOp::List => (OP_LIST, None),
            KeyringOp::Install(k) => (OP_INSTALL, Some(k)),
            KeyringOp::Use(k) => (OP_USE, Some(k)),
            KeyringOp::Remove(k) => (OP_REMOVE, Some(k)),
        };
        out.push(code);
        if let Some(k) = key {
            out.extend_from_slice(k.as_bytes());
        }
        out
    }

    /// Decodes a request datagram (already opened).
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyringWireError> {
        let mut r = reader(bytes, KIND_KEYRING_REQUEST)?;
        let id = u64::from_be_bytes(r.array::<8>()?);
        let op = match r.u8()? {
            OP_LIST => KeyringOp::List,
            OP_INSTALL => KeyringOp::Install(r.key()?),
            OP_USE => KeyringOp::Use(r.key()?),
            OP_REMOVE => KeyringOp::Remove(r.key()?),
            other => return Err(KeyringWireError::Op(other)),
        };
        r.finish()?;
        Ok(KeyringRequest { id, op })
    }
}

impl KeyringResponse {
    /// The datagram (plaintext; seal it before sending). An error text is cut to
    /// [`KEYRING_ERROR_BYTES_MAX`] bytes (at a character boundary) and the key list to
    /// [`KEYS_MAX`], so the datagram always fits.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_MAGIC, KEYRING_WIRE_VERSION, KIND_KEYRING_RESPONSE, 0];
        out.extend_from_slice(&self.id.to_be_bytes());
        put_addr(&mut out, self.member);
        match &self.error {
            None => out.push(0),
            Some(text) => {
                let mut end = text.len().min(KEYRING_ERROR_BYTES_MAX);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                out.push(1);
                out.push(end as u8);
                out.extend_from_slice(&text.as_bytes()[..end]);
            }
        }
        let keys = &self.keys[..self.keys.len().min(KEYS_MAX)];
        out.push(keys.len() as u8);
        for k in keys {
            out.extend_from_slice(k.as_bytes());
        }
        out
    }

    /// Decodes a response datagram (already opened).
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyringWireError> {
        let mut r = reader(bytes, KIND_KEYRING_RESPONSE)?;
        let id = u64::from_be_bytes(r.array::<8>()?);
        let member = r.addr()?;
        let error = match r.u8()? {
            0 => None,
            1 => {
                let len = usize::from(r.u8()?);
                if len > KEYRING_ERROR_BYTES_MAX {
                    return Err(KeyringWireError::ErrorText);
                }
                let text =
                    std::str::from_utf8(r.take(len)?).map_err(|_| KeyringWireError::ErrorText)?;
                Some(text.to_owned())
            }
            other => return Err(KeyringWireError::Status(other)),
        };
        let count = usize::from(r.u8()?);
        if count > KEYS_MAX {
            return Err(KeyringWireError::TooManyKeys(count));
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(r.key()?);
        }
        r.finish()?;
        Ok(KeyringResponse {
            id,
            member,
            error,
            keys,
        })
    }
}

/// Request ids seen recently, oldest forgotten first (at most [`REPLAY_WINDOW_IDS`]).
#[derive(Debug, Default)]
pub struct ReplayWindow {
    seen: BTreeSet<u64>,
    order: VecDeque<u64>,
}

impl ReplayWindow {
    /// Records `id`; `false` if it was already in the window (a replay or a duplicate).
    pub fn insert(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REPLAY_WINDOW_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// One member's outcome in a [`KeyringSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOutcome {
    /// The member's name.
    pub name: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Why it refused.
    pub error: String,
}

/// What a fabric-wide keyring operation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringSummary {
    /// The operation.
    pub op: KeyringOp,
    /// Members asked (the local node included).
    pub members: usize,
    /// Members that answered (refusals included).
    pub responded: usize,
    /// For each key any answering member holds: how many hold it.
    pub keys: BTreeMap<SecretKey, usize>,
    /// For each key that is some member's primary: how many use it.
    pub primary: BTreeMap<SecretKey, usize>,
    /// Members that refused the operation.
    pub refused: Vec<MemberOutcome>,
    /// Members that did not answer in time (name, address).
    pub no_answer: Vec<(String, SocketAddr)>,
}

/// Collects the answers to one fabric-wide keyring operation.
///
/// Call order: [`KeyringQuery::new`] with the local outcome and the members asked;
/// [`KeyringQuery::handle_response`] for each response that arrives (sealed); when it returns
/// `true` or the driver's deadline passes, [`KeyringQuery::finish`].
#[derive(Debug)]
pub struct KeyringQuery {
    id: u64,
    summary: KeyringSummary,
    pending: BTreeMap<SocketAddr, String>,
}

impl KeyringQuery {
    /// A query for request `id`: `local` is the local node's own outcome (its name, address,
    /// error and keys after applying), `members` the other members it was sent to.
    pub fn new(
        id: u64,
        op: KeyringOp,
        local: (String, KeyringResponse),
        members: impl IntoIterator<Item = (SocketAddr, String)>,
    ) -> Self {
        let pending: BTreeMap<SocketAddr, String> = members.into_iter().collect();
        let mut query = KeyringQuery {
            id,
            summary: KeyringSummary {
                op,
                members: pending.len() + 1,
                responded: 0,
                keys: BTreeMap::new(),
                primary: BTreeMap::new(),
                refused: Vec::new(),
                no_answer: Vec::new(),
            },
            pending,
        };
        query.record(local.0, &local.1);
        query
    }

    /// The request id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The members that have not answered yet.
    pub fn pending(&self) -> impl Iterator<Item = &SocketAddr> {
        self.pending.keys()
    }

    fn record(&mut self, name: String, response: &KeyringResponse) {
        self.summary.responded += 1;
        if let Some(error) = &response.error {
            self.summary.refused.push(MemberOutcome {
                name,
                addr: response.member,
                error: error.clone(),
            });
        }
        for key in &response.keys {
            *self.summary.keys.entry(key.clone()).or_default() += 1;
        }
        if let Some(primary) = response.keys.first() {
            *self.summary.primary.entry(primary.clone()).or_default() += 1;
        }
    }

    /// Takes one response; responses for another request or from a member not asked (or
    /// already answered) are ignored. `true` once every member has answered.
    pub fn handle_response(&mut self, response: &KeyringResponse) -> bool {
        if response.id == self.id
            && let Some(name) = self.pending.remove(&response.member)
        {
            self.record(name, response);
        }
        self.pending.is_empty()
    }

    /// The summary; members still pending are listed as not answering.
    pub fn finish(mut self) -> KeyringSummary {
        self.summary.no_answer = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(addr, name)| (name, addr))
            .collect();
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; KEY_BYTES])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn requests_round_trip() {
        for op in [
            KeyringOp::List,
            KeyringOp::Install(key(1)),
            KeyringOp::Use(key(2)),
            KeyringOp::Remove(key(3)),
        ] {
            let req = KeyringRequest { id: 42, op };
            let bytes = req.encode();
            assert!(is_keyring_kind(bytes[2]));
            assert_eq!(KeyringRequest::decode(&bytes), Ok(req));
        }
    }

    #[test]
    fn responses_round_trip_and_long_errors_are_cut() {
        let ok = KeyringResponse {
            id: 7,
            member: "[::1]:9000".parse().expect("addr"),
            error: None,
            keys: vec![key(1), key(2)],
        };
        assert_eq!(KeyringResponse::decode(&ok.encode()), Ok(ok));
        let long = KeyringResponse {
            id: 8,
            member: addr(1),
            error: Some("é".repeat(150)),
            keys: (0..KEYS_MAX as u8 + 3).map(key).collect(),
        };
        let bytes = long.encode();
        assert!(bytes.len() <= PACKET_BYTES_MAX);
        let back = KeyringResponse::decode(&bytes).expect("decodes");
        assert_eq!(back.error.as_deref().map(str::len), Some(200));
        assert_eq!(back.keys.len(), KEYS_MAX);
    }

    #[test]
    fn bad_messages_are_refused() {
        let req = KeyringRequest {
            id: 1,
            op: KeyringOp::Install(key(1)),
        }
        .encode();
        for cut in 0..req.len() {
            assert!(KeyringRequest::decode(&req[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = req.clone();
        extra.push(0);
        assert_eq!(
            KeyringRequest::decode(&extra),
            Err(KeyringWireError::Trailing(1))
        );
        let mut op = req.clone();
        op[12] = 9;
        assert_eq!(KeyringRequest::decode(&op), Err(KeyringWireError::Op(9)));
        let mut version = req.clone();
        version[1] = 2;
        assert!(matches!(
            KeyringRequest::decode(&version),
            Err(KeyringWireError::Prefix(_))
        ));
        // A response is not a request.
        let resp = KeyringResponse {
            id: 1,
            member: addr(5),
            error: Some("no".into()),
            keys: vec![key(1)],
        }
        .encode();
        assert!(KeyringRequest::decode(&resp).is_err());
        for cut in 0..resp.len() {
            assert!(KeyringResponse::decode(&resp[..cut]).is_err(), "cut {cut}");
        }
        let mut tag = resp.clone();
        tag[12] = 5;
        assert_eq!(
            KeyringResponse::decode(&tag),
            Err(KeyringWireError::AddrTag(5))
        );
        let mut status = resp.clone();
        status[19] = 2;
        assert_eq!(
            KeyringResponse::decode(&status),
            Err(KeyringWireError::Status(2))
        );
        let mut text = resp.clone();
        text[21] = 0xff;
        assert_eq!(
            KeyringResponse::decode(&text),
            Err(KeyringWireError::ErrorText)
        );
        let mut count = resp.clone();
        count[23] = KEYS_MAX as u8 + 1;
        assert_eq!(
            KeyringResponse::decode(&count),
            Err(KeyringWireError::TooManyKeys(KEYS_MAX + 1))
        );
        assert!(matches!(
            KeyringResponse::decode(&vec![WIRE_MAGIC; PACKET_BYTES_MAX + 1]),
            Err(KeyringWireError::TooLong(_))
        ));
    }

    #[test]
    fn replay_window_refuses_repeats_and_forgets_the_oldest() {
        let mut w = ReplayWindow::default();
        assert!(w.insert(1));
        assert!(!w.insert(1));
        for id in 2..=REPLAY_WINDOW_IDS as u64 + 1 {
            assert!(w.insert(id));
        }
        // 1 fell out of the window.
        assert!(w.insert(1));
        assert!(!w.insert(REPLAY_WINDOW_IDS as u64));
    }

    #[test]
    fn query_counts_keys_refusals_and_silence() {
        let local = KeyringResponse {
            id: 9,
            member: addr(1),
            error: None,
            keys: vec![key(2), key(1)],
        };
        let mut q = KeyringQuery::new(
            9,
            KeyringOp::Use(key(2)),
            ("a".into(), local),
            [
                (addr(2), "b".into()),
                (addr(3), "c".into()),
                (addr(4), "d".into()),
            ],
        );
        assert_eq!(q.pending().count(), 3);
        let b = KeyringResponse {
            id: 9,
            member: addr(2),
            error: None,
            keys: vec![key(2), key(1)],
        };
        assert!(!q.handle_response(&b));
        // A duplicate, another request's answer and a stranger's are ignored.
        assert!(!q.handle_response(&b));
        assert!(!q.handle_response(&KeyringResponse {
            id: 10,
            ..b.clone()
        }));
        assert!(!q.handle_response(&KeyringResponse {
            member: addr(99),
            ..b.clone()
        }));
        let c = KeyringResponse {
            id: 9,
            member: addr(3),
            error: Some("key is not installed; install it first".into()),
            keys: vec![key(1)],
        };
        assert!(!q.handle_response(&c));
        let s = q.finish();
        assert_eq!((s.members, s.responded), (4, 3));
        assert_eq!(s.keys.get(&key(1)), Some(&3));
        assert_eq!(s.keys.get(&key(2)), Some(&2));
        assert_eq!(s.primary.get(&key(2)), Some(&2));
        assert_eq!(s.primary.get(&key(1)), Some(&1));
        assert_eq!(s.refused.len(), 1);
        assert_eq!(s.refused[0].name, "c");
        assert_eq!(s.no_answer, vec![("d".to_owned(), addr(4))]);
    }

    #[test]
    fn query_is_done_when_everyone_answered() {
        let local = KeyringResponse {
            id: 1,
            member: addr(1),
            error: None,
            keys: vec![key(1)],
        };
        let mut q = KeyringQuery::new(
            1,
            KeyringOp::List,
            ("a".into(), local.clone()),
            [(addr(2), "b".into())],
        );
        assert!(q.handle_response(&KeyringResponse {
            member: addr(2),
            ..local
        }));
        let s = q.finish();
        assert!(s.no_answer.is_empty());
        assert_eq!(s.keys.get(&key(1)), Some(&2));
    }
}
