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
//! [`Allocator`] over one shared [`CountingStore`], so the report carries
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

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::cli::{BenchArgs, TargetArgs};
use super::error::{AdminError, EXIT_OK};
use super::naive::NaiveAllocator;
use super::target::{open_store, subnet_set, Target};
use crate::allocator::{
    node_seed_from, AllocRequest, Allocator, GroupCommit, Network, Options, OwnerId,
};
use crate::cni::config::StoreConf;
use crate::store::any::AnyStore;
use crate::store::counting::CountingStore;
use crate::store::{Compare, Expect, Op, Store, Txn, TxnOutcome};

/// The range benchmarked when neither `--config` nor `--subnet` gives one.
pub const DEFAULT_BENCH_SUBNET: &str = "10.128.0.0/16";

/// Network name used when none is given.
pub const DEFAULT_BENCH_NETWORK: &str = "bench";

/// Requests per `allocate_batch` call while prefilling.
const PREFILL_CALL: usize = 1000;

/// Bytes of each raw compare-and-swap value.
const RAW_VALUE_BYTES: usize = 128;

type Shared = Arc<CountingStore<Arc<AnyStore>>>;

/// Latency figures, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// Percentiles of samples in microseconds (sorted here).
    pub fn of(samples: &mut [u32]) -> Latency {
        samples.sort_unstable();
        let at = |q: usize| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = (samples.len() * q / 100).min(samples.len() - 1);
            f64::from(samples[i]) / 1000.0
        };
        Latency {
            p50: at(50),
            p99: at(99),
            max: samples.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        }
    }
}

/// Figures of this allocator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ours {
    /// Allocations that succeeded.
    pub allocations: u64,
    /// Operations that failed (allocations or releases).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Measured time, seconds.
    pub secs: f64,
    /// Allocations per second.
    pub allocations_per_sec: f64,
    /// Allocation latency.
    pub latency_ms: Latency,
    /// Read round trips.
    pub reads: u64,
    /// Transactions.
    pub txns: u64,
    /// `(txns − operations) / allocations`.
    pub cas_retries_per_allocation: f64,
    /// `(reads + txns) / allocations`.
    pub round_trips_per_allocation: f64,
    /// Key and value bytes of every put and delete sent.
    pub bytes_written: u64,
    /// `bytes_written / allocations`.
    pub bytes_written_per_allocation: f64,
}

/// Figures of the raw compare-and-swap reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Raw {
    /// Transactions committed.
    pub txns: u64,
    /// Transactions that failed or conflicted.
    pub errors: u64,
    /// Measured time, seconds.
    pub secs: f64,
    /// Committed transactions per second.
    pub txns_per_sec: f64,
    /// Transaction latency.
    pub latency_ms: Latency,
}

/// Figures of the naive one-key-per-IP baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Naive {
    /// Addresses taken before measuring (the first ones of the range).
    pub prefilled: u64,
    /// Allocations completed within the time limit.
    pub allocations: u64,
    /// Transactions sent (probes), completed allocations or not.
    pub probes: u64,
    /// Store errors.
    pub errors: u64,
    /// Measured time, seconds.
    pub secs: f64,
    /// Probes per second.
    pub probes_per_sec: f64,
    /// Probes per completed allocation (or `prefilled + 1` when estimated).
    pub probes_per_allocation: f64,
    /// Allocations per second (measured, or estimated).
    pub allocations_per_sec: f64,
    /// Whether `allocations_per_sec` is the estimate (nothing completed).
    pub estimated: bool,
    /// Allocation latency of the completed ones.
    pub latency_ms: Latency,
}

/// The report of one `bench` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Network name.
    pub network: String,
    /// The benchmarked range set's subnets.
    pub subnets: Vec<String>,
    /// Addresses in the range set.
    pub range_size: u128,
    /// k.
    pub chunk_bits: u8,
    /// Clients per process.
    pub concurrency: usize,
    /// Processes.
    pub processes: usize,
    /// Allocations asked for.
    pub count: usize,
    /// Fill ratio asked for before measuring.
    pub prefill_ratio: f64,
    /// Addresses allocated before measuring.
    pub prefilled: u64,
    /// Prefill time, seconds.
    pub prefill_secs: f64,
    /// Alloc+release loop.
    pub release: bool,
    /// All clients shared one node seed.
    pub same_node: bool,
    /// All clients of a process shared one group-committing allocator.
    #[serde(default)]
    pub group: bool,
    /// This allocator.
    pub ours: Ours,
    /// The raw compare-and-swap limit (absent with `--no-raw`).
    pub raw: Option<Raw>,
    /// The naive baseline (absent with `--no-naive`).
    pub naive: Option<Naive>,
    /// `ours.allocations_per_sec / raw.txns_per_sec`.
    pub ratio_to_raw: Option<f64>,
    /// `ours.allocations_per_sec / naive.allocations_per_sec`.
    pub ratio_to_naive: Option<f64>,
}

/// What one worker process reports to its parent (JSON on stdout).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Allocations that succeeded.
    pub allocations: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Allocation latencies, microseconds.
    pub latencies_us: Vec<u32>,
    /// Reads sent.
    pub reads: u64,
    /// Transactions sent.
    pub txns: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Start of the measured loop, microseconds since the Unix epoch.
    pub start_us: u64,
    /// End of the measured loop, microseconds since the Unix epoch.
    pub end_us: u64,
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn per(n: f64, d: f64) -> f64 {
    if d > 0.0 {
        n / d
    } else {
        0.0
    }
}

fn progress(len: u64, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
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

fn seed_of(same_node: bool, worker: usize, client: usize) -> u64 {
    if same_node {
        node_seed_from("bench-node")
    } else {
        node_seed_from(&format!("bench-node-{worker}-{client}"))
    }
}

/// One bench client: its own allocator, or a share of a group-committing one.
enum Client {
    Own(Box<Allocator<Shared>>),
    Group(GroupCommit<Shared>),
}

impl Client {
    async fn allocate(&self, req: &AllocRequest) -> Result<(), crate::allocator::AllocError> {
        match self {
            Client::Own(a) => a.allocate(req).await.map(|_| ()),
            Client::Group(g) => g.allocate(req.clone()).await.map(|_| ()),
        }
    }

    async fn release(&self, owner: &OwnerId) -> Result<(), crate::allocator::AllocError> {
        match self {
            Client::Own(a) => a.release(owner).await.map(|_| ()),
            Client::Group(g) => g.release(owner).await.map(|_| ()),
        }
    }
}

/// Runs `count` allocations over `concurrency` tasks on `store`.
#[allow(clippy::too_many_arguments)]
async fn run_ours(
    store: &Shared,
    network: &Network,
    options: &Options,
    args: &BenchArgs,
    worker: usize,
    count: usize,
    pb: &ProgressBar,
) -> Result<WorkerResult, AdminError> {
    store.reset();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let start_us = epoch_us();
    let grouped = if args.group {
        let alloc = Allocator::new(
            store.clone(),
            network.clone(),
            Options {
                node_seed: seed_of(true, worker, 0),
                ..options.clone()
            },
        )?;
        Some(GroupCommit::new(Arc::new(alloc)))
    } else {
        None
    };
    for client in 0..args.concurrency.max(1) {
        let alloc = match &grouped {
            Some(g) => Client::Group(g.clone()),
            None => Client::Own(Box::new(Allocator::new(
                store.clone(),
                network.clone(),
                Options {
                    node_seed: seed_of(args.same_node, worker, client),
                    ..options.clone()
                },
            )?)),
        };
        let next = next.clone();
        let pb = pb.clone();
        let release = args.release;
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let owner = OwnerId {
                    container_id: format!("bench-{worker}-{i}"),
                    ifname: "eth0".into(),
                };
                let req = AllocRequest {
                    owner: owner.clone(),
                    ..AllocRequest::default()
                };
                let t = Instant::now();
                match alloc.allocate(&req).await {
                    Ok(_) => {
                        out.latencies_us.push(micros(t.elapsed()));
                        out.allocations += 1;
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
                if release {
                    if let Err(e) = alloc.release(&owner).await {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
                pb.inc(1);
            }
            out
        }));
    }
    let mut total = WorkerResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| AdminError::Worker {
            index: worker,
            detail: format!("client task failed: {e}"),
        })?;
        total.allocations += r.allocations;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        total.latencies_us.extend(r.latencies_us);
    }
    total.end_us = epoch_us();
    total.start_us = start_us;
    total.reads = store.reads();
    total.txns = store.txns();
    total.bytes_written = store.bytes_written();
    Ok(total)
}

/// Re-executes this binary once per entry of `per_worker` (that many
/// allocations each) and merges the workers' results.
async fn run_processes(network: &str, per_worker: &[usize]) -> Result<WorkerResult, AdminError> {
    let exe = std::env::current_exe()?;
    let base: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut waits = Vec::new();
    for (index, n) in per_worker.iter().enumerate() {
        let child = std::process::Command::new(&exe)
            .args(&base)
            .args(["--count", &n.to_string()])
            .args(["--worker", &index.to_string()])
            .args(["--worker-network", network])
            .arg("--json")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // One blocking waiter per child, so no child stalls on a full pipe.
        waits.push(tokio::task::spawn_blocking(move || {
            child.wait_with_output()
        }));
    }
    let mut merged = WorkerResult {
        start_us: u64::MAX,
        ..WorkerResult::default()
    };
    for (index, wait) in waits.into_iter().enumerate() {
        let out = wait.await.map_err(|e| AdminError::Worker {
            index,
            detail: e.to_string(),
        })??;
        if !out.status.success() {
            return Err(AdminError::Worker {
                index,
                detail: format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let r: WorkerResult =
            serde_json::from_slice(&out.stdout).map_err(|e| AdminError::Worker {
                index,
                detail: format!("unreadable result: {e}"),
            })?;
        merged.allocations += r.allocations;
        merged.errors += r.errors;
        if merged.first_error.is_none() {
            merged.first_error = r.first_error;
        }
        merged.latencies_us.extend(r.latencies_us);
        merged.reads += r.reads;
        merged.txns += r.txns;
        merged.bytes_written += r.bytes_written;
        merged.start_us = merged.start_us.min(r.start_us);
        merged.end_us = merged.end_us.max(r.end_us);
    }
    Ok(merged)
}

/// Bare compare-and-swap transactions: each client owns one key.
async fn run_raw(
    store: Arc<AnyStore>,
    root: &str,
    clients: usize,
    count: usize,
    limit: Duration,
) -> Result<Raw, AdminError> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::new();
    for client in 0..clients.max(1) {
        let store = store.clone();
        let next = next.clone();
        let key = format!("{root}/raw/{client}");
        tasks.push(tokio::spawn(async move {
            let value = vec![b'x'; RAW_VALUE_BYTES];
            let mut rev: Option<i64> = None;
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                let txn = Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        expect: rev.map_or(Expect::Absent, Expect::ModRevision),
                    }],
                    ops: vec![Op::Put(key.clone(), value.clone())],
                    read_on_conflict: vec![key.clone()],
                };
                let t = Instant::now();
                match store.txn(txn).await {
                    Ok(TxnOutcome::Committed { revision }) => {
                        lat.push(micros(t.elapsed()));
                        ok += 1;
                        rev = Some(revision);
                    }
                    Ok(TxnOutcome::Conflict { current }) => {
                        errors += 1;
                        rev = current
                            .into_iter()
                            .next()
                            .and_then(|(_, v)| v.map(|v| v.mod_revision));
                    }
                    Err(_) => errors += 1,
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut raw = Raw::default();
    let mut lat = Vec::new();
    for t in tasks {
        let (ok, errors, l) = t.await.map_err(|e| AdminError::Worker {
            index: 0,
            detail: format!("raw client task failed: {e}"),
        })?;
        raw.txns += ok;
        raw.errors += errors;
        lat.extend(l);
    }
    raw.secs = start.elapsed().as_secs_f64();
    raw.txns_per_sec = per(raw.txns as f64, raw.secs);
    raw.latency_ms = Latency::of(&mut lat);
    Ok(raw)
}

/// The naive baseline: prefill `prefilled` addresses, then `count`
/// allocations over `clients` tasks within `limit`.
#[allow(clippy::too_many_arguments)]
async fn run_naive(
    store: Arc<AnyStore>,
    root: &str,
    range: crate::range::Range,
    prefilled: usize,
    clients: usize,
    count: usize,
    release: bool,
    limit: Duration,
) -> Result<Naive, AdminError> {
    let naive = Arc::new(NaiveAllocator::new(store, &format!("{root}/naive"), range));
    naive.prefill(prefilled).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::new();
    for client in 0..clients.max(1) {
        let naive = naive.clone();
        let next = next.clone();
        let probes = probes.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                let t = Instant::now();
                let owner = format!("naive-{client}");
                match naive
                    .allocate(&owner, &probes, || Instant::now() < deadline)
                    .await
                {
                    Ok(Some(a)) => {
                        lat.push(micros(t.elapsed()));
                        ok += 1;
                        if release && naive.release(a.ip).await.is_err() {
                            errors += 1;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => errors += 1,
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut out = Naive {
        prefilled: prefilled as u64,
        ..Naive::default()
    };
    let mut lat = Vec::new();
    for t in tasks {
        let (ok, errors, l) = t.await.map_err(|e| AdminError::Worker {
            index: 0,
            detail: format!("naive client task failed: {e}"),
        })?;
        out.allocations += ok;
        out.errors += errors;
        lat.extend(l);
    }
    out.secs = start.elapsed().as_secs_f64();
    out.probes = probes.load(Ordering::Relaxed);
    out.probes_per_sec = per(out.probes as f64, out.secs);
    if out.allocations > 0 {
        out.probes_per_allocation = per(out.probes as f64, out.allocations as f64);
        out.allocations_per_sec = per(out.allocations as f64, out.secs);
    } else {
        out.estimated = true;
        out.probes_per_allocation = prefilled as f64 + 1.0;
        out.allocations_per_sec = per(out.probes_per_sec, out.probes_per_allocation);
    }
    out.latency_ms = Latency::of(&mut lat);
    Ok(out)
}

/// Splits `count` over `parts` as evenly as possible.
fn split(count: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| count / parts + usize::from(i < count % parts))
        .collect()
}

/// `bench`.
pub async fn run(
    targs: &TargetArgs,
    args: &BenchArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
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
    let target = bench_target(targs, args)?;
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
    let inner = Arc::new(open_store(&target.store).await?);
    let network = target.checked_network(&inner).await?;
    let store: Shared = Arc::new(CountingStore::new(inner.clone()));

    if let Some(worker) = args.worker {
        let r = run_ours(
            &store,
            &network,
            &target.options,
            args,
            worker,
            args.count,
            &ProgressBar::hidden(),
        )
        .await?;
        let text = serde_json::to_string(&r).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
        return Ok(EXIT_OK);
    }

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
    let show = !json && std::io::stderr().is_terminal();

    // Prefill with batches (50 owners per transaction).
    let prefill_start = Instant::now();
    if prefill > 0 {
        let alloc = Allocator::new(store.clone(), network.clone(), target.options.clone())?;
        let pb = progress(prefill as u64, show, "prefill");
        let mut done = 0;
        while done < prefill {
            let n = PREFILL_CALL.min(prefill - done);
            let reqs: Vec<AllocRequest> = (done..done + n)
                .map(|i| AllocRequest {
                    owner: OwnerId {
                        container_id: format!("prefill-{i}"),
                        ifname: "eth0".into(),
                    },
                    ..AllocRequest::default()
                })
                .collect();
            alloc.allocate_batch(&reqs).await?;
            done += n;
            pb.set_position(done as u64);
        }
        pb.finish_and_clear();
    }
    let prefill_secs = prefill_start.elapsed().as_secs_f64();

    // Ours.
    let r = if args.processes > 1 {
        run_processes(&network.name, &split(args.count, args.processes)).await?
    } else {
        let pb = progress(args.count as u64, show, "ours");
        let r = run_ours(&store, &network, &target.options, args, 0, args.count, &pb).await?;
        pb.finish_and_clear();
        r
    };
    let mut lat = r.latencies_us;
    let secs = r.end_us.saturating_sub(r.start_us) as f64 / 1e6;
    let operations = r.allocations * if args.release { 2 } else { 1 };
    let allocs = r.allocations as f64;
    let ours = Ours {
        allocations: r.allocations,
        errors: r.errors,
        first_error: r.first_error,
        secs,
        allocations_per_sec: per(allocs, secs),
        latency_ms: Latency::of(&mut lat),
        reads: r.reads,
        txns: r.txns,
        cas_retries_per_allocation: per(r.txns.saturating_sub(operations) as f64, allocs),
        round_trips_per_allocation: per((r.reads + r.txns) as f64, allocs),
        bytes_written: r.bytes_written,
        bytes_written_per_allocation: per(r.bytes_written as f64, allocs),
    };

    // References on the same store, outside the network's keyspace.
    let root = format!("{}/.bench/{}", network.prefix, network.name);
    let clients = args.concurrency * args.processes;
    let limit = Duration::from_secs_f64(args.baseline_secs);
    // etcd: a connection of their own; the embedded store: the same handle.
    let raw_store = if embedded {
        inner
    } else {
        Arc::new(open_store(&target.store).await?)
    };
    let raw = if args.no_raw {
        None
    } else {
        Some(run_raw(raw_store.clone(), &root, clients, args.count, limit).await?)
    };
    let naive = match (args.no_naive, set.ranges().first()) {
        (false, Some(range)) => Some(
            run_naive(
                raw_store,
                &root,
                range.clone(),
                prefill,
                clients,
                args.count,
                args.release,
                limit,
            )
            .await?,
        ),
        _ => None,
    };
    let ratio = |d: f64| (d > 0.0).then(|| ours.allocations_per_sec / d);
    let report = BenchReport {
        network: network.name.clone(),
        subnets: set.ranges().iter().map(|r| r.subnet.to_string()).collect(),
        range_size,
        chunk_bits: network.chunk_bits,
        concurrency: args.concurrency,
        processes: args.processes,
        count: args.count,
        prefill_ratio: args.prefill,
        prefilled: prefill as u64,
        prefill_secs,
        release: args.release,
        same_node: args.same_node,
        group: args.group,
        ratio_to_raw: raw.as_ref().and_then(|r| ratio(r.txns_per_sec)),
        ratio_to_naive: naive.as_ref().and_then(|n| ratio(n.allocations_per_sec)),
        ours,
        raw,
        naive,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", human(&report))?;
    }
    Ok(EXIT_OK)
}

/// The report as text.
pub fn human(r: &BenchReport) -> String {
    use super::table::Table;
    let mut s = format!(
        "network {} ({}, {} addresses), k={}, {} clients x {} processes, {} allocations{}, prefilled {} ({:.0}%) in {:.1}s{}\n",
        r.network,
        r.subnets.join(","),
        r.range_size,
        r.chunk_bits,
        r.concurrency,
        r.processes,
        r.count,
        if r.release { " (alloc+release)" } else { "" },
        r.prefilled,
        r.prefill_ratio * 100.0,
        r.prefill_secs,
        if r.same_node { ", one node seed" } else { "" },
    );
    let mut t = Table::new(&["", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"]);
    let o = &r.ours;
    t.row(vec![
        "ours (allocations)".into(),
        o.allocations.to_string(),
        format!("{:.0}", o.allocations_per_sec),
        format!("{:.2}", o.latency_ms.p50),
        format!("{:.2}", o.latency_ms.p99),
        format!("{:.2}", o.latency_ms.max),
        o.errors.to_string(),
    ]);
    if let Some(raw) = &r.raw {
        t.row(vec![
            "raw CAS (txns)".into(),
            raw.txns.to_string(),
            format!("{:.0}", raw.txns_per_sec),
            format!("{:.2}", raw.latency_ms.p50),
            format!("{:.2}", raw.latency_ms.p99),
            format!("{:.2}", raw.latency_ms.max),
            raw.errors.to_string(),
        ]);
    }
    if let Some(n) = &r.naive {
        t.row(vec![
            format!(
                "naive (allocations{})",
                if n.estimated { ", estimated" } else { "" }
            ),
            n.allocations.to_string(),
            format!("{:.2}", n.allocations_per_sec),
            format!("{:.2}", n.latency_ms.p50),
            format!("{:.2}", n.latency_ms.p99),
            format!("{:.2}", n.latency_ms.max),
            n.errors.to_string(),
        ]);
    }
    s.push_str(&t.render());
    s.push_str(&format!(
        "CAS retries/allocation {:.3}, round trips/allocation {:.2}, bytes written/allocation {:.0} ({} total)\n",
        o.cas_retries_per_allocation,
        o.round_trips_per_allocation,
        o.bytes_written_per_allocation,
        o.bytes_written
    ));
    if let Some(x) = r.ratio_to_raw {
        s.push_str(&format!("ours / raw CAS: {:.1}%\n", x * 100.0));
    }
    if let Some(x) = r.ratio_to_naive {
        s.push_str(&format!("ours / naive: {x:.1}x\n"));
    }
    if let Some(e) = &o.first_error {
        s.push_str(&format!("first error: {e}\n"));
    }
    s
}
