//! Why a `nexus ctl` command failed, and the exit code each reason gets.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the node answered with an error (HTTP 4xx/5xx other than 401/403), or the outcome is a failure |
//! | 2 | usage or local input error (bad flag, unreadable or malformed file, bad value) |
//! | 3 | the node cannot be reached (connection refused, timeout, TLS, DNS) |
//! | 4 | the node refused the credentials (HTTP 401 or 403) |

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad input on this side; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The request did not get an HTTP answer (refused, timed out, TLS or DNS failure).
    #[error("cannot reach the admin API at {base}: {why}")]
    Unreachable {
        /// The admin URL.
        base: String,
        /// The transport's error chain.
        why: String,
    },
    /// The node answered 401 or 403: no token, a wrong one, or one without the scope.
    #[error("{message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The problem's title, status and detail.
        message: String,
    },
    /// The node answered another error status.
    #[error("{message}")]
    Answered {
        /// HTTP status.
        status: u16,
        /// The problem's title, status and detail.
        message: String,
    },
}

/// `nexus ctl`'s exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CtlExit {
    /// The command did what it was asked.
    Ok = 0,
    /// The node answered with an error, or the outcome is a failure.
    Failed = 1,
    /// Usage or local input error (clap uses 2 for bad flags too).
    Usage = 2,
    /// The node cannot be reached.
    Unreachable = 3,
    /// The node refused the credentials.
    Unauthorized = 4,
}

impl CtlError {
    /// The exit code this error gets.
    pub fn exit(&self) -> CtlExit {
        match self {
            CtlError::Usage(_) => CtlExit::Usage,
            CtlError::Unreachable { .. } => CtlExit::Unreachable,
            CtlError::Unauthorized { .. } => CtlExit::Unauthorized,
            CtlError::Answered { .. } => CtlExit::Failed,
        }
    }

    /// The error for an HTTP error status with this message.
    pub fn from_status(status: u16, message: String) -> CtlError {
        if status == 401 || status == 403 {
            CtlError::Unauthorized { status, message }
        } else {
            CtlError::Answered { status, message }
        }
    }
}

/// A usage error (exit code 2) carrying `e`'s whole context chain as its message.
pub fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    CtlError::Usage(format!("{:#}", e.into())).into()
}

/// The exit code for an error `nexus ctl` returned: the [`CtlError`] in its chain, else 1.
pub fn exit_code(e: &anyhow::Error) -> CtlExit {
    e.chain()
        .find_map(|c| c.downcast_ref::<CtlError>())
        .map_or(CtlExit::Failed, CtlError::exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kind_through_context() {
        let e: anyhow::Error = CtlError::from_status(403, "Forbidden".into()).into();
        assert_eq!(
            exit_code(&e.context("listing tokens")),
            CtlExit::Unauthorized
        );
        let e: anyhow::Error = CtlError::from_status(404, "Not Found".into()).into();
        assert_eq!(exit_code(&e), CtlExit::Failed);
        let e: anyhow::Error = CtlError::Unreachable {
            base: "http://127.0.0.1:1".into(),
            why: "connection refused".into(),
        }
        .into();
        assert_eq!(exit_code(&e) as u8, 3);
        let e = usage(anyhow::Error::new(std::io::Error::other("gone")).context("reading x.toml"));
        assert_eq!(exit_code(&e), CtlExit::Usage);
        assert_eq!(e.to_string(), "reading x.toml: gone");
        assert_eq!(exit_code(&anyhow::anyhow!("other")), CtlExit::Failed);
    }
}
