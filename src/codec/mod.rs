//! Chunk bytes <-> [`Chunk`]: the versioned, self-describing, checksummed
//! chunk format stored under `{prefix}/{net}/chunks/...` (see `FORMAT.md`
//! beside this file). Input is untrusted: decoding never panics, and every
//! problem is a typed [`CodecError`]. Pure: no I/O.

use crate::bitmap::Bitmap;

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 2^k bits, set = taken.
    pub bits: Bitmap,
    /// Round-robin cursor: the next search starts here.
    pub cursor: u32,
}

/// How the bitmap payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// The raw LSB-first words, little-endian.
    Raw,
    /// roaring's portable serialization of the set bits.
    Roaring,
    /// `Raw`, zstd-compressed.
    RawZstd,
    /// `Roaring`, zstd-compressed.
    RoaringZstd,
}

/// Why chunk bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Placeholder until the codec is implemented.
    #[error("{0}")]
    Invalid(String),
}

/// Encodes with the smallest encoding for this chunk.
pub fn encode(chunk: &Chunk) -> Vec<u8> {
    let _ = chunk;
    todo!("codec::encode")
}

/// Encodes with a given encoding.
pub fn encode_as(chunk: &Chunk, encoding: Encoding) -> Vec<u8> {
    let _ = (chunk, encoding);
    todo!("codec::encode_as")
}

/// Decodes and verifies chunk bytes.
pub fn decode(bytes: &[u8]) -> Result<Chunk, CodecError> {
    let _ = bytes;
    todo!("codec::decode")
}
