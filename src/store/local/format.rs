//! The on-disk layout of a `dataDir` store inside its redb database.
//!
//! ```text
//! <dataDir>/lock        empty file; its flock serializes processes
//! <dataDir>/store.redb  the redb database:
//!   table "meta" (&str -> &[u8]):
//!     "magic"          = b"host-etcd-local"
//!     "format_version" = u32, little endian: 1 or 2 (new stores are 2)
//!     "revision"       = i64, little endian; the store's global revision
//!   table "kv" (&str -> &[u8]): store key -> record
//!     format 1: mod_revision: i64 LE | create_revision: i64 LE | value bytes
//!     format 2: mod_revision: i64 LE | create_revision: i64 LE
//!               | crc: u32 LE | value bytes
//!       crc = CRC-32 (IEEE) of key length: u64 LE | key bytes
//!             | mod_revision | create_revision | value bytes
//! ```
//!
//! The record checksum of format 2 is what lets the store check, cheaply,
//! every record it reads: redb itself verifies page checksums only in its
//! full integrity check (which reads the whole file), not on ordinary
//! reads, so a byte damaged outside redb inside a value or key would
//! otherwise be returned as data. Covering the key means a record that
//! turns up under another key is caught too. A store of format 1 keeps
//! format 1 (its records have no checksum; their revisions are still
//! checked) so that no existing store has to be rewritten.
//!
//! A fresh database is built under [`NEW_FILE`] with both tables and the
//! marker, committed durably, then renamed to [`DB_FILE`]: `store.redb`
//! therefore either does not exist or carries the marker, even after a crash
//! during creation, and a file at that name without the marker is foreign.

use redb::TableDefinition;

use crate::store::Versioned;

/// The database file inside the data directory.
pub(super) const DB_FILE: &str = "store.redb";
/// Where a new database is initialized before it is renamed to [`DB_FILE`].
pub(super) const NEW_FILE: &str = "store.redb.new";
/// The lock file inside the data directory.
pub(super) const LOCK_FILE: &str = "lock";

/// Store keys to records.
pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Format marker and global revision.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// [`META`] key of the magic marker.
pub(super) const META_MAGIC: &str = "magic";
/// [`META`] key of the format version.
pub(super) const META_FORMAT: &str = "format_version";
/// [`META`] key of the global revision.
pub(super) const META_REVISION: &str = "revision";

/// The marker that identifies a host-etcd store.
pub(super) const MAGIC: &[u8] = b"host-etcd-local";
/// The format version of new stores.
pub(super) const FORMAT_VERSION: u32 = 2;

/// The record layout of a store, from its format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordFormat {
    /// Format 1: revisions and value.
    V1,
    /// Format 2: revisions, checksum and value.
    V2,
}

impl RecordFormat {
    /// The layout of format `version`, or `None` for a version this build
    /// does not read.
    pub(super) fn of_version(version: u32) -> Option<RecordFormat> {
        match version {
            1 => Some(RecordFormat::V1),
            2 => Some(RecordFormat::V2),
            _ => None,
        }
    }

    /// Bytes of a record before the value.
    fn header_len(self) -> usize {
        match self {
            RecordFormat::V1 => 16,
            RecordFormat::V2 => 20,
        }
    }
}

/// The checksum of a format 2 record.
fn record_crc(key: &str, mod_revision: i64, create_revision: i64, value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&u64::try_from(key.len()).unwrap_or(u64::MAX).to_le_bytes());
    h.update(key.as_bytes());
    h.update(&mod_revision.to_le_bytes());
    h.update(&create_revision.to_le_bytes());
    h.update(value);
    h.finalize()
}

/// Encodes the record of `key` in the `kv` table.
pub(super) fn encode_record(
    format: RecordFormat,
    key: &str,
    mod_revision: i64,
    create_revision: i64,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(format.header_len() + value.len());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(&create_revision.to_le_bytes());
    if format == RecordFormat::V2 {
        let crc = record_crc(key, mod_revision, create_revision, value);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// Decodes and checks the record of `key` in the `kv` table; the error
/// says what is wrong.
pub(super) fn decode_record(
    format: RecordFormat,
    key: &str,
    bytes: &[u8],
) -> Result<Versioned, String> {
    let short = || format!("record of {} bytes is shorter than its header", bytes.len());
    let (mod_bytes, rest) = bytes.split_first_chunk::<8>().ok_or_else(short)?;
    let (create_bytes, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let mod_revision = i64::from_le_bytes(*mod_bytes);
    let create_revision = i64::from_le_bytes(*create_bytes);
    let value = match format {
        RecordFormat::V1 => rest,
        RecordFormat::V2 => {
            let (crc_bytes, value) = rest.split_first_chunk::<4>().ok_or_else(short)?;
            let stored = u32::from_le_bytes(*crc_bytes);
            let actual = record_crc(key, mod_revision, create_revision, value);
            if stored != actual {
                return Err(format!(
                    "record checksum mismatch (stored {stored:08x}, computed {actual:08x})"
                ));
            }
            value
        }
    };
    if mod_revision <= 0 || create_revision <= 0 || create_revision > mod_revision {
        return Err(format!(
            "record has invalid revisions (mod {mod_revision}, create {create_revision})"
        ));
    }
    Ok(Versioned {
        value: value.to_vec(),
        mod_revision,
        create_revision,
    })
}

/// Decodes the stored global revision.
pub(super) fn decode_revision(bytes: &[u8]) -> Result<i64, String> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("revision of {} bytes, expected 8", bytes.len()))?;
    let revision = i64::from_le_bytes(raw);
    if revision < 0 {
        return Err(format!("negative revision {revision}"));
    }
    Ok(revision)
}

/// Decodes the stored format version.
pub(super) fn decode_format(bytes: &[u8]) -> Result<u32, String> {
    let raw: [u8; 4] = bytes
        .try_into()
        .map_err(|_| format!("format version of {} bytes, expected 4", bytes.len()))?;
    Ok(u32::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [RecordFormat; 2] = [RecordFormat::V1, RecordFormat::V2];

    #[test]
    fn record_round_trips() {
        for f in FORMATS {
            let bytes = encode_record(f, "/k", 7, 3, b"abc");
            assert_eq!(bytes.len(), f.header_len() + 3);
            let expected = Versioned {
                value: b"abc".to_vec(),
                mod_revision: 7,
                create_revision: 3,
            };
            assert_eq!(decode_record(f, "/k", &bytes), Ok(expected), "{f:?}");
            let empty = decode_record(f, "/e", &encode_record(f, "/e", 1, 1, b""));
            assert!(empty.is_ok_and(|v| v.value.is_empty()), "{f:?}");
        }
        assert_eq!(RecordFormat::of_version(1), Some(RecordFormat::V1));
        assert_eq!(
            RecordFormat::of_version(FORMAT_VERSION),
            Some(RecordFormat::V2)
        );
        assert_eq!(RecordFormat::of_version(3), None);
    }

    #[test]
    fn bad_records_are_errors() {
        for f in FORMATS {
            assert!(decode_record(f, "/k", b"").is_err());
            assert!(decode_record(f, "/k", &[0u8; 15]).is_err());
            assert!(decode_record(f, "/k", &encode_record(f, "/k", 0, 1, b"x")).is_err());
            assert!(decode_record(f, "/k", &encode_record(f, "/k", 2, 3, b"x")).is_err());
        }
        assert!(decode_record(RecordFormat::V2, "/k", &[1u8; 19]).is_err());
        assert!(decode_revision(&[0u8; 7]).is_err());
        assert!(decode_revision(&(-1i64).to_le_bytes()).is_err());
        assert_eq!(decode_format(&1u32.to_le_bytes()), Ok(1));
        assert!(decode_format(b"1").is_err());
    }

    #[test]
    fn every_damaged_byte_of_a_v2_record_is_caught() {
        let f = RecordFormat::V2;
        let good = encode_record(f, "/key", 9, 4, b"some value");
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                assert!(
                    decode_record(f, "/key", &bad).is_err(),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
        // The same bytes under another key are refused too.
        assert!(decode_record(f, "/kez", &good).is_err());
        // Truncated or extended records fail their checksum.
        assert!(decode_record(f, "/key", &good[..good.len() - 1]).is_err());
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_record(f, "/key", &longer).is_err());
    }
}
