//! The one place where core errors become JS errors. napi-rs uses the error's
//! status string as the JS `code`, so every error carries its stable code.
//! The codes and their meaning for a caller are the core's
//! ([`metastore_batch::ErrorCode`]); `errorCodes()` hands that table to
//! TypeScript, which defines no rule of its own.

use metastore_batch::{ErrorCode as Code, ErrorOutcome};
use napi::Error;
use napi_derive::napi;

/// The code of every `MetaStoreError`.
// The variant names are the code strings, `ERR_` included.
#[allow(clippy::enum_variant_names)]
#[napi(string_enum = "UPPER_SNAKE")]
pub enum ErrorCode {
    ErrInvalidConfig,
    ErrNotStarted,
    ErrProposalDropped,
    ErrTimeout,
    ErrClosed,
    ErrTooLarge,
    ErrCorruptBatch,
    ErrStorage,
    ErrUnknownNode,
    ErrDataDirMismatch,
    ErrStateLost,
    ErrSessionExpired,
    ErrChangeInProgress,
    ErrLearnerBehind,
    ErrChangeRefused,
    ErrRemoved,
    ErrInternal,
}

impl From<Code> for ErrorCode {
    fn from(code: Code) -> Self {
        match code {
            Code::InvalidConfig => ErrorCode::ErrInvalidConfig,
            Code::NotStarted => ErrorCode::ErrNotStarted,
            Code::ProposalDropped => ErrorCode::ErrProposalDropped,
            Code::Timeout => ErrorCode::ErrTimeout,
            Code::Closed => ErrorCode::ErrClosed,
            Code::TooLarge => ErrorCode::ErrTooLarge,
            Code::CorruptBatch => ErrorCode::ErrCorruptBatch,
            Code::Storage => ErrorCode::ErrStorage,
            Code::UnknownNode => ErrorCode::ErrUnknownNode,
            Code::DataDirMismatch => ErrorCode::ErrDataDirMismatch,
            Code::StateLost => ErrorCode::ErrStateLost,
            Code::SessionExpired => ErrorCode::ErrSessionExpired,
            Code::ChangeInProgress => ErrorCode::ErrChangeInProgress,
            Code::LearnerBehind => ErrorCode::ErrLearnerBehind,
            Code::ChangeRefused => ErrorCode::ErrChangeRefused,
            Code::Removed => ErrorCode::ErrRemoved,
            Code::Internal => ErrorCode::ErrInternal,
        }
    }
}

/// What a caller may conclude from a failed request (`MetaStoreError.outcome`).
#[napi(string_enum = "kebab-case")]
pub enum RequestOutcome {
    /// It was not applied, and never will be.
    NotApplied,
    /// It may have been applied, or may still be.
    Unknown,
}

impl From<ErrorOutcome> for RequestOutcome {
    fn from(outcome: ErrorOutcome) -> Self {
        match outcome {
            ErrorOutcome::NotApplied => RequestOutcome::NotApplied,
            ErrorOutcome::Unknown => RequestOutcome::Unknown,
        }
    }
}

/// One row of the error table: a code and what it tells the caller.
#[napi(object)]
pub struct ErrorCodeInfo {
    pub code: ErrorCode,
    /// The same request may be sent again on the same handle.
    pub retryable: bool,
}

/// Every code a `MetaStoreError` can carry, with what it means for a retry.
#[napi(catch_unwind)]
pub fn error_codes() -> Vec<ErrorCodeInfo> {
    Code::ALL
        .into_iter()
        .map(|code| ErrorCodeInfo {
            code: code.into(),
            retryable: code.is_retryable(),
        })
        .collect()
}

pub fn js_error(code: Code, message: impl Into<String>) -> Error<String> {
    Error::new(code.as_str().to_string(), message.into())
}

pub fn from_batch(err: metastore_batch::BatchError) -> Error<String> {
    js_error(err.error_code(), err.to_string())
}

pub fn from_raft(err: metastore_raft::Error) -> Error<String> {
    js_error(err.error_code(), err.to_string())
}

pub fn invalid_config(message: impl Into<String>) -> Error<String> {
    js_error(Code::InvalidConfig, message)
}
