//! The node agent never costs a pod its deadline, never leaves an
//! abandoned ADD committed, and commits concurrent DELs together — the
//! agent a subprocess, the plugin run as a runtime runs it, real etcd:
//!
//! * a frozen agent (SIGSTOP): `auto` goes direct after `agentAckMs` and
//!   succeeds before its deadline (the agent never ran it); `required` is
//!   code 11 before its deadline;
//! * the same ADD run through a late agent and directly, on purpose, in
//!   both orders: one owner record, the same addresses for both;
//! * ADDs whose plugin gave up or was killed — at a frozen agent, or while
//!   the agent's transaction was in flight at a frozen etcd — hold no
//!   address once the agent is idle again (a plugin that went direct holds
//!   exactly its one record), counted in the agent's metrics;
//! * 16 concurrent DELs through the agent each succeed and free their
//!   addresses.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};

use std::path::Path;
use std::time::{Duration, Instant};

use host_etcd::allocator::{Allocator, Options, OwnerId};
use host_etcd::store::etcd::EtcdStore;
use serde_json::{json, Value};
use support::agent::{frame, network_requests, status, Agent};
use support::etcd_metrics::kv_counts;
use support::faults::allocator_with;
use support::plugin::{add_all_at_once, assert_distinct, ips, Call};
use support::EtcdServer;

const BUDGET_MS: u64 = 4000;
const DIAL_MS: u64 = 1000;

/// The whole-call bound of a plugin that asked the agent first: `budgetMs`
/// from the plugin's start (a plugin without an agent has `budgetMs` +
/// `dialTimeoutMs`), plus what starting and ending the plugin process costs
/// the test's clock, well under `dialTimeoutMs`.
fn deadline() -> Duration {
    Duration::from_millis(BUDGET_MS + DIAL_MS / 2)
}

/// The body of `GET path` on `addr`.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Polls the agent's status until `done` holds (at most 30 s).
fn wait_status(socket: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = status(socket) {
            if done(&st) {
                return st;
            }
            assert!(Instant::now() < until, "{what}: {st:#}");
        }
        assert!(Instant::now() < until, "{what}: the agent does not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn abandoned(st: &Value, field: &str) -> u64 {
    st["abandoned"][field].as_u64().unwrap()
}

fn conf(etcd: &EtcdServer, name: &str, dir: &Path, extra: Value) -> Value {
    let ranges = ("10.60.0.0/16", "fd00:60::/64");
    let mut ipam =
        json!({"budgetMs": BUDGET_MS, "dialTimeoutMs": DIAL_MS, "requestTimeoutMs": 10000});
    for (k, v) in extra.as_object().unwrap() {
        ipam[k] = v.clone();
    }
    support::agent::network_conf(&etcd.url(), name, ranges, dir, ipam)
}

fn via(socket: &Path, mode: &str) -> Value {
    let mut v = support::agent::via_agent(socket, mode);
    v["agentAckMs"] = json!(200);
    v
}

async fn allocator(conf: &Value) -> Allocator<EtcdStore> {
    allocator_with(conf, Options::default()).await
}

fn owner(id: &str) -> OwnerId {
    OwnerId {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

/// The containers among `ids` that hold an owner record in etcd.
fn holders(conf: &Value, ids: &[String]) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = allocator(conf).await;
        let mut out = Vec::new();
        for id in ids {
            if a.owner(&owner(id)).await.unwrap().is_some() {
                out.push(id.clone());
            }
        }
        assert!(a.check().await.unwrap().is_clean(), "check after the run");
        out
    })
}

#[test]
fn a_frozen_agent_costs_auto_one_ack_wait_and_required_fails_within_its_deadline() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let auto = conf(&etcd, "frozen", dir.path(), via(&agent.socket, "auto"));
    let required = conf(&etcd, "frozen", dir.path(), via(&agent.socket, "required"));
    Call::add("warm", "eth0").config(&auto).run().ok_json();
    assert_eq!(
        network_requests(&status(&agent.socket).unwrap(), "frozen"),
        1
    );

    agent.freeze();
    let t = Instant::now();
    let direct = Call::add("f-auto", "eth0").config(&auto).run();
    let took = t.elapsed();
    let got = ips(&direct.ok_json());
    assert!(
        took < deadline(),
        "auto with a frozen agent took {took:?}, over its deadline {:?}",
        deadline()
    );
    let t = Instant::now();
    let refused = Call::add("f-required", "eth0").config(&required).run();
    let took = t.elapsed();
    let e = refused.err(11);
    assert!(
        e["details"].as_str().unwrap().contains("acknowledgement"),
        "{e}"
    );
    assert!(took < deadline(), "required took {took:?}");

    // Resumed, the agent finds both clients gone: it runs neither.
    agent.thaw();
    let st = wait_status(&agent.socket, "both requests dropped", |st| {
        abandoned(st, "dropped") >= 2 && st["in_flight"] == 0
    });
    assert_eq!(
        network_requests(&st, "frozen"),
        1,
        "the agent served only the warm-up: the frozen-time ADD was served directly"
    );
    let ids: Vec<String> = ["warm", "f-auto", "f-required"].map(String::from).to_vec();
    assert_eq!(holders(&auto, &ids), ["warm", "f-auto"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rec = rt.block_on(async { allocator(&auto).await.owner(&owner("f-auto")).await });
    assert_eq!(rec.unwrap().unwrap().ips, got, "the direct ADD's record");
    let dropped_logged = agent
        .log_lines()
        .iter()
        .filter(|l| l["event"] == "abandoned_request")
        .count();
    assert!(dropped_logged >= 2, "{}", agent.log());
    // And the agent serves again.
    Call::add("after", "eth0").config(&required).run().ok_json();
}

#[test]
fn the_same_add_through_a_late_agent_and_directly_is_one_record() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let patient = {
        let mut v = via(&agent.socket, "required");
        v["budgetMs"] = json!(30000);
        conf(&etcd, "twice", dir.path(), v)
    };
    let direct = conf(&etcd, "twice", dir.path(), json!({"agent": "off"}));
    Call::add("warm", "eth0").config(&patient).run().ok_json();

    // Direct first, then the agent (it was frozen with the request queued).
    agent.freeze();
    let late = std::thread::scope(|s| {
        let through_agent = s.spawn(|| Call::add("c1", "eth0").config(&patient).run());
        // The request is queued on the frozen agent's socket meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        let first = ips(&Call::add("c1", "eth0").config(&direct).run().ok_json());
        agent.thaw();
        let second = ips(&through_agent.join().unwrap().ok_json());
        (first, second)
    });
    assert_eq!(
        late.0, late.1,
        "the late agent ADD returns the direct one's addresses"
    );

    // The agent first, then directly.
    let first = ips(&Call::add("c2", "eth0").config(&patient).run().ok_json());
    let second = ips(&Call::add("c2", "eth0").config(&direct).run().ok_json());
    assert_eq!(first, second);
    assert_distinct(&[late.0.clone(), first.clone()]);

    let st = wait_status(&agent.socket, "idle", |st| st["in_flight"] == 0);
    assert_eq!(
        network_requests(&st, "twice"),
        3,
        "the agent ran warm, c1, c2"
    );
    assert_eq!(abandoned(&st, "released"), 0, "{st:#}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owners = rt.block_on(async { allocator(&direct).await.owners().await.unwrap() });
    let mut names: Vec<&str> = owners.iter().map(|r| r.container_id.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["c1", "c2", "warm"], "one record per container");
    let ids: Vec<String> = ["c1", "c2"].map(String::from).to_vec();
    assert_eq!(holders(&direct, &ids).len(), 2);
}

#[test]
fn abandoned_adds_hold_no_address_once_the_agent_is_idle() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let name = "abandon";
    let short = {
        let mut v = via(&agent.socket, "required");
        v["budgetMs"] = json!(1000);
        v["dialTimeoutMs"] = json!(500);
        conf(&etcd, name, dir.path(), v)
    };
    let patient = {
        let mut v = via(&agent.socket, "required");
        v["budgetMs"] = json!(30000);
        conf(&etcd, name, dir.path(), v)
    };
    let auto = conf(&etcd, name, dir.path(), via(&agent.socket, "auto"));
    Call::add("warm", "eth0").config(&patient).run().ok_json();

    // 1. The agent frozen: plugins that give up (short budget) and plugins
    //    killed by their runtime; one `auto` plugin goes direct.
    agent.freeze();
    let gave_up: Vec<String> = (0..5).map(|i| format!("gave-up-{i}")).collect();
    let killed: Vec<String> = (0..3).map(|i| format!("killed-{i}")).collect();
    let mut children: Vec<_> = killed
        .iter()
        .map(|id| Call::add(id, "eth0").config(&patient).spawn())
        .collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = gave_up
            .iter()
            .map(|id| s.spawn(|| Call::add(id, "eth0").config(&short).run()))
            .collect();
        for h in hs {
            h.join().unwrap().err(11);
        }
    });
    Call::add("went-direct", "eth0")
        .config(&auto)
        .run()
        .ok_json();
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    agent.thaw();
    let n1 = (gave_up.len() + killed.len() + 1) as u64;
    wait_status(&agent.socket, "the frozen-time requests dropped", |st| {
        abandoned(st, "dropped") >= n1 && st["in_flight"] == 0
    });
    let mut ids = gave_up.clone();
    ids.extend(killed.iter().cloned());
    ids.push("went-direct".into());
    assert_eq!(
        holders(&patient, &ids),
        ["went-direct"],
        "no abandoned ADD holds an address; the direct one holds its own"
    );

    // 2. The agent's transaction in flight at a frozen etcd when the
    //    plugins are killed: committed after they left, released again.
    etcd.pause();
    let late: Vec<String> = (0..6).map(|i| format!("late-{i}")).collect();
    let mut children: Vec<_> = late
        .iter()
        .map(|id| Call::add(id, "eth0").config(&patient).spawn())
        .collect();
    // Every request is acknowledged and queued or in flight meanwhile.
    wait_status(&agent.socket, "six requests in flight", |st| {
        st["in_flight"] == 6
    });
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    etcd.resume();
    let st = wait_status(&agent.socket, "the late requests settled", |st| {
        let settled = abandoned(st, "released")
            + abandoned(st, "kept")
            + abandoned(st, "release_failed")
            + abandoned(st, "dropped");
        settled >= n1 + late.len() as u64 && st["in_flight"] == 0
    });
    assert!(
        abandoned(&st, "released") >= 1,
        "the batch in flight committed and was released: {st:#}"
    );
    assert_eq!(abandoned(&st, "release_failed"), 0, "{st:#}");
    assert_eq!(holders(&patient, &late), Vec::<String>::new());
    let released = agent
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["event"] == "abandoned_request"
                && l["outcome"]
                    .as_str()
                    .unwrap_or("")
                    .contains("released again")
        })
        .count() as u64;
    assert_eq!(released, abandoned(&st, "released"), "{}", agent.log());
    // The counters are in the agent's metrics.
    let addr = agent
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "metrics_listening")
        .map(|l| l["address"].as_str().unwrap().to_string())
        .unwrap();
    let metrics = http_get(&addr, "/metrics");
    for family in [
        "host_etcd_agent_abandoned_dropped_total",
        "host_etcd_agent_abandoned_released_total",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "host_etcd_agent_abandoned_released_total {}",
            abandoned(&st, "released")
        )),
        "{metrics}"
    );
}

#[test]
fn sixteen_concurrent_dels_through_the_agent_each_succeed_and_free_their_addresses() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let c = conf(&etcd, "dels", dir.path(), via(&agent.socket, "required"));
    let ids: Vec<String> = (0..16).map(|i| format!("d{i}")).collect();
    let got = add_all_at_once(&ids, &c);
    assert_distinct(&got);
    let before = kv_counts(&etcd.url());
    std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| Call::del(id, "eth0").config(&c).run()))
            .collect();
        for h in hs {
            h.join().unwrap().ok_empty();
        }
    });
    let spent = kv_counts(&etcd.url()).since(before).calls();
    eprintln!("16 concurrent DELs through the agent: {spent} etcd calls");
    assert!(spent <= 16, "16 concurrent DELs cost {spent} etcd calls");
    assert_eq!(holders(&c, &ids), Vec::<String>::new());
    // Their addresses are free again: 16 new owners can have them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owners = rt.block_on(async { allocator(&c).await.owners().await.unwrap() });
    assert!(owners.is_empty(), "{owners:?}");
    let st = wait_status(&agent.socket, "idle", |st| st["in_flight"] == 0);
    assert_eq!(st["errors"], 0, "{st:#}");
}

/// The agent commits an ADD, then the connection breaks before its reply
/// (here a stand-in agent does exactly that): the plugin runs the ADD
/// directly, gets the same addresses back, and confirms them, so the
/// agent's undo of an ADD whose client went away (a compare-and-swap on the
/// revision it wrote) no longer applies and the container keeps them.
#[test]
fn a_direct_retry_confirms_what_the_agent_committed_so_its_undo_leaves_it() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("standin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let c = conf(&etcd, "confirm", dir.path(), via(&socket, "auto"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let created = std::thread::scope(|s| {
        let agent = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            conn.read_exact(&mut body).unwrap();
            let req: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(req["ack"], true, "the plugin asks for an acknowledgement");
            conn.write_all(&frame(br#"{"v":1,"ack":true}"#)).unwrap();
            // The agent's ADD commits; its reply never arrives.
            let rev = rt.block_on(async {
                let a = allocator(&c).await;
                let got = a
                    .allocate(&host_etcd::allocator::AllocRequest::new(owner("c1")))
                    .await
                    .unwrap();
                assert!(!got.existing);
                let key = a.keyspace().owner("c1", "eth0").unwrap();
                let mut kv = etcd_client::Client::connect([etcd.url()], None)
                    .await
                    .unwrap();
                let resp = kv.get(key, None).await.unwrap();
                (
                    resp.kvs()[0].mod_revision(),
                    got.assigned.iter().map(|x| x.ip).collect::<Vec<_>>(),
                )
            });
            drop(conn);
            rev
        });
        let out = Call::add("c1", "eth0").config(&c).run();
        let (rev, agent_ips) = agent.join().unwrap();
        assert_eq!(ips(&out.ok_json()), agent_ips, "the same addresses back");
        rev
    });
    // The agent's undo, as it runs it for a client that went away.
    rt.block_on(async {
        let a = allocator(&c).await;
        let undone = a.release_created(&owner("c1"), created).await.unwrap();
        assert!(undone.is_none(), "the confirmed record is left alone");
        assert!(a.owner(&owner("c1")).await.unwrap().is_some());
        assert!(a.check().await.unwrap().is_clean());
    });
}
