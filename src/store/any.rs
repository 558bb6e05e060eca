//! [`AnyStore`]: the backend chosen at run time from a config (etcd when
//! endpoints are given, else the embedded store in `dataDir`).

use super::etcd::EtcdStore;
use super::local::LocalStore;
use super::{Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// One of the backends, chosen at run time.
pub enum AnyStore {
    /// etcd.
    Etcd(EtcdStore),
    /// The embedded single-host store.
    Local(LocalStore),
}

impl Store for AnyStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        match self {
            AnyStore::Etcd(s) => s.read(reads).await,
            AnyStore::Local(s) => s.read(reads).await,
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        match self {
            AnyStore::Etcd(s) => s.txn(txn).await,
            AnyStore::Local(s) => s.txn(txn).await,
        }
    }
}
