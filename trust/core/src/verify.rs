//! Inline verification of a service's credentials: its MIC and its attestations.
//!
//! A [`TrustContext`] is what a verifying node knows: the CA's public keys ([`CaKeys`]), the
//! revocations it has seen ([`RevocationSet`]) and each circuit's verifying key, prepared once
//! through a [`Verifier`] (prepared-key cache). [`Credentials`] are what a service presents — a
//! MIC and zero or more [`Attestation`]s over the MIC's committed properties — with a strict,
//! bounded binary encoding (it rides inside registry adverts) and a JSON form (hex) for the
//! admin API.
//!
//! [`TrustContext::check`] verifies one set of credentials: the MIC's signature under a known CA
//! key, its validity window, that it is not revoked, and every attestation's Groth16 proof
//! against the MIC's `zk_commitment` under its circuit's verifying key. It returns what intents
//! filter on ([`Verified`]) or a [`TrustReject`] naming the reason.
//! [`TrustContext::check_batch`] does the same for many credentials, verifying all proofs of one
//! circuit with one batch check ([`PreparedKey::verify_batch`]) and still naming which
//! credentials failed. [`TrustContext::status`] re-checks an earlier verdict cheaply (expiry,
//! revocation, CA key still known) — what a resolver does on every lookup.
//!
//! Call order: build an empty context (every MIC is then "unknown CA key"), feed it
//! [`TrustUpdate`]s as the CA state advances (the TrustActor sends them), check credentials as
//! they arrive, and re-check held verdicts with [`TrustContext::status`] after an update that
//! brought revocations.
//!
//! Sans-IO and deterministic: time is `now_ms` (milliseconds since the Unix epoch, the clock MIC
//! validity windows use) passed in; batch verification takes the caller's RNG.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rand_08::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::mic::{CaKeys, MIC_BYTES_MAX, Mic, MicError, SubjectKind};
use crate::revocation::{
    Inserted, RevocationError, RevocationReason, RevocationSet, SignedRevocation,
};
use crate::zk::{
    ATTESTATION_BYTES, Attestation, BatchItem, Commitment, Predicate, PreparedKey, Verifier,
    ZkError,
};

/// Most attestations one set of credentials carries.
pub const CREDENTIAL_ATTESTATIONS_MAX: usize = 4;
/// The credentials encoding version this build writes and the only one it reads.
pub const CREDENTIALS_VERSION: u8 = 1;
/// Smallest encoding: version, MIC length, a minimal MIC, attestation count.
pub const CREDENTIALS_BYTES_MIN: usize = 1 + 2 + crate::mic::MIC_BYTES_MIN + 1;
/// Largest encoding: a maximal MIC and [`CREDENTIAL_ATTESTATIONS_MAX`] attestations.
pub const CREDENTIALS_BYTES_MAX: usize =
    1 + 2 + MIC_BYTES_MAX + 1 + CREDENTIAL_ATTESTATIONS_MAX * ATTESTATION_BYTES;
/// Most circuits a [`TrustContext`] holds verifying keys for.
pub const TRUST_CIRCUITS_MAX: usize = crate::ca::CIRCUITS_MAX;
/// Most CA keys a [`TrustContext`] holds.
pub const TRUST_CA_KEYS_MAX: usize = 64;

/// A service's credentials: its MIC and attestations over the MIC's committed properties.
///
/// Binary form ([`Credentials::encode`], at most [`CREDENTIALS_BYTES_MAX`] bytes):
/// `version u8 (1) ‖ mic_len u16 BE ‖ MIC (mic_len bytes, Mic::encode) ‖ count u8 ‖ count ×
/// Attestation::encode (133 bytes each)`. JSON form: `{"mic": "<hex>", "attestations":
/// ["<hex>", ...]}` (the same MIC and attestation bytes in lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The service's certificate.
    pub mic: Mic,
    /// Proofs of predicates over `mic.body.zk_commitment`, at most
    /// [`CREDENTIAL_ATTESTATIONS_MAX`].
    pub attestations: Vec<Attestation>,
}

/// Credentials bytes (or their JSON form) were refused. Nothing changed anywhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// More than [`CREDENTIALS_BYTES_MAX`] bytes.
    #[error("credentials are {len} bytes, at most {max}")]
    TooLarge {
        /// The length given.
        len: usize,
        /// [`CREDENTIALS_BYTES_MAX`].
        max: usize,
    },
    /// The input ended inside `field`.
    #[error("credentials truncated in field {field}")]
    Truncated {
        /// `version`, `mic_len`, `mic`, `attestations` or `attestations[i]`.
        field: String,
    },
    /// A version this build does not read.
    #[error("unsupported credentials version {version} (this build reads {CREDENTIALS_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The MIC length is above [`MIC_BYTES_MAX`].
    #[error("mic_len {len} exceeds the largest MIC ({max} bytes)")]
    MicLength {
        /// The length found.
        len: usize,
        /// [`MIC_BYTES_MAX`].
        max: usize,
    },
    /// The MIC did not decode.
    #[error("mic: {0}")]
    Mic(MicError),
    /// More attestations than [`CREDENTIAL_ATTESTATIONS_MAX`].
    #[error("attestations: {count} given, at most {max}")]
    TooManyAttestations {
        /// The count found.
        count: usize,
        /// [`CREDENTIAL_ATTESTATIONS_MAX`].
        max: usize,
    },
    /// An attestation did not decode.
    #[error("attestations[{index}]: {error}")]
    Attestation {
        /// Its position.
        index: usize,
        /// The decoder's reason.
        error: ZkError,
    },
    /// Bytes follow the last attestation.
    #[error("{count} trailing bytes after the credentials")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A JSON field is not valid hex.
    #[error("{field}: {reason}")]
    Hex {
        /// `mic` or `attestations[i]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl CredentialsError {
    /// The field at fault, as a path inside the credentials (`mic`, `attestations[2]`, …);
    /// `credentials` when the whole value is at fault.
    pub fn field(&self) -> String {
        match self {
            CredentialsError::TooLarge { .. }
            | CredentialsError::UnsupportedVersion { .. }
            | CredentialsError::TrailingBytes { .. } => "credentials".into(),
            CredentialsError::Truncated { field } | CredentialsError::Hex { field, .. } => {
                field.clone()
            }
            CredentialsError::MicLength { .. } | CredentialsError::Mic(_) => "mic".into(),
            CredentialsError::TooManyAttestations { .. } => "attestations".into(),
            CredentialsError::Attestation { index, .. } => format!("attestations[{index}]"),
        }
    }
}

fn truncated(field: impl Into<String>) -> CredentialsError {
    CredentialsError::Truncated {
        field: field.into(),
    }
}

impl Credentials {
    /// The binary form (see the type docs). Credentials over the limits still encode, but
    /// [`Credentials::decode`] rejects the result (the count saturates at 255).
    pub fn encode(&self) -> Vec<u8> {
        let mic = self.mic.encode();
        let mut out =
            Vec::with_capacity(4 + mic.len() + self.attestations.len() * ATTESTATION_BYTES);
        out.push(CREDENTIALS_VERSION);
        out.extend_from_slice(&u16::try_from(mic.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&mic);
        out.push(u8::try_from(self.attestations.len()).unwrap_or(u8::MAX));
        for a in &self.attestations {
            out.extend_from_slice(&a.encode());
        }
        out
    }

    /// Strict decode of [`Credentials::encode`]: bounded before anything is allocated, the MIC
    /// and every attestation decoded strictly (proof points on the curve and in the subgroup), no
    /// trailing bytes. Checks no signature or proof; that is [`TrustContext::check`]'s job.
    pub fn decode(bytes: &[u8]) -> Result<Credentials, CredentialsError> {
        if bytes.len() > CREDENTIALS_BYTES_MAX {
            return Err(CredentialsError::TooLarge {
                len: bytes.len(),
                max: CREDENTIALS_BYTES_MAX,
            });
        }
        let (&version, rest) = bytes.split_first().ok_or_else(|| truncated("version"))?;
        if version != CREDENTIALS_VERSION {
            return Err(CredentialsError::UnsupportedVersion { version });
        }
        let (len, rest) = rest
            .split_at_checked(2)
            .ok_or_else(|| truncated("mic_len"))?;
        let mic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if mic_len > MIC_BYTES_MAX {
            return Err(CredentialsError::MicLength {
                len: mic_len,
                max: MIC_BYTES_MAX,
            });
        }
        let (mic, rest) = rest
            .split_at_checked(mic_len)
            .ok_or_else(|| truncated("mic"))?;
        let mic = Mic::decode(mic).map_err(CredentialsError::Mic)?;
        let (&count, mut rest) = rest
            .split_first()
            .ok_or_else(|| truncated("attestations"))?;
        let count = usize::from(count);
        if count > CREDENTIAL_ATTESTATIONS_MAX {
            return Err(CredentialsError::TooManyAttestations {
                count,
                max: CREDENTIAL_ATTESTATIONS_MAX,
            });
        }
        let mut attestations = Vec::with_capacity(count);
        for index in 0..count {
            let (one, tail) = rest
                .split_at_checked(ATTESTATION_BYTES)
                .ok_or_else(|| truncated(format!("attestations[{index}]")))?;
            attestations.push(
                Attestation::decode(one)
                    .map_err(|error| CredentialsError::Attestation { index, error })?,
            );
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(CredentialsError::TrailingBytes { count: rest.len() });
        }
        Ok(Credentials { mic, attestations })
    }

    /// Builds credentials from the JSON form's hex strings (what the admin API receives); errors
    /// name the field (`mic`, `attestations[1]`).
    pub fn from_hex(mic: &str, attestations: &[String]) -> Result<Credentials, CredentialsError> {
        let hex_error = |field: String, e: hex::FromHexError| CredentialsError::Hex {
            field,
            reason: format!("not valid hex: {e}"),
        };
        if mic.len() > 2 * MIC_BYTES_MAX {
            return Err(CredentialsError::MicLength {
                len: mic.len() / 2,
                max: MIC_BYTES_MAX,
            });
        }
        let mic_bytes = hex::decode(mic).map_err(|e| hex_error("mic".into(), e))?;
        let mic = Mic::decode(&mic_bytes).map_err(CredentialsError::Mic)?;
        if attestations.len() > CREDENTIAL_ATTESTATIONS_MAX {
            return Err(CredentialsError::TooManyAttestations {
                count: attestations.len(),
                max: CREDENTIAL_ATTESTATIONS_MAX,
            });
        }
        let mut parsed = Vec::with_capacity(attestations.len());
        for (index, text) in attestations.iter().enumerate() {
            if text.len() > 2 * ATTESTATION_BYTES {
                return Err(CredentialsError::Attestation {
                    index,
                    error: ZkError::WrongLength {
                        what: "attestation",
                        expected: ATTESTATION_BYTES,
                        found: text.len() / 2,
                    },
                });
            }
            let bytes =
                hex::decode(text).map_err(|e| hex_error(format!("attestations[{index}]"), e))?;
            parsed.push(
                Attestation::decode(&bytes)
                    .map_err(|error| CredentialsError::Attestation { index, error })?,
            );
        }
        Ok(Credentials {
            mic,
            attestations: parsed,
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> CredentialsJson {
        CredentialsJson {
            mic: hex::encode(self.mic.encode()),
            attestations: self
                .attestations
                .iter()
                .map(|a| hex::encode(a.encode()))
                .collect(),
        }
    }
}

/// The JSON form of [`Credentials`] (admin API): the MIC and each attestation as lowercase hex
/// of their binary encodings. Unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsJson {
    /// `Mic::encode` in hex.
    #[schema(pattern = "^([0-9a-fA-F]{2})+$")]
    pub mic: String,
    /// `Attestation::encode` of each attestation in hex (at most
    /// [`CREDENTIAL_ATTESTATIONS_MAX`]).
    #[serde(default)]
    #[schema(max_items = 4)]
    pub attestations: Vec<String>,
}

impl TryFrom<CredentialsJson> for Credentials {
    type Error = CredentialsError;

    fn try_from(json: CredentialsJson) -> Result<Credentials, CredentialsError> {
        Credentials::from_hex(&json.mic, &json.attestations)
    }
}

impl From<&Credentials> for CredentialsJson {
    fn from(c: &Credentials) -> CredentialsJson {
        c.to_json()
    }
}

/// What verified credentials establish: what intents filter on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The MIC's serial.
    pub serial: u64,
    /// What the subject is.
    pub kind: SubjectKind,
    /// Who published it (from the signed MIC).
    pub publisher: String,
    /// The subject's Ed25519 public key.
    #[serde(with = "crate::mic::hex_bytes")]
    pub subject_key: [u8; 32],
    /// The CA key that signed the MIC.
    pub ca_key_id: u32,
    /// Start of the MIC's validity (ms since the Unix epoch).
    pub not_before_ms: u64,
    /// End of the MIC's validity, inclusive (ms since the Unix epoch).
    pub not_after_ms: u64,
    /// The predicates the attestations proved, in the credentials' order.
    pub predicates: Vec<Predicate>,
}

impl Verified {
    /// Whether some proven predicate is at least as strong as "score ≥ `min_score` ∧
    /// (`require_safety` → safety passed)": its minimum is at least `min_score`, and it requires
    /// safety whenever `require_safety` does.
    pub fn proves(&self, min_score: u16, require_safety: bool) -> bool {
        self.predicates
            .iter()
            .any(|p| p.min_score >= min_score && (p.require_safety || !require_safety))
    }

    /// The highest proven minimum score, over all predicates (`None` without attestations).
    pub fn best_score(&self) -> Option<u16> {
        self.predicates.iter().map(|p| p.min_score).max()
    }

    /// The highest proven minimum score among predicates that require a passed safety
    /// evaluation (`None` if none does).
    pub fn best_safe_score(&self) -> Option<u16> {
        self.predicates
            .iter()
            .filter(|p| p.require_safety)
            .map(|p| p.min_score)
            .max()
    }
}

/// Why credentials were not accepted. Checking changes no state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustReject {
    /// The MIC names a CA key this node does not know (or no longer trusts).
    #[error("MIC {serial}: unknown CA key {ca_key_id}")]
    UnknownCaKey {
        /// The MIC's serial.
        serial: u64,
        /// The key id it names.
        ca_key_id: u32,
    },
    /// The MIC's signature does not verify (forged or tampered).
    #[error("MIC {serial}: signature does not verify under CA key {ca_key_id}")]
    BadSignature {
        /// The MIC's serial.
        serial: u64,
        /// The key tried.
        ca_key_id: u32,
    },
    /// `now_ms < not_before_ms`.
    #[error("MIC {serial} not yet valid (valid from {not_before_ms} ms, now {now_ms} ms)")]
    NotYetValid {
        /// The MIC's serial.
        serial: u64,
        /// The time checked.
        now_ms: u64,
        /// Start of validity.
        not_before_ms: u64,
    },
    /// `now_ms > not_after_ms`.
    #[error("MIC {serial} expired at {not_after_ms} ms (now {now_ms} ms)")]
    Expired {
        /// The MIC's serial.
        serial: u64,
        /// The time checked.
        now_ms: u64,
        /// End of validity.
        not_after_ms: u64,
    },
    /// The CA revoked the MIC.
    #[error("MIC {serial} revoked at {revoked_at_ms} ms ({reason:?})")]
    Revoked {
        /// The MIC's serial.
        serial: u64,
        /// When the revocation was committed.
        revoked_at_ms: u64,
        /// Why.
        reason: RevocationReason,
    },
    /// Attestations are present but the MIC commits to nothing.
    #[error("MIC {serial} carries no zk_commitment, so its attestations prove nothing")]
    NoCommitment {
        /// The MIC's serial.
        serial: u64,
    },
    /// The MIC's commitment is not a canonical field element.
    #[error("MIC {serial}: zk_commitment is not a canonical BN254 scalar")]
    BadCommitment {
        /// The MIC's serial.
        serial: u64,
    },
    /// No verifying key is known for the attestation's circuit.
    #[error("no verifying key for circuit {circuit} (attestations[{index}])")]
    NoVerifyingKey {
        /// The circuit the attestation names.
        circuit: u16,
        /// The attestation's position.
        index: usize,
    },
    /// An attestation's proof does not verify against the MIC's commitment.
    #[error(
        "attestation proof invalid: attestations[{index}] (circuit {circuit}, {predicate}): {reason}"
    )]
    AttestationInvalid {
        /// The attestation's position.
        index: usize,
        /// Its circuit.
        circuit: u16,
        /// The predicate it claims, as text.
        predicate: String,
        /// The verifier's reason.
        reason: String,
    },
}

impl TrustReject {
    /// Whether the verdict can change without new credentials — when the node learns new CA keys
    /// or circuit keys (unknown key, no verifying key) or time passes (not yet valid) — so a
    /// holder should re-check on the next [`TrustUpdate`]. Forged, tampered, expired, revoked
    /// and invalid-proof verdicts are final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TrustReject::UnknownCaKey { .. }
                | TrustReject::NoVerifyingKey { .. }
                | TrustReject::NotYetValid { .. }
        )
    }
}

fn predicate_text(p: &Predicate) -> String {
    if p.require_safety {
        format!("score >= {} and safety passed", p.min_score)
    } else {
        format!("score >= {}", p.min_score)
    }
}

/// What the TrustActor sends whenever the CA state it follows changes: the CA's public keys and
/// the circuits' verifying keys (each the full current set; they replace what the context
/// held) and revocation records (deltas; each verified under `ca_keys` before it is kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustUpdate {
    /// Every trusted CA public key, by key id.
    pub ca_keys: CaKeys,
    /// Circuit id → compressed verifying key bytes (`zk::CircuitKeys::verifying_key`).
    pub circuits: Vec<(u16, Vec<u8>)>,
    /// Signed revocations not yet sent (duplicates are harmless).
    pub revocations: Vec<SignedRevocation>,
}

/// What [`TrustContext::apply_update`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// The CA key set differs from before.
    pub ca_keys_changed: bool,
    /// The set of usable circuit keys differs from before.
    pub circuits_changed: bool,
    /// Serials newly known revoked, ascending.
    pub revoked: Vec<u64>,
    /// Revocation records refused (bad signature, unknown CA key), with the reason.
    pub rejected_revocations: Vec<(u64, RevocationError)>,
    /// Circuits whose verifying key did not parse (not installed), with the reason.
    pub rejected_circuits: Vec<(u16, ZkError)>,
    /// Revocation records pruned because their MIC has expired.
    pub pruned: usize,
}

impl UpdateReport {
    /// Whether verdicts that depended on keys may have changed (re-check transient rejections).
    pub fn keys_changed(&self) -> bool {
        self.ca_keys_changed || self.circuits_changed
    }
}

/// A circuit's verifying key as held: the bytes and the prepared form.
struct CircuitKey {
    bytes: Vec<u8>,
    prepared: Arc<PreparedKey>,
}

/// What a verifying node knows about the CA (see the module docs).
pub struct TrustContext {
    ca_keys: CaKeys,
    revocations: RevocationSet,
    circuits: BTreeMap<u16, CircuitKey>,
    verifier: Verifier,
}

impl fmt::Debug for TrustContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustContext")
            .field(
                "ca_keys",
                &self.ca_keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("revocations", &self.revocations.len())
            .field("circuits", &self.circuits.keys().collect::<Vec<_>>())
            .field("verifier", &self.verifier)
            .finish()
    }
}

impl Default for TrustContext {
    fn default() -> Self {
        TrustContext::new()
    }
}

/// What checking a credential's attestations needs: the MIC's commitment and, per attestation,
/// its circuit's prepared key.
struct AttestationInputs {
    commitment: Commitment,
    keys: Vec<Arc<PreparedKey>>,
}

/// One attestation waiting in a batch: which credentials and which attestation it came from.
struct Pending {
    credential: usize,
    attestation: usize,
    item: BatchItem,
}

impl TrustContext {
    /// A context that knows no CA key and no circuit: every MIC is [`TrustReject::UnknownCaKey`]
    /// until the first [`TrustUpdate`].
    pub fn new() -> TrustContext {
        TrustContext {
            ca_keys: CaKeys::new(),
            revocations: RevocationSet::new(),
            circuits: BTreeMap::new(),
            verifier: Verifier::default(),
        }
    }

    /// The CA keys trusted.
    pub fn ca_keys(&self) -> &CaKeys {
        &self.ca_keys
    }

    /// The revocations known.
    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// Circuit ids with a usable verifying key, ascending.
    pub fn circuits(&self) -> impl Iterator<Item = u16> + '_ {
        self.circuits.keys().copied()
    }

    /// The verifying-key bytes of `circuit`, if known.
    pub fn verifying_key(&self, circuit: u16) -> Option<&[u8]> {
        self.circuits.get(&circuit).map(|c| c.bytes.as_slice())
    }

    /// Applies an update: replaces the CA keys and circuit keys (a key that does not parse is
    /// left out and reported), inserts the revocations (each verified under the new CA keys;
    /// bad records are reported, not kept) and prunes revocations of MICs expired at `now_ms`.
    /// At most [`TRUST_CA_KEYS_MAX`] CA keys and [`TRUST_CIRCUITS_MAX`] circuits are taken (the
    /// lowest ids).
    pub fn apply_update(&mut self, update: &TrustUpdate, now_ms: u64) -> UpdateReport {
        let mut report = UpdateReport::default();
        let keys: CaKeys = update
            .ca_keys
            .iter()
            .take(TRUST_CA_KEYS_MAX)
            .map(|(id, key)| (id, *key))
            .collect();
        if keys != self.ca_keys {
            report.ca_keys_changed = true;
            self.ca_keys = keys;
        }
        let mut circuits = BTreeMap::new();
        let mut given: Vec<&(u16, Vec<u8>)> = update.circuits.iter().collect();
        given.sort_by_key(|(id, _)| *id);
        given.dedup_by_key(|(id, _)| *id);
        for (id, bytes) in given.into_iter().take(TRUST_CIRCUITS_MAX) {
            match self.verifier.prepare(bytes) {
                Ok(prepared) => {
                    circuits.insert(
                        *id,
                        CircuitKey {
                            bytes: bytes.clone(),
                            prepared,
                        },
                    );
                }
                Err(e) => report.rejected_circuits.push((*id, e)),
            }
        }
        let same_circuits = circuits.len() == self.circuits.len()
            && circuits
                .iter()
                .zip(&self.circuits)
                .all(|((a, ka), (b, kb))| a == b && ka.bytes == kb.bytes);
        if !same_circuits {
            report.circuits_changed = true;
            self.circuits = circuits;
        }
        for record in &update.revocations {
            match self
                .revocations
                .insert(&self.ca_keys, record.clone(), now_ms)
            {
                Ok(Inserted::New) => report.revoked.push(record.serial),
                Ok(Inserted::Duplicate | Inserted::AlreadyExpired) => {}
                Err(e) => report.rejected_revocations.push((record.seq, e)),
            }
        }
        report.revoked.sort_unstable();
        report.revoked.dedup();
        report.pruned = self.revocations.prune(now_ms);
        report
    }

    /// Checks the MIC alone: signature under a known CA key, validity window, not revoked.
    fn check_mic(&self, mic: &Mic, now_ms: u64) -> Result<(), TrustReject> {
        let serial = mic.body.serial;
        mic.verify(&self.ca_keys, now_ms).map_err(|e| match e {
            MicError::UnknownCaKey { ca_key_id } => TrustReject::UnknownCaKey { serial, ca_key_id },
            MicError::NotYetValid {
                now_ms,
                not_before_ms,
            } => TrustReject::NotYetValid {
                serial,
                now_ms,
                not_before_ms,
            },
            MicError::Expired {
                now_ms,
                not_after_ms,
            } => TrustReject::Expired {
                serial,
                now_ms,
                not_after_ms,
            },
            // `verify` returns nothing else; a bad signature is the honest reading of any other.
            _ => TrustReject::BadSignature {
                serial,
                ca_key_id: mic.body.ca_key_id,
            },
        })?;
        self.check_revoked(serial)
    }

    fn check_revoked(&self, serial: u64) -> Result<(), TrustReject> {
        match self.revocations.get(serial) {
            Some(r) => Err(TrustReject::Revoked {
                serial,
                revoked_at_ms: r.revoked_at_ms,
                reason: r.reason,
            }),
            None => Ok(()),
        }
    }

    /// The commitment and each attestation's prepared key; `Err` for the first attestation that
    /// cannot even be tried.
    fn attestation_inputs(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<AttestationInputs>, TrustReject> {
        if credentials.attestations.is_empty() {
            return Ok(None);
        }
        let serial = credentials.mic.body.serial;
        let commitment = credentials
            .mic
            .body
            .zk_commitment
            .ok_or(TrustReject::NoCommitment { serial })?;
        let commitment = Commitment::from_bytes(&commitment)
            .map_err(|_| TrustReject::BadCommitment { serial })?;
        let mut keys = Vec::with_capacity(credentials.attestations.len());
        for (index, a) in credentials.attestations.iter().enumerate() {
            let key = self
                .circuits
                .get(&a.circuit)
                .ok_or(TrustReject::NoVerifyingKey {
                    circuit: a.circuit,
                    index,
                })?;
            keys.push(Arc::clone(&key.prepared));
        }
        Ok(Some(AttestationInputs { commitment, keys }))
    }

    fn invalid(index: usize, a: &Attestation, e: &ZkError) -> TrustReject {
        TrustReject::AttestationInvalid {
            index,
            circuit: a.circuit,
            predicate: predicate_text(&a.predicate),
            reason: e.to_string(),
        }
    }

    fn verified(credentials: &Credentials) -> Verified {
        let body = &credentials.mic.body;
        Verified {
            serial: body.serial,
            kind: body.kind,
            publisher: body.publisher.clone(),
            subject_key: body.subject_key,
            ca_key_id: body.ca_key_id,
            not_before_ms: body.not_before_ms,
            not_after_ms: body.not_after_ms,
            predicates: credentials
                .attestations
                .iter()
                .map(|a| a.predicate)
                .collect(),
        }
    }

    /// Verifies one set of credentials at `now_ms` (see the module docs). Errors, in the order
    /// checked: the MIC ([`TrustReject::UnknownCaKey`], [`TrustReject::BadSignature`],
    /// [`TrustReject::NotYetValid`], [`TrustReject::Expired`], [`TrustReject::Revoked`]), then
    /// the attestations in order ([`TrustReject::NoCommitment`], [`TrustReject::BadCommitment`],
    /// [`TrustReject::NoVerifyingKey`], [`TrustReject::AttestationInvalid`]).
    pub fn check(&self, credentials: &Credentials, now_ms: u64) -> Result<Verified, TrustReject> {
        self.check_mic(&credentials.mic, now_ms)?;
        if let Some(AttestationInputs { commitment, keys }) =
            self.attestation_inputs(credentials)?
        {
            for (index, (a, key)) in credentials.attestations.iter().zip(keys).enumerate() {
                let result = a
                    .parsed_proof()
                    .and_then(|proof| key.verify(&commitment, &a.predicate, &proof));
                if let Err(e) = result {
                    return Err(Self::invalid(index, a, &e));
                }
            }
        }
        Ok(Self::verified(credentials))
    }

    /// Verifies many credentials at once: MIC checks one by one (cheap), then every proof of one
    /// circuit in one batch check. A failing batch is re-checked proof by proof, so each result
    /// names its own reason. Results are in input order and equal [`TrustContext::check`]'s
    /// (an attestation rejected for another reason first is reported as that reason).
    pub fn check_batch<R: RngCore + CryptoRng>(
        &self,
        credentials: &[&Credentials],
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<Result<Verified, TrustReject>> {
        let mut results: Vec<Result<Verified, TrustReject>> = Vec::with_capacity(credentials.len());
        // Circuit → (prepared key, items waiting).
        let mut batches: BTreeMap<u16, (Arc<PreparedKey>, Vec<Pending>)> = BTreeMap::new();
        for (i, c) in credentials.iter().enumerate() {
            let inputs = self
                .check_mic(&c.mic, now_ms)
                .and_then(|()| self.attestation_inputs(c));
            let (commitment, keys) = match inputs {
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
                Ok(None) => {
                    results.push(Ok(Self::verified(c)));
                    continue;
                }
                Ok(Some(AttestationInputs { commitment, keys })) => (commitment, keys),
            };
            let mut parsed = Vec::with_capacity(c.attestations.len());
            let mut malformed = None;
            for (index, a) in c.attestations.iter().enumerate() {
                match a.parsed_proof() {
                    Ok(proof) => parsed.push(proof),
                    Err(e) => {
                        malformed = Some(Self::invalid(index, a, &e));
                        break;
                    }
                }
            }
            if let Some(reject) = malformed {
                results.push(Err(reject));
                continue;
            }
            for (index, ((a, key), proof)) in
                c.attestations.iter().zip(keys).zip(parsed).enumerate()
            {
                batches
                    .entry(a.circuit)
                    .or_insert_with(|| (key, Vec::new()))
                    .1
                    .push(Pending {
                        credential: i,
                        attestation: index,
                        item: BatchItem {
                            commitment,
                            predicate: a.predicate,
                            proof,
                        },
                    });
            }
            results.push(Ok(Self::verified(c)));
        }
        for (key, pending) in batches.into_values() {
            let items: Vec<BatchItem> = pending.iter().map(|p| p.item.clone()).collect();
            let failed: Vec<(usize, ZkError)> = match key.verify_batch(&items, rng) {
                Ok(()) => Vec::new(),
                Err(ZkError::BatchRejected { failed }) => failed
                    .into_iter()
                    .map(|i| (i, ZkError::VerificationFailed))
                    .collect(),
                // Not a verdict on the proofs: check them one by one for their own reasons.
                Err(_) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, it)| {
                        key.verify(&it.commitment, &it.predicate, &it.proof)
                            .err()
                            .map(|e| (i, e))
                    })
                    .collect(),
            };
            for (i, e) in failed {
                let Some(p) = pending.get(i) else { continue };
                let slot = &mut results[p.credential];
                // Keep the first failing attestation (lowest index) of each credential.
                let earlier = matches!(slot, Err(TrustReject::AttestationInvalid { index, .. }) if *index < p.attestation);
                if !earlier {
                    let a = &credentials[p.credential].attestations[p.attestation];
                    *slot = Err(Self::invalid(p.attestation, a, &e));
                }
            }
        }
        results
    }

    /// Re-checks an earlier verdict without touching proofs: the CA key is still trusted, the MIC
    /// is within its validity window at `now_ms` and not revoked. A few map lookups.
    pub fn status(&self, verified: &Verified, now_ms: u64) -> Result<(), TrustReject> {
        let serial = verified.serial;
        if self.ca_keys.get(verified.ca_key_id).is_none() {
            return Err(TrustReject::UnknownCaKey {
                serial,
                ca_key_id: verified.ca_key_id,
            });
        }
        if now_ms < verified.not_before_ms {
            return Err(TrustReject::NotYetValid {
                serial,
                now_ms,
                not_before_ms: verified.not_before_ms,
            });
        }
        if now_ms > verified.not_after_ms {
            return Err(TrustReject::Expired {
                serial,
                now_ms,
                not_after_ms: verified.not_after_ms,
            });
        }
        self.check_revoked(serial)
    }

    /// Whether `serial` is known revoked.
    pub fn is_revoked(&self, serial: u64) -> bool {
        self.revocations.is_revoked(serial)
    }
}

impl TrustUpdate {
    /// The update a node following `ca` sends: its CA keys, every circuit's verifying key, and
    /// up to [`crate::ca::LIST_LIMIT_MAX`] revocations after sequence number `revocations_after`
    /// (0 = from the start).
    pub fn from_ca_state(ca: &crate::ca::CaState, revocations_after: u64) -> TrustUpdate {
        TrustUpdate {
            ca_keys: ca.ca_keys().clone(),
            circuits: ca
                .circuits()
                .map(|(id, keys)| (id, keys.verifying_key.clone()))
                .collect(),
            revocations: ca
                .revocations_after(revocations_after, crate::ca::LIST_LIMIT_MAX)
                .into_iter()
                .cloned()
                .collect(),
        }
    }
}
