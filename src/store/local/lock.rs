//! The exclusive lock file that serializes processes sharing one `dataDir`.
//!
//! The lock is an advisory whole-file lock (`flock` semantics on Unix, via
//! [`File::try_lock`]) on `<dir>/lock`, a file that is created once and never
//! written, truncated or deleted: deleting a lock file while another process
//! waits on it would let two processes each hold a lock on a different file.
//! The operating system releases the lock when the holder's descriptor is
//! closed, including when the process is killed, so a crash never leaves a
//! stale lock behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil::{self, Backoff, Wait};
use crate::store::StoreError;

/// Pauses between two attempts to take a held lock: from 1 ms, doubling
/// up to 5 ms (plus up to as much again at random, so waiters do not poll
/// in lockstep).
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(1),
    max: Duration::from_millis(5),
};

/// An exclusive lock on `<dir>/lock`, held until dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    // Closing the descriptor releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the exclusive lock on `path`, creating the file if needed, and
    /// waits at most `wait` for another holder to let go (a zero `wait`
    /// makes exactly one attempt).
    pub(super) fn acquire(path: &Path, wait: Duration) -> Result<DirLock, StoreError> {
        let file = fsutil::open_lock_file(path).map_err(|source| io_error(path, source))?;
        match fsutil::lock_within(&file, wait, BACKOFF) {
            Ok(Wait::Locked) => Ok(DirLock { _file: file }),
            Ok(Wait::TimedOut { waited }) => Err(StoreError::Unavailable(format!(
                "{}: lock held by another process, waited {waited:?} (limit {wait:?})",
                path.display()
            ))),
            Err(source) => Err(io_error(path, source)),
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: PathBuf::from(path),
        source,
    }
}
