//! Paged range reads over a part of the keyspace ([`Allocator::scan`]):
//! what `check`, the cluster-wide `gc`, `list` without a filter and usage
//! figures are built on.
//!
//! A scan of a large keyspace cannot fit in one operation's budget (the
//! 10 s of a CNI command): each page gets its own deadline of
//! [`Options::budget`](super::Options::budget), so a scan's time limit grows
//! with the keyspace while a stalled store still fails it within one
//! budget. An optional progress callback ([`Allocator::set_scan_progress`])
//! hears about every page, so an operator sees a long scan move.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use super::{AllocError, Allocator};
use crate::store::{prefix_end, Key, Read, ReadResult, Store, Versioned};

/// Called after every page of a scan with the scanned prefix (or range
/// start) and the number of keys read so far by that scan.
pub type ScanProgress = Arc<dyn Fn(&str, usize) + Send + Sync>;

impl<S: Store> Allocator<S> {
    /// Has `progress` called after every page of every scan (`None`: no
    /// callback).
    pub fn set_scan_progress(&self, progress: Option<ScanProgress>) {
        if let Ok(mut p) = self.progress.lock() {
            *p = progress;
        }
    }

    /// Every stored key and value under `prefix`, in pages of `page`.
    pub(crate) async fn scan(
        &self,
        prefix: &str,
        page: usize,
    ) -> Result<Vec<(Key, Versioned)>, AllocError> {
        self.scan_range(prefix.to_string(), prefix_end(prefix), page)
            .await
    }

    /// Every stored key and value in `[start, end)`, in pages of `page`,
    /// each page within its own budget.
    pub(crate) async fn scan_range(
        &self,
        start: Key,
        end: Key,
        page: usize,
    ) -> Result<Vec<(Key, Versioned)>, AllocError> {
        let mut out = Vec::new();
        self.scan_until(start, end, page, |kv| {
            out.push(kv);
            ControlFlow::<()>::Continue(())
        })
        .await?;
        Ok(out)
    }

    /// The keys and values in `[start, end)`, in pages of `page` (each
    /// within its own budget), handed to `visit` in order until it breaks;
    /// what it broke with, or `None` when the interval ran out. Pages
    /// after the one it broke in are not read.
    pub(crate) async fn scan_until<T>(
        &self,
        mut start: Key,
        end: Key,
        page: usize,
        mut visit: impl FnMut((Key, Versioned)) -> ControlFlow<T>,
    ) -> Result<Option<T>, AllocError> {
        let label = start.clone();
        let progress = self.progress.lock().ok().and_then(|p| p.clone());
        let mut seen = 0;
        loop {
            let deadline = Instant::now() + self.options.budget;
            let res = self
                .call(
                    self.store.read(&[Read::Range {
                        start: start.clone(),
                        end: end.clone(),
                        limit: page,
                    }]),
                    deadline,
                    "none",
                )
                .await?;
            let Some(ReadResult::Range { kvs, more }) = res.into_iter().next() else {
                return Ok(None);
            };
            if let Some((last, _)) = kvs.last() {
                start = format!("{last}\0");
            }
            let empty = kvs.is_empty();
            seen += kvs.len();
            for kv in kvs {
                if let ControlFlow::Break(found) = visit(kv) {
                    return Ok(Some(found));
                }
            }
            if let Some(p) = &progress {
                p(&label, seen);
            }
            if !more || empty {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::allocator::{Network, Options};
    use crate::store::memory::MemoryStore;
    use crate::store::{ReadResult, StoreError, Txn, TxnOutcome};

    /// A store whose every read takes `delay`.
    struct Slow {
        inner: MemoryStore,
        delay: Duration,
    }

    impl Store for Slow {
        async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
            tokio::time::sleep(self.delay).await;
            self.inner.read(reads).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
            self.inner.txn(txn).await
        }
    }

    /// An allocator over `store` whose operations have a 100 ms budget.
    fn with_budget(store: &Slow) -> Allocator<&Slow> {
        let net = Network::new(
            "x",
            vec![crate::range::RangeSet::from_cidr("10.0.0.0/24").unwrap()],
        )
        .unwrap();
        let options = Options {
            budget: Duration::from_millis(100),
            ..Options::default()
        };
        Allocator::new(store, net, options).unwrap()
    }

    #[tokio::test]
    async fn a_scan_longer_than_one_budget_finishes_and_reports_progress() {
        let inner = MemoryStore::new();
        for i in 0..50 {
            inner.put_raw(&format!("/p/x/{i:03}"), b"v".to_vec());
        }
        let store = Slow {
            inner,
            delay: Duration::from_millis(40),
        };
        let a = with_budget(&store);
        let pages = Arc::new(AtomicUsize::new(0));
        let seen = pages.clone();
        a.set_scan_progress(Some(Arc::new(move |what: &str, keys: usize| {
            assert_eq!(what, "/p/x/");
            assert_eq!(keys, (seen.fetch_add(1, Ordering::SeqCst) + 1) * 10);
        })));
        // 5 pages of 10 at 40 ms each: 200 ms, twice the budget, yet each
        // page is within its own.
        let got = a.scan("/p/x/", 10).await.unwrap();
        assert_eq!(got.len(), 50);
        assert_eq!(pages.load(Ordering::SeqCst), 5);
        // A page that takes longer than the budget still fails.
        let stuck = Slow {
            inner: MemoryStore::new(),
            delay: Duration::from_millis(300),
        };
        assert!(matches!(
            with_budget(&stuck).scan("/p/x/", 10).await,
            Err(AllocError::BudgetExceeded { .. })
        ));
    }
}
