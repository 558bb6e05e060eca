//! `ipamctl metrics`: the cluster figures of one or more networks in the
//! Prometheus text exposition format (version 0.0.4). [`exporter`](super::exporter)
//! serves them over HTTP. Run it once per cluster (one Deployment replica),
//! not on every node: the node agent exports each node's own figures.
//!
//! Every metric is named `host_etcd_ipam_*`, carries its base unit in its
//! name (`_bytes`, `_seconds`, `_ratio`) and has `HELP` and `TYPE` lines;
//! only counters end in `_total`. Per range (labels `network`,
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
//! while longer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::AdminError;
use super::target::Target;
use crate::allocator::{Allocator, CheckReport, Problem};
use crate::store::any::AnyStore;
use crate::store::Store;

/// Prefix of every metric name.
pub const PREFIX: &str = "host_etcd_ipam_";

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

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (name ends in `_total`).
    Counter,
    /// Observations counted in cumulative buckets (`_bucket{le=...}`,
    /// `_sum`, `_count`; see [`Histogram`]).
    Histogram,
}

/// One metric family: name (without [`PREFIX`]), help, type.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    /// Name after the prefix.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// The `HELP` text.
    pub help: &'static str,
}

const RANGE_LABELS: &[&str] = &["network", "range_set", "range", "family"];
const NET_LABELS: &[&str] = &["network"];

/// Allocatable addresses of a range.
pub const ADDRESSES_SIZE: Def = Def {
    name: "addresses_size",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Addresses in the range (rangeStart..rangeEnd).",
};
/// Addresses marked taken.
pub const ADDRESSES_USED: Def = Def {
    name: "addresses_used",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Addresses of the range marked taken in the stored chunks.",
};
/// Addresses not taken.
pub const ADDRESSES_FREE: Def = Def {
    name: "addresses_free",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Addresses of the range not taken (size - used).",
};
/// used / size.
pub const UTILIZATION: Def = Def {
    name: "utilization_ratio",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Used addresses of the range over its size (0..1).",
};
/// Stored chunks overlapping a range.
pub const CHUNKS: Def = Def {
    name: "chunks_stored",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Stored bitmap chunks overlapping the range.",
};
/// Bytes of those chunks.
pub const CHUNK_BYTES: Def = Def {
    name: "chunks_stored_bytes",
    kind: Kind::Gauge,
    labels: RANGE_LABELS,
    help: "Bytes of the stored values of the chunks overlapping the range.",
};
/// Owner records of a network, as the last check counted them.
pub const OWNER_RECORDS: Def = Def {
    name: "owner_records",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "Owner records (container interfaces holding addresses) the last consistency check read.",
};
/// Problems found by `check`.
pub const CHECK_PROBLEMS: Def = Def {
    name: "check_problems",
    kind: Kind::Gauge,
    labels: &["network", "kind"],
    help: "Inconsistencies the consistency check (ipamctl check) finds, by kind.",
};
/// Findings in flux.
pub const CHECK_IN_FLUX: Def = Def {
    name: "check_in_flux",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "Check findings whose chunk changed during the check (concurrent writes).",
};
/// When the last check finished.
pub const CHECK_TIMESTAMP: Def = Def {
    name: "check_last_run_timestamp_seconds",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "Unix time at which the last consistency check of the network finished.",
};
/// Failed checks.
pub const CHECK_ERRORS: Def = Def {
    name: "check_errors_total",
    kind: Kind::Counter,
    labels: NET_LABELS,
    help: "Consistency checks of the network that could not read the store.",
};
/// Nodes reaped.
pub const REAPED_NODES: Def = Def {
    name: "reaped_nodes_total",
    kind: Kind::Counter,
    labels: NET_LABELS,
    help: "Dead nodes whose owner records of the network the reaper released (--reap-after).",
};
/// Records released by the reaper.
pub const REAPED_RECORDS: Def = Def {
    name: "reaped_owner_records_total",
    kind: Kind::Counter,
    labels: NET_LABELS,
    help: "Owner records of dead nodes the reaper released (--reap-after).",
};
/// Failed reaper passes.
pub const REAP_ERRORS: Def = Def {
    name: "reap_errors_total",
    kind: Kind::Counter,
    labels: NET_LABELS,
    help: "Reaper passes over the network's store that failed (the grace then starts again).",
};
/// Whether the last scrape read everything.
pub const UP: Def = Def {
    name: "up",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "1 if the last scrape read all figures of the network from the store, else 0.",
};
/// Scrape duration.
pub const SCRAPE_DURATION: Def = Def {
    name: "scrape_duration_seconds",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "Seconds the last scrape of the network took.",
};
/// Failed scrapes.
pub const SCRAPE_ERRORS: Def = Def {
    name: "scrape_errors_total",
    kind: Kind::Counter,
    labels: NET_LABELS,
    help: "Scrapes of the network in which some figure could not be read.",
};

/// Every metric family, in output order.
pub const ALL: [Def; 17] = [
    ADDRESSES_SIZE,
    ADDRESSES_USED,
    ADDRESSES_FREE,
    UTILIZATION,
    CHUNKS,
    CHUNK_BYTES,
    OWNER_RECORDS,
    CHECK_PROBLEMS,
    CHECK_IN_FLUX,
    CHECK_TIMESTAMP,
    CHECK_ERRORS,
    REAPED_NODES,
    REAPED_RECORDS,
    REAP_ERRORS,
    UP,
    SCRAPE_DURATION,
    SCRAPE_ERRORS,
];

/// One sample line: a name suffix (`_bucket`, ... for histograms), label
/// pairs, the value.
type Line = (&'static str, Vec<(&'static str, String)>, String);

/// Samples being gathered, per family.
#[derive(Debug, Default)]
pub struct Samples {
    by_name: BTreeMap<&'static str, Vec<Line>>,
}

impl Samples {
    /// Adds a sample; `labels` are the values of `def.labels`, in order.
    pub fn add(&mut self, def: &Def, labels: &[&str], value: impl Into<Value>) {
        debug_assert_eq!(labels.len(), def.labels.len(), "{}", def.name);
        self.by_name.entry(def.name).or_default().push((
            "",
            def.labels
                .iter()
                .copied()
                .zip(labels.iter().map(|l| l.to_string()))
                .collect(),
            value.into().0,
        ));
    }

    /// Adds the lines of one histogram (`def` of kind
    /// [`Kind::Histogram`]): a cumulative `_bucket` per bound and `+Inf`,
    /// `_sum` and `_count`.
    pub fn add_histogram(&mut self, def: &Def, labels: &[&str], h: &HistogramSnapshot) {
        debug_assert_eq!(labels.len(), def.labels.len(), "{}", def.name);
        let pairs: Vec<(&'static str, String)> = def
            .labels
            .iter()
            .copied()
            .zip(labels.iter().map(|l| l.to_string()))
            .collect();
        let lines = self.by_name.entry(def.name).or_default();
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
            cumulative += n;
            let mut l = pairs.clone();
            l.push(("le", Value::from(*bound).0));
            lines.push(("_bucket", l, cumulative.to_string()));
        }
        let mut l = pairs.clone();
        l.push(("le", "+Inf".into()));
        lines.push(("_bucket", l, h.count.to_string()));
        lines.push(("_sum", pairs.clone(), Value::from(h.sum_secs).0));
        lines.push(("_count", pairs, h.count.to_string()));
    }

    /// The exposition text: for every family with samples, `# HELP`,
    /// `# TYPE` and one line per sample.
    ///
    /// ```
    /// use host_etcd::admin::metrics::{Samples, UP};
    ///
    /// let mut s = Samples::default();
    /// s.add(&UP, &["net\"1"], 1u64);
    /// assert_eq!(
    ///     s.render(),
    ///     "# HELP host_etcd_ipam_up 1 if the last scrape read all figures of the network \
    ///      from the store, else 0.\n# TYPE host_etcd_ipam_up gauge\n\
    ///      host_etcd_ipam_up{network=\"net\\\"1\"} 1\n"
    /// );
    /// ```
    pub fn render(&self) -> String {
        self.render_families(PREFIX, &ALL)
    }

    /// [`render`](Self::render) of other families: `defs` in this order,
    /// each name after `prefix` (the node agent's `host_etcd_agent_*`).
    pub fn render_families(&self, prefix: &str, defs: &[Def]) -> String {
        let mut out = String::new();
        for def in defs {
            let Some(samples) = self.by_name.get(def.name) else {
                continue;
            };
            let kind = match def.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {prefix}{} {}", def.name, escape_help(def.help));
            let _ = writeln!(out, "# TYPE {prefix}{} {kind}", def.name);
            for (suffix, pairs, value) in samples {
                let _ = write!(out, "{prefix}{}{suffix}", def.name);
                if !pairs.is_empty() {
                    out.push('{');
                    for (i, (name, v)) in pairs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{name}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

/// Upper bounds (seconds) of the [`Histogram`] buckets: 1 ms to 10 s, the
/// span of one CNI command (its budget is 10 s by default).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations observed, in the fixed [`BUCKETS`] (lock-free: one atomic add
/// per observation).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// What a [`Histogram`] holds at one moment (per-bucket counts, not
/// cumulative).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (those above the last bound are only in
    /// `count`).
    pub buckets: [u64; BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_secs: f64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A sample value as exposition text.
#[derive(Clone, Debug, PartialEq)]
pub struct Value(String);

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value(v.to_string())
    }
}

impl From<u128> for Value {
    fn from(v: u128) -> Self {
        Value(v.to_string())
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value(v.to_string())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value(if v.is_nan() {
            "NaN".into()
        } else if v == f64::INFINITY {
            "+Inf".into()
        } else if v == f64::NEG_INFINITY {
            "-Inf".into()
        } else {
            v.to_string()
        })
    }
}

/// Escapes a label value (`\`, `"`, newline).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Escapes a `HELP` text (`\`, newline).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
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
    /// Reuse a result this long.
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
    cache: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
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
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The names of the exported networks.
    pub fn networks(&self) -> Vec<&str> {
        self.sources
            .iter()
            .map(|s| s.target.network.name.as_str())
            .collect()
    }

    /// The exposition text: fresh, or the result of a scrape that finished
    /// after this one was asked for, or one younger than the cache time.
    pub async fn scrape(&self) -> Arc<String> {
        let asked = Instant::now();
        let mut cache = self.cache.lock().await;
        if let Some((done, text)) = &*cache {
            if *done >= asked || done.elapsed() < self.options.cache {
                return text.clone();
            }
        }
        let mut samples = Samples::default();
        for source in &self.sources {
            self.collect(source, &mut samples).await;
        }
        let text = Arc::new(samples.render());
        *cache = Some((Instant::now(), text.clone()));
        text
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
            match tokio::time::timeout_at(deadline, collect_usage(&**alloc, net, out)).await {
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

/// Reads one network's range figures from its chunks' population counts
/// (one range read per range, whatever the number of owners) into `out`.
pub async fn collect_usage<S: Store>(
    alloc: &Allocator<S>,
    net: &str,
    out: &mut Samples,
) -> Result<(), crate::allocator::AllocError> {
    for u in &alloc.usage().await? {
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
        let mut healthy_since = super::reap::now_secs();
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
            for group in super::reap::groups(allocs) {
                let now = super::reap::now_secs();
                match super::reap::reap_pass(&group, now, healthy_since, gone_after, false).await {
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
                        failed = true;
                        for a in &group.allocs {
                            if let Some(s) = source_of(&a.network().name) {
                                s.reap_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        eprintln!("ipamctl metrics: reaper pass failed (the grace restarts): {e}");
                    }
                }
            }
            if failed {
                healthy_since = super::reap::now_secs();
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

/// Asserts the Prometheus naming conventions on metric definitions: a
/// counter and only a counter ends in `_total`, names are lowercase snake
/// case, every family has help text, no name twice.
#[cfg(test)]
pub(crate) fn assert_conventions(defs: &[Def]) {
    let mut names = BTreeSet::new();
    for def in defs {
        assert_eq!(
            def.kind == Kind::Counter,
            def.name.ends_with("_total"),
            "{}",
            def.name
        );
        assert!(def.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        assert!(!def.help.is_empty());
        assert!(names.insert(def.name), "{} twice", def.name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_and_escapes() {
        assert_eq!(Value::from(0.25).0, "0.25");
        assert_eq!(Value::from(f64::NAN).0, "NaN");
        assert_eq!(Value::from(f64::INFINITY).0, "+Inf");
        assert_eq!(Value::from(u128::MAX).0, u128::MAX.to_string());
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(ratio(1, 4), 0.25);
        assert_eq!(ratio(0, 0), 0.0);
    }

    #[test]
    fn names_follow_the_conventions() {
        assert_conventions(&ALL);
    }

    #[test]
    fn families_are_grouped_with_help_and_type_once() {
        let mut s = Samples::default();
        s.add(&SCRAPE_ERRORS, &["b"], 2u64);
        s.add(
            &ADDRESSES_USED,
            &["a", "0", "10.0.0.1-10.0.0.9", "ipv4"],
            3u128,
        );
        s.add(&SCRAPE_ERRORS, &["a"], 0u64);
        let text = s.render();
        assert_eq!(
            text.matches("# TYPE host_etcd_ipam_scrape_errors_total counter")
                .count(),
            1
        );
        let used = text.find("host_etcd_ipam_addresses_used{").unwrap();
        let errs = text.find("host_etcd_ipam_scrape_errors_total{").unwrap();
        assert!(used < errs, "{text}");
        assert!(text.contains(
            "host_etcd_ipam_addresses_used{network=\"a\",range_set=\"0\",range=\"10.0.0.1-10.0.0.9\",family=\"ipv4\"} 3\n"
        ));
        assert!(text.ends_with("host_etcd_ipam_scrape_errors_total{network=\"a\"} 0\n"));
    }
}
