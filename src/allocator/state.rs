//! What the allocator knows about the store during one operation: the values
//! read so far (decoded), which chunk indices are known to be absent, and
//! conversion of pending reads into store [`Read`]s and back.
//!
//! Every known value carries the [`Expect`] a transaction that relies on it
//! must compare: `ModRevision` for a value read from the store during this
//! operation, `Value` (the exact bytes) for one taken from the node's
//! [`NodeCache`](super::cache::NodeCache), and `Absent` for a key known or
//! assumed not to exist. So a stale, foreign or made-up cache entry can only
//! make a transaction fail its compare; it can never be written over.
//!
//! Pure: the driver feeds store answers in; the planner reads from here.

use std::cell::OnceCell;
use std::collections::HashMap;

use roaring::RoaringTreemap;

use super::keys::Keyspace;
use super::meta::Meta;
use super::{fullset, Binding, OwnerRecord};
use crate::codec::{self, Chunk, CodecError};
use crate::range::Family;
use crate::store::{Expect, Key, Read, ReadResult, Versioned};

/// A read the planner needs before it can go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// One key.
    Get(Key),
    /// Chunks `lo..=hi` of a family, at most `limit` present ones.
    Chunks {
        /// Family.
        family: Family,
        /// First chunk index.
        lo: u128,
        /// Last chunk index.
        hi: u128,
        /// Maximum present chunks returned.
        limit: usize,
    },
}

/// How a chunk looks to the planner.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Not read yet.
    Unknown,
    /// Known not to exist: all free.
    Absent,
    /// Present and decoded.
    Present(&'a Chunk),
    /// Present but undecodable.
    Corrupt(&'a CodecError),
}

/// Stored bytes with their revision, decoded on first look: a range read
/// may return chunks the planner never needs, and decoding costs more than
/// reading.
#[derive(Debug)]
struct Lazy<T, E> {
    /// `false` when the bytes came from the node's cache.
    fresh: bool,
    rev: i64,
    bytes: Vec<u8>,
    decoded: OnceCell<Result<T, E>>,
}

impl<T, E> Lazy<T, E> {
    fn new(v: Versioned) -> Self {
        Lazy {
            fresh: true,
            rev: v.mod_revision,
            bytes: v.value,
            decoded: OnceCell::new(),
        }
    }

    fn cached(bytes: Vec<u8>) -> Self {
        Lazy {
            fresh: false,
            rev: 0,
            bytes,
            decoded: OnceCell::new(),
        }
    }

    /// What a transaction relying on this value compares.
    fn expect(&self) -> Expect {
        if self.fresh {
            Expect::ModRevision(self.rev)
        } else {
            Expect::Value(self.bytes.clone())
        }
    }

    fn get(&self, decode: impl FnOnce(&[u8]) -> Result<T, E>) -> &Result<T, E> {
        self.decoded.get_or_init(|| decode(&self.bytes))
    }

    /// The same bytes, to be decoded as another type.
    fn retype<U, F>(self) -> Lazy<U, F> {
        Lazy {
            fresh: self.fresh,
            rev: self.rev,
            bytes: self.bytes,
            decoded: OnceCell::new(),
        }
    }
}

/// How a full-chunk set looks to the planner.
#[derive(Debug)]
pub enum FullLookup<'a> {
    /// Not read yet.
    Unknown,
    /// Known not to exist: no chunk listed.
    Absent,
    /// Present and decoded.
    Present(&'a RoaringTreemap),
    /// Present but undecodable.
    Corrupt(&'a str),
}

/// A decoded value (or why it could not be decoded) with what a transaction
/// relying on it compares.
pub type Stored<T> = Option<(Expect, Result<T, String>)>;

/// The values known so far.
#[derive(Debug)]
pub struct Known {
    ks: Keyspace,
    k: u8,
    chunks: HashMap<(Family, u128), Lazy<Chunk, CodecError>>,
    covered: Vec<(Family, u128, u128)>,
    /// Full-chunk sets by key (decoded on first look, like chunks).
    full: HashMap<Key, Option<Lazy<RoaringTreemap, String>>>,
    /// The meta record, once read (`Some(None)` = absent).
    pub meta: Option<Stored<Meta>>,
    /// Owner records by key.
    pub owners: HashMap<Key, Stored<OwnerRecord>>,
    /// Sticky-address bindings by key (only with sticky addresses on).
    pub bindings: HashMap<Key, Stored<Binding>>,
    /// Whether anything known came from the node's cache (not read in this
    /// operation): a definite failure planned on such values is not trusted.
    cached: bool,
}

impl Known {
    /// Nothing known yet.
    pub fn new(ks: Keyspace, k: u8) -> Self {
        Known {
            ks,
            k,
            chunks: HashMap::new(),
            covered: Vec::new(),
            full: HashMap::new(),
            meta: None,
            owners: HashMap::new(),
            bindings: HashMap::new(),
            cached: false,
        }
    }

    /// Whether any value known came from the node's cache.
    pub fn uses_cache(&self) -> bool {
        self.cached
    }

    /// Takes in values remembered by the node (`None`: known absent). They
    /// are compared by their bytes when a transaction relies on them.
    pub fn seed<'k>(&mut self, entries: impl IntoIterator<Item = (&'k str, Option<&'k [u8]>)>) {
        for (key, value) in entries {
            self.cached = true;
            match value {
                Some(bytes) => self.put_cached(key, bytes.to_vec()),
                None => self.absorb_key(key, None),
            }
        }
    }

    /// Records the assumption that `key` (an owner) does not exist, over
    /// anything remembered of it: the transaction compares it absent, and a
    /// conflict answer brings its real value. (A remembered record is never
    /// handed back as held without the store confirming it.)
    ///
    /// For a sticky binding key the assumption is only made when nothing is
    /// remembered of it: a remembered binding is as safe to rely on as a
    /// remembered chunk (its bytes are compared).
    pub fn assume_absent(&mut self, key: &str) {
        if key.starts_with(&self.ks.sticky_prefix()) {
            self.bindings.entry(key.to_string()).or_insert(None);
            return;
        }
        self.owners.insert(key.to_string(), None);
    }

    /// Records the assumption that chunk `index` does not exist (no address
    /// of it taken), when nothing is known of it: a transaction relying on
    /// it compares it absent, and a conflict answer brings its real value.
    /// For a chunk no node is likely to have written yet (a node's first
    /// start chunk, or the one it moves to after meeting another node):
    /// the guess saves the read, and a wrong guess costs what the read
    /// would have.
    pub fn assume_chunk_absent(&mut self, family: Family, index: u128) {
        if matches!(self.chunk(family, index), Lookup::Unknown) {
            self.cached = true;
            self.put_chunk(family, index, None);
        }
    }

    /// Whether the meta record is known as exactly `bytes`, remembered or
    /// assumed (so a transaction relying on it compares those bytes).
    pub fn meta_compared_as(&self, bytes: &[u8]) -> bool {
        matches!(&self.meta, Some(Some((Expect::Value(b), _))) if b.as_slice() == bytes)
    }

    /// Whether the value of `key` is known (present or absent).
    pub fn knows(&self, key: &str) -> bool {
        if key == self.ks.meta() {
            return self.meta.is_some();
        }
        if key.starts_with(&self.ks.owners_prefix()) {
            return self.owners.contains_key(key);
        }
        if key.starts_with(&self.ks.sticky_prefix()) {
            return self.bindings.contains_key(key);
        }
        if self.full.contains_key(key) {
            return self.full_known(key);
        }
        [Family::V4, Family::V6].into_iter().any(|family| {
            self.ks
                .parse_chunk(family, self.k, key)
                .is_some_and(|idx| !matches!(self.chunk(family, idx), Lookup::Unknown))
        })
    }

    /// The reads of `pending` whose answers are not known yet.
    pub fn unknown(&self, pending: Vec<Pending>) -> Vec<Pending> {
        pending
            .into_iter()
            .filter(|p| match p {
                Pending::Get(key) => !self.knows(key),
                Pending::Chunks { family, lo, .. } => {
                    matches!(self.chunk(*family, *lo), Lookup::Unknown)
                }
            })
            .collect()
    }

    /// Whether `current`, a conflict answer for `key`, shows addresses taken
    /// in a chunk that were free in the remembered (cached) value, or a
    /// chunk this operation took as absent (read or assumed) now present:
    /// another node allocates in this chunk too.
    pub fn contested(&self, key: &str, current: Option<&Versioned>) -> bool {
        let Some(current) = current else {
            return false;
        };
        [Family::V4, Family::V6].into_iter().any(|family| {
            let Some(idx) = self.ks.parse_chunk(family, self.k, key) else {
                return false;
            };
            if matches!(self.chunk(family, idx), Lookup::Absent) {
                return true;
            }
            let Some(old) = self.chunks.get(&(family, idx)).filter(|l| !l.fresh) else {
                return false;
            };
            let (Ok(old), Ok(new)) = (
                old.get(|b| decode_chunk(b, self.k)),
                decode_chunk(&current.value, self.k),
            ) else {
                return false;
            };
            old.bits
                .words()
                .iter()
                .zip(new.bits.words())
                .any(|(o, n)| n & !o != 0)
        })
    }

    /// What a transaction relying on the current state of chunk `index`
    /// compares.
    pub fn chunk_expect(&self, family: Family, index: u128) -> Expect {
        self.chunks
            .get(&(family, index))
            .map_or(Expect::Absent, Lazy::expect)
    }

    /// What a transaction relying on the full-chunk set `key` compares.
    pub fn full_expect(&self, key: &str) -> Expect {
        match self.full.get(key) {
            Some(Some(l)) => l.expect(),
            _ => Expect::Absent,
        }
    }

    /// The keyspace.
    pub fn keyspace(&self) -> &Keyspace {
        &self.ks
    }

    /// The state of one chunk.
    pub fn chunk(&self, family: Family, index: u128) -> Lookup<'_> {
        match self.chunks.get(&(family, index)) {
            Some(v) => match v.get(|b| decode_chunk(b, self.k)) {
                Ok(c) => Lookup::Present(c),
                // Remembered bytes that do not decode say nothing about
                // the store: read the chunk.
                Err(_) if !v.fresh => Lookup::Unknown,
                Err(e) => Lookup::Corrupt(e),
            },
            None if self
                .covered
                .iter()
                .any(|(f, lo, hi)| *f == family && *lo <= index && index <= *hi) =>
            {
                Lookup::Absent
            }
            None => Lookup::Unknown,
        }
    }

    /// Whether the full-chunk set `key` has been read.
    pub fn full_known(&self, key: &str) -> bool {
        !matches!(self.full(key), FullLookup::Unknown)
    }

    /// The state of one full-chunk set.
    pub fn full(&self, key: &str) -> FullLookup<'_> {
        match self.full.get(key) {
            None => FullLookup::Unknown,
            Some(None) => FullLookup::Absent,
            Some(Some(l)) => match l.get(fullset::decode) {
                Ok(set) => FullLookup::Present(set),
                Err(_) if !l.fresh => FullLookup::Unknown,
                Err(e) => FullLookup::Corrupt(e),
            },
        }
    }

    /// Turns pending reads into store reads.
    pub fn to_reads(&self, pending: &[Pending]) -> Vec<Read> {
        pending
            .iter()
            .map(|p| match p {
                Pending::Get(k) => Read::Get(k.clone()),
                Pending::Chunks {
                    family,
                    lo,
                    hi,
                    limit,
                } => {
                    let mut end = self.ks.chunk(*family, self.k, *hi);
                    // Keys have a fixed width: key(hi) + NUL is just past key(hi).
                    end.push('\0');
                    Read::Range {
                        start: self.ks.chunk(*family, self.k, *lo),
                        end,
                        limit: *limit,
                    }
                }
            })
            .collect()
    }

    /// Takes in the answers to `pending` (same order).
    pub fn absorb(&mut self, pending: &[Pending], results: Vec<ReadResult>) {
        for (p, r) in pending.iter().zip(results) {
            match (p, r) {
                (Pending::Get(k), ReadResult::Get(v)) => self.absorb_key(k, v),
                (Pending::Chunks { family, lo, hi, .. }, ReadResult::Range { kvs, more }) => {
                    let mut last = None;
                    for (key, v) in kvs {
                        if let Some(idx) = self.ks.parse_chunk(*family, self.k, &key) {
                            last = Some(idx);
                            self.put_chunk(*family, idx, Some(Lazy::new(v)));
                        }
                    }
                    let through = if more { last } else { Some(*hi) };
                    if let Some(t) = through {
                        self.covered.push((*family, *lo, t));
                    }
                }
                // A backend answering with the wrong shape breaks the
                // contract; treat the answer as not read.
                _ => {}
            }
        }
    }

    /// Takes in the current value of one key (a get, or a conflict answer).
    pub fn absorb_key(&mut self, key: &str, v: Option<Versioned>) {
        self.put(key, v.map(Lazy::new));
    }

    fn put_cached(&mut self, key: &str, bytes: Vec<u8>) {
        self.put(key, Some(Lazy::cached(bytes)));
    }

    fn put(&mut self, key: &str, v: Option<Lazy<(), ()>>) {
        if key == self.ks.meta() {
            self.meta = Some(v.map(|l| (l.expect(), Meta::decode(&l.bytes))));
        } else if key.starts_with(&self.ks.owners_prefix()) {
            let rec = v.map(|l| {
                (
                    l.expect(),
                    serde_json::from_slice::<OwnerRecord>(&l.bytes).map_err(|e| e.to_string()),
                )
            });
            self.owners.insert(key.to_string(), rec);
        } else if key.starts_with(&self.ks.sticky_prefix()) {
            // Remembered bytes that do not decode say nothing about the
            // store: leave the binding unknown (read, or assumed absent).
            let decoded = v.map(|l| {
                let b = serde_json::from_slice::<Binding>(&l.bytes).map_err(|e| e.to_string());
                (l.fresh, (l.expect(), b))
            });
            match decoded {
                Some((false, (_, Err(_)))) => {
                    self.bindings.remove(key);
                }
                d => {
                    self.bindings.insert(key.to_string(), d.map(|(_, b)| b));
                }
            }
        } else if key.starts_with(&format!("{}/full/", self.ks.root())) {
            self.full.insert(key.to_string(), v.map(Lazy::retype));
        } else {
            for family in [Family::V4, Family::V6] {
                if let Some(idx) = self.ks.parse_chunk(family, self.k, key) {
                    self.put_chunk(family, idx, v.map(Lazy::retype));
                    return;
                }
            }
        }
    }

    fn put_chunk(&mut self, family: Family, idx: u128, v: Option<Lazy<Chunk, CodecError>>) {
        match v {
            None => {
                self.chunks.remove(&(family, idx));
                self.covered.push((family, idx, idx));
            }
            Some(v) => {
                self.chunks.insert((family, idx), v);
            }
        }
    }
}

/// Decodes chunk bytes and checks they cover 2^k addresses.
pub fn decode_chunk(bytes: &[u8], k: u8) -> Result<Chunk, CodecError> {
    codec::decode_expecting(bytes, k)
}
