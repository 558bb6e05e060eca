//! Chunk bytes <-> [`Chunk`]: the versioned, self-describing, checksummed
//! chunk format stored under `{prefix}/{net}/chunks/...`. Input is
//! untrusted: decoding never panics, never allocates more than the largest
//! valid chunk of its k, and every problem is a typed [`CodecError`]. Pure:
//! no I/O.
//!
//! [`encode`] picks the smallest encoding and is canonical;
//! [`decode`] (and [`decode_expecting`] for a known k) checks everything.
//!
//! ```
//! use host_etcd::codec::{decode, encode, Chunk};
//!
//! let mut chunk = Chunk::new(10)?;
//! chunk.bits.set(7);
//! chunk.cursor = 8;
//! let bytes = encode(&chunk);
//! assert_eq!(&bytes[..4], b"HEch");
//! assert_eq!(decode(&bytes)?, chunk);
//! # Ok::<(), host_etcd::codec::CodecError>(())
//! ```
//!
//! The rest of this page is `src/codec/FORMAT.md`, the one copy of the
//! format's specification and of the codec's measurements.
//!
#![doc = include_str!("FORMAT.md")]

mod error;
mod header;
mod payload;
mod roaring_words;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::CodecError;
pub use header::{ChunkHeader, HEADER_LEN};

use crate::bitmap::Bitmap;

/// The four magic bytes every chunk starts with.
pub const MAGIC: [u8; 4] = *b"HEch";
/// The chunk format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Smallest accepted k (a chunk of 2 addresses).
pub const MIN_CHUNK_BITS: u8 = 1;
/// Largest accepted k (a chunk of 16 Mi addresses, 2 MiB raw).
pub const MAX_CHUNK_BITS: u8 = 24;

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 2^k bits, set = taken.
    pub bits: Bitmap,
    /// Round-robin cursor: one past the last address the allocator handed
    /// out of this chunk (written by every dynamic allocation; the
    /// allocator's searches start at the node's search position instead,
    /// see `ARCHITECTURE.md`).
    pub cursor: u32,
}

impl Chunk {
    /// An empty chunk of 2^`chunk_bits` addresses with cursor 0.
    ///
    /// ```
    /// let c = host_etcd::codec::Chunk::new(8)?;
    /// assert_eq!((c.bits.len(), c.population(), c.cursor), (256, 0, 0));
    /// assert!(host_etcd::codec::Chunk::new(25).is_err());
    /// # Ok::<(), host_etcd::codec::CodecError>(())
    /// ```
    pub fn new(chunk_bits: u8) -> Result<Chunk, CodecError> {
        if !(MIN_CHUNK_BITS..=MAX_CHUNK_BITS).contains(&chunk_bits) {
            return Err(CodecError::ChunkBitsOutOfRange(chunk_bits));
        }
        Ok(Chunk {
            bits: Bitmap::new(1usize << chunk_bits),
            cursor: 0,
        })
    }

    /// Number of set (taken) bits.
    pub fn population(&self) -> u32 {
        u32::try_from(self.bits.count_ones()).unwrap_or(u32::MAX)
    }

    /// Checks the chunk is encodable as is: its length is 2^k for k in
    /// `1..=24` and its cursor is below that. Returns k.
    ///
    /// ```
    /// use host_etcd::{bitmap::Bitmap, codec::Chunk};
    /// assert_eq!(Chunk::new(4)?.validate()?, 4);
    /// assert!(Chunk { bits: Bitmap::new(10), cursor: 0 }.validate().is_err());
    /// # Ok::<(), host_etcd::codec::CodecError>(())
    /// ```
    pub fn validate(&self) -> Result<u8, CodecError> {
        let len = self.bits.len();
        let k = len.trailing_zeros();
        let k = u8::try_from(k)
            .ok()
            .filter(|k| len.is_power_of_two() && (MIN_CHUNK_BITS..=MAX_CHUNK_BITS).contains(k))
            .ok_or(CodecError::InvalidChunkLen { len })?;
        if u64::from(self.cursor) >= len as u64 {
            return Err(CodecError::CursorOutOfRange {
                cursor: self.cursor,
                chunk_bits: k,
            });
        }
        Ok(k)
    }

    /// The chunk as [`encode`] writes it: a valid chunk is returned as is;
    /// otherwise the bitmap is padded with clear bits to the next power of
    /// two (at least 2), bits at or past 2^24 are dropped, and the cursor is
    /// reduced modulo 2^k.
    fn normalized(&self) -> (u8, std::borrow::Cow<'_, Bitmap>, u32) {
        if let Ok(k) = self.validate() {
            return (k, std::borrow::Cow::Borrowed(&self.bits), self.cursor);
        }
        let len = self
            .bits
            .len()
            .clamp(1 << MIN_CHUNK_BITS, 1 << MAX_CHUNK_BITS)
            .next_power_of_two();
        let k = u8::try_from(len.trailing_zeros()).unwrap_or(MAX_CHUNK_BITS);
        // A word-at-a-time copy: bits past `len` can only be cut when `len`
        // is 2^24, a whole number of words.
        let nwords = len.div_ceil(64);
        let mut words: Vec<u64> = self.bits.words().iter().copied().take(nwords).collect();
        words.resize(nwords, 0);
        let bits = Bitmap::from_word_vec(len, words).unwrap_or_else(|| Bitmap::new(len));
        let cursor = self.cursor % (1u32 << k);
        (k, std::borrow::Cow::Owned(bits), cursor)
    }
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

impl Encoding {
    /// Every encoding, in tie-break order (simplest first).
    pub const ALL: [Encoding; 4] = [
        Encoding::Raw,
        Encoding::Roaring,
        Encoding::RawZstd,
        Encoding::RoaringZstd,
    ];

    /// The header tag byte.
    ///
    /// ```
    /// use host_etcd::codec::Encoding;
    /// assert_eq!(Encoding::RoaringZstd.tag(), 3);
    /// assert_eq!(Encoding::from_tag(3), Some(Encoding::RoaringZstd));
    /// ```
    pub fn tag(self) -> u8 {
        match self {
            Encoding::Raw => 0,
            Encoding::Roaring => 1,
            Encoding::RawZstd => 2,
            Encoding::RoaringZstd => 3,
        }
    }

    /// The encoding of a header tag byte; `None` if unknown.
    pub fn from_tag(tag: u8) -> Option<Encoding> {
        match tag {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Roaring),
            2 => Some(Encoding::RawZstd),
            3 => Some(Encoding::RoaringZstd),
            _ => None,
        }
    }

    /// Short lower-case name: `raw`, `roaring`, `raw+zstd`, `roaring+zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Roaring => "roaring",
            Encoding::RawZstd => "raw+zstd",
            Encoding::RoaringZstd => "roaring+zstd",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Encodes with the smallest encoding for this chunk (ties go to the
/// simplest, in [`Encoding::ALL`] order). Canonical: the output depends only
/// on the chunk's bits and cursor.
///
/// A chunk that fails [`Chunk::validate`] is normalized rather than
/// rejected (padded to a power-of-two length within 2^1..=2^24, cursor
/// reduced modulo 2^k); chunks from [`Chunk::new`] or [`decode`] are always
/// valid.
pub fn encode(chunk: &Chunk) -> Vec<u8> {
    let (k, bits, cursor) = chunk.normalized();
    let population = u32::try_from(bits.count_ones()).unwrap_or(u32::MAX);
    let raw = payload::encode_raw(&bits);
    let roaring = payload::encode_roaring(&bits);
    let raw_z = payload::compress(&raw);
    let roaring_z = payload::compress(&roaring);
    let mut best = (Encoding::Raw, raw.as_slice());
    let candidates = [
        (Encoding::Roaring, Some(roaring.as_slice())),
        (Encoding::RawZstd, raw_z.as_deref()),
        (Encoding::RoaringZstd, roaring_z.as_deref()),
    ];
    for (encoding, bytes) in candidates {
        if let Some(bytes) = bytes {
            if bytes.len() < best.1.len() {
                best = (encoding, bytes);
            }
        }
    }
    header::write(best.0, k, population, cursor, best.1)
}

/// Encodes with a given encoding (normalizing an invalid chunk as
/// [`encode`] does). Should the zstd library fail (it does not for in-memory
/// buffers), the uncompressed form is written instead.
pub fn encode_as(chunk: &Chunk, encoding: Encoding) -> Vec<u8> {
    let (k, bits, cursor) = chunk.normalized();
    let population = u32::try_from(bits.count_ones()).unwrap_or(u32::MAX);
    let (encoding, payload) = match encoding {
        Encoding::Raw => (Encoding::Raw, payload::encode_raw(&bits)),
        Encoding::Roaring => (Encoding::Roaring, payload::encode_roaring(&bits)),
        Encoding::RawZstd => {
            let raw = payload::encode_raw(&bits);
            match payload::compress(&raw) {
                Some(z) => (Encoding::RawZstd, z),
                None => (Encoding::Raw, raw),
            }
        }
        Encoding::RoaringZstd => {
            let roaring = payload::encode_roaring(&bits);
            match payload::compress(&roaring) {
                Some(z) => (Encoding::RoaringZstd, z),
                None => (Encoding::Roaring, roaring),
            }
        }
    };
    header::write(encoding, k, population, cursor, &payload)
}

/// Decodes and verifies chunk bytes: framing, version, every header field,
/// checksum, payload, and that the population field matches the payload.
pub fn decode(bytes: &[u8]) -> Result<Chunk, CodecError> {
    let (header, payload) = header::parse(bytes)?;
    decode_payload(&header, payload)
}

/// Decodes a payload whose header has been verified.
fn decode_payload(header: &ChunkHeader, payload: &[u8]) -> Result<Chunk, CodecError> {
    let bits = payload::decode(header.encoding, header.chunk_bits, payload)?;
    let actual = bits.count_ones() as u64;
    if actual != u64::from(header.population) {
        return Err(CodecError::PopulationMismatch {
            header: header.population,
            actual,
        });
    }
    Ok(Chunk {
        bits,
        cursor: header.cursor,
    })
}

/// [`decode`], and additionally require the chunk's k to be `chunk_bits`
/// (a chunk written under another k is refused, never reinterpreted).
///
/// ```
/// use host_etcd::codec::{decode_expecting, encode, Chunk, CodecError};
/// let bytes = encode(&Chunk::new(8)?);
/// assert!(decode_expecting(&bytes, 8).is_ok());
/// assert_eq!(
///     decode_expecting(&bytes, 10),
///     Err(CodecError::ChunkBitsMismatch { expected: 10, found: 8 })
/// );
/// # Ok::<(), CodecError>(())
/// ```
pub fn decode_expecting(bytes: &[u8], chunk_bits: u8) -> Result<Chunk, CodecError> {
    let (header, payload) = header::parse(bytes)?;
    if header.chunk_bits != chunk_bits {
        return Err(CodecError::ChunkBitsMismatch {
            expected: chunk_bits,
            found: header.chunk_bits,
        });
    }
    decode_payload(&header, payload)
}

/// Reads and verifies the header (every field, the payload length and the
/// checksum) without decoding the payload: a cheap way to learn a chunk's
/// population, cursor and k. The payload contents (and so the population's
/// agreement with them) are only verified by [`decode`].
///
/// ```
/// use host_etcd::codec::{encode, header_only, Chunk};
/// let mut c = Chunk::new(6)?;
/// c.bits.set_range(0, 9);
/// assert_eq!(header_only(&encode(&c))?.population, 10);
/// # Ok::<(), host_etcd::codec::CodecError>(())
/// ```
pub fn header_only(bytes: &[u8]) -> Result<ChunkHeader, CodecError> {
    header::parse(bytes).map(|(h, _)| h)
}
