//! Two file helpers the node-local files share: waiting a bounded time for
//! an exclusive lock on a file ([`lock_within`]), and replacing a file's
//! contents so that a reader sees the old or the new file, never half of
//! one ([`write_atomic`]).
//!
//! Their users: the node lock and the node cache ([`crate::cni::node`]),
//! the STATUS failure streak ([`crate::cni::status`]), log rotation
//! ([`crate::cni::log`]) and the embedded store's directory lock
//! (`store::local`). Each keeps its own error type and what a lock that
//! cannot be had means to it; these helpers only do the I/O.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a waiter tries a held lock: the first pause, doubled after
/// every attempt up to `max`, each with a random extra of up to the pause
/// itself (so waiters do not poll in lockstep). Never sleeps past the
/// deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first pause.
    pub(crate) first: Duration,
    /// The longest pause (before its random extra).
    pub(crate) max: Duration,
}

/// What waiting for a lock came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The lock is held, until the file is closed.
    Locked,
    /// Another holder kept it for the whole wait.
    TimedOut {
        /// How long this process waited.
        waited: Duration,
    },
}

/// Opens (creating it if needed, never truncating) a file that is only
/// ever locked, never written.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Takes the exclusive advisory lock (`flock`) on `file`, waiting at most
/// `wait` for another holder to let go (a zero `wait` makes exactly one
/// attempt). The lock is released when `file` is closed, also when the
/// process dies. `Err` is an I/O error of the attempt itself.
pub(crate) fn lock_within(file: &File, wait: Duration, backoff: Backoff) -> io::Result<Wait> {
    let started = Instant::now();
    let mut pause = backoff.first;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Wait::Locked),
            Err(TryLockError::Error(e)) => return Err(e),
            Err(TryLockError::WouldBlock) => {}
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Ok(Wait::TimedOut { waited });
        }
        let jitter_us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        let jitter = Duration::from_micros(fastrand::u64(0..=jitter_us));
        std::thread::sleep(pause.saturating_add(jitter).min(wait - waited));
        pause = pause.saturating_mul(2).min(backoff.max);
    }
}

/// Distinguishes the temporary files of concurrent writers in one process
/// (the node agent serves many requests at once); the process id
/// distinguishes processes.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces the contents of `path` with `bytes`: creates the parent
/// directory if needed, writes `<path>.<pid>.<n>.tmp` (mode 0666 less the
/// umask, like [`std::fs::write`]) and renames it over `path`, so a reader
/// sees the old file or the new one, never a part of either. Not synced:
/// the files written this way are hints that may be lost in a crash. On
/// failure the temporary file is removed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Backoff = Backoff {
        first: Duration::from_micros(50),
        max: Duration::from_millis(2),
    };

    /// A lock file in `dir` and an open handle holding its lock.
    fn held_lock(dir: &tempfile::TempDir) -> (PathBuf, File) {
        let path = dir.path().join("l");
        let holder = open_lock_file(&path).unwrap();
        assert_eq!(
            lock_within(&holder, Duration::ZERO, PACE).unwrap(),
            Wait::Locked
        );
        (path, holder)
    }

    #[test]
    fn a_held_lock_times_out_and_is_free_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, holder) = held_lock(&dir);
        let waiter = open_lock_file(&path).unwrap();
        match lock_within(&waiter, Duration::from_millis(20), PACE).unwrap() {
            Wait::TimedOut { waited } => assert!(waited >= Duration::from_millis(20)),
            Wait::Locked => panic!("two holders of one lock"),
        }
        assert!(matches!(
            lock_within(&waiter, Duration::ZERO, PACE).unwrap(),
            Wait::TimedOut { .. }
        ));
        drop(holder);
        assert_eq!(
            lock_within(&waiter, Duration::ZERO, PACE).unwrap(),
            Wait::Locked
        );
        // The lock file is never written or truncated.
        std::fs::write(&path, b"x").unwrap();
        drop(open_lock_file(&path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let (path, holder) = held_lock(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || {
                let file = open_lock_file(&path).unwrap();
                tx.send(()).unwrap();
                lock_within(&file, Duration::from_secs(60), PACE).unwrap()
            }
        });
        rx.recv().unwrap();
        drop(holder);
        assert_eq!(waiter.join().unwrap(), Wait::Locked);
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/f.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
        // Concurrent writers of one process never share a temporary file:
        // the result is one writer's whole content.
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&path, &[t; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let body = std::fs::read(&path).unwrap();
        assert_eq!(body.len(), 4096);
        assert!(body.iter().all(|b| *b == body[0]), "a mix of writers");
        // A parent that is a file: an error, nothing left behind.
        std::fs::write(dir.path().join("plain"), b"a file").unwrap();
        assert!(write_atomic(&dir.path().join("plain/f"), b"x").is_err());
        assert_eq!(std::fs::read(dir.path().join("plain")).unwrap(), b"a file");
    }
}
