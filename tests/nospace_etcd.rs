//! An etcd out of space (its NOSPACE alarm raised: the database reached
//! `--quota-backend-bytes`), with the plugin binary and `ipamctl` run as a
//! runtime and an operator run them:
//!
//! * STATUS answers code 50 naming "no space" (the STATUS grace is for
//!   blips, and an alarm is not one), and 0 again once the operator has
//!   compacted, defragmented and disarmed;
//! * ADD fails with code 104;
//! * DEL succeeds: etcd refuses the chunk rewrite but allows the owner
//!   record's deletion, so the release deletes only the record (under the
//!   compare of its revision) and leaves the chunk bit set;
//! * `ipamctl check` then reports that bit as a bit without owner,
//!   reclaimable, and `check --repair` clears it.
//!
//! The alarm is raised for real: the test fills a 4 MiB etcd with ~1 MiB
//! values (each put compared absent) until etcd refuses one.
#![allow(clippy::unwrap_used)]

mod support;

use host_etcd::store::{Compare, Expect, Op, Store, StoreError, Txn};
use serde_json::{json, Value};

use support::ipamctl::{expect_exit, json as ipamctl_json, text};
use support::plugin::{bare_ip, host_etcd, Call};
use support::{EtcdCluster, EtcdServer};

/// etcd's backend quota for these tests: small, so a few puts reach it.
const QUOTA_BYTES: u64 = 4 * 1024 * 1024;

fn etcd_with_small_quota() -> EtcdServer {
    EtcdServer::start_with(
        EtcdCluster::builder().extra_args([format!("--quota-backend-bytes={QUOTA_BYTES}")]),
    )
}

/// Puts ~1 MiB values under `/filler/` (each compared absent) until etcd
/// refuses one for lack of space; returns that error. Panics if the quota
/// is never reached.
async fn fill_until_nospace(etcd: &EtcdServer) -> StoreError {
    let store = support::alloc_harness::connect(&etcd.url()).await;
    let value = vec![b'x'; 1024 * 1024];
    for i in 0..64 {
        let key = format!("/filler/{i}");
        let txn = Txn {
            compares: vec![Compare {
                key: key.clone(),
                expect: Expect::Absent,
            }],
            ops: vec![Op::Put(key, value.clone())],
            read_on_conflict: vec![],
        };
        if let Err(e) = store.txn(txn).await {
            return e;
        }
    }
    panic!("etcd never ran out of space with a {QUOTA_BYTES}-byte quota");
}

/// What an operator does to end the alarm: delete what filled the store,
/// compact, defragment, disarm.
fn free_space(etcd: &EtcdServer) {
    let run = |args: &[&str]| {
        let out = etcd.etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["del", "--prefix", "/filler/"]);
    let status: Value = serde_json::from_str(&run(&["endpoint", "status", "-w", "json"])).unwrap();
    let rev = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    run(&["compact", &rev.to_string()]);
    run(&["defrag"]);
    run(&["alarm", "disarm"]);
    assert_eq!(run(&["alarm", "list"]).trim(), "", "alarm still raised");
}

fn alarm_list(etcd: &EtcdServer) -> String {
    String::from_utf8_lossy(&etcd.etcdctl(&["alarm", "list"]).stdout).into_owned()
}

fn owner_record_exists(etcd: &EtcdServer, network: &str, container: &str) -> bool {
    let key = format!("/host-etcd/{network}/owners/{container}/eth0");
    let out = etcd.etcdctl(&["get", &key, "--print-value-only"]);
    assert!(out.status.success(), "etcdctl get {key}: {out:?}");
    !out.stdout.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_status_50_del_frees_the_record_and_repair_reclaims_the_bit() {
    let etcd = etcd_with_small_quota();
    let dir = tempfile::tempdir().unwrap();
    let name = "nospace-net";
    // The default STATUS policy (grace): the alarm must still be 50 at once.
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "ranges": [[{"subnet": "10.88.0.0/24"}]],
            "dataDir": dir.path(),
            "budgetMs": 3000,
        }
    });
    let conf_file = dir.path().join("net.conf");
    std::fs::write(&conf_file, serde_json::to_vec(&conf).unwrap()).unwrap();
    let cfg = conf_file.to_str().unwrap();

    Call::bare(&host_etcd(), "STATUS")
        .config(&conf)
        .run()
        .ok_empty();
    let held = Call::add("c1", "eth0").config(&conf).run().ok_json();
    let ip = bare_ip(held["ips"][0]["address"].as_str().unwrap());

    // Fill etcd: the alarm is raised, the failed put is a typed NoSpace.
    let e = fill_until_nospace(&etcd).await;
    assert!(matches!(e, StoreError::NoSpace(_)), "{e:?}");
    assert!(
        alarm_list(&etcd).contains("NOSPACE"),
        "{}",
        alarm_list(&etcd)
    );

    // STATUS: 50 at once, naming the reason.
    let e = Call::bare(&host_etcd(), "STATUS")
        .config(&conf)
        .run()
        .err(50);
    let details = e["details"].as_str().unwrap();
    assert!(details.contains("no space"), "{e}");
    // ADD: the store refuses (104), nothing half-written.
    Call::add("c2", "eth0").config(&conf).run().err(104);
    assert!(!owner_record_exists(&etcd, name, "c2"));

    // DEL: succeeds; the owner record is gone, the bit stays.
    Call::del("c1", "eth0").config(&conf).run().ok_empty();
    assert!(!owner_record_exists(&etcd, name, "c1"));
    // Again: idempotent (nothing left to release).
    Call::del("c1", "eth0").config(&conf).run().ok_empty();

    // The operator frees space; STATUS is 0 again.
    free_space(&etcd);
    Call::bare(&host_etcd(), "STATUS")
        .config(&conf)
        .run()
        .ok_empty();

    // check: the left bit, reported as reclaimable; repair clears it.
    let out = expect_exit(1, &["--config", cfg, "check"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains(&format!("{ip} is marked taken")) && shown.contains("reclaimable"),
        "{}",
        text(&out)
    );
    let report = ipamctl_json(1, &["--config", cfg, "check", "--json"]);
    assert_eq!(report["problems"][0]["kind"], "bitWithoutOwner", "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 1, "{report}");
    let fixed = ipamctl_json(0, &["--config", cfg, "check", "--repair", "--json"]);
    assert_eq!(fixed["repaired"], 1, "{fixed}");
    expect_exit(0, &["--config", cfg, "check"]);

    // Writes work again.
    Call::add("c3", "eth0").config(&conf).run().ok_json();
    assert!(owner_record_exists(&etcd, name, "c3"));
}

fn etcdctl_ok(etcd: &EtcdServer, args: &[&str]) {
    let out = etcd.etcdctl(args);
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
}

/// A user who may only read the prefix: ADD is refused (104), and STATUS
/// says so (50, "permission denied") instead of reporting a store that
/// answers reads as ready; the same network with a read-write user is 0.
#[test]
fn read_only_store_is_status_50() {
    let etcd = EtcdServer::start();
    etcdctl_ok(&etcd, &["user", "add", "root:R00t-pw-for-tests"]);
    for (user, perm) in [("reader", "read"), ("writer", "readwrite")] {
        etcdctl_ok(&etcd, &["role", "add", user]);
        etcdctl_ok(
            &etcd,
            &[
                "role",
                "grant-permission",
                user,
                "--prefix=true",
                perm,
                "/host-etcd/",
            ],
        );
        etcdctl_ok(&etcd, &["user", "add", &format!("{user}:{user}-Passw0rd")]);
        etcdctl_ok(&etcd, &["user", "grant-role", user, user]);
    }
    etcdctl_ok(&etcd, &["auth", "enable"]);
    let dir = tempfile::tempdir().unwrap();
    let conf = |user: &str| {
        json!({
            "cniVersion": "1.1.0",
            "name": "ro-net",
            "ipam": {
                "type": "host-etcd",
                "endpoints": [etcd.url()],
                "username": user,
                "password": format!("{user}-Passw0rd"),
                "ranges": [[{"subnet": "10.89.0.0/24"}]],
                "dataDir": dir.path(),
                "budgetMs": 3000,
            }
        })
    };
    Call::bare(&host_etcd(), "STATUS")
        .config(&conf("writer"))
        .run()
        .ok_empty();
    let e = Call::bare(&host_etcd(), "STATUS")
        .config(&conf("reader"))
        .run()
        .err(50);
    assert!(
        e["details"].as_str().unwrap().contains("permission denied"),
        "{e}"
    );
    Call::add("c1", "eth0")
        .config(&conf("reader"))
        .run()
        .err(104);
}
