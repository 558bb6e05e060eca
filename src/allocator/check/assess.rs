//! The pure part of `check` and `repair`: from what the scan read, decide
//! the problems, the chunks whose problems must be confirmed by a second
//! read, the repair transactions, and the usage of a range. No I/O: the
//! driver (`driver`) reads, calls these, and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{CheckReport, Problem};
use crate::allocator::geometry::{bit_of, chunk_of};
use crate::allocator::keys::Keyspace;
use crate::allocator::meta::Meta;
use crate::allocator::owners::decode_owner;
use crate::allocator::state::decode_chunk;
use crate::allocator::{fullset, OwnerRecord};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::{from_u128, Family, Range};
use crate::store::{Compare, Expect, Key, Op, Txn, Versioned};

/// What a check's scan read, undecoded, with revisions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scanned {
    /// Keys and values under each family's chunk prefix.
    pub(crate) chunks: Vec<(Family, Key, Versioned)>,
    /// Keys and values under the full-set prefix.
    pub(crate) full_sets: Vec<(Key, Versioned)>,
    /// The meta record, when present.
    pub(crate) meta: Option<Versioned>,
    /// Keys and values under the owners prefix.
    pub(crate) owners: Vec<(Key, Versioned)>,
    /// Keys and values under the per-node index prefix.
    pub(crate) index: Vec<(Key, Versioned)>,
}

/// A scanned chunk: key, mod revision, decoded or why not.
type ScannedChunk = (Key, i64, Result<Chunk, String>);

/// A chunk with problems. They are reported (or repaired) only when a
/// second read shows the chunk unchanged since the scan: an ADD or DEL that
/// committed between the scan of chunks and the scan of owners would
/// otherwise look like an inconsistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Suspect {
    /// The chunk's key.
    pub(crate) key: Key,
    /// Family and index of the chunk.
    pub(crate) at: (Family, u128),
    /// Its mod revision at the scan (`None`: absent).
    pub(crate) scanned_rev: Option<i64>,
    /// Its problems, in report order.
    pub(crate) problems: Vec<Problem>,
}

impl Suspect {
    /// Whether `now`, the chunk's value at the second read, is the one the
    /// scan saw.
    pub(crate) fn unchanged(&self, now: Option<&Versioned>) -> bool {
        now.map(|v| v.mod_revision) == self.scanned_rev
    }
}

/// The repair of one confirmed suspect chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRepair {
    /// The put of the corrected chunk, compared on the scanned revision.
    pub(crate) txn: Txn,
    /// Problems the transaction fixes once it commits.
    pub(crate) fixes: usize,
    /// Problems it leaves (an unmarked address several owners hold).
    pub(crate) left: Vec<Problem>,
}

/// What the scan shows, and the decisions that follow from it.
#[derive(Clone, Debug)]
pub(crate) struct Assessment {
    /// Counts, and the problems that need no confirmation: corrupt owner
    /// records, full-sets and meta record, shared addresses.
    pub(crate) report: CheckReport,
    /// Chunks with problems, in chunk order.
    pub(crate) suspects: Vec<Suspect>,
    /// Index entries and records that do not match, with their fixes.
    pub(crate) index: Vec<super::index::IndexSuspect>,
    /// Corrupt full-sets by key, with their mod revision at the scan.
    corrupt_full_sets: BTreeMap<Key, i64>,
    k: u8,
    chunks: BTreeMap<(Family, u128), ScannedChunk>,
    /// Who holds what, according to owner records.
    holders: BTreeMap<IpAddr, Vec<Key>>,
}

/// Problems found in a chunk, by chunk.
type Suspects = BTreeMap<(Family, u128), Vec<Problem>>;

/// Decodes what the scan read and finds every problem (chunk keys that do
/// not parse as chunks of chunk size `k` are not looked at).
pub(crate) fn assess(ks: &Keyspace, k: u8, scanned: Scanned) -> Assessment {
    let index = super::index::assess_index(ks, &scanned.owners, &scanned.index);
    let chunks = decode_chunks(ks, k, scanned.chunks);
    let (holders, corrupt_owners, owners) = holders_of(scanned.owners);
    let mut report = CheckReport {
        chunks: chunks.len(),
        owners,
        problems: corrupt_owners,
        ..CheckReport::default()
    };
    let mut corrupt_full_sets = BTreeMap::new();
    for (key, v) in scanned.full_sets {
        if let Err(e) = fullset::decode(&v.value) {
            corrupt_full_sets.insert(key.clone(), v.mod_revision);
            report
                .problems
                .push(Problem::CorruptFullSet { key, error: e });
        }
    }
    if let Some(v) = &scanned.meta {
        if let Err(e) = Meta::decode(&v.value) {
            report.problems.push(Problem::CorruptMeta {
                key: ks.meta(),
                error: e,
            });
        }
    }
    let mut suspects = Suspects::new();
    report.allocated = bits_without_owner(k, &chunks, &holders, &mut suspects);
    report
        .problems
        .extend(owners_without_bit(k, &chunks, &holders, &mut suspects));
    let suspects = suspects
        .into_iter()
        .map(|((family, idx), problems)| Suspect {
            key: ks.chunk(family, k, idx),
            at: (family, idx),
            scanned_rev: chunks.get(&(family, idx)).map(|(_, r, _)| *r),
            problems,
        })
        .collect();
    Assessment {
        report,
        suspects,
        index,
        corrupt_full_sets,
        k,
        chunks,
        holders,
    }
}

/// The scanned chunks by family and index, decoded.
fn decode_chunks(
    ks: &Keyspace,
    k: u8,
    scanned: Vec<(Family, Key, Versioned)>,
) -> BTreeMap<(Family, u128), ScannedChunk> {
    let mut chunks = BTreeMap::new();
    for (family, key, v) in scanned {
        let Some(idx) = ks.parse_chunk(family, k, &key) else {
            continue;
        };
        let c = decode_chunk(&v.value, k).map_err(|e| e.to_string());
        chunks.insert((family, idx), (key, v.mod_revision, c));
    }
    chunks
}

/// Who holds which address according to the owner records; the records
/// that do not decode (in key order); how many records there are.
fn holders_of(scanned: Vec<(Key, Versioned)>) -> (BTreeMap<IpAddr, Vec<Key>>, Vec<Problem>, usize) {
    let owners: BTreeMap<Key, Result<OwnerRecord, String>> = scanned
        .into_iter()
        .map(|(key, v)| {
            let rec = decode_owner(&key, &v).map_err(|e| e.to_string());
            (key, rec)
        })
        .collect();
    let mut holders: BTreeMap<IpAddr, Vec<Key>> = BTreeMap::new();
    let mut corrupt = Vec::new();
    for (key, rec) in &owners {
        match rec {
            Ok(r) => {
                for ip in &r.ips {
                    holders.entry(*ip).or_default().push(key.clone());
                }
            }
            Err(e) => corrupt.push(Problem::CorruptOwner {
                key: key.clone(),
                error: e.clone(),
            }),
        }
    }
    (holders, corrupt, owners.len())
}

/// Adds to `suspects` the taken addresses no owner holds and the chunks
/// that do not decode; returns the number of addresses marked taken.
fn bits_without_owner(
    k: u8,
    chunks: &BTreeMap<(Family, u128), ScannedChunk>,
    holders: &BTreeMap<IpAddr, Vec<Key>>,
    suspects: &mut Suspects,
) -> u64 {
    let mut allocated = 0;
    for ((family, idx), (key, _, c)) in chunks {
        match c {
            Ok(chunk) => {
                allocated += chunk.bits.count_ones() as u64;
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
            Err(e) => suspects
                .entry((*family, *idx))
                .or_default()
                .push(Problem::CorruptChunk {
                    key: key.clone(),
                    error: e.clone(),
                }),
        }
    }
    allocated
}

/// Adds to `suspects` the held addresses not marked taken (in a chunk that
/// decodes or is absent); returns the addresses several owners hold.
fn owners_without_bit(
    k: u8,
    chunks: &BTreeMap<(Family, u128), ScannedChunk>,
    holders: &BTreeMap<IpAddr, Vec<Key>>,
    suspects: &mut Suspects,
) -> Vec<Problem> {
    let mut shared = Vec::new();
    for (ip, owners) in holders {
        let family = Family::of(*ip);
        let idx = chunk_of(*ip, k);
        if owners.len() > 1 {
            shared.push(Problem::SharedAddress {
                ip: *ip,
                owners: owners.clone(),
            });
        }
        let taken = match chunks.get(&(family, idx)) {
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
    shared
}

impl Assessment {
    /// The repair of suspect `s` (confirmed unchanged since the scan): the
    /// chunk as the owner records say it should be — bits without owner
    /// cleared, bits of owners set unless several owners hold the address,
    /// and a corrupt chunk rebuilt from the owner records — put with a
    /// compare on the scanned revision (absent: compared absent), so a
    /// repair never undoes a concurrent allocation or release.
    pub(crate) fn chunk_repair(&self, s: &Suspect) -> ChunkRepair {
        let shared = self.shared_unmarked(s);
        let bits = self.corrected(s, &shared);
        let txn = Txn {
            compares: vec![Compare {
                key: s.key.clone(),
                expect: s.scanned_rev.map_or(Expect::Absent, Expect::ModRevision),
            }],
            ops: vec![Op::Put(s.key.clone(), codec::encode(&bits))],
            read_on_conflict: vec![],
        };
        ChunkRepair {
            txn,
            fixes: s.problems.len() - shared.len(),
            left: s
                .problems
                .iter()
                .filter(|p| matches!(p, Problem::OwnerWithoutBit { ip, .. } if shared.contains(ip)))
                .cloned()
                .collect(),
        }
    }

    /// The unmarked addresses of suspect `s` that several owners hold: the
    /// repair leaves them for an operator.
    fn shared_unmarked(&self, s: &Suspect) -> BTreeSet<IpAddr> {
        s.problems
            .iter()
            .filter_map(|p| match p {
                Problem::OwnerWithoutBit { ip, .. }
                    if self.holders.get(ip).is_some_and(|o| o.len() > 1) =>
                {
                    Some(*ip)
                }
                _ => None,
            })
            .collect()
    }

    /// Suspect `s`'s chunk as the owner records say it should be.
    fn corrected(&self, s: &Suspect, shared: &BTreeSet<IpAddr>) -> Chunk {
        let k = self.k;
        let (family, idx) = s.at;
        let mut bits = match self.chunks.get(&(family, idx)) {
            Some((_, _, Ok(c))) => c.clone(),
            _ => Chunk {
                bits: Bitmap::new(1usize << k),
                cursor: 0,
            },
        };
        let rebuild = s
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CorruptChunk { .. }));
        if rebuild {
            bits.bits = Bitmap::new(1usize << k);
            for ip in self.holders.keys() {
                if Family::of(*ip) == family && chunk_of(*ip, k) == idx {
                    bits.bits.set(bit_of(*ip, k));
                }
            }
        }
        for p in &s.problems {
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
        bits
    }

    /// The repairs of corrupt full-sets (only a hint): each one's deletion,
    /// compared on the revision the scan read, so a full-set rewritten
    /// since (by an allocation that found it absent, or another repair) is
    /// never deleted. In key order.
    pub(crate) fn full_set_repairs(&self) -> Vec<(Key, Txn)> {
        self.corrupt_full_sets
            .iter()
            .map(|(key, rev)| {
                let txn = Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        expect: Expect::ModRevision(*rev),
                    }],
                    ops: vec![Op::Delete(key.clone())],
                    read_on_conflict: vec![],
                };
                (key.clone(), txn)
            })
            .collect()
    }
}

/// The keys `[start, end)` of the chunks (chunk size `k`) that overlap
/// range `r`.
pub(crate) fn range_chunk_keys(ks: &Keyspace, k: u8, r: &Range) -> (Key, Key) {
    let family = r.family();
    let (lo, hi) = (r.first() >> k, r.last() >> k);
    let start = ks.chunk(family, k, lo);
    let mut end = ks.chunk(family, k, hi);
    // Keys have a fixed width: key(hi) + NUL is just past key(hi).
    end.push('\0');
    (start, end)
}
