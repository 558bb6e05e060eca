//! A [`Store`] wrapper that counts round trips, for tests that pin the
//! protocol's cost (a cold ADD is two calls, a warm one one) and for the
//! benchmark tool's "round trips per allocation".

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// Wraps a store and counts every `read` and `txn` call made through it.
pub struct CountingStore<S> {
    inner: S,
    reads: AtomicU64,
    txns: AtomicU64,
    conflicts: AtomicU64,
    bytes_written: AtomicU64,
}

impl<S> CountingStore<S> {
    /// Wraps `inner` with all counters at zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            txns: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    /// `read` calls so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// `txn` calls so far.
    pub fn txns(&self) -> u64 {
        self.txns.load(Ordering::Relaxed)
    }

    /// `txn` calls answered with a conflict so far (CAS retries).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Round trips so far (`reads + txns`).
    pub fn round_trips(&self) -> u64 {
        self.reads() + self.txns()
    }

    /// Key and value bytes of every `Put` sent so far (committed or not).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.txns.store(0, Ordering::Relaxed);
        self.conflicts.store(0, Ordering::Relaxed);
        self.bytes_written.store(0, Ordering::Relaxed);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for CountingStore<S> {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(reads).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.txns.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = txn
            .ops
            .iter()
            .map(|op| match op {
                super::Op::Put(k, v) => k.len() + v.len(),
                super::Op::Delete(k) => k.len(),
            })
            .sum();
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let out = self.inner.txn(txn).await;
        if matches!(out, Ok(TxnOutcome::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}
