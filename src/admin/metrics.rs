//! `ipamctl metrics`: the figures of one or more networks in the
//! Prometheus text exposition format (version 0.0.4), computed from the
//! store on a scrape. [`exporter`](super::exporter) serves them over HTTP.
//!
//! Every metric is named `host_etcd_ipam_*`, carries its base unit in its
//! name (`_bytes`, `_seconds`, `_ratio`) and has `HELP` and `TYPE` lines;
//! only counters end in `_total`. Per range (labels `network`,
//! `range_set`, `range`, `family`): size, used, free, utilization, stored
//! chunks and their bytes. Per network: owner records (and per `node`, for
//! records that carry one), problems `check` finds (by `kind`), and the
//! exporter's own health (`up`, scrape duration, scrape errors).
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

use super::commands::owners_lenient;
use super::error::AdminError;
use super::target::Target;
use crate::allocator::{Allocator, Problem};
use crate::store::any::AnyStore;
use crate::store::Store;

/// Prefix of every metric name.
pub const PREFIX: &str = "host_etcd_ipam_";

/// Every `kind` of [`Problem`], as in `check --json` (each is exported,
/// zeros included, so an alert can compare against 0).
pub const PROBLEM_KINDS: [&str; 7] = [
    "corruptChunk",
    "corruptOwner",
    "corruptFullSet",
    "corruptMeta",
    "bitWithoutOwner",
    "ownerWithoutBit",
    "sharedAddress",
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
    }
}

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (name ends in `_total`).
    Counter,
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
/// Owner records of a network.
pub const OWNER_RECORDS: Def = Def {
    name: "owner_records",
    kind: Kind::Gauge,
    labels: NET_LABELS,
    help: "Owner records (container interfaces holding addresses) that decode.",
};
/// Owner records per node.
pub const NODE_OWNER_RECORDS: Def = Def {
    name: "node_owner_records",
    kind: Kind::Gauge,
    labels: &["network", "node"],
    help: "Owner records per node that allocated them (records that name a node).",
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
pub const ALL: [Def; 13] = [
    ADDRESSES_SIZE,
    ADDRESSES_USED,
    ADDRESSES_FREE,
    UTILIZATION,
    CHUNKS,
    CHUNK_BYTES,
    OWNER_RECORDS,
    NODE_OWNER_RECORDS,
    CHECK_PROBLEMS,
    CHECK_IN_FLUX,
    UP,
    SCRAPE_DURATION,
    SCRAPE_ERRORS,
];

/// Samples being gathered, per family.
#[derive(Debug, Default)]
pub struct Samples {
    by_name: BTreeMap<&'static str, Vec<(Vec<String>, String)>>,
}

impl Samples {
    /// Adds a sample; `labels` are the values of `def.labels`, in order.
    pub fn add(&mut self, def: &Def, labels: &[&str], value: impl Into<Value>) {
        debug_assert_eq!(labels.len(), def.labels.len(), "{}", def.name);
        self.by_name.entry(def.name).or_default().push((
            labels.iter().map(|l| l.to_string()).collect(),
            value.into().0,
        ));
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
            };
            let _ = writeln!(out, "# HELP {prefix}{} {}", def.name, escape_help(def.help));
            let _ = writeln!(out, "# TYPE {prefix}{} {kind}", def.name);
            for (values, value) in samples {
                let _ = write!(out, "{prefix}{}", def.name);
                if !values.is_empty() {
                    out.push('{');
                    for (i, (name, v)) in def.labels.iter().zip(values).enumerate() {
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
}

/// What a scrape does.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeOptions {
    /// Reuse a result this long.
    pub cache: Duration,
    /// Run the consistency check (a full scan) on every scrape.
    pub check: bool,
    /// Deadline of each network's reads.
    pub timeout: Duration,
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
            errors.extend(
                collect_figures(
                    &**alloc,
                    net,
                    self.options.check,
                    deadline,
                    self.options.timeout,
                    out,
                )
                .await,
            );
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

/// Reads one network's figures from its allocator (range usage, owner
/// records, and with `check` the consistency check), each within
/// `deadline`, into `out`; returns what could not be read (empty: all
/// read). Used by [`Collector`] and by the node agent's exporter.
pub async fn collect_figures<S: Store>(
    alloc: &Allocator<S>,
    net: &str,
    check: bool,
    deadline: tokio::time::Instant,
    timeout: Duration,
    out: &mut Samples,
) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    let timed_out = || format!("no answer within {timeout:?}");
    match tokio::time::timeout_at(deadline, alloc.usage()).await {
        Ok(Ok(usage)) => {
            for u in &usage {
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
        }
        Ok(Err(e)) => errors.push(format!("usage: {e}")),
        Err(_) => errors.push(format!("usage: {}", timed_out())),
    }
    match tokio::time::timeout_at(deadline, owners_lenient(alloc)).await {
        Ok(Ok((records, _corrupt))) => {
            out.add(&OWNER_RECORDS, &[net], records.len());
            let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &records {
                if let Some(n) = r.node.as_deref().filter(|n| !n.is_empty()) {
                    *per_node.entry(n).or_default() += 1;
                }
            }
            for (node, n) in per_node {
                out.add(&NODE_OWNER_RECORDS, &[net, node], n);
            }
        }
        Ok(Err(e)) => errors.push(format!("owner records: {e}")),
        Err(_) => errors.push(format!("owner records: {}", timed_out())),
    }
    if check {
        match tokio::time::timeout_at(deadline, alloc.check()).await {
            Ok(Ok(report)) => {
                for kind in PROBLEM_KINDS {
                    let n = report
                        .problems
                        .iter()
                        .filter(|p| problem_kind(p) == kind)
                        .count();
                    out.add(&CHECK_PROBLEMS, &[net, kind], n);
                }
                out.add(&CHECK_IN_FLUX, &[net], report.in_flux);
            }
            Ok(Err(e)) => errors.push(format!("check: {e}")),
            Err(_) => errors.push(format!("check: {}", timed_out())),
        }
    }
    errors
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
