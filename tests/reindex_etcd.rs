//! The per-node index migration (`Allocator::reindex`, `ipamctl reindex`)
//! on a real etcd: records written before the index (simulated by deleting
//! their entries) mixed with indexed ones; ADDs and DELs running during the
//! migration; a migration killed half-way and run again. Each ends with a
//! clean `check`: every record that names a node has its entry, no entry
//! without its record.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host_etcd::allocator::{Allocator, Network};
use host_etcd::range::RangeSet;
use host_etcd::store::etcd::EtcdStore;
use support::alloc_harness::{connect, patient, req};
use support::EtcdServer;

fn network(name: &str) -> Network {
    Network::new(name, vec![RangeSet::from_cidr("10.40.0.0/16").unwrap()]).unwrap()
}

async fn node(etcd: &EtcdServer, net: &Network, name: &str) -> Allocator<EtcdStore> {
    let options = patient(host_etcd::allocator::node_seed_from(name)).with_node_name(name);
    Allocator::new(connect(&etcd.url()).await, net.clone(), options).unwrap()
}

/// Index entries of `net` (keys), read with etcdctl.
fn index_keys(etcd: &EtcdServer, net: &str) -> Vec<String> {
    let out = etcd.etcdctl(&[
        "get",
        &format!("/host-etcd/{net}/nodes/"),
        "--prefix",
        "--keys-only",
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Forgets every index entry, as if the records were written by a build
/// without the index.
fn drop_index(etcd: &EtcdServer, net: &str) {
    let out = etcd.etcdctl(&["del", &format!("/host-etcd/{net}/nodes/"), "--prefix"]);
    assert!(out.status.success(), "{out:?}");
}

async fn add_many(a: &Allocator<EtcdStore>, prefix: &str, n: usize) {
    let reqs: Vec<_> = (0..n).map(|i| req(&format!("{prefix}{i}"))).collect();
    a.allocate_batch(&reqs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_of_mixed_records_with_adds_and_dels_running() {
    let etcd = EtcdServer::start();
    let net = network("mixed");
    let (a, b) = (
        node(&etcd, &net, "node-a").await,
        node(&etcd, &net, "node-b").await,
    );
    add_many(&a, "old-a", 150).await;
    add_many(&b, "old-b", 150).await;
    drop_index(&etcd, "mixed");
    add_many(&a, "new-a", 50).await;
    let report = a.check().await.unwrap();
    let not_indexed = report
        .problems
        .iter()
        .filter(|p| matches!(p, host_etcd::allocator::Problem::OwnerNotIndexed { .. }))
        .count();
    assert_eq!(not_indexed, 300, "{report:?}");
    // Node A's GC cannot see its old records before the migration.
    assert_eq!(a.node_records("node-a").await.unwrap().records.len(), 50);

    // A writer on node B adds and deletes while the migration runs.
    let b = Arc::new(b);
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                b.allocate(&req(&format!("busy{i}"))).await.unwrap();
                if i % 2 == 0 {
                    b.release(&req(&format!("busy{i}")).owner).await.unwrap();
                }
                // and some old records go away
                b.release(&req(&format!("old-b{i}")).owner).await.unwrap();
            }
        })
    };
    let mut fixed = a.reindex(false).await.unwrap().repaired;
    writer.await.unwrap();
    // Whatever was in flux is settled by running it again.
    for _ in 0..5 {
        let r = a.reindex(false).await.unwrap();
        fixed += r.repaired;
        if r.in_flux == 0 && r.repaired == 0 {
            break;
        }
    }
    assert!(fixed >= 240, "{fixed}");
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.owners, 150 + 150 + 50 + 30 - 60);
    assert_eq!(a.node_records("node-a").await.unwrap().records.len(), 200);
    assert_eq!(
        b.node_records("node-b").await.unwrap().records.len(),
        90 + 30
    );
    assert_eq!(index_keys(&etcd, "mixed").len(), 200 + 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reindex_is_finished_by_the_next_one() {
    let etcd = EtcdServer::start();
    let net = network("killed");
    let a = node(&etcd, &net, "node-a").await;
    for round in 0..20 {
        add_many(&a, &format!("r{round}-"), 50).await;
    }
    drop_index(&etcd, "killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .args(["--endpoints", &etcd.url(), "--network", "killed", "reindex"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as it has written something.
    let deadline = Instant::now() + Duration::from_secs(60);
    while index_keys(&etcd, "killed").is_empty() {
        assert!(Instant::now() < deadline, "reindex wrote nothing");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let partial = index_keys(&etcd, "killed").len();
    assert!(
        !status.success() && partial > 0 && partial < 1000,
        "the migration was to be interrupted half-way: {status:?}, {partial} entries"
    );
    // What it wrote is consistent; the rest is reported, then fixed.
    let report = a.check().await.unwrap();
    assert_eq!(
        report.problems.len(),
        1000 - partial,
        "{:?}",
        report.problems.first()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .args([
            "--endpoints",
            &etcd.url(),
            "--network",
            "killed",
            "reindex",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repaired"], 1000 - partial);
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.node_records("node-a").await.unwrap().records.len(), 1000);
}
