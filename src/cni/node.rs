//! The plugin's node-local state, per network, in one directory (the
//! embedded store's `dataDir`, or with etcd `dataDir` if given, else
//! `/var/lib/cni/host-etcd/<name>`):
//!
//! * `node-cache.<network>.<host>.json` — the allocator's [`NodeCache`] (values this
//!   node last saw, search positions), so the next plugin process starts
//!   warm: one etcd transaction per ADD and per DEL. Written after every
//!   ADD and DEL to a temporary file and renamed over the old one, so a
//!   reader sees the old or the new file, never half of one.
//! * `node.<network>.<host>.lock` — the node lock: plugin processes of one node
//!   that work on the same network take turns for the allocation protocol
//!   (read the cache, one transaction, write the cache). Without it, a burst
//!   of processes (a kubelet starting pods) would all start from the same
//!   cache at the same chunk and conflict with each other: measured with 16
//!   processes at once on one node, 2.46 etcd calls per ADD and 3.08 per
//!   DEL without the lock, 1.00 and 1.00 with it (BENCHMARKS.md, "Summary:
//!   the plugin's fast path", "Without the node lock"). The lock is taken
//!   after the store connection is up and held only around the protocol
//!   (about one etcd round trip), never around connect or the whole budget;
//!   it is an `flock`, so the kernel releases it when a process dies
//!   (`kill -9` included).
//!
//! The third node-local file, the STATUS failure streak
//! (`status.<network>.<host>.json`), belongs to [`status`](super::status).
//! Why none of them can make allocation wrong: ARCHITECTURE.md, "Node-local
//! state, and why correctness never depends on it".
//!
//! `<host>` is this node's host name, so nodes that share a directory (a
//! network file system, or simulated nodes in UTS namespaces on one host)
//! never share a cache or a lock.
//!
//! Both are optimizations only. A cache file that is missing, stale, from
//! another network, truncated or garbage is ignored (and rewritten); the
//! allocator compares every remembered value by its bytes, so no content of
//! the file can hand out a taken address or lose a release. A lock that
//! cannot be had in time (or a directory that cannot be written) means the
//! process goes on without it; CAS keeps that correct, it just may conflict.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{NetConf, StoreConf};
use crate::allocator::{Allocator, Keyspace, NodeCache};
use crate::fsutil::{self, Backoff, Wait};
use crate::store::Store;

/// Longest wait for the node lock.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(1);

/// Holders keep the node lock for about one round trip: poll often at
/// first, then back off.
const LOCK_BACKOFF: Backoff = Backoff {
    first: Duration::from_micros(50),
    max: Duration::from_millis(2),
};

/// The node-local files of one network.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    cache: PathBuf,
    lock: PathBuf,
    store: String,
}

impl NodeFiles {
    /// The files of network `name` and node `host` in `dir`, for values of
    /// the store named `store` (a cache written for another store is
    /// ignored). A host name that is not a plain DNS name is replaced by `_`
    /// in the file names.
    pub fn new(dir: &Path, name: &str, host: &str, store: &str) -> Self {
        let host = if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !host.starts_with('.')
        {
            host
        } else {
            "_"
        };
        NodeFiles {
            cache: dir.join(format!("node-cache.{name}.{host}.json")),
            lock: dir.join(format!("node.{name}.{host}.lock")),
            store: store.to_string(),
        }
    }

    /// The files of a network config on this node: its node directory,
    /// name and store (the etcd endpoints, or the embedded store's
    /// directory). The plugin and the node agent both use this, so they read
    /// and write the same cache.
    pub fn of(conf: &NetConf) -> Self {
        let store = match &conf.ipam.store {
            StoreConf::Etcd(c) => format!("etcd {}", c.endpoints.join(",")),
            StoreConf::Local { data_dir, .. } => format!("local {}", data_dir.display()),
        };
        NodeFiles::new(
            &conf.ipam.node_dir,
            &conf.name,
            &crate::allocator::local_hostname(),
            &store,
        )
    }

    /// The cache file's path.
    pub fn cache_path(&self) -> &Path {
        &self.cache
    }

    /// Reads the cache; anything unreadable or foreign is an empty cache.
    #[cfg(test)]
    pub fn load(&self, ks: &Keyspace, k: u8) -> NodeCache {
        std::fs::read(&self.cache)
            .ok()
            .and_then(|bytes| NodeCache::decode(&bytes, &self.store, ks, k))
            .unwrap_or_default()
    }

    /// Reads the cache for `allocator`: at its chunk size, or at the one
    /// the file names when the allocator may follow it (the file is then a
    /// hint of the network's stored k, and a wrong one costs a retry: see
    /// [`Allocator::adopt_chunk_bits`]). Anything unreadable, foreign or of
    /// another chunk size is an empty cache.
    pub fn load_for<S: Store>(&self, allocator: &Allocator<S>) -> NodeCache {
        std::fs::read(&self.cache)
            .ok()
            .and_then(|bytes| NodeCache::decode_any_k(&bytes, &self.store, allocator.keyspace()))
            .filter(|(_, k)| allocator.adopt_chunk_bits(*k))
            .map(|(cache, _)| cache)
            .unwrap_or_default()
    }

    /// Writes the cache (temporary file + rename); failures are ignored.
    pub fn save(&self, ks: &Keyspace, k: u8, cache: &NodeCache) {
        if let Some(bytes) = cache.encode(&self.store, ks, k) {
            let _ = fsutil::write_atomic(&self.cache, &bytes);
        }
    }

    /// Takes the node lock, waiting at most `wait`; `None` when it cannot
    /// be had in time or its file cannot be opened (go on without it).
    pub fn lock(&self, wait: Duration) -> Option<NodeLock> {
        if let Some(dir) = self.lock.parent() {
            std::fs::create_dir_all(dir).ok()?;
        }
        let file = fsutil::open_lock_file(&self.lock).ok()?;
        match fsutil::lock_within(&file, wait, LOCK_BACKOFF) {
            Ok(Wait::Locked) => Some(NodeLock { _file: file }),
            Ok(Wait::TimedOut { .. }) | Err(_) => None,
        }
    }
}

/// The node lock, held until dropped (closing the file releases it).
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn cache_round_trip_garbage_and_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keyspace::new("/p", "net").unwrap();
        let files = NodeFiles::new(dir.path(), "net", "n1", "etcd a:1");
        assert!(files.load(&ks, 8).is_empty(), "missing file");
        let mut c = NodeCache::new();
        c.set_position(0, 42);
        c.remember(&ks, &ks.meta(), Some(b"m"));
        files.save(&ks, 8, &c);
        assert_eq!(files.load(&ks, 8), c);
        // Another network's or chunk size's view of the same file.
        let other = Keyspace::new("/p", "other").unwrap();
        assert!(files.load(&other, 8).is_empty());
        assert!(files.load(&ks, 9).is_empty());
        let elsewhere = NodeFiles::new(dir.path(), "net", "n1", "etcd b:1");
        assert!(elsewhere.load(&ks, 8).is_empty(), "another store");
        // Garbage and truncation.
        std::fs::write(files.cache_path(), b"{garbage").unwrap();
        assert!(files.load(&ks, 8).is_empty());
        files.save(&ks, 8, &c);
        let bytes = std::fs::read(files.cache_path()).unwrap();
        std::fs::write(files.cache_path(), &bytes[..bytes.len() / 2]).unwrap();
        assert!(files.load(&ks, 8).is_empty());
        // No temporary files left behind.
        files.save(&ks, 8, &c);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn lock_is_exclusive_bounded_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let files = NodeFiles::new(dir.path(), "net", "n1", "s");
        let held = files.lock(Duration::ZERO).expect("free lock");
        let started = Instant::now();
        assert!(files.lock(Duration::from_millis(30)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
        // Another node's lock in the same directory is another file.
        let other = NodeFiles::new(dir.path(), "net", "n2", "s");
        assert!(other.lock(Duration::ZERO).is_some());
        drop(held);
        assert!(files.lock(Duration::ZERO).is_some());
        // Odd host names still give file names inside the directory.
        for host in ["", "../../etc", ".hidden", "a/b"] {
            let f = NodeFiles::new(dir.path(), "net", host, "s");
            assert_eq!(f.cache_path().parent(), Some(dir.path()), "{host:?}");
        }
        // A directory that cannot be created: no lock, no error.
        let blocked = NodeFiles::new(&dir.path().join("f/sub"), "net", "n1", "s");
        std::fs::write(dir.path().join("f"), b"a file").unwrap();
        assert!(blocked.lock(Duration::ZERO).is_none());
    }
}
