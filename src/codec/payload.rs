//! The four payload encodings of a chunk bitmap, their size bounds, and
//! their bounded decoders.
//!
//! - raw: `ceil(2^k / 64)` u64 words, little-endian, LSB-first.
//! - roaring: roaring's portable serialization of the set indices, written
//!   canonically a word at a time (the bytes of `from_sorted_iter` +
//!   `optimize()`: run containers exactly where they are smaller; see
//!   [`super::roaring_words`]); decoded by validating with the `roaring` crate, then
//!   reading the words container by container.
//! - zstd variants: one of the above compressed at [`ZSTD_LEVEL`]; decoded
//!   with a capacity limit equal to the largest valid uncompressed payload.

use std::cell::RefCell;

use roaring::RoaringBitmap;

use super::{CodecError, Encoding};
use crate::bitmap::Bitmap;

/// zstd compression level of the zstd encodings.
pub const ZSTD_LEVEL: i32 = 3;

/// Bytes of a raw payload for chunk_bits `k`: `ceil(2^k / 64) * 8`.
pub(crate) fn raw_len(k: u8) -> usize {
    (1usize << k).div_ceil(64) * 8
}

/// The largest canonical roaring payload for chunk_bits `k`: the header of
/// either roaring layout, plus per container the smaller of a full array
/// (2 bytes per value) and a bitmap container (8 KiB). Canonical containers
/// (after `optimize()`) are never larger than either.
pub(crate) fn roaring_max_len(k: u8) -> usize {
    let bits = 1usize << k;
    let containers = bits.div_ceil(1 << 16);
    let header = 8 + containers.div_ceil(8) + 8 * containers;
    let per_container = (2 * bits.min(1 << 16)).min(8192);
    header + containers * per_container
}

/// The largest valid payload of `encoding` for chunk_bits `k`.
pub(crate) fn max_payload_len(encoding: Encoding, k: u8) -> usize {
    match encoding {
        Encoding::Raw => raw_len(k),
        Encoding::Roaring => roaring_max_len(k),
        Encoding::RawZstd => zstd::zstd_safe::compress_bound(raw_len(k)),
        Encoding::RoaringZstd => zstd::zstd_safe::compress_bound(roaring_max_len(k)),
    }
}

/// Raw payload bytes of `bits`.
pub(crate) fn encode_raw(bits: &Bitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(bits.words().len() * 8);
    for w in bits.words() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Canonical roaring payload bytes of `bits`, written a word at a time
/// (see [`super::roaring_words`]).
pub(crate) fn encode_roaring(bits: &Bitmap) -> Vec<u8> {
    super::roaring_words::serialize(bits.words())
}

thread_local! {
    /// Per-thread zstd contexts: creating one costs tens of microseconds,
    /// more than compressing a chunk. Output does not depend on reuse.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd-compresses `bytes`; `None` if the zstd library fails (it does not for
/// in-memory buffers short of allocation failure).
pub(crate) fn compress(bytes: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?);
        }
        slot.as_mut()?.compress(bytes).ok()
    })
}

/// Decodes a payload of `encoding` into a bitmap of 2^k bits. The payload
/// length has already been checked against [`max_payload_len`].
pub(crate) fn decode(encoding: Encoding, k: u8, payload: &[u8]) -> Result<Bitmap, CodecError> {
    match encoding {
        Encoding::Raw => decode_raw(encoding, k, payload),
        Encoding::Roaring => decode_roaring(k, payload),
        Encoding::RawZstd => decode_raw(encoding, k, &decompress(payload, raw_len(k))?),
        Encoding::RoaringZstd => decode_roaring(k, &decompress(payload, roaring_max_len(k))?),
    }
}

/// Bounded zstd decompression: never allocates more than `limit` bytes of
/// output, so a zstd bomb fails instead of exhausting memory.
fn decompress(payload: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let fail = |e: &dyn std::fmt::Display| {
        CodecError::Payload(format!("zstd (output limit {limit} bytes): {e}"))
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|e| fail(&format!("context busy: {e}")))?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| fail(&e))?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, limit).map_err(|e| fail(&e)),
            None => Err(fail(&"no context")),
        }
    })
}

fn decode_raw(encoding: Encoding, k: u8, payload: &[u8]) -> Result<Bitmap, CodecError> {
    let expected = raw_len(k);
    if payload.len() != expected {
        return Err(CodecError::RawLength {
            encoding,
            len: payload.len(),
            expected,
        });
    }
    let words: Vec<u64> = payload
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    let len = 1usize << k;
    // Only k < 6 leaves bits past 2^k in the (single) word.
    if let Some(&last) = words.last() {
        let dead = if len.is_multiple_of(64) {
            0
        } else {
            last & !((1u64 << (len % 64)) - 1)
        };
        if dead != 0 {
            let index = (words.len() as u64 - 1) * 64 + u64::from(dead.trailing_zeros());
            return Err(CodecError::IndexOutOfRange {
                index,
                chunk_bits: k,
            });
        }
    }
    Bitmap::from_word_vec(len, words)
        .ok_or_else(|| CodecError::Payload(format!("raw payload does not form a {len}-bit bitmap")))
}

fn decode_roaring(k: u8, payload: &[u8]) -> Result<Bitmap, CodecError> {
    let mut reader = payload;
    let rb = RoaringBitmap::deserialize_from(&mut reader)
        .map_err(|e| CodecError::Payload(format!("roaring: {e}")))?;
    if !reader.is_empty() {
        return Err(CodecError::Payload(format!(
            "roaring: {} trailing bytes after the serialized bitmap",
            reader.len()
        )));
    }
    let len = 1usize << k;
    if let Some(max) = rb.max() {
        if u64::from(max) >= len as u64 {
            return Err(CodecError::IndexOutOfRange {
                index: u64::from(max),
                chunk_bits: k,
            });
        }
    }
    // `rb` has validated the structure (sorted keys and values, sane runs,
    // bitmap cardinalities) and every value is below 2^k: read the words
    // straight from the bytes, a container at a time.
    let words = super::roaring_words::to_words(payload, len.div_ceil(64)).ok_or_else(|| {
        CodecError::Payload("roaring: payload does not parse as a bitmap".to_string())
    })?;
    Bitmap::from_word_vec(len, words).ok_or_else(|| {
        CodecError::Payload(format!("roaring payload does not form a {len}-bit bitmap"))
    })
}
