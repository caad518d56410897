//! [`Advert`] and [`SignedAdvert`]: what gossip carries. One signed advert is one service's state
//! at one version — live (with its SAD and its node's Vivaldi coordinate) or withdrawn — signed
//! by the origin node's Ed25519 key. A live advert may carry the service's [`Credentials`] (its
//! MIC and attestations), which receivers verify against their trust context. The frame is
//! specified in `docs/sad.md`.

use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use nexus_trust_core::verify::{Credentials, CredentialsError};

use crate::NodeId;
use crate::sad::{DecodeError, SAD_BYTES_MAX, SERVICE_ID_BYTES_MAX, Sad, SadError, check_token};
use crate::vivaldi::{Coord, VIVALDI_DIMENSIONS};

/// Largest signed advert: fits one overlay datagram.
pub const ADVERT_BYTES_MAX: usize = 1200;
/// First 4 bytes of a signed advert.
pub const ADVERT_MAGIC: [u8; 4] = *b"NXAD";
/// The advert frame format this build writes and the only one it reads.
pub const ADVERT_FORMAT_VERSION: u8 = 1;
/// Kind byte of a live advert.
pub const ADVERT_KIND_LIVE: u8 = 1;
/// Kind byte of a withdrawal.
pub const ADVERT_KIND_WITHDRAWN: u8 = 2;
/// Flag bit: a live advert carries a coordinate.
pub const ADVERT_FLAG_COORD: u8 = 0x01;
/// Flag bit: a live advert carries credentials (after the SAD: `u16` LE length, then
/// [`Credentials::encode`]).
pub const ADVERT_FLAG_CREDENTIALS: u8 = 0x02;
/// Prefix of the message the signature covers (domain separation; not on the wire).
pub const ADVERT_SIGNING_CONTEXT: &[u8] = b"nexus-registry/advert/v1\0";
/// Fixed bytes in front of the body: magic, format, kind, flags, reserved, origin, version.
pub const ADVERT_HEADER_LEN: usize = 48;
/// Ed25519 signature length at the end of the frame.
pub const ADVERT_SIGNATURE_LEN: usize = 64;
/// Bytes of an encoded coordinate (11 little-endian f32: 8 dimensions, height, error,
/// adjustment).
pub const COORD_WIRE_LEN: usize = (VIVALDI_DIMENSIONS + 3) * 4;

const _: () = assert!(
    ADVERT_HEADER_LEN + COORD_WIRE_LEN + 2 + SAD_BYTES_MAX + ADVERT_SIGNATURE_LEN
        <= ADVERT_BYTES_MAX,
    "a live advert with a maximal SAD must fit one datagram"
);

/// One service's state at one version, as its origin node states it.
#[derive(Clone, Debug, PartialEq)]
pub struct Advert {
    /// The node the service runs on; its Ed25519 public key signs the advert.
    pub origin: NodeId,
    /// The service id (equals `sad.id` for a live advert).
    pub service: String,
    /// Version: per (origin, service), the higher version wins (equals `sad.version` when live).
    pub version: u64,
    /// Live or withdrawn.
    pub body: AdvertBody,
}

/// What an advert says about its service.
#[derive(Clone, Debug, PartialEq)]
pub enum AdvertBody {
    /// The service is up with this descriptor; `coord` is its node's Vivaldi coordinate
    /// (carried as f32 on the wire).
    Live {
        /// The descriptor, shared: the registry's record, the resolve index and every
        /// [`crate::Candidate`] returned for it hold the same allocation (`Arc::new(sad)` or
        /// `sad.into()` to build one).
        sad: Arc<Sad>,
        /// The origin node's coordinate, if it has one.
        coord: Option<Coord>,
        /// The service's MIC and attestations, if it presents any (verified by each receiver
        /// against its own trust context; the signature only says the origin sent them).
        credentials: Option<Arc<Credentials>>,
    },
    /// The service was withdrawn.
    Withdrawn,
}

/// A signed advert was refused. Nothing changed anywhere.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AdvertError {
    /// More than [`ADVERT_BYTES_MAX`] bytes.
    #[error("advert is {0} bytes, more than {ADVERT_BYTES_MAX}")]
    TooLarge(usize),
    /// Truncated, or a length field disagrees with the input.
    #[error("malformed advert frame: {0}")]
    Frame(String),
    /// The first four bytes are not [`ADVERT_MAGIC`].
    #[error("not an advert (bad magic)")]
    Magic,
    /// A frame format this build does not read.
    #[error("advert format {found} is not supported (this build reads {ADVERT_FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
    },
    /// Unknown kind, unknown flag bits or non-zero reserved bytes.
    #[error("unknown advert kind or flags: {0}")]
    Kind(String),
    /// The embedded SAD did not decode.
    #[error("advert SAD: {0}")]
    Sad(DecodeError),
    /// The withdrawn service id breaks the id rules.
    #[error("advert service: {0}")]
    Service(SadError),
    /// The coordinate is non-finite or out of range.
    #[error("advert coordinate is out of range")]
    Coord,
    /// The body contradicts the header (`sad.id` ≠ service, `sad.version` ≠ version), or the
    /// SAD's `trust.mic_serial` is not the serial of the credentials' MIC.
    #[error("inconsistent advert: {0}")]
    Inconsistent(String),
    /// The credentials section did not decode.
    #[error("advert credentials: {}: {}", .0.field(), .0)]
    Credentials(CredentialsError),
    /// The origin is not a valid Ed25519 public key.
    #[error("origin is not a valid Ed25519 public key")]
    OriginKey,
    /// The signature does not verify under the origin's key.
    #[error("signature does not verify under the origin's key")]
    Signature,
    /// The registry is at a capacity limit (see `store.rs`); the advert was not applied.
    #[error("registry full: {0}")]
    Full(String),
}

/// The exact bytes of a signed advert plus its parsed (not yet verified) fields.
///
/// [`SignedAdvert::from_bytes`] parses and bounds-checks; [`SignedAdvert::verify`] checks the
/// signature. [`crate::Registry::apply`] does both.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedAdvert {
    bytes: Vec<u8>,
    origin: NodeId,
    version: u64,
    service: String,
    body: AdvertBody,
}

fn coord_to_wire(c: &Coord, out: &mut Vec<u8>) {
    for x in c.vec {
        out.extend_from_slice(&(x as f32).to_le_bytes());
    }
    for x in [c.height, c.error, c.adjustment] {
        out.extend_from_slice(&(x as f32).to_le_bytes());
    }
}

fn coord_from_wire(b: &[u8]) -> Coord {
    let f =
        |i: usize| f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as f64;
    Coord {
        vec: std::array::from_fn(f),
        height: f(VIVALDI_DIMENSIONS),
        error: f(VIVALDI_DIMENSIONS + 1),
        adjustment: f(VIVALDI_DIMENSIONS + 2),
    }
}

fn signing_message(unsigned: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ADVERT_SIGNING_CONTEXT.len() + unsigned.len());
    msg.extend_from_slice(ADVERT_SIGNING_CONTEXT);
    msg.extend_from_slice(unsigned);
    msg
}

/// The node id of a signing key.
pub fn node_id_of(key: &SigningKey) -> NodeId {
    NodeId(key.verifying_key().to_bytes())
}

impl Advert {
    /// Encodes and signs. The key must be the origin's; a live body's SAD must be valid and
    /// agree with `service` and `version`; a coordinate must be valid.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedAdvert, SadError> {
        if node_id_of(key) != self.origin {
            return Err(SadError::new(
                "origin",
                "the signing key's public key is not the origin node id",
            ));
        }
        check_token("service", &self.service, SERVICE_ID_BYTES_MAX, true)?;
        let mut bytes = Vec::with_capacity(ADVERT_BYTES_MAX);
        bytes.extend_from_slice(&ADVERT_MAGIC);
        bytes.push(ADVERT_FORMAT_VERSION);
        match &self.body {
            AdvertBody::Live {
                sad,
                coord,
                credentials,
            } => {
                if sad.id != self.service {
                    return Err(SadError::new(
                        "id",
                        format!(
                            "{:?} differs from the advert's service {:?}",
                            sad.id, self.service
                        ),
                    ));
                }
                if sad.version != self.version {
                    return Err(SadError::new(
                        "version",
                        format!(
                            "{} differs from the advert's version {}",
                            sad.version, self.version
                        ),
                    ));
                }
                let encoded = sad.encode()?;
                let credentials = credentials.as_deref();
                check_mic_serial(sad, credentials)
                    .map_err(|reason| SadError::new("trust.mic_serial", reason))?;
                check_fits(encoded.len(), coord.is_some(), credentials)?;
                bytes.push(ADVERT_KIND_LIVE);
                let mut flags = 0;
                if coord.is_some() {
                    flags |= ADVERT_FLAG_COORD;
                }
                if credentials.is_some() {
                    flags |= ADVERT_FLAG_CREDENTIALS;
                }
                bytes.push(flags);
                bytes.push(0);
                bytes.extend_from_slice(&self.origin.0);
                bytes.extend_from_slice(&self.version.to_le_bytes());
                if let Some(c) = coord {
                    if !c.is_valid() {
                        return Err(SadError::new("coord", "non-finite or out of range"));
                    }
                    coord_to_wire(c, &mut bytes);
                }
                bytes.extend_from_slice(&(encoded.len() as u16).to_le_bytes());
                bytes.extend_from_slice(&encoded);
                if let Some(c) = credentials {
                    let c = c.encode();
                    bytes.extend_from_slice(&(c.len() as u16).to_le_bytes());
                    bytes.extend_from_slice(&c);
                }
            }
            AdvertBody::Withdrawn => {
                bytes.push(ADVERT_KIND_WITHDRAWN);
                bytes.push(0);
                bytes.push(0);
                bytes.extend_from_slice(&self.origin.0);
                bytes.extend_from_slice(&self.version.to_le_bytes());
                bytes.push(self.service.len() as u8);
                bytes.extend_from_slice(self.service.as_bytes());
            }
        }
        let signature = key.sign(&signing_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        if bytes.len() > ADVERT_BYTES_MAX {
            return Err(SadError::new(
                "advert",
                format!("{} bytes, at most {ADVERT_BYTES_MAX}", bytes.len()),
            ));
        }
        // Parse our own output: what we send is exactly what receivers accept.
        SignedAdvert::from_bytes(&bytes).map_err(|e| SadError::new("advert", e.to_string()))
    }
}

impl SignedAdvert {
    /// The exact signed bytes (what gossip sends).
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses and bounds-checks a frame, decoding and validating its SAD. Does not check the
    /// signature (see [`SignedAdvert::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedAdvert, AdvertError> {
        if bytes.len() > ADVERT_BYTES_MAX {
            return Err(AdvertError::TooLarge(bytes.len()));
        }
        if bytes.len() < ADVERT_HEADER_LEN + 1 + ADVERT_SIGNATURE_LEN {
            return Err(AdvertError::Frame(format!(
                "{} bytes is shorter than the smallest advert",
                bytes.len()
            )));
        }
        if bytes[0..4] != ADVERT_MAGIC {
            return Err(AdvertError::Magic);
        }
        if bytes[4] != ADVERT_FORMAT_VERSION {
            return Err(AdvertError::UnsupportedFormat { found: bytes[4] });
        }
        let kind = bytes[5];
        let flags = bytes[6];
        if bytes[7] != 0 {
            return Err(AdvertError::Kind("reserved byte is not zero".into()));
        }
        let mut origin = [0u8; 32];
        origin.copy_from_slice(&bytes[8..40]);
        let origin = NodeId(origin);
        let mut version = [0u8; 8];
        version.copy_from_slice(&bytes[40..48]);
        let version = u64::from_le_bytes(version);
        let body_end = bytes.len() - ADVERT_SIGNATURE_LEN;
        let body = &bytes[ADVERT_HEADER_LEN..body_end];
        let (service, body) = match kind {
            ADVERT_KIND_LIVE => {
                if flags & !(ADVERT_FLAG_COORD | ADVERT_FLAG_CREDENTIALS) != 0 {
                    return Err(AdvertError::Kind(format!("unknown flags {flags:#04x}")));
                }
                let mut rest = body;
                let coord = if flags & ADVERT_FLAG_COORD != 0 {
                    if rest.len() < COORD_WIRE_LEN {
                        return Err(AdvertError::Frame("truncated coordinate".into()));
                    }
                    let c = coord_from_wire(&rest[..COORD_WIRE_LEN]);
                    if !c.is_valid() {
                        return Err(AdvertError::Coord);
                    }
                    rest = &rest[COORD_WIRE_LEN..];
                    Some(c)
                } else {
                    None
                };
                if rest.len() < 2 {
                    return Err(AdvertError::Frame("truncated SAD length".into()));
                }
                let sad_len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
                let rest = &rest[2..];
                let (sad_bytes, credentials) = if flags & ADVERT_FLAG_CREDENTIALS != 0 {
                    let Some((sad_bytes, tail)) = rest.split_at_checked(sad_len) else {
                        return Err(AdvertError::Frame(format!(
                            "SAD length {sad_len}, {} bytes follow",
                            rest.len()
                        )));
                    };
                    let Some((len, cred_bytes)) = tail.split_at_checked(2) else {
                        return Err(AdvertError::Frame("truncated credentials length".into()));
                    };
                    let cred_len = u16::from_le_bytes([len[0], len[1]]) as usize;
                    if cred_len != cred_bytes.len() {
                        return Err(AdvertError::Frame(format!(
                            "credentials length {cred_len}, {} bytes follow",
                            cred_bytes.len()
                        )));
                    }
                    let c = Credentials::decode(cred_bytes).map_err(AdvertError::Credentials)?;
                    (sad_bytes, Some(Arc::new(c)))
                } else {
                    if sad_len != rest.len() {
                        return Err(AdvertError::Frame(format!(
                            "SAD length {sad_len}, {} bytes follow",
                            rest.len()
                        )));
                    }
                    (rest, None)
                };
                let sad = Sad::decode(sad_bytes).map_err(AdvertError::Sad)?;
                if sad.version != version {
                    return Err(AdvertError::Inconsistent(format!(
                        "sad.version {} but advert version {version}",
                        sad.version
                    )));
                }
                check_mic_serial(&sad, credentials.as_deref())
                    .map_err(AdvertError::Inconsistent)?;
                (
                    sad.id.clone(),
                    AdvertBody::Live {
                        sad: Arc::new(sad),
                        coord,
                        credentials,
                    },
                )
            }
            ADVERT_KIND_WITHDRAWN => {
                if flags != 0 {
                    return Err(AdvertError::Kind(format!("unknown flags {flags:#04x}")));
                }
                let Some((&len, name)) = body.split_first() else {
                    return Err(AdvertError::Frame("truncated service".into()));
                };
                if len as usize != name.len() {
                    return Err(AdvertError::Frame(format!(
                        "service length {len}, {} bytes follow",
                        name.len()
                    )));
                }
                let service = std::str::from_utf8(name)
                    .map_err(|_| AdvertError::Service(SadError::new("service", "not UTF-8")))?;
                check_token("service", service, SERVICE_ID_BYTES_MAX, true)
                    .map_err(AdvertError::Service)?;
                (service.to_string(), AdvertBody::Withdrawn)
            }
            other => return Err(AdvertError::Kind(format!("unknown kind {other}"))),
        };
        Ok(SignedAdvert {
            bytes: bytes.to_vec(),
            origin,
            version,
            service,
            body,
        })
    }

    /// Checks the signature under the origin's key and returns the advert.
    pub fn verify(&self) -> Result<Advert, AdvertError> {
        self.check_signature()?;
        Ok(self.advert_unverified())
    }

    pub(crate) fn check_signature(&self) -> Result<(), AdvertError> {
        let key = VerifyingKey::from_bytes(&self.origin.0).map_err(|_| AdvertError::OriginKey)?;
        let split = self.bytes.len() - ADVERT_SIGNATURE_LEN;
        let mut sig = [0u8; ADVERT_SIGNATURE_LEN];
        sig.copy_from_slice(&self.bytes[split..]);
        let signature = Signature::from_bytes(&sig);
        key.verify_strict(&signing_message(&self.bytes[..split]), &signature)
            .map_err(|_| AdvertError::Signature)
    }

    pub(crate) fn advert_unverified(&self) -> Advert {
        Advert {
            origin: self.origin,
            service: self.service.clone(),
            version: self.version,
            body: self.body.clone(),
        }
    }

    /// The parsed body (not verified by itself; adverts held by a registry were verified).
    pub fn body(&self) -> &AdvertBody {
        &self.body
    }

    /// The origin node.
    pub fn origin(&self) -> NodeId {
        self.origin
    }

    /// The service id.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this is a withdrawal.
    pub fn is_withdrawal(&self) -> bool {
        matches!(self.body, AdvertBody::Withdrawn)
    }

    /// The credentials a live advert carries.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        match &self.body {
            AdvertBody::Live { credentials, .. } => credentials.as_ref(),
            AdvertBody::Withdrawn => None,
        }
    }
}

/// With credentials, the SAD's `trust.mic_serial` must name their MIC (it may not claim one
/// MIC and present another).
fn check_mic_serial(sad: &Sad, credentials: Option<&Credentials>) -> Result<(), String> {
    match credentials {
        Some(c) if sad.trust.mic_serial != Some(c.mic.body.serial) => Err(format!(
            "sad.trust.mic_serial is {:?} but the credentials carry MIC {}",
            sad.trust.mic_serial, c.mic.body.serial
        )),
        _ => Ok(()),
    }
}

/// Bytes of a live advert with an encoded SAD of `sad_len` bytes, a coordinate or not, and
/// credentials of `credentials_len` bytes (if any).
pub fn live_advert_len(sad_len: usize, coord: bool, credentials_len: Option<usize>) -> usize {
    ADVERT_HEADER_LEN
        + if coord { COORD_WIRE_LEN } else { 0 }
        + 2
        + sad_len
        + credentials_len.map_or(0, |n| 2 + n)
        + ADVERT_SIGNATURE_LEN
}

/// Whether a live advert with this SAD (encoded length) and credentials fits
/// [`ADVERT_BYTES_MAX`]; the error names the credentials when they are what does not fit.
fn check_fits(
    sad_len: usize,
    coord: bool,
    credentials: Option<&Credentials>,
) -> Result<(), SadError> {
    let cred_len = credentials.map(|c| c.encode().len());
    let len = live_advert_len(sad_len, coord, cred_len);
    if len <= ADVERT_BYTES_MAX {
        return Ok(());
    }
    Err(match cred_len {
        Some(c) => SadError::new(
            "credentials",
            format!(
                "the advert would be {len} bytes (SAD {sad_len} + credentials {c}), at most \
                 {ADVERT_BYTES_MAX} (one datagram): use fewer attestations or a smaller MIC or SAD"
            ),
        ),
        None => SadError::new("advert", format!("{len} bytes, at most {ADVERT_BYTES_MAX}")),
    })
}

/// Checks that a live advert for `sad` with `credentials` (and a coordinate) would fit one
/// datagram, before anything is stored or signed.
pub fn check_advert_fits(sad: &Sad, credentials: Option<&Credentials>) -> Result<(), SadError> {
    check_fits(sad.encode()?.len(), true, credentials)
}
