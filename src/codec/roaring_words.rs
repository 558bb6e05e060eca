//! The roaring payload, a word at a time: the canonical serialization of a
//! chunk bitmap written straight from its `u64` words, and the conversion of
//! a roaring payload (already validated by the `roaring` crate) back into
//! words.
//!
//! The writer produces exactly the bytes that `roaring`'s
//! `RoaringBitmap::from_sorted_iter(ones)` + `optimize()` + `serialize_into`
//! produce (the original format-v1 writer; the unit tests here compare the
//! two on random bitmaps at several k), without inserting bits one by one:
//!
//! - one container per 65,536-bit block with at least one set bit, key =
//!   block index;
//! - a container of cardinality `c <= 4096` with `r` runs is an array
//!   (`2c` bytes) if `2c <= 2 + 4r`, else a run container; a container with
//!   `c > 4096` is a bitmap (8 KiB) if `8192 <= 2 + 4r`, else a run
//!   container (this is `from_sorted_iter`'s array/bitmap choice followed by
//!   `optimize()`'s run choice);
//! - the header is the portable format's: cookie 12346 + container count
//!   when there are no run containers, else cookie 12347 with the count in
//!   the high 16 bits and a run-container bitset; descriptions (key,
//!   cardinality - 1); offsets unless there are run containers and fewer
//!   than 4 containers.
//!
//! Cost: O(words + set bits in array containers + runs in run containers).

use crate::bitmap::{set_word_range, Ones};

const SERIAL_COOKIE_NO_RUN: u32 = 12346;
const SERIAL_COOKIE: u16 = 12347;
/// With run containers, offsets are written only from this many containers on.
const NO_OFFSET_THRESHOLD: usize = 4;
/// Largest cardinality stored as an array container (before `optimize`).
const ARRAY_LIMIT: u64 = 4096;
/// Words of a container's 65,536-bit block.
const CONTAINER_WORDS: usize = 1024;
/// Bytes of a bitmap container.
const BITMAP_BYTES: u64 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Array,
    Bitmap,
    Run,
}

/// One non-empty container of the canonical serialization.
struct Container<'a> {
    key: u16,
    /// The block's words (fewer than 1024 for a chunk under 2^16 bits).
    words: &'a [u64],
    /// Set bits, `1..=65536`.
    card: u64,
    /// Maximal runs of set bits.
    runs: u64,
    kind: Kind,
}

impl Container<'_> {
    fn body_len(&self) -> u64 {
        match self.kind {
            Kind::Array => 2 * self.card,
            Kind::Bitmap => BITMAP_BYTES,
            Kind::Run => 2 + 4 * self.runs,
        }
    }
}

/// Number of maximal runs of set bits in LSB-first `words`: the bits set
/// whose lower neighbour is clear, counted a word at a time.
pub(crate) fn count_runs(words: &[u64]) -> u64 {
    let mut carry = 0u64;
    let mut runs = 0u64;
    for &w in words {
        let starts = w & !((w << 1) | carry);
        runs += u64::from(starts.count_ones());
        carry = w >> 63;
    }
    runs
}

/// The first set bit at or after `from`, if any.
fn next_one(words: &[u64], from: usize) -> Option<usize> {
    let mut at = from / 64;
    let mut cur = words.get(at)? & (u64::MAX << (from % 64));
    loop {
        if cur != 0 {
            return Some(at * 64 + cur.trailing_zeros() as usize);
        }
        at += 1;
        cur = *words.get(at)?;
    }
}

/// The first clear bit at or after `from`; `words.len() * 64` if none.
fn next_zero(words: &[u64], from: usize) -> usize {
    let end = words.len() * 64;
    let mut at = from / 64;
    let Some(first) = words.get(at) else {
        return end;
    };
    let mut cur = !first & (u64::MAX << (from % 64));
    loop {
        if cur != 0 {
            return at * 64 + cur.trailing_zeros() as usize;
        }
        at += 1;
        match words.get(at) {
            Some(w) => cur = !w,
            None => return end,
        }
    }
}

/// Maximal runs `(first, last)` (inclusive) of set bits in `words`.
fn runs(words: &[u64]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let start = next_one(words, pos)?;
        let end = next_zero(words, start);
        pos = end;
        Some((start, end - 1))
    })
}

fn containers(words: &[u64]) -> Vec<Container<'_>> {
    words
        .chunks(CONTAINER_WORDS)
        .enumerate()
        .filter_map(|(key, ws)| {
            let card: u64 = ws.iter().map(|w| u64::from(w.count_ones())).sum();
            if card == 0 {
                return None;
            }
            let runs = count_runs(ws);
            let run_bytes = 2 + 4 * runs;
            let kind = if card <= ARRAY_LIMIT {
                if 2 * card <= run_bytes {
                    Kind::Array
                } else {
                    Kind::Run
                }
            } else if BITMAP_BYTES <= run_bytes {
                Kind::Bitmap
            } else {
                Kind::Run
            };
            Some(Container {
                // A chunk has at most 2^24 bits: 256 containers.
                key: u16::try_from(key).ok()?,
                words: ws,
                card,
                runs,
                kind,
            })
        })
        .collect()
}

fn header_len(size: usize, has_run: bool) -> usize {
    if has_run {
        let offsets = if size >= NO_OFFSET_THRESHOLD { 4 } else { 0 };
        4 + (4 + offsets) * size + size.div_ceil(8)
    } else {
        8 + 8 * size
    }
}

fn push_u16(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&u16::try_from(v).unwrap_or(u16::MAX).to_le_bytes());
}

fn push_u32(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
}

/// The canonical roaring serialization of the bitmap whose LSB-first words
/// are `words` (at most 2^24 bits).
pub(crate) fn serialize(words: &[u64]) -> Vec<u8> {
    let cs = containers(words);
    let size = cs.len();
    let has_run = cs.iter().any(|c| c.kind == Kind::Run);
    let header = header_len(size, has_run);
    let body: u64 = cs.iter().map(Container::body_len).sum();
    let mut out = Vec::with_capacity(header + usize::try_from(body).unwrap_or(0));
    if has_run {
        // `has_run` implies at least one container.
        let cookie = u64::from(SERIAL_COOKIE) | ((size as u64 - 1) << 16);
        push_u32(&mut out, cookie);
        let mut run_set = vec![0u8; size.div_ceil(8)];
        for (i, c) in cs.iter().enumerate() {
            if c.kind == Kind::Run {
                if let Some(b) = run_set.get_mut(i / 8) {
                    *b |= 1 << (i % 8);
                }
            }
        }
        out.extend_from_slice(&run_set);
    } else {
        push_u32(&mut out, u64::from(SERIAL_COOKIE_NO_RUN));
        push_u32(&mut out, size as u64);
    }
    for c in &cs {
        push_u16(&mut out, u64::from(c.key));
        push_u16(&mut out, c.card - 1);
    }
    if !has_run || size >= NO_OFFSET_THRESHOLD {
        let mut offset = header as u64;
        for c in &cs {
            push_u32(&mut out, offset);
            offset += c.body_len();
        }
    }
    for c in &cs {
        match c.kind {
            Kind::Array => {
                for i in Ones::new(c.words) {
                    push_u16(&mut out, i as u64);
                }
            }
            Kind::Bitmap => {
                for j in 0..CONTAINER_WORDS {
                    let w = c.words.get(j).copied().unwrap_or(0);
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            Kind::Run => {
                push_u16(&mut out, c.runs);
                for (first, last) in runs(c.words) {
                    push_u16(&mut out, first as u64);
                    push_u16(&mut out, (last - first) as u64);
                }
            }
        }
    }
    out
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(w))
    }
}

/// The `nwords` LSB-first words of a roaring payload that the `roaring`
/// crate has already accepted (`deserialize_from`: sorted keys and array
/// values, non-overlapping runs, bitmap cardinalities) and whose largest
/// value is below `nwords * 64`. Reads the same layout the crate reads:
/// array, bitmap or run containers, offsets skipped. `None` if the bytes do
/// not parse (they always do after that validation; no path panics).
pub(crate) fn to_words(payload: &[u8], nwords: usize) -> Option<Vec<u64>> {
    let mut r = Reader { bytes: payload };
    let cookie = r.u32()?;
    let (size, has_offsets, run_set) = if cookie == SERIAL_COOKIE_NO_RUN {
        (usize::try_from(r.u32()?).ok()?, true, None)
    } else if cookie as u16 == SERIAL_COOKIE {
        let size = (cookie >> 16) as usize + 1;
        (
            size,
            size >= NO_OFFSET_THRESHOLD,
            Some(r.take(size.div_ceil(8))?),
        )
    } else {
        return None;
    };
    if size > 1 << 16 {
        return None;
    }
    let mut descriptions = Reader {
        bytes: r.take(size.checked_mul(4)?)?,
    };
    if has_offsets {
        r.take(size * 4)?;
    }
    let mut words = vec![0u64; nwords];
    for i in 0..size {
        let base = usize::from(descriptions.u16()?) << 16;
        let card = usize::from(descriptions.u16()?) + 1;
        let is_run = run_set.is_some_and(|s| s.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0));
        if is_run {
            for _ in 0..r.u16()? {
                let start = base + usize::from(r.u16()?);
                let len = usize::from(r.u16()?);
                set_word_range(&mut words, start, start + len);
            }
        } else if card as u64 <= ARRAY_LIMIT {
            for _ in 0..card {
                let v = base + usize::from(r.u16()?);
                if let Some(w) = words.get_mut(v / 64) {
                    *w |= 1 << (v % 64);
                }
            }
        } else {
            let first = base / 64;
            for j in 0..CONTAINER_WORDS {
                let w = r.u64()?;
                if let Some(d) = words.get_mut(first + j) {
                    *d |= w;
                }
            }
        }
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::Bitmap;
    use proptest::prelude::*;
    use roaring::RoaringBitmap;

    /// The reference writer: per-bit inserts into the `roaring` crate.
    fn reference_serialize(bits: &Bitmap) -> Vec<u8> {
        let ones = bits.words().iter().enumerate().flat_map(|(w, &word)| {
            (0..64u32).filter_map(move |b| (word >> b & 1 == 1).then_some(w as u32 * 64 + b))
        });
        let mut rb = RoaringBitmap::from_sorted_iter(ones).unwrap_or_default();
        rb.optimize();
        let mut out = Vec::new();
        rb.serialize_into(&mut out).unwrap_or_default();
        out
    }

    /// The reference reader: per-value iteration of the `roaring` crate.
    fn reference_words(payload: &[u8], nwords: usize) -> Option<Vec<u64>> {
        let rb = RoaringBitmap::deserialize_from(payload).ok()?;
        let mut words = vec![0u64; nwords];
        for v in rb.iter() {
            let v = v as usize;
            *words.get_mut(v / 64)? |= 1 << (v % 64);
        }
        Some(words)
    }

    /// Bitmaps of 2^k bits (k up to 18: four containers, so offsets are written) of random words
    /// at densities from 0.1% to 100%, plus runs and alternating words, so
    /// every container kind and boundary shows up. Built a word at a time
    /// (cheap in debug builds).
    fn bitmap_strategy() -> impl Strategy<Value = Bitmap> {
        let k = prop_oneof![3 => 1u8..=7, 3 => 10u8..=13, 1 => 15u8..=16, 1 => Just(18u8)];
        (
            k,
            any::<u64>(),
            0u8..8,
            prop::collection::vec((any::<u32>(), 0u32..70_000), 0..6),
            any::<bool>(),
        )
            .prop_map(|(k, seed, density, runs, alternate)| {
                let len = 1usize << k;
                let mut s = seed | 1;
                let mut next = move || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s
                };
                let mut and = |n: usize| (0..n).fold(u64::MAX, |w, _| w & next());
                let words: Vec<u64> = (0..len.div_ceil(64))
                    .map(|i| {
                        let w = match density {
                            0 => 0,
                            1 => and(10),
                            2 => and(6),
                            3 => and(2),
                            4 => and(1),
                            5 => !and(3),
                            6 => !and(6),
                            _ => u64::MAX,
                        };
                        if alternate && i % 3 == 0 {
                            0x5555_5555_5555_5555
                        } else {
                            w
                        }
                    })
                    .map(|w| if len < 64 { w & ((1 << len) - 1) } else { w })
                    .collect();
                let mut b = Bitmap::from_words(len, &words).unwrap_or_else(|| Bitmap::new(len));
                for (start, n) in runs {
                    let lo = start as usize % len;
                    b.set_range(lo, lo + n as usize);
                }
                b
            })
    }

    #[test]
    fn count_runs_edges() {
        assert_eq!(count_runs(&[]), 0);
        assert_eq!(count_runs(&[0, 0]), 0);
        assert_eq!(count_runs(&[u64::MAX, u64::MAX]), 1);
        assert_eq!(count_runs(&[1 << 63, 1]), 1);
        assert_eq!(count_runs(&[0x5555_5555_5555_5555]), 32);
        assert_eq!(
            runs(&[1 << 63, 1, 0b110]).collect::<Vec<_>>(),
            vec![(63, 64), (129, 130)]
        );
        assert_eq!(runs(&[u64::MAX]).collect::<Vec<_>>(), vec![(0, 63)]);
    }

    #[test]
    fn matches_reference_on_extremes() {
        for k in [1u8, 6, 7, 12, 13, 15, 16, 17] {
            let len = 1usize << k;
            let alt = vec![
                0xAAAA_AAAA_AAAA_AAAAu64
                    & if len < 64 { (1 << len) - 1 } else { u64::MAX };
                len.div_ceil(64)
            ];
            for b in [
                Bitmap::new(len),
                Bitmap::full(len),
                Bitmap::from_words(len, &alt).unwrap_or_else(|| Bitmap::new(len)),
            ] {
                let bytes = serialize(b.words());
                assert_eq!(bytes, reference_serialize(&b), "k={k}");
                assert_eq!(
                    to_words(&bytes, b.words().len()).as_deref(),
                    Some(b.words())
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The word-at-a-time writer and reader agree with per-bit
        /// references built on the `roaring` crate.
        #[test]
        fn word_paths_match_per_bit_reference(b in bitmap_strategy()) {
            let bytes = serialize(b.words());
            prop_assert_eq!(&bytes, &reference_serialize(&b));
            let nwords = b.words().len();
            prop_assert_eq!(to_words(&bytes, nwords), reference_words(&bytes, nwords));
            let back = to_words(&bytes, nwords);
            prop_assert_eq!(back.as_deref(), Some(b.words()));
            prop_assert_eq!(count_runs(b.words()), runs(b.words()).count() as u64);
        }

        /// Non-canonical but valid serializations (no `optimize`, so array
        /// and bitmap containers where runs would be smaller, and the
        /// opposite via `remove_run_compression`) read the same as the
        /// reference reader.
        #[test]
        fn reads_non_canonical_like_reference(b in bitmap_strategy(), unrun in any::<bool>()) {
            let mut rb: RoaringBitmap = b.iter_ones().map(|i| i as u32).collect();
            if unrun {
                rb.optimize();
                rb.remove_run_compression();
            }
            let mut bytes = Vec::new();
            rb.serialize_into(&mut bytes).unwrap_or_default();
            let nwords = b.words().len();
            prop_assert_eq!(to_words(&bytes, nwords), reference_words(&bytes, nwords));
        }

        /// Mutated serializations that the `roaring` crate still accepts
        /// read the same as the reference reader.
        #[test]
        fn reads_mutations_like_reference(
            b in bitmap_strategy(),
            flips in prop::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        ) {
            let mut bytes = serialize(b.words());
            for (at, mask) in flips {
                let n = bytes.len();
                bytes[at % n] ^= mask;
            }
            let nwords = b.words().len();
            let reference = reference_words(&bytes, nwords);
            if reference.is_some() {
                prop_assert_eq!(to_words(&bytes, nwords), reference);
            }
        }
    }
}
