//! The plugin binary on the embedded store (`dataDir`, no etcd), run as a
//! subprocess the way a runtime calls it: concurrency across processes,
//! SIGKILL at random points, bad data directories and foreign files.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use host_etcd::allocator::{Allocator, Network, Options, DEFAULT_CHUNK_BITS, DEFAULT_PREFIX};
use host_etcd::range::{Range, RangeSet, RangeSpec};
use host_etcd::store::local::LocalStore;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_host-etcd");

fn config(data_dir: &Path, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "localnet",
        "ipam": {
            "type": "host-etcd",
            "ranges": [[{ "subnet": subnet }]],
            "dataDir": data_dir,
            "budgetMs": 60000u64,
        }
    })
    .to_string()
}

fn plugin(cmd: &str, id: &str, conf: &str) -> std::process::Child {
    let mut child = Command::new(BIN)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/test")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(conf.as_bytes()).unwrap();
    drop(stdin);
    child
}

fn run(cmd: &str, id: &str, conf: &str) -> Output {
    plugin(cmd, id, conf).wait_with_output().unwrap()
}

fn added_ip(out: &Output) -> IpAddr {
    assert!(
        out.status.success(),
        "ADD failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = v["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().parse().unwrap()
}

fn allocator(dir: &Path, subnet: &str) -> Allocator<LocalStore> {
    let store = LocalStore::open(dir, Duration::from_secs(30)).unwrap();
    let spec = RangeSpec {
        subnet: subnet.into(),
        ..RangeSpec::default()
    };
    let net = Network {
        name: "localnet".into(),
        prefix: DEFAULT_PREFIX.into(),
        sets: vec![RangeSet::new(vec![Range::parse(&spec).unwrap()]).unwrap()],
        chunk_bits: DEFAULT_CHUNK_BITS,
    };
    Allocator::new(store, net, Options::default()).unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn eight_processes_times_200_adds_are_all_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let conf = config(&data, "10.20.0.0/21");
    let handles: Vec<_> = (0..8)
        .map(|p| {
            let conf = conf.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| added_ip(&run("ADD", &format!("p{p}-c{i}"), &conf)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for ip in h.join().unwrap() {
            assert!(all.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(all.len(), 1600);
    let a = allocator(&data, "10.20.0.0/21");
    let report = block_on(a.check()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.owners, report.allocated), (1600, 1600));
}

#[test]
fn sigkill_at_random_points_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let conf = config(&data, "10.30.0.0/24");
    // Warm up: the store exists.
    added_ip(&run("ADD", "warm", &conf));
    let mut killed = 0;
    for round in 0..120u64 {
        let id = format!("c{}", round % 40);
        let cmd = if round % 3 == 2 { "DEL" } else { "ADD" };
        let mut child = plugin(cmd, &id, &conf);
        // Kill somewhere between start-up and completion.
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..15_000)));
        if child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
            killed += 1;
        }
        let _ = child.wait();
    }
    assert!(
        killed > 10,
        "only {killed} processes were killed mid-flight"
    );
    // The store opens, and bits and owner records agree.
    {
        let a = allocator(&data, "10.30.0.0/24");
        let report = block_on(a.check()).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.allocated as usize, report.owners);
    }
    // Repeated ADD/DEL of the same containers converge.
    let mut ips = HashSet::new();
    for i in 0..40 {
        let id = format!("c{i}");
        let first = added_ip(&run("ADD", &id, &conf));
        assert_eq!(added_ip(&run("ADD", &id, &conf)), first, "idempotent ADD");
        assert!(ips.insert(first));
    }
    for i in 0..40 {
        assert!(run("DEL", &format!("c{i}"), &conf).status.success());
    }
    let a = allocator(&data, "10.30.0.0/24");
    let report = block_on(a.check()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.owners, report.allocated),
        (1, 1),
        "only 'warm' is left"
    );
}

fn error_of(out: &Output) -> Value {
    assert!(!out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn foreign_or_corrupt_database_is_named_never_reset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("store.redb");
    std::fs::write(&db, b"this is not a database\n").unwrap();
    let out = run("ADD", "x", &config(&data, "10.0.0.0/24"));
    let err = error_of(&out);
    assert_eq!(err["code"], 102, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("store.redb"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), b"this is not a database\n");
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn data_dir_that_cannot_be_created_is_code_5() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let data = file.join("state");
    let err = error_of(&run("ADD", "x", &config(&data, "10.0.0.0/24")));
    assert_eq!(err["code"], 5, "{err}");
    assert!(err["details"].as_str().unwrap().contains("a-file"), "{err}");
}

#[test]
fn example_config_runs_add_then_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/embedded.json"
    ))
    .unwrap()
    .replace(
        "/tmp/host-etcd-demo",
        dir.path().join("d").to_str().unwrap(),
    );
    let first = run("ADD", "demo", &conf);
    let v: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["ips"].as_array().unwrap().len(), 2);
    assert_eq!(v["ips"][0]["address"], "203.0.113.2/24");
    let again: Value = serde_json::from_slice(&run("ADD", "demo", &conf).stdout).unwrap();
    assert_eq!(v, again);
    assert!(run("DEL", "demo", &conf).status.success());
}
