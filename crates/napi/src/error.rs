//! The one place where core errors become JS errors. napi-rs uses the error's
//! status string as the JS `code`, so every error carries its stable code.

use napi::Error;


pub fn js_error(code: &str, message: impl Into<String>) -> Error<String> {
  Error::new(code.to_string(), message.into())
}

pub fn from_batch(err: metastore_batch::BatchError) -> Error<String> {
  js_error(err.code(), err.to_string())
}

pub fn from_raft(err: metastore_raft::Error) -> Error<String> {
  js_error(err.code(), err.to_string())
}

pub fn invalid_config(message: impl Into<String>) -> Error<String> {
  js_error("ERR_INVALID_CONFIG", message)
}
