//! The plugin's node-local fast path, as a runtime drives it: real plugin
//! processes on one node against a real etcd, with etcd's own request
//! counters (`/metrics`) as the measure.
//!
//! * sequential warm ADD and DEL cost one transaction each, no read;
//! * a burst of concurrent ADDs and DELs on one node gets distinct addresses
//!   within the transaction targets (the node lock keeps the processes from
//!   racing for one chunk);
//! * a cache file that is garbage, truncated, or another network's is
//!   ignored and rewritten;
//! * processes killed with SIGKILL in the middle of a burst (some holding the
//!   node lock) leave a state that converges: re-ADDs succeed, `check` is
//!   clean, DELs free everything.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use host_etcd::allocator::{Allocator, Options};
use host_etcd::store::etcd::EtcdStore;
use serde_json::{json, Value};
use support::alloc_harness::owner;
use support::etcd_metrics::{kv_counts, KvCounts};
use support::faults::allocator_with;
use support::plugin::{assert_distinct, host_etcd, ips, Call};
use support::EtcdServer;

fn conf(etcd: &EtcdServer, name: &str, dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "ranges": [[{"subnet": "10.40.0.0/16"}], [{"subnet": "fd00:40::/64"}]],
            "endpoints": [etcd.url()],
            "dataDir": dir.to_str().unwrap(),
        }
    })
}

/// The plugin's node cache file for `network` on this host.
fn cache_file(dir: &Path, network: &str) -> std::path::PathBuf {
    let host = host_etcd::allocator::local_hostname();
    dir.join(format!("node-cache.{network}.{host}.json"))
}

fn add(conf: &Value, id: &str) -> Vec<IpAddr> {
    ips(&Call::add(id, "eth0").config(conf).run().ok_json())
}

fn del(conf: &Value, id: &str) {
    Call::del(id, "eth0").config(conf).run().ok_empty();
}

/// Runs `f` for every id on its own thread, all at once.
fn burst<T: Send>(ids: &[String], f: impl Fn(&str) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids.iter().map(|id| s.spawn(|| f(id))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

async fn allocator(conf: &Value) -> Allocator<EtcdStore> {
    allocator_with(conf, Options::default()).await
}

/// etcd requests (reads and transactions) since `before`.
fn calls_since(etcd: &EtcdServer, before: KvCounts) -> u64 {
    kv_counts(&etcd.url()).since(before).calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_add_and_del_cost_one_transaction_and_bursts_stay_in_target() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = conf(&etcd, "nodefast", dir.path());

    // Cold: one read, one transaction.
    let before = kv_counts(&etcd.url());
    add(&c, "cold");
    assert_eq!(calls_since(&etcd, before), 2, "cold ADD");
    assert!(cache_file(dir.path(), "nodefast").is_file());

    // Sequential warm ADDs and DELs: one transaction each, no read.
    let before = kv_counts(&etcd.url());
    let seq = ids("seq", 10);
    let got: Vec<_> = seq.iter().map(|id| add(&c, id)).collect();
    assert_eq!(calls_since(&etcd, before), 10, "10 warm ADDs");
    let before = kv_counts(&etcd.url());
    for id in &seq {
        del(&c, id);
    }
    assert_eq!(calls_since(&etcd, before), 10, "10 warm DELs");
    assert_distinct(&got);

    // 16 plugin processes at once on this node: distinct addresses, at most
    // 1.3 transactions per ADD and 1.1 per DEL.
    let many = ids("burst", 16);
    let before = kv_counts(&etcd.url());
    let got = burst(&many, |id| add(&c, id));
    let spent = calls_since(&etcd, before);
    assert_distinct(&got);
    assert!(
        spent * 10 <= 13 * 16,
        "16 concurrent ADDs cost {spent} etcd calls"
    );
    let before = kv_counts(&etcd.url());
    burst(&many, |id| del(&c, id));
    let spent = calls_since(&etcd, before);
    assert!(
        spent * 10 <= 11 * 16,
        "16 concurrent DELs cost {spent} etcd calls"
    );

    let a = allocator(&c).await;
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.owners().await.unwrap().len(), 1, "only 'cold' is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cache_files_are_ignored_and_rewritten() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = conf(&etcd, "nodecache", dir.path());
    let file = cache_file(dir.path(), "nodecache");
    let mut got = vec![add(&c, "first")];
    let good = std::fs::read(&file).unwrap();
    // One more warm ADD in the same chunk: `good` is now valid but stale.
    got.push(add(&c, "second"));

    // Another network's cache under this network's name.
    let other_dir = tempfile::tempdir().unwrap();
    let other = conf(&etcd, "nodeother", other_dir.path());
    add(&other, "o");
    let foreign = std::fs::read(cache_file(other_dir.path(), "nodeother")).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot json at all".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("another network", foreign),
        (
            "wrong shape",
            br#"{"format":"host-etcd-node-cache","version":1}"#.to_vec(),
        ),
        (
            "future version",
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"version\":1", "\"version\":99")
                .into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let before = kv_counts(&etcd.url());
        got.push(add(&c, &format!("after-{}", what.replace(' ', "-"))));
        assert_eq!(calls_since(&etcd, before), 2, "{what}: a cold ADD");
        let rewritten = std::fs::read(&file).unwrap();
        assert_ne!(rewritten, bytes, "{what}: rewritten");
        // ... and the next ADD is warm again.
        let before = kv_counts(&etcd.url());
        got.push(add(&c, &format!("warm-{}", what.replace(' ', "-"))));
        assert_eq!(calls_since(&etcd, before), 1, "{what}: warm again");
    }
    // A cache that is valid but stale (another process moved on without
    // writing it back): one conflict, then the retry. (The cold ADDs above
    // found their start chunk taken and moved away, so the chunk `good`
    // remembers last changed with "second".)
    std::fs::write(&file, &good).unwrap();
    let before = kv_counts(&etcd.url());
    got.push(add(&c, "stale"));
    assert_eq!(
        calls_since(&etcd, before),
        2,
        "stale cache: conflict + retry"
    );
    assert_distinct(&got);
    let a = allocator(&c).await;
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_converges() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = conf(&etcd, "nodekill", dir.path());
    add(&c, "warmup");
    let stdin = serde_json::to_vec(&c).unwrap();
    let victims = ids("kill", 24);
    for round in 0..3 {
        // Start every ADD at once and kill them at staggered moments: some
        // before they connect, some holding the node lock, some after.
        let mut children = Vec::new();
        for id in &victims {
            let mut child = Command::new(host_etcd())
                .env_clear()
                .env("CNI_COMMAND", if round == 1 { "DEL" } else { "ADD" })
                .env("CNI_CONTAINERID", id)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_NETNS", "/var/run/netns/x")
                .env("CNI_PATH", "/opt/cni/bin")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&stdin).unwrap();
            children.push(child);
        }
        for (i, child) in children.iter_mut().enumerate() {
            std::thread::sleep(Duration::from_micros(300 * (i as u64 % 7)));
            let _ = child.kill();
        }
        for mut child in children {
            let _ = child.wait();
        }
    }
    // Converge: every victim ADDs (idempotently) and gets distinct
    // addresses; the state is consistent; then every DEL frees them.
    let got = burst(&victims, |id| add(&c, id));
    assert_distinct(&got);
    let a = allocator(&c).await;
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    for (id, ips) in victims.iter().zip(&got) {
        let rec = a.owner(&owner(id)).await.unwrap().unwrap();
        assert_eq!(&rec.ips, ips);
    }
    burst(&victims, |id| del(&c, id));
    del(&c, "warmup");
    assert!(a.check().await.unwrap().is_clean());
    assert!(a.owners().await.unwrap().is_empty());
    let used: u128 = a.usage().await.unwrap().iter().map(|u| u.used).sum();
    assert_eq!(used, 0);
}
