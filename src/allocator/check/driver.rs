//! The I/O of `check`, `repair` and `usage`: read from the store, let
//! `assess` decide, write its repair transactions. A transaction that
//! conflicts (its key changed since the scan) writes nothing and counts its
//! problems as in flux.

use std::time::{Duration, Instant};

use super::assess::{self, Assessment, Scanned};
use super::index::IndexSuspect;
use super::usage::{RangeMirror, UsageMirror};
use super::{CheckReport, Problem, RangeUsage};
use crate::allocator::{AllocError, Allocator};
use crate::range::{Family, Range};
use crate::store::{Key, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned};

impl<S: Store> Allocator<S> {
    /// Reads every chunk, full-set, the meta record and every owner record
    /// (in that order).
    async fn scan_all(&self) -> Result<Scanned, AllocError> {
        let mut scanned = Scanned::default();
        for family in [Family::V4, Family::V6] {
            for (key, v) in self.scan(&self.keyspace.chunks_prefix(family), 500).await? {
                scanned.chunks.push((family, key, v));
            }
        }
        let full_prefix = format!("{}/full/", self.keyspace.root());
        scanned.full_sets = self.scan(&full_prefix, 500).await?;
        scanned.meta = self.get(self.keyspace.meta()).await?;
        scanned.owners = self.scan(&self.keyspace.owners_prefix(), 1000).await?;
        scanned.index = self.scan(&self.keyspace.nodes_prefix(), 1000).await?;
        Ok(scanned)
    }

    /// The current value of one key.
    async fn get(&self, key: Key) -> Result<Option<Versioned>, AllocError> {
        let deadline = Instant::now() + self.options.budget;
        let now = self
            .call(self.store.read(&[Read::Get(key)]), deadline, "none")
            .await?;
        Ok(match now.into_iter().next() {
            Some(ReadResult::Get(v)) => v,
            _ => None,
        })
    }

    /// Runs one repair transaction: whether it committed.
    async fn commit(&self, txn: Txn) -> Result<bool, AllocError> {
        let deadline = Instant::now() + self.options.budget;
        Ok(
            match self.call(self.store.txn(txn), deadline, "none").await? {
                TxnOutcome::Committed { .. } => true,
                TxnOutcome::Conflict { .. } => false,
            },
        )
    }

    /// Checks that chunk bits and owner records agree. Read-only.
    pub async fn check(&self) -> Result<CheckReport, AllocError> {
        self.check_inner(false).await
    }

    /// Checks, then fixes what is safe to fix, each fix one compare-and-swap
    /// transaction on the revision the check read: clears bits without
    /// owner, sets bits of owners (when no other owner holds them), rebuilds
    /// corrupt chunks from the owner records, deletes corrupt full-sets (a
    /// hint). Shared addresses and corrupt owner or meta records are
    /// reported, not touched. A fix whose key changed meanwhile is not
    /// written; its problems count as [in flux](CheckReport::in_flux).
    pub async fn repair(&self) -> Result<CheckReport, AllocError> {
        self.check_inner(true).await
    }

    async fn check_inner(&self, repair: bool) -> Result<CheckReport, AllocError> {
        let scanned = self.scan_all().await?;
        let a: Assessment = assess::assess(&self.keyspace, self.chunk_bits(), scanned);
        let mut report = a.report.clone();
        // Confirm each suspect chunk is unchanged since the scan, then
        // (optionally) repair it with a compare on that revision.
        for s in &a.suspects {
            if !s.unchanged(self.get(s.key.clone()).await?.as_ref()) {
                report.in_flux += s.problems.len();
                continue;
            }
            if !repair {
                report.problems.extend(s.problems.iter().cloned());
                continue;
            }
            let fix = a.chunk_repair(s);
            if self.commit(fix.txn).await? {
                report.repaired += fix.fixes;
                report.problems.extend(fix.left);
            } else {
                report.in_flux += s.problems.len();
            }
        }
        self.settle_index(&a.index, repair, &mut report).await?;
        if repair {
            for (_, txn) in a.full_set_repairs() {
                if self.commit(txn).await? {
                    report.repaired += 1;
                } else {
                    report.in_flux += 1;
                }
            }
            report
                .problems
                .retain(|p| !matches!(p, Problem::CorruptFullSet { .. }));
        }
        Ok(report)
    }

    /// Confirms each index problem by reading its two keys again (a plain
    /// check) or fixes it with its compare-and-swap on the scanned
    /// revisions (a repair); a changed key makes it in flux.
    async fn settle_index(
        &self,
        suspects: &[IndexSuspect],
        repair: bool,
        report: &mut CheckReport,
    ) -> Result<(), AllocError> {
        for s in suspects {
            if repair {
                if self.commit(s.txn.clone()).await? {
                    report.repaired += 1;
                } else {
                    report.in_flux += 1;
                }
                continue;
            }
            let deadline = Instant::now() + self.options.budget;
            let now = self
                .call(
                    self.store
                        .read(&[Read::Get(s.owner.0.clone()), Read::Get(s.entry.0.clone())]),
                    deadline,
                    "none",
                )
                .await?;
            let mut it = now.into_iter().map(|r| match r {
                ReadResult::Get(v) => v,
                ReadResult::Range { .. } | ReadResult::Changed { .. } => None,
            });
            let (owner, entry) = (it.next().flatten(), it.next().flatten());
            if s.unchanged(owner.as_ref(), entry.as_ref()) {
                report.problems.push(s.problem.clone());
            } else {
                report.in_flux += 1;
            }
        }
        Ok(())
    }

    /// Adds the missing per-node index entries of owner records and deletes
    /// entries without a record (what `ipamctl reindex` runs once after an
    /// upgrade): reads only the owner records and the index, never the
    /// chunks. Each fix is a compare-and-swap on the revisions the scan
    /// read, so ADDs and DELs running meanwhile are never undone (their
    /// fixes count as in flux; run it again). With `dry_run`, nothing is
    /// written and the problems are confirmed as by `check`.
    pub async fn reindex(&self, dry_run: bool) -> Result<CheckReport, AllocError> {
        let owners = self.scan(&self.keyspace.owners_prefix(), 1000).await?;
        let index = self.scan(&self.keyspace.nodes_prefix(), 1000).await?;
        let suspects = super::index::assess_index(&self.keyspace, &owners, &index);
        let mut report = CheckReport {
            owners: owners.len(),
            ..CheckReport::default()
        };
        self.settle_index(&suspects, !dry_run, &mut report).await?;
        Ok(report)
    }

    /// Size and use of every range (reads only the chunks overlapping it,
    /// every range's in the same calls, in pages of 500 chunks per range).
    pub async fn usage(&self) -> Result<Vec<RangeUsage>, AllocError> {
        self.usage_tracked(&mut UsageMirror::default()).await
    }

    /// [`usage`](Self::usage) from `mirror`, the copy of the chunks an
    /// earlier call left there, after reading only the chunks written since
    /// (one call when they fit in a page, whatever the number of chunks);
    /// see `usage.rs`. On an error the mirror is emptied, so the next call
    /// reads every chunk again.
    pub(crate) async fn usage_tracked(
        &self,
        mirror: &mut UsageMirror,
    ) -> Result<Vec<RangeUsage>, AllocError> {
        self.usage_paged(mirror, USAGE_PAGE).await
    }

    /// [`usage_tracked`](Self::usage_tracked) in pages of `page` chunks
    /// per range.
    pub(super) async fn usage_paged(
        &self,
        mirror: &mut UsageMirror,
        page: usize,
    ) -> Result<Vec<RangeUsage>, AllocError> {
        let k = self.chunk_bits();
        let ranges: Vec<PlacedRange<'_>> = (self.network.sets.iter().enumerate())
            .flat_map(|(si, set)| {
                set.ranges()
                    .iter()
                    .enumerate()
                    .map(move |(ri, r)| ((si, ri), r))
            })
            .collect();
        let bounds: Vec<(Key, Key)> = ranges
            .iter()
            .map(|(_, r)| assess::range_chunk_keys(&self.keyspace, k, r))
            .collect();
        if mirror.older_than(USAGE_WHOLE_READ_EVERY) {
            *mirror = UsageMirror::default();
        }
        let copies = mirror.ranges_for(&bounds);
        let mut agreed = false;
        for _ in 0..USAGE_PASSES {
            match self
                .refresh_usage(k, (&ranges, &bounds), copies, page)
                .await
            {
                Ok(true) => {
                    agreed = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    *mirror = UsageMirror::default();
                    return Err(e);
                }
            }
        }
        let figures = ranges
            .iter()
            .zip(copies.iter())
            .map(|((at, r), copy)| copy.usage(*at, r))
            .collect();
        if !agreed {
            // Chunks kept being created or deleted during every pass: the
            // figures are as good as one paged read; start over next time.
            *mirror = UsageMirror::default();
        }
        Ok(figures)
    }

    /// One refresh of every range's copy: reads the chunks changed since
    /// the copy's revision, every range's page in one call, until no range
    /// has more. Returns whether every copy agrees with the store's key
    /// count.
    async fn refresh_usage(
        &self,
        k: u8,
        (ranges, bounds): (&[PlacedRange<'_>], &[(Key, Key)]),
        copies: &mut [RangeMirror],
        page: usize,
    ) -> Result<bool, AllocError> {
        let mut cursor: Vec<Option<Key>> = bounds.iter().map(|(s, _)| Some(s.clone())).collect();
        // Per range: the first page's (revision, key count), and pages read.
        let mut first: Vec<Option<(i64, u64)>> = vec![None; ranges.len()];
        let mut pages = vec![0usize; ranges.len()];
        loop {
            let asked: Vec<usize> = (0..ranges.len()).filter(|i| cursor[*i].is_some()).collect();
            if asked.is_empty() {
                break;
            }
            let reads: Vec<Read> = asked
                .iter()
                .map(|&i| Read::Changed {
                    start: cursor[i].clone().unwrap_or_default(),
                    end: bounds[i].1.clone(),
                    after: copies[i].since(),
                    limit: page,
                })
                .collect();
            let deadline = Instant::now() + self.options.budget;
            let answers = self.call(self.store.read(&reads), deadline, "none").await?;
            if answers.len() != asked.len() {
                return Err(wrong_shape(&bounds[asked[0]].0));
            }
            for (&i, answer) in asked.iter().zip(answers) {
                let ReadResult::Changed {
                    kvs,
                    more,
                    total,
                    revision,
                } = answer
                else {
                    return Err(wrong_shape(&bounds[i].0));
                };
                copies[i].apply((&self.keyspace, k), ranges[i].1, &kvs)?;
                first[i].get_or_insert((revision, total));
                pages[i] += 1;
                cursor[i] = match kvs.last() {
                    Some((last, _)) if more => Some(format!("{last}\0")),
                    _ => None,
                };
            }
        }
        let mut agree = true;
        for (i, copy) in copies.iter_mut().enumerate() {
            let (revision, total) = first[i].unwrap_or((copy.since(), 0));
            agree &= copy.finish(revision, total, pages[i]);
        }
        Ok(agree)
    }
}

/// A range with its (set, range) position in the network.
type PlacedRange<'a> = ((usize, usize), &'a Range);

/// A store that answered a usage read with another number or kind of
/// results than asked for (a backend breaking the contract).
fn wrong_shape(start: &str) -> AllocError {
    AllocError::Store(StoreError::Unavailable(format!(
        "the store answered the usage read from {start:?} with results of the wrong shape"
    )))
}

/// Chunks per range and call of a usage refresh.
const USAGE_PAGE: usize = 500;

/// How long a usage copy is kept before every chunk is read again (what
/// no refresh can see, such as a store restored from an older snapshot,
/// lasts at most this long; one whole read per 10 minutes costs a
/// 15-second scraper about 1/40 of reading every chunk on every scrape).
const USAGE_WHOLE_READ_EVERY: Duration = Duration::from_secs(600);

/// Refreshes per [`Allocator::usage_tracked`] before the figures are
/// given as they are (each pass after the first is needed only when chunks
/// were deleted, or created while several pages were read).
const USAGE_PASSES: usize = 4;
