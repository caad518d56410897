//! [`Digest`]: a compact summary of a registry's signed state per origin node, for anti-entropy.
//! Two registries exchange digests, each computes [`crate::Registry::differing`] and sends the
//! other [`crate::Registry::adverts_of`] those origins.

use crate::NodeId;

/// First 4 bytes of an encoded digest.
pub const DIGEST_MAGIC: [u8; 4] = *b"NXDG";
/// The digest format this build writes and reads.
pub const DIGEST_FORMAT_VERSION: u8 = 1;
/// Header bytes: magic, format, 3 reserved, range start, range end, count, 4 reserved.
pub const DIGEST_HEADER_LEN: usize = 80;
/// Bytes per origin summary: node id, count (u32), hash (u64).
pub const DIGEST_ENTRY_LEN: usize = 44;
/// Origins one digest may carry ([`Digest::from_bytes`] refuses more).
pub const DIGEST_ORIGINS_MAX: usize = 16_384;
/// Largest encoded digest.
pub const DIGEST_BYTES_MAX: usize = DIGEST_HEADER_LEN + DIGEST_ENTRY_LEN * DIGEST_ORIGINS_MAX;
/// Origins per chunk from [`Digest::split`] so one chunk fits one 1200-byte datagram.
pub const DIGEST_CHUNK_ORIGINS: usize = 25;

const _: () = assert!(DIGEST_HEADER_LEN + DIGEST_ENTRY_LEN * DIGEST_CHUNK_ORIGINS <= 1200);

/// One origin's summary: how many records (live, inactive or withdrawn) the registry holds for
/// it and an order-independent hash over `(service, version, live/withdrawn)` of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OriginSummary {
    /// The origin node.
    pub node: NodeId,
    /// Records held for it.
    pub count: u32,
    /// Wrapping sum of the xxh3-64 of each record's `(service, version, kind)`.
    pub hash: u64,
}

/// Per-origin summaries of the origins in `first..=last`, in node-id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// First node id this digest covers.
    pub first: NodeId,
    /// Last node id this digest covers (inclusive).
    pub last: NodeId,
    /// The summaries, strictly ascending by node, all within the range.
    pub origins: Vec<OriginSummary>,
}

/// A digest was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Larger than [`DIGEST_BYTES_MAX`].
    #[error("digest is {0} bytes, more than {DIGEST_BYTES_MAX}")]
    TooLarge(usize),
    /// Truncated or the count disagrees with the length.
    #[error("malformed digest: {0}")]
    Frame(String),
    /// Bad magic.
    #[error("not a digest (bad magic)")]
    Magic,
    /// Unsupported format.
    #[error("digest format {found} is not supported (this build reads {DIGEST_FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
    },
    /// Origins out of order, duplicated or outside the range; range reversed.
    #[error("digest entries are not strictly ascending within the range: {0}")]
    Order(String),
}

impl Digest {
    /// The digest covering every node id.
    pub fn full(origins: Vec<OriginSummary>) -> Digest {
        Digest {
            first: NodeId([0; 32]),
            last: NodeId([0xff; 32]),
            origins,
        }
    }

    /// Whether `node` lies in this digest's range.
    pub fn covers(&self, node: &NodeId) -> bool {
        self.first <= *node && *node <= self.last
    }

    /// Splits into consecutive range chunks of at most `per_chunk` origins (at least one chunk;
    /// together they cover this digest's range). Use [`DIGEST_CHUNK_ORIGINS`] for datagrams.
    pub fn split(&self, per_chunk: usize) -> Vec<Digest> {
        let per_chunk = per_chunk.max(1);
        if self.origins.len() <= per_chunk {
            return vec![self.clone()];
        }
        let chunks: Vec<&[OriginSummary]> = self.origins.chunks(per_chunk).collect();
        let mut out = Vec::with_capacity(chunks.len());
        let mut first = self.first;
        for (i, chunk) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() {
                self.last
            } else {
                chunk[chunk.len() - 1].node
            };
            out.push(Digest {
                first,
                last,
                origins: chunk.to_vec(),
            });
            if i + 1 < chunks.len() {
                first = next_id(last);
            }
        }
        out
    }

    /// Encodes (format in `docs/sad.md`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DIGEST_HEADER_LEN + DIGEST_ENTRY_LEN * self.origins.len());
        out.extend_from_slice(&DIGEST_MAGIC);
        out.push(DIGEST_FORMAT_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.first.0);
        out.extend_from_slice(&self.last.0);
        out.extend_from_slice(&(self.origins.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for o in &self.origins {
            out.extend_from_slice(&o.node.0);
            out.extend_from_slice(&o.count.to_le_bytes());
            out.extend_from_slice(&o.hash.to_le_bytes());
        }
        out
    }

    /// Decodes with bounds: at most [`DIGEST_ORIGINS_MAX`] origins, strictly ascending within
    /// the range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Digest, DigestError> {
        if bytes.len() > DIGEST_BYTES_MAX {
            return Err(DigestError::TooLarge(bytes.len()));
        }
        if bytes.len() < DIGEST_HEADER_LEN {
            return Err(DigestError::Frame(format!(
                "{} bytes, the header alone is {DIGEST_HEADER_LEN}",
                bytes.len()
            )));
        }
        if bytes[0..4] != DIGEST_MAGIC {
            return Err(DigestError::Magic);
        }
        if bytes[4] != DIGEST_FORMAT_VERSION {
            return Err(DigestError::UnsupportedFormat { found: bytes[4] });
        }
        if bytes[5..8] != [0; 3] || bytes[76..80] != [0; 4] {
            return Err(DigestError::Frame("reserved bytes are not zero".into()));
        }
        let id = |at: usize| {
            let mut b = [0u8; 32];
            b.copy_from_slice(&bytes[at..at + 32]);
            NodeId(b)
        };
        let first = id(8);
        let last = id(40);
        if first > last {
            return Err(DigestError::Order("range start after range end".into()));
        }
        let count = u32::from_le_bytes([bytes[72], bytes[73], bytes[74], bytes[75]]) as usize;
        if count > DIGEST_ORIGINS_MAX {
            return Err(DigestError::Frame(format!(
                "{count} origins, at most {DIGEST_ORIGINS_MAX}"
            )));
        }
        if bytes.len() != DIGEST_HEADER_LEN + count * DIGEST_ENTRY_LEN {
            return Err(DigestError::Frame(format!(
                "{count} origins need {} bytes, got {}",
                DIGEST_HEADER_LEN + count * DIGEST_ENTRY_LEN,
                bytes.len()
            )));
        }
        let mut origins: Vec<OriginSummary> = Vec::with_capacity(count);
        for i in 0..count {
            let at = DIGEST_HEADER_LEN + i * DIGEST_ENTRY_LEN;
            let node = id(at);
            let c = &bytes[at + 32..at + 36];
            let h = &bytes[at + 36..at + 44];
            let summary = OriginSummary {
                node,
                count: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                hash: u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]),
            };
            if node < first || node > last {
                return Err(DigestError::Order(format!(
                    "origin {} outside the range",
                    node.short()
                )));
            }
            if origins.last().is_some_and(|p| p.node >= node) {
                return Err(DigestError::Order(format!(
                    "origin {} out of order",
                    node.short()
                )));
            }
            origins.push(summary);
        }
        Ok(Digest {
            first,
            last,
            origins,
        })
    }
}

/// The node id after `id` in byte order (saturating at all-ones).
fn next_id(id: NodeId) -> NodeId {
    let mut b = id.0;
    for byte in b.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return NodeId(b);
        }
    }
    NodeId([0xff; 32])
}

/// The digest contribution of one record.
pub(crate) fn record_hash(service: &str, version: u64, withdrawn: bool) -> u64 {
    let mut buf = Vec::with_capacity(service.len() + 10);
    buf.extend_from_slice(service.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.push(u8::from(withdrawn));
    xxhash_rust::xxh3::xxh3_64(&buf)
}
