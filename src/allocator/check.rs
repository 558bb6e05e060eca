//! Consistency check (owner records vs chunk bits), safe repair through the
//! same compare-and-swap transactions, and usage figures.
//!
//! The scan reads chunks first and owner records second. An ADD or DEL that
//! commits in between changes the chunk's `mod_revision`, so every problem
//! is confirmed by re-reading its chunk: one whose chunk changed is dropped
//! as "in flux", and every repair compares the chunk's revision, so a
//! repair never undoes a concurrent allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

use super::engine::decode_owner;
use super::geometry::{bit_of, chunk_of};
use super::state::decode_chunk;
use super::{fullset, AllocError, Allocator};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::{from_u128, Family};
use crate::store::{Compare, Expect, Op, Read, ReadResult, Store, Txn, TxnOutcome};

/// One inconsistency found by [`Allocator::check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    /// A chunk that does not decode.
    CorruptChunk {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// An owner record that does not decode.
    CorruptOwner {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// A full-set that does not decode.
    CorruptFullSet {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// The meta record does not decode.
    CorruptMeta {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// An address marked taken that no owner holds.
    BitWithoutOwner {
        /// The address.
        ip: IpAddr,
        /// Its chunk key.
        chunk: String,
    },
    /// An address an owner holds that is not marked taken.
    OwnerWithoutBit {
        /// The address.
        ip: IpAddr,
        /// The owner key.
        owner: String,
    },
    /// An address held by more than one owner.
    SharedAddress {
        /// The address.
        ip: IpAddr,
        /// The owner keys.
        owners: Vec<String>,
    },
}

/// The result of [`Allocator::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Chunks read.
    pub chunks: usize,
    /// Owner records read.
    pub owners: usize,
    /// Addresses marked taken.
    pub allocated: u64,
    /// Problems found (confirmed against a second read).
    pub problems: Vec<Problem>,
    /// Problems whose chunk changed during the check (re-run to decide).
    pub in_flux: usize,
    /// Problems fixed by `repair` (0 for a plain check).
    pub repaired: usize,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Usage of one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RangeUsage {
    /// Range set index.
    pub set: usize,
    /// Range index within the set.
    pub range: usize,
    /// `subnet` of the range.
    pub subnet: String,
    /// `rangeStart`.
    pub start: IpAddr,
    /// `rangeEnd`.
    pub end: IpAddr,
    /// Addresses in `start..=end` that no `exclude` entry covers.
    pub size: u128,
    /// Of those, marked taken.
    pub used: u128,
    /// Stored chunks overlapping the range.
    pub chunks: usize,
    /// Bytes of those chunks' values.
    pub bytes: usize,
}

/// A scanned chunk: key, mod revision, decoded or why not.
type ScannedChunk = (String, i64, Result<Chunk, String>);

struct Scan {
    chunks: BTreeMap<(Family, u128), ScannedChunk>,
    owners: BTreeMap<String, (i64, Result<super::OwnerRecord, String>)>,
    other: Vec<Problem>,
}

impl<S: Store> Allocator<S> {
    async fn scan_all(&self) -> Result<Scan, AllocError> {
        let k = self.network.chunk_bits;
        let mut chunks = BTreeMap::new();
        for family in [Family::V4, Family::V6] {
            for (key, v) in self.scan(&self.keyspace.chunks_prefix(family), 500).await? {
                let Some(idx) = self.keyspace.parse_chunk(family, k, &key) else {
                    continue;
                };
                let c = decode_chunk(&v.value, k).map_err(|e| e.to_string());
                chunks.insert((family, idx), (key, v.mod_revision, c));
            }
        }
        let mut other = Vec::new();
        let full_prefix = format!("{}/full/", self.keyspace.root());
        for (key, v) in self.scan(&full_prefix, 500).await? {
            if let Err(e) = fullset::decode(&v.value) {
                other.push(Problem::CorruptFullSet { key, error: e });
            }
        }
        let meta_key = self.keyspace.meta();
        let deadline = Instant::now() + self.options.budget;
        if let Some(ReadResult::Get(Some(v))) = self
            .call(
                self.store.read(&[Read::Get(meta_key.clone())]),
                deadline,
                "none",
            )
            .await?
            .into_iter()
            .next()
        {
            if let Err(e) = super::meta::Meta::decode(&v.value) {
                other.push(Problem::CorruptMeta {
                    key: meta_key,
                    error: e,
                });
            }
        }
        let mut owners = BTreeMap::new();
        for (key, v) in self.scan(&self.keyspace.owners_prefix(), 1000).await? {
            let rec = decode_owner(&key, &v).map_err(|e| e.to_string());
            owners.insert(key, (v.mod_revision, rec));
        }
        Ok(Scan {
            chunks,
            owners,
            other,
        })
    }

    /// Checks that chunk bits and owner records agree. Read-only.
    pub async fn check(&self) -> Result<CheckReport, AllocError> {
        self.check_inner(false).await
    }

    /// Checks, then fixes what is safe to fix, each fix one compare-and-swap
    /// transaction on the chunk's revision: clears bits without owner, sets
    /// bits of owners (when no other owner holds them), rebuilds corrupt
    /// chunks from the owner records, deletes corrupt full-sets (a hint).
    /// Shared addresses and corrupt owner or meta records are reported, not
    /// touched.
    pub async fn repair(&self) -> Result<CheckReport, AllocError> {
        self.check_inner(true).await
    }

    async fn check_inner(&self, repair: bool) -> Result<CheckReport, AllocError> {
        let k = self.network.chunk_bits;
        let scan = self.scan_all().await?;
        let mut report = CheckReport {
            chunks: scan.chunks.len(),
            owners: scan.owners.len(),
            ..CheckReport::default()
        };
        // Who holds what, according to owner records.
        let mut holders: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (key, (_, rec)) in &scan.owners {
            match rec {
                Ok(r) => {
                    for ip in &r.ips {
                        holders.entry(*ip).or_default().push(key.clone());
                    }
                }
                Err(e) => report.problems.push(Problem::CorruptOwner {
                    key: key.clone(),
                    error: e.clone(),
                }),
            }
        }
        report.problems.extend(scan.other.iter().cloned());
        // Desired contents per chunk, for problems found in it.
        let mut suspects: BTreeMap<(Family, u128), Vec<Problem>> = BTreeMap::new();
        for ((family, idx), (key, _, c)) in &scan.chunks {
            match c {
                Ok(chunk) => {
                    report.allocated += chunk.bits.count_ones() as u64;
                    for bit in chunk.bits.iter_ones() {
                        let Some(ip) = from_u128(*family, (idx << k) + bit as u128) else {
                            continue;
                        };
                        if !holders.contains_key(&ip) {
                            suspects.entry((*family, *idx)).or_default().push(
                                Problem::BitWithoutOwner {
                                    ip,
                                    chunk: key.clone(),
                                },
                            );
                        }
                    }
                }
                Err(e) => {
                    suspects
                        .entry((*family, *idx))
                        .or_default()
                        .push(Problem::CorruptChunk {
                            key: key.clone(),
                            error: e.clone(),
                        })
                }
            }
        }
        for (ip, owners) in &holders {
            let family = Family::of(*ip);
            let idx = chunk_of(*ip, k);
            if owners.len() > 1 {
                report.problems.push(Problem::SharedAddress {
                    ip: *ip,
                    owners: owners.clone(),
                });
            }
            let taken = match scan.chunks.get(&(family, idx)) {
                Some((_, _, Ok(c))) => c.bits.get(bit_of(*ip, k)),
                Some((_, _, Err(_))) => continue, // reported as a corrupt chunk
                None => false,
            };
            if !taken {
                suspects
                    .entry((family, idx))
                    .or_default()
                    .push(Problem::OwnerWithoutBit {
                        ip: *ip,
                        owner: owners.first().cloned().unwrap_or_default(),
                    });
            }
        }
        // Confirm each suspect chunk is unchanged since the scan, then
        // (optionally) repair it with a compare on that revision.
        for ((family, idx), problems) in suspects {
            let key = self.keyspace.chunk(family, k, idx);
            let scanned_rev = scan.chunks.get(&(family, idx)).map(|(_, r, _)| *r);
            let deadline = Instant::now() + self.options.budget;
            let now = self
                .call(self.store.read(&[Read::Get(key.clone())]), deadline, "none")
                .await?;
            let now_rev = match now.into_iter().next() {
                Some(ReadResult::Get(v)) => v.map(|v| v.mod_revision),
                _ => None,
            };
            if now_rev != scanned_rev {
                report.in_flux += problems.len();
                continue;
            }
            if repair {
                let shared: BTreeSet<IpAddr> = problems
                    .iter()
                    .filter_map(|p| match p {
                        Problem::OwnerWithoutBit { ip, .. }
                            if holders.get(ip).is_some_and(|o| o.len() > 1) =>
                        {
                            Some(*ip)
                        }
                        _ => None,
                    })
                    .collect();
                let mut bits = match scan.chunks.get(&(family, idx)) {
                    Some((_, _, Ok(c))) => c.clone(),
                    _ => Chunk {
                        bits: Bitmap::new(1usize << k),
                        cursor: 0,
                    },
                };
                let rebuild = problems
                    .iter()
                    .any(|p| matches!(p, Problem::CorruptChunk { .. }));
                if rebuild {
                    bits.bits = Bitmap::new(1usize << k);
                    for ip in holders.keys() {
                        if Family::of(*ip) == family && chunk_of(*ip, k) == idx {
                            bits.bits.set(bit_of(*ip, k));
                        }
                    }
                }
                for p in &problems {
                    match p {
                        Problem::BitWithoutOwner { ip, .. } => {
                            bits.bits.clear(bit_of(*ip, k));
                        }
                        Problem::OwnerWithoutBit { ip, .. } if !shared.contains(ip) => {
                            bits.bits.set(bit_of(*ip, k));
                        }
                        _ => {}
                    }
                }
                let txn = Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        expect: scanned_rev.map_or(Expect::Absent, Expect::ModRevision),
                    }],
                    ops: vec![Op::Put(key.clone(), codec::encode(&bits))],
                    read_on_conflict: vec![],
                };
                let deadline = Instant::now() + self.options.budget;
                match self.call(self.store.txn(txn), deadline, "none").await? {
                    TxnOutcome::Committed { .. } => {
                        report.repaired += problems.len() - shared.len();
                        report.problems.extend(
                            problems
                                .into_iter()
                                .filter(|p| matches!(p, Problem::OwnerWithoutBit { ip, .. } if shared.contains(ip))),
                        );
                        continue;
                    }
                    TxnOutcome::Conflict { .. } => {
                        report.in_flux += problems.len();
                        continue;
                    }
                }
            }
            report.problems.extend(problems);
        }
        if repair {
            // Corrupt full-sets are only a hint: drop them.
            let mut kept = Vec::new();
            for p in std::mem::take(&mut report.problems) {
                if let Problem::CorruptFullSet { key, .. } = &p {
                    let txn = Txn {
                        compares: vec![],
                        ops: vec![Op::Delete(key.clone())],
                        read_on_conflict: vec![],
                    };
                    let deadline = Instant::now() + self.options.budget;
                    self.call(self.store.txn(txn), deadline, "none").await?;
                    report.repaired += 1;
                } else {
                    kept.push(p);
                }
            }
            report.problems = kept;
        }
        Ok(report)
    }

    /// Size and use of every range (reads only the chunks overlapping it).
    pub async fn usage(&self) -> Result<Vec<RangeUsage>, AllocError> {
        let k = self.network.chunk_bits;
        let mut out = Vec::new();
        for (si, set) in self.network.sets.iter().enumerate() {
            let family = set.family();
            for (ri, r) in set.ranges().iter().enumerate() {
                let (lo, hi) = (r.first() >> k, r.last() >> k);
                let start = self.keyspace.chunk(family, k, lo);
                let mut end = self.keyspace.chunk(family, k, hi);
                end.push('\0');
                let mut used = 0u128;
                let mut chunks = 0;
                let mut bytes = 0;
                for (key, v) in self.scan_range(start, end, 500).await? {
                    let Some(idx) = self.keyspace.parse_chunk(family, k, &key) else {
                        continue;
                    };
                    chunks += 1;
                    bytes += v.value.len();
                    let chunk = decode_chunk(&v.value, k)
                        .map_err(|e| AllocError::CorruptChunk { key, source: e })?;
                    let base = idx << k;
                    used += chunk
                        .bits
                        .iter_ones()
                        .filter(|b| {
                            let a = base + *b as u128;
                            r.first() <= a && a <= r.last()
                        })
                        .count() as u128;
                }
                out.push(RangeUsage {
                    set: si,
                    range: ri,
                    subnet: r.subnet.to_string(),
                    start: r.start,
                    end: r.end,
                    size: r.len() - r.excluded_len(),
                    used,
                    chunks,
                    bytes,
                });
            }
        }
        Ok(out)
    }
}
