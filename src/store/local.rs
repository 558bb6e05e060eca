//! The embedded single-host backend (`dataDir`) of the [`Store`](super::Store) contract.

use std::path::Path;
use std::time::Duration;

use super::{Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// A [`Store`] in an embedded database under a directory, behind an
/// exclusive file lock held for the life of the value.
pub struct LocalStore {
    _private: (),
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`, waiting at most
    /// `lock_wait` for other processes holding it.
    pub fn open(dir: &Path, lock_wait: Duration) -> Result<LocalStore, StoreError> {
        let _ = (dir, lock_wait);
        todo!("store::local::open")
    }
}

impl Store for LocalStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let _ = reads;
        todo!("store::local::read")
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let _ = txn;
        todo!("store::local::txn")
    }
}
