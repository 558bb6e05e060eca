//! The plugin binary on the embedded store (`dataDir`, no etcd), run as a
//! subprocess the way a runtime calls it: concurrency across processes,
//! SIGKILL at random points, bad data directories and foreign files.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use host_etcd::allocator::{Allocator, Options};
use host_etcd::store::local::LocalStore;
use serde_json::Value;
use support::alloc_harness::network;
use support::plugin::{addresses, bare_ip, ips};

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
    plugin_with(cmd, id, None, conf)
}

/// The plugin as a runtime starts it, with `CNI_ARGS` when given, the
/// config written to its stdin.
fn plugin_with(cmd: &str, id: &str, args: Option<&str>, conf: &str) -> std::process::Child {
    let mut c = Command::new(BIN);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/test")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin");
    if let Some(args) = args {
        c.env("CNI_ARGS", args);
    }
    let mut child = c
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

/// Runs the plugin with `CNI_ARGS` set.
fn run_args(cmd: &str, id: &str, args: &str, conf: &str) -> Output {
    plugin_with(cmd, id, Some(args), conf)
        .wait_with_output()
        .unwrap()
}

/// The result of a successful ADD.
fn added(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "ADD failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The addresses (without prefix length) of a successful ADD.
fn added_ips(out: &Output) -> Vec<IpAddr> {
    ips(&added(out))
}

/// The first address of a successful ADD.
fn added_ip(out: &Output) -> IpAddr {
    added_ips(out)[0]
}

/// The error JSON of a failed call.
fn error_of(out: &Output) -> Value {
    assert!(!out.status.success(), "expected a failure");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The error of a failed call: (code, details).
fn failed(out: &Output) -> (u64, String) {
    let v = error_of(out);
    (
        v["code"].as_u64().unwrap(),
        v["details"].as_str().unwrap_or_default().to_string(),
    )
}

/// The test's own allocator of the `localnet` network in `dir`, one range
/// set per subnet.
fn allocator(dir: &Path, subnets: &[&str]) -> Allocator<LocalStore> {
    let store = LocalStore::open(dir, Duration::from_secs(30)).unwrap();
    Allocator::new(store, network("localnet", subnets), Options::default()).unwrap()
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
    let a = allocator(&data, &["10.20.0.0/21"]);
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
        let a = allocator(&data, &["10.30.0.0/24"]);
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
    let a = allocator(&data, &["10.30.0.0/24"]);
    let report = block_on(a.check()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.owners, report.allocated),
        (1, 1),
        "only 'warm' is left"
    );
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

fn conf_with(data_dir: &Path, ipam: Value, top: Value) -> String {
    let mut ipam = ipam;
    ipam["type"] = "host-etcd".into();
    ipam["dataDir"] = data_dir.to_str().unwrap().into();
    let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "localnet", "ipam": ipam});
    for (k, v) in top.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

/// Exhausts a small range with exclusions through the plugin: every
/// allocatable address exactly once, no excluded one, then code 101.
#[test]
fn exclusions_are_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let conf = conf_with(
        &data,
        serde_json::json!({"ranges": [[{"subnet": "10.30.0.0/27",
            "exclude": ["10.30.0.8/29", "10.30.0.20", "10.30.0.29/30"]}]]}),
        serde_json::json!({}),
    );
    let excluded = |ip: IpAddr| {
        let v = match ip {
            IpAddr::V4(a) => u32::from(a) & 0xff,
            IpAddr::V6(_) => panic!("{ip}"),
        };
        (8..16).contains(&v) || v == 20 || (28..32).contains(&v)
    };
    // .2 ..= .30 minus .8-.15, .20 and .28-.31: 29 - 8 - 1 - 3 = 17.
    let mut got = HashSet::new();
    for i in 0..17 {
        let ip = added_ip(&run("ADD", &format!("c{i}"), &conf));
        assert!(!excluded(ip), "excluded {ip} handed out");
        assert!(got.insert(ip), "{ip} twice");
    }
    let (code, details) = failed(&run("ADD", "one-too-many", &conf));
    assert_eq!(code, 101, "{details}");
    // Released addresses come back; excluded ones still never.
    assert!(run("DEL", "c3", &conf).status.success());
    let again = added_ip(&run("ADD", "c3b", &conf));
    assert!(!excluded(again) && got.contains(&again));
}

/// A static request for an excluded address fails with code 100 naming
/// the address and the exclusion; nothing is allocated.
#[test]
fn static_request_for_an_excluded_address_is_code_100() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let ipam = serde_json::json!({"subnet": "10.31.0.0/24", "exclude": ["10.31.0.64/26"]});
    let conf = conf_with(
        &data,
        ipam.clone(),
        serde_json::json!({"runtimeConfig": {"ips": ["10.31.0.70/24"]}}),
    );
    let (code, details) = failed(&run("ADD", "s1", &conf));
    assert_eq!(code, 100, "{details}");
    assert!(
        details.contains("10.31.0.70")
            && details.contains("excluded")
            && details.contains("10.31.0.64/26"),
        "{details}"
    );
    // CNI_ARGS IP= takes the same path.
    let plain = conf_with(&data, ipam, serde_json::json!({}));
    let out = run_args("ADD", "s2", "IgnoreUnknown=1;IP=10.31.0.127", &plain);
    let (code, details) = failed(&out);
    assert_eq!(code, 100, "{details}");
    assert!(
        details.contains("10.31.0.127") && details.contains("excluded"),
        "{details}"
    );
    // Nothing was allocated: a dynamic ADD gets the first address.
    assert_eq!(added_ip(&run("ADD", "s3", &plain)).to_string(), "10.31.0.2");
}

/// A whereabouts-style section (`range` in `a-b/nn` form, `exclude`,
/// `ipRanges`) works with the type changed and nothing else but
/// `dataDir`: the whole range, minus exclusions, one set per entry.
#[test]
fn whereabouts_style_config_allocates_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let conf = conf_with(
        &data,
        serde_json::json!({"range": "192.168.2.225-192.168.2.230/28",
            "exclude": ["192.168.2.226/31"], "log_level": "debug",
            "ipRanges": [{"range": "fd00:2::/120", "range_start": "fd00:2::10", "range_end": "fd00:2::11"}]}),
        serde_json::json!({}),
    );
    let mut v4 = Vec::new();
    for i in 0..2 {
        let v = added(&run("ADD", &format!("w{i}"), &conf));
        let ips = addresses(&v);
        assert_eq!(ips.len(), 2, "{v}");
        assert!(
            ips[1].starts_with("fd00:2::1") && ips[1].ends_with("/120"),
            "{v}"
        );
        v4.push(ips[0].clone());
    }
    v4.sort();
    // .225-.230 minus .226/.227 (excluded) and .225 (the gateway defaults
    // to network + 1, never handed out); .230 is left.
    assert_eq!(v4, ["192.168.2.228/28", "192.168.2.229/28"]);
    // The IPv6 entry has two addresses; a third ADD finds it exhausted.
    let (code, details) = failed(&run("ADD", "w2", &conf));
    assert_eq!(code, 101, "{details}");
}

/// `runtimeConfig.ipRanges` (the `ipRanges` capability) is prepended to the
/// configured range sets, as host-local does: one address per set, the
/// runtime's first.
#[test]
fn runtime_ip_ranges_add_range_sets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let conf = conf_with(
        &data,
        serde_json::json!({"subnet": "10.32.0.0/24"}),
        serde_json::json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.33.0.0/24", "rangeStart": "10.33.0.50"}]]}}),
    );
    let v = added(&run("ADD", "r1", &conf));
    assert_eq!(addresses(&v), ["10.33.0.50/24", "10.32.0.2/24"]);
    // DEL with the same runtime config releases both.
    assert!(run("DEL", "r1", &conf).status.success());
    let again = run("ADD", "r2", &conf);
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    let first = bare_ip(v["ips"][0]["address"].as_str().unwrap());
    assert!(
        first.to_string().starts_with("10.33.0.")
            && first >= "10.33.0.50".parse::<IpAddr>().unwrap(),
        "{v}"
    );
    // A bad runtime range names its field (code 7).
    let bad = conf_with(
        &data,
        serde_json::json!({"subnet": "10.32.0.0/24"}),
        serde_json::json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.33.0.0/24", "exclude": ["10.34.0.1"]}]]}}),
    );
    let (code, details) = failed(&run("ADD", "r3", &bad));
    assert_eq!(code, 7, "{details}");
    assert!(
        details.starts_with("runtimeConfig.ipRanges[0][0].exclude[0]:"),
        "{details}"
    );
}

/// The lines of a plugin log, each parsed as JSON (a torn or foreign line
/// fails the test).
fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_utc_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// ADD, CHECK, STATUS, DEL, GC and failing commands on the embedded store,
/// each logged as one JSON line with its result, and the broken config too.
#[test]
fn plugin_log_has_one_line_per_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let log = dir.path().join("logs/plugin.log");
    let ipam = serde_json::json!({
        "ranges": [[{"subnet": "10.44.0.0/29"}]],
        "logFile": log,
    });
    let top = serde_json::json!({"cniVersion": "1.1.0"});
    let conf = conf_with(&data, ipam.clone(), top);
    let pod = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-7";
    let added = run_args("ADD", "c1", pod, &conf);
    let ip = added_ip(&added);
    assert!(run("CHECK", "c1", &conf).status.success());
    let status = run("STATUS", "c1", &conf);
    assert!(
        status.status.success() && status.stderr.is_empty(),
        "{status:?}"
    );
    assert!(run("DEL", "c1", &conf).status.success());
    let gc = conf_with(
        &data,
        ipam.clone(),
        serde_json::json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": []}),
    );
    assert!(run("GC", "c1", &gc).status.success());
    // Failing: a requested address outside the range (100), a broken range
    // (7, logged although the config is unusable), CHECK of nothing (3).
    let outside = conf_with(
        &data,
        ipam.clone(),
        serde_json::json!({"cniVersion": "1.1.0", "args": {"cni": {"ips": ["10.45.0.9"]}}}),
    );
    assert_eq!(failed(&run("ADD", "c2", &outside)).0, 100);
    let mut bad_ipam = ipam.clone();
    bad_ipam["ranges"] = serde_json::json!([[{"subnet": "10.44.0.0/99"}]]);
    let broken = conf_with(&data, bad_ipam, serde_json::json!({"cniVersion": "1.1.0"}));
    assert_eq!(failed(&run("ADD", "c3", &broken)).0, 7);
    assert_eq!(failed(&run("CHECK", "c1", &conf)).0, 3);

    let lines = log_lines(&log);
    let seen: Vec<(&str, &str, Option<u64>)> = lines
        .iter()
        .map(|l| {
            (
                l["command"].as_str().unwrap(),
                l["result"].as_str().unwrap(),
                l["code"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADD", "ok", None),
            ("CHECK", "ok", None),
            ("STATUS", "ok", None),
            ("DEL", "ok", None),
            ("GC", "ok", None),
            ("ADD", "error", Some(100)),
            ("ADD", "error", Some(7)),
            ("CHECK", "error", Some(3)),
        ]
    );
    for l in &lines {
        assert!(is_rfc3339_utc_ms(l["time"].as_str().unwrap()), "{l}");
        assert_eq!(l["network"], "localnet", "{l}");
        assert_eq!(l["ifname"], "eth0", "{l}");
        assert!(l["durationMs"].as_f64().unwrap() > 0.0, "{l}");
        let failed = l["result"] == "error";
        assert_eq!(l["level"], if failed { "error" } else { "info" }, "{l}");
        assert_eq!(l["msg"].is_string(), failed, "{l}");
        assert_eq!(l["details"].is_string(), failed, "{l}");
        assert!(l.get("pid").is_none(), "debug fields at info: {l}");
    }
    let add = &lines[0];
    assert_eq!(add["containerID"], "c1");
    assert_eq!(add["pod"], "ns1/web-7");
    assert_eq!(add["addresses"], serde_json::json!([format!("{ip}/29")]));
    // The embedded store's first ADD: read, then one transaction.
    assert_eq!(
        (add["reads"].as_u64(), add["txns"].as_u64()),
        (Some(1), Some(1)),
        "{add}"
    );
    assert_eq!(add["roundTrips"], 2);
    assert_eq!(add["casRetries"], 0);
    assert!(
        lines[2]["roundTrips"].as_u64().unwrap() >= 1,
        "{}",
        lines[2]
    );
    assert!(lines[5]["details"].as_str().unwrap().contains("10.45.0.9"));
    let broken_line = &lines[6];
    assert!(broken_line["details"]
        .as_str()
        .unwrap()
        .contains("ipam.ranges[0][0]"));
    assert!(
        broken_line.get("roundTrips").is_none(),
        "no store was opened: {broken_line}"
    );
    // Level error: only the failures.
    let mut quiet_ipam = ipam.clone();
    quiet_ipam["logLevel"] = "error".into();
    quiet_ipam["logFile"] = dir.path().join("logs/errors.log").to_str().unwrap().into();
    let quiet = conf_with(
        &data,
        quiet_ipam,
        serde_json::json!({"cniVersion": "1.1.0"}),
    );
    added_ip(&run("ADD", "c4", &quiet));
    assert_eq!(failed(&run("CHECK", "c9", &quiet)).0, 3);
    let errors = log_lines(&dir.path().join("logs/errors.log"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0]["command"].as_str(), errors[0]["code"].as_u64()),
        (Some("CHECK"), Some(3))
    );
}

/// Bad log settings fail the command (code 7, field named); a log file that
/// cannot be opened never does (the result is unchanged, stderr says why).
#[test]
fn log_settings_are_validated_and_an_unwritable_log_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let base = serde_json::json!({"ranges": [[{"subnet": "10.46.0.0/29"}]]});
    let top = serde_json::json!({"cniVersion": "1.1.0"});
    for (fields, field) in [
        (
            serde_json::json!({"logFile": "relative.log"}),
            "ipam.logFile",
        ),
        (
            serde_json::json!({"logFile": "/l.log", "logLevel": "trace"}),
            "ipam.logLevel",
        ),
        (
            serde_json::json!({"logFile": "/l.log", "logMaxBytes": 0}),
            "ipam.logMaxBytes",
        ),
        (
            serde_json::json!({"logFile": "/l.log", "logMaxBytes": -10}),
            "ipam.logMaxBytes",
        ),
        (serde_json::json!({"logLevel": "debug"}), "ipam.logLevel"),
    ] {
        let mut ipam = base.clone();
        for (k, v) in fields.as_object().unwrap() {
            ipam[k] = v.clone();
        }
        let (code, details) = failed(&run("ADD", "c1", &conf_with(&data, ipam, top.clone())));
        assert_eq!(code, 7, "{fields}: {details}");
        assert!(details.starts_with(field), "{fields}: {details}");
    }
    assert!(!Path::new("/l.log").exists());

    // The log's directory is a file: ADD works and returns what it would.
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    let mut ipam = base.clone();
    ipam["logFile"] = dir.path().join("a-file/p.log").to_str().unwrap().into();
    let conf = conf_with(&data, ipam, top.clone());
    let out = run("ADD", "c1", &conf);
    let ip = added_ip(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write the log file"), "{stderr}");
    let plain = conf_with(&data, base.clone(), top.clone());
    let again = run("ADD", "c1", &plain);
    assert_eq!(added_ip(&again), ip, "same allocation");
    assert_eq!(
        out.stdout, again.stdout,
        "same result with and without the log"
    );
    // A failing command keeps its own error.
    assert_eq!(failed(&run("CHECK", "c9", &conf)).0, 3);
}

/// A tiny `logMaxBytes`: the log rotates to `<file>.1`, both files stay
/// near the cap, every line is whole, and the newest line is in the file.
/// Processes run four at a time to race on the rotation.
#[test]
fn plugin_log_rotates_under_concurrent_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let log = dir.path().join("p.log");
    let old = dir.path().join("p.log.1");
    let cap = 1200u64;
    let ipam = serde_json::json!({
        "ranges": [[{"subnet": "10.47.0.0/24"}]],
        "logFile": log, "logMaxBytes": cap,
    });
    let conf = conf_with(&data, ipam, serde_json::json!({"cniVersion": "1.1.0"}));
    for round in 0..4 {
        let children: Vec<_> = (0..4)
            .map(|i| plugin("ADD", &format!("r{round}-{i}"), &conf))
            .collect();
        for c in children {
            added_ip(&c.wait_with_output().unwrap());
        }
    }
    assert!(run("DEL", "last-one", &conf).status.success());
    let current = log_lines(&log);
    let previous = log_lines(&old);
    assert!(!previous.is_empty(), "rotated");
    let longest = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .chain(
            std::fs::read_to_string(&old)
                .unwrap()
                .lines()
                .collect::<Vec<_>>(),
        )
        .map(str::len)
        .max()
        .unwrap() as u64;
    for p in [&log, &old] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(
            len <= cap + 4 * (longest + 1),
            "{} has {len} bytes",
            p.display()
        );
    }
    assert!(
        current.len() + previous.len() < 17,
        "one generation is kept"
    );
    assert_eq!(current.last().unwrap()["containerID"], "last-one");
    for l in current.iter().chain(&previous) {
        assert_eq!(l["result"], "ok", "{l}");
    }
}

fn run_pod(cmd: &str, id: &str, pod: Option<&str>, conf: &str) -> Output {
    let args = pod.map(|name| format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={name}"));
    plugin_with(cmd, id, args.as_deref(), conf)
        .wait_with_output()
        .unwrap()
}

/// `stickyTtlSeconds`: a StatefulSet pod that comes back under a new
/// container ID gets its addresses back (both families); another pod name
/// does not, and a network without the field behaves as before.
#[test]
fn sticky_addresses_follow_the_pod_name_across_container_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ranges = serde_json::json!([[{"subnet": "10.40.0.0/24"}], [{"subnet": "fd40::/120"}]]);
    let sticky = conf_with(
        &dir.path().join("sticky"),
        serde_json::json!({"ranges": ranges, "stickyTtlSeconds": 600}),
        serde_json::json!({}),
    );
    let plain = conf_with(
        &dir.path().join("plain"),
        serde_json::json!({"ranges": ranges}),
        serde_json::json!({}),
    );
    for (conf, is_sticky) in [(&sticky, true), (&plain, false)] {
        let first = added_ips(&run_pod("ADD", "c1", Some("web-0"), conf));
        assert_eq!(first.len(), 2);
        added_ips(&run_pod("ADD", "o1", Some("other-0"), conf));
        assert!(run_pod("DEL", "c1", Some("web-0"), conf).status.success());
        let second = added_ips(&run_pod("ADD", "c2", Some("web-0"), conf));
        if is_sticky {
            assert_eq!(
                second, first,
                "same pod name, new container: same addresses"
            );
        } else {
            assert!(second.iter().all(|ip| !first.contains(ip)), "{second:?}");
        }
        // Idempotent ADD of the new container.
        assert_eq!(
            added_ips(&run_pod("ADD", "c2", Some("web-0"), conf)),
            second
        );
        // Another pod name never gets them.
        assert!(run_pod("DEL", "c2", Some("web-0"), conf).status.success());
        let other = added_ips(&run_pod("ADD", "x1", Some("web-1"), conf));
        assert!(other.iter().all(|ip| !second.contains(ip)), "{other:?}");
    }
    // State: the sticky network holds web-0's binding, the plain one none.
    for (sub, want) in [("sticky", 1), ("plain", 0)] {
        let a = allocator(&dir.path().join(sub), &["10.40.0.0/24", "fd40::/120"]);
        let bindings = block_on(a.bindings()).unwrap();
        assert_eq!(bindings.len(), want, "{sub}: {bindings:?}");
        assert!(block_on(a.check()).unwrap().is_clean());
    }
}
