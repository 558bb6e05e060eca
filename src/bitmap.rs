//! One chunk of 2^k consecutive addresses as bits (set = taken), plus the
//! same type used as an *allowed mask* (set = may be handed out).
//!
//! Word-at-a-time search: finding a free allowed bit costs O(chunk / 64) in
//! the worst case, independent of the range size. Pure: no I/O.

use bitvec::prelude::*;

/// A fixed-length bit set backed by `u64` words (LSB first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bitmap {
    bits: BitVec<u64, Lsb0>,
}

impl Bitmap {
    /// `len` bits, all clear.
    pub fn new(len: usize) -> Self {
        Bitmap {
            bits: BitVec::repeat(false, len),
        }
    }

    /// `len` bits, all set.
    pub fn full(len: usize) -> Self {
        Bitmap {
            bits: BitVec::repeat(true, len),
        }
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
        self.bits.count_ones()
    }

    /// Bit `i`; `false` when out of bounds.
    pub fn get(&self, i: usize) -> bool {
        self.bits.get(i).map(|b| *b).unwrap_or(false)
    }

    /// Sets bit `i`, returning its previous value. Out of bounds: no-op, `false`.
    pub fn set(&mut self, i: usize) -> bool {
        let _ = i;
        todo!("bitmap::set")
    }

    /// Clears bit `i`, returning its previous value. Out of bounds: no-op, `false`.
    pub fn clear(&mut self, i: usize) -> bool {
        let _ = i;
        todo!("bitmap::clear")
    }

    /// Sets every bit in `lo..=hi` (clamped to the length).
    pub fn set_range(&mut self, lo: usize, hi: usize) {
        let _ = (lo, hi);
        todo!("bitmap::set_range")
    }

    /// The first index `i` at or after `from` (wrapping to 0 after the end,
    /// stopping before `from` again) with `self[i]` clear and `allowed[i]`
    /// set. `from >= len` behaves like 0.
    pub fn find_free(&self, from: usize, allowed: &Bitmap) -> Option<usize> {
        let _ = (from, allowed);
        todo!("bitmap::find_free")
    }

    /// Number of indices clear here and set in `allowed`.
    pub fn count_free(&self, allowed: &Bitmap) -> usize {
        let _ = allowed;
        todo!("bitmap::count_free")
    }

    /// Indices of set bits, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter_ones()
    }

    /// The backing words (LSB-first); bits past `len` are zero.
    pub fn words(&self) -> &[u64] {
        self.bits.as_raw_slice()
    }

    /// Builds a bitmap of `len` bits from LSB-first words; `None` if the
    /// word count does not match or bits past `len` are set.
    pub fn from_words(len: usize, words: &[u64]) -> Option<Self> {
        let _ = (len, words);
        todo!("bitmap::from_words")
    }
}
