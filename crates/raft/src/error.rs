//! The one error type of this crate. The binding maps [`Error::code`] to the
//! `code` of a JS `MetaStoreError`; [`Display`](std::fmt::Display) is the
//! message a user reads.

use std::time::Duration;

use metastore_batch::{BatchError, ErrorCode, ErrorOutcome};

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
    /// The request was forwarded to a leader that is no longer this node's
    /// leader, or its entry may be inside a snapshot this node installed: it
    /// may have been applied, or may still be. Its code is ERR_TIMEOUT (no
    /// outcome known), answered at once instead of at the deadline.
    #[error("{0}; the outcome is unknown (it may have been applied, or may still be)")]
    OutcomeUnknown(String),
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
    /// A node id that is not a member of the group.
    #[error("node {id} is not in this cluster (its nodes are 1..={nodes})")]
    UnknownNode { id: u64, nodes: u64 },
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
    /// The request was in flight when `cause` happened (its node stopped or
    /// failed after proposing it): it may have been applied, or may still be.
    /// Its code is the cause's.
    #[error("{cause}; the request was already proposed, so it may have been applied")]
    InFlight { cause: Box<Error> },
    /// A retry of a session's write found its session without the write's
    /// whole result: forgotten (the client's floor passed it, or too many
    /// results were kept), or recorded on this node without `existed`. It
    /// was not applied again; an earlier attempt may have been (or was, and
    /// the message says at which index).
    #[error("{0}")]
    SessionExpired(String),
    /// A membership change was asked for while another one is in progress
    /// (one at a time, from its request until the group left any joint
    /// configuration). It was not applied.
    #[error("{0}")]
    ChangeInProgress(String),
    /// A learner is too far behind to be promoted. It was not promoted.
    #[error("{0}")]
    LearnerBehind(String),
    /// A membership change breaks a rule. It was not applied.
    #[error("{0}")]
    ChangeRefused(String),
    /// This node was removed from its group.
    #[error(
        "node {0} was removed from its group; it serves nothing more (a host that should \
             rejoin starts empty under a new id)"
    )]
    Removed(u64),
    /// A bug: the node thread panicked. The node is stopped; its pending
    /// requests are rejected with this error instead of hanging.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Error::Closed => ErrorCode::Closed,
            Error::Timeout(_) | Error::OutcomeUnknown(_) => ErrorCode::Timeout,
            Error::ProposalDropped(_) => ErrorCode::ProposalDropped,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::DataDirMismatch { .. } => ErrorCode::DataDirMismatch,
            Error::StateLost(_) => ErrorCode::StateLost,
            Error::UnknownNode { .. } => ErrorCode::UnknownNode,
            Error::InFlight { cause } => cause.error_code(),
            Error::SessionExpired(_) => ErrorCode::SessionExpired,
            Error::Storage(_) => ErrorCode::Storage,
            Error::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Error::CorruptBatch(_) => ErrorCode::CorruptBatch,
            Error::ChangeInProgress(_) => ErrorCode::ChangeInProgress,
            Error::LearnerBehind(_) => ErrorCode::LearnerBehind,
            Error::ChangeRefused(_) => ErrorCode::ChangeRefused,
            Error::Removed(_) => ErrorCode::Removed,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The stable code string the binding exposes as `MetaStoreError.code`.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// What the caller may conclude: a request that failed before it was
    /// proposed, or whose entry was certainly dropped, was not applied; one
    /// that timed out, or was in flight when its node stopped, may have been.
    pub fn outcome(&self) -> ErrorOutcome {
        match self {
            Error::Timeout(_)
            | Error::OutcomeUnknown(_)
            | Error::InFlight { .. }
            | Error::SessionExpired(_) => ErrorOutcome::Unknown,
            _ => ErrorOutcome::NotApplied,
        }
    }

    /// Whether the same request may be sent again on the same handle (see
    /// [`ErrorCode::is_retryable`], the one definition: only codes whose
    /// outcome is always [`ErrorOutcome::NotApplied`] qualify).
    pub fn is_retryable(&self) -> bool {
        self.error_code().is_retryable()
    }

    /// `self` for a request that was already proposed when it happened.
    pub fn in_flight(self) -> Error {
        match self {
            Error::Timeout(_)
            | Error::OutcomeUnknown(_)
            | Error::InFlight { .. }
            | Error::SessionExpired(_) => self,
            cause => Error::InFlight {
                cause: Box::new(cause),
            },
        }
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
    fn only_what_was_certainly_not_applied_is_retryable() {
        assert!(!Error::Closed.is_retryable());
        assert!(!Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::ProposalDropped("leader changed".into()).is_retryable());
        for code in ErrorCode::ALL.into_iter().filter(|c| c.is_retryable()) {
            assert_eq!(code, ErrorCode::ProposalDropped, "{code}");
        }
    }

    #[test]
    fn a_request_in_flight_keeps_its_code_and_has_an_unknown_outcome() {
        let e = Error::Closed.in_flight();
        assert_eq!(e.code(), "ERR_CLOSED");
        assert_eq!(e.outcome(), ErrorOutcome::Unknown);
        assert_eq!(Error::Closed.outcome(), ErrorOutcome::NotApplied);
        let e = Error::Storage("disk".into()).in_flight().in_flight();
        assert_eq!(e.code(), "ERR_STORAGE");
        assert!(e.to_string().starts_with("storage error: disk; "), "{e}");
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).in_flight().outcome(),
            ErrorOutcome::Unknown
        );
    }
}
