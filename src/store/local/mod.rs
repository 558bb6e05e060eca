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
//! A file at `store.redb` that is not a redb database, or a redb database
//! without the host-etcd marker or with another format version, is reported
//! as [`StoreError::CorruptDatabase`] and left byte-for-byte untouched: the
//! marker is checked through a read-only handle, or on an in-memory copy of
//! the file when redb would have to write to open it (repair after a crash,
//! integrity check), and only then is the file opened for writing.

mod format;
mod lock;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::backends::InMemoryBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, StorageBackend};

use self::format::{
    decode_format, decode_record, decode_revision, encode_record, DB_FILE, FORMAT_VERSION, KV,
    LOCK_FILE, MAGIC, META, META_FORMAT, META_MAGIC, META_REVISION, NEW_FILE,
};
use self::lock::DirLock;
use super::{Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned};

/// How [`LocalStore::open_with`] opens a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOptions {
    /// How long to wait for another process holding the directory's lock.
    pub lock_wait: Duration,
    /// Verify the checksum of every page of the database on open (redb's
    /// integrity check, run on an in-memory copy of the file), so that a
    /// file damaged outside redb is reported as
    /// [`StoreError::CorruptDatabase`] instead of being trusted. Costs one
    /// read of the whole file per open. When `false`, a file that starts
    /// with redb's magic number is trusted as redb trusts it (redb may panic
    /// on a file damaged outside redb); crash recovery is unaffected.
    pub verify_on_open: bool,
}

impl LocalOptions {
    /// Options with the given lock wait and the integrity check on.
    pub fn new(lock_wait: Duration) -> Self {
        LocalOptions {
            lock_wait,
            verify_on_open: true,
        }
    }
}

/// A [`Store`] in an embedded database under a directory, behind an
/// exclusive file lock held for the life of the value.
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
    // Declared before the lock so the database is closed before the lock
    // is released.
    db: Database,
    path: PathBuf,
    _lock: DirLock,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`, waiting at most
    /// `lock_wait` for other processes holding it. Runs the integrity check
    /// of [`LocalOptions::verify_on_open`].
    ///
    /// Errors: [`StoreError::Io`] naming the path when the directory, lock
    /// file or database cannot be created or read;
    /// [`StoreError::Unavailable`] when the lock is still held after
    /// `lock_wait`; [`StoreError::CorruptDatabase`] when `store.redb` is not
    /// a host-etcd database of format version 1 (the file is left as is).
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
        if exists {
            check_existing(&path, options.verify_on_open)?;
        } else {
            create_database(dir, &path)?;
        }
        let db = open_database(&path)?;
        Ok(LocalStore {
            db,
            path,
            _lock: lock,
        })
    }

    /// The database file, `<dir>/store.redb`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current global revision (`0` for a store never written).
    pub fn revision(&self) -> Result<i64, StoreError> {
        let rtx = self
            .db
            .begin_read()
            .map_err(|e| backend_error(&self.path, "begin read", e))?;
        let meta = rtx
            .open_table(META)
            .map_err(|e| backend_error(&self.path, "open meta table", e))?;
        read_revision(&meta, &self.path)
    }

    fn read_sync(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let path = &self.path;
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
                Read::Get(key) => Ok(ReadResult::Get(get(&kv, key, path)?)),
                Read::Range { start, end, limit } => range(&kv, start, end, *limit, path),
            })
            .collect()
    }

    fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let path = &self.path;
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
                let current = get(&kv, &compare.key, path)?;
                let ok = compare.expect.holds(current.as_ref());
                if !ok {
                    holds = false;
                    break;
                }
            }
            if !holds {
                let mut current = Vec::with_capacity(txn.read_on_conflict.len());
                for key in &txn.read_on_conflict {
                    current.push((key.clone(), get(&kv, key, path)?));
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
                    apply(&mut kv, op, revision, path)?;
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
        self.read_sync(reads)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.txn_sync(txn)
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

/// Checks that the existing file at `path` is a host-etcd database, without
/// writing to it: first through a read-only redb handle; when redb cannot
/// open the file read-only (it was not shut down cleanly and needs a repair,
/// which writes) or `verify` asks for redb's integrity check (which commits),
/// on an in-memory copy of the file, so neither touches a file that may be
/// foreign.
fn check_existing(path: &Path, verify: bool) -> Result<(), StoreError> {
    if !verify {
        match Database::builder().open_read_only(path) {
            Ok(db) => {
                check_marker(&db, path)?;
                return db
                    .close()
                    .map_err(|e| backend_error(path, "close read-only handle", e));
            }
            Err(redb::DatabaseError::RepairAborted) => {}
            Err(e) => return Err(backend_error(path, "open database read-only", e)),
        }
    }
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
        .set_check_integrity_on_open(verify)
        .create_with_backend(copy)
        .map_err(|e| backend_error(path, "open a copy of the database", e))?;
    check_marker(&db, path)
}

/// Opens an existing database file that [`check_existing`] accepted.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(64 << 20)
        .open(path)
        .map_err(|e| backend_error(path, "open database", e))
}

/// Checks the host-etcd marker, the format version and the tables.
fn check_marker(db: &impl ReadableDatabase, path: &Path) -> Result<(), StoreError> {
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
    if version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!("unknown format version {version} (this build reads {FORMAT_VERSION})"),
        ));
    }
    read_revision(&meta, path)?;
    match rtx.open_table(KV) {
        Ok(_) => Ok(()),
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
    path: &Path,
) -> Result<Option<Versioned>, StoreError> {
    let Some(stored) = kv
        .get(key)
        .map_err(|e| backend_error(path, &format!("read key {key:?}"), e))?
    else {
        return Ok(None);
    };
    decode_record(stored.value())
        .map(Some)
        .map_err(|d| corrupt(path, format!("key {key:?}: {d}")))
}

fn range(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    start: &str,
    end: &str,
    limit: usize,
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
        let versioned =
            decode_record(value.value()).map_err(|d| corrupt(path, format!("key {key:?}: {d}")))?;
        kvs.push((Key::from(key), versioned));
    }
    Ok(ReadResult::Range { kvs, more: false })
}

fn apply(
    kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
    op: &Op,
    revision: i64,
    path: &Path,
) -> Result<(), StoreError> {
    match op {
        Op::Put(key, value) => {
            let create = get(kv, key, path)?.map_or(revision, |v| v.create_revision);
            let record = encode_record(revision, create, value);
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
        redb::Error::ValueTooLarge(len) => StoreError::Refused(format!(
            "{}: {what}: {len} bytes exceed the embedded store's limit",
            path.display()
        )),
        e => StoreError::Unavailable(format!("{}: {what}: {e}", path.display())),
    }
}
