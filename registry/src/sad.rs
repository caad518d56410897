//! [`Sad`]: the Semantic Address Descriptor a service advertises, its limits, its JSON form and
//! its versioned binary form (a 16-byte header, then an rkyv archive). Specified in `docs/sad.md`.

use rkyv::util::AlignedVec;
use serde::{Deserialize, Serialize};

/// Largest encoded SAD (header + archive). Every SAD that passes [`Sad::validate`] encodes to at
/// most this many bytes (a test builds one with every limit at its maximum).
pub const SAD_BYTES_MAX: usize = 1024;
/// Bytes of a service id ([`Sad::id`]).
pub const SERVICE_ID_BYTES_MAX: usize = 64;
/// Task tags per SAD.
pub const TASKS_MAX: usize = 8;
/// Bytes of one task tag.
pub const TASK_BYTES_MAX: usize = 32;
/// Bytes of [`Sad::model_family`].
pub const MODEL_FAMILY_BYTES_MAX: usize = 32;
/// Modalities per SAD (and per intent).
pub const MODALITIES_MAX: usize = 6;
/// Bytes of one modality.
pub const MODALITY_BYTES_MAX: usize = 16;
/// Bytes of [`Sad::region`].
pub const REGION_BYTES_MAX: usize = 32;
/// Bytes of [`Sad::zone`].
pub const ZONE_BYTES_MAX: usize = 32;
/// Attestation references per SAD.
pub const ATTESTATIONS_MAX: usize = 3;
/// Bytes of one attestation reference.
pub const ATTESTATION_BYTES_MAX: usize = 48;
/// Shortest lease, seconds.
pub const TTL_S_MIN: u32 = 5;
/// Longest lease, seconds (one day).
pub const TTL_S_MAX: u32 = 86_400;
/// Lease when the JSON form omits `ttl_s`.
pub const TTL_S_DEFAULT: u32 = 30;
/// Largest `utilization_pct`.
pub const UTILIZATION_PCT_MAX: u8 = 100;
/// Largest SAD JSON document [`Sad::from_json`] reads.
pub const SAD_JSON_BYTES_MAX: usize = 16 * 1024;

/// First 4 bytes of an encoded SAD.
pub const SAD_MAGIC: [u8; 4] = *b"NXSD";
/// The binary format this build writes and the only one it reads.
pub const SAD_FORMAT_VERSION: u16 = 1;
/// Length of the header in front of the archive (a multiple of 16 so the archive stays aligned
/// in an aligned buffer).
pub const SAD_HEADER_LEN: usize = 16;
/// Alignment the archive needs for [`access`] (rkyv 0.8's default, aligned format).
pub const SAD_ARCHIVE_ALIGN: usize = 16;

/// Where a service listens on its node's host.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Local UDP port of the service on its node's host; 0 = none.
    #[serde(default)]
    pub port: u16,
    /// NexStream stream id the service listens on.
    #[serde(default)]
    pub stream: u32,
}

/// Current load of a service.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Requests waiting.
    #[serde(default)]
    pub queue_depth: u32,
    /// Busy share of the service's capacity, 0..=100.
    #[serde(default)]
    #[schema(maximum = 100)]
    pub utilization_pct: u8,
}

/// References to trust material (carried opaquely in the SAD; the registry verifies them against
/// the node's trust context before it accepts or advertises the service).
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[serde(deny_unknown_fields)]
pub struct TrustRefs {
    /// Serial of the service's Model Identity Certificate, if it has one.
    #[serde(default)]
    pub mic_serial: Option<u64>,
    /// Attestation references (at most [`ATTESTATIONS_MAX`], each printable ASCII).
    #[serde(default)]
    #[schema(schema_with = attestations_schema)]
    pub attestations: Vec<String>,
}

fn ttl_default() -> u32 {
    TTL_S_DEFAULT
}

/// A Semantic Address Descriptor: what one service on one node can do, how well, and where.
///
/// Build it from JSON with [`Sad::from_json`] (parse + validate) or in code and call
/// [`Sad::validate`]; [`Sad::encode`] / [`Sad::decode`] are its binary form.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[serde(deny_unknown_fields)]
pub struct Sad {
    /// Service id, unique per node: 1..=64 bytes of `[a-z0-9._-]`.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    pub id: String,
    /// Where the service listens.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Task tags (`llm.chat`, `embedding`, ...): 1..=8, each lower-case dotted, at most 32 bytes.
    #[schema(schema_with = tasks_schema)]
    pub tasks: Vec<String>,
    /// Model family (`llama-3`), `[a-z0-9._-]`, may be empty.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{0,32}$")]
    pub model_family: String,
    /// Hash of the model architecture; 64 hex digits in JSON.
    #[serde(default, with = "hex32")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{64}$")]
    pub arch_hash: Option<[u8; 32]>,
    /// Context window in tokens (0 = unknown).
    #[serde(default)]
    pub context_window: u32,
    /// Input/output modalities (`text`, `image`, `audio`, ...).
    #[serde(default)]
    #[schema(schema_with = modalities_schema)]
    pub modalities: Vec<String>,
    /// Output tokens per second the service can sustain (0 = unknown).
    #[serde(default)]
    pub max_output_tps: u32,
    /// Price in micro-units per 1000 tokens (0 = free or unknown).
    #[serde(default)]
    pub price_micros_per_1k: u64,
    /// Median latency in milliseconds (0 = unknown).
    #[serde(default)]
    pub latency_ms_p50: u32,
    /// 99th-percentile latency in milliseconds (0 = unknown); at least `latency_ms_p50` when both
    /// are set.
    #[serde(default)]
    pub latency_ms_p99: u32,
    /// Current load.
    #[serde(default)]
    pub load: Load,
    /// Region (`eu-west-1`), `[a-z0-9._-]`, may be empty.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{0,32}$")]
    pub region: String,
    /// Zone within the region, `[a-z0-9._-]`, may be empty.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{0,32}$")]
    pub zone: String,
    /// Trust references.
    #[serde(default)]
    pub trust: TrustRefs,
    /// Lease in seconds, [`TTL_S_MIN`]..=[`TTL_S_MAX`], default [`TTL_S_DEFAULT`].
    #[serde(default = "ttl_default")]
    #[schema(minimum = 5, maximum = 86_400)]
    pub ttl_s: u32,
    /// Advert version, set by the node when it publishes (a caller may pass a minimum).
    #[serde(default)]
    pub version: u64,
}

/// A SAD (or a load update) broke a rule: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SadError {
    /// The field at fault (a JSON path such as `tasks[2]` or `load.utilization_pct`; `sad` when
    /// the document as a whole is at fault).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl SadError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SadError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Binary SAD input was refused. Nothing changed anywhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header, or the header's length disagrees with the input.
    #[error("truncated or inconsistent length: {0}")]
    Length(String),
    /// Larger than [`SAD_BYTES_MAX`].
    #[error("encoded SAD is {0} bytes, more than {SAD_BYTES_MAX}")]
    TooLarge(usize),
    /// The first four bytes are not [`SAD_MAGIC`].
    #[error("not an encoded SAD (bad magic)")]
    Magic,
    /// A format version this build does not read (newer, or zero).
    #[error("SAD format version {found} is not supported (this build reads {SAD_FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The version in the header.
        found: u16,
    },
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes must be zero")]
    Reserved,
    /// [`access`] was given a buffer whose archive is not aligned to [`SAD_ARCHIVE_ALIGN`].
    #[error(
        "archive is not {SAD_ARCHIVE_ALIGN}-byte aligned; use Sad::decode or an aligned buffer"
    )]
    Misaligned,
    /// rkyv's bytecheck refused the archive.
    #[error("archive failed validation: {0}")]
    Archive(String),
    /// The archive decoded but the SAD breaks a limit.
    #[error("invalid SAD: {0}")]
    Invalid(SadError),
}

/// A partial load report for a published SAD (`PATCH`-style: absent fields stay as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadUpdate {
    /// New queue depth.
    #[serde(default)]
    pub queue_depth: Option<u32>,
    /// New utilisation, 0..=100.
    #[serde(default)]
    #[schema(maximum = 100)]
    pub utilization_pct: Option<u8>,
    /// New median latency, ms.
    #[serde(default)]
    pub latency_ms_p50: Option<u32>,
    /// New p99 latency, ms.
    #[serde(default)]
    pub latency_ms_p99: Option<u32>,
}

/// The OpenAPI schema of a list of distinct strings, each matching `pattern`, `min..=max` of
/// them, each 1..=`item_bytes_max` long (the patterns allow only ASCII, so characters are
/// bytes): the same rules [`check_list`] and the item check enforce.
pub(crate) fn string_list_schema(
    description: &str,
    min: usize,
    max: usize,
    pattern: &str,
    item_bytes_max: usize,
) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(description))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .min_length(Some(1))
                .max_length(Some(item_bytes_max)),
        )
        .min_items(Some(min))
        .max_items(Some(max))
        .unique_items(true)
        .build()
}

/// Pattern of a task tag ([`check_task`]): dot-separated segments of `[a-z0-9_-]` (at most
/// [`TASK_BYTES_MAX`] bytes in all).
pub const TASK_PATTERN: &str = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$";

fn tasks_schema() -> utoipa::openapi::schema::Array {
    string_list_schema(
        "Task tags (`llm.chat`, `embedding`, ...): 1..=8, each lower-case dotted, at most 32 bytes.",
        1,
        TASKS_MAX,
        TASK_PATTERN,
        TASK_BYTES_MAX,
    )
}

/// Pattern of a modality ([`check_modality`]).
pub const MODALITY_PATTERN: &str = "^[a-z0-9-]+$";

pub(crate) fn modalities_schema() -> utoipa::openapi::schema::Array {
    string_list_schema(
        "Modalities (`text`, `image`, `audio`, ...): at most 6, each 1..=16 bytes of `[a-z0-9-]`.",
        0,
        MODALITIES_MAX,
        MODALITY_PATTERN,
        MODALITY_BYTES_MAX,
    )
}

fn attestations_schema() -> utoipa::openapi::schema::Array {
    string_list_schema(
        "Attestation references: at most 3, each 1..=48 bytes of printable ASCII without spaces.",
        0,
        ATTESTATIONS_MAX,
        "^[!-~]+$",
        ATTESTATION_BYTES_MAX,
    )
}

pub(crate) fn is_id_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
}

/// `[a-z0-9._-]`, at most `max` bytes, non-empty when `required`.
pub(crate) fn check_token(
    field: &str,
    s: &str,
    max: usize,
    required: bool,
) -> Result<(), SadError> {
    if required && s.is_empty() {
        return Err(SadError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(SadError::new(
            field,
            format!("{} bytes, at most {max} allowed", s.len()),
        ));
    }
    if !s.bytes().all(is_id_char) {
        return Err(SadError::new(field, "may only contain [a-z0-9._-]"));
    }
    Ok(())
}

/// A task tag: 1..=32 bytes, dot-separated non-empty segments of `[a-z0-9_-]`.
pub(crate) fn check_task(field: &str, s: &str) -> Result<(), SadError> {
    if s.is_empty() || s.len() > TASK_BYTES_MAX {
        return Err(SadError::new(
            field,
            format!(
                "task tag must be 1..={TASK_BYTES_MAX} bytes, got {}",
                s.len()
            ),
        ));
    }
    let segments_ok = s.split('.').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
    });
    if !segments_ok {
        return Err(SadError::new(
            field,
            format!("task tag {s:?} must be lower-case dotted ([a-z0-9_-] segments joined by '.')"),
        ));
    }
    Ok(())
}

/// A modality: 1..=16 bytes of `[a-z0-9-]`.
pub(crate) fn check_modality(field: &str, s: &str) -> Result<(), SadError> {
    let ok = !s.is_empty()
        && s.len() <= MODALITY_BYTES_MAX
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !ok {
        return Err(SadError::new(
            field,
            format!("modality {s:?} must be 1..={MODALITY_BYTES_MAX} bytes of [a-z0-9-]"),
        ));
    }
    Ok(())
}

/// A list of distinct items, at most `max`, each checked by `check`.
pub(crate) fn check_list(
    field: &str,
    items: &[String],
    max: usize,
    check: impl Fn(&str, &str) -> Result<(), SadError>,
) -> Result<(), SadError> {
    if items.len() > max {
        return Err(SadError::new(
            field,
            format!("{} entries, at most {max} allowed", items.len()),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        check(&format!("{field}[{i}]"), item)?;
        if items[..i].contains(item) {
            return Err(SadError::new(
                format!("{field}[{i}]"),
                format!("duplicate {item:?}"),
            ));
        }
    }
    Ok(())
}

fn check_latency(p50: u32, p99: u32) -> Result<(), SadError> {
    if p50 != 0 && p99 != 0 && p99 < p50 {
        return Err(SadError::new(
            "latency_ms_p99",
            format!("{p99} ms is below latency_ms_p50 {p50} ms"),
        ));
    }
    Ok(())
}

impl Sad {
    /// A minimal valid SAD: one task, every optional field at its default.
    pub fn new(id: impl Into<String>, task: impl Into<String>) -> Sad {
        Sad {
            id: id.into(),
            endpoint: Endpoint::default(),
            tasks: vec![task.into()],
            model_family: String::new(),
            arch_hash: None,
            context_window: 0,
            modalities: Vec::new(),
            max_output_tps: 0,
            price_micros_per_1k: 0,
            latency_ms_p50: 0,
            latency_ms_p99: 0,
            load: Load::default(),
            region: String::new(),
            zone: String::new(),
            trust: TrustRefs::default(),
            ttl_s: TTL_S_DEFAULT,
            version: 0,
        }
    }

    /// Parses a SAD from JSON and validates it. Serde errors name the field where serde knows
    /// it (`tasks[1]`, `load.utilization_pct`, an unknown field's name).
    pub fn from_json(bytes: &[u8]) -> Result<Sad, SadError> {
        if bytes.len() > SAD_JSON_BYTES_MAX {
            return Err(SadError::new(
                "sad",
                format!(
                    "document is {} bytes, at most {SAD_JSON_BYTES_MAX}",
                    bytes.len()
                ),
            ));
        }
        let sad: Sad = parse_json(bytes).map_err(|(field, reason)| SadError { field, reason })?;
        sad.validate()?;
        Ok(sad)
    }

    /// Checks every limit in `docs/sad.md`; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), SadError> {
        check_token("id", &self.id, SERVICE_ID_BYTES_MAX, true)?;
        if self.tasks.is_empty() {
            return Err(SadError::new("tasks", "at least one task tag is required"));
        }
        check_list("tasks", &self.tasks, TASKS_MAX, check_task)?;
        check_token(
            "model_family",
            &self.model_family,
            MODEL_FAMILY_BYTES_MAX,
            false,
        )?;
        check_list(
            "modalities",
            &self.modalities,
            MODALITIES_MAX,
            check_modality,
        )?;
        check_latency(self.latency_ms_p50, self.latency_ms_p99)?;
        if self.load.utilization_pct > UTILIZATION_PCT_MAX {
            return Err(SadError::new(
                "load.utilization_pct",
                format!(
                    "{} is above {UTILIZATION_PCT_MAX}",
                    self.load.utilization_pct
                ),
            ));
        }
        check_token("region", &self.region, REGION_BYTES_MAX, false)?;
        check_token("zone", &self.zone, ZONE_BYTES_MAX, false)?;
        check_list(
            "trust.attestations",
            &self.trust.attestations,
            ATTESTATIONS_MAX,
            |field, s| {
                let ok = !s.is_empty()
                    && s.len() <= ATTESTATION_BYTES_MAX
                    && s.bytes().all(|c| c.is_ascii_graphic());
                if ok {
                    Ok(())
                } else {
                    Err(SadError::new(
                        field,
                        format!(
                            "must be 1..={ATTESTATION_BYTES_MAX} bytes of printable ASCII without spaces"
                        ),
                    ))
                }
            },
        )?;
        if !(TTL_S_MIN..=TTL_S_MAX).contains(&self.ttl_s) {
            return Err(SadError::new(
                "ttl_s",
                format!("{} is outside {TTL_S_MIN}..={TTL_S_MAX}", self.ttl_s),
            ));
        }
        Ok(())
    }

    /// The binary form: [`SAD_HEADER_LEN`] header bytes, then the rkyv archive. Validates first;
    /// the result is at most [`SAD_BYTES_MAX`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, SadError> {
        Ok(self.encode_aligned()?.to_vec())
    }

    pub(crate) fn encode_aligned(&self) -> Result<AlignedVec<SAD_ARCHIVE_ALIGN>, SadError> {
        self.validate()?;
        let mut writer = AlignedVec::<SAD_ARCHIVE_ALIGN>::with_capacity(SAD_BYTES_MAX);
        writer.extend_from_slice(&[0u8; SAD_HEADER_LEN]);
        let mut bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, writer)
            .map_err(|e| SadError::new("sad", format!("serialization failed: {e}")))?;
        if bytes.len() > SAD_BYTES_MAX {
            return Err(SadError::new(
                "sad",
                format!("encodes to {} bytes, at most {SAD_BYTES_MAX}", bytes.len()),
            ));
        }
        let archive_len = (bytes.len() - SAD_HEADER_LEN) as u32;
        bytes[0..4].copy_from_slice(&SAD_MAGIC);
        bytes[4..6].copy_from_slice(&SAD_FORMAT_VERSION.to_le_bytes());
        bytes[8..12].copy_from_slice(&archive_len.to_le_bytes());
        Ok(bytes)
    }

    /// Reads the binary form: header, rkyv bytecheck, then [`Sad::validate`]. Any alignment of
    /// `bytes` is fine (the archive is copied into an aligned buffer).
    pub fn decode(bytes: &[u8]) -> Result<Sad, DecodeError> {
        check_header(bytes)?;
        let mut aligned = AlignedVec::<SAD_ARCHIVE_ALIGN>::with_capacity(bytes.len());
        aligned.extend_from_slice(&bytes[SAD_HEADER_LEN..]);
        let sad = rkyv::from_bytes::<Sad, rkyv::rancor::Error>(&aligned)
            .map_err(|e| DecodeError::Archive(e.to_string()))?;
        sad.validate().map_err(DecodeError::Invalid)?;
        Ok(sad)
    }

    /// Applies a partial load report; on error nothing changed.
    pub fn apply_load(&mut self, update: &LoadUpdate) -> Result<(), SadError> {
        let utilization = update.utilization_pct.unwrap_or(self.load.utilization_pct);
        if utilization > UTILIZATION_PCT_MAX {
            return Err(SadError::new(
                "utilization_pct",
                format!("{utilization} is above {UTILIZATION_PCT_MAX}"),
            ));
        }
        let p50 = update.latency_ms_p50.unwrap_or(self.latency_ms_p50);
        let p99 = update.latency_ms_p99.unwrap_or(self.latency_ms_p99);
        check_latency(p50, p99)?;
        self.load.utilization_pct = utilization;
        self.load.queue_depth = update.queue_depth.unwrap_or(self.load.queue_depth);
        self.latency_ms_p50 = p50;
        self.latency_ms_p99 = p99;
        Ok(())
    }
}

/// Parses JSON into `T`, mapping serde's error to `(field, reason)`: the path serde reached,
/// or the offending field's name for unknown/missing fields.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let named = backticked(&message);
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name,
            (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
            (Some(name), p) => format!("{p}.{name}"),
            (_, ".") => "json".to_string(),
            (_, p) => p.to_string(),
        };
        (field, message)
    })?;
    de.end().map_err(|e| ("json".to_string(), e.to_string()))?;
    Ok(value)
}

/// The first `` `name` `` in a serde message (`unknown field `foo`, expected ...`).
fn backticked(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field") || message.starts_with("missing field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn check_header(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > SAD_BYTES_MAX {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    if bytes.len() < SAD_HEADER_LEN {
        return Err(DecodeError::Length(format!(
            "{} bytes, the header alone is {SAD_HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[0..4] != SAD_MAGIC {
        return Err(DecodeError::Magic);
    }
    let format = u16::from_le_bytes([bytes[4], bytes[5]]);
    if format != SAD_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedFormat { found: format });
    }
    if bytes[6..8] != [0, 0] || bytes[12..16] != [0, 0, 0, 0] {
        return Err(DecodeError::Reserved);
    }
    let archive_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if archive_len != bytes.len() - SAD_HEADER_LEN {
        return Err(DecodeError::Length(format!(
            "header says {archive_len} archive bytes, {} follow",
            bytes.len() - SAD_HEADER_LEN
        )));
    }
    Ok(())
}

/// Zero-copy read of an encoded SAD: checks the header and runs rkyv's bytecheck, without
/// copying or deserializing. `bytes` must start at a [`SAD_ARCHIVE_ALIGN`]-aligned address
/// (e.g. an `rkyv::util::AlignedVec`), else [`DecodeError::Misaligned`]. The SAD's own limits
/// are not checked here (use [`Sad::decode`] for that); the archive is memory-safe to read.
pub fn access(bytes: &[u8]) -> Result<&ArchivedSad, DecodeError> {
    check_header(bytes)?;
    let archive = &bytes[SAD_HEADER_LEN..];
    if !(archive.as_ptr() as usize).is_multiple_of(SAD_ARCHIVE_ALIGN) {
        return Err(DecodeError::Misaligned);
    }
    rkyv::access::<ArchivedSad, rkyv::rancor::Error>(archive)
        .map_err(|e| DecodeError::Archive(e.to_string()))
}

/// `Option<[u8; 32]>` as `null` or 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(bytes) => {
                let mut out = String::with_capacity(64);
                for b in bytes {
                    out.push_str(&format!("{b:02x}"));
                }
                s.serialize_str(&out)
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        let Some(text) = text else { return Ok(None) };
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom(format!(
                "expected 64 hex digits, got {} characters",
                bytes.len()
            )));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "not a hex digit at position {}",
                        if hi.is_none() { 2 * i } else { 2 * i + 1 }
                    )));
                }
            }
        }
        Ok(Some(out))
    }

    fn hex_digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
}
