//! The naive reference: the original one-key-per-IP design
//! ([`NaiveAllocator`]), prefilled like ours, then allocating until the
//! bench's count or time limit. Each allocation probes past every taken
//! address, so a run that completes none reports the estimate
//! `probes/s ÷ (prefilled + 1)`, marked `estimated`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::report::{micros, per, Latency, Naive};
use super::{join, Baseline, Tally};
use crate::admin::error::AdminError;
use crate::admin::naive::NaiveAllocator;
use crate::range::Range;
use crate::store::any::AnyStore;

/// The naive baseline: prefill `prefilled` addresses, then `count`
/// allocations over `clients` tasks within `limit`.
pub(super) async fn run_naive(
    store: Arc<AnyStore>,
    b: &Baseline,
    range: Range,
    prefilled: usize,
    release: bool,
) -> Result<Naive, AdminError> {
    let naive = Arc::new(NaiveAllocator::new(
        store,
        &format!("{}/naive", b.root),
        range,
    ));
    naive.prefill(prefilled).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + b.limit;
    let mut tasks = Vec::new();
    for client in 0..b.clients.max(1) {
        tasks.push(tokio::spawn(naive_client(
            naive.clone(),
            client,
            next.clone(),
            probes.clone(),
            b.count,
            release,
            deadline,
        )));
    }
    let (allocations, errors, mut lat) = join(tasks, "naive").await?;
    let mut out = Naive {
        prefilled: prefilled as u64,
        allocations,
        errors,
        ..Naive::default()
    };
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

/// One naive client: allocations (released again with `release`) until
/// `count` are taken from `next`, `deadline` passes, or the range is full;
/// every probe counted in `probes`.
async fn naive_client(
    naive: Arc<NaiveAllocator<Arc<AnyStore>>>,
    client: usize,
    next: Arc<AtomicUsize>,
    probes: Arc<AtomicU64>,
    count: usize,
    release: bool,
    deadline: Instant,
) -> Tally {
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
}
