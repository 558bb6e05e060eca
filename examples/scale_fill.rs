//! Fills an etcd network with owner records of many simulated nodes: the
//! fill step of `scripts/scale_bench.sh` (a measurement run by hand).
//!
//! Reads the plugin's own network config (endpoints, prefix, ranges, chunk
//! size), then for each node `scale-node-NNNNN` of `--first-node ..
//! --first-node + --nodes` opens an allocator with that node's name and
//! seed (as the plugin on a host of that name would) and allocates
//! `--per-node` owners in one `allocate_batch`: the library's ordinary ADD
//! path, so every owner record gets its per-node index entry in the same
//! compare-and-swap transaction. `--concurrency` nodes are filled at once.
//! Container IDs are 64 hex digits, as a runtime's are, and each owner
//! names a pod (`default/scale-NNNNN-JJ`), as the kubelet's CNI_ARGS do.
//! Filling again is harmless: an ADD is idempotent per owner.
//!
//! ```sh
//! cargo run --example scale_fill -- net.conf --first-node 0 --nodes 334 \
//!     [--per-node 30] [--concurrency 16]
//! ```
//!
//! Prints one JSON line: nodes, owners, new owners, seconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use host_etcd::allocator::node_seed_from;
use host_etcd::cni::NetConf;
use host_etcd::cni::StoreConf;
use host_etcd::{AllocRequest, Allocator, EtcdStore, Network, Options, OwnerId};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The command line, read by hand (the example needs no argument parser).
struct Args {
    config: String,
    first_node: usize,
    nodes: usize,
    per_node: usize,
    concurrency: usize,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        config: String::new(),
        first_node: 0,
        nodes: 0,
        per_node: 30,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            out.config = arg;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{arg}: {value:?} is not a number"))?;
        match arg.as_str() {
            "--first-node" => out.first_node = n,
            "--nodes" => out.nodes = n,
            "--per-node" => out.per_node = n,
            "--concurrency" => out.concurrency = n.max(1),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if out.config.is_empty() {
        return Err(
            "usage: scale_fill CONFIG --first-node N --nodes N [--per-node 30] \
                    [--concurrency 16]"
                .into(),
        );
    }
    Ok(out)
}

/// The name of simulated node `i` (what its host name would be).
fn node_name(i: usize) -> String {
    format!("scale-node-{i:05}")
}

/// The owners of node `i`: 64-hex-digit container IDs, `eth0`, a pod each.
fn requests(i: usize, per_node: usize) -> Vec<AllocRequest> {
    let seed = node_seed_from(&node_name(i));
    (0..per_node)
        .map(|j| {
            AllocRequest::new(OwnerId {
                container_id: format!("{seed:016x}{:048x}", j),
                ifname: "eth0".into(),
            })
            .with_pod("default", format!("scale-{i:05}-{j:02}"))
        })
        .collect()
}

/// Fills the nodes that `next` hands out until none is left; returns the
/// owners that were new.
async fn worker(
    store: Arc<EtcdStore>,
    network: Network,
    options: Options,
    next: Arc<AtomicUsize>,
    args: Arc<Args>,
) -> Result<usize, Error> {
    let mut new = 0;
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= args.nodes {
            return Ok(new);
        }
        let i = args.first_node + k;
        let name = node_name(i);
        let opts = options
            .clone()
            .with_node_seed(node_seed_from(&name))
            .with_node_name(name.clone());
        let alloc = Allocator::new(store.clone(), network.clone(), opts)?;
        let got = alloc
            .allocate_batch(&requests(i, args.per_node))
            .await
            .map_err(|e| format!("node {name}: {e}"))?;
        new += got.iter().filter(|a| !a.existing).count();
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Arc::new(args()?);
    let bytes = std::fs::read(&args.config).map_err(|e| format!("{}: {e}", args.config))?;
    let conf = NetConf::parse(&bytes)?;
    let network = conf.network()?;
    let StoreConf::Etcd(etcd) = &conf.ipam.store else {
        return Err("the config has no etcd endpoints".into());
    };
    let store = Arc::new(EtcdStore::connect(etcd).await?);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                store.clone(),
                network.clone(),
                conf.options(),
                next.clone(),
                args.clone(),
            ))
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        new += t.await??;
    }
    println!(
        "{{\"nodes\": {}, \"owners\": {}, \"new_owners\": {new}, \"secs\": {:.3}}}",
        args.nodes,
        args.nodes * args.per_node,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
