//! Cluster faults under load: a 3-member etcd on loopback while 8 workers
//! (threads, each running the `host-etcd` plugin binary as a subprocess in a
//! sequential ADD/DEL loop, the way 8 runtimes on 8 nodes would) keep
//! allocating and releasing.
//!
//! Scenarios, one after the other on the same cluster and network:
//! (a) SIGKILL the leader, restart it; (b) SIGSTOP the leader for longer
//! than the election timeout, then SIGCONT; (c) lose quorum (SIGKILL two
//! members): every operation fails with CNI code 11 within its budget, and
//! succeeds again once quorum is back.
//!
//! After each scenario the stored state is checked with a fresh allocator:
//! `check()` clean, no address held twice, and every ADD the plugin
//! reported as successful (and not DELeted since) is held by exactly that
//! owner with exactly the reported addresses; every successful DEL left no
//! owner. Every failure of every invocation is code 11, nothing else.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::faults::{assert_no_duplicate, inspect, run_and_kill, Ledger};
use support::plugin::{addresses, bare_ip, Call};
use support::{EtcdCluster, EtcdServer};

const WORKERS: usize = 8;
const BUDGET_MS: u64 = 4000;
/// A failing invocation must end within its budget plus process start-up
/// and connection set-up on a loaded 2-core machine: this bounds "hangs",
/// it is not a speed measurement.
const FAILURE_CEILING: Duration = Duration::from_millis(BUDGET_MS + 8000);

fn conf(cluster: &EtcdCluster) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "faults",
        "ipam": {
            "type": "host-etcd",
            "endpoints": cluster.endpoints(),
            "ranges": [[{"subnet": "10.30.0.0/20"}]],
            "budgetMs": BUDGET_MS,
            "requestTimeoutMs": 1000,
            "dialTimeoutMs": 1000
        }
    })
}

/// Workers running ADD/DEL loops until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Ledger>>,
}

impl Load {
    /// Starts the workers; container names are `{tag}-w{i}-{n}`.
    fn start(conf: &Value, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..WORKERS)
            .map(|w| {
                let stop = stop.clone();
                let conf = conf.clone();
                let tag = tag.to_string();
                std::thread::spawn(move || worker(&conf, &tag, w, &stop))
            })
            .collect();
        Load { stop, handles }
    }

    /// Stops the workers and merges their ledgers.
    fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Ledger::default();
        for h in self.handles {
            all.merge(h.join().unwrap());
        }
        all
    }
}

/// One worker: keeps up to 3 containers; first retries the DEL of every
/// container whose last ADD or DEL failed (as a runtime does), then adds a
/// new container or deletes its oldest one.
fn worker(conf: &Value, tag: &str, w: usize, stop: &AtomicBool) -> Ledger {
    let mut ledger = Ledger::default();
    let mut n = 0usize;
    let mut order: Vec<String> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let pending: Vec<String> = ledger.uncertain.iter().cloned().collect();
        for c in pending {
            ledger.del(conf, &c);
            if stop.load(Ordering::SeqCst) {
                return ledger;
            }
        }
        order.retain(|c| ledger.held.contains_key(c));
        if order.len() >= 3 || (!order.is_empty() && fastrand::bool()) {
            let c = order.remove(0);
            ledger.del(conf, &c);
        } else {
            let c = format!("{tag}-w{w}-{n}");
            n += 1;
            if ledger.add(conf, &c).is_none() {
                order.push(c);
            }
        }
    }
    ledger
}

/// Asserts every failure was code 11 and bounded in time.
fn assert_only_try_again(scenario: &str, ledger: &Ledger) {
    let other: Vec<_> = ledger.failures.keys().filter(|&&c| c != 11).collect();
    assert!(
        other.is_empty(),
        "{scenario}: failures with codes other than 11: {:?}",
        ledger.failures
    );
    assert!(
        ledger.slowest_failure <= FAILURE_CEILING,
        "{scenario}: a failing invocation took {:?} (budget {BUDGET_MS} ms)",
        ledger.slowest_failure
    );
}

/// Checks the stored state against everything the workers were told.
fn verify(scenario: &str, conf: &Value, total: &Ledger) {
    let seen = inspect(conf);
    assert!(
        seen.report.is_clean(),
        "{scenario}: check() found problems: {:?}",
        seen.report
    );
    assert_eq!(seen.report.in_flux, 0, "{scenario}: nothing runs now");
    assert_no_duplicate(&seen.owners);
    total.assert_matches(&seen.owners);
    eprintln!(
        "{scenario}: {} owners, {} ok, failures {:?}, {} uncertain, slowest failure {:?}, slowest {:?}",
        seen.owners.len(),
        total.ok,
        total.failures,
        total.uncertain.len(),
        total.slowest_failure,
        total.slowest,
    );
}

/// Lets the workers run for `d`.
fn run_for(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn cluster_faults_under_load() {
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3);
    let conf = conf(&cluster);
    let mut total = Ledger::default();

    // (a) SIGKILL the leader under load, then restart it.
    let load = Load::start(&conf, "a");
    run_for(Duration::from_millis(1500));
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    run_for(Duration::from_millis(2500));
    cluster.restart(leader);
    run_for(Duration::from_millis(1500));
    let a = load.finish();
    assert_only_try_again("(a) kill -9 leader", &a);
    assert!(a.ok > 0, "(a): nothing succeeded: {a:?}");
    total.merge(a);
    verify("(a) kill -9 leader", &conf, &total);

    // (b) SIGSTOP the leader for 3 s (election timeout: 1 s), SIGCONT.
    let load = Load::start(&conf, "b");
    run_for(Duration::from_millis(1000));
    let leader = cluster.leader().expect("a leader");
    cluster.pause(leader);
    run_for(Duration::from_millis(3000));
    cluster.resume(leader);
    run_for(Duration::from_millis(2000));
    let b = load.finish();
    assert_only_try_again("(b) SIGSTOP leader", &b);
    assert!(b.ok > 0, "(b): nothing succeeded: {b:?}");
    total.merge(b);
    cluster.wait_healthy();
    verify("(b) SIGSTOP leader", &conf, &total);

    // (c) Lose quorum: SIGKILL two members. Every operation started after
    // the loss fails with 11 within its budget.
    let load = Load::start(&conf, "c");
    run_for(Duration::from_millis(1000));
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cluster.kill(followers[0]);
    cluster.kill(followers[1]);
    let before_loss = load.finish();
    assert_only_try_again("(c) before quorum loss", &before_loss);
    total.merge(before_loss);

    let load = Load::start(&conf, "c-lost");
    run_for(Duration::from_millis(BUDGET_MS + 2000));
    let lost = load.finish();
    assert_only_try_again("(c) quorum lost", &lost);
    assert_eq!(
        lost.ok, 0,
        "(c): no quorum, yet invocations succeeded: {lost:?}"
    );
    assert!(lost.failed() >= WORKERS, "(c): {lost:?}");
    total.merge(lost);

    // Quorum back: the same workers' pending DELs and new ADDs succeed.
    for f in followers {
        cluster.restart(f);
    }
    cluster.wait_healthy();
    let load = Load::start(&conf, "c-back");
    run_for(Duration::from_millis(3000));
    let back = load.finish();
    assert_only_try_again("(c) quorum back", &back);
    assert!(back.ok >= WORKERS, "(c) quorum back: {back:?}");
    total.merge(back);
    verify("(c) quorum lost and back", &conf, &total);

    // Converge: DEL every uncertain container (they belong to stopped
    // workers), then the state agrees exactly with the ledger.
    let pending: Vec<String> = total.uncertain.iter().cloned().collect();
    for c in pending {
        assert_eq!(total.del(&conf, &c), None, "DEL {c} with quorum");
    }
    let seen = inspect(&conf);
    assert!(seen.report.is_clean(), "{:?}", seen.report);
    total.assert_matches(&seen.owners);
    let held: Vec<String> = total.held.keys().map(|c| format!("{c}/eth0")).collect();
    let stored: Vec<String> = seen.owners.keys().cloned().collect();
    assert_eq!(
        stored, held,
        "after converging, owners are exactly the held"
    );
    eprintln!(
        "total: {} ok, failures {:?}, {} held at the end, {:?} wall",
        total.ok,
        total.failures,
        total.held.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Client faults: killed plugin processes, requests timing out mid-transaction.
// ---------------------------------------------------------------------------

fn single_conf(etcd: &EtcdServer, name: &str, budget_ms: u64, request_ms: u64) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "fd00:40::/64"}]],
            "budgetMs": budget_ms,
            "requestTimeoutMs": request_ms,
            "dialTimeoutMs": request_ms
        }
    })
}

/// After faults: `check()` clean; then for every container ADD twice gives
/// the same addresses (whatever the killed or timed-out invocation left
/// behind), DEL leaves no owner, and the final check is clean and empty.
fn assert_converges(conf: &Value, containers: &[String]) {
    let seen = inspect(conf);
    assert!(seen.report.is_clean(), "after faults: {:?}", seen.report);
    assert_no_duplicate(&seen.owners);
    for c in containers {
        let first = Call::add(c, "eth0").config(conf).run().ok_json();
        let second = Call::add(c, "eth0").config(conf).run().ok_json();
        assert_eq!(addresses(&first), addresses(&second), "{c}: ADD twice");
        if let Some(r) = seen.owners.get(&format!("{c}/eth0")) {
            // A killed ADD that committed: the repeat returns what it stored.
            let stored: Vec<String> = r.ips.iter().map(|ip| ip.to_string()).collect();
            let got: Vec<String> = addresses(&first)
                .iter()
                .map(|a| bare_ip(a).to_string())
                .collect();
            assert_eq!(
                stored, got,
                "{c}: repeated ADD differs from the stored record"
            );
        }
    }
    let seen = inspect(conf);
    assert!(seen.report.is_clean(), "after repeats: {:?}", seen.report);
    assert_no_duplicate(&seen.owners);
    for c in containers {
        Call::del(c, "eth0").config(conf).run().ok_empty();
    }
    let seen = inspect(conf);
    assert!(seen.report.is_clean(), "after DEL: {:?}", seen.report);
    assert!(
        seen.owners.is_empty(),
        "owners left: {:?}",
        seen.owners.keys()
    );
    assert_eq!(seen.report.allocated, 0, "{:?}", seen.report);
}

#[test]
fn plugin_killed_at_random_points_of_add_and_del() {
    let etcd = EtcdServer::start();
    let conf = single_conf(&etcd, "killed", 5000, 2000);
    let containers: Vec<String> = (0..48).map(|i| format!("k{i}")).collect();
    // 4 threads, each killing its plugin processes at random moments. A
    // debug-build ADD takes 10-25 ms here, so 0-20 ms lands before, during
    // and after the transaction.
    let mut runs: Vec<(String, bool, bool)> = Vec::new(); // (container, ADD killed, DEL run)
    let threads: Vec<_> = containers
        .chunks(12)
        .map(|chunk| {
            let conf = conf.clone();
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                for c in &chunk {
                    let after = Duration::from_millis(fastrand::u64(0..=20));
                    let add_killed = match run_and_kill("ADD", c, &conf, after) {
                        (None, _) => true,
                        (Some(0), _) => false,
                        (Some(code), out) => panic!("ADD {c} exit {code}: {out}"),
                    };
                    let del = fastrand::bool();
                    if del {
                        let after = Duration::from_millis(fastrand::u64(0..=20));
                        match run_and_kill("DEL", c, &conf, after) {
                            (None, _) | (Some(0), _) => {}
                            (Some(code), out) => panic!("DEL {c} exit {code}: {out}"),
                        }
                    }
                    runs.push((c.clone(), add_killed, del));
                }
                runs
            })
        })
        .collect();
    for t in threads {
        runs.extend(t.join().unwrap());
    }
    let owners = inspect(&conf).owners;
    let killed = runs.iter().filter(|r| r.1).count();
    let killed_after_commit = runs
        .iter()
        .filter(|r| r.1 && !r.2 && owners.contains_key(&format!("{}/eth0", r.0)))
        .count();
    let killed_before_commit = runs
        .iter()
        .filter(|r| r.1 && !r.2 && !owners.contains_key(&format!("{}/eth0", r.0)))
        .count();
    eprintln!(
        "{} ADDs: {killed} killed ({killed_after_commit} of them after their commit, \
         {killed_before_commit} before, the rest followed by a DEL); {} DELs (0-20 ms kill); \
         {} owners left by the faults",
        runs.len(),
        runs.iter().filter(|r| r.2).count(),
        owners.len()
    );
    assert!(killed > 0, "no ADD was killed: the kill window missed");
    assert_converges(&conf, &containers);
}

#[test]
fn request_timing_out_mid_transaction() {
    let etcd = EtcdServer::start();
    // Short deadlines: the pause below outlasts the request timeout and the
    // budget.
    let conf = single_conf(&etcd, "paused", 1500, 400);
    let mut containers: Vec<String> = Vec::new();
    let mut codes = BTreeMap::new();
    // At least 8 rounds, and on until 3 invocations timed out (the pause
    // can land after a quick invocation finished).
    for i in 0..32 {
        if i >= 8 && codes.get(&11).copied().unwrap_or(0) >= 3 {
            break;
        }
        let c = &format!("p{i}");
        containers.push(c.clone());
        let call = if i % 2 == 0 {
            Call::add(c, "eth0")
        } else {
            // Odd ones: ADD first (unpaused), then a DEL that gets paused.
            Call::add(c, "eth0").config(&conf).run().ok_json();
            Call::del(c, "eth0")
        }
        .config(&conf);
        let running = std::thread::spawn(move || call.run());
        // A warm invocation is one transaction a few milliseconds after the
        // process starts: pause within that window.
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..=8000)));
        etcd.pause();
        std::thread::sleep(Duration::from_millis(2000));
        etcd.resume();
        let out = running.join().unwrap();
        let code = if out.exit == Some(0) {
            0
        } else {
            out.err(11)["code"].as_u64().unwrap()
        };
        *codes.entry(code).or_insert(0usize) += 1;
    }
    eprintln!("outcomes by code (0 = success): {codes:?}");
    assert!(
        codes.get(&11).copied().unwrap_or(0) >= 3,
        "too few timeouts: {codes:?}"
    );
    assert_converges(&conf, &containers);
}

// ---------------------------------------------------------------------------
// Sustained load: memory stays flat, etcd's database is history, not state.
// ---------------------------------------------------------------------------

/// GNU time, for peak RSS of a child (`%M`, KiB).
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `cmd` under GNU time; returns (output, peak RSS in KiB).
fn with_peak_rss(cmd: &mut std::process::Command) -> (std::process::Output, u64) {
    assert!(
        std::path::Path::new(GNU_TIME).is_file(),
        "{GNU_TIME} not found: install it with `apt-get install time`"
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("rss");
    let mut timed = std::process::Command::new(GNU_TIME);
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let out = timed.output().unwrap();
    let rss = std::fs::read_to_string(&report)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, rss)
}

/// Peak RSS (KiB) of one plugin ADD and one DEL of `container`, the larger.
fn plugin_rss(conf: &Value, container: &str) -> u64 {
    let mut peak = 0;
    let dir = tempfile::tempdir().unwrap();
    let stdin = dir.path().join("conf.json");
    std::fs::write(&stdin, serde_json::to_vec(conf).unwrap()).unwrap();
    for command in ["ADD", "DEL"] {
        // The config on stdin through `sh`, which execs the plugin (so GNU
        // time measures the plugin itself).
        let mut wrapped = std::process::Command::new("sh");
        wrapped
            .arg("-c")
            .arg(format!(
                "exec {} < {}",
                support::plugin::host_etcd().display(),
                stdin.display()
            ))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/var/run/netns/x")
            .env("CNI_PATH", "/opt/cni/bin");
        let (out, rss) = with_peak_rss(&mut wrapped);
        assert!(out.status.success(), "plugin {command}: {out:?}");
        peak = peak.max(rss);
    }
    peak
}

/// `ipamctl bench` (debug build) of `count` alloc+release pairs at 64
/// concurrency; returns (bench JSON, peak RSS KiB).
fn bench(etcd: &EtcdServer, count: usize) -> (Value, u64) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ipamctl"));
    cmd.args(["--endpoints", &etcd.url()])
        .args([
            "--network",
            "load",
            "--subnet",
            "10.64.0.0/16",
            "--chunk-bits",
            "8",
        ])
        .args(["bench", "-n", &count.to_string(), "-c", "64", "--release"])
        .args(["--no-raw", "--no-naive", "--json"]);
    let (out, rss) = with_peak_rss(&mut cmd);
    assert!(out.status.success(), "ipamctl bench: {out:?}");
    (serde_json::from_slice(&out.stdout).unwrap(), rss)
}

/// etcd's `dbSize` (bytes) and revision.
fn db_size(etcd: &EtcdServer) -> (u64, u64) {
    let out = etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v[0]["Status"];
    (
        s["dbSize"].as_u64().unwrap(),
        s["header"]["revision"].as_u64().unwrap(),
    )
}

#[test]
fn sustained_load_memory_flat_and_db_bounded() {
    let etcd = EtcdServer::start();
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "load",
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "ranges": [[{"subnet": "10.64.0.0/16"}]],
            "chunkBits": 8
        }
    });
    let early = plugin_rss(&conf, "probe-early");
    let (first, bench_rss_small) = bench(&etcd, 1000);
    let (second, bench_rss_large) = bench(&etcd, 4000);
    let late = plugin_rss(&conf, "probe-late");
    let (size, revision) = db_size(&etcd);
    for (r, n) in [(&first, 1000), (&second, 4000)] {
        assert_eq!(r["ours"]["allocations"], n, "{r}");
        assert_eq!(r["ours"]["errors"], 0, "{r}");
    }
    eprintln!(
        "plugin peak RSS early {early} KiB, late {late} KiB; ipamctl bench peak RSS \
         1k: {bench_rss_small} KiB, 4k: {bench_rss_large} KiB; etcd dbSize {size} B at \
         revision {revision}; 4k run: {:.0} alloc/s, p99 {} ms, {} CAS retries/alloc",
        second["ours"]["allocations_per_sec"].as_f64().unwrap(),
        second["ours"]["latency_ms"]["p99"],
        second["ours"]["cas_retries_per_allocation"],
    );
    // Memory does not grow with the amount of work done.
    assert!(
        late * 2 <= early * 3,
        "plugin RSS grew: {early} -> {late} KiB"
    );
    assert!(
        bench_rss_large * 2 <= bench_rss_small * 3,
        "ipamctl bench RSS grew with the count: {bench_rss_small} -> {bench_rss_large} KiB"
    );
    // The state is consistent and empty (every address was released).
    let seen = inspect(&conf);
    assert!(seen.report.is_clean(), "{:?}", seen.report);
    assert!(seen.owners.is_empty(), "{:?}", seen.owners.keys());
    assert_eq!(seen.report.allocated, 0);
    // etcd's growth is history: compacted and defragmented, the live data
    // (at most 256 chunks of a /16 at k = 8, plus meta) is small.
    let rev = revision.to_string();
    for args in [
        vec!["compaction", "--physical", rev.as_str()],
        vec!["defrag"],
    ] {
        let out = etcd.etcdctl(&args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let (compacted, _) = db_size(&etcd);
    eprintln!("etcd dbSize after compaction and defrag: {compacted} B");
    assert!(compacted <= 1 << 20, "live data is {compacted} B");
    assert!(compacted < size, "{compacted} >= {size}");
}
