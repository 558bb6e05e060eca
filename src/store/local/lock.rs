//! The exclusive lock file that serializes processes sharing one `dataDir`.
//!
//! The lock is an advisory whole-file lock (`flock` semantics on Unix, via
//! [`File::try_lock`]) on `<dir>/lock`, a file that is created once and never
//! written, truncated or deleted: deleting a lock file while another process
//! waits on it would let two processes each hold a lock on a different file.
//! The operating system releases the lock when the holder's descriptor is
//! closed, including when the process is killed, so a crash never leaves a
//! stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// Shortest pause between two attempts to take a held lock.
const POLL_MIN: Duration = Duration::from_millis(1);
/// Longest pause between two attempts to take a held lock.
const POLL_MAX: Duration = Duration::from_millis(10);

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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(TryLockError::Error(source)) => return Err(io_error(path, source)),
                Err(TryLockError::WouldBlock) => {}
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(StoreError::Unavailable(format!(
                    "{}: lock held by another process, waited {waited:?} (limit {wait:?})",
                    path.display()
                )));
            }
            // Jitter keeps waiters from polling in lockstep; never sleep
            // past the deadline by more than one short pause.
            let pause = fastrand_duration(POLL_MIN, POLL_MAX).min(wait - waited);
            std::thread::sleep(pause.max(Duration::from_micros(100)));
        }
    }
}

/// A uniformly random duration in `[lo, hi]`.
fn fastrand_duration(lo: Duration, hi: Duration) -> Duration {
    let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
    let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(fastrand::u64(lo_us..=hi_us.max(lo_us)))
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: PathBuf::from(path),
        source,
    }
}
