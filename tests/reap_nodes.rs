//! Node liveness and the dead-node reaper on a real etcd, with simulated
//! nodes (UTS namespaces with their own host names): agents keep their
//! liveness keys (`--liveness-config`, TTL 5 s); `ipamctl reap` passes run
//! every second with `--node-gone-after 6s`.
//!
//! * a node whose agent is killed (SIGKILL; its namespace goes with it) is
//!   marked gone once its lease expires and reaped only after the grace;
//!   the other nodes' records, and those of a node that never ran an agent
//!   with liveness, are never touched;
//! * a node whose agent is frozen longer than its TTL (a partition) and
//!   then resumes within the grace is not reaped, and its mark is cleared;
//! * two reapers at once release every record exactly once;
//! * an agent that comes back after its node was reaped says so (log and
//!   metric).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::Agent;
use support::plugin::{addresses, Call};
use support::EtcdServer;

const NET: &str = "reapnet";

fn conf(etcd: &EtcdServer) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "agent": "off",
            "ranges": [[{"subnet": "10.77.0.0/16"}]]
        }
    })
}

fn write_conf(dir: &Path, etcd: &EtcdServer) -> PathBuf {
    let path = dir.join("net.conf");
    std::fs::write(&path, serde_json::to_vec(&conf(etcd)).unwrap()).unwrap();
    path
}

fn ipamctl(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// One reaper pass (JSON lines, one per node acted on).
fn reap(config: &Path) -> Vec<Value> {
    let out = ipamctl(
        config,
        &["reap", "--node-gone-after", "6s", "--yes", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `ipamctl nodes --json`, by node.
fn nodes(config: &Path) -> std::collections::BTreeMap<String, Value> {
    let out = ipamctl(config, &["nodes", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| (r["node"].as_str().unwrap().to_string(), r))
        .collect()
}

fn records(config: &Path, node: &str) -> u64 {
    nodes(config).get(node).map_or(0, |r| {
        r["records"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    })
}

fn add_on(node: &str, c: &Value, n: usize) {
    for i in 0..n {
        let r = Call::add(&format!("{node}-c{i}"), "eth0")
            .on_node(node)
            .config(c)
            .run()
            .ok_json();
        assert_eq!(addresses(&r).len(), 1);
    }
}

fn wait_state(config: &Path, node: &str, state: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let all = nodes(config);
        if all.get(node).is_some_and(|r| r["state"] == state) {
            return;
        }
        assert!(Instant::now() < deadline, "{node} never {state}: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn liveness_agent(dir: &Path, node: &str, config: &Path) -> Agent {
    Agent::start_on_node(
        &dir.join(node),
        node,
        &[
            "--liveness-config",
            config.to_str().unwrap(),
            "--liveness-ttl-secs",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
}

#[test]
fn a_killed_node_is_reaped_after_the_grace_and_a_partitioned_one_is_not() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_conf(dir.path(), &etcd);
    let c = conf(&etcd);
    let mut a = liveness_agent(dir.path(), "node-a", &config);
    let b = liveness_agent(dir.path(), "node-b", &config);
    add_on("node-a", &c, 3);
    add_on("node-b", &c, 2);
    // A node whose plugins run without an agent: never has liveness.
    add_on("node-c", &c, 2);
    wait_state(&config, "node-a", "alive", Duration::from_secs(10));
    wait_state(&config, "node-b", "alive", Duration::from_secs(10));
    assert_eq!(nodes(&config)["node-c"]["state"], "no-liveness");
    assert!(
        reap(&config).is_empty(),
        "nothing to do while all are alive"
    );

    // Node A dies; node B freezes for longer than its TTL (a partition).
    a.kill9();
    b.signal("STOP");
    wait_state(&config, "node-a", "gone", Duration::from_secs(15));
    // The reaper marks both gone on its first pass after their leases expired.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut marked = std::collections::BTreeMap::new();
    while marked.len() < 2 {
        for o in reap(&config) {
            assert_eq!(o["action"], "marked-gone", "{o}");
            marked.insert(o["node"].as_str().unwrap().to_string(), Instant::now());
        }
        assert!(Instant::now() < deadline, "not marked: {marked:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let marked_at = marked["node-a"];
    // Node B comes back within the grace.
    b.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes(&config)["node-b"]["state"] != "alive" {
        assert!(
            Instant::now() < deadline,
            "node-b never alive again; its log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Passes until node A is reaped: never before the grace after the mark.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reaped = loop {
        let outcomes = reap(&config);
        let a_out: Vec<&Value> = outcomes.iter().filter(|o| o["node"] == "node-a").collect();
        if let Some(o) = a_out.first() {
            break (*o).clone();
        }
        assert_eq!(records(&config, "node-a"), 3);
        assert!(Instant::now() < deadline, "node-a never reaped");
        std::thread::sleep(Duration::from_millis(500));
    };
    // The mark holds whole seconds and the pass that made it ended a little
    // after it: 6 s of grace is at least 4 s after the test saw the mark.
    assert!(
        marked_at.elapsed() >= Duration::from_secs(4),
        "reaped too early: {:?} after the mark",
        marked_at.elapsed()
    );
    assert_eq!(reaped["action"], "reaped", "{reaped}");
    assert_eq!(reaped["released"][NET], 3, "{reaped}");
    let all = nodes(&config);
    assert_eq!(all["node-a"]["state"], "reaped", "{all:?}");
    assert_eq!(records(&config, "node-a"), 0);
    // Node B (partitioned within the grace) and node C are untouched.
    assert_eq!(all["node-b"]["state"], "alive", "{all:?}");
    assert!(all["node-b"]["seen"].get("gone_since").is_none(), "{all:?}");
    assert_eq!(records(&config, "node-b"), 2);
    assert_eq!(records(&config, "node-c"), 2);
    let check = ipamctl(&config, &["check"]);
    assert!(check.status.success(), "{check:?}");
    // Reaped once: later passes do nothing more.
    assert!(reap(&config).iter().all(|o| o["node"] != "node-a"));

    // Node A's agent comes back: it says so, loudly, and is alive again.
    let again = liveness_agent(dir.path(), "node-a", &config);
    wait_state(&config, "node-a", "alive", Duration::from_secs(10));
    let lines = again.log_lines();
    let warned = lines.iter().find(|l| l["event"] == "node_was_reaped");
    assert!(
        warned.is_some_and(|l| l["level"] == "error"),
        "{}",
        again.log()
    );
    let addr = lines
        .iter()
        .find(|l| l["event"] == "metrics_listening")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics = http_get(&addr);
    assert!(
        metrics.contains("host_etcd_agent_node_reaped 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("host_etcd_agent_liveness_up 1\n"),
        "{metrics}"
    );
    assert!(nodes(&config)["node-a"]["seen"].get("reaped_at").is_none());
}

#[test]
fn two_reapers_release_every_record_once() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_conf(dir.path(), &etcd);
    let c = conf(&etcd);
    let mut a = liveness_agent(dir.path(), "node-d", &config);
    add_on("node-d", &c, 20);
    wait_state(&config, "node-d", "alive", Duration::from_secs(10));
    a.kill9();
    wait_state(&config, "node-d", "gone", Duration::from_secs(15));
    assert_eq!(reap(&config)[0]["action"], "marked-gone");
    std::thread::sleep(Duration::from_secs(7));
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_ipamctl"))
            .arg("--config")
            .arg(&config)
            .args(["reap", "--node-gone-after", "6s", "--yes", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (r1, r2) = (spawn(), spawn());
    let mut released = 0;
    for r in [r1, r2] {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            released += v["released"][NET].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(released, 20);
    assert_eq!(records(&config, "node-d"), 0);
    let check = ipamctl(&config, &["check"]);
    assert!(check.status.success(), "{check:?}");
}

fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
