//! The embedded single-host backend (`dataDir`) of the [`Store`] contract.
//!
//! One redb database, `<dataDir>/store.redb`, holds every key and the global
//! revision (layout documented in `local/format.rs`). Plugin processes on one
//! host share it through an exclusive lock on `<dataDir>/lock`: a
//! [`LocalStore`] holds the lock from [`LocalStore::open`] until it is
//! dropped, and a second opener waits up to its `lock_wait`, then reports
//! [`StoreError::Unavailable`].
//!
//! * [`Store::read`] runs in one redb read transaction (one snapshot).
//! * [`Store::txn`] runs in one redb write transaction: it evaluates the
//!   compares, and either applies the ops, bumps the revision once and
//!   commits with immediate durability (fsync before returning), or reads the
//!   `read_on_conflict` keys and aborts without writing. Because the ops and
//!   the revision bump share one atomic redb commit, killing the process at
//!   any point leaves either the whole transaction or none of it.
//!
//! # Never on the executor thread
//!
//! redb is synchronous, and a committing transaction waits for an fsync.
//! Inside a tokio runtime, [`Store::read`] and [`Store::txn`] therefore run
//! their redb work on tokio's blocking thread pool
//! ([`tokio::task::spawn_blocking`]), so other tasks of the runtime keep
//! running meanwhile; the database handle is shared with that thread
//! through an [`Arc`]. A call dropped before it completes (a timeout) lets
//! the work finish there: a transaction may or may not have committed
//! (contract point 6), and the directory's lock and the database stay open
//! until it is done. Outside a tokio runtime (another executor polling the
//! future) the work runs in place. [`LocalStore::open`],
//! [`LocalStore::open_with`] and [`LocalStore::revision`] are plain
//! blocking functions (the open waits up to `lock_wait` for the lock): call
//! them from [`tokio::task::spawn_blocking`] inside a runtime.
//!
//! # Opening costs the same at any size
//!
//! A plugin process opens the store once per CNI call, so opening reads a
//! bounded amount, whatever the number of records: redb's header, its
//! allocator state (recorded by the last clean close), and our marker
//! records. In order:
//!
//! 1. The file is opened through a **read-only** redb handle, which never
//!    writes. A file that is not a redb database (redb's magic number and
//!    header are checked by redb), or a redb database without the host-etcd
//!    marker, without the `kv` table or of an unknown format version, is
//!    reported as [`StoreError::CorruptDatabase`] and left byte-for-byte
//!    untouched.
//! 2. Only then is the file opened for writing, behind a fuse (`local/fuse.rs`).
//!
//! Damage inside the file (a byte changed outside redb) is found when the
//! damaged data is read, not on open:
//!
//! * every record of a format 2 store carries a CRC-32 over its key,
//!   revisions and value, checked on every read (records of format 1 stores
//!   only have their revisions checked);
//! * redb reports structural damage it meets as an error, and may panic on
//!   some damaged pages: every redb call of the store runs under
//!   [`std::panic::catch_unwind`], and a panic is reported as
//!   [`StoreError::CorruptDatabase`] (the panic message is still printed by
//!   the process's panic hook);
//! * on the first [`StoreError::CorruptDatabase`] the fuse is blown: from
//!   then on every call of that [`LocalStore`] fails with
//!   [`StoreError::CorruptDatabase`], and no byte of the file is written
//!   again, not even by redb's close. A later open is as cheap as ever and
//!   finds the damage again when it reads it.
//!
//! What this does not catch: redb verifies page checksums only in its full
//! integrity check, so damage inside a branch page that still decodes (a
//! changed separator key or child pointer) can route a lookup to the wrong
//! page, which then answers "absent" for a present key. The records' own
//! checksums rule out returning a wrong value, not a wrong absence.
//! [`LocalOptions::verify_on_open`] runs the full check (it reads the whole
//! file) for callers that want it.
//!
//! # Crashes
//!
//! The store relies on redb's crash safety. A commit with immediate
//! durability writes the new pages copy-on-write (never over a page of the
//! committed state), then the header's inactive commit slot naming the new
//! roots with their checksums, makes it the primary slot and fsyncs before
//! `txn` returns. A process killed at any moment (`kill -9`) cannot tear a
//! write the kernel already accepted, so it leaves the last completed commit
//! or the one being made, and nothing in between; after a power loss, redb's
//! recovery checks the primary slot's checksums and falls back to the
//! previous slot if the commit was torn. A writable open sets a "recovery required" flag in redb's
//! header that only a clean close clears. After a kill the flag is still
//! set, redb refuses the read-only open of step 1, and the open instead:
//!
//! 1. checks the marker on an **in-memory copy** of the file, where redb
//!    runs its recovery (which verifies the checksums of every page of the
//!    committed trees and rebuilds the allocator state) without touching the
//!    file; a file that fails is reported as corrupt and left as is;
//! 2. opens the file for writing, where redb runs the same recovery on the
//!    file itself.
//!
//! That one open after a crash reads the whole file (twice) and holds a copy
//! of it in memory; the next clean close makes opening cheap again. A crash
//! while a new store is created is covered by building it under another
//! name first (`local/format.rs`).

mod format;
mod fuse;
mod lock;

use std::fmt;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::backends::InMemoryBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, StorageBackend};

use self::format::{
    decode_format, decode_record, decode_revision, encode_record, RecordFormat, DB_FILE,
    FORMAT_VERSION, KV, LOCK_FILE, MAGIC, META, META_FORMAT, META_MAGIC, META_REVISION, NEW_FILE,
};
use self::fuse::{Fuse, FusedFile};
use self::lock::DirLock;
use super::{Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned};

/// How [`LocalStore::open_with`] opens a store: [`LocalOptions::new`] and
/// the `with_*` methods (`#[non_exhaustive]`: a new setting is a new
/// method, not a breaking change).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalOptions {
    /// How long to wait for another process holding the directory's lock.
    pub lock_wait: Duration,
    /// Verify the checksum of every page of the database on open (redb's
    /// integrity check, run on an in-memory copy of the file), so that
    /// damage anywhere in the file is reported as
    /// [`StoreError::CorruptDatabase`] by the open itself. Costs one read of
    /// the whole file, and a copy of it in memory, per open. When `false`
    /// (the default) the open reads a bounded amount and damage is reported
    /// when the damaged data is read (see the module documentation); crash
    /// recovery is the same either way.
    pub verify_on_open: bool,
}

impl LocalOptions {
    /// Options with the given lock wait and no full integrity check.
    pub fn new(lock_wait: Duration) -> Self {
        LocalOptions {
            lock_wait,
            verify_on_open: false,
        }
    }

    /// Whether the open runs the full integrity check
    /// ([`LocalOptions::verify_on_open`]).
    pub fn with_verify_on_open(mut self, verify_on_open: bool) -> Self {
        self.verify_on_open = verify_on_open;
        self
    }
}

/// A [`Store`] in an embedded database under a directory, behind an
/// exclusive file lock held for the life of the value. Its async
/// [`Store::read`] and [`Store::txn`] run redb on tokio's blocking pool,
/// never on the executor thread; opening is blocking (see the module
/// documentation).
///
/// ```
/// # async fn demo() -> Result<(), host_etcd::store::StoreError> {
/// use std::time::Duration;
/// use host_etcd::store::{local::LocalStore, Op, Read, ReadResult, Store, Txn, TxnOutcome};
///
/// let dir = std::env::temp_dir().join(format!("host-etcd-doc-{}", std::process::id()));
/// let store = LocalStore::open(&dir, Duration::from_secs(1))?;
/// let txn = Txn { ops: vec![Op::Put("/k".into(), b"v".to_vec())], ..Txn::default() };
/// assert!(matches!(store.txn(txn).await?, TxnOutcome::Committed { .. }));
/// let got = store.read(&[Read::Get("/k".into())]).await?;
/// assert!(matches!(&got[0], ReadResult::Get(Some(v)) if v.value == b"v"));
/// # drop(store);
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct LocalStore {
    /// Shared with the blocking-pool thread running a call, which keeps it
    /// (and the lock) alive until the call is done.
    inner: Arc<Inner>,
}

/// The open store: what [`LocalStore`] shares with the thread running a
/// call.
struct Inner {
    // Declared before the lock so the database is closed before the lock
    // is released.
    db: Database,
    path: PathBuf,
    /// The record layout of this store's format version.
    format: RecordFormat,
    /// Blown on the first damage found; then nothing is written.
    fuse: Fuse,
    _lock: DirLock,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.inner.path)
            .field("format", &self.inner.format)
            .field("fuse", &self.inner.fuse)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`, waiting at most
    /// `lock_wait` for other processes holding it, without the full
    /// integrity check ([`LocalOptions::new`]).
    ///
    /// Errors: [`StoreError::Io`] naming the path when the directory, lock
    /// file or database cannot be created or read;
    /// [`StoreError::Unavailable`] when the lock is still held after
    /// `lock_wait`; [`StoreError::CorruptDatabase`] when `store.redb` is not
    /// a host-etcd database of format version 1 or 2 (the file is left as
    /// is).
    pub fn open(dir: &Path, lock_wait: Duration) -> Result<LocalStore, StoreError> {
        Self::open_with(dir, &LocalOptions::new(lock_wait))
    }

    /// Opens (creating if needed) the store in `dir` with explicit options.
    /// Errors as for [`LocalStore::open`].
    pub fn open_with(dir: &Path, options: &LocalOptions) -> Result<LocalStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        let lock = DirLock::acquire(&dir.join(LOCK_FILE), options.lock_wait)?;
        let path = dir.join(DB_FILE);
        let exists = path
            .try_exists()
            .map_err(|source| io_error(&path, source))?;
        let format = if exists {
            check_existing(&path, options.verify_on_open)?
        } else {
            create_database(dir, &path)?;
            RecordFormat::V2
        };
        let fuse = Fuse::default();
        let db = open_database(&path, &fuse)?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                db,
                path,
                format,
                fuse,
                _lock: lock,
            }),
        })
    }

    /// The database file, `<dir>/store.redb`.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current global revision (`0` for a store never written). Reads
    /// the database on the calling thread.
    pub fn revision(&self) -> Result<i64, StoreError> {
        self.inner.revision()
    }

    /// Runs `work` on the open store off the executor thread (tokio's
    /// blocking pool) when called inside a tokio runtime, in place
    /// otherwise.
    async fn off_executor<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        if tokio::runtime::Handle::try_current().is_err() {
            return inner.guarded(what, || work(&inner));
        }
        let path = inner.path.clone();
        tokio::task::spawn_blocking(move || inner.guarded(what, || work(&inner)))
            .await
            .unwrap_or_else(|e| {
                // Panics are caught inside `guarded`; what is left is a
                // runtime shutting down. The call may or may not have
                // been applied (contract point 6).
                Err(StoreError::Unavailable(format!(
                    "{}: {what}: the blocking task did not complete: {e}",
                    path.display()
                )))
            })
    }
}

impl Inner {
    /// Runs `f`, a piece of work on the database, unless damage was found
    /// before; a panic inside redb becomes [`StoreError::CorruptDatabase`],
    /// and any [`StoreError::CorruptDatabase`] blows the fuse.
    fn guarded<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(reason) = self.fuse.blown() {
            return Err(corrupt(
                &self.path,
                format!("{what}: refused, the store found damage earlier: {reason}"),
            ));
        }
        let result = without_panics(&self.path, what, f);
        if let Err(StoreError::CorruptDatabase { detail, .. }) = &result {
            self.fuse.blow(detail);
        }
        result
    }

    fn revision(&self) -> Result<i64, StoreError> {
        self.guarded("read the revision", || {
            let rtx = self
                .db
                .begin_read()
                .map_err(|e| backend_error(&self.path, "begin read", e))?;
            let meta = rtx
                .open_table(META)
                .map_err(|e| backend_error(&self.path, "open meta table", e))?;
            read_revision(&meta, &self.path)
        })
    }

    fn read_sync(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let (path, format) = (&self.path, self.format);
        let rtx = self
            .db
            .begin_read()
            .map_err(|e| backend_error(path, "begin read", e))?;
        let kv = rtx
            .open_table(KV)
            .map_err(|e| backend_error(path, "open kv table", e))?;
        reads
            .iter()
            .map(|read| match read {
                Read::Get(key) => Ok(ReadResult::Get(get(&kv, key, format, path)?)),
                Read::Range { start, end, limit } => range(&kv, start, end, *limit, format, path),
                Read::Changed {
                    start,
                    end,
                    after,
                    limit,
                } => {
                    let revision = if start < end {
                        let meta = rtx
                            .open_table(META)
                            .map_err(|e| backend_error(path, "open meta table", e))?;
                        read_revision(&meta, path)?
                    } else {
                        0
                    };
                    changed(&kv, (start, end), *after, *limit, format, path, revision)
                }
            })
            .collect()
    }

    fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let (path, format) = (&self.path, self.format);
        let mut wtx = self
            .db
            .begin_write()
            .map_err(|e| backend_error(path, "begin write", e))?;
        wtx.set_durability(Durability::Immediate)
            .map_err(|e| backend_error(path, "set durability", e))?;
        let outcome = {
            let mut kv = wtx
                .open_table(KV)
                .map_err(|e| backend_error(path, "open kv table", e))?;
            let mut meta = wtx
                .open_table(META)
                .map_err(|e| backend_error(path, "open meta table", e))?;
            let mut holds = true;
            for compare in &txn.compares {
                let current = get(&kv, &compare.key, format, path)?;
                let ok = compare.expect.holds(current.as_ref());
                if !ok {
                    holds = false;
                    break;
                }
            }
            if !holds {
                let mut current = Vec::with_capacity(txn.read_on_conflict.len());
                for key in &txn.read_on_conflict {
                    current.push((key.clone(), get(&kv, key, format, path)?));
                }
                TxnOutcome::Conflict { current }
            } else if txn.ops.is_empty() {
                TxnOutcome::Committed {
                    revision: read_revision(&meta, path)?,
                }
            } else {
                let revision = read_revision(&meta, path)?
                    .checked_add(1)
                    .ok_or_else(|| corrupt(path, "the global revision overflowed".into()))?;
                for op in &txn.ops {
                    apply(&mut kv, op, revision, format, path)?;
                }
                meta.insert(META_REVISION, revision.to_le_bytes().as_slice())
                    .map_err(|e| backend_error(path, "store the revision", e))?;
                TxnOutcome::Committed { revision }
            }
        };
        match outcome {
            TxnOutcome::Committed { .. } if !txn.ops.is_empty() => {
                wtx.commit().map_err(|e| backend_error(path, "commit", e))?
            }
            _ => wtx.abort().map_err(|e| backend_error(path, "abort", e))?,
        }
        Ok(outcome)
    }
}

impl Store for LocalStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let reads = reads.to_vec();
        self.off_executor("read", move |inner| inner.read_sync(&reads))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.off_executor("transaction", move |inner| inner.txn_sync(txn))
            .await
    }
}

/// Initializes a new database with the marker under [`NEW_FILE`], durably,
/// and renames it to `path` (then syncs the directory), so that `path` never
/// names a half-initialized database.
fn create_database(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let new_path = dir.join(NEW_FILE);
    // A leftover from a crash during an earlier creation: ours, unused.
    match fs::remove_file(&new_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(&new_path, source)),
    }
    let db = Database::builder()
        .create(&new_path)
        .map_err(|e| backend_error(&new_path, "create database", e))?;
    let mut wtx = db
        .begin_write()
        .map_err(|e| backend_error(&new_path, "begin write", e))?;
    wtx.set_durability(Durability::Immediate)
        .map_err(|e| backend_error(&new_path, "set durability", e))?;
    {
        let mut meta = wtx
            .open_table(META)
            .map_err(|e| backend_error(&new_path, "create meta table", e))?;
        let entries: [(&str, &[u8]); 3] = [
            (META_MAGIC, MAGIC),
            (META_FORMAT, &FORMAT_VERSION.to_le_bytes()),
            (META_REVISION, &0i64.to_le_bytes()),
        ];
        for (key, value) in entries {
            meta.insert(key, value)
                .map_err(|e| backend_error(&new_path, "write the format marker", e))?;
        }
        wtx.open_table(KV)
            .map_err(|e| backend_error(&new_path, "create kv table", e))?;
    }
    wtx.commit()
        .map_err(|e| backend_error(&new_path, "commit the format marker", e))?;
    db.close()
        .map_err(|e| backend_error(&new_path, "close new database", e))?;
    fs::rename(&new_path, path).map_err(|source| io_error(path, source))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error(dir, source))
}

/// Cache of the handles that only check a file before it is opened for
/// writing: they read a few pages, or walk the file once.
const CHECK_CACHE: usize = 4 << 20;
/// Cache of the open store.
const STORE_CACHE: usize = 64 << 20;

/// Checks that the existing file at `path` is a host-etcd database, without
/// writing to it, and returns its record layout: through a read-only redb
/// handle, which reads a bounded amount; when redb cannot open the file
/// read-only (it was not shut down cleanly and needs a recovery, which
/// writes) or `verify` asks for redb's integrity check (which commits), on an
/// in-memory copy of the file, so neither touches a file that may be foreign.
fn check_existing(path: &Path, verify: bool) -> Result<RecordFormat, StoreError> {
    without_panics(path, "check the database", || {
        if !verify {
            match Database::builder()
                .set_cache_size(CHECK_CACHE)
                .open_read_only(path)
            {
                Ok(db) => {
                    let format = check_marker(&db, path)?;
                    db.close()
                        .map_err(|e| backend_error(path, "close read-only handle", e))?;
                    return Ok(format);
                }
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(backend_error(path, "open database read-only", e)),
            }
        }
        check_copy(path, verify)
    })
}

/// [`check_existing`] on an in-memory copy of the file, where redb may run
/// its recovery (and, with `verify`, its integrity check).
fn check_copy(path: &Path, verify: bool) -> Result<RecordFormat, StoreError> {
    let bytes = fs::read(path).map_err(|source| io_error(path, source))?;
    if bytes.is_empty() {
        return Err(corrupt(path, "an empty file, not a redb database".into()));
    }
    let copy = InMemoryBackend::new();
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    StorageBackend::set_len(&copy, len)
        .and_then(|()| StorageBackend::write(&copy, 0, &bytes))
        .map_err(|e| backend_error(path, "copy database to memory", redb::StorageError::from(e)))?;
    drop(bytes);
    let db = Database::builder()
        .set_cache_size(CHECK_CACHE)
        .set_check_integrity_on_open(verify)
        .create_with_backend(copy)
        .map_err(|e| backend_error(path, "open a copy of the database", e))?;
    check_marker(&db, path)
}

/// Opens for writing, behind `fuse`, an existing database file that
/// [`check_existing`] accepted.
fn open_database(path: &Path, fuse: &Fuse) -> Result<Database, StoreError> {
    let result = without_panics(path, "open database", || {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        let backend = FusedFile::new(file, fuse.clone())
            .map_err(|e| backend_error(path, "open database", e))?;
        // The file is not empty (the check opened it), so this opens it and
        // never initializes a new database over it.
        Database::builder()
            .set_cache_size(STORE_CACHE)
            .create_with_backend(backend)
            .map_err(|e| backend_error(path, "open database", e))
    });
    if let Err(StoreError::CorruptDatabase { detail, .. }) = &result {
        fuse.blow(detail);
    }
    result
}

/// Runs `f`, reporting a panic (redb on some damaged pages) as
/// [`StoreError::CorruptDatabase`] of `path` while doing `what`.
fn without_panics<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Nothing of the unwound call is used afterwards except through the
    // fuse, which refuses all further work on the database.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(corrupt(
                path,
                format!("{what}: the database engine failed on damaged data (panic: {message})"),
            ))
        }
    }
}

/// Checks the host-etcd marker, the format version and the tables, and
/// returns the record layout of the format version.
fn check_marker(db: &impl ReadableDatabase, path: &Path) -> Result<RecordFormat, StoreError> {
    let rtx = db
        .begin_read()
        .map_err(|e| backend_error(path, "begin read", e))?;
    let meta = match rtx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(corrupt(
                path,
                "a redb database without the host-etcd marker (no \"meta\" table)".into(),
            ))
        }
        Err(e) => return Err(backend_error(path, "open meta table", e)),
    };
    let magic = meta
        .get(META_MAGIC)
        .map_err(|e| backend_error(path, "read the marker", e))?;
    if magic.as_ref().map(|m| m.value()) != Some(MAGIC) {
        return Err(corrupt(
            path,
            "a redb database without the host-etcd marker (meta \"magic\" missing or different)"
                .into(),
        ));
    }
    let format = meta
        .get(META_FORMAT)
        .map_err(|e| backend_error(path, "read the format version", e))?
        .ok_or_else(|| corrupt(path, "the format version is missing".into()))?;
    let version = decode_format(format.value()).map_err(|d| corrupt(path, d))?;
    let layout = RecordFormat::of_version(version).ok_or_else(|| {
        corrupt(
            path,
            format!("unknown format version {version} (this build reads 1 to {FORMAT_VERSION})"),
        )
    })?;
    read_revision(&meta, path)?;
    match rtx.open_table(KV) {
        Ok(_) => Ok(layout),
        Err(redb::TableError::TableDoesNotExist(_)) => {
            Err(corrupt(path, "the \"kv\" table is missing".into()))
        }
        Err(e) => Err(backend_error(path, "open kv table", e)),
    }
}

fn read_revision(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<i64, StoreError> {
    let stored = meta
        .get(META_REVISION)
        .map_err(|e| backend_error(path, "read the revision", e))?
        .ok_or_else(|| corrupt(path, "the global revision is missing".into()))?;
    decode_revision(stored.value()).map_err(|d| corrupt(path, d))
}

fn get(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    format: RecordFormat,
    path: &Path,
) -> Result<Option<Versioned>, StoreError> {
    let Some(stored) = kv
        .get(key)
        .map_err(|e| backend_error(path, &format!("read key {key:?}"), e))?
    else {
        return Ok(None);
    };
    decode_record(format, key, stored.value())
        .map(Some)
        .map_err(|d| corrupt(path, format!("key {key:?}: {d}")))
}

fn range(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    start: &str,
    end: &str,
    limit: usize,
    format: RecordFormat,
    path: &Path,
) -> Result<ReadResult, StoreError> {
    let mut kvs = Vec::new();
    if start >= end {
        return Ok(ReadResult::Range { kvs, more: false });
    }
    let what = || format!("read range [{start:?}, {end:?})");
    let iter = kv
        .range::<&str>(start..end)
        .map_err(|e| backend_error(path, &what(), e))?;
    for entry in iter {
        if limit != 0 && kvs.len() == limit {
            return Ok(ReadResult::Range { kvs, more: true });
        }
        let (key, value) = entry.map_err(|e| backend_error(path, &what(), e))?;
        let key = key.value();
        let versioned = decode_record(format, key, value.value())
            .map_err(|d| corrupt(path, format!("key {key:?}: {d}")))?;
        kvs.push((Key::from(key), versioned));
    }
    Ok(ReadResult::Range { kvs, more: false })
}

/// [`Read::Changed`] on the embedded store: walks the interval once,
/// counting every key (each record is decoded: its revision is inside).
fn changed(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    (start, end): (&str, &str),
    after: i64,
    limit: usize,
    format: RecordFormat,
    path: &Path,
    revision: i64,
) -> Result<ReadResult, StoreError> {
    if start >= end {
        return super::collect_changed(std::iter::empty(), after, limit, 0);
    }
    let what = || format!("read range [{start:?}, {end:?})");
    let iter = kv
        .range::<&str>(start..end)
        .map_err(|e| backend_error(path, &what(), e))?;
    let keys = iter.map(|entry| {
        let (key, value) = entry.map_err(|e| backend_error(path, &what(), e))?;
        let key = key.value();
        let versioned = decode_record(format, key, value.value())
            .map_err(|d| corrupt(path, format!("key {key:?}: {d}")))?;
        Ok((Key::from(key), versioned))
    });
    super::collect_changed(keys, after, limit, revision)
}

fn apply(
    kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
    op: &Op,
    revision: i64,
    format: RecordFormat,
    path: &Path,
) -> Result<(), StoreError> {
    match op {
        Op::Put(key, value) => {
            let create = get(kv, key, format, path)?.map_or(revision, |v| v.create_revision);
            let record = encode_record(format, key, revision, create, value);
            kv.insert(key.as_str(), record.as_slice())
                .map_err(|e| backend_error(path, &format!("write key {key:?}"), e))?;
        }
        Op::Delete(key) => {
            kv.remove(key.as_str())
                .map_err(|e| backend_error(path, &format!("delete key {key:?}"), e))?;
        }
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::CorruptDatabase {
        path: path.to_path_buf(),
        detail,
    }
}

/// Maps a redb error met while doing `what` on the database at `path`.
fn backend_error(path: &Path, what: &str, err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        // redb reports "not a redb database" as InvalidData.
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            corrupt(path, format!("{what}: {source}"))
        }
        redb::Error::Io(source) => io_error(path, source),
        redb::Error::Corrupted(detail) => corrupt(path, format!("{what}: {detail}")),
        redb::Error::UpgradeRequired(version) => corrupt(
            path,
            format!("{what}: redb file format {version} is not readable by this build"),
        ),
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => corrupt(
            path,
            format!("{what}: a table has another layout than host-etcd's ({e})"),
        ),
        redb::Error::ValueTooLarge(len) => StoreError::Refused(
            format!(
                "{}: {what}: {len} bytes exceed the embedded store's limit",
                path.display()
            )
            .into(),
        ),
        e => StoreError::Unavailable(format!("{}: {what}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;

    /// A transaction waiting for redb (here: for another write transaction
    /// to end) leaves the runtime's one thread to other tasks. Were the
    /// redb work run on the executor thread, the spawned transaction's
    /// first poll would block that thread, and the task that ends the other
    /// write transaction would never run.
    #[test]
    fn a_transaction_waiting_on_redb_leaves_the_executor_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::open(dir.path(), Duration::from_secs(5)).expect("open"));
        let held = store.inner.db.begin_write().expect("begin write");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let outcome = runtime.block_on(async {
            let waiting = tokio::spawn({
                let store = Arc::clone(&store);
                async move {
                    let txn = Txn {
                        ops: vec![Op::Put("/k".into(), b"v".to_vec())],
                        ..Txn::default()
                    };
                    store.txn(txn).await
                }
            });
            // Lets the spawned task start its transaction.
            tokio::task::yield_now().await;
            held.abort().expect("abort the held transaction");
            waiting.await.expect("task")
        });
        assert!(
            matches!(outcome, Ok(TxnOutcome::Committed { revision: 1 })),
            "{outcome:?}"
        );
        assert_eq!(store.revision().expect("revision"), 1);
    }
}
