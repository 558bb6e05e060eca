//! The Prometheus text exposition format (version 0.0.4) both exporters
//! answer with: samples gathered per family of the one metric table
//! ([`families`](super::families)) and rendered by [`Samples::render`],
//! `# HELP` and `# TYPE` once per family, then one line per sample.
//! Histograms ([`Histogram`]) count durations in fixed buckets with one
//! atomic add per observation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use super::families::Def;
use super::families::FAMILIES;

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
        let pairs = label_pairs(def, labels);
        self.by_name
            .entry(def.name)
            .or_default()
            .push(("", pairs, value.into().0));
    }

    /// Adds the lines of one histogram (`def` of kind
    /// [`Kind::Histogram`]): a cumulative `_bucket` per bound and `+Inf`,
    /// `_sum` and `_count`.
    pub fn add_histogram(&mut self, def: &Def, labels: &[&str], h: &HistogramSnapshot) {
        debug_assert_eq!(labels.len(), def.labels.len(), "{}", def.name);
        let pairs = label_pairs(def, labels);
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

    /// The exposition text: for every family of the table with samples,
    /// in the table's order, `# HELP`, `# TYPE` and one line per sample.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for def in &FAMILIES {
            let Some(samples) = self.by_name.get(def.name) else {
                continue;
            };
            let name = def.name;
            let _ = writeln!(out, "# HELP {name} {}", escape_help(def.help));
            let _ = writeln!(out, "# TYPE {name} {}", def.kind.as_str());
            for (suffix, pairs, value) in samples {
                let _ = write!(out, "{name}{suffix}");
                if !pairs.is_empty() {
                    out.push('{');
                    for (i, (label, v)) in pairs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{label}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

/// The label names of `def` paired with their values.
fn label_pairs(def: &Def, values: &[&str]) -> Vec<(&'static str, String)> {
    def.labels
        .iter()
        .copied()
        .zip(values.iter().map(|v| v.to_string()))
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admin::families::ipam::{ADDRESSES_USED, SCRAPE_ERRORS};

    #[test]
    fn values_and_escapes() {
        assert_eq!(Value::from(0.25).0, "0.25");
        assert_eq!(Value::from(f64::NAN).0, "NaN");
        assert_eq!(Value::from(f64::INFINITY).0, "+Inf");
        assert_eq!(Value::from(u128::MAX).0, u128::MAX.to_string());
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
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

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut s = Samples::default();
        let def = crate::admin::families::agent::REQUEST_DURATION;
        s.add_histogram(&def, &["ADD"], &h.snapshot());
        let text = s.render();
        let name = "host_etcd_agent_request_duration_seconds";
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{name}_bucket{{command=\"ADD\",le=\"0.001\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "{name}_bucket{{command=\"ADD\",le=\"0.025\"}} 2\n"
        )));
        assert!(text.contains(&format!("{name}_bucket{{command=\"ADD\",le=\"10\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{command=\"ADD\",le=\"+Inf\"}} 3\n")));
        assert!(text.contains(&format!("{name}_sum{{command=\"ADD\"}} 60.0205\n")));
        assert!(text.ends_with(&format!("{name}_count{{command=\"ADD\"}} 3\n")));
    }
}

/// The examples these items documented while they were public API, kept as
/// tests (the items are private to the crate now).
#[cfg(test)]
mod examples {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn doc_example_render() {
        use crate::admin::exposition::Samples;
        use crate::admin::families::ipam::UP;

        let mut s = Samples::default();
        s.add(&UP, &["net\"1"], 1u64);
        assert_eq!(
            s.render(),
            "# HELP host_etcd_ipam_up 1 if the last scrape read all figures of the network \
             from the store, else 0.\n# TYPE host_etcd_ipam_up gauge\n\
             host_etcd_ipam_up{network=\"net\\\"1\"} 1\n"
        );
    }
}
