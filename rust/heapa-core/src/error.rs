//! The core's error type. The binding crate maps each variant to one Python
//! exception class in exactly one place.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// An id that the pool does not hold (never added, evicted or dropped).
    #[error("unknown prompt id {id} at index {index}")]
    UnknownPrompt { id: u64, index: usize },
    /// Bad arguments: lengths, values, states, config.
    #[error("{0}")]
    InvalidInput(String),
    /// The pool cannot admit anything: every slot is in flight.
    #[error("{0}")]
    Capacity(String),
    /// A snapshot that cannot be loaded (truncated, corrupt, foreign, future version).
    #[error("{0}")]
    Snapshot(String),
    /// Operating-system I/O failure while saving or loading.
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

pub(crate) fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(msg.into())
}
