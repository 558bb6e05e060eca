//! The in-memory reference implementation of the [`Store`] contract.
//!
//! Used by unit tests, property tests and microbenchmarks of the core. It can
//! inject faults ([`MemoryStore::inject`]) so the allocator's retry and
//! failure paths are exercised without a network.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Mutex, MutexGuard};

use super::{Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned};

/// A fault the memory store injects into upcoming calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next transaction fails with [`StoreError::Unavailable`] *before*
    /// applying anything.
    FailBeforeCommit,
    /// The next transaction is applied, then reports
    /// [`StoreError::Unavailable`] (a lost reply).
    FailAfterCommit,
    /// The next transaction reports a conflict even though its compares hold
    /// (as if another writer had won).
    SpuriousConflict,
    /// The next read fails with [`StoreError::Unavailable`].
    FailRead,
}

#[derive(Default)]
struct Inner {
    revision: i64,
    data: BTreeMap<Key, Versioned>,
    faults: Vec<Fault>,
    reads: u64,
    txns: u64,
}

/// A [`Store`] held in process memory. Cheap to create; not persistent.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic in another test thread while holding
        // it; the data is still a consistent map, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues faults; each is consumed by the next matching call.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Drops every queued fault that has not fired yet.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// A copy of every key and value (for tests and model checks).
    pub fn dump(&self) -> BTreeMap<Key, Versioned> {
        self.lock().data.clone()
    }

    /// Overwrites a key without any compare (tests use this to plant
    /// corrupt data; the allocator never writes blindly).
    pub fn put_raw(&self, key: &str, value: Vec<u8>) {
        let mut inner = self.lock();
        inner.revision += 1;
        let rev = inner.revision;
        let create = inner.data.get(key).map_or(rev, |v| v.create_revision);
        inner.data.insert(
            key.to_string(),
            Versioned {
                value,
                mod_revision: rev,
                create_revision: create,
            },
        );
    }

    /// Number of `read` and `txn` calls served so far.
    pub fn calls(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.reads, inner.txns)
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    fn take_fault(inner: &mut Inner, want: &[Fault]) -> Option<Fault> {
        let pos = inner.faults.iter().position(|f| want.contains(f))?;
        Some(inner.faults.remove(pos))
    }

    fn read_sync(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let mut inner = self.lock();
        inner.reads += 1;
        if Self::take_fault(&mut inner, &[Fault::FailRead]).is_some() {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        Ok(reads
            .iter()
            .map(|r| match r {
                Read::Get(k) => ReadResult::Get(inner.data.get(k).cloned()),
                Read::Range { start, end, limit } => {
                    if start >= end {
                        return ReadResult::Range {
                            kvs: Vec::new(),
                            more: false,
                        };
                    }
                    let mut it = inner.data.range(start.clone()..end.clone());
                    let mut kvs = Vec::new();
                    for (k, v) in it.by_ref() {
                        if *limit != 0 && kvs.len() == *limit {
                            return ReadResult::Range { kvs, more: true };
                        }
                        kvs.push((k.clone(), v.clone()));
                    }
                    ReadResult::Range { kvs, more: false }
                }
                Read::Changed {
                    start,
                    end,
                    after,
                    limit,
                } => {
                    let (keys, revision) = if start < end {
                        (inner.data.range(start.clone()..end.clone()), inner.revision)
                    } else {
                        (inner.data.range(start.clone()..start.clone()), 0)
                    };
                    let keys = keys.map(|(k, v)| Ok::<_, Infallible>((k.clone(), v.clone())));
                    match super::collect_changed(keys, *after, *limit, revision) {
                        Ok(answer) => answer,
                        Err(never) => match never {},
                    }
                }
            })
            .collect())
    }

    pub(crate) fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut inner = self.lock();
        inner.txns += 1;
        let fault = Self::take_fault(
            &mut inner,
            &[
                Fault::FailBeforeCommit,
                Fault::FailAfterCommit,
                Fault::SpuriousConflict,
            ],
        );
        if fault == Some(Fault::FailBeforeCommit) {
            return Err(StoreError::Unavailable(
                "injected failure before commit".into(),
            ));
        }
        let holds = txn
            .compares
            .iter()
            .all(|c| c.expect.holds(inner.data.get(&c.key)));
        if !holds || fault == Some(Fault::SpuriousConflict) {
            let current = txn
                .read_on_conflict
                .iter()
                .map(|k| (k.clone(), inner.data.get(k).cloned()))
                .collect();
            return Ok(TxnOutcome::Conflict { current });
        }
        if !txn.ops.is_empty() {
            inner.revision += 1;
            let rev = inner.revision;
            for op in txn.ops {
                match op {
                    Op::Put(k, value) => {
                        let create = inner.data.get(&k).map_or(rev, |v| v.create_revision);
                        inner.data.insert(
                            k,
                            Versioned {
                                value,
                                mod_revision: rev,
                                create_revision: create,
                            },
                        );
                    }
                    Op::Delete(k) => {
                        inner.data.remove(&k);
                    }
                }
            }
        }
        if fault == Some(Fault::FailAfterCommit) {
            return Err(StoreError::Unavailable(
                "injected failure after commit".into(),
            ));
        }
        Ok(TxnOutcome::Committed {
            revision: inner.revision,
        })
    }
}

impl Store for MemoryStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        self.read_sync(reads)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.txn_sync(txn)
    }
}
