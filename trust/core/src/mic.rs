//! Model Identity Certificates: the binary format, signing and verification (`docs/trust.md`).
//!
//! A [`Mic`] binds a subject's Ed25519 public key to who it is (a node, a model or an agent),
//! what it is (architecture hash and weights commitment for models), who published it, which
//! certificates it derives from (provenance) and what it claims, for a validity window. The CA
//! ([`crate::ca`]) signs the body with its Ed25519 key; anyone holding the CA's public keys
//! ([`CaKeys`]) checks a MIC with [`Mic::verify`].
//!
//! The wire format is hand-written, versioned and strict: [`Mic::decode`] accepts exactly the
//! bytes [`Mic::encode`] produces for a body within the limits below, and rejects everything else
//! with a [`MicError`] naming the field. It does not check the signature or the validity window;
//! that is [`Mic::verify`]'s job.
//!
//! The JSON view (serde) is for the admin API: byte arrays are lowercase hex, the subject kind is
//! a lowercase string. [`IssueRequest`] is what a client sends to have a MIC issued.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The first four bytes of every encoded MIC.
pub const MIC_MAGIC: [u8; 4] = *b"NXMC";
/// The format version this code writes and the only one it reads.
pub const MIC_VERSION: u8 = 1;
/// Prefix of the bytes the CA signs (domain separation from every other Ed25519 use).
pub const MIC_SIGNING_DOMAIN: &[u8] = b"nexus-trust/mic/v1\0";
/// Longest publisher name, in UTF-8 bytes.
pub const PUBLISHER_BYTES_MAX: usize = 64;
/// Most provenance (parent) serials a MIC carries.
pub const PROVENANCE_MAX: usize = 8;
/// Most claims a MIC carries.
pub const CLAIMS_MAX: usize = 16;
/// Longest claim key, in UTF-8 bytes (keys are never empty).
pub const CLAIM_KEY_BYTES_MAX: usize = 32;
/// Longest claim value, in UTF-8 bytes.
pub const CLAIM_VALUE_BYTES_MAX: usize = 64;
/// Size of the fixed part of an encoding: header, fixed fields, presence tags, length bytes and
/// the signature; the smallest valid MIC (no model, publisher, provenance, claims or commitment).
pub const MIC_BYTES_MIN: usize = 4 + 1 + 8 + 32 + 1 + 1 + 1 + 1 + 1 + 1 + 8 + 8 + 4 + 64;
/// Size of the largest valid encoding.
pub const MIC_BYTES_MAX: usize = MIC_BYTES_MIN
    + 64
    + PUBLISHER_BYTES_MAX
    + 8 * PROVENANCE_MAX
    + CLAIMS_MAX * (2 + CLAIM_KEY_BYTES_MAX + CLAIM_VALUE_BYTES_MAX)
    + 32;

/// What a MIC's subject is. Wire values: node = 1, model = 2, agent = 3.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A fabric node (its identity key).
    Node,
    /// A model served on the fabric.
    Model,
    /// An agent acting on the fabric.
    Agent,
}

impl SubjectKind {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            SubjectKind::Node => 1,
            SubjectKind::Model => 2,
            SubjectKind::Agent => 3,
        }
    }

    /// The kind a wire byte names, if any.
    pub fn from_byte(byte: u8) -> Option<SubjectKind> {
        match byte {
            1 => Some(SubjectKind::Node),
            2 => Some(SubjectKind::Model),
            3 => Some(SubjectKind::Agent),
            _ => None,
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubjectKind::Node => "node",
            SubjectKind::Model => "model",
            SubjectKind::Agent => "agent",
        })
    }
}

/// What a model is: hashes the publisher computed over its architecture and its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// Hash of the model architecture (graph / config), 32 bytes, hex in JSON.
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String, pattern = "^[0-9a-fA-F]{64}$")]
    pub arch_hash: [u8; 32],
    /// Commitment to (hash of) the weights, 32 bytes, hex in JSON.
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String, pattern = "^[0-9a-fA-F]{64}$")]
    pub weights_commitment: [u8; 32],
}

/// One capability claim: a short key and value, both UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Non-empty, at most [`CLAIM_KEY_BYTES_MAX`] bytes, unique within a MIC.
    #[schema(min_length = 1, max_length = 32)]
    pub key: String,
    /// At most [`CLAIM_VALUE_BYTES_MAX`] bytes.
    #[schema(max_length = 64)]
    pub value: String,
}

/// Everything the CA signs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicBody {
    /// Unique, allocated by the CA from 1 upward.
    pub serial: u64,
    /// The subject's Ed25519 public key.
    #[serde(with = "hex_bytes")]
    pub subject_key: [u8; 32],
    /// What the subject is.
    pub kind: SubjectKind,
    /// Architecture hash and weights commitment (models).
    pub model: Option<ModelIdentity>,
    /// Who published the subject; at most [`PUBLISHER_BYTES_MAX`] UTF-8 bytes.
    pub publisher: String,
    /// Serials of the certificates this one derives from, at most [`PROVENANCE_MAX`], non-zero,
    /// no duplicates.
    pub provenance: Vec<u64>,
    /// Capability claims, at most [`CLAIMS_MAX`].
    pub claims: Vec<Claim>,
    /// A Poseidon commitment to hidden properties (`zk::Commitment` bytes).
    #[serde(with = "hex_opt32")]
    pub zk_commitment: Option<[u8; 32]>,
    /// Valid from this instant (ms since the Unix epoch), inclusive.
    pub not_before_ms: u64,
    /// Valid until this instant, inclusive; never before `not_before_ms`.
    pub not_after_ms: u64,
    /// Which CA key signed it.
    pub ca_key_id: u32,
}

/// A signed Model Identity Certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mic {
    /// The signed content.
    pub body: MicBody,
    /// Ed25519 signature by CA key `body.ca_key_id` over [`MicBody::signing_bytes`].
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

/// A field of the MIC format, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicField {
    /// The four magic bytes.
    Magic,
    /// The format version.
    Version,
    /// `serial`.
    Serial,
    /// `subject_key`.
    SubjectKey,
    /// `kind`.
    Kind,
    /// `model` (its presence tag or content).
    Model,
    /// `publisher`.
    Publisher,
    /// `provenance` (count or a serial).
    Provenance,
    /// `claims` (the count).
    Claims,
    /// A claim's key.
    ClaimKey,
    /// A claim's value.
    ClaimValue,
    /// `zk_commitment` (its presence tag or content).
    ZkCommitment,
    /// `not_before_ms`.
    NotBefore,
    /// `not_after_ms`.
    NotAfter,
    /// `ca_key_id`.
    CaKeyId,
    /// `signature`.
    Signature,
}

impl fmt::Display for MicField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MicField::Magic => "magic",
            MicField::Version => "version",
            MicField::Serial => "serial",
            MicField::SubjectKey => "subject_key",
            MicField::Kind => "kind",
            MicField::Model => "model",
            MicField::Publisher => "publisher",
            MicField::Provenance => "provenance",
            MicField::Claims => "claims",
            MicField::ClaimKey => "claims[].key",
            MicField::ClaimValue => "claims[].value",
            MicField::ZkCommitment => "zk_commitment",
            MicField::NotBefore => "not_before_ms",
            MicField::NotAfter => "not_after_ms",
            MicField::CaKeyId => "ca_key_id",
            MicField::Signature => "signature",
        })
    }
}

/// Why a MIC was rejected. Decoding and verifying change no state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MicError {
    /// The input ended inside `field`.
    #[error("MIC truncated in field {field}")]
    Truncated {
        /// The field being read.
        field: MicField,
    },
    /// Bytes follow the signature.
    #[error("{count} trailing bytes after the MIC signature")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The first four bytes are not [`MIC_MAGIC`].
    #[error("not a MIC (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported MIC version {version} (this build reads {MIC_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// `kind` is not 1 (node), 2 (model) or 3 (agent).
    #[error("unknown subject kind {value} in field kind")]
    UnknownKind {
        /// The byte found.
        value: u8,
    },
    /// A presence tag is neither 0 nor 1.
    #[error("presence tag of field {field} is {value} (must be 0 or 1)")]
    BadPresenceTag {
        /// The optional field.
        field: MicField,
        /// The byte found.
        value: u8,
    },
    /// A string or list is longer than its limit.
    #[error("field {field} has length {len}, the limit is {max}")]
    TooLong {
        /// The field.
        field: MicField,
        /// Its length (bytes for strings, entries for lists; 255 means "255 or more").
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    NotUtf8 {
        /// The field.
        field: MicField,
    },
    /// A claim key is empty.
    #[error("claim {index} has an empty key")]
    EmptyClaimKey {
        /// Position of the claim.
        index: usize,
    },
    /// Two claims share a key.
    #[error("claim key {key:?} appears twice")]
    DuplicateClaimKey {
        /// The key.
        key: String,
    },
    /// A provenance serial is zero or listed twice.
    #[error("provenance serial {serial} is zero or listed twice")]
    BadProvenance {
        /// The serial.
        serial: u64,
    },
    /// `not_before_ms > not_after_ms`.
    #[error(
        "validity window is empty: not_before_ms {not_before_ms} > not_after_ms {not_after_ms}"
    )]
    EmptyValidity {
        /// The start.
        not_before_ms: u64,
        /// The end.
        not_after_ms: u64,
    },
    /// No CA key with this id is known.
    #[error("unknown CA key id {ca_key_id}")]
    UnknownCaKey {
        /// The id in the MIC.
        ca_key_id: u32,
    },
    /// The signature does not verify under the CA key.
    #[error("MIC signature does not verify under CA key {ca_key_id}")]
    BadSignature {
        /// The CA key tried.
        ca_key_id: u32,
    },
    /// `now_ms < not_before_ms`.
    #[error("MIC not yet valid: now {now_ms} ms < not_before_ms {not_before_ms}")]
    NotYetValid {
        /// The time checked.
        now_ms: u64,
        /// The start of validity.
        not_before_ms: u64,
    },
    /// `now_ms > not_after_ms`.
    #[error("MIC expired: now {now_ms} ms > not_after_ms {not_after_ms}")]
    Expired {
        /// The time checked.
        now_ms: u64,
        /// The end of validity.
        not_after_ms: u64,
    },
}

/// The CA's public keys by key id. A `BTreeMap`, so iteration is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaKeys {
    keys: BTreeMap<u32, VerifyingKey>,
}

impl CaKeys {
    /// No keys.
    pub fn new() -> CaKeys {
        CaKeys::default()
    }

    /// Adds (or replaces) key `ca_key_id`.
    pub fn insert(&mut self, ca_key_id: u32, key: VerifyingKey) {
        self.keys.insert(ca_key_id, key);
    }

    /// Key `ca_key_id`, if known.
    pub fn get(&self, ca_key_id: u32) -> Option<&VerifyingKey> {
        self.keys.get(&ca_key_id)
    }

    /// All keys in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &VerifyingKey)> {
        self.keys.iter().map(|(id, key)| (*id, key))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<(u32, VerifyingKey)> for CaKeys {
    fn from_iter<I: IntoIterator<Item = (u32, VerifyingKey)>>(iter: I) -> CaKeys {
        CaKeys {
            keys: iter.into_iter().collect(),
        }
    }
}

impl MicBody {
    /// Checks every limit and rule [`Mic::decode`] enforces on a body (lengths, UTF-8 is implied
    /// by `String`, non-empty unique claim keys, non-zero unique provenance, non-empty window).
    pub fn check(&self) -> Result<(), MicError> {
        check_len(
            MicField::Publisher,
            self.publisher.len(),
            PUBLISHER_BYTES_MAX,
        )?;
        check_len(MicField::Provenance, self.provenance.len(), PROVENANCE_MAX)?;
        for (i, serial) in self.provenance.iter().enumerate() {
            if *serial == 0 || self.provenance[..i].contains(serial) {
                return Err(MicError::BadProvenance { serial: *serial });
            }
        }
        check_len(MicField::Claims, self.claims.len(), CLAIMS_MAX)?;
        for (index, claim) in self.claims.iter().enumerate() {
            check_len(MicField::ClaimKey, claim.key.len(), CLAIM_KEY_BYTES_MAX)?;
            check_len(
                MicField::ClaimValue,
                claim.value.len(),
                CLAIM_VALUE_BYTES_MAX,
            )?;
            if claim.key.is_empty() {
                return Err(MicError::EmptyClaimKey { index });
            }
            if self.claims[..index].iter().any(|c| c.key == claim.key) {
                return Err(MicError::DuplicateClaimKey {
                    key: claim.key.clone(),
                });
            }
        }
        if self.not_before_ms > self.not_after_ms {
            return Err(MicError::EmptyValidity {
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
            });
        }
        Ok(())
    }

    /// The body's wire encoding (everything before the signature).
    ///
    /// A body outside the limits still encodes, but every over-limit length or count is written
    /// as 255 (above every limit), so [`Mic::decode`] rejects the result at that field.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIC_BYTES_MAX);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MIC_MAGIC);
        out.push(MIC_VERSION);
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.subject_key);
        out.push(self.kind.to_byte());
        match &self.model {
            None => out.push(0),
            Some(model) => {
                out.push(1);
                out.extend_from_slice(&model.arch_hash);
                out.extend_from_slice(&model.weights_commitment);
            }
        }
        put_str(out, &self.publisher);
        out.push(len_byte(self.provenance.len()));
        for serial in &self.provenance {
            out.extend_from_slice(&serial.to_be_bytes());
        }
        out.push(len_byte(self.claims.len()));
        for claim in &self.claims {
            put_str(out, &claim.key);
            put_str(out, &claim.value);
        }
        match &self.zk_commitment {
            None => out.push(0),
            Some(commitment) => {
                out.push(1);
                out.extend_from_slice(commitment);
            }
        }
        out.extend_from_slice(&self.not_before_ms.to_be_bytes());
        out.extend_from_slice(&self.not_after_ms.to_be_bytes());
        out.extend_from_slice(&self.ca_key_id.to_be_bytes());
    }

    /// What the CA signs: [`MIC_SIGNING_DOMAIN`] followed by [`MicBody::encode`].
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIC_SIGNING_DOMAIN.len() + MIC_BYTES_MAX);
        out.extend_from_slice(MIC_SIGNING_DOMAIN);
        self.encode_into(&mut out);
        out
    }

    /// Signs the body with `key` (Ed25519 is deterministic: same body and key, same signature).
    /// The caller sets `ca_key_id` to the id `key` is published under.
    pub fn sign(self, key: &SigningKey) -> Mic {
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        Mic {
            body: self,
            signature,
        }
    }
}

impl Mic {
    /// The wire encoding: the body's encoding followed by the 64-byte signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIC_BYTES_MAX);
        self.body.encode_into(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses an encoded MIC strictly (see the module docs). Does not verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<Mic, MicError> {
        let mut r = Reader::new(bytes);
        let magic: [u8; 4] = r.array().ok_or(MicError::Truncated {
            field: MicField::Magic,
        })?;
        if magic != MIC_MAGIC {
            return Err(MicError::BadMagic);
        }
        let version = r.u8().ok_or(MicError::Truncated {
            field: MicField::Version,
        })?;
        if version != MIC_VERSION {
            return Err(MicError::UnsupportedVersion { version });
        }
        let serial = r.u64().ok_or(truncated(MicField::Serial))?;
        let subject_key = r.array().ok_or(truncated(MicField::SubjectKey))?;
        let kind_byte = r.u8().ok_or(truncated(MicField::Kind))?;
        let kind =
            SubjectKind::from_byte(kind_byte).ok_or(MicError::UnknownKind { value: kind_byte })?;
        let model = match presence(&mut r, MicField::Model)? {
            false => None,
            true => Some(ModelIdentity {
                arch_hash: r.array().ok_or(truncated(MicField::Model))?,
                weights_commitment: r.array().ok_or(truncated(MicField::Model))?,
            }),
        };
        let publisher = get_str(&mut r, MicField::Publisher, PUBLISHER_BYTES_MAX)?;
        let provenance_count = r.u8().ok_or(truncated(MicField::Provenance))? as usize;
        check_len(MicField::Provenance, provenance_count, PROVENANCE_MAX)?;
        let mut provenance = Vec::with_capacity(provenance_count);
        for _ in 0..provenance_count {
            provenance.push(r.u64().ok_or(truncated(MicField::Provenance))?);
        }
        let claims_count = r.u8().ok_or(truncated(MicField::Claims))? as usize;
        check_len(MicField::Claims, claims_count, CLAIMS_MAX)?;
        let mut claims = Vec::with_capacity(claims_count);
        for _ in 0..claims_count {
            let key = get_str(&mut r, MicField::ClaimKey, CLAIM_KEY_BYTES_MAX)?;
            let value = get_str(&mut r, MicField::ClaimValue, CLAIM_VALUE_BYTES_MAX)?;
            claims.push(Claim { key, value });
        }
        let zk_commitment = match presence(&mut r, MicField::ZkCommitment)? {
            false => None,
            true => Some(r.array().ok_or(truncated(MicField::ZkCommitment))?),
        };
        let not_before_ms = r.u64().ok_or(truncated(MicField::NotBefore))?;
        let not_after_ms = r.u64().ok_or(truncated(MicField::NotAfter))?;
        let ca_key_id = r.u32().ok_or(truncated(MicField::CaKeyId))?;
        let signature = r.array().ok_or(truncated(MicField::Signature))?;
        if r.remaining() != 0 {
            return Err(MicError::TrailingBytes {
                count: r.remaining(),
            });
        }
        let body = MicBody {
            serial,
            subject_key,
            kind,
            model,
            publisher,
            provenance,
            claims,
            zk_commitment,
            not_before_ms,
            not_after_ms,
            ca_key_id,
        };
        body.check()?;
        Ok(Mic { body, signature })
    }

    /// Checks the signature under `keys` and that `now_ms` lies in the validity window
    /// (both ends inclusive). Errors, in the order checked: [`MicError::UnknownCaKey`],
    /// [`MicError::BadSignature`], [`MicError::NotYetValid`], [`MicError::Expired`].
    /// Revocation is checked separately ([`crate::revocation::RevocationSet`]).
    pub fn verify(&self, keys: &CaKeys, now_ms: u64) -> Result<(), MicError> {
        self.verify_signature(keys)?;
        if now_ms < self.body.not_before_ms {
            return Err(MicError::NotYetValid {
                now_ms,
                not_before_ms: self.body.not_before_ms,
            });
        }
        if now_ms > self.body.not_after_ms {
            return Err(MicError::Expired {
                now_ms,
                not_after_ms: self.body.not_after_ms,
            });
        }
        Ok(())
    }

    /// Checks only the signature (strict Ed25519: no malleable or small-order encodings).
    pub fn verify_signature(&self, keys: &CaKeys) -> Result<(), MicError> {
        let ca_key_id = self.body.ca_key_id;
        let key = keys
            .get(ca_key_id)
            .ok_or(MicError::UnknownCaKey { ca_key_id })?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.body.signing_bytes(), &signature)
            .map_err(|_| MicError::BadSignature { ca_key_id })
    }

    /// A short human-readable handle: `mic-<serial>-<first 8 signature bytes in hex>`. The
    /// signature is deterministic, so the fingerprint names one exact certificate.
    pub fn fingerprint(&self) -> String {
        format!(
            "mic-{}-{}",
            self.body.serial,
            hex::encode(&self.signature[..8])
        )
    }
}

/// A client's request to issue one MIC (JSON in the admin API; unknown fields are rejected).
///
/// The CA fills in the serial, the validity window (`not_before_ms` = the command's `now_ms`,
/// `not_after_ms` = `now_ms + validity_ms`) and the CA key id. Its OpenAPI schema (utoipa)
/// states every rule of [`MicBody::check`] and the CA's validity bounds that JSON Schema can
/// express; the rest are refused by the CA: a `model` kind needs `model`, the limits count UTF-8
/// bytes (the schema's lengths count characters), claim keys are unique, and every provenance
/// serial exists and is not revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Optional idempotency key (32 hex characters): a retry with the same id returns the same
    /// certificate instead of issuing a second one.
    #[serde(default, with = "hex_opt16")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{32}$")]
    pub request_id: Option<[u8; 16]>,
    /// The subject's Ed25519 public key (64 hex characters).
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String, pattern = "^[0-9a-fA-F]{64}$")]
    pub subject_key: [u8; 32],
    /// `"node"`, `"model"` or `"agent"`.
    pub kind: SubjectKind,
    /// Required when `kind` is `"model"`.
    #[serde(default)]
    pub model: Option<ModelIdentity>,
    /// Who publishes the subject: at most [`PUBLISHER_BYTES_MAX`] bytes.
    #[schema(max_length = 64)]
    pub publisher: String,
    /// Parent serials (at most [`PROVENANCE_MAX`], distinct, each 1 or more); each must exist
    /// and not be revoked.
    #[serde(default)]
    #[schema(schema_with = provenance_schema)]
    pub provenance: Vec<u64>,
    /// Capability claims (at most [`CLAIMS_MAX`], keys unique).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub claims: Vec<Claim>,
    /// Poseidon commitment to hidden properties (64 hex characters).
    #[serde(default, with = "hex_opt32")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{64}$")]
    pub zk_commitment: Option<[u8; 32]>,
    /// Requested lifetime in milliseconds, [`crate::ca::VALIDITY_MS_MIN`] (1 minute) to
    /// [`crate::ca::VALIDITY_MS_MAX`] (397 days).
    #[schema(minimum = 60_000, maximum = 34_300_800_000_u64)]
    pub validity_ms: u64,
}

/// The schema of [`IssueRequest::provenance`]: distinct serials of 1 or more, at most
/// [`PROVENANCE_MAX`].
fn provenance_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(u64::MAX)),
        )
        .max_items(Some(PROVENANCE_MAX))
        .unique_items(true)
        .build()
}

fn truncated(field: MicField) -> MicError {
    MicError::Truncated { field }
}

fn check_len(field: MicField, len: usize, max: usize) -> Result<(), MicError> {
    if len > max {
        return Err(MicError::TooLong { field, len, max });
    }
    Ok(())
}

fn presence(r: &mut Reader<'_>, field: MicField) -> Result<bool, MicError> {
    match r.u8().ok_or(truncated(field))? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(MicError::BadPresenceTag { field, value }),
    }
}

fn get_str(r: &mut Reader<'_>, field: MicField, max: usize) -> Result<String, MicError> {
    let len = r.u8().ok_or(truncated(field))? as usize;
    check_len(field, len, max)?;
    let bytes = r.take(len).ok_or(truncated(field))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| MicError::NotUtf8 { field })
}

/// A length or count as one byte; anything above 255 saturates (every limit is below 255, so a
/// saturated length is always rejected on decode).
fn len_byte(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(len_byte(s.len()));
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked big-endian cursor shared by this crate's decoders. Every read returns `None`
/// at the end of input; callers map that to a truncation error naming the field.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
}

/// Serde for fixed byte arrays as lowercase hex strings (JSON views).
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `bytes` as a lowercase hex string.
    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Reads exactly `N` bytes from a hex string.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse::<N>(&text).map_err(D::Error::custom)
    }

    pub(crate) fn parse<const N: usize>(text: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).map_err(|e| match e {
            hex::FromHexError::InvalidStringLength | hex::FromHexError::OddLength => format!(
                "expected {} hex characters ({N} bytes), got {}",
                2 * N,
                text.len()
            ),
            other => format!("invalid hex: {other}"),
        })?;
        Ok(out)
    }
}

macro_rules! hex_opt_module {
    ($name:ident, $n:literal) => {
        /// Serde for an optional fixed byte array as a hex string or null.
        pub(crate) mod $name {
            use serde::{Deserialize, Deserializer, Serializer, de::Error};

            pub(crate) fn serialize<S: Serializer>(
                bytes: &Option<[u8; $n]>,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                match bytes {
                    Some(bytes) => s.serialize_some(&hex::encode(bytes)),
                    None => s.serialize_none(),
                }
            }

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Option<[u8; $n]>, D::Error> {
                let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
                text.map(|t| super::hex_bytes::parse::<$n>(&t).map_err(D::Error::custom))
                    .transpose()
            }
        }
    };
}

hex_opt_module!(hex_opt16, 16);
hex_opt_module!(hex_opt32, 32);

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> MicBody {
        MicBody {
            serial: 7,
            subject_key: [3; 32],
            kind: SubjectKind::Model,
            model: Some(ModelIdentity {
                arch_hash: [4; 32],
                weights_commitment: [5; 32],
            }),
            publisher: "acme".into(),
            provenance: vec![1, 2],
            claims: vec![Claim {
                key: "task".into(),
                value: "chat".into(),
            }],
            zk_commitment: Some([6; 32]),
            not_before_ms: 1_000,
            not_after_ms: 2_000,
            ca_key_id: 9,
        }
    }

    #[test]
    fn size_bounds_match_extremes() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let small = MicBody {
            model: None,
            publisher: String::new(),
            provenance: vec![],
            claims: vec![],
            zk_commitment: None,
            ..body()
        }
        .sign(&key);
        assert_eq!(small.encode().len(), MIC_BYTES_MIN);
        let big = MicBody {
            publisher: "p".repeat(PUBLISHER_BYTES_MAX),
            provenance: (1..=PROVENANCE_MAX as u64).collect(),
            claims: (0..CLAIMS_MAX)
                .map(|i| Claim {
                    key: format!("{i:0>32}"),
                    value: "v".repeat(CLAIM_VALUE_BYTES_MAX),
                })
                .collect(),
            ..body()
        }
        .sign(&key);
        assert_eq!(big.encode().len(), MIC_BYTES_MAX);
        assert_eq!(Mic::decode(&big.encode()), Ok(big));
    }

    #[test]
    fn over_limit_body_encodes_to_rejected_bytes() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mic = MicBody {
            publisher: "x".repeat(300),
            ..body()
        }
        .sign(&key);
        assert_eq!(
            Mic::decode(&mic.encode()),
            Err(MicError::TooLong {
                field: MicField::Publisher,
                len: 255,
                max: PUBLISHER_BYTES_MAX
            })
        );
    }

    #[test]
    fn signing_input_is_domain_separated() {
        let b = body();
        let signing = b.signing_bytes();
        assert!(signing.starts_with(MIC_SIGNING_DOMAIN));
        assert_eq!(&signing[MIC_SIGNING_DOMAIN.len()..], b.encode().as_slice());
        // A signature over the bare encoding (no domain) does not verify.
        let key = SigningKey::from_bytes(&[1; 32]);
        let wrong = Mic {
            signature: key.sign(&b.encode()).to_bytes(),
            body: b,
        };
        let keys: CaKeys = [(9, key.verifying_key())].into_iter().collect();
        assert_eq!(
            wrong.verify_signature(&keys),
            Err(MicError::BadSignature { ca_key_id: 9 })
        );
    }

    #[test]
    fn hex_parse_errors_name_lengths() {
        assert_eq!(
            hex_bytes::parse::<2>("abc"),
            Err("expected 4 hex characters (2 bytes), got 3".to_string())
        );
        assert!(hex_bytes::parse::<2>("zzzz").is_err());
        assert_eq!(hex_bytes::parse::<2>("0aFF"), Ok([0x0a, 0xff]));
    }
}
