//! `ipamctl bench --rollout-nodes N`: a mass rollout simulated in one
//! process. N allocators, each a node of its own (node name `node-<i>`, its
//! node seed the hash of that name, its own node cache), start at once on
//! one network and each does `--adds-per-node` ADDs one after the other, as
//! a Deployment scaled across the cluster starts pods. At most
//! `--concurrency` nodes run at a time (tokio tasks sharing one store
//! connection). Before the measured phase one more node makes the network's
//! meta record with an ADD and a DEL (as the cluster benchmark's warm-up
//! does), so the phase measures a network that exists but is empty.
//!
//! What the report counts: etcd's own KV calls (`Txn` + `Range` of
//! `grpc_server_handled_total` on the endpoint's `/metrics`, scraped before
//! and after; plain `http://` endpoints only), and the store calls the
//! shared [`CountingStore`](crate::store::counting::CountingStore) sent, per
//! successful ADD; failed ADDs, duplicate addresses among the results, and
//! the p50 / p99 of one ADD's latency.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::report::Latency;
use super::Shared;
use crate::admin::cli::BenchArgs;
use crate::admin::error::{AdminError, EXIT_OK, EXIT_PROBLEMS};
use crate::admin::target::Target;
use crate::allocator::{node_seed_from, AllocRequest, Allocator, Network, Options, OwnerId};
use crate::cni::config::StoreConf;

/// etcd's KV calls, as etcd counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvCalls {
    /// `Range` calls.
    pub range: u64,
    /// `Txn` calls (the etcd store sends multi-key reads as read-only
    /// transactions, so reads are counted here too).
    pub txn: u64,
}

/// The figures of one rollout run.
#[derive(Debug, Serialize)]
pub struct RolloutReport {
    /// The network's name.
    pub network: String,
    /// Its range sets, as CIDR lists.
    pub ranges: Vec<String>,
    /// Simulated nodes.
    pub nodes: usize,
    /// ADDs per node.
    pub adds_per_node: usize,
    /// Nodes running at a time.
    pub concurrency: usize,
    /// Successful ADDs.
    pub adds: u64,
    /// ADDs that returned an error.
    pub failed: u64,
    /// The first few errors.
    pub first_errors: Vec<String>,
    /// Addresses handed out more than once among the results (must be 0).
    pub duplicate_addresses: usize,
    /// etcd's count of the phase's KV calls (`None`: no plain-HTTP
    /// endpoint to scrape).
    pub etcd_calls: Option<KvCalls>,
    /// `etcd_calls` (Txn + Range) per successful ADD.
    pub etcd_calls_per_add: Option<f64>,
    /// Store calls sent (reads + transactions) per successful ADD.
    pub store_calls_per_add: f64,
    /// Transactions that lost their compare, per successful ADD.
    pub conflicts_per_add: f64,
    /// Latency of one ADD.
    pub latency_ms: Latency,
    /// Wall time of the phase, seconds.
    pub secs: f64,
}

/// What one node did.
#[derive(Default)]
struct NodeResult {
    ips: Vec<IpAddr>,
    lat_us: Vec<u32>,
    failed: u64,
    errors: Vec<String>,
}

/// Runs the rollout of `nodes` nodes and writes its report.
pub async fn run_rollout(
    store: &Shared,
    target: &Target,
    network: &Network,
    args: &BenchArgs,
    nodes: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    if nodes == 0 || args.adds_per_node == 0 {
        return Err(AdminError::Usage(
            "--rollout-nodes and --adds-per-node must be at least 1".into(),
        ));
    }
    let metrics = metrics_address(&target.store);
    let node = |name: &str| {
        Allocator::new(
            store.clone(),
            network.clone(),
            Options {
                node_seed: node_seed_from(name),
                node_name: name.to_string(),
                ..target.options.clone()
            },
        )
    };
    // The network's meta record, made by one more node (ADD, then DEL).
    let warm = node("rollout-warmup")?;
    let owner = OwnerId {
        container_id: "rollout-warmup".into(),
        ifname: "eth0".into(),
    };
    warm.allocate(&request(owner.clone())).await?;
    warm.release(&owner).await?;
    let allocators: Vec<Allocator<Shared>> = (1..=nodes)
        .map(|i| node(&format!("node-{i}")))
        .collect::<Result<_, _>>()?;

    let before_calls = match &metrics {
        Some(addr) => Some(kv_calls(addr).await?),
        None => None,
    };
    let (r0, t0, c0) = (store.reads(), store.txns(), store.conflicts());
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(nodes);
    for (i, alloc) in allocators.into_iter().enumerate() {
        let gate = gate.clone();
        let adds = args.adds_per_node;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            node_loop(alloc, i + 1, adds).await
        }));
    }
    let mut all = NodeResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| AdminError::Worker {
            index: 0,
            detail: format!("rollout node task failed: {e}"),
        })?;
        all.ips.extend(r.ips);
        all.lat_us.extend(r.lat_us);
        all.failed += r.failed;
        for e in r.errors {
            if all.errors.len() < 5 {
                all.errors.push(e);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let etcd_calls = match (&metrics, before_calls) {
        (Some(addr), Some(b)) => {
            let a = kv_calls(addr).await?;
            Some(KvCalls {
                range: a.range.saturating_sub(b.range),
                txn: a.txn.saturating_sub(b.txn),
            })
        }
        _ => None,
    };
    let adds = all.lat_us.len() as u64 - all.failed;
    let per = |x: u64| {
        if adds == 0 {
            0.0
        } else {
            x as f64 / adds as f64
        }
    };
    let distinct: HashSet<&IpAddr> = all.ips.iter().collect();
    let report = RolloutReport {
        network: network.name.clone(),
        ranges: network
            .sets
            .iter()
            .map(|s| {
                s.ranges()
                    .iter()
                    .map(|r| format!("{}-{}", r.start, r.end))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
        nodes,
        adds_per_node: args.adds_per_node,
        concurrency: args.concurrency,
        adds,
        failed: all.failed,
        first_errors: all.errors,
        duplicate_addresses: all.ips.len() - distinct.len(),
        etcd_calls,
        etcd_calls_per_add: etcd_calls.map(|c| per(c.range + c.txn)),
        store_calls_per_add: per(store.reads() - r0 + store.txns() - t0),
        conflicts_per_add: per(store.conflicts() - c0),
        latency_ms: Latency::of(&mut all.lat_us),
        secs,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", human(&report))?;
    }
    Ok(if report.failed == 0 && report.duplicate_addresses == 0 {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

/// An ADD request of `owner`.
fn request(owner: OwnerId) -> AllocRequest {
    AllocRequest {
        owner,
        ..AllocRequest::default()
    }
}

/// One node: its ADDs one after the other, each timed.
async fn node_loop(alloc: Allocator<Shared>, node: usize, adds: usize) -> NodeResult {
    let mut out = NodeResult::default();
    for j in 0..adds {
        let owner = OwnerId {
            container_id: format!("rollout-{node}-{j}"),
            ifname: "eth0".into(),
        };
        let t = Instant::now();
        let got = alloc.allocate(&request(owner)).await;
        out.lat_us
            .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        match got {
            Ok(a) => out.ips.extend(a.assigned.iter().map(|x| x.ip)),
            Err(e) => {
                out.failed += 1;
                if out.errors.len() < 2 {
                    out.errors.push(format!("node-{node}: {e}"));
                }
            }
        }
    }
    out
}

/// `host:port` of the first endpoint when it is plain HTTP (etcd serves
/// `/metrics` on its client port).
fn metrics_address(store: &StoreConf) -> Option<String> {
    let StoreConf::Etcd(cfg) = store else {
        return None;
    };
    if cfg.trusted_ca_file.is_some() || cfg.cert_file.is_some() {
        return None;
    }
    let ep = cfg.endpoints.first()?;
    if ep.starts_with("https://") {
        return None;
    }
    Some(
        ep.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    )
}

/// etcd's KV calls so far, from `http://<addr>/metrics` (hyper's HTTP/1
/// client; the body's lines, whatever its transfer encoding).
async fn kv_calls(addr: &str) -> Result<KvCalls, AdminError> {
    let scrape = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        // Ends once `sender` is dropped and the answer is read.
        tokio::spawn(conn);
        let request = hyper::Request::get("/metrics")
            .header(hyper::header::HOST, addr)
            .body(Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?;
        Ok::<String, std::io::Error>(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    };
    let body = tokio::time::timeout(Duration::from_secs(10), scrape)
        .await
        .map_err(|_| std::io::Error::other(format!("{addr}/metrics: no answer in 10 s")))??;
    Ok(parse_kv_calls(&body))
}

/// Sums `grpc_server_handled_total` of service `etcdserverpb.KV` by method.
fn parse_kv_calls(body: &str) -> KvCalls {
    let mut calls = KvCalls::default();
    for line in body.lines() {
        if !line.starts_with("grpc_server_handled_total{")
            || !line.contains("grpc_service=\"etcdserverpb.KV\"")
        {
            continue;
        }
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if line.contains("grpc_method=\"Range\"") {
            calls.range += value as u64;
        } else if line.contains("grpc_method=\"Txn\"") {
            calls.txn += value as u64;
        }
    }
    calls
}

/// The report as text.
fn human(r: &RolloutReport) -> String {
    let etcd = match (r.etcd_calls, r.etcd_calls_per_add) {
        (Some(c), Some(p)) => format!("{p:.3} ({} Txn + {} Range)", c.txn, c.range),
        _ => "- (no plain-HTTP etcd endpoint to scrape)".into(),
    };
    format!(
        "rollout: {} nodes x {} ADDs on {} ({}), {} nodes at a time\n\
         ADDs:                 {} ok, {} failed, {} duplicate addresses\n\
         etcd calls per ADD:   {etcd}\n\
         store calls per ADD:  {:.3} ({:.3} conflicts per ADD)\n\
         ADD latency:          p50 {:.2} ms, p99 {:.2} ms\n\
         wall time:            {:.1} s\n{}",
        r.nodes,
        r.adds_per_node,
        r.network,
        r.ranges.join(", "),
        r.concurrency,
        r.adds,
        r.failed,
        r.duplicate_addresses,
        r.store_calls_per_add,
        r.conflicts_per_add,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.secs,
        r.first_errors
            .iter()
            .map(|e| format!("  error: {e}\n"))
            .collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_calls_are_summed_by_method_over_codes() {
        let body = "# HELP x\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 12\n\
            grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 4\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"LeaseGrant\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"unary\"} 9\n";
        assert_eq!(parse_kv_calls(body), KvCalls { range: 4, txn: 15 });
    }

    #[test]
    fn metrics_only_from_plain_http_etcd() {
        let etcd = |ep: &str| {
            StoreConf::Etcd(crate::store::etcd::EtcdConfig {
                endpoints: vec![ep.into()],
                ..crate::store::etcd::EtcdConfig::default()
            })
        };
        assert_eq!(
            metrics_address(&etcd("http://127.0.0.1:2379/")).as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(
            metrics_address(&etcd("127.0.0.1:2379")).as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(metrics_address(&etcd("https://10.0.0.1:2379")), None);
    }
}
