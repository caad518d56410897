//! Error codes on the wire and errors of the endpoint's API.

use std::fmt;

use nexus_trust_core::verify::TrustReject;

/// NexStream's application error codes: in QUIC `CONNECTION_CLOSE` (application) frames and in
/// `RESET_STREAM` / `STOP_SENDING` frames. Values are part of the protocol
/// (`docs/protocols/nexstream.md` §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// Orderly close, no error.
    NoError,
    /// The peer sent no valid `Hello` before the hello deadline.
    HelloTimeout,
    /// The peer's `Hello` could not be decoded or broke the control-stream rules.
    ProtocolViolation,
    /// The peer presented no credentials and this end requires a MIC.
    MicMissing,
    /// The peer's MIC failed verification (unknown CA key, bad signature, not yet valid,
    /// expired, attestation invalid).
    MicRejected,
    /// The peer's MIC is revoked.
    MicRevoked,
    /// The MIC certifies a different key than the handshake authenticated.
    KeyMismatch,
    /// The session was idle for longer than the idle timeout, or the endpoint is going away.
    GoingAway,
    /// Stream: its deadline passed before it completed.
    Expired,
    /// Stream: the sender or receiver cancelled it.
    Cancelled,
    /// Stream: another copy of a hedged request answered first.
    HedgeLost,
    /// Stream: a message larger than the receiver accepts.
    TooLarge,
    /// Stream: its header could not be decoded.
    BadHeader,
    /// A code this build does not know (kept as received).
    Unknown(u64),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u64(self) -> u64 {
        match self {
            ErrorCode::NoError => 0x0,
            ErrorCode::HelloTimeout => 0x101,
            ErrorCode::ProtocolViolation => 0x102,
            ErrorCode::MicMissing => 0x103,
            ErrorCode::MicRejected => 0x104,
            ErrorCode::MicRevoked => 0x105,
            ErrorCode::KeyMismatch => 0x106,
            ErrorCode::GoingAway => 0x107,
            ErrorCode::Expired => 0x201,
            ErrorCode::Cancelled => 0x202,
            ErrorCode::HedgeLost => 0x203,
            ErrorCode::TooLarge => 0x204,
            ErrorCode::BadHeader => 0x205,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// The code for a wire value.
    pub fn from_u64(v: u64) -> ErrorCode {
        match v {
            0x0 => ErrorCode::NoError,
            0x101 => ErrorCode::HelloTimeout,
            0x102 => ErrorCode::ProtocolViolation,
            0x103 => ErrorCode::MicMissing,
            0x104 => ErrorCode::MicRejected,
            0x105 => ErrorCode::MicRevoked,
            0x106 => ErrorCode::KeyMismatch,
            0x107 => ErrorCode::GoingAway,
            0x201 => ErrorCode::Expired,
            0x202 => ErrorCode::Cancelled,
            0x203 => ErrorCode::HedgeLost,
            0x204 => ErrorCode::TooLarge,
            0x205 => ErrorCode::BadHeader,
            other => ErrorCode::Unknown(other),
        }
    }

    /// A stable lowercase name, for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoError => "no_error",
            ErrorCode::HelloTimeout => "hello_timeout",
            ErrorCode::ProtocolViolation => "protocol_violation",
            ErrorCode::MicMissing => "mic_missing",
            ErrorCode::MicRejected => "mic_rejected",
            ErrorCode::MicRevoked => "mic_revoked",
            ErrorCode::KeyMismatch => "key_mismatch",
            ErrorCode::GoingAway => "going_away",
            ErrorCode::Expired => "expired",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::HedgeLost => "hedge_lost",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadHeader => "bad_header",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    pub(crate) fn varint(self) -> quinn_proto::VarInt {
        // Every defined code is far below 2^62; unknown codes came from a VarInt.
        quinn_proto::VarInt::from_u64(self.to_u64()).unwrap_or(quinn_proto::VarInt::MAX)
    }

    /// The code that refuses a peer for a trust verdict.
    pub fn for_reject(reject: &TrustReject) -> ErrorCode {
        match reject {
            TrustReject::Revoked { .. } => ErrorCode::MicRevoked,
            _ => ErrorCode::MicRejected,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.to_u64())
    }
}

/// Why a session ended, as reported in [`crate::Event::Closed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// This end closed it with `code`; `reason` is the text sent to the peer.
    Local {
        /// The code sent.
        code: ErrorCode,
        /// The text sent.
        reason: String,
    },
    /// The peer closed it with `code`.
    Peer {
        /// The code received.
        code: ErrorCode,
        /// The peer's text.
        reason: String,
    },
    /// The transport failed: handshake refused (TLS alert), idle timeout, protocol error.
    Transport(String),
}

impl CloseReason {
    /// The NexStream code, if the close carried one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CloseReason::Local { code, .. } | CloseReason::Peer { code, .. } => Some(*code),
            CloseReason::Transport(_) => None,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { code, reason } => write!(f, "closed here: {code}: {reason}"),
            CloseReason::Peer { code, reason } => write!(f, "closed by peer: {code}: {reason}"),
            CloseReason::Transport(e) => write!(f, "transport: {e}"),
        }
    }
}

/// [`crate::Endpoint::connect`] failed. Nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint holds `sessions_max` sessions already.
    #[error("session limit reached ({max})")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// A session to this peer exists already; use it.
    #[error("a session to this peer exists already")]
    Exists,
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// quinn refused the connection attempt (bad address, connection ids exhausted).
    #[error("connect refused: {0}")]
    Quic(#[from] quinn_proto::ConnectError),
}

/// A send was refused. Nothing was queued unless the variant says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No such session (never opened, or closed).
    #[error("no such session")]
    NoSession,
    /// The session is not established yet (handshake or MIC check pending).
    #[error("session not established yet")]
    NotEstablished,
    /// No such stream on the session, or it was finished, reset or expired.
    #[error("no such stream (finished, reset or expired)")]
    NoStream,
    /// The peer's stream limit is reached; retry after a stream closes.
    #[error("stream limit reached")]
    StreamsExhausted,
    /// The session's send buffer is full (`send_buffer_bytes_max`): backpressure; retry later.
    #[error("send buffer full ({buffered} bytes buffered, at most {max})")]
    Blocked {
        /// Bytes buffered now.
        buffered: usize,
        /// The limit.
        max: usize,
    },
    /// The message is larger than `message_bytes_max`.
    #[error("message of {len} bytes, at most {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The deadline or expiry is already in the past.
    #[error("deadline already passed")]
    Expired,
    /// The peer does not accept datagrams.
    #[error("peer does not accept datagrams")]
    DatagramsUnsupported,
    /// A probability outside (0, 1].
    #[error("probability must be in (0, 1], got {0}")]
    BadProbability(String),
    /// A hedge needs between 1 and `hedge_fanout_max` sessions.
    #[error("a hedge needs 1 to {max} sessions, got {got}")]
    BadHedge {
        /// Sessions given.
        got: usize,
        /// The limit.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for code in [
            ErrorCode::NoError,
            ErrorCode::HelloTimeout,
            ErrorCode::ProtocolViolation,
            ErrorCode::MicMissing,
            ErrorCode::MicRejected,
            ErrorCode::MicRevoked,
            ErrorCode::KeyMismatch,
            ErrorCode::GoingAway,
            ErrorCode::Expired,
            ErrorCode::Cancelled,
            ErrorCode::HedgeLost,
            ErrorCode::TooLarge,
            ErrorCode::BadHeader,
        ] {
            assert_eq!(ErrorCode::from_u64(code.to_u64()), code);
        }
        assert_eq!(ErrorCode::from_u64(0x999), ErrorCode::Unknown(0x999));
        assert_eq!(ErrorCode::Unknown(0x999).to_u64(), 0x999);
    }
}
