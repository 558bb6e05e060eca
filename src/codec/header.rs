//! The 24-byte version-1 chunk header: layout, writing, and verified parsing
//! (framing, field ranges, payload length bound and checksum; not the payload
//! contents).

use super::payload::max_payload_len;
use super::{CodecError, Encoding, FORMAT_VERSION, MAGIC, MAX_CHUNK_BITS, MIN_CHUNK_BITS};

/// Length of the version-1 header in bytes.
pub const HEADER_LEN: usize = 24;

// Field offsets (version 1).
const VERSION_AT: usize = 4;
const TAG_AT: usize = 5;
const BITS_AT: usize = 6;
const FLAGS_AT: usize = 7;
const POPULATION_AT: usize = 8;
const CURSOR_AT: usize = 12;
const PAYLOAD_LEN_AT: usize = 16;
const CRC_AT: usize = 20;

/// The verified header of a chunk, read without decoding its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkHeader {
    /// Format version (always [`FORMAT_VERSION`] once parsed).
    pub version: u8,
    /// Payload encoding.
    pub encoding: Encoding,
    /// k: the chunk covers 2^k addresses.
    pub chunk_bits: u8,
    /// Number of set (taken) bits, as recorded by the writer.
    pub population: u32,
    /// Round-robin cursor, `< 2^k`.
    pub cursor: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32 of the header bytes before the crc field plus the payload.
    pub crc32: u32,
}

impl ChunkHeader {
    /// 2^k, the number of addresses the chunk covers.
    pub fn capacity(&self) -> u32 {
        1u32 << self.chunk_bits
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// CRC-32 over the header bytes before the crc field and the payload.
pub(crate) fn checksum(header_prefix: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_prefix);
    h.update(payload);
    h.finalize()
}

/// Writes header + payload. The caller guarantees `k`, `cursor` and
/// `population` are in range.
pub(crate) fn write(
    encoding: Encoding,
    k: u8,
    population: u32,
    cursor: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[FORMAT_VERSION, encoding.tag(), k, 0]);
    out.extend_from_slice(&population.to_le_bytes());
    out.extend_from_slice(&cursor.to_le_bytes());
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses and verifies everything except the payload contents; returns the
/// header and the payload slice.
pub(crate) fn parse(bytes: &[u8]) -> Result<(ChunkHeader, &[u8]), CodecError> {
    let need = |needed: usize| {
        if bytes.len() < needed {
            Err(CodecError::Truncated {
                needed,
                got: bytes.len(),
            })
        } else {
            Ok(())
        }
    };
    need(MAGIC.len())?;
    let mut found = [0u8; 4];
    found.copy_from_slice(&bytes[..4]);
    if found != MAGIC {
        return Err(CodecError::BadMagic { found });
    }
    need(VERSION_AT + 1)?;
    let version = bytes[VERSION_AT];
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    need(HEADER_LEN)?;
    let tag = bytes[TAG_AT];
    let encoding = Encoding::from_tag(tag).ok_or(CodecError::UnknownEncoding(tag))?;
    let chunk_bits = bytes[BITS_AT];
    if !(MIN_CHUNK_BITS..=MAX_CHUNK_BITS).contains(&chunk_bits) {
        return Err(CodecError::ChunkBitsOutOfRange(chunk_bits));
    }
    let flags = bytes[FLAGS_AT];
    if flags != 0 {
        return Err(CodecError::UnsupportedFlags(flags));
    }
    let capacity = 1u32 << chunk_bits;
    let population = u32_at(bytes, POPULATION_AT);
    let cursor = u32_at(bytes, CURSOR_AT);
    if cursor >= capacity {
        return Err(CodecError::CursorOutOfRange { cursor, chunk_bits });
    }
    if population > capacity {
        return Err(CodecError::PopulationOutOfRange {
            population,
            chunk_bits,
        });
    }
    let payload_len = u32_at(bytes, PAYLOAD_LEN_AT);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != u64::from(payload_len) {
        return Err(CodecError::PayloadLengthMismatch {
            header: payload_len,
            actual: payload.len(),
        });
    }
    let max = max_payload_len(encoding, chunk_bits);
    if payload.len() > max {
        return Err(CodecError::PayloadTooLarge {
            encoding,
            len: payload.len(),
            max,
        });
    }
    let stored = u32_at(bytes, CRC_AT);
    let computed = checksum(&bytes[..CRC_AT], payload);
    if stored != computed {
        return Err(CodecError::ChecksumMismatch { stored, computed });
    }
    let header = ChunkHeader {
        version,
        encoding,
        chunk_bits,
        population,
        cursor,
        payload_len,
        crc32: stored,
    };
    Ok((header, payload))
}
