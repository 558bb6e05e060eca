//! One chunk of 2^k consecutive addresses as bits (set = taken), plus the
//! same type used as an *allowed mask* (set = may be handed out).
//!
//! Word-at-a-time search: finding a free allowed bit costs O(chunk / 64) in
//! the worst case, independent of the range size. Pure: no I/O.
//!
//! Invariant: the bits of the last backing word past [`Bitmap::len`] are
//! always zero, so [`Bitmap::words`] can be written out (and compared, and
//! hashed) as is. Every constructor and mutator keeps it.
//!
//! ```
//! use host_etcd::bitmap::Bitmap;
//!
//! let mut taken = Bitmap::new(256);
//! let allowed = Bitmap::full(256);
//! taken.set_range(0, 9);
//! assert_eq!(taken.find_free(0, &allowed), Some(10));
//! assert_eq!(taken.count_free(&allowed), 246);
//! ```

use bitvec::prelude::*;

/// A fixed-length bit set backed by `u64` words (LSB first).
///
/// Equality and hashing work on the backing words (the dead bits past `len`
/// are always zero, so equal bitmaps have equal words).
#[derive(Clone, Debug)]
pub struct Bitmap {
    bits: BitVec<u64, Lsb0>,
}

impl PartialEq for Bitmap {
    fn eq(&self, other: &Bitmap) -> bool {
        self.len() == other.len() && self.words() == other.words()
    }
}

impl Eq for Bitmap {}

impl std::hash::Hash for Bitmap {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.len().hash(state);
        self.words().hash(state);
    }
}

/// Ascending indices of the set bits of LSB-first words, found a word at a
/// time (`trailing_zeros`): O(words + ones).
#[derive(Clone, Debug)]
pub struct Ones<'a> {
    words: &'a [u64],
    /// Index of the word `current` came from.
    at: usize,
    /// The not yet reported bits of word `at`.
    current: u64,
}

impl<'a> Ones<'a> {
    /// The set bits of `words`.
    pub(crate) fn new(words: &'a [u64]) -> Ones<'a> {
        Ones {
            words,
            at: 0,
            current: words.first().copied().unwrap_or(0),
        }
    }
}

impl Iterator for Ones<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            self.at += 1;
            self.current = *self.words.get(self.at)?;
        }
        let bit = self.current.trailing_zeros() as usize;
        // Clear the lowest set bit.
        self.current &= self.current - 1;
        Some(self.at * 64 + bit)
    }
}

/// Mask of the valid bits in the last word of a `len`-bit bitmap.
fn tail_mask(len: usize) -> u64 {
    match len % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

impl Bitmap {
    /// `len` bits, all clear.
    ///
    /// ```
    /// let b = host_etcd::bitmap::Bitmap::new(10);
    /// assert_eq!((b.len(), b.count_ones()), (10, 0));
    /// ```
    pub fn new(len: usize) -> Self {
        Bitmap {
            bits: BitVec::repeat(false, len),
        }
    }

    /// `len` bits, all set.
    ///
    /// ```
    /// let b = host_etcd::bitmap::Bitmap::full(10);
    /// assert_eq!(b.count_ones(), 10);
    /// assert_eq!(b.words(), &[0x3ff]);
    /// ```
    pub fn full(len: usize) -> Self {
        let mut bits = BitVec::repeat(true, len);
        // `repeat` fills whole words; keep the dead bits zero.
        bits.set_uninitialized(false);
        Bitmap { bits }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether the bitmap has zero bits.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Bit `i`; `false` when out of bounds.
    pub fn get(&self, i: usize) -> bool {
        self.bits.get(i).map(|b| *b).unwrap_or(false)
    }

    /// Sets bit `i`, returning its previous value. Out of bounds: no-op, `false`.
    ///
    /// ```
    /// let mut b = host_etcd::bitmap::Bitmap::new(4);
    /// assert!(!b.set(2));
    /// assert!(b.set(2));
    /// assert!(!b.set(4)); // out of bounds
    /// ```
    pub fn set(&mut self, i: usize) -> bool {
        match self.bits.get_mut(i) {
            Some(mut bit) => std::mem::replace(&mut *bit, true),
            None => false,
        }
    }

    /// Clears bit `i`, returning its previous value. Out of bounds: no-op, `false`.
    ///
    /// ```
    /// let mut b = host_etcd::bitmap::Bitmap::full(4);
    /// assert!(b.clear(1));
    /// assert!(!b.clear(1));
    /// ```
    pub fn clear(&mut self, i: usize) -> bool {
        match self.bits.get_mut(i) {
            Some(mut bit) => std::mem::replace(&mut *bit, false),
            None => false,
        }
    }

    /// Sets every bit in `lo..=hi` (clamped to the length). `lo > hi` or
    /// `lo >= len` is a no-op.
    ///
    /// ```
    /// let mut b = host_etcd::bitmap::Bitmap::new(8);
    /// b.set_range(6, 100);
    /// assert_eq!(b.words(), &[0b1100_0000]);
    /// ```
    pub fn set_range(&mut self, lo: usize, hi: usize) {
        let len = self.len();
        if lo > hi || lo >= len {
            return;
        }
        let end = hi.min(len - 1);
        set_word_range(self.bits.as_raw_mut_slice(), lo, end);
    }

    /// The first index `i` at or after `from` (wrapping to 0 after the end,
    /// stopping before `from` again) with `self[i]` clear and `allowed[i]`
    /// set. `from >= len` behaves like 0. Only indices below both lengths
    /// are considered. Word-at-a-time: O(len / 64).
    ///
    /// ```
    /// use host_etcd::bitmap::Bitmap;
    /// let mut taken = Bitmap::new(128);
    /// taken.set_range(100, 127);
    /// let allowed = Bitmap::full(128);
    /// assert_eq!(taken.find_free(100, &allowed), Some(0)); // wrapped
    /// ```
    pub fn find_free(&self, from: usize, allowed: &Bitmap) -> Option<usize> {
        let n = self.len().min(allowed.len());
        if n == 0 {
            return None;
        }
        let from = if from >= n { 0 } else { from };
        let nwords = n.div_ceil(64);
        let free = |w: usize| -> u64 { self.free_word(allowed, w, n, nwords) };
        let hit = |w: usize, c: u64| w * 64 + c.trailing_zeros() as usize;

        let (start_word, start_bit) = (from / 64, from % 64);
        let first = free(start_word) & (u64::MAX << start_bit);
        if first != 0 {
            return Some(hit(start_word, first));
        }
        for w in (start_word + 1..nwords).chain(0..start_word) {
            let c = free(w);
            if c != 0 {
                return Some(hit(w, c));
            }
        }
        // The bits of the starting word below `from`.
        let last = free(start_word) & !(u64::MAX << start_bit);
        (last != 0).then(|| hit(start_word, last))
    }

    /// Number of indices clear here and set in `allowed` (indices below both
    /// lengths). Word-at-a-time: O(len / 64).
    ///
    /// ```
    /// use host_etcd::bitmap::Bitmap;
    /// let mut taken = Bitmap::new(100);
    /// taken.set_range(0, 9);
    /// let mut allowed = Bitmap::new(100);
    /// allowed.set_range(5, 14);
    /// assert_eq!(taken.count_free(&allowed), 5);
    /// ```
    pub fn count_free(&self, allowed: &Bitmap) -> usize {
        let n = self.len().min(allowed.len());
        let nwords = n.div_ceil(64);
        (0..nwords)
            .map(|w| self.free_word(allowed, w, n, nwords).count_ones() as usize)
            .sum()
    }

    /// Word `w` of `!self & allowed`, restricted to the first `n` bits
    /// (`nwords = ceil(n / 64)`).
    fn free_word(&self, allowed: &Bitmap, w: usize, n: usize, nwords: usize) -> u64 {
        let taken = self.words().get(w).copied().unwrap_or(u64::MAX);
        let allow = allowed.words().get(w).copied().unwrap_or(0);
        let c = !taken & allow;
        if w + 1 == nwords {
            c & tail_mask(n)
        } else {
            c
        }
    }

    /// Indices of set bits, ascending. Word-at-a-time: O(len / 64 + ones).
    pub fn iter_ones(&self) -> Ones<'_> {
        Ones::new(self.words())
    }

    /// The backing words (LSB-first); bits past `len` are zero.
    pub fn words(&self) -> &[u64] {
        self.bits.as_raw_slice()
    }

    /// Builds a bitmap of `len` bits from LSB-first words; `None` if the
    /// word count is not `ceil(len / 64)` or bits past `len` are set.
    ///
    /// ```
    /// use host_etcd::bitmap::Bitmap;
    /// assert!(Bitmap::from_words(4, &[0b1010]).is_some());
    /// assert!(Bitmap::from_words(4, &[0b1_0000]).is_none()); // bit 4 set
    /// assert!(Bitmap::from_words(65, &[0]).is_none()); // needs 2 words
    /// ```
    pub fn from_words(len: usize, words: &[u64]) -> Option<Self> {
        Bitmap::from_word_vec(len, words.to_vec())
    }

    /// [`Bitmap::from_words`] taking ownership of the words (no copy).
    pub(crate) fn from_word_vec(len: usize, words: Vec<u64>) -> Option<Self> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        if let Some(last) = words.last() {
            if last & !tail_mask(len) != 0 {
                return None;
            }
        }
        let mut bits = BitVec::<u64, Lsb0>::try_from_vec(words).ok()?;
        bits.truncate(len);
        Some(Bitmap { bits })
    }
}

/// Sets bits `lo..=hi` of LSB-first `words`, a word at a time; indices past
/// the slice are ignored. `lo > hi` is a no-op.
pub(crate) fn set_word_range(words: &mut [u64], lo: usize, hi: usize) {
    if lo > hi {
        return;
    }
    let (first, last) = (lo / 64, hi / 64);
    let low_mask = u64::MAX << (lo % 64);
    let high_mask = u64::MAX >> (63 - hi % 64);
    if first == last {
        if let Some(w) = words.get_mut(first) {
            *w |= low_mask & high_mask;
        }
        return;
    }
    if let Some(w) = words.get_mut(first) {
        *w |= low_mask;
    }
    let middle_end = last.min(words.len());
    if let Some(middle) = words.get_mut(first + 1..middle_end) {
        middle.fill(u64::MAX);
    }
    if let Some(w) = words.get_mut(last) {
        *w |= high_mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_find(taken: &Bitmap, from: usize, allowed: &Bitmap) -> Option<usize> {
        let n = taken.len().min(allowed.len());
        if n == 0 {
            return None;
        }
        let from = if from >= n { 0 } else { from };
        (from..n)
            .chain(0..from)
            .find(|&i| !taken.get(i) && allowed.get(i))
    }

    #[test]
    fn set_clear_return_previous_and_ignore_out_of_bounds() {
        let mut b = Bitmap::new(70);
        assert!(!b.set(69));
        assert!(b.set(69));
        assert!(b.get(69));
        assert!(!b.set(70));
        assert!(!b.clear(70));
        assert!(!b.get(70));
        assert!(b.clear(69));
        assert!(!b.clear(69));
        assert_eq!(b.count_ones(), 0);
        assert!(!b.set(usize::MAX));
    }

    #[test]
    fn full_keeps_dead_bits_zero() {
        for len in [0, 1, 63, 64, 65, 127, 128, 1000] {
            let b = Bitmap::full(len);
            assert_eq!(b.count_ones(), len);
            assert_eq!(b.words().len(), len.div_ceil(64));
            assert_eq!(Bitmap::from_words(len, b.words()), Some(b.clone()));
        }
    }

    #[test]
    fn set_range_clamps_and_ignores_empty_ranges() {
        let mut b = Bitmap::new(10);
        b.set_range(5, 3);
        b.set_range(10, 20);
        assert_eq!(b.count_ones(), 0);
        b.set_range(8, usize::MAX);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(b.words(), &[0b11_0000_0000]);
        let mut e = Bitmap::new(0);
        e.set_range(0, 0);
        assert!(e.is_empty());
    }

    #[test]
    fn from_words_validates() {
        assert_eq!(Bitmap::from_words(0, &[]), Some(Bitmap::new(0)));
        assert!(Bitmap::from_words(0, &[0]).is_none());
        assert!(Bitmap::from_words(64, &[]).is_none());
        assert!(Bitmap::from_words(64, &[0, 0]).is_none());
        assert_eq!(Bitmap::from_words(64, &[u64::MAX]), Some(Bitmap::full(64)));
        assert!(Bitmap::from_words(63, &[u64::MAX]).is_none());
        assert_eq!(
            Bitmap::from_words(63, &[u64::MAX >> 1]),
            Some(Bitmap::full(63))
        );
        let b = Bitmap::from_words(130, &[1, 0, 0b10]);
        assert_eq!(
            b.map(|b| b.iter_ones().collect::<Vec<_>>()),
            Some(vec![0, 129])
        );
    }

    #[test]
    fn find_free_starts_at_from_and_wraps() {
        let allowed = Bitmap::full(200);
        let mut taken = Bitmap::new(200);
        taken.set_range(50, 199);
        assert_eq!(taken.find_free(60, &allowed), Some(0));
        assert_eq!(taken.find_free(10, &allowed), Some(10));
        taken.set_range(0, 9);
        assert_eq!(taken.find_free(199, &allowed), Some(10));
        // Only the bit just before `from` in the same word is free.
        let mut t = Bitmap::full(128);
        t.clear(69);
        assert_eq!(t.find_free(70, &Bitmap::full(128)), Some(69));
        // Only a bit in the last partial word, reached after wrapping twice.
        let mut t = Bitmap::full(130);
        t.clear(129);
        assert_eq!(t.find_free(129, &Bitmap::full(130)), Some(129));
        assert_eq!(t.find_free(0, &Bitmap::full(130)), Some(129));
        // `from >= len` behaves like 0.
        assert_eq!(Bitmap::new(5).find_free(5, &Bitmap::full(5)), Some(0));
        assert_eq!(
            Bitmap::new(5).find_free(usize::MAX, &Bitmap::full(5)),
            Some(0)
        );
    }

    #[test]
    fn find_free_all_taken_or_nothing_allowed() {
        for len in [1, 63, 64, 65, 1024] {
            let all = Bitmap::full(len);
            assert_eq!(Bitmap::full(len).find_free(0, &all), None);
            assert_eq!(Bitmap::full(len).count_free(&all), 0);
            assert_eq!(Bitmap::new(len).find_free(len / 2, &Bitmap::new(len)), None);
            assert_eq!(Bitmap::new(len).count_free(&Bitmap::new(len)), 0);
        }
        assert_eq!(Bitmap::new(0).find_free(0, &Bitmap::new(0)), None);
    }

    #[test]
    fn find_free_respects_allowed_and_shorter_mask() {
        let taken = Bitmap::new(256);
        let mut allowed = Bitmap::new(256);
        allowed.set(3);
        allowed.set(200);
        assert_eq!(taken.find_free(4, &allowed), Some(200));
        assert_eq!(taken.find_free(201, &allowed), Some(3));
        assert_eq!(taken.count_free(&allowed), 2);
        // A shorter mask: indices past it are not allowed.
        let short = Bitmap::full(10);
        assert_eq!(taken.find_free(11, &short), Some(0));
        assert_eq!(taken.count_free(&short), 10);
        // A shorter taken map: indices past it do not exist.
        assert_eq!(Bitmap::full(10).find_free(0, &Bitmap::full(256)), None);
    }

    fn bitmap_strategy() -> impl Strategy<Value = Bitmap> {
        (0usize..300, any::<u64>(), 0u32..=100).prop_map(|(len, seed, pct)| {
            let mut s = seed | 1;
            let mut b = Bitmap::new(len);
            for i in 0..len {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if (s % 100) < u64::from(pct) {
                    b.set(i);
                }
            }
            b
        })
    }

    #[test]
    fn set_word_range_edges() {
        let mut w = [0u64; 3];
        set_word_range(&mut w, 63, 64);
        assert_eq!(w, [1 << 63, 1, 0]);
        let mut w = [0u64; 3];
        set_word_range(&mut w, 0, 191);
        assert_eq!(w, [u64::MAX; 3]);
        let mut w = [0u64; 2];
        set_word_range(&mut w, 70, 1000); // past the slice: ignored
        assert_eq!(w, [0, u64::MAX << 6]);
        set_word_range(&mut w, 5, 4);
        assert_eq!(w, [0, u64::MAX << 6]);
    }

    proptest! {
        #[test]
        fn find_free_matches_naive_scan(
            taken in bitmap_strategy(),
            allowed in bitmap_strategy(),
            from in 0usize..320,
        ) {
            prop_assert_eq!(taken.find_free(from, &allowed), naive_find(&taken, from, &allowed));
            let n = taken.len().min(allowed.len());
            let naive_count = (0..n).filter(|&i| !taken.get(i) && allowed.get(i)).count();
            prop_assert_eq!(taken.count_free(&allowed), naive_count);
        }

        /// The word-at-a-time paths agree with per-bit references.
        #[test]
        fn word_paths_match_per_bit(
            b in bitmap_strategy(),
            lo in 0usize..320,
            hi in 0usize..320,
        ) {
            let per_bit: Vec<usize> = (0..b.len()).filter(|&i| b.get(i)).collect();
            prop_assert_eq!(b.iter_ones().collect::<Vec<_>>(), per_bit);
            let mut fast = b.clone();
            fast.set_range(lo, hi);
            let mut slow = b.clone();
            if lo <= hi {
                for i in lo..=hi.min(b.len().saturating_sub(1)) {
                    slow.set(i);
                }
            }
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(
                (0..fast.len()).filter(|&i| fast.get(i)).count(),
                fast.count_ones()
            );
            // Dead bits stay zero, so words compare as bitmaps do.
            prop_assert_eq!(Bitmap::from_words(fast.len(), fast.words()), Some(fast.clone()));
        }

        #[test]
        fn words_round_trip(b in bitmap_strategy()) {
            prop_assert_eq!(Bitmap::from_words(b.len(), b.words()), Some(b.clone()));
            prop_assert_eq!(b.count_ones(), b.iter_ones().count());
        }
    }
}
