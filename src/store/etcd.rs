//! The etcd backend of the [`Store`](super::Store) contract.

use std::path::PathBuf;
use std::time::Duration;

use super::{Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port` endpoints.
    pub endpoints: Vec<String>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM) that signed the server certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// etcd auth user.
    pub username: Option<String>,
    /// etcd auth password.
    pub password: Option<String>,
    /// Deadline to establish a connection.
    pub dial_timeout: Duration,
    /// Deadline of each request.
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// A [`Store`] on an etcd cluster.
pub struct EtcdStore {
    _config: EtcdConfig,
}

impl EtcdStore {
    /// Connects (bounded by `dial_timeout`).
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let _ = config;
        todo!("store::etcd::connect")
    }
}

impl Store for EtcdStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let _ = reads;
        todo!("store::etcd::read")
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let _ = txn;
        todo!("store::etcd::txn")
    }
}
