//! The crate's one error type, and the table of the stable codes that every
//! MetaStore error carries (this crate's and `metastore-raft`'s). The N-API
//! layer hands the codes to JavaScript unchanged, with the table itself.

/// The stable, machine-readable code of an error, as JavaScript sees it in
/// `MetaStoreError.code`, and what it tells a caller. This is the one place
/// that says which failures may be retried: the binding exports the table
/// and the TypeScript facade reads `retryable` from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A setting broke a rule; nothing was started.
    InvalidConfig,
    /// A proposal was made before the batcher was started.
    NotStarted,
    /// The proposal was lost before it was committed; it was not applied.
    ProposalDropped,
    /// The request did not resolve in time; its outcome is unknown.
    Timeout,
    /// The node, cluster or batcher is stopped.
    Closed,
    /// A proposal is larger than `max_proposal_bytes`.
    TooLarge,
    /// A log entry carries the batch frame magic but is not a valid frame.
    CorruptBatch,
    /// The storage engine failed.
    Storage,
    /// A node id that is not a member of the group.
    UnknownNode,
    /// A data dir belongs to another cluster or node, or is empty where the
    /// group expects the node's state; nothing was changed.
    DataDirMismatch,
    /// A node that kept its state in memory cannot rejoin its group.
    StateLost,
    /// A retried write's session no longer holds its result; an earlier
    /// attempt may have been applied.
    SessionExpired,
    /// A membership change was asked for while another is in progress; it
    /// was not applied.
    ChangeInProgress,
    /// A learner is too far behind the leader to be promoted; it was not.
    LearnerBehind,
    /// A membership change breaks a rule (an id used before, an address
    /// taken, a removal that would leave no live quorum); it was not applied.
    ChangeRefused,
    /// This node was removed from its group; it serves nothing more.
    Removed,
    /// A bug; the node is stopped.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the table is shown to JavaScript.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidConfig,
        ErrorCode::NotStarted,
        ErrorCode::ProposalDropped,
        ErrorCode::Timeout,
        ErrorCode::Closed,
        ErrorCode::TooLarge,
        ErrorCode::CorruptBatch,
        ErrorCode::Storage,
        ErrorCode::UnknownNode,
        ErrorCode::DataDirMismatch,
        ErrorCode::StateLost,
        ErrorCode::SessionExpired,
        ErrorCode::ChangeInProgress,
        ErrorCode::LearnerBehind,
        ErrorCode::ChangeRefused,
        ErrorCode::Removed,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidConfig => "ERR_INVALID_CONFIG",
            ErrorCode::NotStarted => "ERR_NOT_STARTED",
            ErrorCode::ProposalDropped => "ERR_PROPOSAL_DROPPED",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::Closed => "ERR_CLOSED",
            ErrorCode::TooLarge => "ERR_TOO_LARGE",
            ErrorCode::CorruptBatch => "ERR_CORRUPT_BATCH",
            ErrorCode::Storage => "ERR_STORAGE",
            ErrorCode::UnknownNode => "ERR_UNKNOWN_NODE",
            ErrorCode::DataDirMismatch => "ERR_DATA_DIR_MISMATCH",
            ErrorCode::StateLost => "ERR_STATE_LOST",
            ErrorCode::SessionExpired => "ERR_SESSION_EXPIRED",
            ErrorCode::ChangeInProgress => "ERR_CHANGE_IN_PROGRESS",
            ErrorCode::LearnerBehind => "ERR_LEARNER_BEHIND",
            ErrorCode::ChangeRefused => "ERR_CHANGE_REFUSED",
            ErrorCode::Removed => "ERR_REMOVED",
            ErrorCode::Internal => "ERR_INTERNAL",
        }
    }

    /// Whether the same request may be sent again on the same handle: it was
    /// certainly not applied, and the cause may pass (`ProposalDropped`, a
    /// leader change). Not `Timeout`: its outcome is unknown, so sending it
    /// again could apply it twice. Not `Closed`: this handle will not serve
    /// again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::ProposalDropped)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller may conclude from a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorOutcome {
    /// It never reached the log, or it reached it and was certainly dropped:
    /// it was not applied and never will be.
    NotApplied,
    /// It may have been applied, or may still be.
    Unknown,
}

impl ErrorOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorOutcome::NotApplied => "not-applied",
            ErrorOutcome::Unknown => "unknown",
        }
    }
}

/// Everything that can go wrong in `metastore-batch`.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum BatchError {
    /// A `server.raft.batch` setting broke a rule. `key` is the snake_case
    /// YAML field; `rule` starts with that key and names the offending values,
    /// so a caller can prefix it with the key path of its config file.
    #[error("{key}: {rule}")]
    InvalidConfig { key: &'static str, rule: String },

    /// A proposal is larger than `max_proposal_bytes`.
    #[error("proposal of {size} bytes exceeds max_proposal_bytes ({max})")]
    TooLarge { size: usize, max: usize },

    /// The batcher has been stopped; nothing more is accepted.
    #[error("proposal batcher is closed")]
    Closed,

    /// A log entry carries the batch frame magic but is not a valid frame.
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
}

impl BatchError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BatchError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BatchError::TooLarge { .. } => ErrorCode::TooLarge,
            BatchError::Closed => ErrorCode::Closed,
            BatchError::CorruptBatch(_) => ErrorCode::CorruptBatch,
        }
    }

    /// The stable code string (the TypeScript `MetaStoreError.code`).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = BatchError::InvalidConfig {
            key: "min_batch_size",
            rule: "min_batch_size (300) must be <= max_batch_size (256)".into(),
        };
        assert_eq!(e.code(), "ERR_INVALID_CONFIG");
        assert_eq!(
            e.to_string(),
            "min_batch_size: min_batch_size (300) must be <= max_batch_size (256)"
        );
        let e = BatchError::TooLarge { size: 10, max: 5 };
        assert_eq!(e.code(), "ERR_TOO_LARGE");
        assert_eq!(
            e.to_string(),
            "proposal of 10 bytes exceeds max_proposal_bytes (5)"
        );
        assert_eq!(BatchError::Closed.code(), "ERR_CLOSED");
        assert_eq!(BatchError::Closed.to_string(), "proposal batcher is closed");
        let e = BatchError::CorruptBatch("truncated header".into());
        assert_eq!(e.code(), "ERR_CORRUPT_BATCH");
        assert_eq!(e.to_string(), "corrupt batch: truncated header");
    }

    #[test]
    fn only_dropped_is_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .map(ErrorCode::as_str)
            .collect();
        // A timed-out write may have been applied: resending it is not safe.
        assert_eq!(retryable, ["ERR_PROPOSAL_DROPPED"]);
        let mut names: Vec<_> = ErrorCode::ALL.into_iter().map(ErrorCode::as_str).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
