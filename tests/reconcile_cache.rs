//! `ipamctl reconcile` as a subprocess against real etcd, with libcni
//! cache files written by the test in the format libcni (and so
//! containerd, CRI-O and podman) writes them (`tests/fixtures/libcni-cache-entry.json`
//! is one captured from podman 4.3): what is kept and released and why,
//! dry runs writing nothing, the grace rule, other nodes never touched,
//! `--valid` and `--no-cache`, and the refusals (unreadable cache
//! directory, cache files that do not decode, no attachment known, bad
//! `--grace`, no confirmation) releasing nothing. The same command under a
//! real runtime is in `tests/reconcile_podman.rs`.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use host_etcd::allocator::{AllocRequest, Allocator, OwnerId};
use host_etcd::cni::config::NetConf;
use host_etcd::store::etcd::EtcdStore;
use serde_json::Value;
use support::ipamctl::{expect_exit, ipamctl, json, text};
use support::EtcdServer;

fn expect(code: i32, args: &[&str]) -> Output {
    expect_exit(code, args)
}

fn write_config(dir: &Path, etcd: &EtcdServer) -> PathBuf {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "rnet",
        "plugins": [{
            "type": "bridge",
            "ipam": {
                "type": "host-etcd",
                "endpoints": [etcd.url()],
                "prefix": "/reconcile-test",
                "subnet": "10.20.0.0/24"
            }
        }]
    });
    let path = dir.join("rnet.conflist");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

/// Allocates `cid`/eth0 as node `node`.
async fn allocate(config: &Path, node: &str, cid: &str) {
    let bytes = std::fs::read(config).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let mut plugin = doc["plugins"][0].clone();
    plugin["name"] = doc["name"].clone();
    plugin["cniVersion"] = doc["cniVersion"].clone();
    let conf = NetConf::parse(&serde_json::to_vec(&plugin).unwrap()).unwrap();
    let host_etcd::cni::config::StoreConf::Etcd(etcd) = &conf.ipam.store else {
        panic!("etcd config expected");
    };
    let store = EtcdStore::connect(etcd).await.unwrap();
    let mut options = conf.options();
    options.node_name = node.to_string();
    let alloc = Allocator::new(store, conf.network().unwrap(), options).unwrap();
    alloc
        .allocate(&AllocRequest {
            owner: OwnerId {
                container_id: cid.into(),
                ifname: "eth0".into(),
            },
            ..AllocRequest::default()
        })
        .await
        .unwrap();
}

/// A cache entry as libcni writes it: the captured podman entry with
/// this container ID, interface and network.
fn cache_entry(dir: &Path, net: &str, cid: &str) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libcni-cache-entry.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    doc["containerId"] = cid.into();
    doc["networkName"] = net.into();
    let path = dir.join(format!("{net}-{cid}-eth0"));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

fn owners(conf: &str) -> Vec<String> {
    let v = json(0, &["--config", conf, "list", "--json"]);
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["container_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d.get("record")
                .unwrap_or(d)
                .get("container_id")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_against_a_written_cache() {
    let etcd = EtcdServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &etcd);
    let conf = config.to_str().unwrap();
    let cache = tmp.path().join("results");
    std::fs::create_dir(&cache).unwrap();
    let cache_s = cache.to_str().unwrap();
    for cid in ["live", "leak1", "leak2", "listed"] {
        allocate(&config, "node-a", cid).await;
    }
    allocate(&config, "node-b", "elsewhere").await;
    cache_entry(&cache, "rnet", "live");
    // Entries of other networks and a directory are not attachments of
    // this network.
    cache_entry(&cache, "othernet", "leak1");
    std::fs::create_dir(cache.join("subdir")).unwrap();
    let valid = tmp.path().join("valid.json");
    std::fs::write(&valid, r#"[{"containerID":"listed","ifname":"eth0"}]"#).unwrap();
    let valid_s = valid.to_str().unwrap();
    let all = ["elsewhere", "leak1", "leak2", "listed", "live"];
    let base = [
        "--config",
        conf,
        "reconcile",
        "--node",
        "node-a",
        "--cache-dir",
        cache_s,
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };

    // Default grace (10m): everything is younger, nothing would go.
    let v = json(0, &with(&["--dry-run", "--json"]));
    assert_eq!(ids(&v, "release"), Vec::<String>::new());
    assert_eq!(ids(&v, "keep"), ["leak1", "leak2", "listed", "live"]);
    assert!(v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["reason"] == "youngerThanGrace"));
    assert_eq!(v["other_nodes"], 1);

    // Grace 0, dry run: exactly the unattached ones, with reasons; nothing
    // written.
    let mut args = with(&["--grace", "0", "--dry-run", "--json", "--valid"]);
    args.push(valid_s);
    let v = json(0, &args);
    assert_eq!(ids(&v, "release"), ["leak1", "leak2"]);
    assert!(v["release"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["reason"] == "notAttached"));
    assert_eq!(ids(&v, "keep"), ["listed", "live"]);
    assert_eq!(owners(conf), all);
    // Human dry run names each record and why.
    let mut args = with(&["--grace", "0", "--dry-run", "--valid"]);
    args.push(valid_s);
    let out = expect(0, &args);
    let human = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        human.contains("WOULD RELEASE") && human.contains("no attachment"),
        "{human}"
    );
    assert!(
        human.contains("attached (runtime cache rnet-live-eth0)"),
        "{human}"
    );
    assert!(human.contains("attached (valid list)"), "{human}");
    assert!(human.contains("dry run: 2 to release"), "{human}");

    // Without --yes and without a terminal: refused, nothing released.
    let mut args = with(&["--grace", "0", "--valid"]);
    args.push(valid_s);
    let out = expect(2, &args);
    assert!(text(&out).contains("not a terminal"), "{}", text(&out));
    assert_eq!(owners(conf), all);

    // A garbage file named like one of this network's entries blocks the
    // pass (it might be a torn write of `leak2`'s entry): exit 2, nothing
    // released, dry run or not. A legacy-format entry (no "kind") too.
    for garbage in [
        &b"{\"kind\":\"cniCacheV1\",\"contai"[..],
        br#"{"cniVersion":"0.4.0","ips":[]}"#,
    ] {
        std::fs::write(cache.join("rnet-leak2-eth0"), garbage).unwrap();
        let mut args = with(&["--grace", "0", "--yes", "--json", "--valid"]);
        args.push(valid_s);
        let v = json(2, &args);
        assert_eq!(v["blocked"]["kind"], "badCacheFiles", "{v}");
        assert_eq!(ids(&v, "release"), Vec::<String>::new());
        assert_eq!(v["released"].as_array().unwrap().len(), 0);
        assert_eq!(owners(conf), all);
        let out = expect(2, &with(&["--grace", "0", "--dry-run"]));
        assert!(
            text(&out).contains("rnet-leak2-eth0") && text(&out).contains("do not decode"),
            "{}",
            text(&out)
        );
    }
    std::fs::remove_file(cache.join("rnet-leak2-eth0")).unwrap();
    // Garbage of another network (by its name) is reported, not blocking.
    std::fs::write(cache.join("othernet-x-eth0"), b"garbage").unwrap();

    // Unreadable cache directories: clear error, nothing released.
    for bad in [tmp.path().join("missing"), config.clone()] {
        let out = ipamctl(&[
            "--config",
            conf,
            "reconcile",
            "--node",
            "node-a",
            "--grace",
            "0",
            "--yes",
            "--cache-dir",
            bad.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("the runtime's CNI cache directory")
                && text(&out).contains("nothing released"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(owners(conf), all);
    // Bad durations are refused by the parser.
    for bad in ["--grace=10x", "--grace=-5m", "--grace=1.5h", "--grace="] {
        let out = expect(2, &with(&[bad, "--yes"]));
        assert!(text(&out).contains("--grace"), "{}", text(&out));
    }
    let out = expect(2, &with(&["--interval", "0", "--yes"]));
    assert!(text(&out).contains("--interval"), "{}", text(&out));
    let out = expect(2, &with(&["--interval", "1s"]));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(owners(conf), all);

    // The real run: exactly the two leaks, node-b's record untouched.
    let mut args = with(&["--grace", "0", "--yes", "--json", "--valid"]);
    args.push(valid_s);
    let v = json(0, &args);
    assert_eq!(ids(&v, "released"), ["leak1", "leak2"]);
    assert_eq!(owners(conf), ["elsewhere", "listed", "live"]);
    let v = json(0, &["--config", conf, "check", "--json"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    // --no-cache: only the list counts (`live` goes now).
    let mut args = vec![
        "--config",
        conf,
        "reconcile",
        "--node",
        "node-a",
        "--grace",
        "0",
        "--yes",
        "--no-cache",
        "--json",
        "--valid",
    ];
    args.push(valid_s);
    let v = json(0, &args);
    assert_eq!(ids(&v, "released"), ["live"]);
    assert_eq!(owners(conf), ["elsewhere", "listed"]);

    // No attachment of this network known at all: refused unless
    // --allow-empty.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = empty.to_str().unwrap();
    let args = [
        "--config",
        conf,
        "reconcile",
        "--node",
        "node-a",
        "--grace",
        "0",
        "--yes",
        "--cache-dir",
        e,
    ];
    let out = expect(2, &args);
    assert!(text(&out).contains("--allow-empty"), "{}", text(&out));
    assert_eq!(owners(conf), ["elsewhere", "listed"]);
    let mut args = args.to_vec();
    args.extend(["--allow-empty", "--json"]);
    let v = json(0, &args);
    assert_eq!(ids(&v, "released"), ["listed"]);
    assert_eq!(owners(conf), ["elsewhere"]);
}
