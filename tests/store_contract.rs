//! The store contract suite against every backend: the in-memory reference
//! implementation, a real single-node etcd, and the embedded store.

mod support;

use host_etcd::store::etcd::EtcdStore;
use host_etcd::store::local::LocalStore;
use host_etcd::store::memory::MemoryStore;
use support::contract::check_contract;
use support::EtcdServer;

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let store = MemoryStore::new();
    check_contract(&store, "/contract").await;
    // Twice on the same store, under another prefix.
    check_contract(&store, "/again").await;
}

#[tokio::test]
async fn etcd_store_keeps_the_contract() {
    let etcd = EtcdServer::start();
    let store = EtcdStore::connect(&etcd.config())
        .await
        .expect("connect to etcd");
    check_contract(&store, "/contract").await;
    check_contract(&store, "/again").await;
}

#[tokio::test]
async fn local_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path(), std::time::Duration::from_secs(5)).expect("open");
    check_contract(&store, "/contract").await;
    check_contract(&store, "/again").await;
}
