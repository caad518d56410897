//! The certificate authority's request and response types (`/v1/ca/...`, `/v1/node/mic`,
//! `/v1/node/trust`), shared by the admin server and `nexus ctl ca`.

use nexus_trust::mic::Mic;
use nexus_trust::raft::{CaKeyEntry, CaStatus};
use nexus_trust::revocation::{RevocationReason, SignedRevocation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/ca/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CaStatusDto {
    /// Whether this node is a CA voter (otherwise `raft` is the view of the member it reached).
    pub voter: bool,
    /// This node's Raft id (the first 8 bytes of its node id, as a decimal u64).
    pub raft_id: u64,
    /// The Raft view.
    #[schema(value_type = Object)]
    pub raft: CaStatus,
    /// Whether the CA has a signing key (`Command::Bootstrap` applied).
    pub bootstrapped: bool,
    /// Certificates issued (including renewals), if the CA state was readable.
    pub mics: Option<u64>,
    /// Revocations committed, if the CA state was readable.
    pub revocations: Option<u64>,
    /// The serial the next certificate gets, if the CA state was readable.
    pub next_serial: Option<u64>,
}

/// A certificate as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MicDto {
    /// The serial.
    pub serial: u64,
    /// The decoded certificate (body + signature, hex fields).
    #[schema(value_type = Object)]
    pub mic: Mic,
    /// The binary encoding (`docs/trust.md`), hex.
    pub encoded: String,
    /// A short fingerprint for logs.
    pub fingerprint: String,
    /// The revocation record, if revoked.
    #[schema(value_type = Option<Object>)]
    pub revocation: Option<SignedRevocation>,
}

impl MicDto {
    /// The API's view of `mic`, with its revocation if revoked.
    pub fn new(mic: Mic, revocation: Option<SignedRevocation>) -> Self {
        MicDto {
            serial: mic.body.serial,
            encoded: hex::encode(mic.encode()),
            fingerprint: mic.fingerprint(),
            mic,
            revocation,
        }
    }
}

/// `GET /v1/ca/certs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MicList {
    /// Certificates with serials above `after`, ascending.
    pub certs: Vec<MicDto>,
    /// Pass as `after` for the next page (`null` when this page was the last).
    pub next_after: Option<u64>,
}

/// Body of `POST /v1/ca/certs/{serial}/renew` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Lifetime of the new certificate, 60 s to 397 days; default: the renewed one's.
    #[schema(minimum = 60_000, maximum = 34_300_800_000_u64)]
    pub validity_ms: Option<u64>,
}

/// Body of `POST /v1/ca/certs/{serial}/revoke` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// `unspecified` (default), `key_compromise`, `superseded`, `cessation_of_operation` or
    /// `privilege_withdrawn`.
    #[schema(value_type = Option<String>, pattern = "^(unspecified|key_compromise|superseded|cessation_of_operation|privilege_withdrawn)$")]
    pub reason: Option<RevocationReason>,
}

/// `POST /v1/ca/certs/{serial}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationDto {
    /// The signed record (repeated revokes return the first one).
    #[schema(value_type = Object)]
    pub revocation: SignedRevocation,
    /// Its binary encoding (what gossip carries), hex.
    pub encoded: String,
}

/// `GET /v1/ca/revocations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationList {
    /// Records with `seq` above `after`, in seq order.
    #[schema(value_type = Vec<Object>)]
    pub revocations: Vec<SignedRevocation>,
    /// Pass as `after` for the next page (`null` when this page was the last).
    pub next_after: Option<u64>,
}

/// One circuit's verifying-key identity.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CircuitRef {
    /// Circuit id.
    pub id: u16,
    /// SHA-256 of the verifying key, hex.
    pub verifying_key_id: String,
}

/// `GET /v1/ca/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CaKeysDto {
    /// The CA's Ed25519 public keys by id.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<CaKeyEntry>,
    /// The circuits whose keys the CA holds.
    pub circuits: Vec<CircuitRef>,
}

/// `GET /v1/ca/circuits/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CircuitDto {
    /// Circuit id.
    pub id: u16,
    /// SHA-256 of the verifying key, hex.
    pub verifying_key_id: String,
    /// The Groth16 verifying key (ark compressed), hex.
    pub verifying_key: String,
}

/// `GET /v1/ca/circuits/{id}/proving-key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvingKeyDto {
    /// Circuit id.
    pub id: u16,
    /// The Groth16 proving key (ark compressed), hex.
    pub proving_key: String,
}

/// Body of `POST /v1/ca/voters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddVoterRequest {
    /// The new voter's node id (64 hex digits).
    pub node: String,
    /// Its Raft address; default: the `ca_raft` address it advertises in membership.
    pub raft_addr: Option<String>,
}

/// `POST /v1/ca/voters`, `DELETE /v1/ca/voters/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VotersDto {
    /// Voter Raft ids after the change.
    pub voters: Vec<u64>,
}

/// `GET /v1/node/trust`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrustDto {
    /// Whether this node is a CA voter.
    pub voter: bool,
    /// This node's Raft id.
    pub raft_id: u64,
    /// The CA keys this node trusts.
    #[schema(value_type = Vec<Object>)]
    pub ca_keys: Vec<CaKeyEntry>,
    /// Circuits whose verifying keys this node holds.
    pub circuits: Vec<u16>,
    /// This node's MIC serial, once issued.
    pub node_mic_serial: Option<u64>,
    /// Revocation records held.
    pub revocations: usize,
    /// Every revocation seq up to this one has been seen.
    pub contiguous_seq: u64,
    /// Revoked serials held (ascending, at most 1000).
    pub revoked: Vec<u64>,
}
