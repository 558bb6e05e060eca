//! The raw reference: bare compare-and-swap transactions at the bench's
//! concurrency, each client comparing the `mod_revision` of its own key and
//! putting a [`RAW_VALUE_BYTES`]-byte value (one round trip per operation,
//! never a conflict): the store's limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::report::{micros, per, Latency, Raw};
use super::{join, Baseline, Tally};
use crate::admin::error::AdminError;
use crate::store::any::AnyStore;
use crate::store::{Compare, Expect, Op, Store, Txn, TxnOutcome};

/// Bytes of each raw compare-and-swap value.
const RAW_VALUE_BYTES: usize = 128;

/// Bare compare-and-swap transactions: each client owns one key.
pub(super) async fn run_raw(store: Arc<AnyStore>, b: &Baseline) -> Result<Raw, AdminError> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + b.limit;
    let mut tasks = Vec::new();
    for client in 0..b.clients.max(1) {
        let key = format!("{}/raw/{client}", b.root);
        tasks.push(tokio::spawn(raw_client(
            store.clone(),
            key,
            next.clone(),
            b.count,
            deadline,
        )));
    }
    let (txns, errors, mut lat) = join(tasks, "raw").await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Raw {
        txns,
        errors,
        secs,
        txns_per_sec: per(txns as f64, secs),
        latency_ms: Latency::of(&mut lat),
    })
}

/// One raw client: compare-and-swap puts of `key` until `count`
/// transactions are taken from `next` or `deadline` passes; a conflict (an
/// error here) adopts the revision the store reports.
async fn raw_client(
    store: Arc<AnyStore>,
    key: String,
    next: Arc<AtomicUsize>,
    count: usize,
    deadline: Instant,
) -> Tally {
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
}
