//! `repair` against a concurrent writer on a real etcd: every repair write
//! is a compare-and-swap on the revision the check read, so a corrupt
//! full-set another writer rewrote between the check's scan and the repair
//! is left alone (the repair conflicts and counts it in flux), and one
//! nobody touched is deleted.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use host_etcd::allocator::internals::encode_full_set;
use host_etcd::allocator::{Allocator, Keyspace, Network, Options};
use host_etcd::range::{Family, RangeSet};
use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
use host_etcd::store::interleaved::Interleaved;
use host_etcd::store::{
    Compare, Expect, Key, Op, Read, ReadResult, Store, Txn, TxnOutcome, Versioned,
};
use roaring::RoaringTreemap;
use support::EtcdServer;

const K: u8 = 8;

fn network(name: &str) -> Network {
    Network::new(name, vec![RangeSet::from_cidr("10.0.0.0/24").unwrap()])
        .and_then(|n| n.with_chunk_bits(K))
        .unwrap()
}

async fn get(store: &impl Store, key: &Key) -> Option<Versioned> {
    match store.read(&[Read::Get(key.clone())]).await.unwrap().pop() {
        Some(ReadResult::Get(v)) => v,
        other => panic!("a get answer expected: {other:?}"),
    }
}

/// Plants a full-set that does not decode (created: compared absent) and
/// returns its key and revision.
async fn plant_corrupt_full_set(store: &impl Store, net: &Network) -> (Key, i64) {
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let key = ks.full(Family::V4, 0x0a00_0000 >> K);
    let out = store
        .txn(Txn {
            compares: vec![Compare {
                key: key.clone(),
                expect: Expect::Absent,
            }],
            ops: vec![Op::Put(key.clone(), b"\xff\xffnot roaring".to_vec())],
            read_on_conflict: vec![],
        })
        .await
        .unwrap();
    assert!(matches!(out, TxnOutcome::Committed { .. }), "{out:?}");
    let rev = get(store, &key).await.unwrap().mod_revision;
    (key, rev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_never_deletes_a_full_set_rewritten_since_the_check_read_it() {
    let etcd = EtcdServer::start();
    let config = EtcdConfig::default()
        .with_endpoints([etcd.url()])
        .with_dial_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5));
    let store = Interleaved::new(EtcdStore::connect(&config).await.unwrap());

    // A concurrent writer rewrites the corrupt full-set (a CAS on what it
    // saw) after the check read it, before the repair deletes it.
    let net = network("raced");
    let (key, planted) = plant_corrupt_full_set(store.inner(), &net).await;
    let mut set = RoaringTreemap::new();
    set.insert(0x0a00_0000 >> K);
    let fresh = encode_full_set(&set);
    store.before_next_txn(Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect: Expect::ModRevision(planted),
        }],
        ops: vec![Op::Put(key.clone(), fresh.clone())],
        read_on_conflict: vec![],
    });
    let a = Allocator::new(&store, net, Options::default()).unwrap();
    let report = a.repair().await.unwrap();
    assert_eq!((report.repaired, report.in_flux), (0, 1), "{report:?}");
    assert_eq!(
        get(store.inner(), &key).await.map(|v| v.value),
        Some(fresh),
        "the rewritten full-set survives the repair"
    );
    let report = a.repair().await.unwrap();
    assert!(
        report.is_clean() && report.repaired == 0 && report.in_flux == 0,
        "nothing left to repair: {report:?}"
    );

    // Nobody touches it: the repair deletes it.
    let net = network("quiet");
    let (key, _) = plant_corrupt_full_set(store.inner(), &net).await;
    let a = Allocator::new(store.inner(), net, Options::default()).unwrap();
    let report = a.repair().await.unwrap();
    assert_eq!((report.repaired, report.in_flux), (1, 0), "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(get(store.inner(), &key).await, None);
}
