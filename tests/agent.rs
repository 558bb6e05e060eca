//! The node agent (`host-etcd agent`) as a node runs it: the agent is a
//! subprocess of the built binary on a socket in a temp dir, the plugin is
//! run as a runtime runs it, against a real etcd (etcd's own `/metrics`
//! count its requests).
//!
//! * ADD / DEL / CHECK / STATUS / GC and their errors through the agent
//!   print exactly what the plugin prints directly;
//! * no agent: `auto` goes direct, `required` is code 11 (STATUS 50);
//! * garbage, truncated, oversized and slow frames and unknown versions get
//!   a clear error frame (or a closed connection), write nothing to etcd,
//!   and the agent serves afterwards;
//! * a peer that is not root nor the agent's user is refused;
//! * `kill -9` of the agent in the middle of a burst: every plugin call
//!   succeeded with distinct addresses or failed with code 11, re-ADDs
//!   converge, `check()` is clean; the stale socket is handled at restart;
//! * etcd down: code 11 within the budget, served again once etcd is back;
//! * SIGTERM drains in-flight requests and removes the socket;
//! * a second agent on a live socket refuses to start; `agent status`.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use host_etcd::allocator::{Allocator, Options};
use host_etcd::store::etcd::EtcdStore;
use serde_json::{json, Value};
use support::agent::{frame, network_requests, read_reply, status, Agent};
use support::etcd_metrics::kv_counts;
use support::faults::allocator_with;
use support::plugin::{add_all_at_once, assert_distinct, host_etcd, ips, Call};
use support::EtcdServer;

/// Sends raw bytes and reads one reply frame (`None`: closed without one).
fn raw_exchange(socket: &Path, bytes: &[u8], close_write: bool) -> Option<Value> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("send");
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    read_reply(&mut s)
}

fn conf(etcd: &EtcdServer, name: &str, dir: &Path, ipam: Value) -> Value {
    let ranges = ("10.50.0.0/16", "fd00:50::/64");
    support::agent::network_conf(&etcd.url(), name, ranges, dir, ipam)
}

fn via(socket: &Path, mode: &str) -> Value {
    support::agent::via_agent(socket, mode)
}

async fn allocator(conf: &Value) -> Allocator<EtcdStore> {
    allocator_with(conf, Options::default()).await
}

#[test]
fn every_command_prints_the_same_through_the_agent_as_directly() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let (ad, dd) = (dir.path().join("a"), dir.path().join("d"));
    // The same network name, separate state (prefix) and node directories:
    // through the agent (required, so never silently direct) and directly.
    let through = conf(
        &etcd,
        "same",
        &ad,
        json!({"prefix": "/via-agent", "agent": "required", "agentSocket": agent.socket.to_str().unwrap()}),
    );
    let direct = conf(
        &etcd,
        "same",
        &dd,
        json!({"prefix": "/direct", "agent": "off"}),
    );

    let prev = |result: &Value| {
        let mut c = result.clone();
        c["cniVersion"] = json!("1.1.0");
        c
    };
    let with = |c: &Value, key: &str, v: Value| {
        let mut c = c.clone();
        c[key] = v;
        c
    };
    type Step<'a> = (&'a str, Box<dyn Fn(&Value) -> Call + 'a>);
    let mut steps: Vec<Step> = vec![
        ("ADD c1", Box::new(|c| Call::add("c1", "eth0").config(c))),
        ("ADD c2", Box::new(|c| Call::add("c2", "eth0").config(c))),
        (
            "ADD static",
            Box::new(|c| {
                Call::add("c3", "eth0")
                    .args("IP=10.50.7.7,fd00:50::7")
                    .config(c)
            }),
        ),
        (
            "ADD static taken",
            Box::new(|c| Call::add("c4", "eth0").args("IP=10.50.7.7").config(c)),
        ),
        (
            "ADD c1 again",
            Box::new(|c| Call::add("c1", "eth0").config(c)),
        ),
        (
            "ADD bad args",
            Box::new(|c| Call::add("c5", "eth0").args("IP=nope").config(c)),
        ),
        (
            "CHECK unknown",
            Box::new(|c| Call::check("zz", "eth0").config(c)),
        ),
        ("DEL c2", Box::new(|c| Call::del("c2", "eth0").config(c))),
        (
            "DEL unknown",
            Box::new(|c| Call::del("zz", "eth0").config(c)),
        ),
        (
            "ADD after DEL",
            Box::new(|c| Call::add("c6", "eth0").config(c)),
        ),
        (
            "STATUS",
            Box::new(|c| Call::bare(&host_etcd(), "STATUS").config(c)),
        ),
        (
            "STATUS old version",
            Box::new(|c| {
                Call::bare(&host_etcd(), "STATUS").config(&with(c, "cniVersion", json!("1.0.0")))
            }),
        ),
        (
            "GC without list",
            Box::new(|c| Call::bare(&host_etcd(), "GC").config(c)),
        ),
        (
            "bad range",
            Box::new(|c| {
                let mut c = c.clone();
                c["ipam"]["ranges"] = json!([[{"subnet": "10.50.0.0/31"}]]);
                Call::add("c7", "eth0").config(&c)
            }),
        ),
        (
            "missing ifname",
            Box::new(|c| Call::add("c8", "eth0").unset("CNI_IFNAME").config(c)),
        ),
        (
            "VERSION",
            Box::new(|c| Call::bare(&host_etcd(), "VERSION").config(c)),
        ),
    ];
    let mut c1 = (Value::Null, Value::Null);
    for (name, step) in steps.drain(..) {
        let a = step(&through).run();
        let d = step(&direct).run();
        assert_eq!(
            (a.exit, &a.stdout),
            (d.exit, &d.stdout),
            "{name}: through the agent vs directly\nagent log:\n{}",
            agent.log()
        );
        if name == "ADD c1" {
            c1 = (a.ok_json(), d.ok_json());
        }
    }
    // CHECK with the ADD's result as prevResult, and with a wrong one.
    for (label, fix) in [("CHECK ok", false), ("CHECK mismatch", true)] {
        let run = |c: &Value, result: &Value| {
            let mut c = c.clone();
            let mut p = prev(result);
            if fix {
                p["ips"][0]["address"] = json!("10.50.99.99/16");
            }
            c["prevResult"] = p;
            Call::check("c1", "eth0").config(&c).run()
        };
        let (a, d) = (run(&through, &c1.0), run(&direct, &c1.1));
        assert_eq!((a.exit, &a.stdout), (d.exit, &d.stdout), "{label}");
    }
    // GC keeping only c1.
    let gc = |c: &Value| {
        let mut c = c.clone();
        c["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        Call::bare(&host_etcd(), "GC").config(&c).run()
    };
    let (a, d) = (gc(&through), gc(&direct));
    assert_eq!((a.exit, &a.stdout), (d.exit, &d.stdout), "GC");
    a.ok_empty();

    // The agent did serve them, with one allocator for the network.
    let st = status(&agent.socket).expect("status");
    // 13 reached the network's allocator; 4 more failed before it (bad
    // CNI_ARGS, old cniVersion, GC without list, bad range).
    assert_eq!(network_requests(&st, "same"), 13, "{st:#}");
    assert_eq!(st["requests"], json!(17), "{st:#}");
    assert_eq!(st["networks"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(st["stores"][0]["endpoints"], json!(etcd.url()), "{st:#}");
    assert_eq!(st["healthy"], json!(true));
    let _ = agent.log_lines();
}

#[test]
fn without_an_agent_auto_goes_direct_and_required_is_code_11() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let auto = conf(&etcd, "noagent", dir.path(), via(&socket, "auto"));
    let required = conf(&etcd, "noagent", dir.path(), via(&socket, "required"));
    Call::add("a1", "eth0").config(&auto).run().ok_json();
    let e = Call::add("a2", "eth0").config(&required).run();
    e.err(11);
    assert!(e.details().contains("agent.sock"), "{}", e.details());
    Call::del("a1", "eth0").config(&required).run().err(11);
    Call::bare(&host_etcd(), "STATUS")
        .config(&required)
        .run()
        .err(50);
    // A socket file nobody listens on (an agent that died): auto is direct.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    Call::add("a3", "eth0").config(&auto).run().ok_json();
    Call::add("a3", "eth0").config(&required).run().err(11);
    // An embedded-store network never needs the agent, even when required.
    let mut local = conf(&etcd, "noagent", dir.path(), via(&socket, "required"));
    local["ipam"].as_object_mut().unwrap().remove("endpoints");
    local["ipam"]["dataDir"] = json!(dir.path().join("local").to_str().unwrap());
    Call::add("a4", "eth0").config(&local).run().ok_json();
}

#[test]
fn bad_frames_get_clear_errors_write_nothing_and_the_agent_keeps_serving() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(dir.path(), &["--read-timeout-ms", "400"]);
    let c = conf(&etcd, "frames", dir.path(), via(&agent.socket, "required"));
    Call::add("warm", "eth0").config(&c).run().ok_json();

    let before = kv_counts(&etcd.url());
    let add_body = json!({"v": 1, "env": {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x1",
        "CNI_IFNAME": "eth0", "CNI_NETNS": "/n", "CNI_PATH": "/p"}, "stdin": c.to_string()});
    let mut v2 = add_body.clone();
    v2["v"] = json!(2);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("garbage", frame(b"garbage!"), Some("not JSON")),
        ("empty frame", frame(b""), Some("not JSON")),
        ("not an object", frame(b"[1,2]"), Some("not a JSON object")),
        (
            "no version",
            frame(br#"{"env":{},"stdin":""}"#),
            Some("no protocol version"),
        ),
        (
            "unknown version",
            frame(v2.to_string().as_bytes()),
            Some("speaks versions [1]"),
        ),
        (
            "unknown op",
            frame(br#"{"v":1,"op":"shutdown"}"#),
            Some("\"op\" must be"),
        ),
        (
            "no stdin",
            frame(br#"{"v":1,"env":{}}"#),
            Some("needs \"env\" and \"stdin\""),
        ),
        (
            "oversized",
            (2u32 << 20).to_be_bytes().to_vec(),
            Some("exceeds the limit"),
        ),
        (
            "slow frame",
            frame(&add_body.to_string().into_bytes())[..20].to_vec(),
            Some("no complete request within 400 ms"),
        ),
        ("half a length", vec![0, 0], Some("no complete request")),
        ("nothing", vec![], None),
    ];
    for (name, bytes, want) in &cases {
        let got = raw_exchange(&agent.socket, bytes, bytes.is_empty());
        match (want, got) {
            (Some(w), Some(reply)) => {
                let e = reply["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {reply}"));
                assert!(e.contains(w), "{name}: {e:?} lacks {w:?}");
                assert_eq!(reply["versions"], json!([1]), "{name}");
            }
            (None, None) => {}
            (w, got) => panic!("{name}: wanted {w:?}, got {got:?}"),
        }
    }
    // Truncated: the client closes mid-frame; the agent just closes.
    let cut = frame(add_body.to_string().as_bytes());
    let got = raw_exchange(&agent.socket, &cut[..cut.len() / 2], true);
    assert!(
        got.as_ref().is_none_or(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("closed after"))),
        "{got:?}"
    );
    // A CNI request with a bad environment is a CNI error (code 4), not run.
    let bad_env = json!({"v": 1, "env": {"CNI_COMMAND": "ADD"}, "stdin": c.to_string()});
    let r = raw_exchange(&agent.socket, &frame(bad_env.to_string().as_bytes()), false).unwrap();
    assert_eq!(r["exit"], json!(1), "{r}");
    let err: Value = serde_json::from_str(r["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(err["code"], json!(4), "{err}");

    let after = kv_counts(&etcd.url());
    assert_eq!(
        after.since(before).txn,
        0,
        "no etcd transaction for bad frames"
    );
    assert_eq!(after.since(before).calls(), 0, "no etcd call at all");

    // Still serving, and counting what it refused.
    Call::add("after", "eth0").config(&c).run().ok_json();
    let st = status(&agent.socket).unwrap();
    // Every case but "nothing" (a probe), plus the truncated frame.
    assert_eq!(st["protocol_errors"], json!(cases.len() as u64), "{st:#}");
    let _ = agent.log_lines();
}

#[test]
fn a_peer_that_is_neither_root_nor_the_agents_user_is_refused() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    // Let user nobody reach the socket at the file level, so the refusal
    // seen is the agent's own peer check (SO_PEERCRED).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let c = conf(
        &etcd,
        "peers",
        &dir.path().join("nodes"),
        via(&agent.socket, "required"),
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(host_etcd())
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "p1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/n")
        .env("CNI_PATH", "/p")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin
                .take()
                .unwrap()
                .write_all(c.to_string().as_bytes())?;
            ch.wait_with_output()
        })
        .expect("setpriv host-etcd");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(err["code"], json!(11), "{err}");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("peer uid 65534 is not allowed"),
        "{err}"
    );
    let st = status(&agent.socket).unwrap();
    assert_eq!(st["refused_peers"], json!(1));
    assert_eq!(st["requests"], json!(0), "the refused request did not run");
}

#[test]
fn kill_9_mid_burst_loses_nothing_and_a_restart_needs_no_cleanup() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let nodes = dir.path().join("nodes");
    let auto = conf(&etcd, "killed", &nodes, via(&socket, "auto"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = rt.block_on(allocator(&auto));
    // Twice: `required` (calls the agent did not answer fail with 11) and
    // `auto` (they fall back to the direct path once).
    for (round, mode) in ["required", "auto"].into_iter().enumerate() {
        let mut agent = Agent::start_with(dir.path(), &["--log-requests"]);
        if round > 0 {
            assert!(
                agent.log().contains("stale_socket_removed"),
                "{}",
                agent.log()
            );
        }
        let c = conf(&etcd, "killed", &nodes, via(&socket, mode));
        let ids: Vec<String> = (0..32).map(|i| format!("k{round}-{i:02}")).collect();
        let outcomes = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| s.spawn(|| Call::add(id, "eth0").config(&c).run()))
                .collect();
            // Kill once the agent has answered a few of them (the rest are
            // on their way or in flight).
            let deadline = Instant::now() + Duration::from_secs(20);
            while agent.log().matches("\"event\":\"request\"").count() < 6 {
                assert!(
                    Instant::now() < deadline,
                    "agent served nothing: {}",
                    agent.log()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            agent.kill9();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let served = agent.log().matches("\"event\":\"request\"").count();
        let mut held = Vec::new();
        for (id, o) in ids.iter().zip(&outcomes) {
            if o.exit == Some(0) {
                held.push((id.clone(), ips(&o.ok_json())));
            } else {
                o.err(11);
            }
        }
        eprintln!(
            "{mode}: kill -9 after {served} agent replies; {} of {} ADDs succeeded",
            held.len(),
            ids.len()
        );
        assert!(served >= 6 && held.len() >= 6, "{mode}: {served} served");
        if mode == "auto" {
            assert_eq!(
                held.len(),
                ids.len(),
                "auto: every call is served, one way or the other"
            );
        }
        assert_distinct(&held.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>());
        assert!(socket.exists(), "kill -9 leaves the socket file");
        // Re-ADDs (direct: the stale socket refuses) converge: the same
        // addresses for those that succeeded, distinct addresses for all.
        let again: Vec<Vec<IpAddr>> = ids
            .iter()
            .map(|id| ips(&Call::add(id, "eth0").config(&auto).run().ok_json()))
            .collect();
        for (id, addrs) in &held {
            let i = ids.iter().position(|x| x == id).unwrap();
            assert_eq!(&again[i], addrs, "{id} kept its addresses");
        }
        assert_distinct(&again);
        let report = rt.block_on(a.check()).unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    // Restart on the stale socket: no cleanup needed, served again; a DEL
    // burst through it frees everything.
    let agent = Agent::start(dir.path());
    assert!(
        agent.log().contains("stale_socket_removed"),
        "{}",
        agent.log()
    );
    let owners = rt.block_on(a.owners()).unwrap();
    assert_eq!(owners.len(), 64);
    std::thread::scope(|s| {
        for o in &owners {
            let c = &auto;
            s.spawn(move || {
                Call::del(&o.container_id, "eth0")
                    .config(c)
                    .run()
                    .ok_empty()
            });
        }
    });
    let st = status(&agent.socket).unwrap();
    assert_eq!(network_requests(&st, "killed"), 64, "{st:#}");
    let report = rt.block_on(a.check()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let left = rt.block_on(a.owners()).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn etcd_down_is_code_11_within_the_budget_and_recovers() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let mut ipam = via(&agent.socket, "required");
    ipam["budgetMs"] = json!(1500);
    ipam["dialTimeoutMs"] = json!(500);
    ipam["requestTimeoutMs"] = json!(500);
    // STATUS answers per call here (the default grace would hide the
    // outage; the agent applies the same policy as the plugin).
    ipam["statusPolicy"] = json!("strict");
    let c = conf(&etcd, "down", dir.path(), ipam);
    Call::add("d1", "eth0").config(&c).run().ok_json();
    etcd.stop();
    let started = Instant::now();
    let o = Call::add("d2", "eth0").config(&c).run();
    let took = started.elapsed();
    o.err(11);
    // budget + dial allowance + reply margin, with slack for a loaded host.
    assert!(
        took < Duration::from_millis(1500 + 500 + 500 + 2000),
        "took {took:?}"
    );
    Call::bare(&host_etcd(), "STATUS").config(&c).run().err(50);
    let st = status(&agent.socket).unwrap();
    assert_eq!(st["healthy"], json!(false), "{st:#}");

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = Call::add("d2", "eth0").config(&c).run();
        if o.exit == Some(0) {
            break;
        }
        o.err(11);
        assert!(
            Instant::now() < deadline,
            "agent did not recover: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Call::bare(&host_etcd(), "STATUS")
        .config(&c)
        .run()
        .ok_empty();
    assert_eq!(status(&agent.socket).unwrap()["healthy"], json!(true));
}

#[test]
fn sigterm_drains_in_flight_requests_and_removes_the_socket() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    let mut ipam = via(&agent.socket, "required");
    ipam["budgetMs"] = json!(8000);
    let c = conf(&etcd, "drain", dir.path(), ipam);
    Call::add("warm", "eth0").config(&c).run().ok_json();
    // Freeze etcd so requests stay in flight, then SIGTERM the agent.
    etcd.pause();
    let outcomes = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let c = &c;
                s.spawn(move || Call::add(&format!("t{i}"), "eth0").config(c).run())
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&agent.socket).map(|s| s["in_flight"].as_u64()) != Some(Some(4)) {
            assert!(Instant::now() < deadline, "requests not in flight");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while agent.socket.exists() {
            assert!(Instant::now() < deadline, "socket not removed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stopped accepting: new plugin calls would go direct (auto).
        assert!(status(&agent.socket).is_none());
        std::thread::sleep(Duration::from_millis(300));
        etcd.resume();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let got: Vec<Vec<IpAddr>> = outcomes.iter().map(|o| ips(&o.ok_json())).collect();
    assert_distinct(&got);
    assert_eq!(agent.wait(Duration::from_secs(15)), Some(0));
    let events: Vec<String> = agent
        .log_lines()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect();
    for e in ["listening", "shutdown", "draining", "stopped"] {
        assert!(events.iter().any(|x| x == e), "{e} not logged: {events:?}");
    }
    // The node cache was saved on the way out.
    let host = host_etcd::allocator::local_hostname();
    assert!(dir
        .path()
        .join(format!("node-cache.drain.{host}.json"))
        .is_file());
}

#[test]
fn a_second_agent_refuses_a_live_socket_and_status_reports() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let mut second = Agent::spawn(dir.path(), &[]);
    assert_eq!(second.wait(Duration::from_secs(10)), Some(1));
    assert!(
        second.log().contains("another agent answers"),
        "{}",
        second.log()
    );
    assert!(
        status(&agent.socket).is_some(),
        "the first one still serves"
    );

    let c = conf(&etcd, "stat", dir.path(), via(&agent.socket, "required"));
    Call::add("s1", "eth0").config(&c).run().ok_json();
    Call::add("s2", "eth0")
        .args("IP=bad")
        .config(&c)
        .run()
        .err(4);
    let out = Command::new(host_etcd())
        .args(["agent", "status", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["healthy"], json!(true));
    assert_eq!(st["requests"], json!(2));
    assert_eq!(st["errors"], json!(1));
    assert_eq!(st["networks"][0]["name"], json!("stat"));
    assert_eq!(st["networks"][0]["endpoints"], json!(etcd.url()));
    assert_eq!(st["stores"][0]["connected"], json!(true));

    // Nothing answering: exit 1 with a JSON reason.
    let out = Command::new(host_etcd())
        .args(["agent", "status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["healthy"], json!(false));

    // A path that is not a socket is never removed.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let out = Command::new(host_etcd())
        .args(["agent", "--socket"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // A missing socket directory is created with mode 0700.
    use std::os::unix::fs::PermissionsExt;
    let nested = dir.path().join("run/host-etcd");
    let mut child = Command::new(host_etcd())
        .args(["agent", "--socket"])
        .arg(nested.join("agent.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&nested.join("agent.sock")).is_none() {
        assert!(Instant::now() < deadline, "nested agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode, 0o700, "socket directory mode");
}

#[test]
fn through_a_warm_agent_add_and_del_are_one_etcd_call_each() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let c = conf(&etcd, "warm", dir.path(), via(&agent.socket, "required"));
    Call::add("w-first", "eth0").config(&c).run().ok_json();
    let ids: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let before = kv_counts(&etcd.url());
    let got: Vec<Vec<IpAddr>> = ids
        .iter()
        .map(|id| ips(&Call::add(id, "eth0").config(&c).run().ok_json()))
        .collect();
    assert_eq!(
        kv_counts(&etcd.url()).since(before).calls(),
        10,
        "10 warm ADDs"
    );
    assert_distinct(&got);
    let before = kv_counts(&etcd.url());
    for id in &ids {
        Call::del(id, "eth0").config(&c).run().ok_empty();
    }
    assert_eq!(
        kv_counts(&etcd.url()).since(before).calls(),
        10,
        "10 warm DELs"
    );
    // 16 at once: distinct addresses, and (ADD and DEL of a network take
    // turns in the agent) about one call each.
    let many: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
    let before = kv_counts(&etcd.url());
    let got = add_all_at_once(&many, &c);
    let spent = kv_counts(&etcd.url()).since(before).calls();
    eprintln!("16 concurrent ADDs through the agent: {spent} etcd calls");
    assert_distinct(&got);
    assert!(
        spent * 10 <= 13 * 16,
        "16 concurrent ADDs cost {spent} etcd calls"
    );
}
