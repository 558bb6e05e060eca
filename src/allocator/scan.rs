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
        mut start: Key,
        end: Key,
        page: usize,
    ) -> Result<Vec<(Key, Versioned)>, AllocError> {
        let label = start.clone();
        let progress = self.progress.lock().ok().and_then(|p| p.clone());
        let mut out = Vec::new();
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
                return Ok(out);
            };
            if let Some((last, _)) = kvs.last() {
                start = format!("{last}\0");
            }
            let empty = kvs.is_empty();
            out.extend(kvs);
            if let Some(p) = &progress {
                p(&label, out.len());
            }
            if !more || empty {
                return Ok(out);
            }
        }
    }
}
