//! The `Draft`: modified copies of chunks and full-sets on top of
//! [`Known`], and how they become the compares, puts and conflict reads of
//! a transaction ([`Draft::finish`]).

use std::collections::BTreeMap;

use roaring::RoaringTreemap;

use super::{Ctx, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::keys::Keyspace;
use crate::allocator::state::{FullLookup, Known, Lookup, Pending};
use crate::allocator::{fullset, Network};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::Family;
use crate::store::{Compare, Expect, Key, Op, Txn};

struct DraftChunk {
    /// What the commit compares (the state the draft started from).
    orig: Expect,
    chunk: Chunk,
    /// Whether the stored chunk was full (for ordinary pods) before.
    was_full: bool,
}

struct DraftFull {
    orig: Expect,
    set: RoaringTreemap,
    dirty: bool,
}

/// Modified copies of chunks and full-sets on top of [`Known`].
pub(super) struct Draft<'a> {
    known: &'a Known,
    net: &'a Network,
    k: u8,
    chunks: BTreeMap<(Family, u128), DraftChunk>,
    full: BTreeMap<Key, DraftFull>,
}

impl<'a> Draft<'a> {
    pub(super) fn new(known: &'a Known, net: &'a Network, k: u8) -> Self {
        Draft {
            known,
            net,
            k,
            chunks: BTreeMap::new(),
            full: BTreeMap::new(),
        }
    }

    /// The known state this draft started from.
    pub(super) fn known(&self) -> &'a Known {
        self.known
    }

    /// Whether chunk `idx` has a modified copy in this draft.
    pub(super) fn drafted(&self, family: Family, idx: u128) -> bool {
        self.chunks.contains_key(&(family, idx))
    }

    /// Chunk `idx` as this draft sees it (its modified copy, if any).
    pub(super) fn view(&self, family: Family, idx: u128) -> Lookup<'_> {
        match self.chunks.get(&(family, idx)) {
            Some(d) => Lookup::Present(&d.chunk),
            None => self.known.chunk(family, idx),
        }
    }

    /// The modified copy of chunk `idx`, made from the known value on
    /// first use (an absent chunk starts all free).
    pub(super) fn chunk_mut(&mut self, family: Family, idx: u128) -> Result<&mut Chunk, Stop> {
        if !self.chunks.contains_key(&(family, idx)) {
            let d = match self.known.chunk(family, idx) {
                Lookup::Unknown => {
                    let ks = self.known.keyspace();
                    return Err(Stop::Need(vec![
                        Pending::Get(ks.chunk(family, self.k, idx)),
                        Pending::Get(ks.full(family, idx)),
                    ]));
                }
                Lookup::Absent => DraftChunk {
                    orig: Expect::Absent,
                    chunk: Chunk {
                        bits: Bitmap::new(1usize << self.k),
                        cursor: 0,
                    },
                    was_full: false,
                },
                Lookup::Present(c) => DraftChunk {
                    orig: self.known.chunk_expect(family, idx),
                    chunk: c.clone(),
                    was_full: is_full(self.net, family, self.k, idx, c),
                },
                Lookup::Corrupt(e) => {
                    return Err(Stop::Fail(AllocError::CorruptChunk {
                        key: self.known.keyspace().chunk(family, self.k, idx),
                        source: e.clone(),
                    }))
                }
            };
            self.chunks.insert((family, idx), d);
        }
        match self.chunks.get_mut(&(family, idx)) {
            Some(d) => Ok(&mut d.chunk),
            None => Err(Stop::Fail(AllocError::Exhausted {
                set: 0,
                ranges: "internal: draft chunk vanished".into(),
            })),
        }
    }

    fn full_mut(&mut self, key: &Key) -> Result<&mut DraftFull, Stop> {
        if !self.full.contains_key(key) {
            let d = match self.known.full(key) {
                FullLookup::Unknown => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
                FullLookup::Absent => DraftFull {
                    orig: Expect::Absent,
                    set: RoaringTreemap::new(),
                    dirty: false,
                },
                FullLookup::Present(set) => DraftFull {
                    orig: self.known.full_expect(key),
                    set: set.clone(),
                    dirty: false,
                },
                FullLookup::Corrupt(detail) => {
                    return Err(Stop::Fail(AllocError::CorruptFullSet {
                        key: key.clone(),
                        detail: detail.to_string(),
                    }))
                }
            };
            self.full.insert(key.clone(), d);
        }
        match self.full.get_mut(key) {
            Some(d) => Ok(d),
            None => Err(Stop::Need(vec![Pending::Get(key.clone())])),
        }
    }

    /// If the full-set hint lists chunk `idx`: how many consecutive chunks
    /// from `idx` (up to `run_end` and the end of its region) it lists.
    pub(super) fn full_run(
        &mut self,
        ks: &Keyspace,
        family: Family,
        idx: u128,
        run_end: u128,
    ) -> Result<Option<u128>, Stop> {
        let key = ks.full(family, idx);
        if !self.full.contains_key(&key) && matches!(self.known.full(&key), FullLookup::Corrupt(_))
        {
            // Only a hint: a corrupt full-set means "no hint" when reading;
            // it is an error only where a transaction must change it.
            return Ok(None);
        }
        let d = self.full_mut(&key)?;
        let lo = idx as u64;
        let hi = run_end.min(idx | u128::from(u64::MAX)) as u64;
        if !d.set.contains(lo) {
            return Ok(None);
        }
        Ok(Some(match fullset::first_absent(&d.set, lo, hi) {
            Some(x) => u128::from(x - lo),
            None => u128::from(hi - lo) + 1,
        }))
    }

    /// Adds compares, puts and conflict reads for every modified chunk and
    /// the full-set changes they imply.
    ///
    /// One function because its steps share one list of changes and must
    /// run in this order: every full-set read it may need is asked for
    /// before it adds anything to `txn`.
    pub(super) fn finish(mut self, ctx: &Ctx<'_>, txn: &mut Txn) -> Result<(), Stop> {
        let k = ctx.k();
        let chunks = std::mem::take(&mut self.chunks);
        // Full-set changes: only where the chunk was full before this
        // transaction or is full after it (a chunk neither full before nor
        // after cannot be listed, apart from a stale hint, which is harmless).
        let changes: Vec<((Family, u128), bool)> = chunks
            .iter()
            .filter_map(|(key, d)| {
                let full_now = is_full(ctx.net, key.0, k, key.1, &d.chunk);
                (full_now || d.was_full).then_some((*key, full_now))
            })
            .collect();
        // Make sure every full-set needed is known, in one batch of reads.
        let missing: Vec<Pending> = changes
            .iter()
            .map(|((f, idx), _)| ctx.ks.full(*f, *idx))
            .filter(|key| !self.full.contains_key(key) && !self.known.full_known(key))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(Pending::Get)
            .collect();
        if !missing.is_empty() {
            return Err(Stop::Need(missing));
        }
        for ((family, idx), d) in &chunks {
            let key = ctx.ks.chunk(*family, k, *idx);
            txn.compares.push(Compare {
                key: key.clone(),
                expect: d.orig.clone(),
            });
            txn.ops.push(Op::Put(key.clone(), codec::encode(&d.chunk)));
            txn.read_on_conflict.push(key);
        }
        for ((family, idx), full_now) in changes {
            let fkey = ctx.ks.full(family, idx);
            let f = self.full_mut(&fkey)?;
            let listed = f.set.contains(idx as u64);
            if full_now && !listed {
                f.set.insert(idx as u64);
                f.dirty = true;
            } else if !full_now && listed {
                f.set.remove(idx as u64);
                f.dirty = true;
            }
        }
        for (key, f) in &self.full {
            if !f.dirty {
                continue;
            }
            txn.compares.push(Compare {
                key: key.clone(),
                expect: f.orig.clone(),
            });
            if f.set.is_empty() {
                txn.ops.push(Op::Delete(key.clone()));
            } else {
                txn.ops.push(Op::Put(key.clone(), fullset::encode(&f.set)));
            }
            txn.read_on_conflict.push(key.clone());
        }
        Ok(())
    }
}

/// A chunk is full when no set of its family has a free ordinary address in
/// it. Only the sets with a range in the chunk build a mask (a set elsewhere
/// has none free there), so this is O(sets · log ranges + chunk · touching
/// sets), not O(sets · chunk).
pub(super) fn is_full(net: &Network, family: Family, k: u8, idx: u128, chunk: &Chunk) -> bool {
    net.sets
        .iter()
        .filter(|s| s.family() == family && geometry::touches(s, k, idx))
        .all(|s| chunk.bits.count_free(&geometry::normal_mask(s, k, idx)) == 0)
}
