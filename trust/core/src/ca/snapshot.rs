//! The CA snapshot: deterministic, versioned binary bytes (`docs/trust.md`, "Snapshot").
//!
//! Layout (all integers big-endian):
//! magic `NXCA` · version u8 · last_applied (tag u8, u64 if tag = 1) · key (tag u8; if 1:
//! ca_key_id u32, secret [32]) · circuit count u16, each: id u16, proving-key length u32 + bytes,
//! verifying-key length u32 + bytes (ids ascending) · next_serial u64 · MIC count u64, each:
//! length u16 + `Mic::encode` bytes (serials 1, 2, 3, …) · revocation count u64, each:
//! `SignedRevocation::encode` (seq 1, 2, 3, …) · request-id count u32, each: id [16] + serial
//! u64 (oldest first) · SHA-256 of everything before it [32].
//!
//! [`CaState::restore`] checks the structure first (so a damaged snapshot gets an error naming
//! the section), then the cross-references the state machine relies on, then the digest.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::{CIRCUIT_KEY_BYTES_MAX, CIRCUITS_MAX, CaState, CircuitKeys, REQUEST_IDS_MAX};
use crate::mic::{MIC_BYTES_MAX, MIC_BYTES_MIN, Mic, Reader};
use crate::revocation::{REVOCATION_BYTES, SignedRevocation};

/// The first four bytes of a CA snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"NXCA";
/// The snapshot format version.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Why a snapshot was rejected. Nothing was restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The input ended inside `section`.
    #[error("CA snapshot truncated in {section}")]
    Truncated {
        /// What was being read.
        section: &'static str,
    },
    /// Not a CA snapshot.
    #[error("not a CA snapshot (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported CA snapshot version {version} (this build reads {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A section is malformed or contradicts another.
    #[error("CA snapshot is corrupt in {section}: {reason}")]
    Corrupt {
        /// The section.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The trailing SHA-256 does not match the content.
    #[error("CA snapshot digest mismatch (damaged bytes)")]
    DigestMismatch,
    /// Bytes follow the digest.
    #[error("{count} trailing bytes after the CA snapshot digest")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

fn truncated(section: &'static str) -> SnapshotError {
    SnapshotError::Truncated { section }
}

fn corrupt(section: &'static str, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt {
        section,
        reason: reason.into(),
    }
}

impl CaState {
    /// The whole state as deterministic bytes (two replicas that applied the same log produce
    /// the same bytes). Contains the CA secret key: store and ship it like the Raft log.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.mics.len() * 200);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        match self.last_applied {
            None => out.push(0),
            Some(index) => {
                out.push(1);
                out.extend_from_slice(&index.to_be_bytes());
            }
        }
        match &self.key {
            None => out.push(0),
            Some(key) => {
                out.push(1);
                out.extend_from_slice(&key.id.to_be_bytes());
                out.extend_from_slice(key.signing.as_bytes());
            }
        }
        let circuits = u16::try_from(self.circuits.len()).expect("at most CIRCUITS_MAX circuits");
        out.extend_from_slice(&circuits.to_be_bytes());
        for (id, keys) in &self.circuits {
            out.extend_from_slice(&id.to_be_bytes());
            for bytes in [&keys.proving_key, &keys.verifying_key] {
                let len = u32::try_from(bytes.len()).expect("at most CIRCUIT_KEY_BYTES_MAX");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(&self.next_serial.to_be_bytes());
        out.extend_from_slice(&(self.mics.len() as u64).to_be_bytes());
        for mic in self.mics.values() {
            let bytes = mic.encode();
            let len = u16::try_from(bytes.len()).expect("MIC_BYTES_MAX fits in u16");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(&(self.revocation_log.len() as u64).to_be_bytes());
        for serial in &self.revocation_log {
            let record = self
                .revocations
                .get(serial)
                .expect("invariant: every logged revocation has a record");
            out.extend_from_slice(&record.encode());
        }
        let ids = u32::try_from(self.request_id_order.len()).expect("at most REQUEST_IDS_MAX");
        out.extend_from_slice(&ids.to_be_bytes());
        for id in &self.request_id_order {
            let serial = self
                .request_ids
                .get(id)
                .expect("invariant: every ordered request id is in the map");
            out.extend_from_slice(id);
            out.extend_from_slice(&serial.to_be_bytes());
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// The state a [`CaState::snapshot`] described. Rejects truncated, trailing, damaged or
    /// inconsistent input with an error naming the section.
    pub fn restore(bytes: &[u8]) -> Result<CaState, SnapshotError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>().ok_or(truncated("magic"))? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u8().ok_or(truncated("version"))?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { version });
        }
        let last_applied = match r.u8().ok_or(truncated("last_applied"))? {
            0 => None,
            1 => Some(r.u64().ok_or(truncated("last_applied"))?),
            tag => return Err(corrupt("last_applied", format!("presence tag {tag}"))),
        };
        let mut state = CaState {
            last_applied,
            ..CaState::default()
        };
        match r.u8().ok_or(truncated("ca key"))? {
            0 => {}
            1 => {
                let id = r.u32().ok_or(truncated("ca key"))?;
                let secret: [u8; 32] = r.array().ok_or(truncated("ca key"))?;
                state.install_key(id, SigningKey::from_bytes(&secret));
            }
            tag => return Err(corrupt("ca key", format!("presence tag {tag}"))),
        }
        state.circuits = read_circuits(&mut r)?;
        if state.key.is_none() && !state.circuits.is_empty() {
            return Err(corrupt("circuits", "circuits present without a CA key"));
        }
        state.next_serial = r.u64().ok_or(truncated("next_serial"))?;
        if state.next_serial == 0 {
            return Err(corrupt("next_serial", "is 0 (serials start at 1)"));
        }
        state.mics = read_mics(&mut r, &state)?;
        read_revocations(&mut r, &mut state)?;
        read_request_ids(&mut r, &mut state)?;
        let content_len = bytes.len() - r.remaining();
        let digest: [u8; 32] = r.array().ok_or(truncated("digest"))?;
        if r.remaining() != 0 {
            return Err(SnapshotError::TrailingBytes {
                count: r.remaining(),
            });
        }
        if Sha256::digest(&bytes[..content_len]).as_slice() != digest {
            return Err(SnapshotError::DigestMismatch);
        }
        Ok(state)
    }
}

fn read_circuits(r: &mut Reader<'_>) -> Result<BTreeMap<u16, CircuitKeys>, SnapshotError> {
    let count = r.u16().ok_or(truncated("circuits"))? as usize;
    if count > CIRCUITS_MAX {
        return Err(corrupt("circuits", format!("{count} > {CIRCUITS_MAX}")));
    }
    let mut circuits = BTreeMap::new();
    for _ in 0..count {
        let id = r.u16().ok_or(truncated("circuits"))?;
        if circuits
            .last_key_value()
            .is_some_and(|(last, _)| *last >= id)
        {
            return Err(corrupt("circuits", "ids not strictly ascending"));
        }
        let mut key = || -> Result<Vec<u8>, SnapshotError> {
            let len = r.u32().ok_or(truncated("circuits"))? as usize;
            if len > CIRCUIT_KEY_BYTES_MAX {
                return Err(corrupt("circuits", format!("key of {len} bytes")));
            }
            Ok(r.take(len).ok_or(truncated("circuits"))?.to_vec())
        };
        let proving_key = key()?;
        let verifying_key = key()?;
        circuits.insert(
            id,
            CircuitKeys {
                proving_key,
                verifying_key,
            },
        );
    }
    Ok(circuits)
}

fn read_mics(r: &mut Reader<'_>, state: &CaState) -> Result<BTreeMap<u64, Mic>, SnapshotError> {
    let count = r.u64().ok_or(truncated("mics"))?;
    if count != state.next_serial - 1 {
        return Err(corrupt(
            "mics",
            format!("{count} MICs but next_serial is {}", state.next_serial),
        ));
    }
    if count > (r.remaining() / (2 + MIC_BYTES_MIN)) as u64 {
        return Err(truncated("mics"));
    }
    let key_id = state.key.as_ref().map(|k| k.id);
    if count > 0 && key_id.is_none() {
        return Err(corrupt("mics", "MICs present without a CA key"));
    }
    let mut mics = BTreeMap::new();
    for expected in 1..=count {
        let len = r.u16().ok_or(truncated("mics"))? as usize;
        if !(MIC_BYTES_MIN..=MIC_BYTES_MAX).contains(&len) {
            return Err(corrupt("mics", format!("MIC length {len}")));
        }
        let bytes = r.take(len).ok_or(truncated("mics"))?;
        let mic =
            Mic::decode(bytes).map_err(|e| corrupt("mics", format!("MIC {expected}: {e}")))?;
        if mic.body.serial != expected {
            return Err(corrupt(
                "mics",
                format!("serial {} where {expected} was expected", mic.body.serial),
            ));
        }
        if Some(mic.body.ca_key_id) != key_id {
            return Err(corrupt(
                "mics",
                format!("MIC {expected} names another CA key"),
            ));
        }
        mics.insert(expected, mic);
    }
    Ok(mics)
}

fn read_revocations(r: &mut Reader<'_>, state: &mut CaState) -> Result<(), SnapshotError> {
    let count = r.u64().ok_or(truncated("revocations"))?;
    if count > (r.remaining() / REVOCATION_BYTES) as u64 {
        return Err(truncated("revocations"));
    }
    for seq in 1..=count {
        let bytes = r.take(REVOCATION_BYTES).ok_or(truncated("revocations"))?;
        let record = SignedRevocation::decode(bytes)
            .map_err(|e| corrupt("revocations", format!("record {seq}: {e}")))?;
        if record.seq != seq {
            return Err(corrupt(
                "revocations",
                format!("seq {} where {seq} was expected", record.seq),
            ));
        }
        let Some(mic) = state.mics.get(&record.serial) else {
            return Err(corrupt(
                "revocations",
                format!("serial {} was never issued", record.serial),
            ));
        };
        if record.not_after_ms != mic.body.not_after_ms
            || Some(record.ca_key_id) != state.key.as_ref().map(|k| k.id)
        {
            return Err(corrupt(
                "revocations",
                format!("record {seq} disagrees with MIC {}", record.serial),
            ));
        }
        let serial = record.serial;
        if state.revocations.insert(serial, record).is_some() {
            return Err(corrupt(
                "revocations",
                format!("serial {serial} revoked twice"),
            ));
        }
        state.revocation_log.push(serial);
    }
    Ok(())
}

fn read_request_ids(r: &mut Reader<'_>, state: &mut CaState) -> Result<(), SnapshotError> {
    let count = r.u32().ok_or(truncated("request ids"))? as usize;
    if count > REQUEST_IDS_MAX {
        return Err(corrupt(
            "request ids",
            format!("{count} > {REQUEST_IDS_MAX}"),
        ));
    }
    let mut order = VecDeque::with_capacity(count.min(r.remaining() / 24));
    for _ in 0..count {
        let id: [u8; 16] = r.array().ok_or(truncated("request ids"))?;
        let serial = r.u64().ok_or(truncated("request ids"))?;
        if !state.mics.contains_key(&serial) {
            return Err(corrupt(
                "request ids",
                format!("serial {serial} was never issued"),
            ));
        }
        if state.request_ids.insert(id, serial).is_some() {
            return Err(corrupt("request ids", "an id appears twice"));
        }
        order.push_back(id);
    }
    state.request_id_order = order;
    Ok(())
}
