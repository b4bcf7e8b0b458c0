//! The one error type of this crate. The binding maps [`Error::code`] to the
//! `code` of a JS `MetaStoreError`; [`Display`](std::fmt::Display) is the
//! message a user reads.

use std::time::Duration;

use metastore_batch::BatchError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The node (or cluster) is stopped or stopping. Retry on another node.
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
    /// The operation needs a leader and this node is not (or none is known).
    #[error("not leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<u64> },
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
    /// A bug: the node thread panicked. The node is stopped; its pending
    /// requests are rejected with this error instead of hanging.
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(leader: &Option<u64>) -> String {
    match leader {
        Some(l) => format!(" (leader is node {l})"),
        None => " (no leader known)".to_string(),
    }
}

impl Error {
    /// The stable code the binding exposes as `MetaStoreError.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Closed => "ERR_CLOSED",
            Error::Timeout(_) => "ERR_TIMEOUT",
            Error::ProposalDropped(_) => "ERR_PROPOSAL_DROPPED",
            Error::NotLeader { .. } => "ERR_NOT_LEADER",
            Error::TooLarge { .. } => "ERR_TOO_LARGE",
            Error::Storage(_) => "ERR_STORAGE",
            Error::InvalidConfig { .. } => "ERR_INVALID_CONFIG",
            Error::CorruptBatch(_) => "ERR_CORRUPT_BATCH",
            Error::Internal(_) => "ERR_INTERNAL",
        }
    }

    /// Whether a client may retry the same request (on this or another node).
    /// Timeouts are retryable only for idempotent requests.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Closed | Error::Timeout(_) | Error::ProposalDropped(_) | Error::NotLeader { .. }
        )
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
