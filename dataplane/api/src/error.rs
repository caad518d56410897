//! The SDK's error type.

use crate::wire::{ApiError, ErrorCode, WireError};

/// Why an SDK call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The service (or the node's resolver) answered with a NexAPI error.
    #[error("{}: {}", .0.code, .0.message)]
    Api(ApiError),
    /// The local node could not be reached or refused a request.
    #[error("local node: {0}")]
    Node(String),
    /// The NexStream transport failed (session refused or closed, stream reset).
    #[error("transport: {0}")]
    Transport(String),
    /// A message from the peer did not decode.
    #[error("bad message from the peer: {0}")]
    Wire(#[from] WireError),
}

impl Error {
    /// The NexAPI code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Api(e) => e.code,
            Error::Node(_) | Error::Transport(_) => ErrorCode::Unavailable,
            Error::Wire(w) => ErrorCode::from(w),
        }
    }

    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Api(ApiError::new(0, code, message))
    }
}
