//! The node cache ([`NodeCache`]): what one node last saw of the keys it
//! works on, and where its next searches start; its bounds and its byte
//! form.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::keys::Keyspace;
use crate::store::Key;

/// Chunks remembered at most.
pub const MAX_CHUNKS: usize = 64;
/// Owner records remembered at most (a node rarely runs more pods).
pub const MAX_OWNERS: usize = 512;

const FORMAT: &str = "host-etcd-node-cache";
const VERSION: u32 = 1;

/// The node cache: what one node last saw of the keys it works on for one
/// network — the meta record, full-sets, the chunks it allocates from, the
/// owner records it created, the sticky-address bindings it wrote — and,
/// per range set, the position its next search starts from. With it a warm
/// ADD or DEL is one transaction and no read.
///
/// The cache is an optimization only. Every cached value is compared by its
/// exact bytes ([`Expect::Value`](crate::store::Expect::Value)) by any
/// transaction that relies on it, so a stale, foreign, truncated or made-up
/// cache can cost a conflict (whose answer carries the current values) but
/// can never hand out a taken address or lose a release. A cache that does
/// not decode, or belongs to another network, prefix or chunk size, is
/// ignored.
///
/// Bounded: at most 64 chunks (`MAX_CHUNKS`), 512 owner records and 512
/// bindings (`MAX_OWNERS`) are kept (the least recently used go first); meta
/// and full-sets are few.
///
/// The byte form (used by the plugin's node-local file) is JSON:
///
/// ```json
/// {"format":"host-etcd-node-cache","version":1,"store":"etcd 10.0.0.5:2379",
///  "root":"/host-etcd/net","chunkBits":8,
///  "positions":{"0":"a000102"},
///  "entries":[["/host-etcd/net/meta","t{\"version\":1,…}"],["/host-etcd/net/chunks/4/…","x0148…"],
///             ["/host-etcd/net/chunks/4/…",null]]}
/// ```
///
/// `store` names the store the values came from (the caller's choice, e.g.
/// the etcd endpoints): a cache of another store is ignored, positions
/// included. `positions` maps a range set's index to the next address to
/// try (hex offset); `entries` lists keys oldest first with their value:
/// `t` and the value as text when it is UTF-8 (owner records, meta), else
/// `x` and hex (chunks, full-sets); `null`: known absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCache {
    /// Key -> (last use, kind, value; `None` = known absent).
    entries: HashMap<Key, (u64, Class, Option<Vec<u8>>)>,
    /// Per range set: the address offset the next dynamic search starts at.
    positions: BTreeMap<usize, u128>,
    clock: u64,
}

#[derive(Serialize, Deserialize)]
struct Form {
    format: String,
    version: u32,
    store: String,
    root: String,
    #[serde(rename = "chunkBits")]
    chunk_bits: u8,
    positions: BTreeMap<String, String>,
    entries: Vec<(String, Option<String>)>,
}

/// What kind of key an entry is, for the bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Chunk,
    Owner,
    Binding,
    /// Per-node index entries: never remembered.
    Index,
    Other,
}

impl NodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        NodeCache::default()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.positions.is_empty()
    }

    /// The remembered value of `key`: `None` if not remembered,
    /// `Some(None)` if remembered absent.
    pub fn get(&self, key: &str) -> Option<Option<&[u8]>> {
        self.entries.get(key).map(|(_, _, v)| v.as_deref())
    }

    /// Every remembered entry (any order).
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.entries
            .iter()
            .map(|(k, (_, _, v))| (k.as_str(), v.as_deref()))
    }

    /// Per range set, where the next dynamic search starts.
    pub fn positions(&self) -> &BTreeMap<usize, u128> {
        &self.positions
    }

    /// Replaces the search positions.
    pub fn set_positions(&mut self, positions: BTreeMap<usize, u128>) {
        self.positions = positions;
    }

    /// Moves the search position of range set `set`.
    pub fn set_position(&mut self, set: usize, offset: u128) {
        self.positions.insert(set, offset);
    }

    /// Remembers the value of `key` (`None`: absent). Absent owner records
    /// are forgotten instead: an owner's absence is never relied on.
    pub fn remember(&mut self, ks: &Keyspace, key: &str, value: Option<&[u8]>) {
        let class = self.insert(ks, key, value);
        self.bound(class);
    }

    fn insert(&mut self, ks: &Keyspace, key: &str, value: Option<&[u8]>) -> Class {
        let class = class_of(ks, key);
        // Absent bindings too: a warm ADD assumes them absent anyway. Index
        // entries are never planned on: not remembered at all.
        if class == Class::Index
            || matches!(class, Class::Owner | Class::Binding) && value.is_none()
        {
            self.entries.remove(key);
            return class;
        }
        self.clock += 1;
        self.entries.insert(
            key.to_string(),
            (self.clock, class, value.map(<[u8]>::to_vec)),
        );
        class
    }

    /// Forgets `key` (its state is unknown, e.g. after a lost reply).
    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Evicts the least recently used entries of `class` beyond its bound
    /// (one pass over the entries, only when over the bound).
    fn bound(&mut self, class: Class) {
        let limit = match class {
            Class::Chunk => MAX_CHUNKS,
            Class::Owner | Class::Binding => MAX_OWNERS,
            Class::Index | Class::Other => return,
        };
        let count = self
            .entries
            .values()
            .filter(|(_, c, _)| *c == class)
            .count();
        if count <= limit {
            return;
        }
        let mut of_class: Vec<(u64, Key)> = self
            .entries
            .iter()
            .filter(|(_, (_, c, _))| *c == class)
            .map(|(k, (t, _, _))| (*t, k.clone()))
            .collect();
        of_class.sort_unstable();
        for (_, key) in of_class.into_iter().take(count - limit) {
            self.entries.remove(&key);
        }
    }

    /// The byte form (see the module docs), for values of `store` under
    /// `ks` at chunk size `k`; `None` if it cannot be encoded (nothing
    /// to save: a missing cache file only costs a read).
    pub fn encode(&self, store: &str, ks: &Keyspace, k: u8) -> Option<Vec<u8>> {
        let mut entries: Vec<(&u64, &Key, &Option<Vec<u8>>)> = self
            .entries
            .iter()
            .map(|(key, (t, _, v))| (t, key, v))
            .collect();
        entries.sort_unstable();
        let form = Form {
            format: FORMAT.into(),
            version: VERSION,
            store: store.to_string(),
            root: ks.root().to_string(),
            chunk_bits: k,
            positions: self
                .positions
                .iter()
                .map(|(set, pos)| (set.to_string(), format!("{pos:x}")))
                .collect(),
            entries: entries
                .into_iter()
                .map(|(_, key, v)| (key.clone(), v.as_deref().map(value_text)))
                .collect(),
        };
        serde_json::to_vec(&form).ok()
    }

    /// Reads the byte form back; `None` when it does not decode or belongs
    /// to another store, network root or chunk size. Entries whose keys lie
    /// outside the network's root are dropped.
    pub fn decode(bytes: &[u8], store: &str, ks: &Keyspace, k: u8) -> Option<NodeCache> {
        Self::decode_any_k(bytes, store, ks).and_then(|(cache, at)| (at == k).then_some(cache))
    }

    /// [`decode`](Self::decode) at whatever chunk size the bytes name,
    /// with that size (for an allocator that follows the stored k:
    /// [`Allocator::adopt_chunk_bits`](super::Allocator::adopt_chunk_bits)).
    pub fn decode_any_k(bytes: &[u8], store: &str, ks: &Keyspace) -> Option<(NodeCache, u8)> {
        let form: Form = serde_json::from_slice(bytes).ok()?;
        if form.format != FORMAT
            || form.version != VERSION
            || form.store != store
            || form.root != ks.root()
        {
            return None;
        }
        let k = form.chunk_bits;
        let mut cache = NodeCache::new();
        for (set, pos) in &form.positions {
            cache
                .positions
                .insert(set.parse().ok()?, u128::from_str_radix(pos, 16).ok()?);
        }
        let inside = format!("{}/", ks.root());
        for (key, value) in form.entries {
            if !key.starts_with(&inside) {
                continue;
            }
            let value = match value {
                Some(v) => Some(text_value(&v)?),
                None => None,
            };
            cache.insert(ks, &key, value.as_deref());
        }
        cache.bound(Class::Chunk);
        cache.bound(Class::Owner);
        Some((cache, k))
    }
}

fn class_of(ks: &Keyspace, key: &str) -> Class {
    if key.starts_with(&ks.owners_prefix()) {
        Class::Owner
    } else if key.starts_with(&ks.sticky_prefix()) {
        Class::Binding
    } else if key.starts_with(&ks.nodes_prefix()) {
        Class::Index
    } else if key.starts_with(&format!("{}/chunks/", ks.root())) {
        Class::Chunk
    } else {
        Class::Other
    }
}

/// `t` + the text of a UTF-8 value, else `x` + hex.
fn value_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("t{text}"),
        Err(_) => format!("x{}", hex(bytes)),
    }
}

/// The inverse of [`value_text`]; `None` for anything else.
fn text_value(s: &str) -> Option<Vec<u8>> {
    if let Some(text) = s.strip_prefix('t') {
        Some(text.as_bytes().to_vec())
    } else {
        unhex(s.strip_prefix('x')?)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks() -> Keyspace {
        Keyspace::new("/p", "net").unwrap()
    }

    #[test]
    fn round_trip() {
        let ks = ks();
        let mut c = NodeCache::new();
        c.remember(&ks, &ks.meta(), Some(b"{\"k\":8}"));
        c.remember(&ks, "/p/net/chunks/4/0a000000", None);
        c.remember(&ks, "/p/net/owners/c1/eth0", Some(b"{}"));
        c.set_position(1, u128::MAX - 3);
        let bytes = c.encode("s", &ks, 8).expect("encodes");
        let back = NodeCache::decode(&bytes, "s", &ks, 8).unwrap();
        assert_eq!(back.get(&ks.meta()), Some(Some(&b"{\"k\":8}"[..])));
        assert_eq!(back.get("/p/net/chunks/4/0a000000"), Some(None));
        assert_eq!(back.get("/p/net/owners/c1/eth0"), Some(Some(&b"{}"[..])));
        assert_eq!(back.positions(), c.positions());
    }

    #[test]
    fn foreign_garbage_and_truncated_are_ignored() {
        let ks = ks();
        let mut c = NodeCache::new();
        c.remember(&ks, &ks.meta(), Some(b"m"));
        let bytes = c.encode("s", &ks, 8).expect("encodes");
        let other = Keyspace::new("/p", "other").unwrap();
        assert!(NodeCache::decode(&bytes, "s", &other, 8).is_none());
        assert!(NodeCache::decode(&bytes, "s", &ks, 9).is_none());
        assert!(NodeCache::decode(&bytes, "another store", &ks, 8).is_none());
        for cut in 0..bytes.len() {
            assert!(NodeCache::decode(&bytes[..cut], "s", &ks, 8).is_none());
        }
        assert!(NodeCache::decode(b"\xff\x00garbage", "s", &ks, 8).is_none());
        // A value with neither the text nor the hex tag, and odd hex.
        let odd = String::from_utf8(bytes).unwrap().replace("\"tm\"", "\"m\"");
        assert!(NodeCache::decode(odd.as_bytes(), "s", &ks, 8).is_none());
        let mut bin = NodeCache::new();
        bin.remember(&ks, &ks.meta(), Some(b"\xff\x00"));
        let text = String::from_utf8(bin.encode("s", &ks, 8).expect("encodes")).unwrap();
        assert!(text.contains("\"xff00\""), "{text}");
        let odd = text.replace("\"xff00\"", "\"xff0\"");
        assert!(NodeCache::decode(odd.as_bytes(), "s", &ks, 8).is_none());
        // Keys outside the network are dropped.
        let smuggled = format!(
            r#"{{"format":"{FORMAT}","version":1,"store":"s","root":"/p/net","chunkBits":8,"positions":{{}},"entries":[["/p/other/meta","x00"],["/p/netx/meta","t0"]]}}"#
        );
        let c = NodeCache::decode(smuggled.as_bytes(), "s", &ks, 8).unwrap();
        assert!(c.entries().next().is_none());
    }

    #[test]
    fn bounded_and_absent_owners_forgotten() {
        let ks = ks();
        let mut c = NodeCache::new();
        for i in 0..(MAX_CHUNKS + 10) {
            c.remember(&ks, &format!("/p/net/chunks/4/{i:08x}"), Some(b"x"));
        }
        for i in 0..(MAX_OWNERS + 10) {
            c.remember(&ks, &format!("/p/net/owners/c{i}/eth0"), Some(b"x"));
        }
        let chunks = c.entries().filter(|(k, _)| k.contains("/chunks/")).count();
        let owners = c.entries().filter(|(k, _)| k.contains("/owners/")).count();
        assert_eq!((chunks, owners), (MAX_CHUNKS, MAX_OWNERS));
        // The oldest went first.
        assert!(c.get("/p/net/chunks/4/00000000").is_none());
        assert!(c
            .get(&format!("/p/net/chunks/4/{:08x}", MAX_CHUNKS + 9))
            .is_some());
        c.remember(&ks, "/p/net/owners/c300/eth0", None);
        assert!(c.get("/p/net/owners/c300/eth0").is_none());
    }
}
