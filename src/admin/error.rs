//! Errors of the operator CLI, each naming the flag, file or key at fault,
//! and the exit status each one maps to.

use std::path::PathBuf;

use crate::allocator::AllocError;
use crate::store::StoreError;

/// Exit status: the command succeeded (`check`: no problem found).
pub const EXIT_OK: u8 = 0;
/// Exit status: `check` found problems (or `check --repair` left some).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit status: bad usage, an unreadable input, or a refused operation.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the store or the allocator failed.
pub const EXIT_FAILED: u8 = 3;

/// Errors of `ipamctl`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A flag or combination of flags is unusable.
    #[error("{0}")]
    Usage(String),
    /// The network config file cannot be used.
    #[error("network config {}: {detail}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An input file cannot be read or parsed.
    #[error("{}: {detail}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A destructive command was not confirmed.
    #[error("{0}")]
    Refused(String),
    /// The allocator failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A benchmark worker process failed.
    #[error("benchmark worker {index}: {detail}")]
    Worker {
        /// Worker index.
        index: usize,
        /// What went wrong.
        detail: String,
    },
    /// The metrics address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address as given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl AdminError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Usage(_)
            | AdminError::Config { .. }
            | AdminError::Input { .. }
            | AdminError::Refused(_)
            | AdminError::Listen { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }
}
