//! Node-local start hints: per range set, the chunk this node allocated from
//! last, kept in `start-hints.json` in the embedded store's directory (or,
//! with etcd, in an explicitly configured `dataDir`). The plugin lives for
//! one command, so without this file a node whose starting chunk filled up
//! would pay one extra read on every ADD to skip it.
//!
//! Best effort by design: a missing, unreadable or stale file only costs
//! that read; it never affects which addresses are free.

use std::collections::BTreeMap;
use std::path::Path;

const FILE: &str = "start-hints.json";

/// Reads the hints; anything unreadable yields no hints.
pub fn load(dir: &Path) -> BTreeMap<usize, u128> {
    let Ok(bytes) = std::fs::read(dir.join(FILE)) else {
        return BTreeMap::new();
    };
    let Ok(raw) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes) else {
        return BTreeMap::new();
    };
    raw.iter()
        .filter_map(|(set, idx)| Some((set.parse().ok()?, u128::from_str_radix(idx, 16).ok()?)))
        .collect()
}

/// Writes the hints (temp file + rename, so readers never see half a file);
/// failures are ignored.
pub fn save(dir: &Path, hints: &BTreeMap<usize, u128>) {
    let raw: BTreeMap<String, String> = hints
        .iter()
        .map(|(set, idx)| (set.to_string(), format!("{idx:x}")))
        .collect();
    let Ok(bytes) = serde_json::to_vec(&raw) else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, dir.join(FILE)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let h = BTreeMap::from([(0, 5u128), (1, u128::MAX >> 10)]);
        save(dir.path(), &h);
        assert_eq!(load(dir.path()), h);
        std::fs::write(dir.path().join(FILE), b"{garbage").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
