//! Config validation cost by the number of range sets and ranges: what one
//! CNI invocation spends (`NetConf::parse` then `NetConf::network`, which
//! parses every range and checks that no two overlap) before its first
//! store call. Range sets can come from the runtime
//! (`runtimeConfig.ipRanges`), so this must stay small for the largest
//! accepted config (`range::MAX_RANGE_SETS` sets, `range::MAX_RANGES_PER_SET`
//! ranges in a set).
//!
//! `overlap/*` compares, on the same validated sets, the cross-set overlap
//! check as the crate does it (`check_sets`: sort and sweep) with the
//! pairwise loop it replaced (written out here over the public API), so
//! the two are measured in one run.
//!
//! Run: `cargo bench --bench validate -- --warm-up-time 1 --measurement-time 3`
//! (results in BENCHMARKS.md, "Config validation").

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use host_etcd::cni::NetConf;
use host_etcd::range::{check_sets, RangeSet};

/// `n` disjoint IPv4 /24 ranges, as JSON range objects.
fn ranges(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"subnet":"10.{}.{}.0/24"}}"#, i / 256, i % 256))
        .collect()
}

/// A config with `n` one-range sets, in `runtimeConfig.ipRanges` as a
/// runtime sends them, plus one IPv6 set in the config.
fn many_sets(n: usize) -> String {
    let sets: Vec<String> = ranges(n).into_iter().map(|r| format!("[{r}]")).collect();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"n","runtimeConfig":{{"ipRanges":[{}]}},"ipam":{{"subnet":"fd00::/64"}}}}"#,
        sets.join(",")
    )
}

/// A config with one set of `n` ranges.
fn one_set(n: usize) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"ranges":[[{}]]}}}}"#,
        ranges(n).join(",")
    )
}

fn validate(doc: &str) -> usize {
    let conf = NetConf::parse(doc.as_bytes()).map_err(|e| e.to_string());
    match conf.and_then(|c| c.network().map_err(|e| e.to_string())) {
        Ok(net) => net.sets.len(),
        Err(e) => panic!("the bench config is valid: {e}"),
    }
}

/// The former `check_sets`: every pair of sets, every pair of ranges.
fn pairwise_overlap(sets: &[RangeSet]) -> bool {
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            for ra in a.ranges() {
                if b.ranges().iter().any(|rb| ra.overlaps(rb)) {
                    return true;
                }
            }
        }
    }
    false
}

fn network_sets(doc: &str) -> Vec<RangeSet> {
    match NetConf::parse(doc.as_bytes()).and_then(|c| c.network()) {
        Ok(net) => net.sets,
        Err(e) => panic!("the bench config is valid: {e}"),
    }
}

fn bench_overlap(c: &mut Criterion) {
    let mut g = c.benchmark_group("overlap");
    g.sample_size(20);
    for n in [100, 1000] {
        let sets = network_sets(&many_sets(n));
        g.bench_with_input(BenchmarkId::new("sweep", n), &sets, |b, sets| {
            b.iter(|| check_sets(black_box(sets)).is_ok())
        });
        g.bench_with_input(BenchmarkId::new("pairwise", n), &sets, |b, sets| {
            b.iter(|| pairwise_overlap(black_box(sets)))
        });
    }
    g.finish();
}

fn bench_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.sample_size(20);
    for n in [10, 100, 1000] {
        let doc = many_sets(n);
        g.bench_with_input(BenchmarkId::new("sets", n), &doc, |b, doc| {
            b.iter(|| validate(black_box(doc)))
        });
    }
    for n in [100, 1000] {
        let doc = one_set(n);
        g.bench_with_input(BenchmarkId::new("ranges_in_one_set", n), &doc, |b, doc| {
            b.iter(|| validate(black_box(doc)))
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_validate(&mut c);
    bench_overlap(&mut c);
    c.final_summary();
}
