//! The on-disk layout of a `dataDir` store inside its redb database.
//!
//! ```text
//! <dataDir>/lock        empty file; its flock serializes processes
//! <dataDir>/store.redb  the redb database:
//!   table "meta" (&str -> &[u8]):
//!     "magic"          = b"host-etcd-local"
//!     "format_version" = u32, little endian; this build reads and writes 1
//!     "revision"       = i64, little endian; the store's global revision
//!   table "kv" (&str -> &[u8]): store key -> record
//!     record = mod_revision: i64 LE | create_revision: i64 LE | value bytes
//! ```
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
/// The only format version this build reads and writes.
pub(super) const FORMAT_VERSION: u32 = 1;

/// Bytes of a record before the value.
const RECORD_HEADER: usize = 16;

/// Encodes a record of the `kv` table.
pub(super) fn encode_record(mod_revision: i64, create_revision: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + value.len());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a record of the `kv` table; the error says what is wrong.
pub(super) fn decode_record(bytes: &[u8]) -> Result<Versioned, String> {
    let (mod_bytes, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| format!("record of {} bytes is shorter than its header", bytes.len()))?;
    let (create_bytes, value) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| format!("record of {} bytes is shorter than its header", bytes.len()))?;
    let mod_revision = i64::from_le_bytes(*mod_bytes);
    let create_revision = i64::from_le_bytes(*create_bytes);
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

    #[test]
    fn record_round_trips() {
        let bytes = encode_record(7, 3, b"abc");
        assert_eq!(bytes.len(), RECORD_HEADER + 3);
        let expected = Versioned {
            value: b"abc".to_vec(),
            mod_revision: 7,
            create_revision: 3,
        };
        assert_eq!(decode_record(&bytes), Ok(expected));
        let empty = decode_record(&encode_record(1, 1, b""));
        assert!(empty.is_ok_and(|v| v.value.is_empty()));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(decode_record(b"").is_err());
        assert!(decode_record(&[0u8; 15]).is_err());
        assert!(decode_record(&encode_record(0, 1, b"x")).is_err());
        assert!(decode_record(&encode_record(2, 3, b"x")).is_err());
        assert!(decode_revision(&[0u8; 7]).is_err());
        assert!(decode_revision(&(-1i64).to_le_bytes()).is_err());
        assert_eq!(decode_format(&1u32.to_le_bytes()), Ok(1));
        assert!(decode_format(b"1").is_err());
    }
}
