//! Dynamic addresses: where a set's search starts (the node's position, or
//! a chunk of the start window drawn by the node's seed) and the search
//! over the set's candidate chunks for a free address.

use super::draft::Draft;
use super::{Ctx, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry::{self, Candidates};
use crate::allocator::state::{Lookup, Pending};
use crate::allocator::Assigned;
use crate::range::{from_u128, Family, RangeSet};

/// A set's ranges as `start-end, …` (for the exhaustion error).
fn describe(set: &RangeSet) -> String {
    set.ranges()
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many of a set's first chunks a node without a position may start
/// in: all of an IPv4 set, `ctx.window` of an IPv6 set (short addresses).
fn window(ctx: &Ctx<'_>, set: &RangeSet) -> u128 {
    match set.family() {
        Family::V4 => u128::MAX,
        Family::V6 => ctx.window.max(1),
    }
}

/// Where a search over a set's candidate chunks starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Start {
    /// Ordinal of the first chunk visited.
    pub(super) ord: u128,
    /// First bit looked at in that chunk; the bits below it are looked at
    /// last, after every other chunk (round robin over the whole set).
    bit: usize,
}

/// The staged or ordinary candidate chunks of a set, and where to start.
///
/// Ordinary requests start at the node's position (one past its last
/// dynamic address, so it walks the whole set before it comes back to an
/// address it released) or, without one, at the start of a chunk drawn by
/// the node's seed from the whole set (IPv4) or its first `ctx.window`
/// chunks (IPv6). Staged requests
/// start at their first reserved chunk.
pub(super) fn candidates(
    ctx: &Ctx<'_>,
    i: usize,
    set: &RangeSet,
    stage: Option<&str>,
) -> (Candidates, Start) {
    let k = ctx.k();
    match stage {
        Some(s) if set.has_stage(s) => (
            geometry::staged_candidates(set, s, k),
            Start { ord: 0, bit: 0 },
        ),
        _ => {
            let c = geometry::normal_candidates(set, k);
            let low = (1u128 << k) - 1;
            let at_position = ctx
                .positions
                .get(&i)
                .map(|pos| match c.ordinal_of(pos >> k) {
                    Some(ord) => Start {
                        ord,
                        bit: (pos & low) as usize,
                    },
                    // Past the end of a range: the next candidate chunk, or
                    // back to the first one.
                    None => Start {
                        ord: c.ordinal_after(pos >> k).unwrap_or(0),
                        bit: 0,
                    },
                });
            let start = at_position.unwrap_or_else(|| Start {
                ord: geometry::spread(ctx.seed, c.count().min(window(ctx, set))),
                bit: 0,
            });
            (c, start)
        }
    }
}

/// A new position for set `set_index`: the start of a chunk drawn by `seed`
/// from the whole set (IPv4) or its first `ctx.window` chunks (IPv6): a
/// node moving away from a chunk another node allocates in.
pub fn respread_position(ctx: &Ctx<'_>, set_index: usize, seed: u64) -> Option<u128> {
    let set = ctx.net.sets.get(set_index)?;
    let c = geometry::normal_candidates(set, ctx.k());
    let ord = geometry::spread(seed, c.count().min(window(ctx, set)));
    c.nth(ord).map(|idx| idx << ctx.k())
}

/// A free dynamic address of set `set_index` (of the request's stage when
/// the set reserves addresses for it), taken in the draft; or the reads the
/// search needs next, or exhaustion.
///
/// This function is the order of the visits, which share one step
/// counter: the first pass (skipping chunks the full-set lists), the
/// second pass (looking at every chunk), the jump over a listed run and
/// the wrap-around into the first chunk's lower bits all move it. What one
/// visit does in its chunk is [`Search::take_in_chunk`].
pub(super) fn pick_dynamic(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    set_index: usize,
    set: &RangeSet,
    stage: Option<&str>,
) -> Result<Assigned, Stop> {
    let staged = stage.filter(|s| set.has_stage(s));
    let (cands, start) = candidates(ctx, set_index, set, staged);
    let search = Search {
        ctx,
        set_index,
        set,
        staged,
        family: set.family(),
        cands,
    };
    let n = search.cands.count();
    // Visit every chunk once from the start; when the search started inside
    // a chunk, that chunk's lower bits come last (one more visit).
    let visits = if start.bit > 0 { n + 1 } else { n };
    // Ordinary requests skip chunks the full-set lists on a first pass and
    // look at them on a second pass before giving up (the set is a hint).
    let passes: &[bool] = if staged.is_some() {
        &[false]
    } else {
        &[true, false]
    };
    let mut corrupt = None;
    for &skip_listed_full in passes {
        let mut step: u128 = 0;
        while step < visits {
            let ord = (start.ord + step) % n;
            // Bits of this visit: [from, to).
            let bits = match step {
                0 => start.bit..usize::MAX,
                s if s == n => 0..start.bit,
                _ => 0..usize::MAX,
            };
            step += 1;
            let Some(idx) = search.cands.nth(ord) else {
                break;
            };
            // A chunk already read is looked at directly; the full-set is
            // consulted only to skip chunks not read yet or found full.
            if skip_listed_full && !search.known_free(draft, idx) {
                let run_end = search.cands.run_end(idx);
                if let Some(skip) = draft.full_run(ctx.ks, search.family, idx, run_end)? {
                    // Jump over the whole run of listed chunks (never past
                    // the last visit).
                    step = (step - 1 + skip).min(visits);
                    continue;
                }
            }
            // The first pass reads a few chunks at a time, the second (the
            // set nearly full) many.
            let read_limit = if skip_listed_full {
                ctx.read_limit
            } else {
                ctx.read_limit * 32
            };
            if let Some(got) = search.take_in_chunk(draft, idx, bits, read_limit, &mut corrupt)? {
                return Ok(got);
            }
        }
    }
    Err(Stop::Fail(search.exhausted(corrupt)))
}

/// One set's search for a dynamic address: what every visit needs.
struct Search<'a> {
    ctx: &'a Ctx<'a>,
    set_index: usize,
    set: &'a RangeSet,
    /// The request's stage, when the set reserves addresses for it.
    staged: Option<&'a str>,
    family: Family,
    cands: Candidates,
}

impl Search<'_> {
    /// Whether chunk `idx` is known to have a free bit (read and not full,
    /// or absent).
    fn known_free(&self, draft: &Draft<'_>, idx: u128) -> bool {
        match draft.view(self.family, idx) {
            Lookup::Present(c) => c.bits.count_ones() < c.bits.len(),
            Lookup::Absent => true,
            _ => false,
        }
    }

    /// Takes the first free bit of chunk `idx` in `bits` that the set (or
    /// its stage) allows, in the draft. `None`: no such bit, or the chunk
    /// is corrupt (recorded in `corrupt`, the first one kept: the search
    /// goes on and fails with it only if it finds nothing). A chunk not
    /// read yet stops the search with the read of the candidate run from
    /// it (at most `read_limit` present chunks).
    fn take_in_chunk(
        &self,
        draft: &mut Draft<'_>,
        idx: u128,
        bits: std::ops::Range<usize>,
        read_limit: usize,
        corrupt: &mut Option<AllocError>,
    ) -> Result<Option<Assigned>, Stop> {
        let (k, family) = (self.ctx.k(), self.family);
        let mask = match self.staged {
            Some(s) => geometry::staged_mask(self.set, s, k, idx),
            None => geometry::normal_mask(self.set, k, idx),
        };
        let bit = match draft.view(family, idx) {
            Lookup::Unknown => {
                return Err(Stop::Need(vec![Pending::Chunks {
                    family,
                    lo: idx,
                    hi: self.cands.run_end(idx),
                    limit: read_limit,
                }]));
            }
            Lookup::Corrupt(e) => {
                corrupt.get_or_insert_with(|| AllocError::CorruptChunk {
                    key: self.ctx.ks.chunk(family, k, idx),
                    source: e.clone(),
                });
                return Ok(None);
            }
            // An absent chunk is all free: the first allowed bit.
            Lookup::Absent => mask.iter_ones().find(|b| *b >= bits.start),
            Lookup::Present(c) => c.bits.find_free(bits.start.min(mask.len()), &mask),
        };
        // find_free wraps around the chunk: keep only [from, to).
        let Some(bit) = bit.filter(|b| bits.contains(b)) else {
            return Ok(None);
        };
        // The mask only allows addresses inside the set's ranges, so both
        // lookups succeed; check before touching the draft anyway.
        let Some(ip) = from_u128(family, (idx << k) + bit as u128) else {
            return Ok(None);
        };
        let Some((range_index, _)) = self.set.find(ip) else {
            return Ok(None);
        };
        let chunk = draft.chunk_mut(family, idx)?;
        chunk.bits.set(bit);
        chunk.cursor = ((bit + 1) % (1usize << k)) as u32;
        Ok(Some(Assigned {
            set: self.set_index,
            range: range_index,
            ip,
        }))
    }

    /// Why nothing was found: the first corrupt chunk seen, else the set
    /// (or its stage) is exhausted.
    fn exhausted(&self, corrupt: Option<AllocError>) -> AllocError {
        if let Some(e) = corrupt {
            return e;
        }
        match self.staged {
            Some(s) => AllocError::StageExhausted {
                stage: s.to_string(),
                set: self.set_index,
            },
            None => AllocError::Exhausted {
                set: self.set_index,
                ranges: describe(self.set),
            },
        }
    }
}
