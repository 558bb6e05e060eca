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

use support::alloc_harness::req;
use support::ipamctl::{
    allocator_of, cache_entry, expect_exit as expect, ipamctl, json, owners, report_ids, text,
};
use support::EtcdServer;

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
    let alloc = allocator_of(config, Some(node)).await;
    alloc.allocate(&req(cid)).await.unwrap();
}

/// `--config CONF reconcile --node node-a [--cache-dir DIR] EXTRA...`.
fn reconcile<'a>(conf: &'a str, cache_dir: Option<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--config", conf, "reconcile", "--node", "node-a"];
    if let Some(dir) = cache_dir {
        args.extend(["--cache-dir", dir]);
    }
    args.extend_from_slice(extra);
    args
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
    let cached = Some(cache_s);

    // Default grace (10m): everything is younger, nothing would go.
    let v = json(0, &reconcile(conf, cached, &["--dry-run", "--json"]));
    assert_eq!(report_ids(&v, "release"), Vec::<String>::new());
    assert_eq!(report_ids(&v, "keep"), ["leak1", "leak2", "listed", "live"]);
    assert!(v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["reason"] == "youngerThanGrace"));

    // Grace 0, dry run: exactly the unattached ones, with reasons; nothing
    // written.
    let args = ["--grace", "0", "--dry-run", "--json", "--valid", valid_s];
    let v = json(0, &reconcile(conf, cached, &args));
    assert_eq!(report_ids(&v, "release"), ["leak1", "leak2"]);
    assert!(v["release"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["reason"] == "notAttached"));
    assert_eq!(report_ids(&v, "keep"), ["listed", "live"]);
    assert_eq!(owners(conf), all);
    // Human dry run names each record and why.
    let args = ["--grace", "0", "--dry-run", "--valid", valid_s];
    let out = expect(0, &reconcile(conf, cached, &args));
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
    let out = expect(
        2,
        &reconcile(conf, cached, &["--grace", "0", "--valid", valid_s]),
    );
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
        let args = ["--grace", "0", "--yes", "--json", "--valid", valid_s];
        let v = json(2, &reconcile(conf, cached, &args));
        assert_eq!(v["blocked"]["kind"], "badCacheFiles", "{v}");
        assert_eq!(report_ids(&v, "release"), Vec::<String>::new());
        assert_eq!(v["released"].as_array().unwrap().len(), 0);
        assert_eq!(owners(conf), all);
        let out = expect(2, &reconcile(conf, cached, &["--grace", "0", "--dry-run"]));
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
        let bad = Some(bad.to_str().unwrap());
        let out = ipamctl(&reconcile(conf, bad, &["--grace", "0", "--yes"]));
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
        let out = expect(2, &reconcile(conf, cached, &[bad, "--yes"]));
        assert!(text(&out).contains("--grace"), "{}", text(&out));
    }
    let out = expect(2, &reconcile(conf, cached, &["--interval", "0", "--yes"]));
    assert!(text(&out).contains("--interval"), "{}", text(&out));
    let out = expect(2, &reconcile(conf, cached, &["--interval", "1s"]));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(owners(conf), all);

    // The real run: exactly the two leaks, node-b's record untouched.
    let args = ["--grace", "0", "--yes", "--json", "--valid", valid_s];
    let v = json(0, &reconcile(conf, cached, &args));
    assert_eq!(report_ids(&v, "released"), ["leak1", "leak2"]);
    assert_eq!(owners(conf), ["elsewhere", "listed", "live"]);
    let v = json(0, &["--config", conf, "check", "--json"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");

    // --no-cache: only the list counts (`live` goes now).
    let args = [
        "--grace",
        "0",
        "--yes",
        "--no-cache",
        "--json",
        "--valid",
        valid_s,
    ];
    let v = json(0, &reconcile(conf, None, &args));
    assert_eq!(report_ids(&v, "released"), ["live"]);
    assert_eq!(owners(conf), ["elsewhere", "listed"]);

    // No attachment of this network known at all: refused unless
    // --allow-empty.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = Some(empty.to_str().unwrap());
    let out = expect(2, &reconcile(conf, e, &["--grace", "0", "--yes"]));
    assert!(text(&out).contains("--allow-empty"), "{}", text(&out));
    assert_eq!(owners(conf), ["elsewhere", "listed"]);
    let args = ["--grace", "0", "--yes", "--allow-empty", "--json"];
    let v = json(0, &reconcile(conf, e, &args));
    assert_eq!(report_ids(&v, "released"), ["listed"]);
    assert_eq!(owners(conf), ["elsewhere"]);
}
