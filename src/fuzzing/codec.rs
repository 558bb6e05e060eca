//! Target `codec`: arbitrary bytes as chunk bytes (as they are and
//! re-framed with a valid header, see [`frame`]), and as a structured
//! [`ChunkInput`] round-tripped through every encoding.

use arbitrary::Arbitrary;

use super::from_bytes;
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk, Encoding, HEADER_LEN, MAGIC};

/// How a structured chunk's bits are filled.
#[derive(Arbitrary, Clone, Debug)]
pub enum Fill {
    /// No bit set.
    Empty,
    /// Every bit set.
    Full,
    /// These positions (modulo 2^k).
    Sparse(Vec<u32>),
    /// Runs `(start, len)` (modulo 2^k, clipped).
    Runs(Vec<(u32, u16)>),
    /// These words, repeated over the whole chunk.
    Words(Vec<u64>),
}

/// A structured chunk for the round-trip half of the [`codec()`] target.
#[derive(Arbitrary, Clone, Debug)]
pub struct ChunkInput {
    /// k is `1 + k % 16`.
    pub k: u8,
    /// The bits.
    pub fill: Fill,
    /// Cursor, reduced modulo 2^k.
    pub cursor: u32,
    /// Positions cleared after filling (modulo 2^k).
    pub holes: Vec<u32>,
}

impl ChunkInput {
    /// The chunk this input describes.
    pub fn chunk(&self) -> Chunk {
        let k = 1 + self.k % 16;
        let n = 1usize << k;
        // Whole-word fills are built as words: cheap even for k = 16.
        let word_fill = |f: &dyn Fn(usize) -> u64| {
            let words: Vec<u64> = (0..n.div_ceil(64))
                .map(|w| f(w) & if n < 64 { (1u64 << n) - 1 } else { u64::MAX })
                .collect();
            Bitmap::from_words(n, &words).unwrap_or_else(|| Bitmap::new(n))
        };
        let mut bits = match &self.fill {
            Fill::Full => word_fill(&|_| u64::MAX),
            Fill::Words(words) if !words.is_empty() => word_fill(&|w| words[w % words.len()]),
            _ => Bitmap::new(n),
        };
        match &self.fill {
            Fill::Sparse(v) => v.iter().take(256).for_each(|&i| {
                bits.set(i as usize % n);
            }),
            Fill::Runs(runs) => {
                for &(start, len) in runs.iter().take(64) {
                    let lo = start as usize % n;
                    let hi = (lo + usize::from(len)).min(n - 1);
                    bits.set_range(lo, hi);
                }
            }
            Fill::Empty | Fill::Full | Fill::Words(_) => {}
        }
        for &h in self.holes.iter().take(256) {
            bits.clear(h as usize % n);
        }
        Chunk {
            bits,
            cursor: self.cursor % (1u32 << k),
        }
    }
}

/// `bytes` with a correct magic, version, encoding tag (modulo 4), k (into
/// 1..=24), zero flags, cursor (modulo 2^k), payload length and checksum,
/// so that arbitrary payloads reach the payload decoders. `None` if too
/// short for a header.
pub fn frame(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let mut out = bytes.to_vec();
    out[..4].copy_from_slice(&MAGIC);
    out[4] = codec::FORMAT_VERSION;
    out[5] %= 4;
    out[6] = 1 + out[6] % codec::MAX_CHUNK_BITS;
    out[7] = 0;
    let cap = 1u32 << out[6];
    let cursor = u32::from_le_bytes([out[12], out[13], out[14], out[15]]) % cap;
    out[12..16].copy_from_slice(&cursor.to_le_bytes());
    let len = u32::try_from(out.len() - HEADER_LEN).ok()?;
    out[16..20].copy_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..20]);
    h.update(&out[HEADER_LEN..]);
    out[20..24].copy_from_slice(&h.finalize().to_le_bytes());
    Some(out)
}

/// Decodes `bytes`; if they decode, checks the chunk re-encodes to bytes
/// that decode back to it, canonically.
pub fn check_decode(bytes: &[u8]) {
    let Ok(chunk) = codec::decode(bytes) else {
        return;
    };
    let k = chunk
        .validate()
        .unwrap_or_else(|e| panic!("decoded an invalid chunk: {e}"));
    let header = codec::header_only(bytes).unwrap_or_else(|e| panic!("header_only: {e}"));
    assert_eq!(header.chunk_bits, k);
    assert_eq!(header.population, chunk.population());
    assert_eq!(header.cursor, chunk.cursor);
    check_roundtrip(&chunk);
}

/// `decode(encode_as(c, e)) == c` for every encoding, `decode(encode(c)) ==
/// c`, and `encode` is canonical.
pub fn check_roundtrip(chunk: &Chunk) {
    let k = chunk
        .validate()
        .unwrap_or_else(|e| panic!("invalid test chunk: {e}"));
    for e in Encoding::ALL {
        let bytes = codec::encode_as(chunk, e);
        match codec::decode_expecting(&bytes, k) {
            Ok(back) => assert_eq!(&back, chunk, "round trip through {e}"),
            Err(err) => panic!("encode_as({e}) does not decode: {err}"),
        }
    }
    let once = codec::encode(chunk);
    let back = codec::decode(&once).unwrap_or_else(|e| panic!("encode does not decode: {e}"));
    assert_eq!(&back, chunk, "round trip through encode");
    assert_eq!(codec::encode(&back), once, "encode is not canonical");
}

/// Target `codec`: `bytes` as chunk bytes (as is, and re-framed with
/// [`frame`] so the payload decoders see them), then the same bytes as a
/// [`ChunkInput`] round-tripped through every encoding.
pub fn codec(bytes: &[u8]) {
    check_decode(bytes);
    if let Some(framed) = frame(bytes) {
        check_decode(&framed);
    }
    if let Some(input) = from_bytes::<ChunkInput>(bytes) {
        check_roundtrip(&input.chunk());
    }
}
