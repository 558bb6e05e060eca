//! A [`Store`] wrapper that commits another writer's transaction just
//! before the next transaction sent through it: the moment between an
//! operation's reads and its write. For tests of compare-and-swap paths
//! (repair, release) against a concurrent writer, on any backend.
//!
//! ```
//! use host_etcd::store::interleaved::Interleaved;
//! use host_etcd::store::memory::MemoryStore;
//! use host_etcd::store::{Compare, Expect, Op, Store, Txn, TxnOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), host_etcd::StoreError> {
//! let store = Interleaved::new(MemoryStore::new());
//! let put = |value: &[u8]| Txn {
//!     compares: vec![Compare { key: "/k".into(), expect: Expect::Absent }],
//!     ops: vec![Op::Put("/k".into(), value.to_vec())],
//!     read_on_conflict: vec!["/k".into()],
//! };
//! // The other writer creates the key first, so our create conflicts.
//! store.before_next_txn(put(b"theirs"));
//! let out = store.txn(put(b"ours")).await?;
//! assert!(matches!(out, TxnOutcome::Conflict { .. }));
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::sync::Mutex;

use super::{Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// Wraps a store; see the module docs.
pub struct Interleaved<S> {
    inner: S,
    pending: Mutex<Option<Txn>>,
}

impl<S> Interleaved<S> {
    /// Wraps `inner` with nothing to interleave.
    pub fn new(inner: S) -> Self {
        Interleaved {
            inner,
            pending: Mutex::new(None),
        }
    }

    /// The wrapped store (reads and writes through it interleave nothing).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Commits `txn` just before the next transaction sent through this
    /// wrapper (replacing one set earlier and not yet sent).
    pub fn before_next_txn(&self, txn: Txn) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(txn);
    }
}

impl<S: Store> Store for Interleaved<S> {
    fn read(
        &self,
        reads: &[Read],
    ) -> impl Future<Output = Result<Vec<ReadResult>, StoreError>> + Send {
        self.inner.read(reads)
    }

    /// Commits the pending transaction first, if any; a pending
    /// transaction that does not commit fails this call with
    /// [`StoreError::Refused`] (the scenario the test set up did not
    /// happen).
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome, StoreError>> + Send {
        let other = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        async move {
            if let Some(other) = other {
                let out = self.inner.txn(other).await?;
                if !matches!(out, TxnOutcome::Committed { .. }) {
                    return Err(StoreError::Refused(
                        format!("the interleaved transaction did not commit: {out:?}").into(),
                    ));
                }
            }
            self.inner.txn(txn).await
        }
    }
}
