//! [`CodecError`]: one variant per way chunk bytes (or a chunk) can be wrong,
//! each naming the field and value at fault.

use super::Encoding;

/// Why chunk bytes could not be decoded (or a chunk could not be encoded
/// faithfully). Every variant names the field and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the part of the header needed so far.
    #[error("chunk truncated: need at least {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed to read the next header field.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The first four bytes are not `b"HEch"`.
    #[error(
        "bad chunk magic {found:02x?}, expected {:02x?} (b\"HEch\")",
        super::MAGIC
    )]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A format version this build does not know; never guessed at.
    #[error("unsupported chunk format version {0} (this build reads version {v})", v = super::FORMAT_VERSION)]
    UnsupportedVersion(u8),
    /// An encoding tag this build does not know.
    #[error(
        "unknown chunk encoding tag {0} (known: 0 raw, 1 roaring, 2 raw+zstd, 3 roaring+zstd)"
    )]
    UnknownEncoding(u8),
    /// `chunk_bits` (k) outside `1..=24`.
    #[error("chunk_bits {0} out of range {min}..={max}", min = super::MIN_CHUNK_BITS, max = super::MAX_CHUNK_BITS)]
    ChunkBitsOutOfRange(u8),
    /// Non-zero flags byte (no flags are defined in version 1).
    #[error("unsupported chunk flags {0:#04x} (version 1 defines none)")]
    UnsupportedFlags(u8),
    /// Cursor not below 2^k.
    #[error(
        "chunk cursor {cursor} out of range for chunk_bits {chunk_bits} (must be < 2^{chunk_bits})"
    )]
    CursorOutOfRange {
        /// The cursor field.
        cursor: u32,
        /// The chunk's k.
        chunk_bits: u8,
    },
    /// Population larger than 2^k.
    #[error("chunk population {population} exceeds 2^{chunk_bits}")]
    PopulationOutOfRange {
        /// The population field.
        population: u32,
        /// The chunk's k.
        chunk_bits: u8,
    },
    /// The payload length field disagrees with the bytes after the header
    /// (payload truncated, or trailing bytes).
    #[error("chunk payload length field is {header} but {actual} bytes follow the header")]
    PayloadLengthMismatch {
        /// The payload length field.
        header: u32,
        /// Bytes actually after the header.
        actual: usize,
    },
    /// A raw payload (after decompression, for raw+zstd) is not exactly
    /// `ceil(2^k / 64) * 8` bytes.
    #[error("{encoding} payload is {len} bytes, expected exactly {expected}")]
    RawLength {
        /// The encoding of the payload.
        encoding: Encoding,
        /// Actual length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A payload longer than the largest one this encoding can produce for
    /// this k.
    #[error("{encoding} payload is {len} bytes, more than the maximum {max} for this chunk_bits")]
    PayloadTooLarge {
        /// The encoding of the payload.
        encoding: Encoding,
        /// Actual length.
        len: usize,
        /// Largest acceptable length.
        max: usize,
    },
    /// The CRC-32 over the header and payload does not match.
    #[error("chunk checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The crc32 field.
        stored: u32,
        /// The crc32 of the bytes.
        computed: u32,
    },
    /// The payload could not be decoded (zstd or roaring rejected it).
    #[error("chunk payload undecodable: {0}")]
    Payload(String),
    /// A set bit at or past 2^k.
    #[error("chunk payload sets bit {index}, outside 0..2^{chunk_bits}")]
    IndexOutOfRange {
        /// The offending bit index.
        index: u64,
        /// The chunk's k.
        chunk_bits: u8,
    },
    /// The population field disagrees with the number of set bits.
    #[error("chunk population field is {header} but the payload has {actual} set bits")]
    PopulationMismatch {
        /// The population field.
        header: u32,
        /// Set bits in the decoded payload.
        actual: u64,
    },
    /// The chunk's k is not the one the caller's configuration expects.
    #[error("chunk has chunk_bits {found}, expected {expected}; refusing to reinterpret")]
    ChunkBitsMismatch {
        /// The k the caller expects.
        expected: u8,
        /// The k in the chunk header.
        found: u8,
    },
    /// An in-memory [`Chunk`](super::Chunk) whose bitmap length is not 2^k
    /// for a k in `1..=24`.
    #[error("chunk bitmap has {len} bits; must be 2^k for k in {min}..={max}", min = super::MIN_CHUNK_BITS, max = super::MAX_CHUNK_BITS)]
    InvalidChunkLen {
        /// The bitmap length.
        len: usize,
    },
}
