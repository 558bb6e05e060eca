//! `ipamctl metrics`: the cluster figures of one or more networks in the
//! Prometheus text exposition format (version 0.0.4). [`exporter`](super::exporter)
//! serves them over HTTP. Run it once per cluster (one Deployment replica),
//! not on every node: the node agent exports each node's own figures.
//!
//! Every metric is named `host_etcd_ipam_*` (declared in the one metric
//! table, [`families::ipam`](super::families::ipam)), carries its base unit
//! in its name (`_bytes`, `_seconds`, `_ratio`) and has `HELP` and `TYPE`
//! lines; only counters end in `_total`. Per range (labels `network`,
//! `range_set`, `range`, `family`): size, used, free, utilization, stored
//! chunks and their bytes, all from the chunks' population counts: a
//! scrape costs O(chunks) (one range read per range), never O(owners).
//! Per network: the exporter's own health (`up`, scrape duration, scrape
//! errors), and, with `--check-interval`, the result of the last
//! consistency check (problems by `kind`, findings in flux, owner records,
//! when it ran): the check is a full scan and runs on its own interval,
//! never on a scrape.
//!
//! A scrape reads every network within a deadline; what fails is counted
//! in `host_etcd_ipam_scrape_errors_total`, reported once on stderr when
//! it starts (and when it recovers), and that network's `up` is 0. The
//! figures that could be read are still exported. Scrapes arriving while
//! one is computed share its result; `--cache-secs` reuses a result for a
//! while longer (both by the exporter's
//! [`ScrapeCache`](super::exporter::ScrapeCache)).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::cli::MetricsArgs;
use super::error::AdminError;
use super::exporter::Scrape;
use super::exposition::Samples;
use super::families::ipam::*;
use super::target::Target;
use crate::allocator::{Allocator, CheckReport, Problem, UsageMirror};
use crate::store::any::AnyStore;
use crate::store::Store;

/// Every `kind` of [`Problem`], as in `check --json` (each is exported,
/// zeros included, so an alert can compare against 0).
pub const PROBLEM_KINDS: [&str; 9] = [
    "corruptChunk",
    "corruptOwner",
    "corruptFullSet",
    "corruptMeta",
    "bitWithoutOwner",
    "ownerWithoutBit",
    "sharedAddress",
    "ownerNotIndexed",
    "staleIndexEntry",
];

/// The `kind` label of a problem.
pub fn problem_kind(p: &Problem) -> &'static str {
    match p {
        Problem::CorruptChunk { .. } => "corruptChunk",
        Problem::CorruptOwner { .. } => "corruptOwner",
        Problem::CorruptFullSet { .. } => "corruptFullSet",
        Problem::CorruptMeta { .. } => "corruptMeta",
        Problem::BitWithoutOwner { .. } => "bitWithoutOwner",
        Problem::OwnerWithoutBit { .. } => "ownerWithoutBit",
        Problem::SharedAddress { .. } => "sharedAddress",
        Problem::OwnerNotIndexed { .. } => "ownerNotIndexed",
        Problem::StaleIndexEntry { .. } => "staleIndexEntry",
    }
}

/// `used / size` as a ratio (0 for an empty range).
pub fn ratio(used: u128, size: u128) -> f64 {
    if size == 0 {
        0.0
    } else {
        used as f64 / size as f64
    }
}

/// One network being exported.
struct Source {
    target: Target,
    alloc: Mutex<Option<Arc<Allocator<AnyStore>>>>,
    /// The network's chunks as of the last scrape: a scrape reads only the
    /// chunks written since. Taken out while a scrape refreshes it and put
    /// back after, also when the scrape timed out midway (see `usage.rs`:
    /// such a copy is safe to go on with); a scrape running meanwhile
    /// starts from an empty one and reads every chunk.
    usage: Mutex<UsageMirror>,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The last check's report and when it finished (Unix seconds).
    checked: Mutex<Option<(CheckReport, f64)>>,
    check_errors: AtomicU64,
    reaped_nodes: AtomicU64,
    reaped_records: AtomicU64,
    reap_errors: AtomicU64,
}

/// What a scrape does.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeOptions {
    /// Answer a result again for this long (the exporter's
    /// [`ScrapeCache`](super::exporter::ScrapeCache)).
    pub cache: Duration,
    /// Run the consistency check (a full scan of the network) this often,
    /// apart from scrapes; `None`: never.
    pub check_interval: Option<Duration>,
    /// Deadline of each network's reads.
    pub timeout: Duration,
    /// The dead-node reaper, when on: node gone-after and pass interval.
    pub reap: Option<(Duration, Duration)>,
}

/// The figures of every network, computed on demand.
pub struct Collector {
    sources: Vec<Source>,
    options: ScrapeOptions,
}

impl Collector {
    /// A collector of these targets; refuses targets without ranges and
    /// two targets with the same network name (their series would clash).
    pub fn new(targets: Vec<Target>, options: ScrapeOptions) -> Result<Collector, AdminError> {
        let mut names = BTreeSet::new();
        for t in &targets {
            t.require_ranges("metrics")?;
            if !names.insert(t.network.name.clone()) {
                return Err(AdminError::Usage(format!(
                    "network {} is given twice; every exported network needs its own name",
                    t.network.name
                )));
            }
        }
        Ok(Collector {
            sources: targets
                .into_iter()
                .map(|target| Source {
                    target,
                    alloc: Mutex::new(None),
                    usage: Mutex::new(UsageMirror::default()),
                    errors: AtomicU64::new(0),
                    last_error: Mutex::new(None),
                    checked: Mutex::new(None),
                    check_errors: AtomicU64::new(0),
                    reaped_nodes: AtomicU64::new(0),
                    reaped_records: AtomicU64::new(0),
                    reap_errors: AtomicU64::new(0),
                })
                .collect(),
            options,
        })
    }

    /// The names of the exported networks.
    pub fn networks(&self) -> Vec<&str> {
        self.sources
            .iter()
            .map(|s| s.target.network.name.as_str())
            .collect()
    }

    /// The exposition text, read afresh from every network.
    pub async fn collect_all(&self) -> String {
        let mut samples = Samples::default();
        for source in &self.sources {
            self.collect(source, &mut samples).await;
        }
        samples.render()
    }

    async fn allocator(&self, source: &Source) -> Result<Arc<Allocator<AnyStore>>, String> {
        if let Some(a) = source.alloc.lock().map_err(|e| e.to_string())?.clone() {
            return Ok(a);
        }
        let a = Arc::new(source.target.open().await.map_err(|e| e.to_string())?);
        *source.alloc.lock().map_err(|e| e.to_string())? = Some(a.clone());
        Ok(a)
    }

    async fn collect(&self, source: &Source, out: &mut Samples) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let net = source.target.network.name.as_str();
        let mut errors: Vec<String> = Vec::new();
        let timed_out = || format!("no answer within {:?}", self.options.timeout);
        let alloc = match tokio::time::timeout_at(deadline, self.allocator(source)).await {
            Ok(Ok(a)) => Some(a),
            Ok(Err(e)) => {
                errors.push(format!("opening the store: {e}"));
                None
            }
            Err(_) => {
                errors.push(format!("opening the store: {}", timed_out()));
                None
            }
        };
        if let Some(alloc) = &alloc {
            let mut mirror = source
                .usage
                .lock()
                .map(|mut m| std::mem::take(&mut *m))
                .unwrap_or_default();
            let usage = collect_usage(&**alloc, net, &mut mirror, out);
            let answer = tokio::time::timeout_at(deadline, usage).await;
            if let Ok(mut m) = source.usage.lock() {
                *m = mirror;
            }
            match answer {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("usage: {e}")),
                Err(_) => errors.push(format!("usage: {}", timed_out())),
            }
        }
        if self.options.check_interval.is_some() {
            let checked = source.checked.lock().ok().and_then(|c| c.clone());
            if let Some((report, at)) = checked {
                add_check(out, net, &report, at);
            }
            out.add(
                &CHECK_ERRORS,
                &[net],
                source.check_errors.load(Ordering::Relaxed),
            );
        }
        if self.options.reap.is_some() {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            out.add(&REAPED_NODES, &[net], load(&source.reaped_nodes));
            out.add(&REAPED_RECORDS, &[net], load(&source.reaped_records));
            out.add(&REAP_ERRORS, &[net], load(&source.reap_errors));
        }
        let failed = !errors.is_empty();
        if failed {
            source.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.report(source, (!errors.is_empty()).then(|| errors.join("; ")));
        add_health(
            out,
            net,
            failed,
            started.elapsed(),
            source.errors.load(Ordering::Relaxed),
        );
    }

    /// Prints a network's error when it differs from the last one, and
    /// its recovery.
    fn report(&self, source: &Source, error: Option<String>) {
        let Ok(mut last) = source.last_error.lock() else {
            return;
        };
        let net = &source.target.network.name;
        match (&*last, &error) {
            (Some(a), Some(b)) if a == b => {}
            (_, Some(e)) => eprintln!("ipamctl metrics: network {net}: {e}"),
            (Some(_), None) => eprintln!("ipamctl metrics: network {net}: scrapes succeed again"),
            (None, None) => {}
        }
        *last = error;
    }
}

/// Reads one network's range figures into `out`: from `mirror`, the
/// network's chunks as of the last scrape, after reading the chunks
/// written since (one call for every range when they fit in a page,
/// whatever the number of chunks or owners).
pub async fn collect_usage<S: Store>(
    alloc: &Allocator<S>,
    net: &str,
    mirror: &mut UsageMirror,
    out: &mut Samples,
) -> Result<(), crate::allocator::AllocError> {
    for u in &alloc.usage_tracked(mirror).await? {
        let set = u.set.to_string();
        let range = format!("{}-{}", u.start, u.end);
        let family = if u.start.is_ipv4() { "ipv4" } else { "ipv6" };
        let l = [net, set.as_str(), range.as_str(), family];
        out.add(&ADDRESSES_SIZE, &l, u.size);
        out.add(&ADDRESSES_USED, &l, u.used);
        out.add(&ADDRESSES_FREE, &l, u.size.saturating_sub(u.used));
        out.add(&UTILIZATION, &l, ratio(u.used, u.size));
        out.add(&CHUNKS, &l, u.chunks);
        out.add(&CHUNK_BYTES, &l, u.bytes);
    }
    Ok(())
}

/// Adds the figures of a finished check (at `at`, Unix seconds).
fn add_check(out: &mut Samples, net: &str, report: &CheckReport, at: f64) {
    for kind in PROBLEM_KINDS {
        let n = report
            .problems
            .iter()
            .filter(|p| problem_kind(p) == kind)
            .count();
        out.add(&CHECK_PROBLEMS, &[net, kind], n);
    }
    out.add(&CHECK_IN_FLUX, &[net], report.in_flux);
    out.add(&OWNER_RECORDS, &[net], report.owners);
    out.add(&CHECK_TIMESTAMP, &[net], at);
}

impl Scrape for Collector {
    fn scrape(&self) -> impl std::future::Future<Output = String> + Send {
        self.collect_all()
    }

    fn reuse_for(&self) -> Duration {
        self.options.cache
    }
}

impl Collector {
    /// Runs the dead-node reaper ([`super::reap`]) every interval, the
    /// grace counted from this start and from the last failed pass;
    /// never returns while it is on (spawn it). Each reaped node is
    /// logged on stderr and counted per network.
    pub async fn run_reaper(self: Arc<Self>) {
        let Some((gone_after, every)) = self.options.reap else {
            return;
        };
        let source_of = |net: &str| self.sources.iter().find(|s| s.target.network.name == net);
        let mut passes = super::reap::Passes::new(gone_after, false);
        loop {
            let mut allocs = Vec::new();
            let mut failed = false;
            for source in &self.sources {
                match self.allocator(source).await {
                    Ok(a) => allocs.push((format!("{:?}", source.target.store), a)),
                    Err(e) => {
                        failed = true;
                        source.reap_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("ipamctl metrics: reaper: {e}");
                    }
                }
            }
            let groups = super::reap::groups(allocs);
            for (group, result) in groups.iter().zip(passes.run(&groups, failed).await) {
                match result {
                    Ok(outcomes) => {
                        for o in outcomes.iter().filter(|o| o.action == "reaped") {
                            for (net, n) in &o.released {
                                if let Some(s) = source_of(net) {
                                    s.reaped_nodes.fetch_add(1, Ordering::Relaxed);
                                    s.reaped_records.fetch_add(*n, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        for a in &group.allocs {
                            if let Some(s) = source_of(&a.network().name) {
                                s.reap_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        eprintln!("ipamctl metrics: reaper pass failed (the grace restarts): {e}");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Runs the consistency check of every network every `check_interval`
    /// (the first right away), keeping each result for the scrapes; never
    /// returns while checks are on (spawn it). A check failure is counted
    /// and reported on stderr; the last good result stays exported with
    /// its time.
    pub async fn run_checks(self: Arc<Self>) {
        let Some(every) = self.options.check_interval else {
            return;
        };
        loop {
            for source in &self.sources {
                let net = &source.target.network.name;
                let result = match self.allocator(source).await {
                    Ok(alloc) => alloc.check().await.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("opening the store: {e}")),
                };
                match result {
                    Ok(report) => {
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        if let Ok(mut c) = source.checked.lock() {
                            *c = Some((report, at));
                        }
                    }
                    Err(e) => {
                        source.check_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("ipamctl metrics: network {net}: check failed: {e}");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Adds a network's exporter health: `up` (0 when `failed`), the scrape
/// duration, and the failed scrapes so far.
pub fn add_health(out: &mut Samples, net: &str, failed: bool, took: Duration, errors_total: u64) {
    out.add(&UP, &[net], u64::from(!failed));
    out.add(&SCRAPE_DURATION, &[net], took.as_secs_f64());
    out.add(&SCRAPE_ERRORS, &[net], errors_total);
}

/// A flag given in seconds: finite, within `min..=86400`.
fn secs(flag: &str, v: f64, min: f64) -> Result<Duration, AdminError> {
    if !v.is_finite() || v < min || v > 86_400.0 {
        return Err(AdminError::Usage(format!(
            "{flag} {v}: must be a number of seconds in {min}..=86400"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `ipamctl metrics`: resolves every network, binds `--listen`, prints
/// the address it serves on, and serves until killed.
pub async fn metrics_command(
    targets: Vec<Target>,
    args: &MetricsArgs,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let options = ScrapeOptions {
        cache: secs("--cache-secs", args.cache_secs, 0.0)?,
        check_interval: match args.check_interval_secs {
            None => None,
            Some(v) => Some(secs("--check-interval-secs", v, 1.0)?),
        },
        timeout: secs("--scrape-timeout-secs", args.scrape_timeout_secs, 0.001)?,
        reap: match args.reap_after {
            None => None,
            Some(after) if after.is_zero() || args.reap_interval.is_zero() => {
                return Err(AdminError::Usage(
                    "--reap-after and --reap-interval must be more than 0".into(),
                ))
            }
            Some(after) => Some((after, args.reap_interval)),
        },
    };
    let client_timeout = secs("--client-timeout-secs", args.client_timeout_secs, 0.001)?;
    let collector = Arc::new(Collector::new(targets, options)?);
    tokio::spawn(collector.clone().run_checks());
    tokio::spawn(collector.clone().run_reaper());
    let listener = TcpListener::bind(args.listen.as_str())
        .await
        .map_err(|source| AdminError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AdminError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    writeln!(
        out,
        "serving metrics of network {} on http://{local}/metrics",
        collector.networks().join(", ")
    )?;
    out.flush()?;
    super::exporter::serve(listener, collector, client_timeout).await;
    Ok(super::error::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(ratio(1, 4), 0.25);
        assert_eq!(ratio(0, 0), 0.0);
    }

    #[test]
    fn every_problem_has_its_kind_once() {
        let kinds: BTreeSet<&str> = PROBLEM_KINDS.into_iter().collect();
        assert_eq!(kinds.len(), PROBLEM_KINDS.len());
    }
}
