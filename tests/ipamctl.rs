//! `ipamctl` as a subprocess against real etcd: show, list, get, release
//! (confirmed and refused), check (clean, planted inconsistencies, repair),
//! gc and a tiny bench; owner records naming their node, `release --node`,
//! and `--dry-run` of release, gc and `check --repair` writing nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use host_etcd::allocator::Allocator;
use host_etcd::range::{to_u128, Family};
use host_etcd::store::etcd::EtcdStore;
use host_etcd::store::{Op, Store, Txn};
use serde_json::Value;
use support::alloc_harness::{owner, pod_req, req};
use support::ipamctl::{allocator_of, container_ids, expect_exit, ipamctl, json, store_of, text};
use support::EtcdServer;

/// Runs and expects exit status `code`; returns stdout.
fn expect(code: i32, args: &[&str]) -> String {
    String::from_utf8(expect_exit(code, args).stdout).unwrap()
}

/// A network config file like the plugin's, on this etcd.
fn write_config(dir: &Path, etcd: &EtcdServer) -> PathBuf {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "host-etcd",
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "prefix": "/cli-test",
            "subnet": "10.10.0.0/24",
            "chunkBits": 8
        }
    });
    let path = dir.join("net1.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

/// The allocator of `config` as this host.
async fn allocator(config: &Path) -> Allocator<EtcdStore> {
    allocator_of(config, None).await
}

/// Allocates `id`/eth0; returns its address.
async fn add(alloc: &Allocator<EtcdStore>, id: &str) -> IpAddr {
    alloc.allocate(&req(id)).await.unwrap().assigned[0].ip
}

/// Allocates `c1`, `c2`, `c3` (pods ns/p1..p3); returns their addresses.
async fn populate(alloc: &Allocator<EtcdStore>) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for i in 1..=3 {
        let a = alloc
            .allocate(&pod_req(&format!("c{i}"), &format!("p{i}")))
            .await
            .unwrap();
        ips.push(a.assigned[0].ip);
    }
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_release_check_repair_and_gc() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &etcd);
    let cfg = config.to_str().unwrap();
    let alloc = allocator(&config).await;
    let ips = populate(&alloc).await;
    let ip = |i: usize| ips[i].to_string();

    // show
    let rows = json(0, &["--config", cfg, "show", "--json"]);
    let row = &rows[0];
    assert_eq!(row["subnet"], "10.10.0.0/24");
    assert_eq!(row["size"], 253);
    assert_eq!(row["used"], 3);
    assert_eq!(row["free"], 250);
    assert_eq!(row["chunks"], 1);
    assert!(row["bytes"].as_u64().unwrap() > 0);
    let human = expect(0, &["show", "--config", cfg]);
    assert!(
        human.contains("UTIL%") && human.contains("10.10.0.0/24"),
        "{human}"
    );

    // The same network given by flags instead of the config file.
    let url = etcd.url();
    let flags = [
        "--endpoints",
        &url,
        "--network",
        "net1",
        "--prefix",
        "/cli-test",
        "--subnet",
        "10.10.0.0/24",
    ];
    let by_flags = json(0, &[&flags[..], &["show", "--json"]].concat());
    assert_eq!(by_flags[0]["used"], 3);
    // k comes from the stored meta record; a disagreeing one is refused.
    let out = ipamctl(&[&flags[..], &["--chunk-bits", "10", "show"]].concat());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("chunkBits 8"), "{}", text(&out));

    // list with filters
    let all = json(0, &["--config", cfg, "list", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[0]["container_id"], "c1");
    assert_eq!(all[0]["pod_namespace"], "ns");
    let one = json(0, &["--config", cfg, "list", "--container", "c2", "--json"]);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["ips"][0], ip(1));
    let by_pod = json(0, &["--config", cfg, "list", "--pod", "ns/p3", "--json"]);
    assert_eq!(by_pod[0]["container_id"], "c3");
    let by_ip = json(0, &["--config", cfg, "list", "--ip", &ip(0), "--json"]);
    assert_eq!(by_ip[0]["container_id"], "c1");
    let table = expect(0, &["--config", cfg, "list"]);
    assert!(
        table.contains("CONTAINER") && table.contains("ns/p2"),
        "{table}"
    );

    // get
    let held = json(0, &["--config", cfg, "get", &ip(2), "--json"]);
    assert_eq!(held["container_id"], "c3");
    assert_eq!(
        json(0, &["--config", cfg, "get", "10.10.0.200", "--json"]),
        Value::Null
    );
    assert!(expect(0, &["--config", cfg, "get", "10.10.0.200"]).contains("not held"));

    // release: refused without --yes when stdin is not a terminal
    let out = ipamctl(&["--config", cfg, "release", "--container", "c1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert!(alloc.owner(&owner("c1")).await.unwrap().is_some());
    let released = json(
        0,
        &[
            "--config",
            cfg,
            "release",
            "--container",
            "c1",
            "--yes",
            "--json",
        ],
    );
    assert_eq!(released["ips"][0], ip(0));
    assert!(alloc.holder_of(ips[0]).await.unwrap().is_none());
    let out = expect(0, &["--config", cfg, "release", "--ip", &ip(1), "--yes"]);
    assert!(out.contains(&format!("released {}", ip(1))), "{out}");
    assert_eq!(alloc.owners().await.unwrap().len(), 1);
    expect(
        0,
        &["--config", cfg, "release", "--container", "nobody", "--yes"],
    );

    // check: clean
    let report = json(0, &["--config", cfg, "check", "--json"]);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["owners"], 1);

    // Plant a bit without owner: re-allocate c4, then delete its owner key.
    let a4 = add(&alloc, "c4").await;
    // (the record and its per-node index entry, as a release that lost
    // its chunk write would leave them)
    let owner_key = alloc.keyspace().owner("c4", "eth0").unwrap();
    let node = alloc.options().node_name.clone();
    let entry = alloc.keyspace().node_entry(&node, "c4", "eth0").unwrap();
    alloc
        .store()
        .txn(Txn {
            ops: vec![Op::Delete(owner_key), Op::Delete(entry)],
            ..Txn::default()
        })
        .await
        .unwrap();
    let out = expect(1, &["--config", cfg, "check"]);
    assert!(
        out.contains(&format!("{a4} is marked taken")) && out.contains("no owner"),
        "{out}"
    );
    let report = json(1, &["--config", cfg, "check", "--json"]);
    assert_eq!(report["problems"][0]["kind"], "bitWithoutOwner");
    let fixed = json(0, &["--config", cfg, "check", "--repair", "--json"]);
    assert_eq!(fixed["repaired"], 1);
    expect(0, &["--config", cfg, "check"]);
    assert_eq!(json(0, &["--config", cfg, "show", "--json"])[0]["used"], 1);

    // Plant garbage in the chunk: detected, then rebuilt from the owners.
    let chunk_key = alloc.keyspace().chunk(Family::V4, 8, to_u128(ips[2]) >> 8);
    alloc
        .store()
        .txn(Txn {
            ops: vec![Op::Put(chunk_key.clone(), b"garbage".to_vec())],
            ..Txn::default()
        })
        .await
        .unwrap();
    let out = expect(1, &["--config", cfg, "check"]);
    assert!(out.contains(&format!("corrupt chunk {chunk_key}")), "{out}");
    expect(0, &["--config", cfg, "check", "--repair"]);
    expect(0, &["--config", cfg, "check"]);
    assert_eq!(
        alloc.holder_of(ips[2]).await.unwrap().unwrap().container_id,
        "c3"
    );

    // gc: keep c3, release the rest.
    for i in 5..=6 {
        add(&alloc, &format!("c{i}")).await;
    }
    let valid = dir.path().join("valid.json");
    std::fs::write(&valid, r#"[{"containerID": "c3", "ifname": "eth0"}]"#).unwrap();
    let vf = valid.to_str().unwrap();
    let out = ipamctl(&["--config", cfg, "gc", "--valid", vf]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(alloc.owners().await.unwrap().len(), 3);
    let released = json(
        0,
        &["--config", cfg, "gc", "--valid", vf, "--yes", "--json"],
    );
    assert_eq!(container_ids(&released), ["c5", "c6"]);
    let left = alloc.owners().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container_id, "c3");
    expect(0, &["--config", cfg, "check"]);

    // A bad valid-attachments file names the entry.
    std::fs::write(&valid, r#"[{"containerID": "c3"}]"#).unwrap();
    let out = ipamctl(&["--config", cfg, "gc", "--valid", vf, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("[0].ifname"), "{}", text(&out));
}

#[test]
fn conflist_configs_are_read_and_usage_errors_exit_2() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let list = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "net2",
        "plugins": [
            {"type": "bridge"},
            {"type": "host-etcd", "ipam": {"type": "host-etcd", "endpoints": etcd.url(),
                                           "ranges": [[{"subnet": "fd00:1::/120"}]]}}
        ]
    });
    let path = dir.path().join("net2.conflist");
    std::fs::write(&path, list.to_string()).unwrap();
    let rows = json(0, &["--config", path.to_str().unwrap(), "show", "--json"]);
    assert_eq!(rows[0]["subnet"], "fd00:1::/120");
    assert_eq!(rows[0]["used"], 0);

    let out = ipamctl(&["show"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
    let out = ipamctl(&["--config", path.to_str().unwrap(), "--network", "x", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = ipamctl(&["--config", "/nonexistent.conf", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent.conf"), "{}", text(&out));
}

fn check_bench(report: &Value, count: u64) {
    let ours = &report["ours"];
    assert_eq!(ours["allocations"], count, "{report}");
    assert_eq!(ours["errors"], 0, "{report}");
    assert!(ours["allocations_per_sec"].as_f64().unwrap() > 0.0);
    // One transaction per warm allocation (and per warm release in the
    // alloc+release loop), a read and a transaction for a client's first.
    let rt = ours["round_trips_per_allocation"].as_f64().unwrap();
    let bounds = if report["release"] == true {
        2.0..=5.0
    } else {
        1.0..=2.5
    };
    assert!(bounds.contains(&rt), "{rt} round trips per allocation");
    assert!(ours["cas_retries_per_allocation"].as_f64().unwrap() >= 0.0);
    assert!(ours["bytes_written"].as_u64().unwrap() > 0);
    for f in ["p50", "p99", "max"] {
        assert!(ours["latency_ms"][f].as_f64().unwrap() > 0.0, "{f}");
    }
    assert!(report["raw"]["txns"].as_u64().unwrap() > 0, "{report}");
    assert!(report["ratio_to_raw"].as_f64().unwrap() > 0.0);
    assert!(report["naive"]["probes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["ratio_to_naive"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_reports_every_figure_in_json() {
    let etcd = EtcdServer::start();
    let url = etcd.url();
    let report = json(
        0,
        &[
            "--endpoints",
            &url,
            "bench",
            "-n",
            "20",
            "-c",
            "2",
            "--network-per-run",
            "--baseline-secs",
            "2",
            "--json",
        ],
    );
    check_bench(&report, 20);
    assert!(report["network"].as_str().unwrap().starts_with("bench-"));
    assert_eq!(
        report["chunk_bits"],
        host_etcd::allocator::DEFAULT_CHUNK_BITS
    );

    // IPv6, prefill, alloc+release loop, two worker processes.
    let report = json(
        0,
        &[
            "--endpoints",
            &url,
            "--subnet",
            "fd00:2::/116",
            "--chunk-bits",
            "8",
            "bench",
            "-n",
            "20",
            "-c",
            "2",
            "--processes",
            "2",
            "--prefill",
            "0.1",
            "--release",
            "--network-per-run",
            "--baseline-secs",
            "2",
            "--json",
        ],
    );
    check_bench(&report, 20);
    assert_eq!(report["processes"], 2);
    assert_eq!(report["prefilled"], 409);
    assert_eq!(report["naive"]["prefilled"], 409);
    assert_eq!(report["release"], true);

    let out = ipamctl(&["--endpoints", &url, "bench", "--prefill", "1.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A config like [`write_config`] under another key prefix.
fn write_config_prefix(dir: &Path, etcd: &EtcdServer, prefix: &str) -> PathBuf {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "host-etcd",
        "ipam": {"type": "host-etcd", "endpoints": [etcd.url()], "prefix": prefix,
                 "subnet": "10.20.0.0/24", "chunkBits": 8}
    });
    let path = dir.join("node.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

/// The allocator of `config` as node `node` (empty: records name no node).
async fn allocator_on(config: &Path, node: &str) -> Allocator<EtcdStore> {
    allocator_of(config, Some(node)).await
}

/// Every key under `prefix` with its value and revisions, and etcd's
/// current revision (any write, even an identical put, raises it).
async fn snapshot(
    etcd: &EtcdServer,
    store: &EtcdStore,
    prefix: &str,
) -> (Vec<(String, host_etcd::store::Versioned)>, i64) {
    use host_etcd::store::{Read, ReadResult};
    let mut end = prefix.to_string();
    end.push('\u{10FFFF}');
    let res = store
        .read(&[Read::Range {
            start: prefix.to_string(),
            end,
            limit: 0,
        }])
        .await
        .unwrap();
    let Some(ReadResult::Range { kvs, more: false }) = res.into_iter().next() else {
        panic!("unexpected read result");
    };
    let out = etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    (kvs, revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_name_their_node_and_release_by_node() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_prefix(dir.path(), &etcd, "/cli-node");
    let cfg = config.to_str().unwrap();
    let node_a = allocator_on(&config, "node-a").await;
    let node_b = allocator_on(&config, "node-b").await;
    let no_node = allocator_on(&config, "").await;
    let a1 = add(&node_a, "a1").await;
    add(&node_a, "a2").await;
    let b1 = add(&node_b, "b1").await;
    add(&no_node, "old").await;

    // The default node name is this host's name.
    let default = allocator(&config).await;
    add(&default, "here").await;
    let here = default.owner(&owner("here")).await.unwrap().unwrap();
    let hostname = host_etcd::allocator::local_hostname();
    assert!(!hostname.is_empty());
    assert_eq!(here.node.as_deref(), Some(hostname.as_str()));
    default.release(&owner("here")).await.unwrap();

    // list and get show the node; a record without one has no "node" key.
    let all = json(0, &["--config", cfg, "list", "--json"]);
    let node_of = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|r| r["container_id"] == id)
            .unwrap()
            .get("node")
            .cloned()
    };
    assert_eq!(node_of("a1"), Some(Value::from("node-a")));
    assert_eq!(node_of("b1"), Some(Value::from("node-b")));
    assert_eq!(node_of("old"), None);
    let table = expect(0, &["--config", cfg, "list"]);
    assert!(table.lines().next().unwrap().contains("NODE"), "{table}");
    let b1_line = table.lines().find(|l| l.starts_with("b1")).unwrap();
    assert!(b1_line.contains("node-b"), "{table}");
    let col = table.lines().next().unwrap().find("NODE").unwrap();
    let old_line = table.lines().find(|l| l.starts_with("old")).unwrap();
    assert!(old_line[col..].starts_with("- "), "{table}");
    assert!(b1_line[col..].starts_with("node-b "), "{table}");
    assert_eq!(
        json(0, &["--config", cfg, "get", &b1.to_string(), "--json"])["node"],
        "node-b"
    );
    assert!(expect(0, &["--config", cfg, "get", &a1.to_string()]).contains("node-a"));

    // Without a terminal and without --yes: refused, nothing released.
    let out = ipamctl(&["--config", cfg, "release", "--node", "node-a"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release 2 owners of node node-a") && err.contains("--yes"),
        "{}",
        text(&out)
    );
    assert_eq!(node_a.owners().await.unwrap().len(), 4);

    // Flags that exclude each other.
    let out = ipamctl(&[
        "--config",
        cfg,
        "release",
        "--node",
        "x",
        "--ip",
        "10.20.0.9",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = ipamctl(&["--config", cfg, "release", "--node", "", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // An unknown node frees nothing.
    let out = expect(
        0,
        &["--config", cfg, "release", "--node", "node-z", "--yes"],
    );
    assert!(out.contains("no owner record of node node-z"), "{out}");

    let released = json(
        0,
        &[
            "--config", cfg, "release", "--node", "node-a", "--yes", "--json",
        ],
    );
    assert_eq!(container_ids(&released), ["a1", "a2"]);
    let mut left: Vec<String> = node_a
        .owners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.container_id)
        .collect();
    left.sort();
    assert_eq!(left, ["b1", "old"]);
    assert!(node_a.holder_of(a1).await.unwrap().is_none());
    // The bits were released too: consistent, and 2 addresses in use.
    expect(0, &["--config", cfg, "check"]);
    assert_eq!(json(0, &["--config", cfg, "show", "--json"])[0]["used"], 2);
    // a1's address can be allocated again.
    let again = add(&node_b, "b2").await;
    assert_ne!(again, b1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_print_the_plan_and_write_nothing() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "/cli-dry";
    let config = write_config_prefix(dir.path(), &etcd, prefix);
    let cfg = config.to_str().unwrap();
    let alloc = allocator_on(&config, "node-a").await;
    let other = allocator_on(&config, "node-b").await;
    let c1 = add(&alloc, "c1").await;
    let c2 = add(&alloc, "c2").await;
    add(&other, "c3").await;
    // Plant a bit without owner (repairable) and a bad full-set hint.
    let lost = add(&alloc, "lost").await;
    let lost_key = alloc.keyspace().owner("lost", "eth0").unwrap();
    let lost_entry = alloc
        .keyspace()
        .node_entry("node-a", "lost", "eth0")
        .unwrap();
    let full_key = format!("{}/full/junk", alloc.keyspace().root());
    alloc
        .store()
        .txn(Txn {
            ops: vec![
                Op::Delete(lost_key),
                Op::Delete(lost_entry),
                Op::Put(full_key, b"junk".to_vec()),
            ],
            ..Txn::default()
        })
        .await
        .unwrap();
    let before = snapshot(&etcd, alloc.store(), prefix).await;
    assert!(before.0.len() >= 5, "{:?}", before.0);

    let out = expect(
        0,
        &["--config", cfg, "release", "--node", "node-a", "--dry-run"],
    );
    assert!(
        out.contains("would release 2 owners of node node-a"),
        "{out}"
    );
    assert!(
        out.contains(&c1.to_string()) && out.contains(&c2.to_string()),
        "{out}"
    );
    assert!(!out.contains("c3"), "{out}");
    let plan = json(
        0,
        &[
            "--config",
            cfg,
            "release",
            "--node",
            "node-a",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan.as_array().unwrap().len(), 2);
    let out = expect(
        0,
        &["--config", cfg, "release", "--container", "c1", "--dry-run"],
    );
    assert!(
        out.contains(&format!(
            "would release {c1} of container c1 interface eth0"
        )),
        "{out}"
    );
    let plan = json(
        0,
        &[
            "--config",
            cfg,
            "release",
            "--ip",
            &c2.to_string(),
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan["container_id"], "c2");

    let valid = dir.path().join("valid.json");
    std::fs::write(&valid, r#"[{"containerID": "c3", "ifname": "eth0"}]"#).unwrap();
    let vf = valid.to_str().unwrap();
    let out = expect(0, &["--config", cfg, "gc", "--valid", vf, "--dry-run"]);
    assert!(out.contains("would release 2 owners not in"), "{out}");
    let plan = json(
        0,
        &["--config", cfg, "gc", "--valid", vf, "--dry-run", "--json"],
    );
    assert_eq!(container_ids(&plan), ["c1", "c2"]);

    let out = expect(1, &["--config", cfg, "check", "--repair", "--dry-run"]);
    assert!(
        out.contains(&format!("WOULD REPAIR {lost} is marked taken")),
        "{out}"
    );
    assert!(out.contains("WOULD REPAIR corrupt full-set"), "{out}");
    assert!(
        out.contains("would repair 2, would leave 0; nothing written"),
        "{out}"
    );
    let plan = json(
        1,
        &["--config", cfg, "check", "--repair", "--dry-run", "--json"],
    );
    assert_eq!(plan["would_repair"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(plan["repaired"], 0);
    // --dry-run alone is a usage error (plain check writes nothing anyway).
    let out = ipamctl(&["--config", cfg, "check", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let after = snapshot(&etcd, alloc.store(), prefix).await;
    assert_eq!(before, after, "a dry run wrote to the store");

    // The real runs then do what the dry runs said.
    let fixed = json(0, &["--config", cfg, "check", "--repair", "--json"]);
    assert_eq!(fixed["repaired"], 2);
    assert_ne!(snapshot(&etcd, alloc.store(), prefix).await.1, after.1);
    let released = json(
        0,
        &["--config", cfg, "gc", "--valid", vf, "--yes", "--json"],
    );
    assert_eq!(released.as_array().unwrap().len(), 2);
    assert_eq!(alloc.owners().await.unwrap().len(), 1);
}

#[test]
fn bench_runs_on_the_embedded_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let common = ["-n", "20", "-c", "2", "--baseline-secs", "2", "--json"];

    // Without prefill: the default network and subnet.
    let mut args = vec!["--data-dir", dir, "bench"];
    args.extend(common);
    let report = json(0, &args);
    check_bench(&report, 20);
    assert_eq!(report["prefilled"], 0);

    // With prefill, on a small range, in the same directory (a second run
    // reopens the store the first one closed).
    let mut args = vec![
        "--data-dir",
        dir,
        "--subnet",
        "10.77.0.0/24",
        "bench",
        "--network-per-run",
        "--prefill",
        "0.2",
    ];
    args.extend(common);
    let report = json(0, &args);
    check_bench(&report, 20);
    assert_eq!(report["prefilled"], 50);
    assert_eq!(report["naive"]["prefilled"], 50);

    // Worker processes would wait for this process's lock: refused.
    let out = ipamctl(&["--data-dir", dir, "bench", "-n", "4", "--processes", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--processes"), "{}", text(&out));
}

/// `bindings list|release|expire` on a network with sticky addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_list_release_and_expire() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &etcd);
    let mut conf: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    conf["ipam"]["stickyTtlSeconds"] = 600.into();
    std::fs::write(&config, serde_json::to_vec(&conf).unwrap()).unwrap();
    let cfg = config.to_str().unwrap();
    let alloc = allocator(&config).await;
    let ips = populate(&alloc).await;
    for id in ["c1", "c2"] {
        alloc.release(&owner(id)).await.unwrap();
    }
    // c3 released by a node whose clock says 1970: its binding is expired.
    let old = Allocator::new(
        store_of(&config).await,
        alloc.network().clone(),
        alloc
            .options()
            .clone()
            .with_clock(host_etcd::allocator::Clock::manual(1_000)),
    )
    .unwrap();
    old.release(&owner("c3")).await.unwrap();
    let listed = json(0, &["--config", cfg, "--json", "bindings", "list"]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{listed}");
    assert_eq!(rows[0]["name"], "p1");
    assert_eq!(rows[0]["ips"][0], ips[0].to_string());
    assert_eq!(rows[0]["expired"], false);
    assert_eq!(rows[2]["name"], "p3");
    assert_eq!(rows[2]["expired"], true);
    let table = expect(0, &["--config", cfg, "bindings", "list"]);
    assert!(table.starts_with("POD"), "{table}");
    assert!(
        table.contains("ns/p1") && table.contains("active"),
        "{table}"
    );
    assert!(
        table.contains("ns/p3") && table.contains("expired"),
        "{table}"
    );
    // expire --dry-run names p3 and deletes nothing.
    let dry = json(
        0,
        &["--config", cfg, "--json", "bindings", "expire", "--dry-run"],
    );
    assert_eq!(dry.as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry[0]["name"], "p3");
    assert_eq!(alloc.bindings().await.unwrap().len(), 3);
    let done = json(0, &["--config", cfg, "--json", "bindings", "expire"]);
    assert_eq!(done.as_array().unwrap().len(), 1, "{done}");
    assert_eq!(alloc.bindings().await.unwrap().len(), 2);
    // release NS/NAME.
    let rel = json(
        0,
        &["--config", cfg, "--json", "bindings", "release", "ns/p1"],
    );
    assert_eq!(rel.as_array().unwrap().len(), 1, "{rel}");
    let left = alloc.bindings().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].binding.as_ref().unwrap().name, "p2");
    let none = expect(0, &["--config", cfg, "bindings", "release", "ns/p1"]);
    assert!(none.contains("no binding of ns/p1"), "{none}");
    expect(2, &["--config", cfg, "bindings", "release", "p1"]);
    // The sticky keys never trouble check.
    expect(0, &["--config", cfg, "check"]);
}
