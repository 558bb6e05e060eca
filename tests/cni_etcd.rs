//! End-to-end tests of the `host-etcd` plugin binary against real etcd, run
//! the way a container runtime runs it: `CNI_*` variables in a clean
//! environment, the network config on stdin, the result or the CNI error
//! JSON on stdout.
//!
//! One etcd server is shared by the tests that run at the same time
//! ([`support::plugin::shared_etcd`]); every test uses its own network
//! names. Tests that stop etcd or need TLS start their own.
//!
//! Spec versions and commands: ADD and DEL exist in every supported version,
//! CHECK from 0.4.0, GC and STATUS from 1.1.0; the plugin refuses a command
//! older configs do not define with code 1, as the reference plugin library
//! does.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use support::plugin::{addresses, bare_ip, host_etcd, shared_etcd, Call};
use support::tls::TestPki;
use support::{EtcdCluster, EtcdServer};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network config for `ipam` (the `type` and the test etcd's endpoint are
/// added).
fn conf(etcd: &EtcdServer, version: &str, name: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-etcd");
    ipam["endpoints"] = json!([etcd.url()]);
    json!({"cniVersion": version, "name": name, "ipam": ipam})
}

/// A dual-stack network: 10.1.0.0/24 and fd00:1::/64.
fn dual_stack() -> Value {
    json!({
        "ranges": [
            [{"subnet": "10.1.0.0/24"}],
            [{"subnet": "fd00:1::/64"}]
        ]
    })
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The stored owner record of an attachment, read with etcdctl.
fn owner_record(etcd: &EtcdServer, network: &str, container: &str, ifname: &str) -> Option<Value> {
    let key = format!("/host-etcd/{network}/owners/{container}/{ifname}");
    let out = etcd.etcdctl(&["get", &key, "--print-value-only"]);
    assert!(out.status.success(), "etcdctl get {key}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    (!text.is_empty()).then(|| serde_json::from_str(text).unwrap())
}

/// The container IDs holding addresses in a network, read with etcdctl.
fn owners(etcd: &EtcdServer, network: &str) -> Vec<String> {
    let prefix = format!("/host-etcd/{network}/owners/");
    let out = etcd.etcdctl(&["get", &prefix, "--prefix", "--keys-only"]);
    assert!(out.status.success(), "etcdctl get {prefix}: {out:?}");
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.to_string())
        .collect();
    ids.sort();
    ids
}

/// Asserts the result shape of `version`: the keys an IPAM result may have,
/// `ips[].version` exactly before 1.0.0, no `interfaces`.
fn assert_shape(result: &Value, version: &str) {
    assert_eq!(result["cniVersion"], version, "{result}");
    let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
    for k in &keys {
        assert!(
            ["cniVersion", "ips", "routes", "dns"].contains(&k.as_str()),
            "unexpected key {k} in {result}"
        );
    }
    assert!(result["dns"].is_object(), "{result}");
    let pre_1 = version.starts_with("0.");
    for entry in result["ips"].as_array().unwrap() {
        let addr = entry["address"].as_str().unwrap();
        assert!(entry.get("interface").is_none(), "{result}");
        if pre_1 {
            let want = if bare_ip(addr).is_ipv4() { "4" } else { "6" };
            assert_eq!(entry["version"], want, "{version}: {result}");
        } else {
            assert!(entry.get("version").is_none(), "{version}: {result}");
        }
    }
}

#[test]
fn every_command_in_every_version() {
    let etcd = shared_etcd();
    for version in VERSIONS {
        let name = format!("matrix-{version}");
        let c = conf(&etcd, version, &name, dual_stack());
        let at_least = |v: &str| {
            VERSIONS.iter().position(|x| *x == version).unwrap()
                >= VERSIONS.iter().position(|x| *x == v).unwrap()
        };

        // VERSION: every supported version, echoing the requested one.
        let v = Call::bare(&host_etcd(), "VERSION")
            .config(&c)
            .run()
            .ok_json();
        assert_eq!(
            v,
            json!({"cniVersion": version, "supportedVersions": VERSIONS})
        );

        // ADD: one address per range set, in set order, shaped per version.
        let added = Call::add("c1", "eth0").config(&c).run().ok_json();
        assert_shape(&added, version);
        let addrs = addresses(&added);
        assert_eq!(addrs.len(), 2, "{added}");
        assert!(net("10.1.0.0/24").contains(&bare_ip(&addrs[0])), "{added}");
        assert!(addrs[0].ends_with("/24"), "{added}");
        assert_eq!(added["ips"][0]["gateway"], "10.1.0.1");
        assert!(net("fd00:1::/64").contains(&bare_ip(&addrs[1])), "{added}");
        assert!(addrs[1].ends_with("/64"), "{added}");
        assert_eq!(added["ips"][1]["gateway"], "fd00:1::1");
        assert!(
            added.get("routes").is_none(),
            "no routes configured: {added}"
        );
        assert_eq!(added["dns"], json!({}));

        // CHECK: from 0.4.0, passes with the ADD result, fails on a mismatch.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = added.clone();
        let mut wrong = added.clone();
        let other = if addrs[0] == "10.1.0.77/24" {
            "10.1.0.78/24"
        } else {
            "10.1.0.77/24"
        };
        wrong["ips"][0]["address"] = json!(other);
        let mut with_wrong = c.clone();
        with_wrong["prevResult"] = wrong;
        if at_least("0.4.0") {
            Call::check("c1", "eth0")
                .config(&with_prev)
                .run()
                .ok_empty();
            Call::check("c1", "eth0").config(&c).run().ok_empty();
            let e = Call::check("c1", "eth0").config(&with_wrong).run().err(103);
            assert_eq!(e["cniVersion"], version);
            assert!(
                e["details"]
                    .as_str()
                    .unwrap()
                    .contains(other.trim_end_matches("/24")),
                "{e}"
            );
            Call::check("nobody", "eth0")
                .config(&with_prev)
                .run()
                .err(3);
        } else {
            let e = Call::check("c1", "eth0").config(&with_prev).run().err(1);
            assert!(e["details"].as_str().unwrap().contains("CHECK"), "{e}");
        }

        // GC and STATUS: 1.1.0 only.
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        if at_least("1.1.0") {
            Call::bare(&host_etcd(), "GC").config(&gc).run().ok_empty();
            Call::bare(&host_etcd(), "STATUS")
                .config(&c)
                .run()
                .ok_empty();
        } else {
            let mut gc_all = c.clone();
            gc_all["cni.dev/valid-attachments"] = json!([]);
            Call::bare(&host_etcd(), "GC").config(&gc_all).run().err(1);
            Call::bare(&host_etcd(), "STATUS").config(&c).run().err(1);
        }
        // Whatever GC did, c1 was listed (or GC refused): it keeps its addresses.
        let again = Call::add("c1", "eth0").config(&c).run().ok_json();
        assert_eq!(addresses(&again), addrs, "{version}");

        // DEL: no output, twice.
        Call::del("c1", "eth0").config(&c).run().ok_empty();
        Call::del("c1", "eth0").config(&c).run().ok_empty();
        assert!(owners(&etcd, &name).is_empty());
    }
}

/// The regression of a runtime's GC on one node releasing every other
/// node's addresses: two simulated nodes (UTS namespaces with their own
/// host names) on one etcd network; each node's GC collects only its own
/// records, whatever its valid list says, and never a record younger than
/// `gcGraceSeconds`.
#[test]
fn gc_on_one_node_never_releases_another_nodes_addresses() {
    let etcd = shared_etcd();
    let name = "gc-nodes";
    let ranges = json!([[{"subnet": "10.2.1.0/24"}]]);
    let c = conf(
        &etcd,
        "1.1.0",
        name,
        json!({"ranges": ranges, "gcGraceSeconds": 0}),
    );
    // The runtime's GC on a node, with a config carrying its valid list.
    let gc_on = |node: &str, conf: &Value| {
        Call::bare(&host_etcd(), "GC")
            .on_node(node)
            .config(conf)
            .run()
            .ok_empty()
    };
    let mut held = BTreeMap::new();
    for node in ["node-a", "node-b"] {
        for i in 0..3 {
            let cid = format!("{node}-c{i}");
            let r = Call::add(&cid, "eth0")
                .on_node(node)
                .config(&c)
                .run()
                .ok_json();
            held.insert(cid, addresses(&r));
        }
    }
    let all: Vec<String> = held.keys().map(|c| format!("{c}/eth0")).collect();
    let valid_of = |node: &str| -> Value {
        (0..3)
            .map(|i| json!({"containerID": format!("{node}-c{i}"), "ifname": "eth0"}))
            .collect()
    };
    // Node A's runtime lists its own three attachments: nothing goes, on
    // either node.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = valid_of("node-a");
    gc_on("node-a", &gc);
    assert_eq!(owners(&etcd, name), all);
    // Node A lost one container: only that one is released.
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "node-a-c0", "ifname": "eth0"},
        {"containerID": "node-a-c1", "ifname": "eth0"}
    ]);
    gc_on("node-a", &gc);
    let left: Vec<&String> = all.iter().filter(|o| !o.starts_with("node-a-c2")).collect();
    assert_eq!(owners(&etcd, name).iter().collect::<Vec<_>>(), left);
    // Node B's runtime with an empty list (all its pods gone) with the
    // default grace: its records are younger than 60 s, nothing goes.
    let young = conf(&etcd, "1.1.0", name, json!({"ranges": ranges}));
    let mut gc_b = young.clone();
    gc_b["cni.dev/valid-attachments"] = json!([]);
    gc_on("node-b", &gc_b);
    assert_eq!(owners(&etcd, name).len(), 5);
    // Without the grace, node B's three go and node A's two stay.
    let mut gc_b = c.clone();
    gc_b["cni.dev/valid-attachments"] = json!([]);
    gc_on("node-b", &gc_b);
    assert_eq!(owners(&etcd, name), ["node-a-c0/eth0", "node-a-c1/eth0"]);
    // A node with no records of its own collects nothing.
    gc_on("node-c", &gc_b);
    assert_eq!(owners(&etcd, name).len(), 2);
    // Node A's addresses are still its own: an ADD of the same container
    // is idempotent.
    let again = Call::add("node-a-c0", "eth0")
        .on_node("node-a")
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&again), held["node-a-c0"]);
    // The per-node index lists exactly what is left.
    let index = etcd.etcdctl(&[
        "get",
        &format!("/host-etcd/{name}/nodes/"),
        "--prefix",
        "--keys-only",
    ]);
    let index = String::from_utf8_lossy(&index.stdout);
    let entries: Vec<&str> = index.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        entries,
        [
            format!("/host-etcd/{name}/nodes/node-a/node-a-c0/eth0"),
            format!("/host-etcd/{name}/nodes/node-a/node-a-c1/eth0")
        ]
    );
}

#[test]
fn gc_releases_every_attachment_not_listed() {
    let etcd = shared_etcd();
    let name = "gc-net";
    let c = conf(
        &etcd,
        "1.1.0",
        name,
        json!({"ranges": [[{"subnet": "10.2.0.0/29"}]], "gcGraceSeconds": 0}),
    );
    let mut held = Vec::new();
    for (cid, ifname) in [
        ("keep", "eth0"),
        ("keep", "eth1"),
        ("drop", "eth0"),
        ("gone", "net1"),
    ] {
        let r = Call::add(cid, ifname).config(&c).run().ok_json();
        held.push(addresses(&r)[0].clone());
    }
    // 10.2.0.2-10.2.0.6: five usable, four held.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "keep", "ifname": "eth0"},
        {"containerID": "keep", "ifname": "eth1"},
        {"containerID": "elsewhere", "ifname": "eth0"}
    ]);
    Call::bare(&host_etcd(), "GC").config(&gc).run().ok_empty();
    assert_eq!(owners(&etcd, name), ["keep/eth0", "keep/eth1"]);
    // The released addresses can be taken again, by static request.
    for addr in &held[2..] {
        let ip = bare_ip(addr).to_string();
        let r = Call::add(&format!("new-{}", ip.replace('.', "-")), "eth0")
            .args(&format!("IP={ip}"))
            .config(&c)
            .run()
            .ok_json();
        assert_eq!(&addresses(&r)[0], addr);
    }
    // A grace out of range is refused, naming the field.
    let mut bad = gc.clone();
    bad["ipam"]["gcGraceSeconds"] = json!(86_401);
    let e = Call::bare(&host_etcd(), "GC").config(&bad).run().err(7);
    assert!(
        e["msg"].as_str().unwrap().contains("gcGraceSeconds")
            || e["details"].as_str().unwrap().contains("gcGraceSeconds"),
        "{e}"
    );
    // GC without the list is refused (it would release everything).
    let e = Call::bare(&host_etcd(), "GC").config(&c).run().err(7);
    assert!(
        e["details"].as_str().unwrap().contains("valid-attachments"),
        "{e}"
    );
    assert_eq!(owners(&etcd, name).len(), 4);
    // An empty list releases everything.
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::bare(&host_etcd(), "GC").config(&gc).run().ok_empty();
    assert!(owners(&etcd, name).is_empty());
}

#[test]
fn etcd_down_status_50_and_add_del_11() {
    let mut etcd = EtcdServer::start();
    let mut ipam = dual_stack();
    ipam["dialTimeoutMs"] = json!(500);
    ipam["requestTimeoutMs"] = json!(500);
    ipam["budgetMs"] = json!(1500);
    // Every failing STATUS answered at once (the default grace is covered
    // by status_grace_* below).
    ipam["statusPolicy"] = json!("strict");
    let c = conf(&etcd, "1.1.0", "down-net", ipam);
    Call::bare(&host_etcd(), "STATUS")
        .config(&c)
        .run()
        .ok_empty();
    let held = Call::add("c1", "eth0").config(&c).run().ok_json();

    etcd.kill();
    let e = Call::bare(&host_etcd(), "STATUS").config(&c).run().err(50);
    assert_eq!(e["msg"], "plugin not available");
    Call::del("c1", "eth0").config(&c).run().err(11);
    Call::add("c2", "eth0").config(&c).run().err(11);
    // Older versions: DEL and ADD fail the same way.
    let mut old = c.clone();
    old["cniVersion"] = json!("0.3.1");
    let e = Call::del("c1", "eth0").config(&old).run().err(11);
    assert_eq!(e["cniVersion"], "0.3.1");

    // Back up: nothing was lost or half-written.
    etcd.restart();
    Call::bare(&host_etcd(), "STATUS")
        .config(&c)
        .run()
        .ok_empty();
    let again = Call::add("c1", "eth0").config(&c).run().ok_json();
    assert_eq!(addresses(&again), addresses(&held));
    assert!(owner_record(&etcd, "down-net", "c2", "eth0").is_none());
    Call::del("c1", "eth0").config(&c).run().ok_empty();
}

/// The STATUS failure-streak files of a node directory (one per network
/// and host name).
fn streak_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with("status.") && name.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The start of the failure streak recorded in `file`, Unix ms.
fn streak_since(file: &std::path::Path) -> u64 {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["failingSinceMs"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The default STATUS policy against a real outage: a failing STATUS
/// succeeds within `statusGraceMs` (saying so on stderr), answers 50 once
/// the streak is older, and the streak ends when the store answers again.
/// A broken config is code 7 at once, and the strict policy answers 50 at
/// once, outage or not.
#[test]
fn status_grace_hides_a_short_outage_then_reports_50() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let grace_ms = 4000;
    let mut ipam = json!({"ranges": [[{"subnet": "10.77.0.0/24"}]]});
    ipam["dialTimeoutMs"] = json!(300);
    ipam["requestTimeoutMs"] = json!(300);
    ipam["budgetMs"] = json!(800);
    ipam["dataDir"] = json!(dir.path());
    ipam["statusGraceMs"] = json!(grace_ms);
    let c = conf(&etcd, "1.1.0", "grace-net", ipam);
    let mut strict = c.clone();
    strict["ipam"]["statusPolicy"] = json!("strict");
    strict["ipam"]
        .as_object_mut()
        .unwrap()
        .remove("statusGraceMs");
    let mut broken = c.clone();
    broken["ipam"]["ranges"] = json!([[{"subnet": "10.77.0.0/33"}]]);
    let status = |c: &Value| Call::bare(&host_etcd(), "STATUS").config(c).run();

    status(&c).ok_empty();
    assert!(streak_files(dir.path()).is_empty());
    // A bad grace value is a config error naming the field.
    let mut bad = c.clone();
    bad["ipam"]["statusGraceMs"] = json!("60s");
    assert!(status(&bad).details().contains("ipam.statusGraceMs"));
    bad["ipam"]["statusGraceMs"] = json!(grace_ms);
    bad["ipam"]["statusPolicy"] = json!("lenient");
    assert!(status(&bad).err(7)["details"]
        .as_str()
        .unwrap()
        .contains("ipam.statusPolicy"));

    etcd.kill();
    // Within the grace: success, with the hidden failure on stderr.
    let out = status(&c);
    out.ok_empty();
    assert!(
        out.stderr.contains("within statusGraceMs 4000"),
        "{}",
        out.stderr
    );
    let files = streak_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("status.grace-net."));
    let since = streak_since(&files[0]);
    // Again, still within: success, same streak.
    status(&c).ok_empty();
    assert_eq!(streak_since(&files[0]), since, "the streak keeps its start");
    // Strict: 50 at once, and the streak is left alone.
    let e = status(&strict).err(50);
    assert_eq!(e["msg"], "plugin not available");
    assert_eq!(streak_since(&files[0]), since);
    // A broken config is never hidden by the grace.
    let e = status(&broken).err(7);
    assert!(
        e["details"].as_str().unwrap().contains("ipam.ranges[0][0]"),
        "{e}"
    );
    // ADD and DEL fail (11) and do not end the streak.
    Call::add("c1", "eth0").config(&c).run().err(11);
    assert_eq!(streak_since(&files[0]), since);
    // Past the grace: 50.
    let wait = (since + grace_ms + 50).saturating_sub(unix_ms());
    std::thread::sleep(std::time::Duration::from_millis(wait));
    let e = status(&c).err(50);
    let details = e["details"].as_str().unwrap();
    assert!(details.contains("statusGraceMs is 4000"), "{e}");
    assert!(details.contains("failing for"), "{e}");

    // A garbage state file is no streak: the failure starts a new one.
    std::fs::write(&files[0], b"{not json").unwrap();
    status(&c).ok_empty();
    let new_since = streak_since(&files[0]);
    assert!(new_since > since, "a new streak");
    // A streak an hour old, failing until just now: 50 at once.
    std::fs::write(
        &files[0],
        json!({"failingSinceMs": unix_ms() - 3_600_000, "lastFailureMs": unix_ms()}).to_string(),
    )
    .unwrap();
    status(&c).err(50);
    // An hour old but not seen failing since: stale, a new streak.
    std::fs::write(
        &files[0],
        json!({"failingSinceMs": unix_ms() - 3_600_000}).to_string(),
    )
    .unwrap();
    status(&c).ok_empty();
    assert!(streak_since(&files[0]) + 60_000 > unix_ms(), "restarted");

    // Recovery: the first STATUS that reaches etcd ends the streak.
    etcd.restart();
    status(&c).ok_empty();
    assert!(streak_files(dir.path()).is_empty());
    // So does an ADD or DEL that reaches it.
    std::fs::write(&files[0], json!({"failingSinceMs": unix_ms()}).to_string()).unwrap();
    Call::add("c1", "eth0").config(&c).run().ok_json();
    assert!(streak_files(dir.path()).is_empty(), "ADD ends the streak");
    std::fs::write(&files[0], json!({"failingSinceMs": unix_ms()}).to_string()).unwrap();
    Call::del("c1", "eth0").config(&c).run().ok_empty();
    assert!(streak_files(dir.path()).is_empty(), "DEL ends the streak");
}

/// The plugin log on etcd with authentication: one JSON line per
/// invocation with the store's round trips, and the password nowhere in
/// the file, even at level debug and for a failed login.
#[test]
fn log_lines_on_etcd_with_a_password_never_hold_it() {
    const PASSWORD: &str = "Pl41n-L0g-S3cret";
    let etcd = EtcdServer::start();
    for args in [
        vec!["user", "add", &format!("root:{PASSWORD}")],
        vec!["auth", "enable"],
    ] {
        let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        let out = etcd.etcdctl(&args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log/host-etcd.log");
    let ipam = json!({
        "ranges": [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd00:78::/64"}]],
        "dataDir": dir.path().join("node"),
        "username": "root", "password": PASSWORD,
        "logFile": log, "logLevel": "debug",
        "dialTimeoutMs": 1500, "requestTimeoutMs": 1500, "budgetMs": 3000
    });
    let c = conf(&etcd, "1.1.0", "log-net", ipam);
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0";
    let held = addresses(
        &Call::add("c1", "eth0")
            .args(args)
            .config(&c)
            .run()
            .ok_json(),
    );
    let mut prev = c.clone();
    prev["prevResult"] = json!({"cniVersion": "1.1.0", "ips": held.iter().map(|a| json!({"address": a})).collect::<Vec<_>>()});
    Call::check("c1", "eth0").config(&prev).run().ok_empty();
    Call::bare(&host_etcd(), "STATUS")
        .config(&c)
        .run()
        .ok_empty();
    Call::del("c1", "eth0").config(&c).run().ok_empty();
    let mut wrong = c.clone();
    wrong["ipam"]["password"] = json!(format!("{PASSWORD}-wrong"));
    Call::add("c2", "eth0").config(&wrong).run().err(104);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(PASSWORD), "password in the log:\n{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let commands: Vec<&str> = lines
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["ADD", "CHECK", "STATUS", "DEL", "ADD"], "{text}");
    for l in &lines {
        assert_eq!(l["network"], "log-net", "{l}");
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
        assert!(l["durationMs"].as_f64().unwrap() > 0.0, "{l}");
        assert_eq!(l["username"], "root", "{l}");
        assert_eq!(l["endpoints"], json!([etcd.url()]), "{l}");
        assert!(l["pid"].as_u64().is_some(), "{l}");
    }
    let add = &lines[0];
    assert_eq!(
        (add["level"].as_str(), add["result"].as_str()),
        (Some("info"), Some("ok"))
    );
    assert_eq!(add["containerID"], "c1");
    assert_eq!(add["ifname"], "eth0");
    assert_eq!(add["pod"], "default/web-0");
    assert_eq!(add["addresses"], json!(held));
    // A node's first ADD sends its transaction without a read, guessing
    // the network exists; on this fresh network the conflict answer says
    // it does not yet, and the second transaction creates it with the
    // allocation: no read, one CAS lost.
    assert_eq!(
        (add["reads"].as_u64(), add["txns"].as_u64()),
        (Some(0), Some(2)),
        "{add}"
    );
    assert_eq!(add["casRetries"], 1, "{add}");
    assert_eq!(
        add["roundTrips"].as_u64(),
        Some(add["reads"].as_u64().unwrap() + add["txns"].as_u64().unwrap())
    );
    assert!(
        lines[2]["roundTrips"].as_u64().unwrap() >= 1,
        "STATUS pings: {}",
        lines[2]
    );
    let failed = &lines[4];
    assert_eq!(
        (failed["level"].as_str(), failed["result"].as_str()),
        (Some("error"), Some("error"))
    );
    assert_eq!(failed["code"], 104);
    assert_eq!(failed["msg"], "store refused the request");
    assert!(
        failed["details"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{failed}"
    );
    assert!(failed.get("addresses").is_none());
}

#[test]
fn add_is_idempotent_and_del_of_unknown_succeeds() {
    let etcd = shared_etcd();
    let c = conf(&etcd, "1.0.0", "idem-net", dual_stack());
    let first = Call::add("c1", "eth0").config(&c).run().ok_json();
    let second = Call::add("c1", "eth0").config(&c).run().ok_json();
    assert_eq!(first, second);
    // Another version of the same network: the same addresses.
    let mut old = c.clone();
    old["cniVersion"] = json!("0.3.1");
    let third = Call::add("c1", "eth0").config(&old).run().ok_json();
    assert_eq!(addresses(&third), addresses(&first));
    // Another interface of the same container is another attachment.
    let eth1 = Call::add("c1", "eth1").config(&c).run().ok_json();
    for (a, b) in addresses(&first).iter().zip(addresses(&eth1).iter()) {
        assert_ne!(a, b);
    }
    assert_eq!(owners(&etcd, "idem-net"), ["c1/eth0", "c1/eth1"]);

    // DEL of something never added: success, no output.
    let out = Call::del("never-added", "eth0").config(&c).run();
    out.ok_empty();
    assert!(out.stdout.is_empty(), "{out:?}");
    // DEL without CNI_NETNS is allowed (the namespace may be gone).
    Call::del("c1", "eth1")
        .unset("CNI_NETNS")
        .config(&c)
        .run()
        .ok_empty();
    Call::del("c1", "eth0").config(&c).run().ok_empty();
    Call::del("c1", "eth0").config(&c).run().ok_empty();
    assert!(owners(&etcd, "idem-net").is_empty());
}

#[test]
fn dual_stack_routes_and_dns_from_resolv_conf() {
    let etcd = shared_etcd();
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# written by the test\n\
         nameserver 10.96.0.10\n\
         nameserver fd00::10\n\
         ; another comment\n\
         domain cluster.local\n\
         search ns1.svc.cluster.local svc.cluster.local\n\
         search cluster.local\n\
         options ndots:5 timeout:2\n\
         sortlist 10.0.0.0\n",
    )
    .unwrap();
    let routes = json!([
        {"dst": "0.0.0.0/0"},
        {"dst": "192.168.0.0/16", "gw": "10.3.0.254"},
        {"dst": "::/0", "gw": "fd00:3::1"},
        {"dst": "3ffe:ffff:0:01ff::1/64"}
    ]);
    let ipam = json!({
        "ranges": [
            [{"subnet": "10.3.0.0/24", "gateway": "10.3.0.254", "rangeStart": "10.3.0.10", "rangeEnd": "10.3.0.20"}],
            [{"subnet": "fd00:3::/64", "rangeStart": "fd00:3::100", "rangeEnd": "fd00:3::1ff"}]
        ],
        "routes": routes,
        "resolvConf": resolv.to_str().unwrap()
    });
    for version in ["0.3.1", "1.1.0"] {
        let c = conf(&etcd, version, "routes-dns", ipam.clone());
        let r = Call::add("c1", &format!("eth{}", &version[..1]))
            .config(&c)
            .run()
            .ok_json();
        assert_shape(&r, version);
        let a = addresses(&r);
        let v4 = bare_ip(&a[0]);
        assert!(v4 >= ip("10.3.0.10") && v4 <= ip("10.3.0.20"), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.3.0.254");
        let v6 = bare_ip(&a[1]);
        assert!(v6 >= ip("fd00:3::100") && v6 <= ip("fd00:3::1ff"), "{r}");
        assert_eq!(r["ips"][1]["gateway"], "fd00:3::1");
        assert_eq!(
            r["routes"],
            json!([
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.0.0/16", "gw": "10.3.0.254"},
                {"dst": "::/0", "gw": "fd00:3::1"},
                {"dst": "3ffe:ffff:0:1ff::1/64"}
            ])
        );
        assert_eq!(
            r["dns"],
            json!({
                "nameservers": ["10.96.0.10", "fd00::10"],
                "domain": "cluster.local",
                "search": ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                "options": ["ndots:5", "timeout:2"]
            })
        );
    }
    // An unreadable resolvConf is an I/O error naming the path, and leaks nothing.
    let mut bad = ipam.clone();
    bad["resolvConf"] = json!("/nonexistent/resolv.conf");
    let c = conf(&etcd, "1.0.0", "routes-dns-bad", bad);
    let e = Call::add("c1", "eth0").config(&c).run().err(5);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/resolv.conf"),
        "{e}"
    );
    assert!(owners(&etcd, "routes-dns-bad").is_empty());
}

#[test]
fn static_ips_from_cni_args_args_and_runtime_config() {
    let etcd = shared_etcd();
    let ipam = json!({
        "ranges": [
            [{"subnet": "10.4.0.0/24", "rangeStart": "10.4.0.10", "rangeEnd": "10.4.0.100"}],
            [{"subnet": "fd00:4::/64"}]
        ]
    });
    let c = conf(&etcd, "1.0.0", "static-net", ipam);

    // CNI_ARGS IP=, a comma list (prefixes allowed).
    let r = Call::add("a", "eth0")
        .args("IgnoreUnknown=1;IP=10.4.0.50,fd00:4::50/64")
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.4.0.50/24", "fd00:4::50/64"]);

    // args.cni.ips.
    let mut args = c.clone();
    args["args"] = json!({"cni": {"ips": ["10.4.0.51", "fd00:4::51"]}});
    let r = Call::add("b", "eth0").config(&args).run().ok_json();
    assert_eq!(addresses(&r), ["10.4.0.51/24", "fd00:4::51/64"]);

    // runtimeConfig.ips with the ips capability; only the v4 one: v6 dynamic.
    let mut rc = c.clone();
    rc["capabilities"] = json!({"ips": true});
    rc["runtimeConfig"] = json!({"ips": ["10.4.0.52/24"]});
    let r = Call::add("c", "eth0").config(&rc).run().ok_json();
    let a = addresses(&r);
    assert_eq!(a[0], "10.4.0.52/24");
    assert!(net("fd00:4::/64").contains(&bare_ip(&a[1])));
    assert!(!["fd00:4::50/64", "fd00:4::51/64"].contains(&a[1].as_str()));

    // A taken address: code 100, naming it; nothing recorded for the loser.
    let e = Call::add("d", "eth0")
        .args("IP=10.4.0.50")
        .config(&c)
        .run()
        .err(100);
    assert!(e["details"].as_str().unwrap().contains("10.4.0.50"), "{e}");
    assert!(owner_record(&etcd, "static-net", "d", "eth0").is_none());
    let mut taken = c.clone();
    taken["args"] = json!({"cni": {"ips": ["fd00:4::51"]}});
    Call::add("d", "eth0").config(&taken).run().err(100);

    // Outside every range: outside the subnets, and inside a subnet but
    // outside rangeStart..rangeEnd; the gateway is not for hand-out.
    for bad in ["192.0.2.7", "10.4.0.200", "10.4.0.1"] {
        let e = Call::add("d", "eth0")
            .args(&format!("IP={bad}"))
            .config(&c)
            .run()
            .err(100);
        assert!(e["details"].as_str().unwrap().contains(bad), "{e}");
    }
    assert!(owner_record(&etcd, "static-net", "d", "eth0").is_none());
    // Not an address at all: CNI_ARGS is invalid (4), args.cni.ips is config (7).
    Call::add("d", "eth0")
        .args("IP=10.4.0.300")
        .config(&c)
        .run()
        .err(4);
    let mut garbage = c.clone();
    garbage["args"] = json!({"cni": {"ips": ["ten.four"]}});
    Call::add("d", "eth0").config(&garbage).run().err(7);

    // The holder of a static address keeps it on a repeated ADD.
    let r = Call::add("a", "eth0")
        .args("IP=10.4.0.50,fd00:4::50")
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.4.0.50/24", "fd00:4::50/64"]);
}

/// The my-ipam seed README's range set (with its stage lists) on etcd.
fn staged_conf(etcd: &EtcdServer, name: &str) -> Value {
    conf(
        etcd,
        "0.3.1",
        name,
        json!({
            "ranges": [[
                {
                    "subnet": "10.10.0.0/16",
                    "rangeStart": "10.10.1.20",
                    "rangeEnd": "10.10.1.40",
                    "gateway": "10.10.1.1",
                    "sandbox": ["10.10.1.20"],
                    "smallflow": ["10.10.1.21"]
                },
                {"subnet": "172.16.5.0/24"}
            ]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }),
    )
}

#[test]
fn stage_reservations_from_pod_name_and_ipam_stage() {
    let etcd = shared_etcd();
    let name = "stages";
    let c = staged_conf(&etcd, name);

    // Ordinary pods first: they never get a listed address.
    let mut ordinary = Vec::new();
    for i in 0..5 {
        let r = Call::add(&format!("plain{i}"), "eth0")
            .args(&format!("K8S_POD_NAMESPACE=web;K8S_POD_NAME=web-{i}"))
            .config(&c)
            .run()
            .ok_json();
        ordinary.push(bare_ip(&addresses(&r)[0]));
    }
    assert!(
        !ordinary.contains(&ip("10.10.1.20")) && !ordinary.contains(&ip("10.10.1.21")),
        "{ordinary:?}"
    );

    // A sandbox pod, by its name: the sandbox address; the owner record
    // names the pod.
    let pod = "pay-10-sandbox-84f8cc5d4b-8v4fw";
    let r = Call::add("sb1", "eth0")
        .args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=pay;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=sb1"
        ))
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.10.1.20/16"]);
    assert_eq!(r["ips"][0]["gateway"], "10.10.1.1");
    let rec = owner_record(&etcd, name, "sb1", "eth0").expect("owner record");
    assert_eq!(rec["pod_namespace"], "pay", "{rec}");
    assert_eq!(rec["pod_name"], pod, "{rec}");
    assert_eq!(rec["ips"], json!(["10.10.1.20"]), "{rec}");

    // IPAM_STAGE wins over the pod name.
    let r = Call::add("sf1", "eth0")
        .args(&format!("IPAM_STAGE=smallflow;K8S_POD_NAME={pod}"))
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.10.1.21/16"]);

    // The stage's list is used up: the next pod of that stage fails (101).
    let e = Call::add("sb2", "eth0")
        .args("K8S_POD_NAME=pay-10-sandbox-84f8cc5d4b-zzzzz")
        .config(&c)
        .run()
        .err(101);
    assert!(e["details"].as_str().unwrap().contains("sandbox"), "{e}");
    Call::add("sf2", "eth0")
        .args("IPAM_STAGE=smallflow")
        .config(&c)
        .run()
        .err(101);

    // A stage without a list is an ordinary pod.
    let r = Call::add("canary", "eth0")
        .args("IPAM_STAGE=canary")
        .config(&c)
        .run()
        .ok_json();
    let got = bare_ip(&addresses(&r)[0]);
    assert!(got != ip("10.10.1.20") && got != ip("10.10.1.21"), "{r}");

    // An ordinary pod cannot take a reserved address by asking for it.
    Call::del("sb1", "eth0").config(&c).run().ok_empty();
    let e = Call::add("thief", "eth0")
        .args("IP=10.10.1.20")
        .config(&c)
        .run()
        .err(100);
    assert!(e["details"].as_str().unwrap().contains("sandbox"), "{e}");
    // After the release, the next sandbox pod gets it.
    let r = Call::add("sb2", "eth0")
        .args("K8S_POD_NAME=pay-10-sandbox-84f8cc5d4b-zzzzz")
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.10.1.20/16"]);
}

#[test]
fn ordinary_pods_exhaust_the_pool_without_touching_reservations() {
    let etcd = shared_etcd();
    // 10.5.0.2-10.5.0.14: 13 addresses, 3 reserved, 10 ordinary.
    let c = conf(
        &etcd,
        "1.0.0",
        "stage-exhaust",
        json!({"ranges": [[{
            "subnet": "10.5.0.0/28",
            "sandbox": ["10.5.0.2", "10.5.0.3"],
            "smallflow": ["10.5.0.4"]
        }]]}),
    );
    let reserved = [ip("10.5.0.2"), ip("10.5.0.3"), ip("10.5.0.4")];
    let mut got = Vec::new();
    for i in 0..10 {
        let r = Call::add(&format!("p{i}"), "eth0")
            .config(&c)
            .run()
            .ok_json();
        got.push(bare_ip(&addresses(&r)[0]));
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|a| !reserved.contains(a)), "{got:?}");
    Call::add("p10", "eth0").config(&c).run().err(101);
    // The reservations are still there for their stages.
    let mut sandbox = Vec::new();
    for i in 0..2 {
        let r = Call::add(&format!("s{i}"), "eth0")
            .args("IPAM_STAGE=sandbox")
            .config(&c)
            .run()
            .ok_json();
        sandbox.push(bare_ip(&addresses(&r)[0]));
    }
    sandbox.sort();
    assert_eq!(sandbox, reserved[..2]);
    Call::add("s2", "eth0")
        .args("IPAM_STAGE=sandbox")
        .config(&c)
        .run()
        .err(101);
    let r = Call::add("f0", "eth0")
        .args("IPAM_STAGE=smallflow")
        .config(&c)
        .run()
        .ok_json();
    assert_eq!(addresses(&r), ["10.5.0.4/28"]);
}

#[test]
fn a_slash_30_has_one_address() {
    let etcd = shared_etcd();
    // 10.6.0.0/30: .0 network, .1 gateway, .3 broadcast: only .2.
    let c = conf(
        &etcd,
        "0.4.0",
        "slash30",
        json!({"ranges": [[{"subnet": "10.6.0.0/30"}]]}),
    );
    let r = Call::add("one", "eth0").config(&c).run().ok_json();
    assert_eq!(addresses(&r), ["10.6.0.2/30"]);
    assert_eq!(r["ips"][0]["gateway"], "10.6.0.1");
    let e = Call::add("two", "eth0").config(&c).run().err(101);
    assert_eq!(e["msg"], "address pool exhausted");
    assert_eq!(e["cniVersion"], "0.4.0");
    // Idempotent ADD of the holder still works on a full pool.
    Call::add("one", "eth0").config(&c).run().ok_json();
    Call::del("one", "eth0").config(&c).run().ok_empty();
    let r = Call::add("two", "eth0").config(&c).run().ok_json();
    assert_eq!(addresses(&r), ["10.6.0.2/30"]);
    // A /31 and a /32 leave nothing to hand out: refused as configs (as
    // host-local refuses them).
    for tiny in ["10.6.1.0/31", "10.6.1.0/32"] {
        let c = conf(
            &etcd,
            "0.4.0",
            "tiny",
            json!({"ranges": [[{"subnet": tiny}]]}),
        );
        Call::add("x", "eth0").config(&c).run().err(7);
    }
}

#[test]
fn malformed_input_is_a_cni_error_never_a_panic() {
    let etcd = shared_etcd();
    let add = || Call::add("m1", "eth0");

    // Not JSON: code 6 with line and column, in the latest version.
    let e = add()
        .stdin(b"{\"cniVersion\": \"0.3.1\",\n  \"name\": }")
        .run()
        .err(6);
    assert!(
        e["details"].as_str().unwrap().contains("line 2 column"),
        "{e}"
    );
    assert_eq!(e["cniVersion"], "1.1.0");
    add().stdin(b"").run().err(6);
    add().stdin(b"\xff\xfe").run().err(6);
    // The my-ipam seed config, trailing comma and all.
    let seed = include_str!("../src/cni/testdata/my-ipam-readme.json");
    let e = add().stdin(seed.as_bytes()).run().err(6);
    assert!(
        e["details"].as_str().unwrap().contains("line 23 column 3"),
        "{e}"
    );

    let base = |ipam: Value| conf(&etcd, "1.0.0", "malformed", ipam);
    let cases: Vec<(&str, Value, u64, &str)> = vec![
        ("missing ranges", base(json!({"routes": []})), 7, "ranges"),
        ("empty ranges", base(json!({"ranges": []})), 7, "ranges"),
        (
            "empty range set",
            base(json!({"ranges": [[]]})),
            7,
            "ipam.ranges[0]",
        ),
        (
            "bad CIDR",
            base(json!({"ranges": [[{"subnet": "10.7.0.0/33"}]]})),
            7,
            "ipam.ranges[0][0]",
        ),
        (
            "not a CIDR",
            base(json!({"ranges": [[{"subnet": "banana"}]]})),
            7,
            "banana",
        ),
        (
            "subnet missing",
            base(json!({"ranges": [[{"gateway": "10.7.0.1"}]]})),
            7,
            "subnet",
        ),
        (
            "gateway outside subnet",
            base(json!({"ranges": [[{"subnet": "10.7.0.0/24", "gateway": "10.8.0.1"}]]})),
            7,
            "10.8.0.1",
        ),
        (
            "rangeStart outside subnet",
            base(json!({"ranges": [[{"subnet": "10.7.0.0/24", "rangeStart": "10.9.0.5"}]]})),
            7,
            "10.9.0.5",
        ),
        (
            "overlapping range sets",
            base(json!({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "10.7.0.0/25"}]]})),
            7,
            "ipam.ranges",
        ),
        (
            "route without dst",
            base(json!({"ranges": [[{"subnet": "10.7.0.0/24"}]], "routes": [{"gw": "10.7.0.1"}]})),
            7,
            "dst",
        ),
        (
            "wrong type",
            base(json!({"ranges": [[{"subnet": 10}]]})),
            7,
            "ipam.ranges[0][0].subnet",
        ),
        (
            "ipam missing",
            json!({"cniVersion": "1.0.0", "name": "malformed"}),
            7,
            "ipam",
        ),
        (
            "name missing",
            json!({"cniVersion": "1.0.0", "ipam": {"subnet": "10.7.0.0/24"}}),
            7,
            "name",
        ),
        (
            "bad name",
            json!({"cniVersion": "1.0.0", "name": "a/b", "ipam": {"subnet": "10.7.0.0/24"}}),
            7,
            "name",
        ),
        (
            "unknown cniVersion",
            json!({"cniVersion": "9.9.9", "name": "malformed", "ipam": {"subnet": "10.7.0.0/24"}}),
            1,
            "9.9.9",
        ),
        (
            "old cniVersion",
            json!({"cniVersion": "0.2.0", "name": "malformed", "ipam": {"subnet": "10.7.0.0/24"}}),
            1,
            "0.2.0",
        ),
        (
            "no cniVersion",
            json!({"name": "malformed", "ipam": {"subnet": "10.7.0.0/24"}}),
            1,
            "cniVersion",
        ),
        (
            "whereabouts etcd_host",
            base(json!({"range": "10.7.0.0/24", "etcd_host": "10.0.0.1:2379"})),
            2,
            "ipam.etcd_host",
        ),
        (
            "ipRanges capability overlapping ipam.ranges",
            {
                let mut c = base(json!({"ranges": [[{"subnet": "10.7.0.0/24"}]]}));
                c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.7.0.0/16"}]]});
                c
            },
            7,
            "overlaps",
        ),
        ("not an object", json!([1, 2]), 7, ""),
    ];
    for (what, c, code, needle) in cases {
        let e = add().config(&c).run().err(code);
        let details = e["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(needle),
            "{what}: {details:?} lacks {needle:?}"
        );
        for cmd in ["DEL", "CHECK"] {
            let out = Call::new(&host_etcd(), cmd, "m1", "eth0").config(&c).run();
            let got = out.error()["code"].as_u64().unwrap();
            assert_eq!(got, code, "{what} {cmd}: {}", out.stdout);
        }
    }
    assert!(owners(&etcd, "malformed").is_empty());

    // Environment: each required variable missing is code 4 naming it.
    let good = base(json!({"ranges": [[{"subnet": "10.7.0.0/24"}]]}));
    for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
        let e = add().unset(var).config(&good).run().err(4);
        assert!(e["details"].as_str().unwrap().contains(var), "{e}");
    }
    for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
        Call::del("m1", "eth0")
            .unset(var)
            .config(&good)
            .run()
            .err(4);
    }
    let bad_env: [(&str, &str); 5] = [
        ("CNI_COMMAND", "FROB"),
        ("CNI_CONTAINERID", "a/b"),
        ("CNI_IFNAME", "this-name-is-too-long"),
        ("CNI_ARGS", "FOO=bar"),
        ("CNI_ARGS", "novalue"),
    ];
    for (var, value) in bad_env {
        let e = add().env(var, value).config(&good).run().err(4);
        assert!(
            e["details"].as_str().unwrap().contains(var),
            "{var}={value}: {e}"
        );
    }
    // The error JSON is in the config's version when it is a supported one.
    let e = add().unset("CNI_PATH").config(&good).run().err(4);
    assert_eq!(e["cniVersion"], "1.0.0");
    // Run by hand without CNI_COMMAND: an "about" line on stderr, exit 0.
    let out = Call::bare(&host_etcd(), "X").unset("CNI_COMMAND").run();
    assert_eq!(out.exit, Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("CNI host-etcd plugin"),
        "{}",
        out.stderr
    );
    assert!(owners(&etcd, "malformed").is_empty());
}

#[test]
fn host_etcd_readme_example_config() {
    let etcd = shared_etcd();
    let mut c: Value =
        serde_json::from_str(include_str!("../src/cni/testdata/host-etcd-readme.json")).unwrap();
    // The README's endpoint, host:port without a scheme, at the test etcd.
    c["ipam"]["endpoints"] = json!([etcd.url().trim_start_matches("http://")]);
    c["name"] = json!("examplenet-readme");
    let r = Call::add("example", "eth0").config(&c).run().ok_json();
    assert_shape(&r, "0.3.1");
    let a = addresses(&r);
    assert_eq!(a.len(), 2, "two range sets, two addresses: {r}");
    let v4 = bare_ip(&a[0]);
    let in_first = v4 >= ip("10.10.1.20") && v4 <= ip("10.10.3.50") && a[0].ends_with("/16");
    let in_second = net("172.16.5.0/24").contains(&v4) && a[0].ends_with("/24");
    assert!(in_first || in_second, "{r}");
    if in_first {
        assert_eq!(r["ips"][0]["gateway"], "10.10.0.254");
    } else {
        assert_eq!(r["ips"][0]["gateway"], "172.16.5.1");
    }
    let v6 = bare_ip(&a[1]);
    assert!(
        v6 >= ip("3ffe:ffff:0:1ff::10") && v6 <= ip("3ffe:ffff:0:1ff::20"),
        "{r}"
    );
    assert!(a[1].ends_with("/64"));
    assert_eq!(r["ips"][1]["gateway"], "3ffe:ffff:0:1ff::1");
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0"},
            {"dst": "192.168.0.0/16", "gw": "10.10.5.1"},
            {"dst": "3ffe:ffff:0:1ff::1/64"}
        ])
    );
    // The v6 range has 17 addresses: the 18th attachment finds it full.
    for i in 1..17 {
        Call::add(&format!("example{i}"), "eth0")
            .config(&c)
            .run()
            .ok_json();
    }
    let e = Call::add("example17", "eth0").config(&c).run().err(101);
    assert!(
        e["details"].as_str().unwrap().contains("range set 1"),
        "{e}"
    );
}

/// The host-etcd README's command line, run through `sh` as printed, with
/// its endpoint and certificate paths pointed at a TLS test etcd.
#[test]
fn host_etcd_readme_command_line_over_tls() {
    let pki = TestPki::generate();
    let etcd = EtcdServer::start_with(EtcdCluster::builder().tls(pki.server_tls(true)));
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(host_etcd(), dir.path().join("host-etcd")).unwrap();
    let endpoint = etcd.url().trim_start_matches("https://").to_string();
    let line = r#"echo '{ "cniVersion": "0.3.1", "name": "examplenet", "ipam": { "type": "host-etcd", "ranges": [ [{"subnet": "203.0.113.0/24"}], [{"subnet": "2001:db8:1::/64"}]], "endpoints": ["127.0.0.1:2379"], "certfile":"/tmp/certs/peer-cert.pem", "keyfile":"/tmp/certs/peer-key.pem", "trustedcafile":"/tmp/certs/ca.pem"  } }' | CNI_COMMAND=ADD CNI_CONTAINERID=example CNI_NETNS=/dev/null CNI_IFNAME=dummy0 CNI_PATH=. ./host-etcd"#
        .replace("127.0.0.1:2379", &endpoint)
        .replace("/tmp/certs/peer-cert.pem", pki.client_cert.to_str().unwrap())
        .replace("/tmp/certs/peer-key.pem", pki.client_key.to_str().unwrap())
        .replace("/tmp/certs/ca.pem", pki.ca.to_str().unwrap());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).unwrap();
    // The README's output, apart from which IPv6 address is picked (host-etcd
    // spreads starting points across nodes) and the cniVersion it omits.
    assert_eq!(
        r["ips"][0],
        json!({"version": "4", "address": "203.0.113.2/24", "gateway": "203.0.113.1"})
    );
    assert_eq!(r["ips"][1]["version"], "6");
    assert_eq!(r["ips"][1]["gateway"], "2001:db8:1::1");
    let a = addresses(&r);
    assert!(
        a[1].ends_with("/64") && net("2001:db8:1::/64").contains(&bare_ip(&a[1])),
        "{r}"
    );
    assert_eq!(r["dns"], json!({}));
    assert_eq!(r["cniVersion"], "0.3.1");
    // And it is on the TLS etcd.
    assert!(owners(&etcd, "examplenet").contains(&"example/dummy0".to_string()));
}

/// The chunk keys of a network's IPv4 chunks, as base addresses.
fn v4_chunk_bases(etcd: &EtcdServer, network: &str) -> Vec<u32> {
    let prefix = format!("/host-etcd/{network}/chunks/4/");
    let out = etcd.etcdctl(&["get", &prefix, "--prefix", "--keys-only"]);
    assert!(out.status.success(), "etcdctl get {prefix}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|hex| u32::from_str_radix(hex, 16).unwrap())
        .collect()
}

/// A config without `chunkBits` takes the default of its ranges (6 for a
/// /16) for a new network, and follows the chunk size an existing network
/// was created with (here 8, as before the default depended on the
/// ranges): ADD, CHECK and DEL work, the stored chunks stay at 8, and the
/// node's next ADD is one etcd call again. A config that sets another
/// `chunkBits` is still refused (code 7).
#[test]
fn a_config_without_chunk_bits_follows_the_networks_stored_chunk_size() {
    let etcd = EtcdServer::start();
    let range = json!({"ranges": [[{"subnet": "10.40.0.0/16"}]]});
    let mut pinned8 = range.clone();
    pinned8["chunkBits"] = json!(8);
    let old = conf(&etcd, "1.1.0", "kfollow-net", pinned8);
    let c1 = Call::add("c1", "eth0")
        .on_node("kfollow-a")
        .config(&old)
        .run()
        .ok_json();
    let c2 = Call::add("c2", "eth0")
        .on_node("kfollow-a")
        .config(&old)
        .run()
        .ok_json();
    // The same network, config without chunkBits, on another node.
    let new = conf(&etcd, "1.1.0", "kfollow-net", range.clone());
    let on_b = |call: Call| call.on_node("kfollow-b").config(&new).run();
    let c3 = on_b(Call::add("c3", "eth0")).ok_json();
    let held: Vec<String> = [&c1, &c2, &c3].iter().flat_map(|r| addresses(r)).collect();
    let distinct: std::collections::BTreeSet<&String> = held.iter().collect();
    assert_eq!(distinct.len(), 3, "{held:?}");
    let mut check = Call::check("c1", "eth0");
    check = check.config(&{
        let mut c = new.clone();
        c["prevResult"] = c1.clone();
        c
    });
    check.on_node("kfollow-b").run().ok_empty();
    on_b(Call::del("c2", "eth0")).ok_empty();
    assert_eq!(owners(&etcd, "kfollow-net"), ["c1/eth0", "c3/eth0"]);
    let bases = v4_chunk_bases(&etcd, "kfollow-net");
    assert!(!bases.is_empty());
    assert!(
        bases.iter().all(|b| b % 256 == 0),
        "chunks of 256 addresses only: {bases:x?}"
    );
    // Warm again: the node cache remembered the stored size.
    let before = support::etcd_metrics::kv_counts(&etcd.url());
    on_b(Call::add("c4", "eth0")).ok_json();
    let spent = support::etcd_metrics::kv_counts(&etcd.url()).since(before);
    assert_eq!(spent.calls(), 1, "{spent:?}");
    // A config that insists on another size is refused, naming both.
    let mut pinned6 = range.clone();
    pinned6["chunkBits"] = json!(6);
    let refused = Call::add("c5", "eth0")
        .on_node("kfollow-c")
        .config(&conf(&etcd, "1.1.0", "kfollow-net", pinned6))
        .run()
        .err(7);
    assert!(refused.to_string().contains('8'), "{refused}");

    // A new network without chunkBits on a /16 is created at k = 6.
    let fresh = conf(&etcd, "1.1.0", "kfresh-net", range);
    for id in ["f1", "f2"] {
        Call::add(id, "eth0")
            .on_node("kfollow-a")
            .config(&fresh)
            .run()
            .ok_json();
    }
    let meta = etcd.etcdctl(&["get", "/host-etcd/kfresh-net/meta", "--print-value-only"]);
    let meta: Value = serde_json::from_slice(&meta.stdout).unwrap();
    assert_eq!(meta["chunkBits"], 6, "{meta}");
}
