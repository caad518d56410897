//! NexAPI messages and their binary encoding.
//!
//! Every NexAPI message travels as one NexStream message (the transport delimits it), and
//! starts with a version byte and a kind byte. Integers are big-endian; strings are a `u16`
//! length then UTF-8; blobs are a `u32` length then bytes. Tensor data is the raw element bytes
//! in little-endian order (as safetensors stores them), starting at an offset within the
//! message that is a multiple of 64. `docs/protocols/nexapi.md` is the specification; every
//! decoder here checks each length before reading, refuses unknown codes and trailing bytes, and
//! never allocates more than the input's length. The fuzz target `fuzz/fuzz_targets/wire.rs`
//! drives [`Message::decode`].
//!
//! ```text
//! message        version u8 (1) ‖ kind u8 ‖ body
//! HELLO     0x01 version_min u8 ‖ version_max u8 ‖ agent str
//! HELLO_ACK 0x02 version u8 ‖ service str ‖ n u16 ‖ n × model
//!   model        name str ‖ platform str ‖ ni u8 ‖ ni × spec ‖ no u8 ‖ no × spec
//!   spec         name str ‖ dtype u8 ‖ rank u8 ‖ rank × dim i64 (-1: any)
//! REQUEST   0x03 call u64 ‖ op u8 ‖ flags u8 ‖ deadline_ms u64 ‖ [idempotency 16B]
//!                ‖ [resume_from u64] ‖ model str ‖ payload blob
//! RESPONSE  0x04 call u64 ‖ payload blob
//! TOKEN     0x05 seq u64 ‖ token_id u32 ‖ text str
//! END       0x06 tokens u64 ‖ finish u8 ‖ prompt_tokens u32
//! TENSOR    0x07 transfer u64 ‖ name str ‖ dtype u8 ‖ rank u8 ‖ rank × dim u64 ‖ rank × stride u64
//!                ‖ kind u8 ‖ [layer u32 ‖ block u32] ‖ data_len u64 ‖ zero padding to a
//!                multiple of 64 ‖ data
//! RESOLVE   0x08 call u64 ‖ intent
//! ANSWER    0x09 call u64 ‖ routing_key u128 ‖ considered u32 ‖ n u8 ‖ n × candidate
//!   candidate    service str ‖ node 32B ‖ addr ‖ port u16 ‖ stream u32 ‖ score f64
//!                ‖ has_key u8 ‖ [key 32B]
//!   addr         family u8 (0 none, 4, 6) ‖ 4B or 16B
//! ERROR     0x7F call u64 ‖ code u16 ‖ message str
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use nexus_registry::{Attested, Intent, Preferences};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Tensor data starts at a multiple of this many bytes from the start of its message.
pub const TENSOR_ALIGN: usize = 64;
/// Most dimensions of a tensor.
pub const RANK_MAX: usize = 8;
/// Most models one service describes in its `HELLO_ACK`.
pub const MODELS_MAX: usize = 64;
/// Most tensor specs per model and direction.
pub const SPECS_MAX: usize = 32;
/// Most modalities or publishers in an encoded intent.
pub const INTENT_LIST_MAX: usize = 16;
/// Default largest tensor, bytes ([`Limits::tensor_bytes_max`]).
pub const TENSOR_BYTES_MAX: u64 = 60 << 20;
/// Default largest request or response payload ([`Limits::payload_bytes_max`]).
pub const PAYLOAD_BYTES_MAX: u32 = 16 << 20;

/// Decode limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest tensor data.
    pub tensor_bytes_max: u64,
    /// Largest request or response payload.
    pub payload_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tensor_bytes_max: TENSOR_BYTES_MAX,
            payload_bytes_max: PAYLOAD_BYTES_MAX,
        }
    }
}

/// Input could not be decoded. Nothing was consumed and nothing was allocated beyond it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the layout needs.
    #[error("truncated: {field} needs {needed} more bytes, {got} present")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        got: usize,
    },
    /// Bytes after the end of the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A version this build does not speak.
    #[error("unsupported NexAPI version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown message kind 0x{0:02x}")]
    Kind(u8),
    /// An unknown code in a field (op, flags, finish reason, block kind, address family, error
    /// code).
    #[error("{field}: unknown code {code}")]
    Code {
        /// The field.
        field: &'static str,
        /// The code found.
        code: u64,
    },
    /// A dtype code that is not one of [`DType`]'s.
    #[error("unknown dtype code {0}")]
    DType(u8),
    /// A string is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A count or length above its limit.
    #[error("{field}: {len} exceeds the limit {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The value found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A tensor whose shape, strides, dtype and byte length disagree.
    #[error("tensor: {0}")]
    Shape(String),
    /// Padding before tensor data is not zero.
    #[error("tensor padding is not zero")]
    Padding,
    /// A floating-point field is not finite.
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
    /// The encoded intent breaks an intent rule.
    #[error("intent: {0}")]
    Intent(String),
    /// An id that must not be all zeros is.
    #[error("{0} is all zeros")]
    Zero(&'static str),
}

/// Element types, after KServe's Open Inference Protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// One byte, 0 or 1.
    Bool = 1,
    /// Unsigned 8-bit.
    U8 = 2,
    /// Unsigned 16-bit.
    U16 = 3,
    /// Unsigned 32-bit.
    U32 = 4,
    /// Unsigned 64-bit.
    U64 = 5,
    /// Signed 8-bit.
    I8 = 6,
    /// Signed 16-bit.
    I16 = 7,
    /// Signed 32-bit.
    I32 = 8,
    /// Signed 64-bit.
    I64 = 9,
    /// IEEE 754 half.
    F16 = 10,
    /// bfloat16.
    BF16 = 11,
    /// IEEE 754 single.
    F32 = 12,
    /// IEEE 754 double.
    F64 = 13,
    /// Variable-length byte strings (in model metadata only; a raw tensor has a fixed element
    /// size).
    Bytes = 14,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 14] = [
        DType::Bool,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::Bytes,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The dtype of a wire code.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// Bytes per element; `None` for [`DType::Bytes`].
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
            DType::Bytes => return None,
        })
    }

    /// The KServe name (`FP32`, `INT64`, …).
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::F16 => "FP16",
            DType::BF16 => "BF16",
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::Bytes => "BYTES",
        }
    }

    /// The safetensors name (`F32`, `I64`, …); `None` for [`DType::Bytes`].
    pub fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::U16 => "U16",
            DType::U32 => "U32",
            DType::U64 => "U64",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::Bytes => return None,
        })
    }

    /// The dtype of a safetensors name.
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.safetensors_name() == Some(name))
    }
}

/// A model input or output as a service describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `-1` for a dimension of any size.
    pub shape: Vec<i64>,
}

/// A model a service serves (KServe model metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMeta {
    /// Model name, as requests name it.
    pub name: String,
    /// Framework or runtime (`onnx`, `vllm`, …; free text).
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorSpec>,
    /// Outputs.
    pub outputs: Vec<TensorSpec>,
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// One response.
    Infer,
    /// A stream of tokens, then an end.
    Stream,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Infer => 1,
            Op::Stream => 2,
        }
    }
}

/// A unary or streaming call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Caller-chosen id, echoed by an `ERROR` about this call.
    pub call: u64,
    /// Unary or streaming.
    pub op: Op,
    /// Absolute deadline, Unix milliseconds; 0 = none. Carried unchanged across hops.
    pub deadline_ms: u64,
    /// Requests with the same key are the same request (retries, resumes, hedges).
    pub idempotency: Option<[u8; 16]>,
    /// For a resumed stream: the first token sequence number wanted (tokens before it were
    /// received).
    pub resume_from: Option<u64>,
    /// The caller's trace context (W3C Trace Context in binary), so the service's spans join
    /// the caller's trace.
    pub trace: Option<TraceContext>,
    /// The model to run.
    pub model: String,
    /// The application's request bytes (a prompt, an encoded tensor, …).
    pub payload: Bytes,
}

/// A W3C Trace Context `traceparent` (version 00) in binary: the trace a request belongs to
/// and the caller's span, so spans on the service's node continue the caller's trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id; never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span id (the parent of the service's spans); never all zeros.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Bytes on the wire.
    pub const LEN: usize = 25;
}

/// A unary call's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The call.
    pub call: u64,
    /// The application's answer bytes.
    pub payload: Bytes,
}

/// One streamed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// 0-based sequence number within the stream.
    pub seq: u64,
    /// The tokenizer's id (0 if the service does not expose ids).
    pub id: u32,
    /// Its text.
    pub text: String,
}

/// Why a token stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finish {
    /// The model stopped.
    Stop,
    /// The length limit was reached.
    Length,
}

/// The last message of a token stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    /// Tokens in the whole stream (the next sequence number).
    pub tokens: u64,
    /// Why it ended.
    pub finish: Finish,
    /// Prompt tokens the model read.
    pub prompt_tokens: u32,
}

/// A KV-cache block's place in its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvBlock {
    /// Transformer layer.
    pub layer: u32,
    /// Block index within the layer.
    pub block: u32,
}

/// A tensor's header: what the raw bytes after it mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorHeader {
    /// Caller-chosen id of the transfer.
    pub transfer: u64,
    /// Name (a safetensors key, a KV-cache name, …).
    pub name: String,
    /// Element type (never [`DType::Bytes`]).
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Strides in elements, one per dimension.
    pub strides: Vec<u64>,
    /// Set for a KV-cache block.
    pub kv: Option<KvBlock>,
}

impl TensorHeader {
    /// A header with C-contiguous (row-major) strides.
    pub fn contiguous(transfer: u64, name: impl Into<String>, dtype: DType, shape: &[u64]) -> Self {
        TensorHeader {
            transfer,
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            kv: None,
        }
    }

    /// Elements, or `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Checks rank, dtype, strides and that the data is exactly `data_len` bytes, under
    /// `limits`.
    pub fn check(&self, data_len: u64, limits: &Limits) -> Result<(), WireError> {
        if self.shape.len() > RANK_MAX {
            return Err(WireError::TooLarge {
                field: "tensor.rank",
                len: self.shape.len() as u64,
                max: RANK_MAX as u64,
            });
        }
        if self.strides.len() != self.shape.len() {
            return Err(WireError::Shape(format!(
                "{} strides for {} dimensions",
                self.strides.len(),
                self.shape.len()
            )));
        }
        let size = self.dtype.size().ok_or_else(|| {
            WireError::Shape(
                "BYTES tensors have no fixed element size; send them as a payload".into(),
            )
        })? as u64;
        if data_len > limits.tensor_bytes_max {
            return Err(WireError::TooLarge {
                field: "tensor.data_len",
                len: data_len,
                max: limits.tensor_bytes_max,
            });
        }
        let elements = self
            .elements()
            .ok_or_else(|| WireError::Shape("element count overflows".into()))?;
        let expected = elements
            .checked_mul(size)
            .ok_or_else(|| WireError::Shape("byte length overflows".into()))?;
        if expected != data_len {
            return Err(WireError::Shape(format!(
                "shape {:?} of {} is {expected} bytes, the data is {data_len}",
                self.shape,
                self.dtype.kserve_name()
            )));
        }
        if elements > 0 {
            // Every element a stride can reach must lie inside the data.
            let mut last = 0u64;
            for (&d, &s) in self.shape.iter().zip(&self.strides) {
                let reach = (d - 1)
                    .checked_mul(s)
                    .and_then(|r| last.checked_add(r))
                    .ok_or_else(|| WireError::Shape("strides overflow".into()))?;
                last = reach;
            }
            if last >= elements {
                return Err(WireError::Shape(format!(
                    "strides {:?} reach element {last} of {elements}",
                    self.strides
                )));
            }
        }
        Ok(())
    }
}

/// Row-major strides of `shape`, in elements.
pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![0u64; shape.len()];
    let mut step = 1u64;
    for (i, &d) in shape.iter().enumerate().rev() {
        strides[i] = step;
        step = step.saturating_mul(d.max(1));
    }
    strides
}

/// A tensor: header and raw bytes. Decoding slices the data out of the received message
/// without copying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// What the bytes mean.
    pub header: TensorHeader,
    /// The elements, little-endian.
    pub data: Bytes,
}

/// One ranked endpoint of a binary resolve.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Service id.
    pub service: String,
    /// The node the service runs on.
    pub node: [u8; 32],
    /// The host address of that node, if the resolving node knows it.
    pub host: Option<IpAddr>,
    /// The service's NexStream UDP port on that host (0: none).
    pub port: u16,
    /// Stream id within the service.
    pub stream: u32,
    /// Score, higher is better.
    pub score: f64,
    /// The key the service's MIC certifies: the key its NexStream endpoint proves.
    pub key: Option<[u8; 32]>,
}

/// A resolve answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolveAnswer {
    /// The call.
    pub call: u64,
    /// The intent class's routing key.
    pub routing_key: u128,
    /// Adverts examined.
    pub considered: u32,
    /// Best first.
    pub candidates: Vec<Candidate>,
}

/// Typed NexAPI error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The message did not decode or broke a rule.
    BadRequest,
    /// The service does not serve that model.
    UnknownModel,
    /// The absolute deadline passed.
    DeadlineExceeded,
    /// The caller cancelled.
    Cancelled,
    /// Too large (payload, tensor).
    TooLarge,
    /// A dtype this build does not know, or `BYTES` in a raw tensor.
    UnknownDtype,
    /// Shape, strides and byte length disagree.
    ShapeMismatch,
    /// No endpoint could take the call (none resolved, all failed).
    Unavailable,
    /// The handler failed.
    Internal,
    /// No NexAPI version in common.
    UnsupportedVersion,
    /// The service sheds load.
    Overloaded,
    /// A resume asked for tokens the service no longer has and cannot regenerate.
    ResumeUnavailable,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownModel,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Cancelled,
        ErrorCode::TooLarge,
        ErrorCode::UnknownDtype,
        ErrorCode::ShapeMismatch,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Overloaded,
        ErrorCode::ResumeUnavailable,
    ];

    /// The wire code (1-based).
    pub fn code(self) -> u16 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == self)
            .map_or(0, |i| i as u16 + 1)
    }

    /// The code of a wire value.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }

    /// A stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownDtype => "unknown_dtype",
            ErrorCode::ShapeMismatch => "shape_mismatch",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ResumeUnavailable => "resume_unavailable",
        }
    }

    /// Whether a call that failed with this code may be retried on another endpoint.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Overloaded)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An error about a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The call (0 when the failing message carried none).
    pub call: u64,
    /// What kind of failure.
    pub code: ErrorCode,
    /// Details for people.
    pub message: String,
}

impl ApiError {
    /// An error about `call`.
    pub fn new(call: u64, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            call,
            code,
            message: message.into(),
        }
    }
}

impl From<&WireError> for ErrorCode {
    fn from(e: &WireError) -> ErrorCode {
        match e {
            WireError::DType(_) => ErrorCode::UnknownDtype,
            WireError::Shape(s) if s.starts_with("BYTES") => ErrorCode::UnknownDtype,
            WireError::Shape(_) => ErrorCode::ShapeMismatch,
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            WireError::Version(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// The client's first message on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version the client speaks.
    pub version_min: u8,
    /// Highest version the client speaks.
    pub version_max: u8,
    /// Client software, for logs (`nexus-api/0.1.0`).
    pub agent: String,
}

/// The service's answer to a `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloAck {
    /// The version both speak.
    pub version: u8,
    /// The service id.
    pub service: String,
    /// The models it serves.
    pub models: Vec<ModelMeta>,
}

/// One NexAPI message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `HELLO`.
    Hello(Hello),
    /// `HELLO_ACK`.
    HelloAck(HelloAck),
    /// `REQUEST`.
    Request(Request),
    /// `RESPONSE`.
    Response(Response),
    /// `TOKEN`.
    Token(Token),
    /// `END`.
    End(StreamEnd),
    /// `TENSOR`.
    Tensor(Tensor),
    /// `RESOLVE`.
    Resolve {
        /// The call.
        call: u64,
        /// The intent (validated on decode).
        intent: Box<Intent>,
    },
    /// `ANSWER`.
    Answer(ResolveAnswer),
    /// `ERROR`.
    Error(ApiError),
}

const K_HELLO: u8 = 0x01;
const K_HELLO_ACK: u8 = 0x02;
const K_REQUEST: u8 = 0x03;
const K_RESPONSE: u8 = 0x04;
const K_TOKEN: u8 = 0x05;
const K_END: u8 = 0x06;
const K_TENSOR: u8 = 0x07;
const K_RESOLVE: u8 = 0x08;
const K_ANSWER: u8 = 0x09;
const K_ERROR: u8 = 0x7f;

const F_IDEMPOTENCY: u8 = 0x01;
const F_RESUME: u8 = 0x02;
const F_TRACE: u8 = 0x04;

// Intent presence flags.
const I_MIN_CONTEXT: u16 = 1 << 0;
const I_MAX_LATENCY: u16 = 1 << 1;
const I_MAX_P99: u16 = 1 << 2;
const I_MAX_PRICE: u16 = 1 << 3;
const I_REGION: u16 = 1 << 4;
const I_FAMILY: u16 = 1 << 5;
const I_REQUIRE_MIC: u16 = 1 << 6;
const I_ATTESTED: u16 = 1 << 7;
const I_EXPLAIN: u16 = 1 << 8;
const I_KNOWN: u16 = (1 << 9) - 1;

impl Message {
    /// Encodes the message.
    ///
    /// # Panics
    ///
    /// If a string is longer than 65,535 bytes, a list longer than its count field, or a
    /// payload longer than 4 GiB: the SDK checks these before building a message.
    pub fn encode(&self) -> Bytes {
        let mut w = BytesMut::with_capacity(self.encoded_len_hint());
        w.put_u8(VERSION);
        match self {
            Message::Hello(h) => {
                w.put_u8(K_HELLO);
                w.put_u8(h.version_min);
                w.put_u8(h.version_max);
                put_str(&mut w, &h.agent);
            }
            Message::HelloAck(a) => {
                w.put_u8(K_HELLO_ACK);
                w.put_u8(a.version);
                put_str(&mut w, &a.service);
                w.put_u16(count16(a.models.len()));
                for m in &a.models {
                    put_str(&mut w, &m.name);
                    put_str(&mut w, &m.platform);
                    for specs in [&m.inputs, &m.outputs] {
                        w.put_u8(count8(specs.len()));
                        for s in specs {
                            put_str(&mut w, &s.name);
                            w.put_u8(s.dtype.code());
                            w.put_u8(count8(s.shape.len()));
                            for &d in &s.shape {
                                w.put_i64(d);
                            }
                        }
                    }
                }
            }
            Message::Request(r) => {
                w.put_u8(K_REQUEST);
                w.put_u64(r.call);
                w.put_u8(r.op.code());
                let mut flags = 0;
                if r.idempotency.is_some() {
                    flags |= F_IDEMPOTENCY;
                }
                if r.resume_from.is_some() {
                    flags |= F_RESUME;
                }
                if r.trace.is_some() {
                    flags |= F_TRACE;
                }
                w.put_u8(flags);
                w.put_u64(r.deadline_ms);
                if let Some(k) = r.idempotency {
                    w.put_slice(&k);
                }
                if let Some(s) = r.resume_from {
                    w.put_u64(s);
                }
                if let Some(t) = r.trace {
                    w.put_slice(&t.trace_id);
                    w.put_slice(&t.span_id);
                    w.put_u8(t.flags);
                }
                put_str(&mut w, &r.model);
                put_blob(&mut w, &r.payload);
            }
            Message::Response(r) => {
                w.put_u8(K_RESPONSE);
                w.put_u64(r.call);
                put_blob(&mut w, &r.payload);
            }
            Message::Token(t) => {
                w.put_u8(K_TOKEN);
                w.put_u64(t.seq);
                w.put_u32(t.id);
                put_str(&mut w, &t.text);
            }
            Message::End(e) => {
                w.put_u8(K_END);
                w.put_u64(e.tokens);
                w.put_u8(match e.finish {
                    Finish::Stop => 1,
                    Finish::Length => 2,
                });
                w.put_u32(e.prompt_tokens);
            }
            Message::Tensor(t) => {
                put_tensor_head(&mut w, t);
                w.put_slice(&t.data);
            }
            Message::Resolve { call, intent } => {
                w.put_u8(K_RESOLVE);
                w.put_u64(*call);
                put_intent(&mut w, intent);
            }
            Message::Answer(a) => {
                w.put_u8(K_ANSWER);
                w.put_u64(a.call);
                w.put_u128(a.routing_key);
                w.put_u32(a.considered);
                w.put_u8(count8(a.candidates.len()));
                for c in &a.candidates {
                    put_str(&mut w, &c.service);
                    w.put_slice(&c.node);
                    match c.host {
                        None => w.put_u8(0),
                        Some(IpAddr::V4(ip)) => {
                            w.put_u8(4);
                            w.put_slice(&ip.octets());
                        }
                        Some(IpAddr::V6(ip)) => {
                            w.put_u8(6);
                            w.put_slice(&ip.octets());
                        }
                    }
                    w.put_u16(c.port);
                    w.put_u32(c.stream);
                    w.put_f64(c.score);
                    match c.key {
                        None => w.put_u8(0),
                        Some(k) => {
                            w.put_u8(1);
                            w.put_slice(&k);
                        }
                    }
                }
            }
            Message::Error(e) => {
                w.put_u8(K_ERROR);
                w.put_u64(e.call);
                w.put_u16(e.code.code());
                put_str(&mut w, &e.message);
            }
        }
        w.freeze()
    }

    /// The encoding of a `TENSOR` as two parts, head (everything before the data, padding
    /// included) and data: their concatenation is [`Message::encode`]'s, and the data is the
    /// tensor's own buffer, not a copy (a transport that takes several buffers sends it as is).
    ///
    /// # Panics
    ///
    /// As [`Message::encode`].
    pub fn encode_tensor_parts(tensor: &Tensor) -> [Bytes; 2] {
        let mut w = BytesMut::with_capacity(192 + tensor.header.name.len());
        w.put_u8(VERSION);
        put_tensor_head(&mut w, tensor);
        [w.freeze(), tensor.data.clone()]
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            Message::Request(r) => 64 + r.model.len() + r.payload.len(),
            Message::Response(r) => 16 + r.payload.len(),
            Message::Tensor(t) => 192 + t.header.name.len() + t.data.len(),
            _ => 128,
        }
    }

    /// Decodes one message under `limits`. Tensor data and payloads are slices of `input`.
    pub fn decode(input: &Bytes, limits: &Limits) -> Result<Message, WireError> {
        let mut r = Reader { buf: input, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = r.u8("kind")?;
        let message = match kind {
            K_HELLO => Message::Hello(Hello {
                version_min: r.u8("hello.version_min")?,
                version_max: r.u8("hello.version_max")?,
                agent: r.str("hello.agent")?,
            }),
            K_HELLO_ACK => {
                let version = r.u8("hello_ack.version")?;
                let service = r.str("hello_ack.service")?;
                let n = usize::from(r.u16("hello_ack.models")?);
                check_count("hello_ack.models", n, MODELS_MAX)?;
                let mut models = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str("model.name")?;
                    let platform = r.str("model.platform")?;
                    let inputs = r.specs()?;
                    let outputs = r.specs()?;
                    models.push(ModelMeta {
                        name,
                        platform,
                        inputs,
                        outputs,
                    });
                }
                Message::HelloAck(HelloAck {
                    version,
                    service,
                    models,
                })
            }
            K_REQUEST => {
                let call = r.u64("request.call")?;
                let op = match r.u8("request.op")? {
                    1 => Op::Infer,
                    2 => Op::Stream,
                    other => {
                        return Err(WireError::Code {
                            field: "request.op",
                            code: other.into(),
                        });
                    }
                };
                let flags = r.u8("request.flags")?;
                if flags & !(F_IDEMPOTENCY | F_RESUME | F_TRACE) != 0 {
                    return Err(WireError::Code {
                        field: "request.flags",
                        code: flags.into(),
                    });
                }
                let deadline_ms = r.u64("request.deadline_ms")?;
                let idempotency = if flags & F_IDEMPOTENCY != 0 {
                    Some(r.array::<16>("request.idempotency")?)
                } else {
                    None
                };
                let resume_from = if flags & F_RESUME != 0 {
                    Some(r.u64("request.resume_from")?)
                } else {
                    None
                };
                let trace = if flags & F_TRACE != 0 {
                    let trace_id = r.array::<16>("request.trace_id")?;
                    let span_id = r.array::<8>("request.span_id")?;
                    let flags = r.u8("request.trace_flags")?;
                    if trace_id == [0; 16] {
                        return Err(WireError::Zero("request.trace_id"));
                    }
                    if span_id == [0; 8] {
                        return Err(WireError::Zero("request.span_id"));
                    }
                    Some(TraceContext {
                        trace_id,
                        span_id,
                        flags,
                    })
                } else {
                    None
                };
                let model = r.str("request.model")?;
                let payload = r.blob("request.payload", limits.payload_bytes_max)?;
                Message::Request(Request {
                    call,
                    op,
                    deadline_ms,
                    idempotency,
                    resume_from,
                    trace,
                    model,
                    payload,
                })
            }
            K_RESPONSE => Message::Response(Response {
                call: r.u64("response.call")?,
                payload: r.blob("response.payload", limits.payload_bytes_max)?,
            }),
            K_TOKEN => Message::Token(Token {
                seq: r.u64("token.seq")?,
                id: r.u32("token.id")?,
                text: r.str("token.text")?,
            }),
            K_END => {
                let tokens = r.u64("end.tokens")?;
                let finish = match r.u8("end.finish")? {
                    1 => Finish::Stop,
                    2 => Finish::Length,
                    other => {
                        return Err(WireError::Code {
                            field: "end.finish",
                            code: other.into(),
                        });
                    }
                };
                Message::End(StreamEnd {
                    tokens,
                    finish,
                    prompt_tokens: r.u32("end.prompt_tokens")?,
                })
            }
            K_TENSOR => Message::Tensor(r.tensor(limits)?),
            K_RESOLVE => {
                let call = r.u64("resolve.call")?;
                let intent = r.intent()?;
                Message::Resolve {
                    call,
                    intent: Box::new(intent),
                }
            }
            K_ANSWER => {
                let call = r.u64("answer.call")?;
                let routing_key = r.u128("answer.routing_key")?;
                let considered = r.u32("answer.considered")?;
                let n = usize::from(r.u8("answer.candidates")?);
                check_count("answer.candidates", n, nexus_registry::K_MAX as usize)?;
                let mut candidates = Vec::with_capacity(n);
                for _ in 0..n {
                    candidates.push(r.candidate()?);
                }
                Message::Answer(ResolveAnswer {
                    call,
                    routing_key,
                    considered,
                    candidates,
                })
            }
            K_ERROR => {
                let call = r.u64("error.call")?;
                let raw = r.u16("error.code")?;
                let code = ErrorCode::from_code(raw).ok_or(WireError::Code {
                    field: "error.code",
                    code: raw.into(),
                })?;
                Message::Error(ApiError {
                    call,
                    code,
                    message: r.str("error.message")?,
                })
            }
            other => return Err(WireError::Kind(other)),
        };
        if r.pos != input.len() {
            return Err(WireError::Trailing(input.len() - r.pos));
        }
        Ok(message)
    }
}

/// A `TENSOR`'s kind and fields after the version byte, up to its data (padding included).
fn put_tensor_head(w: &mut BytesMut, t: &Tensor) {
    w.put_u8(K_TENSOR);
    let h = &t.header;
    w.put_u64(h.transfer);
    put_str(w, &h.name);
    w.put_u8(h.dtype.code());
    w.put_u8(count8(h.shape.len()));
    for &d in &h.shape {
        w.put_u64(d);
    }
    for &s in &h.strides {
        w.put_u64(s);
    }
    match h.kv {
        None => w.put_u8(0),
        Some(kv) => {
            w.put_u8(1);
            w.put_u32(kv.layer);
            w.put_u32(kv.block);
        }
    }
    w.put_u64(t.data.len() as u64);
    let pad = padding(w.len());
    w.put_bytes(0, pad);
}

fn padding(len: usize) -> usize {
    (TENSOR_ALIGN - len % TENSOR_ALIGN) % TENSOR_ALIGN
}

fn count8(n: usize) -> u8 {
    u8::try_from(n).expect("count fits u8")
}

fn count16(n: usize) -> u16 {
    u16::try_from(n).expect("count fits u16")
}

fn put_str(w: &mut BytesMut, s: &str) {
    w.put_u16(count16(s.len()));
    w.put_slice(s.as_bytes());
}

fn put_blob(w: &mut BytesMut, b: &[u8]) {
    w.put_u32(u32::try_from(b.len()).expect("payload fits u32"));
    w.put_slice(b);
}

fn put_opt_u32(w: &mut BytesMut, v: Option<u32>) {
    if let Some(v) = v {
        w.put_u32(v);
    }
}

fn put_intent(w: &mut BytesMut, i: &Intent) {
    let mut flags = 0u16;
    let mut set = |cond: bool, bit: u16| {
        if cond {
            flags |= bit;
        }
    };
    set(i.min_context.is_some(), I_MIN_CONTEXT);
    set(i.max_latency_ms.is_some(), I_MAX_LATENCY);
    set(i.max_latency_p99_ms.is_some(), I_MAX_P99);
    set(i.max_price_micros_per_1k.is_some(), I_MAX_PRICE);
    set(i.region.is_some(), I_REGION);
    set(i.model_family.is_some(), I_FAMILY);
    set(i.require_mic, I_REQUIRE_MIC);
    set(i.attested.is_some(), I_ATTESTED);
    set(i.explain, I_EXPLAIN);
    put_str(w, &i.task);
    w.put_u16(flags);
    put_opt_u32(w, i.min_context);
    put_opt_u32(w, i.max_latency_ms);
    put_opt_u32(w, i.max_latency_p99_ms);
    if let Some(p) = i.max_price_micros_per_1k {
        w.put_u64(p);
    }
    if let Some(r) = &i.region {
        put_str(w, r);
    }
    if let Some(f) = &i.model_family {
        put_str(w, f);
    }
    if let Some(a) = i.attested {
        w.put_u16(a.min_score);
        w.put_u8(u8::from(a.require_safety));
    }
    for list in [&i.modalities, &i.publishers] {
        w.put_u8(count8(list.len()));
        for s in list {
            put_str(w, s);
        }
    }
    for p in [
        i.prefer.latency,
        i.prefer.load,
        i.prefer.price,
        i.prefer.proximity,
    ] {
        w.put_f64(p);
    }
    w.put_u8(u8::try_from(i.k).unwrap_or(u8::MAX));
}

fn check_count(field: &'static str, n: usize, max: usize) -> Result<(), WireError> {
    if n > max {
        return Err(WireError::TooLarge {
            field,
            len: n as u64,
            max: max as u64,
        });
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], WireError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(WireError::Truncated {
                field,
                needed: n,
                got: left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn u128(&mut self, field: &'static str) -> Result<u128, WireError> {
        Ok(u128::from_be_bytes(self.array(field)?))
    }

    fn f64(&mut self, field: &'static str) -> Result<f64, WireError> {
        let v = f64::from_bits(self.u64(field)?);
        if !v.is_finite() {
            return Err(WireError::NotFinite(field));
        }
        Ok(v)
    }

    fn str(&mut self, field: &'static str) -> Result<String, WireError> {
        let n = usize::from(self.u16(field)?);
        let raw = self.take(field, n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| WireError::Utf8(field))
    }

    fn blob(&mut self, field: &'static str, max: u32) -> Result<Bytes, WireError> {
        let n = self.u32(field)?;
        if n > max {
            return Err(WireError::TooLarge {
                field,
                len: n.into(),
                max: max.into(),
            });
        }
        let start = self.pos;
        self.take(field, n as usize)?;
        Ok(self.buf.slice(start..self.pos))
    }

    fn dtype(&mut self, field: &'static str) -> Result<DType, WireError> {
        let code = self.u8(field)?;
        DType::from_code(code).ok_or(WireError::DType(code))
    }

    fn specs(&mut self) -> Result<Vec<TensorSpec>, WireError> {
        let n = usize::from(self.u8("model.specs")?);
        check_count("model.specs", n, SPECS_MAX)?;
        let mut specs = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("spec.name")?;
            let dtype = self.dtype("spec.dtype")?;
            let rank = usize::from(self.u8("spec.rank")?);
            check_count("spec.rank", rank, RANK_MAX)?;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                let d = self.u64("spec.dim")? as i64;
                if d < -1 {
                    return Err(WireError::Shape(format!("dimension {d} in a spec")));
                }
                shape.push(d);
            }
            specs.push(TensorSpec { name, dtype, shape });
        }
        Ok(specs)
    }

    fn tensor(&mut self, limits: &Limits) -> Result<Tensor, WireError> {
        let transfer = self.u64("tensor.transfer")?;
        let name = self.str("tensor.name")?;
        let dtype = self.dtype("tensor.dtype")?;
        let rank = usize::from(self.u8("tensor.rank")?);
        check_count("tensor.rank", rank, RANK_MAX)?;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(self.u64("tensor.dim")?);
        }
        let mut strides = Vec::with_capacity(rank);
        for _ in 0..rank {
            strides.push(self.u64("tensor.stride")?);
        }
        let kv = match self.u8("tensor.kind")? {
            0 => None,
            1 => Some(KvBlock {
                layer: self.u32("tensor.layer")?,
                block: self.u32("tensor.block")?,
            }),
            other => {
                return Err(WireError::Code {
                    field: "tensor.kind",
                    code: other.into(),
                });
            }
        };
        let data_len = self.u64("tensor.data_len")?;
        let header = TensorHeader {
            transfer,
            name,
            dtype,
            shape,
            strides,
            kv,
        };
        header.check(data_len, limits)?;
        let pad = padding(self.pos);
        if self.take("tensor.padding", pad)?.iter().any(|&b| b != 0) {
            return Err(WireError::Padding);
        }
        let start = self.pos;
        // `check` bounded data_len by the limit, which fits usize on 64-bit targets; a larger
        // value still fails `take` on its own.
        let n = usize::try_from(data_len).map_err(|_| WireError::TooLarge {
            field: "tensor.data_len",
            len: data_len,
            max: limits.tensor_bytes_max,
        })?;
        self.take("tensor.data", n)?;
        Ok(Tensor {
            header,
            data: self.buf.slice(start..self.pos),
        })
    }

    fn intent(&mut self) -> Result<Intent, WireError> {
        let task = self.str("intent.task")?;
        let flags = self.u16("intent.flags")?;
        if flags & !I_KNOWN != 0 {
            return Err(WireError::Code {
                field: "intent.flags",
                code: flags.into(),
            });
        }
        let mut intent = Intent::new(task);
        let has = |bit: u16| flags & bit != 0;
        if has(I_MIN_CONTEXT) {
            intent.min_context = Some(self.u32("intent.min_context")?);
        }
        if has(I_MAX_LATENCY) {
            intent.max_latency_ms = Some(self.u32("intent.max_latency_ms")?);
        }
        if has(I_MAX_P99) {
            intent.max_latency_p99_ms = Some(self.u32("intent.max_latency_p99_ms")?);
        }
        if has(I_MAX_PRICE) {
            intent.max_price_micros_per_1k = Some(self.u64("intent.max_price")?);
        }
        if has(I_REGION) {
            intent.region = Some(self.str("intent.region")?);
        }
        if has(I_FAMILY) {
            intent.model_family = Some(self.str("intent.model_family")?);
        }
        intent.require_mic = has(I_REQUIRE_MIC);
        if has(I_ATTESTED) {
            let min_score = self.u16("intent.attested.min_score")?;
            let require_safety = match self.u8("intent.attested.require_safety")? {
                0 => false,
                1 => true,
                other => {
                    return Err(WireError::Code {
                        field: "intent.attested.require_safety",
                        code: other.into(),
                    });
                }
            };
            intent.attested = Some(Attested {
                min_score,
                require_safety,
            });
        }
        intent.explain = has(I_EXPLAIN);
        for field in ["intent.modalities", "intent.publishers"] {
            let n = usize::from(self.u8(field)?);
            check_count(field, n, INTENT_LIST_MAX)?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(self.str(field)?);
            }
            if field == "intent.modalities" {
                intent.modalities = list;
            } else {
                intent.publishers = list;
            }
        }
        intent.prefer = Preferences {
            latency: self.f64("intent.prefer.latency")?,
            load: self.f64("intent.prefer.load")?,
            price: self.f64("intent.prefer.price")?,
            proximity: self.f64("intent.prefer.proximity")?,
        };
        intent.k = self.u8("intent.k")?.into();
        intent
            .validate()
            .map_err(|e| WireError::Intent(e.to_string()))?;
        Ok(intent)
    }

    fn candidate(&mut self) -> Result<Candidate, WireError> {
        let service = self.str("candidate.service")?;
        let node = self.array::<32>("candidate.node")?;
        let host = match self.u8("candidate.family")? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                self.array::<4>("candidate.host")?,
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(
                self.array::<16>("candidate.host")?,
            ))),
            other => {
                return Err(WireError::Code {
                    field: "candidate.family",
                    code: other.into(),
                });
            }
        };
        let port = self.u16("candidate.port")?;
        let stream = self.u32("candidate.stream")?;
        let score = self.f64("candidate.score")?;
        let key = match self.u8("candidate.has_key")? {
            0 => None,
            1 => Some(self.array::<32>("candidate.key")?),
            other => {
                return Err(WireError::Code {
                    field: "candidate.has_key",
                    code: other.into(),
                });
            }
        };
        Ok(Candidate {
            service,
            node,
            host,
            port,
            stream,
            score,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes, &Limits::default()), Ok(m.clone()));
        // Every strict prefix is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes.slice(..cut), &Limits::default()).is_err(),
                "{m:?} cut at {cut}"
            );
        }
        // A trailing byte is refused.
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            Message::decode(&Bytes::from(longer), &Limits::default()),
            Err(WireError::Trailing(1))
        );
    }

    fn sample_intent() -> Intent {
        let mut i = Intent::new("llm.code");
        i.min_context = Some(128_000);
        i.max_latency_ms = Some(200);
        i.max_price_micros_per_1k = Some(5);
        i.region = Some("eu-west".into());
        i.modalities = vec!["text".into()];
        i.publishers = vec!["acme".into()];
        i.require_mic = true;
        i.attested = Some(Attested {
            min_score: 800,
            require_safety: true,
        });
        i.k = 3;
        i
    }

    #[test]
    fn every_message_round_trips_and_refuses_truncation() {
        round_trip(Message::Hello(Hello {
            version_min: 1,
            version_max: 1,
            agent: "nexus-api/0.1.0".into(),
        }));
        round_trip(Message::HelloAck(HelloAck {
            version: 1,
            service: "llm-a".into(),
            models: vec![ModelMeta {
                name: "coder-7b".into(),
                platform: "vllm".into(),
                inputs: vec![TensorSpec {
                    name: "ids".into(),
                    dtype: DType::I64,
                    shape: vec![-1, 512],
                }],
                outputs: vec![],
            }],
        }));
        round_trip(Message::Request(Request {
            call: 7,
            op: Op::Stream,
            deadline_ms: 1_700_000_000_000,
            idempotency: Some([9; 16]),
            resume_from: Some(42),
            trace: Some(TraceContext {
                trace_id: [0x4b; 16],
                span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
                flags: 1,
            }),
            model: "coder-7b".into(),
            payload: Bytes::from_static(b"fn main() {"),
        }));
        round_trip(Message::Request(Request {
            call: 8,
            op: Op::Infer,
            deadline_ms: 0,
            idempotency: None,
            resume_from: None,
            trace: None,
            model: String::new(),
            payload: Bytes::new(),
        }));
        round_trip(Message::Response(Response {
            call: 8,
            payload: Bytes::from_static(&[1, 2, 3]),
        }));
        round_trip(Message::Token(Token {
            seq: 3,
            id: 1234,
            text: " héllo".into(),
        }));
        round_trip(Message::End(StreamEnd {
            tokens: 200,
            finish: Finish::Length,
            prompt_tokens: 17,
        }));
        let data: Vec<u8> = (0..24u8).collect();
        round_trip(Message::Tensor(Tensor {
            header: TensorHeader {
                kv: Some(KvBlock { layer: 3, block: 9 }),
                ..TensorHeader::contiguous(1, "kv.3", DType::F16, &[2, 3, 2])
            },
            data: Bytes::from(data),
        }));
        round_trip(Message::Resolve {
            call: 5,
            intent: Box::new(sample_intent()),
        });
        round_trip(Message::Resolve {
            call: 6,
            intent: Box::new(Intent::new("embed.text")),
        });
        round_trip(Message::Answer(ResolveAnswer {
            call: 5,
            routing_key: u128::MAX - 3,
            considered: 12,
            candidates: vec![
                Candidate {
                    service: "llm-a".into(),
                    node: [7; 32],
                    host: Some("127.0.0.1".parse().expect("ip")),
                    port: 9000,
                    stream: 0,
                    score: 0.75,
                    key: Some([8; 32]),
                },
                Candidate {
                    service: "llm-b".into(),
                    node: [1; 32],
                    host: Some("::1".parse().expect("ip")),
                    port: 9001,
                    stream: 2,
                    score: 0.5,
                    key: None,
                },
                Candidate {
                    service: "llm-c".into(),
                    node: [2; 32],
                    host: None,
                    port: 0,
                    stream: 0,
                    score: 0.0,
                    key: None,
                },
            ],
        }));
        for code in ErrorCode::ALL {
            round_trip(Message::Error(ApiError::new(9, code, code.name())));
        }
    }

    #[test]
    fn tensor_data_starts_at_a_multiple_of_64() {
        for name_len in 0..70 {
            let t = Message::Tensor(Tensor {
                header: TensorHeader::contiguous(1, "x".repeat(name_len), DType::F32, &[4]),
                data: Bytes::from(vec![1u8; 16]),
            });
            let bytes = t.encode();
            assert_eq!(bytes.len() % TENSOR_ALIGN, 16, "name length {name_len}");
            let Ok(Message::Tensor(back)) = Message::decode(&bytes, &Limits::default()) else {
                panic!("decodes");
            };
            let offset = back.data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(offset % TENSOR_ALIGN, 0);
        }
    }

    #[test]
    fn a_tensor_in_two_parts_is_its_encoding_and_shares_the_data() {
        for name_len in [0, 1, 30, 63, 64, 65] {
            let tensor = Tensor {
                header: TensorHeader::contiguous(7, "n".repeat(name_len), DType::F32, &[2, 3]),
                data: Bytes::from((0u8..24).collect::<Vec<u8>>()),
            };
            let [head, data] = Message::encode_tensor_parts(&tensor);
            assert_eq!(head.len() % TENSOR_ALIGN, 0, "name length {name_len}");
            assert_eq!(
                data.as_ptr(),
                tensor.data.as_ptr(),
                "the data is not copied"
            );
            let whole = Message::Tensor(tensor).encode();
            assert_eq!([&head[..], &data[..]].concat(), &whole[..]);
        }
    }

    fn tensor_bytes(header: TensorHeader, data_len: usize) -> Bytes {
        // The encoder does not check; the decoder must.
        Message::Tensor(Tensor {
            header,
            data: Bytes::from(vec![0u8; data_len]),
        })
        .encode()
    }

    #[test]
    fn bad_tensors_get_typed_errors() {
        let limits = Limits::default();
        // Shape and byte length disagree.
        let e = Message::decode(
            &tensor_bytes(TensorHeader::contiguous(1, "t", DType::F32, &[4]), 15),
            &limits,
        )
        .expect_err("mismatch");
        assert!(matches!(e, WireError::Shape(_)), "{e}");
        assert_eq!(ErrorCode::from(&e), ErrorCode::ShapeMismatch);
        // Unknown dtype code.
        let mut raw = Message::Tensor(Tensor {
            header: TensorHeader::contiguous(1, "t", DType::U8, &[1]),
            data: Bytes::from_static(&[1]),
        })
        .encode()
        .to_vec();
        let dtype_at = 2 + 8 + 2 + 1;
        raw[dtype_at] = 99;
        let e = Message::decode(&Bytes::from(raw.clone()), &limits).expect_err("dtype");
        assert_eq!(e, WireError::DType(99));
        assert_eq!(ErrorCode::from(&e), ErrorCode::UnknownDtype);
        // BYTES has no element size.
        raw[dtype_at] = DType::Bytes.code();
        let e = Message::decode(&Bytes::from(raw), &limits).expect_err("bytes");
        assert_eq!(ErrorCode::from(&e), ErrorCode::UnknownDtype);
        // Oversized.
        let small = Limits {
            tensor_bytes_max: 8,
            ..limits
        };
        let e = Message::decode(
            &tensor_bytes(TensorHeader::contiguous(1, "t", DType::F32, &[4]), 16),
            &small,
        )
        .expect_err("too large");
        assert_eq!(ErrorCode::from(&e), ErrorCode::TooLarge);
        // Strides that reach outside the data.
        let mut h = TensorHeader::contiguous(1, "t", DType::U8, &[2, 2]);
        h.strides = vec![3, 1];
        let e = Message::decode(&tensor_bytes(h, 4), &limits).expect_err("strides");
        assert!(matches!(e, WireError::Shape(_)), "{e}");
        // A shape whose element count overflows.
        let h = TensorHeader {
            shape: vec![u64::MAX, 2],
            strides: vec![2, 1],
            ..TensorHeader::contiguous(1, "t", DType::U8, &[1])
        };
        assert!(matches!(h.check(0, &limits), Err(WireError::Shape(_))));
        // Rank above the limit.
        let h = TensorHeader::contiguous(1, "t", DType::U8, &[1; RANK_MAX + 1]);
        assert!(matches!(
            h.check(1, &limits),
            Err(WireError::TooLarge { .. })
        ));
        // Non-zero padding.
        let mut raw = Message::Tensor(Tensor {
            header: TensorHeader::contiguous(1, "t", DType::U8, &[1]),
            data: Bytes::from_static(&[1]),
        })
        .encode()
        .to_vec();
        let data_at = raw.len() - 1;
        raw[data_at - 1] = 1;
        assert_eq!(
            Message::decode(&Bytes::from(raw), &limits),
            Err(WireError::Padding)
        );
    }

    #[test]
    fn bad_headers_and_codes_are_refused() {
        let limits = Limits::default();
        let d = |b: &[u8]| Message::decode(&Bytes::copy_from_slice(b), &limits);
        assert!(matches!(d(&[]), Err(WireError::Truncated { .. })));
        assert_eq!(d(&[2, 1]), Err(WireError::Version(2)));
        assert_eq!(d(&[1, 0x42]), Err(WireError::Kind(0x42)));
        // Error code 0 and past the last.
        assert!(matches!(
            d(&[1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(WireError::Code { .. })
        ));
        assert!(matches!(
            d(&[1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1, 0, 99, 0, 0]),
            Err(WireError::Code { .. })
        ));
        // Bad UTF-8 in a token.
        let mut raw = vec![1, 0x05];
        raw.extend_from_slice(&0u64.to_be_bytes());
        raw.extend_from_slice(&0u32.to_be_bytes());
        raw.extend_from_slice(&[0, 2, 0xff, 0xfe]);
        assert_eq!(d(&raw), Err(WireError::Utf8("token.text")));
        // A payload above the limit is refused before it is read.
        let mut raw = vec![1, 0x04];
        raw.extend_from_slice(&1u64.to_be_bytes());
        raw.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(d(&raw), Err(WireError::TooLarge { .. })));
        // Unknown request flags and op.
        let m = Message::Request(Request {
            call: 1,
            op: Op::Infer,
            deadline_ms: 0,
            idempotency: None,
            resume_from: None,
            trace: None,
            model: "m".into(),
            payload: Bytes::new(),
        })
        .encode()
        .to_vec();
        let mut bad = m.clone();
        bad[10] = 3;
        assert!(matches!(
            d(&bad),
            Err(WireError::Code {
                field: "request.op",
                ..
            })
        ));
        let mut bad = m;
        bad[11] = 0x80;
        assert!(matches!(
            d(&bad),
            Err(WireError::Code {
                field: "request.flags",
                ..
            })
        ));
    }

    #[test]
    fn a_bad_trace_context_is_refused() {
        let d = |b: &[u8]| Message::decode(&Bytes::copy_from_slice(b), &Limits::default());
        let trace = TraceContext {
            trace_id: [7; 16],
            span_id: [8; 8],
            flags: 1,
        };
        let request = |trace| {
            Message::Request(Request {
                call: 1,
                op: Op::Infer,
                deadline_ms: 0,
                idempotency: None,
                resume_from: None,
                trace: Some(trace),
                model: "m".into(),
                payload: Bytes::new(),
            })
            .encode()
            .to_vec()
        };
        let good = request(trace);
        // version, kind, call 8, op, flags, deadline 8: the trace context starts at byte 20.
        assert_eq!(&good[20..36], &[7; 16]);
        assert!(matches!(
            d(&good[..30]),
            Err(WireError::Truncated {
                field: "request.trace_id",
                ..
            })
        ));
        assert!(matches!(
            d(&good[..40]),
            Err(WireError::Truncated {
                field: "request.span_id",
                ..
            })
        ));
        assert!(matches!(
            d(&good[..44]),
            Err(WireError::Truncated {
                field: "request.trace_flags",
                ..
            })
        ));
        let zero_trace = request(TraceContext {
            trace_id: [0; 16],
            ..trace
        });
        assert!(matches!(
            d(&zero_trace),
            Err(WireError::Zero("request.trace_id"))
        ));
        let zero_span = request(TraceContext {
            span_id: [0; 8],
            ..trace
        });
        assert!(matches!(
            d(&zero_span),
            Err(WireError::Zero("request.span_id"))
        ));
    }

    #[test]
    fn an_encoded_intent_that_breaks_a_rule_is_refused() {
        let mut i = sample_intent();
        i.k = 0;
        let m = Message::Resolve {
            call: 1,
            intent: Box::new(i),
        }
        .encode();
        assert!(matches!(
            Message::decode(&m, &Limits::default()),
            Err(WireError::Intent(_))
        ));
        let mut i = sample_intent();
        i.prefer.latency = f64::NAN;
        let m = Message::Resolve {
            call: 1,
            intent: Box::new(i),
        }
        .encode();
        assert!(matches!(
            Message::decode(&m, &Limits::default()),
            Err(WireError::NotFinite(_))
        ));
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            if let Some(n) = d.safetensors_name() {
                assert_eq!(DType::from_safetensors_name(n), Some(d));
            }
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(15), None);
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
