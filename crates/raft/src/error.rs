//! The one error type of this crate. The binding maps [`Error::code`] to the
//! `code` of a JS `MetaStoreError`; [`Display`](std::fmt::Display) is the
//! message a user reads.

use std::time::Duration;

use metastore_batch::{BatchError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The node (or cluster) is stopped or stopping. This handle will not
    /// serve again; another node may.
    #[error("node is closed")]
    Closed,
    /// The request did not resolve within `proposal_timeout`. Its outcome is
    /// unknown: a write may still commit later.
    #[error("request timed out after {0:?}; the outcome is unknown (a write may still commit)")]
    Timeout(Duration),
    /// The proposal was lost before it was committed (leader change, entry
    /// overwritten by a new leader). It was not applied; safe to retry.
    #[error("proposal dropped: {0}")]
    ProposalDropped(String),
    #[error("proposal of {size} bytes exceeds max_proposal_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    /// Opening, reading or writing the storage engine failed. The message
    /// names the path and the engine's own error.
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid config: {key}: {rule}")]
    InvalidConfig { key: String, rule: String },
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
    /// A node's data dir belongs to another cluster or node, or holds nothing
    /// where the group expects the node's state. Nothing was changed.
    #[error(
        "data dir {dir} holds {holds}, but {asked} was asked for; nothing was changed \
         (start the node on its own data dir, or remove this one if its data is not needed)"
    )]
    DataDirMismatch {
        dir: String,
        holds: String,
        asked: String,
    },
    /// A node that kept its state in memory lost it when it stopped; under
    /// its old id it could vote twice or forget acknowledged writes.
    #[error("{0}")]
    StateLost(String),
    /// A bug: the node thread panicked. The node is stopped; its pending
    /// requests are rejected with this error instead of hanging.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Error::Closed => ErrorCode::Closed,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::ProposalDropped(_) => ErrorCode::ProposalDropped,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::DataDirMismatch { .. } => ErrorCode::DataDirMismatch,
            Error::StateLost(_) => ErrorCode::StateLost,
            Error::Storage(_) => ErrorCode::Storage,
            Error::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Error::CorruptBatch(_) => ErrorCode::CorruptBatch,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The stable code string the binding exposes as `MetaStoreError.code`.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// Whether the same request may be sent again on the same handle (see
    /// [`ErrorCode::is_retryable`], the one definition).
    pub fn is_retryable(&self) -> bool {
        self.error_code().is_retryable()
    }

    pub(crate) fn invalid(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            rule: rule.into(),
        }
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::InvalidConfig { key, rule } => Error::InvalidConfig {
                key: format!("batch.{key}"),
                rule,
            },
            BatchError::TooLarge { size, max } => Error::TooLarge { size, max },
            BatchError::Closed => Error::Closed,
            BatchError::CorruptBatch(s) => Error::CorruptBatch(s),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_keep_their_code() {
        for e in [
            BatchError::InvalidConfig {
                key: "min_batch_size",
                rule: "min_batch_size (0) must be > 0".into(),
            },
            BatchError::TooLarge { size: 2, max: 1 },
            BatchError::Closed,
            BatchError::CorruptBatch("x".into()),
        ] {
            assert_eq!(Error::from(e.clone()).error_code(), e.error_code());
        }
    }

    #[test]
    fn closed_is_not_retryable() {
        assert!(!Error::Closed.is_retryable());
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::ProposalDropped("leader changed".into()).is_retryable());
    }
}
