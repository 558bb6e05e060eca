//! The database file behind a fuse: once the store has seen damage, no
//! byte of the file is written again.
//!
//! [`FusedFile`] is the redb storage backend of an open `LocalStore`: a
//! plain file backend whose writes, length changes and syncs fail once its
//! [`Fuse`] is blown. The store blows the fuse when a read finds damage (a
//! redb error, a record that fails its check, or a panic inside redb on a
//! damaged page). From then on redb cannot commit, cannot record its
//! allocator state on close and cannot write its shutdown header: the file
//! keeps exactly the bytes it had when the damage was found. Reads are
//! passed through (the store itself refuses further calls).

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Shared between a store and its backend; holds why it was blown.
#[derive(Clone, Default)]
pub(super) struct Fuse(Arc<Mutex<Option<String>>>);

impl Fuse {
    /// Blows the fuse, keeping the first reason given.
    pub(super) fn blow(&self, reason: &str) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(reason.to_string());
        }
    }

    /// Why the fuse was blown, if it was.
    pub(super) fn blown(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl fmt::Debug for Fuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fuse").field(&self.blown()).finish()
    }
}

/// A file backend that refuses to write once its fuse is blown.
#[derive(Debug)]
pub(super) struct FusedFile {
    inner: FileBackend,
    fuse: Fuse,
}

impl FusedFile {
    /// Wraps `file` (opened for reading and writing).
    pub(super) fn new(file: File, fuse: Fuse) -> Result<FusedFile, redb::DatabaseError> {
        Ok(FusedFile {
            inner: FileBackend::new(file)?,
            fuse,
        })
    }

    fn check(&self) -> Result<(), io::Error> {
        match self.fuse.blown() {
            None => Ok(()),
            Some(reason) => Err(io::Error::other(format!(
                "not written: the store found damage earlier ({reason})"
            ))),
        }
    }
}

impl StorageBackend for FusedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
