//! Signed revocation deltas and the revocation set every node keeps.
//!
//! The CA commits a revocation through Raft and signs it as a [`SignedRevocation`]: a fixed-size
//! (106-byte) record carrying the revoked serial, a per-CA sequence number (1, 2, 3, … in commit
//! order, so a node can ask for "everything after seq N"), the revoked MIC's expiry (after which
//! the record can be forgotten) and the reason. Gossip spreads these records; every node keeps a
//! [`RevocationSet`] (sans-IO) that only accepts records signed by a known CA key.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::mic::{CaKeys, Reader, hex_bytes};

/// The first four bytes of an encoded [`SignedRevocation`].
pub const REVOCATION_MAGIC: [u8; 4] = *b"NXRV";
/// The revocation format version.
pub const REVOCATION_VERSION: u8 = 1;
/// Prefix of the bytes the CA signs for a revocation.
pub const REVOCATION_SIGNING_DOMAIN: &[u8] = b"nexus-trust/revocation/v1\0";
/// Size of an encoded [`SignedRevocation`].
pub const REVOCATION_BYTES: usize = 4 + 1 + 8 + 8 + 8 + 8 + 1 + 4 + 64;
/// The first four bytes of [`RevocationSet::export`].
pub const REVOCATION_SET_MAGIC: [u8; 4] = *b"NXRS";
/// The revocation-set export version.
pub const REVOCATION_SET_VERSION: u8 = 1;
/// Most out-of-order sequence numbers a [`RevocationSet`] remembers above its contiguous prefix;
/// older gaps are given up on (the node catches up with `revocations_after`).
pub const SEQ_GAPS_MAX: usize = 4_096;

/// Why a certificate was revoked. Wire values in declaration order from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The subject's private key is (suspected) compromised.
    KeyCompromise,
    /// Replaced by another certificate.
    Superseded,
    /// The subject no longer operates.
    CessationOfOperation,
    /// The publisher's or subject's rights were withdrawn (e.g. failed a safety review).
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::Superseded => 2,
            RevocationReason::CessationOfOperation => 3,
            RevocationReason::PrivilegeWithdrawn => 4,
        }
    }

    /// The reason a wire byte names, if any.
    pub fn from_byte(byte: u8) -> Option<RevocationReason> {
        Some(match byte {
            0 => RevocationReason::Unspecified,
            1 => RevocationReason::KeyCompromise,
            2 => RevocationReason::Superseded,
            3 => RevocationReason::CessationOfOperation,
            4 => RevocationReason::PrivilegeWithdrawn,
            _ => return None,
        })
    }
}

/// A CA-signed statement that certificate `serial` is revoked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRevocation {
    /// Position in the CA's revocation log, from 1 without gaps.
    pub seq: u64,
    /// The revoked MIC's serial.
    pub serial: u64,
    /// The revoked MIC's `not_after_ms`: after it the MIC is invalid anyway and this record may
    /// be pruned.
    pub not_after_ms: u64,
    /// When the revocation was committed (the proposer's clock).
    pub revoked_at_ms: u64,
    /// Why.
    pub reason: RevocationReason,
    /// The CA key that signed it.
    pub ca_key_id: u32,
    /// Ed25519 signature over [`SignedRevocation::signing_bytes`].
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

/// A field of the revocation format, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationField {
    /// The magic bytes.
    Magic,
    /// The version byte.
    Version,
    /// `seq`.
    Seq,
    /// `serial`.
    Serial,
    /// `not_after_ms`.
    NotAfter,
    /// `revoked_at_ms`.
    RevokedAt,
    /// `reason`.
    Reason,
    /// `ca_key_id`.
    CaKeyId,
    /// `signature`.
    Signature,
}

/// Why a revocation record (or a revocation-set export) was rejected. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RevocationError {
    /// The input ended inside `field`.
    #[error("revocation truncated in field {field:?}")]
    Truncated {
        /// The field being read.
        field: RevocationField,
    },
    /// Bytes follow the record.
    #[error("{count} trailing bytes after the revocation")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Wrong magic.
    #[error("not a revocation (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported revocation version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// `reason` is not a known code.
    #[error("unknown revocation reason {value}")]
    UnknownReason {
        /// The byte found.
        value: u8,
    },
    /// `seq` or `serial` is zero (both start at 1).
    #[error("revocation field {field:?} is zero")]
    Zero {
        /// The field.
        field: RevocationField,
    },
    /// No CA key with this id is known.
    #[error("unknown CA key id {ca_key_id}")]
    UnknownCaKey {
        /// The id in the record.
        ca_key_id: u32,
    },
    /// The signature does not verify.
    #[error("revocation signature does not verify under CA key {ca_key_id}")]
    BadSignature {
        /// The CA key tried.
        ca_key_id: u32,
    },
    /// A revocation-set export is malformed.
    #[error("revocation set export is corrupt: {0}")]
    CorruptExport(String),
}

impl SignedRevocation {
    /// Builds and signs a record (used by the CA state machine).
    pub fn sign(
        key: &SigningKey,
        ca_key_id: u32,
        seq: u64,
        serial: u64,
        not_after_ms: u64,
        revoked_at_ms: u64,
        reason: RevocationReason,
    ) -> SignedRevocation {
        let mut record = SignedRevocation {
            seq,
            serial,
            not_after_ms,
            revoked_at_ms,
            reason,
            ca_key_id,
            signature: [0; 64],
        };
        record.signature = key.sign(&record.signing_bytes()).to_bytes();
        record
    }

    /// [`REVOCATION_SIGNING_DOMAIN`] followed by the encoding without the signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVOCATION_SIGNING_DOMAIN.len() + REVOCATION_BYTES);
        out.extend_from_slice(REVOCATION_SIGNING_DOMAIN);
        self.encode_body(&mut out);
        out
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&REVOCATION_MAGIC);
        out.push(REVOCATION_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.not_after_ms.to_be_bytes());
        out.extend_from_slice(&self.revoked_at_ms.to_be_bytes());
        out.push(self.reason.to_byte());
        out.extend_from_slice(&self.ca_key_id.to_be_bytes());
    }

    /// The fixed-size wire encoding ([`REVOCATION_BYTES`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVOCATION_BYTES);
        self.encode_body(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses a record strictly (no trailing bytes, known reason, non-zero seq and serial).
    /// Does not verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedRevocation, RevocationError> {
        use RevocationField as F;
        let t = |field| RevocationError::Truncated { field };
        let mut r = Reader::new(bytes);
        if r.array::<4>().ok_or(t(F::Magic))? != REVOCATION_MAGIC {
            return Err(RevocationError::BadMagic);
        }
        let version = r.u8().ok_or(t(F::Version))?;
        if version != REVOCATION_VERSION {
            return Err(RevocationError::UnsupportedVersion { version });
        }
        let seq = r.u64().ok_or(t(F::Seq))?;
        let serial = r.u64().ok_or(t(F::Serial))?;
        let not_after_ms = r.u64().ok_or(t(F::NotAfter))?;
        let revoked_at_ms = r.u64().ok_or(t(F::RevokedAt))?;
        let reason_byte = r.u8().ok_or(t(F::Reason))?;
        let reason = RevocationReason::from_byte(reason_byte)
            .ok_or(RevocationError::UnknownReason { value: reason_byte })?;
        let ca_key_id = r.u32().ok_or(t(F::CaKeyId))?;
        let signature = r.array().ok_or(t(F::Signature))?;
        if r.remaining() != 0 {
            return Err(RevocationError::TrailingBytes {
                count: r.remaining(),
            });
        }
        if seq == 0 {
            return Err(RevocationError::Zero { field: F::Seq });
        }
        if serial == 0 {
            return Err(RevocationError::Zero { field: F::Serial });
        }
        Ok(SignedRevocation {
            seq,
            serial,
            not_after_ms,
            revoked_at_ms,
            reason,
            ca_key_id,
            signature,
        })
    }

    /// Checks the signature under `keys` (strict Ed25519).
    pub fn verify(&self, keys: &CaKeys) -> Result<(), RevocationError> {
        let ca_key_id = self.ca_key_id;
        let key = keys
            .get(ca_key_id)
            .ok_or(RevocationError::UnknownCaKey { ca_key_id })?;
        key.verify_strict(
            &self.signing_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| RevocationError::BadSignature { ca_key_id })
    }
}

/// What [`RevocationSet::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The serial is now known to be revoked.
    New,
    /// The serial was already known revoked (or the record was already pruned); nothing changed.
    Duplicate,
    /// The revoked MIC has already expired at `now_ms`; the record was not kept.
    AlreadyExpired,
}

/// The revocations a node knows about (sans-IO, deterministic).
///
/// Call order: [`RevocationSet::insert`] every record that arrives (gossip, CA catch-up), ask
/// [`RevocationSet::is_revoked`] when checking a MIC, call [`RevocationSet::prune`] now and then
/// with the current time, and persist with [`RevocationSet::export`] /
/// [`RevocationSet::import`]. Bounded: records leave when the revoked MIC expires (a MIC lives at
/// most `ca::VALIDITY_MS_MAX`), and only CA-signed records get in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationSet {
    by_serial: BTreeMap<u64, SignedRevocation>,
    /// Every seq in `1..=contiguous_seq` has been seen.
    contiguous_seq: u64,
    /// Seqs seen above `contiguous_seq + 1` (at most [`SEQ_GAPS_MAX`]).
    seen_above: BTreeSet<u64>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Verifies `record` under `keys` and remembers it. Duplicates are ignored; a record for a
    /// MIC that expired before `now_ms` is not kept (its seq still counts as seen).
    pub fn insert(
        &mut self,
        keys: &CaKeys,
        record: SignedRevocation,
        now_ms: u64,
    ) -> Result<Inserted, RevocationError> {
        record.verify(keys)?;
        let fresh_seq = self.note_seq(record.seq);
        if record.not_after_ms < now_ms {
            return Ok(Inserted::AlreadyExpired);
        }
        if self.by_serial.contains_key(&record.serial) || !fresh_seq {
            return Ok(Inserted::Duplicate);
        }
        self.by_serial.insert(record.serial, record);
        Ok(Inserted::New)
    }

    /// Records `seq` as seen; false if it already was.
    fn note_seq(&mut self, seq: u64) -> bool {
        if seq <= self.contiguous_seq || self.seen_above.contains(&seq) {
            return false;
        }
        self.seen_above.insert(seq);
        while self
            .seen_above
            .remove(&(self.contiguous_seq.saturating_add(1)))
        {
            self.contiguous_seq += 1;
        }
        while self.seen_above.len() > SEQ_GAPS_MAX {
            // Give up on the oldest gap: jump the prefix to the lowest seen seq.
            let Some(lowest) = self.seen_above.pop_first() else {
                break;
            };
            self.contiguous_seq = lowest;
            while self
                .seen_above
                .remove(&(self.contiguous_seq.saturating_add(1)))
            {
                self.contiguous_seq += 1;
            }
        }
        true
    }

    /// Whether `serial` is known revoked.
    pub fn is_revoked(&self, serial: u64) -> bool {
        self.by_serial.contains_key(&serial)
    }

    /// The record for `serial`, if known.
    pub fn get(&self, serial: u64) -> Option<&SignedRevocation> {
        self.by_serial.get(&serial)
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    /// Every seq up to this one has been seen: ask the CA for `revocations_after(this)`.
    pub fn contiguous_seq(&self) -> u64 {
        self.contiguous_seq
    }

    /// Forgets records whose MIC expired before `now_ms` (the MIC fails verification as expired
    /// anyway). Returns how many were removed.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.by_serial.len();
        self.by_serial.retain(|_, r| r.not_after_ms >= now_ms);
        before - self.by_serial.len()
    }

    /// Deterministic bytes for persistence: magic `NXRS`, version, `contiguous_seq` (u64),
    /// seen-above count (u32) and seqs (u64 each, ascending), record count (u32) and records
    /// ([`REVOCATION_BYTES`] each, by serial), SHA-256 of everything before it.
    pub fn export(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + 1 + 8 + 4 + 8 * self.seen_above.len() + 4 + REVOCATION_BYTES * self.by_serial.len(),
        );
        out.extend_from_slice(&REVOCATION_SET_MAGIC);
        out.push(REVOCATION_SET_VERSION);
        out.extend_from_slice(&self.contiguous_seq.to_be_bytes());
        out.extend_from_slice(&count_u32(self.seen_above.len()).to_be_bytes());
        for seq in &self.seen_above {
            out.extend_from_slice(&seq.to_be_bytes());
        }
        out.extend_from_slice(&count_u32(self.by_serial.len()).to_be_bytes());
        for record in self.by_serial.values() {
            out.extend_from_slice(&record.encode());
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Rebuilds a set from [`RevocationSet::export`] bytes, re-verifying every record's signature
    /// under `keys` (the disk is not trusted more than the network).
    pub fn import(bytes: &[u8], keys: &CaKeys) -> Result<RevocationSet, RevocationError> {
        let corrupt = |what: &str| RevocationError::CorruptExport(what.to_string());
        let mut r = Reader::new(bytes);
        if r.array::<4>().ok_or(corrupt("truncated magic"))? != REVOCATION_SET_MAGIC {
            return Err(corrupt("bad magic"));
        }
        let version = r.u8().ok_or(corrupt("truncated version"))?;
        if version != REVOCATION_SET_VERSION {
            return Err(RevocationError::CorruptExport(format!(
                "unsupported version {version}"
            )));
        }
        let contiguous_seq = r.u64().ok_or(corrupt("truncated contiguous_seq"))?;
        let gaps = r.u32().ok_or(corrupt("truncated seen-above count"))? as usize;
        if gaps > SEQ_GAPS_MAX {
            return Err(corrupt("seen-above count over SEQ_GAPS_MAX"));
        }
        let mut seen_above = BTreeSet::new();
        let mut last = contiguous_seq.saturating_add(1);
        for _ in 0..gaps {
            let seq = r.u64().ok_or(corrupt("truncated seen-above seq"))?;
            if seq <= last {
                return Err(corrupt(
                    "seen-above seqs must ascend strictly above contiguous_seq + 1",
                ));
            }
            seen_above.insert(seq);
            last = seq;
        }
        let count = r.u32().ok_or(corrupt("truncated record count"))? as usize;
        if count.saturating_mul(REVOCATION_BYTES).saturating_add(32) != r.remaining() {
            return Err(corrupt("record count does not match the remaining length"));
        }
        let mut by_serial = BTreeMap::new();
        let mut previous = 0;
        for _ in 0..count {
            let chunk = r
                .take(REVOCATION_BYTES)
                .ok_or(corrupt("truncated record"))?;
            let record = SignedRevocation::decode(chunk)?;
            record.verify(keys)?;
            if record.serial <= previous {
                return Err(corrupt(
                    "records must be sorted by serial without duplicates",
                ));
            }
            previous = record.serial;
            by_serial.insert(record.serial, record);
        }
        let content_len = bytes.len() - r.remaining();
        let digest = r.take(32).ok_or(corrupt("truncated digest"))?;
        if Sha256::digest(&bytes[..content_len]).as_slice() != digest {
            return Err(corrupt("digest mismatch (damaged bytes)"));
        }
        Ok(RevocationSet {
            by_serial,
            contiguous_seq,
            seen_above,
        })
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).expect("revocation set sizes are bounded far below u32::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (SigningKey, CaKeys) {
        let key = SigningKey::from_bytes(&[8; 32]);
        let keys = [(1, key.verifying_key())].into_iter().collect();
        (key, keys)
    }

    fn rec(key: &SigningKey, seq: u64, serial: u64) -> SignedRevocation {
        SignedRevocation::sign(key, 1, seq, serial, 10_000, 5, RevocationReason::Superseded)
    }

    #[test]
    fn contiguous_seq_tracks_gaps() {
        let (key, keys) = key();
        let mut set = RevocationSet::new();
        assert_eq!(set.insert(&keys, rec(&key, 2, 20), 0), Ok(Inserted::New));
        assert_eq!(set.contiguous_seq(), 0);
        assert_eq!(set.insert(&keys, rec(&key, 3, 30), 0), Ok(Inserted::New));
        assert_eq!(set.insert(&keys, rec(&key, 1, 10), 0), Ok(Inserted::New));
        assert_eq!(set.contiguous_seq(), 3);
        assert!(set.seen_above.is_empty());
    }

    #[test]
    fn gap_list_is_bounded() {
        let (key, keys) = key();
        let mut set = RevocationSet::new();
        for i in 0..(SEQ_GAPS_MAX as u64 + 10) {
            set.insert(&keys, rec(&key, 2 + 2 * i, 100 + i), 0)
                .expect("valid");
        }
        assert!(set.seen_above.len() <= SEQ_GAPS_MAX);
        assert!(set.contiguous_seq() > 0);
        let restored = RevocationSet::import(&set.export(), &keys).expect("round trip");
        assert_eq!(restored, set);
    }
}
