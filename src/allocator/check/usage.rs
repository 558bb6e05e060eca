//! Usage figures kept current between reads ([`UsageMirror`]): what a
//! scraper holds of a network's chunks so that each scrape reads only the
//! chunks written since the previous one.
//!
//! Pure: this module applies what a read returned and sums the figures;
//! `driver` does the reading. How a refresh stays exact:
//!
//! * Every range keeps `since`, the revision of the snapshot its last
//!   refresh started from. A refresh asks for the chunks of the range with
//!   `mod_revision > since` ([`Read::Changed`](crate::store::Read::Changed)),
//!   page after page, and takes the first page's snapshot revision as the
//!   next `since`: every write up to that revision is then reflected (the
//!   first page saw them; later pages read later snapshots, which hold them
//!   too), and anything newer is asked for again next time.
//! * A deleted chunk never shows up as changed. The answer's key count
//!   does: after a one-page refresh (one snapshot), the copy holds exactly
//!   as many keys as the store unless some were deleted, and then the copy
//!   of that range is dropped and read again whole. After a refresh of
//!   several pages the count may also differ because of chunks created
//!   between pages; the caller refreshes again, which is then usually one
//!   page.
//! * A store whose revision went back (etcd restored from an older
//!   snapshot) would hide every change below the old `since`: an answer
//!   older than `since` drops the copy too, and the caller drops a copy
//!   older than a few minutes (`driver`), whatever it holds.
//! * A refresh that fails (a chunk that does not decode, an unreachable
//!   store) drops the whole copy in the caller. One cut off midway (its
//!   future dropped at a deadline) leaves some chunks applied and `since`
//!   unchanged: the next refresh asks for them again, and applying a
//!   chunk twice changes nothing, so that copy is safe to go on with.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::RangeUsage;
use crate::allocator::keys::Keyspace;
use crate::allocator::state::decode_chunk;
use crate::allocator::AllocError;
use crate::range::Range;
use crate::store::{Key, Versioned};

/// What one chunk adds to its range's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChunkFigures {
    /// `false` for a key in the range's interval that is not a chunk key
    /// of this chunk size (kept only so that the key count compares).
    chunk: bool,
    /// Taken addresses of the chunk inside the range.
    used: u128,
    /// Bytes of the stored value.
    bytes: usize,
}

/// The stored chunks of one range, as of the revision `since`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RangeMirror {
    since: i64,
    chunks: BTreeMap<Key, ChunkFigures>,
}

impl RangeMirror {
    /// The revision the next refresh asks for changes after.
    pub(crate) fn since(&self) -> i64 {
        self.since
    }

    /// Applies chunks read as changed: each replaces what the copy held
    /// under its key. A chunk that does not decode is an error (the caller
    /// drops the copy).
    pub(crate) fn apply(
        &mut self,
        (ks, k): (&Keyspace, u8),
        r: &Range,
        kvs: &[(Key, Versioned)],
    ) -> Result<(), AllocError> {
        for (key, v) in kvs {
            let figures = chunk_figures((ks, k), r, key, v)?;
            self.chunks.insert(key.clone(), figures);
        }
        Ok(())
    }

    /// Ends a refresh whose first page was read at `revision` and counted
    /// `total` keys in the interval, over `pages` pages. Returns whether
    /// the copy agrees with the store; a one-page refresh that disagrees
    /// proves deletions, and a revision below the last one a store put
    /// back in time (etcd restored from an older snapshot): either way the
    /// copy is emptied to be read whole.
    pub(crate) fn finish(&mut self, revision: i64, total: u64, pages: usize) -> bool {
        let went_back = revision < self.since;
        self.since = revision;
        let agrees = !went_back && self.chunks.len() as u64 == total;
        if went_back || (!agrees && pages <= 1) {
            *self = RangeMirror::default();
        }
        agrees
    }

    /// The range's figures from the copy.
    pub(crate) fn usage(&self, (si, ri): (usize, usize), r: &Range) -> RangeUsage {
        let (mut used, mut chunks, mut bytes) = (0u128, 0usize, 0usize);
        for f in self.chunks.values().filter(|f| f.chunk) {
            used += f.used;
            chunks += 1;
            bytes += f.bytes;
        }
        RangeUsage {
            set: si,
            range: ri,
            subnet: r.subnet.to_string(),
            start: r.start,
            end: r.end,
            size: r.len() - r.excluded_len(),
            used,
            chunks,
            bytes,
        }
    }
}

/// A network's stored chunks, range by range, kept between scrapes by the
/// cluster exporter (`ipamctl metrics`). Built empty; the first refresh
/// reads every chunk, the next ones only what changed. Tied to the chunk
/// key intervals it was kept for (they name the chunk size too): a refresh
/// of others starts over.
#[derive(Clone, Debug, Default)]
pub(crate) struct UsageMirror {
    bounds: Vec<(Key, Key)>,
    ranges: Vec<RangeMirror>,
    /// When the copy was started (empty): see [`UsageMirror::older_than`].
    started: Option<Instant>,
}

impl UsageMirror {
    /// Whether the copy was started more than `age` ago. The caller then
    /// drops it and reads every chunk again, so that a change no refresh
    /// can see (an etcd restored from an older snapshot with its revision
    /// bumped past this copy's) is not kept for longer than that.
    pub(crate) fn older_than(&self, age: Duration) -> bool {
        self.started.is_some_and(|t| t.elapsed() > age)
    }

    /// The copies of the ranges whose chunk keys span `bounds` (one
    /// `[start, end)` per range): the ones held, or new empty ones when
    /// the mirror was kept for other ranges or another chunk size.
    pub(crate) fn ranges_for(&mut self, bounds: &[(Key, Key)]) -> &mut [RangeMirror] {
        if self.bounds != bounds {
            *self = UsageMirror {
                bounds: bounds.to_vec(),
                ranges: vec![RangeMirror::default(); bounds.len()],
                started: Some(Instant::now()),
            };
        }
        &mut self.ranges
    }
}

/// What the chunk stored under `key` adds to range `r`.
fn chunk_figures(
    (ks, k): (&Keyspace, u8),
    r: &Range,
    key: &str,
    v: &Versioned,
) -> Result<ChunkFigures, AllocError> {
    let Some(idx) = ks.parse_chunk(r.family(), k, key) else {
        return Ok(ChunkFigures::default());
    };
    let chunk = decode_chunk(&v.value, k).map_err(|e| AllocError::CorruptChunk {
        key: key.to_string(),
        source: e,
    })?;
    let base = idx << k;
    let (first, last) = (r.first(), r.last());
    let used = if first <= base && base + ((1u128 << k) - 1) <= last {
        chunk.bits.count_ones() as u128
    } else {
        chunk
            .bits
            .iter_ones()
            .filter(|b| (first..=last).contains(&(base + *b as u128)))
            .count() as u128
    };
    Ok(ChunkFigures {
        chunk: true,
        used,
        bytes: v.value.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_page_refresh_that_misses_keys_starts_over_and_several_pages_only_report_it() {
        let mut m = RangeMirror::default();
        m.chunks.insert("a".into(), ChunkFigures::default());
        m.chunks.insert("b".into(), ChunkFigures::default());
        assert!(m.finish(7, 2, 1));
        assert_eq!(m.since(), 7);
        // Two pages, one key fewer in the store: reported, copy kept.
        assert!(!m.finish(9, 1, 2));
        assert_eq!((m.since(), m.chunks.len()), (9, 2));
        // One page: a deletion for sure; read whole next time.
        assert!(!m.finish(11, 1, 1));
        assert_eq!((m.since(), m.chunks.len()), (0, 0));
        // A store whose revision went back (restored from an older
        // snapshot): read whole, even when the count agrees.
        m.chunks.insert("a".into(), ChunkFigures::default());
        assert!(m.finish(20, 1, 1));
        assert!(!m.finish(15, 1, 3));
        assert_eq!((m.since(), m.chunks.len()), (0, 0));
    }

    #[test]
    fn a_mirror_kept_for_other_ranges_starts_over() {
        let bounds = |a: &str| vec![(format!("{a}0"), format!("{a}9")), ("x".into(), "y".into())];
        let mut m = UsageMirror::default();
        m.ranges_for(&bounds("/c/4/"))[0].since = 5;
        assert_eq!(m.ranges_for(&bounds("/c/4/"))[0].since(), 5);
        assert_eq!(m.ranges_for(&bounds("/d/4/"))[0].since(), 0);
        m.ranges_for(&bounds("/d/4/"))[1].since = 5;
        assert_eq!(m.ranges_for(&bounds("/d/4/")[..1])[0].since(), 0);
        assert!(
            !UsageMirror::default().older_than(Duration::ZERO),
            "nothing kept yet"
        );
        std::thread::sleep(Duration::from_millis(2));
        assert!(m.older_than(Duration::from_millis(1)));
        assert!(!m.older_than(Duration::from_secs(3600)));
    }
}
