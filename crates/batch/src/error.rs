//! The crate's one error type. Each variant maps to a stable code that the
//! N-API layer hands to JavaScript unchanged.

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
    /// The stable, machine-readable code (shared with the TypeScript `MetaStoreError`).
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::InvalidConfig { .. } => "ERR_INVALID_CONFIG",
            BatchError::TooLarge { .. } => "ERR_TOO_LARGE",
            BatchError::Closed => "ERR_CLOSED",
            BatchError::CorruptBatch(_) => "ERR_CORRUPT_BATCH",
        }
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
}
