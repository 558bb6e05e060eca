//! The node agent's operations side, as a node runs it: `host-etcd agent`
//! as a subprocess of the built binary, the plugin run as a runtime runs it
//! (through the agent, `"agent": "required"`), a real etcd, and libcni
//! result cache files written by the test in libcni's format
//! (`tests/fixtures/libcni-cache-entry.json`, captured from podman).
//!
//! * `--reconcile-interval 1s --reconcile-grace 0s`: within a few seconds
//!   exactly the containers without a cache entry are released (owner
//!   records gone, `check()` clean), those with one are kept, and records
//!   of another node are never touched; one JSON `reconcile` log line per
//!   pass;
//! * the refusals: an unreadable cache directory, a cache file of the
//!   network that does not decode, and an empty cache each release
//!   nothing, pass after pass, and say why in the log;
//! * `--metrics-listen`: `/metrics` over HTTP has the network's figures
//!   (addresses used = the ADDs, owner records, `up`) and the agent's
//!   counters; an address that cannot be bound stops the agent (exit
//!   non-zero, the address in the log) before it takes the socket.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use host_etcd::allocator::Allocator;
use host_etcd::store::etcd::EtcdStore;
use serde_json::{json, Value};
use support::agent::Agent;
use support::alloc_harness::{owner, req};
use support::faults::{allocator_with, netconf};
use support::ipamctl::cache_entry;
use support::plugin::Call;
use support::EtcdServer;

/// The `reconcile` log lines of network `net`.
fn passes(agent: &Agent, net: &str) -> Vec<Value> {
    agent
        .log_lines()
        .into_iter()
        .filter(|v| v["event"] == "reconcile" && v["network"] == net)
        .collect()
}

/// Waits until at least `n` passes of `net` are logged.
fn wait_passes(agent: &Agent, net: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = passes(agent, net);
        if p.len() >= n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} reconcile passes of {net}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A network config served through `agent` (required: never direct).
fn conf(etcd: &EtcdServer, name: &str, prefix: &str, dir: &Path, agent: &Agent) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "ranges": [[{"subnet": "10.61.0.0/24"}]],
            "endpoints": [etcd.url()],
            "prefix": prefix,
            "dataDir": dir.join("node").to_str().unwrap(),
            "agent": "required",
            "agentSocket": agent.socket.to_str().unwrap(),
        }
    })
}

/// The test's own allocator of the network, as node `node`.
async fn allocator(conf: &Value, node: &str) -> Allocator<EtcdStore> {
    let mut options = netconf(conf).options();
    options.node_name = node.to_string();
    allocator_with(conf, options).await
}

fn add(conf: &Value, cid: &str) {
    Call::add(cid, "eth0").config(conf).run().ok_json();
}

async fn held(alloc: &Allocator<EtcdStore>, cids: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for c in cids {
        out.push(alloc.owner(&owner(c)).await.unwrap().is_some());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reconcile_releases_exactly_the_containers_the_runtime_no_longer_has() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("results");
    std::fs::create_dir_all(&cache).unwrap();
    let agent = Agent::start_with(
        &dir.path().join("a"),
        &[
            "--reconcile-interval",
            "1s",
            "--reconcile-grace",
            "0s",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let conf = conf(&etcd, "opsnet", "/ops", dir.path(), &agent);
    let kept = ["keep-1", "keep-2"];
    let leaked = ["leak-1", "leak-2", "leak-3"];
    // The runtime's entries exist before the ADDs complete, as libcni's
    // do once the ADD returned; with a zero grace a pass may run at any
    // moment between the ADDs.
    for c in kept {
        cache_entry(&cache, "opsnet", c);
    }
    // An entry of another network names a leaked container: not this
    // network's attachment.
    cache_entry(&cache, "othernet", "leak-1");
    for c in kept.iter().chain(&leaked) {
        add(&conf, c);
    }
    // Another node's record: never looked at.
    let other = allocator(&conf, "some-other-node").await;
    other.allocate(&req("elsewhere")).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while held(&other, &leaked).await.iter().any(|h| *h) {
        assert!(
            Instant::now() < deadline,
            "leaked containers not released; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more passes: the kept ones stay kept.
    let n = passes(&agent, "opsnet").len();
    let passes = wait_passes(&agent, "opsnet", n + 2);
    assert_eq!(held(&other, &kept).await, [true, true]);
    assert_eq!(held(&other, &["elsewhere"]).await, [true]);
    let report = other.check().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The kept ones are still served: CHECK through the agent succeeds.
    for c in kept {
        Call::check(c, "eth0").config(&conf).run().ok_empty();
    }

    let released: u64 = passes.iter().map(|p| p["released"].as_u64().unwrap()).sum();
    assert_eq!(released, 3, "{passes:#?}");
    let mut names: Vec<String> = passes
        .iter()
        .flat_map(|p| p["released_owners"].as_array().unwrap().clone())
        .map(|o| o["container"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, leaked);
    for p in &passes {
        assert_eq!(p["level"], "info", "{p}");
        assert!(
            p.get("refused").is_none() && p.get("error").is_none(),
            "{p}"
        );
    }
    let last = passes.last().unwrap();
    assert_eq!(last["owners"], 2, "{last}");
    assert_eq!(last["kept"], 2, "{last}");
    assert_eq!(last["released"], 0, "{last}");
}

/// Runs an agent with `cache_dir`, makes it serve the network (CHECK of
/// every container), waits for three passes and returns them; nothing may
/// have been released.
async fn refused_passes(
    etcd: &EtcdServer,
    dir: &Path,
    run: &str,
    cache_dir: &Path,
    cids: &[&str],
) -> Vec<Value> {
    let agent = Agent::start_with(
        &dir.join(run),
        &[
            "--reconcile-interval",
            "1s",
            "--reconcile-grace",
            "0s",
            "--cache-dir",
            cache_dir.to_str().unwrap(),
        ],
    );
    let conf = conf(etcd, "refnet", "/refuse", dir, &agent);
    let alloc = allocator(&conf, "test").await;
    for c in cids {
        if alloc.owner(&owner(c)).await.unwrap().is_none() {
            add(&conf, c);
        } else {
            Call::check(c, "eth0").config(&conf).run().ok_empty();
        }
    }
    let passes = wait_passes(&agent, "refnet", 3);
    assert!(
        held(&alloc, cids).await.iter().all(|h| *h),
        "{run}: something was released; log:\n{}",
        agent.log()
    );
    for p in &passes {
        assert_eq!(p["level"], "warn", "{run}: {p}");
        assert!(p.get("released").is_none_or(|r| r == 0), "{run}: {p}");
    }
    passes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_refusals_release_nothing() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cids = ["r-1", "r-2"];

    // No such directory.
    let missing = dir.path().join("no-such-dir");
    let passes = refused_passes(&etcd, dir.path(), "missing", &missing, &cids).await;
    for p in &passes {
        let e = p["error"].as_str().unwrap();
        assert!(
            e.contains("nothing released") && e.contains("no-such-dir"),
            "{p}"
        );
    }

    // A file where the directory should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let passes = refused_passes(&etcd, dir.path(), "file", &file, &cids).await;
    for p in &passes {
        assert!(
            p["error"].as_str().unwrap().contains("not a directory"),
            "{p}"
        );
    }

    // A torn entry of this network (r-1 has a good one): blocked.
    let torn = dir.path().join("torn");
    std::fs::create_dir_all(&torn).unwrap();
    cache_entry(&torn, "refnet", "r-1");
    std::fs::write(torn.join("refnet-r-2-eth0"), b"{\"kind\": \"cniCac").unwrap();
    let passes = refused_passes(&etcd, dir.path(), "torn", &torn, &cids).await;
    for p in &passes {
        assert!(p["refused"].is_string(), "{p}");
        let notes = p["notes"].as_array().unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.as_str().unwrap().contains("refnet-r-2-eth0")),
            "{p}"
        );
    }

    // An empty cache (a runtime keeping it elsewhere looks like this).
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let passes = refused_passes(&etcd, dir.path(), "empty", &empty, &cids).await;
    for p in &passes {
        assert!(p["refused"].is_string(), "{p}");
        assert_eq!(p["kept"], 2, "{p}");
    }
}

/// `GET path` over HTTP/1.1; the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The value of every sample of `name` whose labels contain `labels`.
fn samples(text: &str, name: &str, labels: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && rest.contains(labels)).then(|| value.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_of_the_served_networks_and_the_agent() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(&dir.path().join("a"), &["--metrics-listen", "127.0.0.1:0"]);
    let addr = agent
        .log_lines()
        .into_iter()
        .find(|v| v["event"] == "metrics_listening")
        .unwrap_or_else(|| panic!("no metrics_listening line:\n{}", agent.log()))["address"]
        .as_str()
        .unwrap()
        .to_string();

    // Before any request: no network yet, the agent's figures are there.
    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        samples(&text, "host_etcd_agent_networks", ""),
        [0.0],
        "{text}"
    );
    assert_eq!(samples(&text, "host_etcd_agent_requests_total", ""), [0.0]);

    let conf = conf(&etcd, "mnet", "/metrics-test", dir.path(), &agent);
    for c in ["m-1", "m-2", "m-3"] {
        add(&conf, c);
    }
    Call::del("m-3", "eth0").config(&conf).run().ok_empty();
    // An ADD the plugin refuses (no such address in the range).
    let refused = Call::add("m-bad", "eth0")
        .config(&conf)
        .args("IP=10.99.0.5")
        .run();
    assert_ne!(refused.exit, Some(0), "{}", refused.details());

    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    let net = "network=\"mnet\"";
    // This node's figures only: its records from its index, no cluster
    // figure (those are `ipamctl metrics`'s, run once per cluster).
    assert_eq!(
        samples(&text, "host_etcd_agent_node_owner_records", net),
        [2.0],
        "{text}"
    );
    assert!(!text.contains("host_etcd_ipam_"), "{text}");
    assert_eq!(
        samples(&text, "host_etcd_agent_scrape_errors_total", net),
        [0.0],
        "{text}"
    );
    // Latency per command: 4 ADDs (one refused), 1 DEL.
    let count = |command: &str| {
        samples(
            &text,
            "host_etcd_agent_request_duration_seconds_count",
            &format!("command=\"{command}\""),
        )
    };
    assert_eq!(count("ADD"), [4.0], "{text}");
    assert_eq!(count("DEL"), [1.0], "{text}");
    assert_eq!(count("GC"), [0.0], "{text}");
    assert_eq!(
        samples(
            &text,
            "host_etcd_agent_request_duration_seconds_bucket",
            "command=\"ADD\",le=\"+Inf\""
        ),
        [4.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "host_etcd_agent_networks", ""),
        [1.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "host_etcd_agent_requests_total", ""),
        [5.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "host_etcd_agent_errors_total", ""),
        [1.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "host_etcd_agent_network_requests_total", net),
        [5.0],
        "{text}"
    );
    for family in [
        "host_etcd_agent_requests_total counter",
        "host_etcd_agent_errors_total counter",
        "host_etcd_agent_networks gauge",
        "host_etcd_agent_request_duration_seconds histogram",
        "host_etcd_agent_node_owner_records gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}\n{text}"
        );
    }
    // Prometheus' own lint accepts every family (the histogram included).
    support::prometheus::assert_lint_clean(&text);
    assert_eq!(http_get(&addr, "/nope").0, 404);
}

#[test]
fn an_unbindable_metrics_address_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut agent = Agent::spawn(dir.path(), &["--metrics-listen", &addr]);
    let code = agent.wait(Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    let log = agent.log();
    assert!(log.contains("start_failed") && log.contains(&addr), "{log}");
    assert!(!agent.socket.exists(), "the socket was taken");

    // Not an address at all.
    let mut agent = Agent::spawn(&dir.path().join("b"), &["--metrics-listen", "nonsense"]);
    let code = agent.wait(Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    assert!(agent.log().contains("nonsense"), "{}", agent.log());

    // A zero interval is a usage error.
    let mut agent = Agent::spawn(&dir.path().join("c"), &["--reconcile-interval", "0"]);
    assert_eq!(agent.wait(Duration::from_secs(20)), Some(2));
}
