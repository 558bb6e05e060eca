//! The figures of a `bench` run ([`BenchReport`], and [`WorkerResult`],
//! what a worker process hands its parent) and their text form
//! ([`human`]); `--json` prints the report as it is.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::table::Table;
use super::Plan;
use crate::admin::cli::BenchArgs;
use crate::allocator::Network;

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

impl Ours {
    /// This allocator's figures from the merged measured loop: operations
    /// are allocations, plus releases with `release`.
    pub(super) fn of(r: WorkerResult, release: bool) -> Ours {
        let mut lat = r.latencies_us;
        let secs = r.end_us.saturating_sub(r.start_us) as f64 / 1e6;
        let operations = r.allocations * if release { 2 } else { 1 };
        let allocs = r.allocations as f64;
        Ours {
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
        }
    }
}

impl WorkerResult {
    /// Adds `r` to this result: counts and latencies summed, the first
    /// error kept, the measured span widened to cover `r`'s.
    pub(super) fn merge(&mut self, r: WorkerResult) {
        self.allocations += r.allocations;
        self.errors += r.errors;
        if self.first_error.is_none() {
            self.first_error = r.first_error;
        }
        self.latencies_us.extend(r.latencies_us);
        self.reads += r.reads;
        self.txns += r.txns;
        self.bytes_written += r.bytes_written;
        self.start_us = self.start_us.min(r.start_us);
        self.end_us = self.end_us.max(r.end_us);
    }
}

impl BenchReport {
    /// The report of a run on `network` as `plan` sized it, from its
    /// measured parts.
    pub(super) fn new(
        network: &Network,
        plan: &Plan<'_>,
        args: &BenchArgs,
        prefill_secs: f64,
        ours: Ours,
        raw: Option<Raw>,
        naive: Option<Naive>,
    ) -> BenchReport {
        let ratio = |d: f64| (d > 0.0).then(|| ours.allocations_per_sec / d);
        BenchReport {
            network: network.name.clone(),
            subnets: plan
                .set
                .ranges()
                .iter()
                .map(|r| r.subnet.to_string())
                .collect(),
            range_size: plan.range_size,
            chunk_bits: network.chunk_bits,
            concurrency: args.concurrency,
            processes: args.processes,
            count: args.count,
            prefill_ratio: args.prefill,
            prefilled: plan.prefill as u64,
            prefill_secs,
            release: args.release,
            same_node: args.same_node,
            group: args.group,
            ratio_to_raw: raw.as_ref().and_then(|r| ratio(r.txns_per_sec)),
            ratio_to_naive: naive.as_ref().and_then(|n| ratio(n.allocations_per_sec)),
            ours,
            raw,
            naive,
        }
    }
}

/// Microseconds, saturating.
pub(super) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `n / d`, or 0 unless `d` is positive.
pub(super) fn per(n: f64, d: f64) -> f64 {
    if d > 0.0 {
        n / d
    } else {
        0.0
    }
}

/// The report as text: the run's parameters, one table row per workload
/// measured, then this allocator's per-allocation costs and ratios.
pub fn human(r: &BenchReport) -> String {
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
    s.push_str(&table(r).render());
    let o = &r.ours;
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

/// The workloads' table: ours, then raw and naive when they ran.
fn table(r: &BenchReport) -> Table {
    let mut t = Table::new(&["", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"]);
    let o = &r.ours;
    t.row(row(
        "ours (allocations)".into(),
        o.allocations,
        format!("{:.0}", o.allocations_per_sec),
        &o.latency_ms,
        o.errors,
    ));
    if let Some(raw) = &r.raw {
        t.row(row(
            "raw CAS (txns)".into(),
            raw.txns,
            format!("{:.0}", raw.txns_per_sec),
            &raw.latency_ms,
            raw.errors,
        ));
    }
    if let Some(n) = &r.naive {
        t.row(row(
            format!(
                "naive (allocations{})",
                if n.estimated { ", estimated" } else { "" }
            ),
            n.allocations,
            format!("{:.2}", n.allocations_per_sec),
            &n.latency_ms,
            n.errors,
        ));
    }
    t
}

/// One table row: label, operations, rate (formatted by the caller: the
/// naive rate keeps two decimals), latencies, errors.
fn row(label: String, ops: u64, rate: String, lat: &Latency, errors: u64) -> Vec<String> {
    vec![
        label,
        ops.to_string(),
        rate,
        format!("{:.2}", lat.p50),
        format!("{:.2}", lat.p99),
        format!("{:.2}", lat.max),
        errors.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ipamctl bench`'s text, pinned: every row and line a full report has.
    #[test]
    fn human_text() {
        let lat = Latency {
            p50: 1.234,
            p99: 5.678,
            max: 9.1011,
        };
        let report = BenchReport {
            network: "bench-1".into(),
            subnets: vec!["10.0.0.0/16".into(), "fd00::/120".into()],
            range_size: 65534,
            chunk_bits: 10,
            concurrency: 2,
            processes: 3,
            count: 20,
            prefill_ratio: 0.1,
            prefilled: 409,
            prefill_secs: 1.25,
            release: true,
            same_node: true,
            group: false,
            ours: Ours {
                allocations: 20,
                errors: 1,
                first_error: Some("boom".into()),
                secs: 0.5,
                allocations_per_sec: 40.4,
                latency_ms: lat.clone(),
                reads: 3,
                txns: 25,
                cas_retries_per_allocation: 0.25,
                round_trips_per_allocation: 1.4,
                bytes_written: 12345,
                bytes_written_per_allocation: 617.25,
            },
            raw: Some(Raw {
                txns: 100,
                errors: 2,
                secs: 2.0,
                txns_per_sec: 50.55,
                latency_ms: lat,
            }),
            naive: Some(Naive {
                prefilled: 409,
                probes: 777,
                secs: 2.0,
                probes_per_sec: 388.5,
                probes_per_allocation: 410.0,
                allocations_per_sec: 0.947,
                estimated: true,
                ..Naive::default()
            }),
            ratio_to_raw: Some(0.8),
            ratio_to_naive: Some(42.66),
        };
        let want = "\
network bench-1 (10.0.0.0/16,fd00::/120, 65534 addresses), k=10, 2 clients x 3 processes, 20 allocations (alloc+release), prefilled 409 (10%) in 1.2s, one node seed
                                ops  ops/s  p50 ms  p99 ms  max ms  errors
ours (allocations)              20   40     1.23    5.68    9.10    1
raw CAS (txns)                  100  51     1.23    5.68    9.10    2
naive (allocations, estimated)  0    0.95   0.00    0.00    0.00    0
CAS retries/allocation 0.250, round trips/allocation 1.40, bytes written/allocation 617 (12345 total)
ours / raw CAS: 80.0%
ours / naive: 42.7x
first error: boom
";
        assert_eq!(human(&report), want);
    }
}
