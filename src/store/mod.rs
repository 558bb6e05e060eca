//! Persistence: the [`Store`] trait, its contract, and its backends.
//!
//! A store is a versioned key-value map with etcd's semantics, reduced to the
//! two calls the allocator needs:
//!
//! * [`Store::read`] — several point gets and bounded range reads, answered
//!   from **one consistent snapshot** in **one round trip**;
//! * [`Store::txn`] — one multi-key compare-and-swap transaction: *if* every
//!   [`Compare`] holds, apply every [`Op`] atomically; *else* return the
//!   current values of the keys named in [`Txn::read_on_conflict`] from the
//!   same snapshot the compares failed against. A conflict is a value
//!   ([`TxnOutcome::Conflict`]), not an error.
//!
//! ## The contract every backend must keep
//!
//! 1. **Revisions.** The store has one global revision, a positive `i64` that
//!    grows by at least one with every committed transaction that changes
//!    something. Each stored key carries `create_revision` (the revision of
//!    the transaction that created it since it was last absent) and
//!    `mod_revision` (the revision of its last change). Both are `> 0` for a
//!    present key. Deleting a key and creating it again gives it a new
//!    `create_revision`.
//! 2. **Compares.** [`Expect::Absent`] holds iff the key does not exist;
//!    [`Expect::ModRevision`]`(r)` holds iff the key exists and its
//!    `mod_revision == r`; [`Expect::Value`]`(b)` holds iff the key exists
//!    and its value is exactly `b`. All compares of one transaction are evaluated
//!    against the same snapshot, and the ops are applied atomically on that
//!    snapshot: no other writer can interleave.
//! 3. **Ops.** Applied in order; a later op on the same key wins. Deleting an
//!    absent key is a no-op. A transaction with no ops still evaluates its
//!    compares (and can serve as a consistent read).
//! 4. **Reads.** Every [`Read`] in one [`Store::read`] call sees the same
//!    snapshot. [`Read::Range`] returns the present keys `k` with
//!    `start <= k < end` in ascending byte order, at most `limit` of them
//!    (`limit == 0` means no limit), and whether more keys in the interval
//!    exist beyond the ones returned. [`Read::Changed`] is the same walk
//!    keeping only keys with `mod_revision > after`; its answer also counts
//!    every present key of the interval (filtered or not) and names the
//!    snapshot's revision: the store's revision when it was taken, `>=` the
//!    `mod_revision` of every key it holds. A reader that applies the
//!    changed keys to its copy of an interval and compares the count learns
//!    whether keys were deleted, without reading the unchanged ones.
//! 5. **Keys** are non-empty UTF-8 strings; byte order is the order. Values are
//!    arbitrary bytes. A backend never interprets either.
//! 6. **Errors** are [`StoreError`]s; etcd, redb or other backend types never
//!    cross this seam. A call that fails with [`StoreError::Unavailable`] may
//!    or may not have been applied (e.g. the connection dropped after the
//!    commit); callers re-read and use compares to converge, never blind
//!    writes.
//! 7. **Deadlines.** Backends that do I/O bound every call by a deadline and
//!    report [`StoreError::Unavailable`] when it passes.
//!
//! [`memory::MemoryStore`] is the reference implementation; the contract test
//! suite (`tests/support/contract.rs`, run by `tests/store_contract.rs`) runs
//! the same checks against every backend.
//!
//! One difference the contract allows: a `Delete(k)` followed by `Put(k)` in
//! one transaction keeps etcd's old `create_revision` (etcd applies only the
//! last op per key), while the memory and embedded stores give a new one. The
//! allocator never relies on `create_revision`.

use std::future::Future;
use std::path::PathBuf;

pub(crate) mod any;
pub mod counting;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod interleaved;
pub mod local;
pub mod memory;

/// A store key: a non-empty UTF-8 string, ordered by bytes.
pub type Key = String;

/// A stored value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Revision of the last change to this key (`> 0`).
    pub mod_revision: i64,
    /// Revision at which this key was created (`> 0`).
    pub create_revision: i64,
}

/// One read inside a [`Store::read`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The value of one key, or `None` if absent.
    Get(Key),
    /// Present keys in `[start, end)`, ascending, at most `limit` (`0` = all).
    Range {
        /// Inclusive lower bound.
        start: Key,
        /// Exclusive upper bound.
        end: Key,
        /// Maximum number of keys to return; `0` means no limit.
        limit: usize,
    },
    /// Present keys in `[start, end)` changed after revision `after`
    /// (`mod_revision > after`), ascending, at most `limit` (`0` = all),
    /// with the interval's key count and the snapshot's revision. `after`
    /// of 0 or less keeps every key.
    Changed {
        /// Inclusive lower bound.
        start: Key,
        /// Exclusive upper bound.
        end: Key,
        /// Keys with `mod_revision <= after` are left out (but counted).
        after: i64,
        /// Maximum number of keys to return; `0` means no limit.
        limit: usize,
    },
}

impl Read {
    /// A read of how many keys `[start, end)` holds that sends none of
    /// them: a [`Read::Changed`] after the last possible revision. Its
    /// answer is a [`ReadResult::Changed`] with no keys.
    ///
    /// ```
    /// use host_etcd::store::{memory::MemoryStore, Op, Read, ReadResult, Store, Txn};
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let store = MemoryStore::new();
    /// let ops = vec![Op::Put("/a/1".into(), vec![1]), Op::Put("/a/2".into(), vec![2])];
    /// store.txn(Txn { ops, ..Txn::default() }).await?;
    /// let got = store.read(&[Read::count("/a/".into(), "/a0".into())]).await?;
    /// assert!(matches!(&got[0], ReadResult::Changed { kvs, total: 2, .. } if kvs.is_empty()));
    /// # Ok::<(), host_etcd::store::StoreError>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(start: Key, end: Key) -> Read {
        Read::Changed {
            start,
            end,
            after: i64::MAX,
            limit: 1,
        }
    }
}

/// Answers a [`Read::Changed`] from the present keys of its interval, in
/// order (for the backends that walk their own keys): keeps the keys
/// changed after `after`, at most `limit` of them (`0`: all), and counts
/// every key. `revision` is the snapshot's.
pub(crate) fn collect_changed<E>(
    keys: impl Iterator<Item = Result<(Key, Versioned), E>>,
    after: i64,
    limit: usize,
    revision: i64,
) -> Result<ReadResult, E> {
    let (mut kvs, mut more, mut total) = (Vec::new(), false, 0u64);
    for entry in keys {
        let (key, v) = entry?;
        total += 1;
        if v.mod_revision <= after {
            continue;
        }
        if limit != 0 && kvs.len() == limit {
            more = true;
        } else {
            kvs.push((key, v));
        }
    }
    Ok(ReadResult::Changed {
        kvs,
        more,
        total,
        revision,
    })
}

/// The answer to one [`Read`], in the same position as the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Answer to [`Read::Get`].
    Get(Option<Versioned>),
    /// Answer to [`Read::Range`].
    Range {
        /// The keys found, ascending.
        kvs: Vec<(Key, Versioned)>,
        /// `true` if keys beyond the returned ones exist in the interval.
        more: bool,
    },
    /// Answer to [`Read::Changed`].
    Changed {
        /// The changed keys found, ascending.
        kvs: Vec<(Key, Versioned)>,
        /// `true` if changed keys beyond the returned ones exist.
        more: bool,
        /// How many keys the interval holds, changed or not.
        total: u64,
        /// The revision of the snapshot the answer comes from (0 when the
        /// interval is empty, `start >= end`, and nothing was read).
        revision: i64,
    },
}

/// What a [`Compare`] expects of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (etcd: `create_revision == 0`).
    Absent,
    /// The key exists and its `mod_revision` equals this value.
    ModRevision(i64),
    /// The key exists and its value equals these bytes (etcd: a `VALUE`
    /// compare). Used for values remembered across operations (a node's
    /// cache): equal bytes mean the state planned against is the current
    /// state, whatever happened to revisions in between (a restored or
    /// replaced store reuses revision numbers, never a value by accident).
    Value(Vec<u8>),
}

impl Expect {
    /// Whether a key in state `current` satisfies this expectation.
    pub fn holds(&self, current: Option<&Versioned>) -> bool {
        match (current, self) {
            (None, Expect::Absent) => true,
            (Some(v), Expect::ModRevision(r)) => v.mod_revision == *r,
            (Some(v), Expect::Value(bytes)) => v.value == *bytes,
            _ => false,
        }
    }
}

/// One condition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Key,
    /// The expected state.
    pub expect: Expect,
}

/// One write of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite a key.
    Put(Key, Vec<u8>),
    /// Delete a key (no-op when absent).
    Delete(Key),
}

/// A compare-and-swap transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `ops` to be applied.
    pub compares: Vec<Compare>,
    /// Applied atomically, in order, when every compare holds.
    pub ops: Vec<Op>,
    /// When a compare fails: the keys whose current values are returned.
    pub read_on_conflict: Vec<Key>,
}

/// The result of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held; the ops were applied at this revision.
    Committed {
        /// The store revision after the commit.
        revision: i64,
    },
    /// A compare failed; nothing was written.
    Conflict {
        /// The current value (or absence) of each key in
        /// [`Txn::read_on_conflict`], in the same order.
        current: Vec<(Key, Option<Versioned>)>,
    },
}

/// Errors of the persistence layer. Backend-specific errors are mapped into
/// these at the backend's edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time (etcd down, no
    /// quorum, deadline passed, file lock wait exceeded). Transient: the
    /// caller may try again later. The operation may or may not have been
    /// applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local file or directory operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A database file exists but is not a usable host-etcd store (corrupt,
    /// foreign, or of an unknown version). Never silently reset.
    #[error("store at {} is corrupt or not a host-etcd database: {detail}", path.display())]
    CorruptDatabase {
        /// The database path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The store configuration is unusable (bad endpoint, unreadable TLS
    /// file, invalid certificate).
    #[error("store configuration invalid: {0}")]
    Config(String),
    /// The store refused the request (authentication failed, permission
    /// denied, request too large). From etcd, the [`Refusal`] carries the
    /// gRPC status code it answered with.
    #[error("store refused the request: {0}")]
    Refused(Refusal),
    /// The store refuses writes for lack of space (etcd: the NOSPACE alarm
    /// is raised, the database reached `--quota-backend-bytes`; the
    /// [`Refusal`]'s code is [`GrpcCode::ResourceExhausted`]). Reads and
    /// deletions still work; writes fail until an operator frees space
    /// (compact, defragment, `etcdctl alarm disarm`).
    #[error("store has no space for writes (etcd NOSPACE alarm: compact, defragment, then `etcdctl alarm disarm`): {0}")]
    NoSpace(Refusal),
}

impl StoreError {
    /// The gRPC status code etcd answered a refused request with
    /// ([`StoreError::Refused`], [`StoreError::NoSpace`]); `None` for every
    /// other error, and for refusals of other backends. (A
    /// [`StoreError::Unavailable`] is transient whatever its cause, so it
    /// keeps only its message, which names the code.)
    pub fn grpc_code(&self) -> Option<GrpcCode> {
        match self {
            StoreError::Refused(r) | StoreError::NoSpace(r) => r.code(),
            _ => None,
        }
    }
}

/// Why a store refused a request ([`StoreError::Refused`],
/// [`StoreError::NoSpace`]): a message, and, from etcd, the gRPC status
/// code of its answer. Reads as its message (`Display`, and `Deref` to
/// `str`).
///
/// ```
/// use host_etcd::store::{GrpcCode, Refusal, StoreError};
/// let e = StoreError::Refused(Refusal::new("etcdserver: permission denied")
///     .with_code(GrpcCode::PermissionDenied));
/// assert_eq!(e.grpc_code(), Some(GrpcCode::PermissionDenied));
/// assert!(matches!(&e, StoreError::Refused(m) if m.contains("permission denied")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    message: String,
    code: Option<GrpcCode>,
}

impl Refusal {
    /// A refusal with `message` and no status code.
    pub fn new(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            code: None,
        }
    }

    /// The same refusal, answered with gRPC status `code`.
    pub fn with_code(mut self, code: GrpcCode) -> Self {
        self.code = Some(code);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The gRPC status code of etcd's answer, when there was one.
    pub fn code(&self) -> Option<GrpcCode> {
        self.code
    }
}

impl std::ops::Deref for Refusal {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal::new(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        Refusal::new(message)
    }
}

/// A gRPC status code (fixed by the gRPC specification), as etcd answers
/// with them; kept in a [`Refusal`] so callers need no gRPC crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// Not an error.
    Ok = 0,
    /// The call was cancelled (etcd-client: the connection closed under it).
    Cancelled = 1,
    /// Unknown error (tonic: a transport failure).
    Unknown = 2,
    /// etcd: authentication failed, too many operations, request too large.
    InvalidArgument = 3,
    /// The deadline passed.
    DeadlineExceeded = 4,
    /// Not found.
    NotFound = 5,
    /// Already exists.
    AlreadyExists = 6,
    /// etcd: the user's role does not grant the key.
    PermissionDenied = 7,
    /// etcd: too many requests, or database space exceeded (NOSPACE).
    ResourceExhausted = 8,
    /// etcd: e.g. authentication not enabled.
    FailedPrecondition = 9,
    /// Aborted.
    Aborted = 10,
    /// Out of range.
    OutOfRange = 11,
    /// Not implemented by the server.
    Unimplemented = 12,
    /// Server-internal error.
    Internal = 13,
    /// etcd: no leader, member unreachable.
    Unavailable = 14,
    /// Data loss.
    DataLoss = 15,
    /// etcd: invalid or expired auth token.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code with this number; `None` outside the specification's 0..=16.
    pub fn from_i32(code: i32) -> Option<GrpcCode> {
        use GrpcCode::*;
        [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ]
        .into_iter()
        .find(|c| *c as i32 == code)
    }
}

/// A copy of the error (an I/O error is copied as its kind and message):
/// one failed group commit answers every caller in the group.
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::CorruptDatabase { path, detail } => StoreError::CorruptDatabase {
                path: path.clone(),
                detail: detail.clone(),
            },
            StoreError::Config(m) => StoreError::Config(m.clone()),
            StoreError::Refused(m) => StoreError::Refused(m.clone()),
            StoreError::NoSpace(m) => StoreError::NoSpace(m.clone()),
        }
    }
}

/// A versioned key-value store with one-round-trip reads and multi-key
/// compare-and-swap transactions. See the [module docs](self) for the
/// contract every implementation keeps.
pub trait Store: Send + Sync {
    /// Answers every read from one consistent snapshot, in one round trip.
    /// The result has one entry per request, in order.
    fn read(
        &self,
        reads: &[Read],
    ) -> impl Future<Output = Result<Vec<ReadResult>, StoreError>> + Send;

    /// Runs one compare-and-swap transaction in one round trip.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome, StoreError>> + Send;
}

/// `Store` for references and shared pointers to a store: every call goes
/// to the store they point to.
macro_rules! forward_store {
    ($($ptr:ty),*) => {$(
        impl<S: Store + ?Sized> Store for $ptr {
            fn read(
                &self,
                reads: &[Read],
            ) -> impl Future<Output = Result<Vec<ReadResult>, StoreError>> + Send {
                (**self).read(reads)
            }

            fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome, StoreError>> + Send {
                (**self).txn(txn)
            }
        }
    )*};
}

forward_store!(&S, std::sync::Arc<S>);

/// The smallest key strictly greater than every key starting with `prefix`
/// (etcd's "range end for a prefix"). Used to turn a prefix into a
/// [`Read::Range`].
///
/// ```
/// assert_eq!(host_etcd::store::prefix_end("/a/"), "/a0");
/// ```
pub fn prefix_end(prefix: &str) -> Key {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Keys are ASCII in this crate, so this stays valid UTF-8.
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    // Only 0x7f bytes (or empty): everything sorts below "\u{7f}\u{7f}...".
    "\u{7f}".repeat(prefix.len() + 1)
}
