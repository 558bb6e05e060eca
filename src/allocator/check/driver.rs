//! The I/O of `check`, `repair` and `usage`: read from the store, let
//! `assess` decide, write its repair transactions. A transaction that
//! conflicts (its key changed since the scan) writes nothing and counts its
//! problems as in flux.

use std::time::Instant;

use super::assess::{self, Assessment, Scanned};
use super::index::IndexSuspect;
use super::{CheckReport, Problem, RangeUsage};
use crate::allocator::{AllocError, Allocator};
use crate::range::Family;
use crate::store::{Key, Read, ReadResult, Store, Txn, TxnOutcome, Versioned};

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
                ReadResult::Range { .. } => None,
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

    /// Size and use of every range (reads only the chunks overlapping it).
    pub async fn usage(&self) -> Result<Vec<RangeUsage>, AllocError> {
        let k = self.chunk_bits();
        let mut out = Vec::new();
        for (si, set) in self.network.sets.iter().enumerate() {
            for (ri, r) in set.ranges().iter().enumerate() {
                let (start, end) = assess::range_chunk_keys(&self.keyspace, k, r);
                let kvs = self.scan_range(start, end, 500).await?;
                out.push(assess::range_usage(&self.keyspace, k, (si, ri), r, &kvs)?);
            }
        }
        Ok(out)
    }
}
