//! `ipamctl metrics` against real etcd and a real Prometheus (Debian's
//! `prometheus` package; `scripts/setup.sh` installs it): the exposition
//! passes `promtool check metrics`, Prometheus scrapes it and its query API
//! returns the allocator's numbers (and follows new allocations), the
//! example alert rules pass `promtool check rules` and `promtool test
//! rules`, garbage and slow HTTP clients get an error status or a closed
//! connection while the exporter keeps serving, and an address that cannot
//! be listened on is a clear error.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use host_etcd::allocator::Allocator;
use host_etcd::store::etcd::EtcdStore;
use host_etcd::store::{prefix_end, Op, Read as StoreRead, ReadResult, Store, Txn};
use serde_json::Value;
use support::alloc_harness::{owner, req};
use support::etcd_metrics::kv_counts;
use support::ipamctl::{allocator_of, ipamctl, EXE};
use support::{free_port, EtcdServer};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/host-etcd-ipam.rules.yml"
);
const RULES_TEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/host-etcd-ipam.rules.test.yml"
);

/// A child process killed (and reaped) on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: Option<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(log) = &self.log {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {} log tail ---", self.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// A network config on this etcd.
fn write_config(dir: &Path, etcd: &EtcdServer, name: &str, ranges: Value) -> PathBuf {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "host-etcd",
        "ipam": {"type": "host-etcd", "endpoints": [etcd.url()], "prefix": "/metrics-test",
                 "ranges": ranges, "chunkBits": 8}
    });
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

/// The allocator of `config` as node `node`.
async fn allocator_on(config: &Path, node: &str) -> Allocator<EtcdStore> {
    allocator_of(config, Some(node)).await
}

/// Allocates `NODE-i`/eth0 for every `i` of `ids`; returns the addresses.
async fn add(alloc: &Allocator<EtcdStore>, ids: std::ops::Range<usize>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for i in ids {
        let id = format!("{}-{i}", alloc.options().node_name);
        let a = alloc.allocate(&req(&id)).await.unwrap();
        out.extend(a.assigned.iter().map(|a| a.ip));
    }
    out
}

/// Starts `ipamctl --config CONFIG... metrics --listen 127.0.0.1:0 FLAGS`
/// (stderr to `log`); returns the process and the address it says it
/// serves on.
fn start_exporter(configs: &[&Path], flags: &[&str], log: &Path) -> (Proc, String) {
    let mut child = Command::new(EXE)
        .args(configs.iter().flat_map(|c| [Path::new("--config"), c]))
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let proc = Proc {
        name: "ipamctl metrics",
        child,
        log: Some(log.to_path_buf()),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    (proc, addr)
}

/// Sends raw bytes, returns everything the server answers until it closes.
fn try_raw(addr: &str, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    // A reset after the answer is fine; the answer is what counts.
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn raw(addr: &str, request: &[u8]) -> String {
    try_raw(addr, request).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// GET `path` (HTTP/1.0, so the body ends with the connection): status
/// code and body.
fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let answer = try_raw(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {answer:?}")))?;
    Ok((code, body.to_string()))
}

fn get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of every series of an instant query, by the given label.
fn query(prom: &str, q: &str, by: &str) -> Option<Vec<(String, f64)>> {
    let (code, body) = try_get(prom, &format!("/api/v1/query?query={}", encode(q))).ok()?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out: Vec<(String, f64)> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| {
            (
                r["metric"][by].as_str().unwrap_or("").to_string(),
                r["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// Polls `q` until it returns `want` (by label `by`).
fn wait_for(prom: &str, q: &str, by: &str, want: &[(&str, f64)]) {
    let want: Vec<(String, f64)> = want.iter().map(|(l, v)| (l.to_string(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(prom, q, by);
        if last.as_ref() == Some(&want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus query {q}: wanted {want:?}, last answer {last:?}");
}

/// The sample of `name` whose line contains every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in\n{text}"))
}

/// The sample of `name` of network `net1`.
fn of_net1(text: &str, name: &str) -> f64 {
    sample(text, name, &["network=\"net1\""])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_exporter() {
    let promtool = support::prometheus::bin("promtool");
    let prometheus = support::prometheus::bin("prometheus");
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v4 = write_config(
        dir.path(),
        &etcd,
        "net1",
        serde_json::json!([[{"subnet": "10.30.0.0/24"}]]),
    );
    let dual = write_config(
        dir.path(),
        &etcd,
        "net2",
        serde_json::json!([[{"subnet": "10.31.0.0/28"}], [{"subnet": "fd00:31::/120"}]]),
    );
    let a = allocator_on(&v4, "node-a").await;
    let b = allocator_on(&v4, "node-b").await;
    let c = allocator_on(&dual, "node-a").await;
    add(&a, 0..5).await;
    add(&b, 0..2).await;
    add(&c, 0..3).await;

    let (exporter, addr) = start_exporter(
        &[&v4, &dual],
        &["--client-timeout-secs", "1", "--check-interval-secs", "1"],
        &dir.path().join("exporter.log"),
    );

    // The exposition: the figures, and promtool's lint is silent. The
    // check runs on its own interval (the first right at start): wait for
    // its first result.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, text) = loop {
        let (code, text) = get(&addr, "/metrics");
        if text.contains("host_etcd_ipam_check_last_run_timestamp_seconds{network=\"net2\"}") {
            break (code, text);
        }
        assert!(Instant::now() < deadline, "no check result:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 200, "{text}");
    let net1 = [
        "network=\"net1\"",
        "range_set=\"0\"",
        "range=\"10.30.0.2-10.30.0.254\"",
        "family=\"ipv4\"",
    ];
    assert_eq!(sample(&text, "host_etcd_ipam_addresses_used", &net1), 7.0);
    let size = sample(&text, "host_etcd_ipam_addresses_size", &net1);
    assert_eq!(
        sample(&text, "host_etcd_ipam_addresses_free", &net1),
        size - 7.0
    );
    let ratio = sample(&text, "host_etcd_ipam_utilization_ratio", &net1);
    assert!((ratio - 7.0 / size).abs() < 1e-12, "{ratio}");
    assert_eq!(sample(&text, "host_etcd_ipam_chunks_stored", &net1), 1.0);
    assert!(sample(&text, "host_etcd_ipam_chunks_stored_bytes", &net1) > 0.0);
    let v6 = ["network=\"net2\"", "range_set=\"1\"", "family=\"ipv6\""];
    assert_eq!(sample(&text, "host_etcd_ipam_addresses_used", &v6), 3.0);
    assert_eq!(of_net1(&text, "host_etcd_ipam_owner_records"), 7.0);
    // No per-node series: each node's agent exports its own.
    assert!(!text.contains("node_owner_records"), "{text}");
    assert!(of_net1(&text, "host_etcd_ipam_check_last_run_timestamp_seconds") > 1.7e9);
    assert_eq!(of_net1(&text, "host_etcd_ipam_check_errors_total"), 0.0);
    assert_eq!(
        sample(
            &text,
            "host_etcd_ipam_check_problems",
            &["network=\"net2\"", "kind=\"bitWithoutOwner\""]
        ),
        0.0
    );
    assert_eq!(
        sample(&text, "host_etcd_ipam_up", &["network=\"net2\""]),
        1.0
    );
    assert_eq!(of_net1(&text, "host_etcd_ipam_scrape_errors_total"), 0.0);
    assert!(text.contains("# TYPE host_etcd_ipam_scrape_errors_total counter\n"));
    assert!(text.contains("# TYPE host_etcd_ipam_scrape_duration_seconds gauge\n"));
    support::prometheus::assert_lint_clean(&text);

    // The example alert rules.
    for args in [["check", "rules", RULES], ["test", "rules", RULES_TEST]] {
        let out = Command::new(&promtool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A real Prometheus scraping every second, with the rules loaded.
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let prom_conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {RULES}\n\
             scrape_configs:\n  - job_name: ipam\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let _prom = Proc {
        name: "prometheus",
        child: Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .unwrap(),
        log: Some(prom_log),
    };
    wait_for(
        &prom_addr,
        "host_etcd_ipam_addresses_used{family=\"ipv4\"}",
        "network",
        &[("net1", 7.0), ("net2", 3.0)],
    );
    wait_for(&prom_addr, "up{job=\"ipam\"}", "job", &[("ipam", 1.0)]);
    wait_for(
        &prom_addr,
        "min(host_etcd_ipam_up)",
        "network",
        &[("", 1.0)],
    );
    // Every scrape reads the store: new allocations show up.
    add(&b, 2..6).await;
    wait_for(
        &prom_addr,
        "host_etcd_ipam_addresses_used{network=\"net1\"}",
        "network",
        &[("net1", 11.0)],
    );
    wait_for(
        &prom_addr,
        "sum(host_etcd_ipam_owner_records)",
        "network",
        &[("", 14.0)],
    );
    // The rules were loaded (Prometheus validates them on start).
    let (code, rules) = get(&prom_addr, "/api/v1/rules");
    assert_eq!(code, 200);
    assert!(
        rules.contains("HostEtcdIpamRangeNearlyExhausted"),
        "{rules}"
    );

    // Garbage, wrong methods and paths, slow and oversized requests: an
    // error status (or a closed connection), never a crash.
    let status = |answer: &str| answer.split_whitespace().nth(1).map(str::to_string);
    assert_eq!(
        status(&raw(
            &addr,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
        )),
        Some("400".into())
    );
    assert_eq!(status(&raw(&addr, b"hello\n\n")), Some("400".into()));
    assert_eq!(
        status(&raw(&addr, b"POST /metrics HTTP/1.1\r\n\r\n")),
        Some("405".into())
    );
    assert_eq!(get(&addr, "/nothing").0, 404);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let answer = raw(&addr, huge.as_bytes());
    assert!(
        answer.is_empty() || status(&answer) == Some("431".into()),
        "{answer}"
    );
    // A client that sends half a request and stalls is cut off.
    let started = Instant::now();
    let answer = raw(&addr, b"GET /metr");
    assert_eq!(status(&answer), Some("408".into()), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Connects and closes without a byte.
    drop(TcpStream::connect(&addr).unwrap());
    let (code, head) = {
        let answer = raw(&addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        (status(&answer), answer)
    };
    assert_eq!(code, Some("200".into()), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "host_etcd_ipam_addresses_used", &net1), 11.0);

    // An address that cannot be listened on: taken, or not an address.
    for bad in [addr.as_str(), "not-an-address", "127.0.0.1:99999"] {
        let out = ipamctl(&["--config", v4.to_str().unwrap(), "metrics", "--listen", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains(&format!("cannot listen on {bad}")),
            "{bad}: {err}"
        );
    }
    drop(exporter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_up_0_and_counted() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &etcd,
        "net1",
        serde_json::json!([[{"subnet": "10.32.0.0/24"}]]),
    );
    let a = allocator_on(&config, "n1").await;
    add(&a, 0..2).await;
    let (_exporter, addr) = start_exporter(
        &[&config],
        &["--scrape-timeout-secs", "2"],
        &dir.path().join("exporter.log"),
    );
    let (_, text) = get(&addr, "/metrics");
    assert_eq!(of_net1(&text, "host_etcd_ipam_up"), 1.0);
    assert_eq!(of_net1(&text, "host_etcd_ipam_addresses_used"), 2.0);
    // The check is off by default: no check figures, no owner records.
    assert!(!text.contains("host_etcd_ipam_check_problems"), "{text}");
    assert!(!text.contains("host_etcd_ipam_owner_records"), "{text}");

    etcd.stop();
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    assert_eq!(of_net1(&text, "host_etcd_ipam_up"), 0.0);
    assert_eq!(of_net1(&text, "host_etcd_ipam_scrape_errors_total"), 1.0);
    assert!(!text.contains("host_etcd_ipam_addresses_used"), "{text}");

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = get(&addr, "/metrics");
        if of_net1(&text, "host_etcd_ipam_up") == 1.0 {
            assert_eq!(of_net1(&text, "host_etcd_ipam_addresses_used"), 2.0);
            assert!(of_net1(&text, "host_etcd_ipam_scrape_errors_total") >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "never up again:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.path().join("exporter.log")).unwrap();
    assert!(log.contains("network net1:"), "{log}");
    assert!(log.contains("scrapes succeed again"), "{log}");
}

/// The exporter keeps each network's chunks between scrapes: a scrape
/// after the first reads only the chunks written since, in one etcd call
/// for every range, and its figures stay those of a fresh read through
/// writes, a chunk deleted behind its back, and a chunk that does not
/// decode (up 0 until it is gone).
#[tokio::test]
async fn a_scrape_reads_only_the_chunks_written_since_the_last() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &etcd,
        "spread",
        serde_json::json!([[{"subnet": "10.40.0.0/20"}], [{"subnet": "fd00:40::/64"}]]),
    );
    // Six nodes, each with a first address in a chunk of its own (asked
    // for, so the chunks do not depend on where the nodes' searches start)
    // and two more wherever its search puts them: 6 or more chunks a set.
    let nodes: Vec<Allocator<EtcdStore>> = nodes_of(&config, 6).await;
    for (i, n) in nodes.iter().enumerate() {
        let own: Vec<IpAddr> = [format!("10.40.{}.10", 2 * i), format!("fd00:40::{i}10")]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let first = req(&format!("node-{i}-0")).with_requested(own);
        n.allocate(&first).await.unwrap();
        add(n, 1..3).await;
    }
    let (_exporter, addr) = start_exporter(&[&config], &[], &dir.path().join("exporter.log"));
    let v4 = ["network=\"spread\"", "family=\"ipv4\""];
    let v6 = ["network=\"spread\"", "family=\"ipv6\""];
    let up = ["network=\"spread\""];
    // (v4 used, v6 used, v4 chunks, v6 chunks) of a scrape, and of a fresh read.
    let figures = |text: &str| {
        (
            sample(text, "host_etcd_ipam_addresses_used", &v4),
            sample(text, "host_etcd_ipam_addresses_used", &v6),
            sample(text, "host_etcd_ipam_chunks_stored", &v4),
            sample(text, "host_etcd_ipam_chunks_stored", &v6),
        )
    };
    let scrape = || {
        let before = kv_counts(&etcd.url());
        let (code, text) = get(&addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        (text, kv_counts(&etcd.url()).since(before).calls())
    };

    let (text, _) = scrape();
    let first = fresh(&nodes[0]).await;
    let (c4, c6) = (first.2, first.3);
    assert_eq!((first.0, first.1), (18.0, 18.0));
    assert!(c4 >= 6.0 && c6 >= 6.0, "{first:?}");
    assert_eq!(figures(&text), first);
    // Nothing written since: one call.
    let (text, calls) = scrape();
    assert_eq!(calls, 1, "a scrape of an unchanged network");
    assert_eq!(figures(&text), first);

    // Writes: two ADDs and a DEL, then one call again.
    add(&nodes[0], 3..5).await;
    nodes[1].release(&owner("node-1-0")).await.unwrap().unwrap();
    let (text, calls) = scrape();
    assert_eq!(calls, 1);
    let written = fresh(&nodes[0]).await;
    assert_eq!((written.0, written.1), (19.0, 19.0));
    // The ADDs may have started chunks of their own.
    assert!(written.2 >= c4 && written.3 >= c6, "{written:?}");
    assert_eq!(figures(&text), written);
    let c4 = written.2;

    // A chunk deleted behind the exporter's back (as `check --repair`
    // deletes one that does not decode): the key count gives it away.
    let store = nodes[0].store();
    let prefix = "/metrics-test/spread/chunks/4/";
    let chunks = match &store
        .read(&[StoreRead::Range {
            start: prefix.into(),
            end: prefix_end(prefix),
            limit: 0,
        }])
        .await
        .unwrap()[0]
    {
        ReadResult::Range { kvs, .. } => kvs.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(chunks.len() as f64, c4);
    // Node 0's and node 2's first chunks (10.40.0.0/24, 10.40.4.0/24): each
    // holds that node's first address.
    let (gone, bad) = (format!("{prefix}0a280000"), format!("{prefix}0a280400"));
    assert!(chunks.iter().any(|(k, _)| *k == gone) && chunks.iter().any(|(k, _)| *k == bad));
    let txn = |ops| Txn {
        ops,
        ..Txn::default()
    };
    store
        .txn(txn(vec![Op::Delete(gone.clone())]))
        .await
        .unwrap();
    let (text, _) = scrape();
    let now = fresh(&nodes[0]).await;
    assert_eq!(now.2, c4 - 1.0);
    assert!(now.0 < 19.0, "{now:?}");
    assert_eq!(figures(&text), now);

    // A chunk that does not decode: the network is down, the other
    // figures are not exported from a half-read copy...
    let put = Op::Put(bad.clone(), b"not a chunk".to_vec());
    store.txn(txn(vec![put])).await.unwrap();
    let (text, _) = scrape();
    assert_eq!(sample(&text, "host_etcd_ipam_up", &up), 0.0, "{text}");
    assert!(!text.contains("host_etcd_ipam_addresses_used{"), "{text}");
    // ... until it is gone; then every chunk is read again.
    store.txn(txn(vec![Op::Delete(bad.clone())])).await.unwrap();
    let (text, calls) = scrape();
    assert_eq!(sample(&text, "host_etcd_ipam_up", &up), 1.0, "{text}");
    assert_eq!(figures(&text), fresh(&nodes[0]).await);
    assert_eq!(figures(&text).2, c4 - 2.0);
    assert_eq!(calls, 1, "every chunk fits in one page per range");
}

/// (v4 used, v6 used, v4 chunks, v6 chunks) of a fresh read.
async fn fresh(a: &Allocator<EtcdStore>) -> (f64, f64, f64, f64) {
    let u = a.usage().await.unwrap();
    (
        u[0].used as f64,
        u[1].used as f64,
        u[0].chunks as f64,
        u[1].chunks as f64,
    )
}

/// Allocators of `config` on nodes `node-0` .. `node-{n-1}`.
async fn nodes_of(config: &Path, n: usize) -> Vec<Allocator<EtcdStore>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(allocator_on(config, &format!("node-{i}")).await);
    }
    out
}
