//! `ipamctl bench`: allocation throughput of this allocator against a store
//! (etcd), measured in the same run as two references:
//!
//! * **raw** — the store's limit: bare compare-and-swap transactions at the
//!   same concurrency, each client comparing the `mod_revision` of its own
//!   key and putting a 128-byte value (one round trip per operation, never
//!   a conflict);
//! * **naive** — the original one-key-per-IP design ([`super::naive`]).
//!
//! "ours" runs `count` allocations over `concurrency` tokio tasks (times
//! `processes` re-executed worker processes), each task with its own
//! [`Allocator`](crate::allocator::Allocator) over one shared
//! [`CountingStore`], so the report carries
//! exact round trips, transactions and bytes. CAS retries per allocation
//! are `txns − operations` over allocations (operations are allocations,
//! plus releases with `--release`). Baselines stop at `--baseline-secs`; a
//! naive run that completes no allocation in that time is reported as the
//! estimate `probes/s ÷ (prefilled + 1)` (each allocation must probe past
//! every taken address), marked `estimated`.
//!
//! With the embedded store (`--data-dir`) the whole run, prefill and
//! baselines included, shares one open store: its directory lock admits one
//! holder, so a second open in the same run would wait for the first, and
//! `--processes` above 1 is refused.
//!
//! `--rollout-nodes N` measures something else: a mass rollout of N
//! simulated nodes in this process (`rollout.rs`).
//!
//! The parts: `ours.rs` (the measured loop, in-process or over worker
//! processes, and the prefill), `raw.rs` and `naive.rs` (the references),
//! `report.rs` (the figures and their text), `progress.rs` (the bars).
//! [`bench_command`] strings them together.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::cli::{BenchArgs, TargetArgs};
use super::error::{AdminError, EXIT_OK};
use super::target::{open_store, subnet_set, Target};
use crate::allocator::Network;
use crate::cni::config::StoreConf;
use crate::range::RangeSet;
use crate::store::any::AnyStore;
use crate::store::counting::CountingStore;

mod naive;
mod ours;
mod progress;
mod raw;
mod report;
mod rollout;

pub use report::{human, BenchReport, Naive, Raw};

/// The range benchmarked when neither `--config` nor `--subnet` gives one.
pub const DEFAULT_BENCH_SUBNET: &str = "10.128.0.0/16";

/// Network name used when none is given.
pub const DEFAULT_BENCH_NETWORK: &str = "bench";

/// The store every allocator of the run shares, counting what is sent.
type Shared = Arc<CountingStore<Arc<AnyStore>>>;

/// `bench`.
pub async fn bench_command(
    targs: &TargetArgs,
    args: &BenchArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    check_args(args)?;
    let target = bench_target(targs, args)?;
    let embedded = check_store(&target, args)?;
    let inner = Arc::new(open_store(&target.store).await?);
    let network = target.checked_network(&inner).await?;
    let store: Shared = Arc::new(CountingStore::new(inner.clone()));

    if let Some(nodes) = args.rollout_nodes {
        return rollout::run_rollout(&store, &target, &network, args, nodes, json, out).await;
    }
    if let Some(worker) = args.worker {
        return ours::run_worker(&store, &network, &target.options, args, worker, out).await;
    }

    let plan = Plan::new(&network, args)?;
    let show = !json && std::io::stderr().is_terminal();
    let prefill_secs = ours::prefill(&store, &network, &target.options, plan.prefill, show).await?;
    let ours = ours::measure(&store, &network, &target.options, args, show).await?;
    // etcd: a connection of their own; the embedded store: the same handle.
    let raw_store = if embedded {
        inner
    } else {
        Arc::new(open_store(&target.store).await?)
    };
    let (raw, naive) = baselines(raw_store, &network, &plan, args).await?;
    let report = BenchReport::new(&network, &plan, args, prefill_secs, ours, raw, naive);
    write_report(&report, json, out)?;
    Ok(EXIT_OK)
}

/// The arguments `clap` cannot check alone.
fn check_args(args: &BenchArgs) -> Result<(), AdminError> {
    if !(0.0..1.0).contains(&args.prefill) {
        return Err(AdminError::Usage(format!(
            "--prefill {}: must be in 0..1",
            args.prefill
        )));
    }
    if args.concurrency == 0 || args.processes == 0 {
        return Err(AdminError::Usage(
            "--concurrency and --processes must be at least 1".into(),
        ));
    }
    if !(args.baseline_secs > 0.0 && args.baseline_secs.is_finite()) {
        return Err(AdminError::Usage(format!(
            "--baseline-secs {}: must be > 0",
            args.baseline_secs
        )));
    }
    Ok(())
}

/// The benchmark's target: `--network-per-run` picks a random name, and a
/// target without ranges gets [`DEFAULT_BENCH_SUBNET`].
fn bench_target(targs: &TargetArgs, args: &BenchArgs) -> Result<Target, AdminError> {
    let mut target = Target::resolve(targs, Some(DEFAULT_BENCH_NETWORK))?;
    if let Some(name) = &args.worker_network {
        target.network.name = name.clone();
    } else if args.network_per_run {
        target.network.name = format!("bench-{:08x}", fastrand::u32(..));
    }
    if target.network.sets.is_empty() {
        target.network.sets = vec![subnet_set(DEFAULT_BENCH_SUBNET)?];
    }
    Ok(target)
}

/// Whether the target's store is the embedded one, refusing `--processes`
/// above 1 on it.
fn check_store(target: &Target, args: &BenchArgs) -> Result<bool, AdminError> {
    // The embedded store admits one process at a time (its directory lock is
    // held for as long as the store is open), so this process opens it once
    // and measures everything on that one handle; worker processes would
    // only wait for the lock this process holds.
    let embedded = matches!(target.store, StoreConf::Local { .. });
    if embedded && args.processes > 1 {
        return Err(AdminError::Usage(
            "--processes above 1 needs etcd: the embedded store (--data-dir) admits one process at a time"
                .into(),
        ));
    }
    Ok(embedded)
}

/// What the run measures on: the network's first range set, its size, and
/// how many of its addresses the prefill takes.
struct Plan<'n> {
    set: &'n RangeSet,
    range_size: u128,
    prefill: usize,
}

impl<'n> Plan<'n> {
    /// The plan for `args` on `network`; a usage error if the network has no
    /// range or its first set is too small for the prefill plus the count.
    fn new(network: &'n Network, args: &BenchArgs) -> Result<Self, AdminError> {
        let set = network
            .sets
            .first()
            .ok_or_else(|| AdminError::Usage("bench needs a range".into()))?;
        let range_size: u128 = set.ranges().iter().map(|r| r.len()).sum();
        let prefill = (args.prefill * range_size as f64) as usize;
        let needed = prefill as u128 + if args.release { 1 } else { args.count as u128 };
        if needed > range_size {
            return Err(AdminError::Usage(format!(
                "--count {} with --prefill {} needs {needed} addresses but the range has {range_size}",
                args.count, args.prefill
            )));
        }
        Ok(Plan {
            set,
            range_size,
            prefill,
        })
    }
}

/// How the references run: under `root` (outside the network's keyspace),
/// over `clients` tasks, at most `count` operations, stopping at `limit`.
struct Baseline {
    root: String,
    clients: usize,
    count: usize,
    limit: Duration,
}

/// What one reference client did: operations completed, errors, latencies
/// in microseconds.
type Tally = (u64, u64, Vec<u32>);

/// The sum of the `what` reference's client tasks.
async fn join(tasks: Vec<JoinHandle<Tally>>, what: &str) -> Result<Tally, AdminError> {
    let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
    for t in tasks {
        let (o, e, l) = t.await.map_err(|e| AdminError::Worker {
            index: 0,
            detail: format!("{what} client task failed: {e}"),
        })?;
        ok += o;
        errors += e;
        lat.extend(l);
    }
    Ok((ok, errors, lat))
}

/// The references on `store`, unless `--no-raw` / `--no-naive`: all of the
/// run's clients, the same count, at most `--baseline-secs` each; the naive
/// one on the set's first range, prefilled like ours.
async fn baselines(
    store: Arc<AnyStore>,
    network: &Network,
    plan: &Plan<'_>,
    args: &BenchArgs,
) -> Result<(Option<Raw>, Option<Naive>), AdminError> {
    let b = Baseline {
        root: format!("{}/.bench/{}", network.prefix, network.name),
        clients: args.concurrency * args.processes,
        count: args.count,
        limit: Duration::from_secs_f64(args.baseline_secs),
    };
    let raw = if args.no_raw {
        None
    } else {
        Some(raw::run_raw(store.clone(), &b).await?)
    };
    let naive = match (args.no_naive, plan.set.ranges().first()) {
        (false, Some(range)) => {
            Some(naive::run_naive(store, &b, range.clone(), plan.prefill, args.release).await?)
        }
        _ => None,
    };
    Ok((raw, naive))
}

/// The report on `out`: pretty JSON with `--json`, else the text table.
fn write_report(report: &BenchReport, json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", human(report))?;
    }
    Ok(())
}

/// Splits `count` over `parts` as evenly as possible.
fn split(count: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| count / parts + usize::from(i < count % parts))
        .collect()
}
