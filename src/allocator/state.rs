//! What the allocator knows about the store during one operation: the values
//! read so far (decoded), which chunk indices are known to be absent, and
//! conversion of pending reads into store [`Read`]s and back.
//!
//! Pure: the driver feeds store answers in; the planner reads from here.

use std::cell::OnceCell;
use std::collections::HashMap;

use roaring::RoaringTreemap;

use super::keys::Keyspace;
use super::meta::Meta;
use super::{fullset, OwnerRecord};
use crate::codec::{self, Chunk, CodecError};
use crate::range::Family;
use crate::store::{Key, Read, ReadResult, Versioned};

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
    Present(i64, &'a Chunk),
    /// Present but undecodable.
    Corrupt(&'a CodecError),
}

/// Stored bytes with their revision, decoded on first look: a range read
/// may return chunks the planner never needs, and decoding costs more than
/// reading.
#[derive(Debug)]
struct Lazy<T, E> {
    rev: i64,
    bytes: Vec<u8>,
    decoded: OnceCell<Result<T, E>>,
}

impl<T, E> Lazy<T, E> {
    fn new(v: Versioned) -> Self {
        Lazy {
            rev: v.mod_revision,
            bytes: v.value,
            decoded: OnceCell::new(),
        }
    }

    fn get(&self, decode: impl FnOnce(&[u8]) -> Result<T, E>) -> &Result<T, E> {
        self.decoded.get_or_init(|| decode(&self.bytes))
    }
}

/// How a full-set looks to the planner.
#[derive(Debug)]
pub enum FullLookup<'a> {
    /// Not read yet.
    Unknown,
    /// Known not to exist: no chunk listed.
    Absent,
    /// Present and decoded.
    Present(i64, &'a RoaringTreemap),
    /// Present but undecodable.
    Corrupt(&'a str),
}

/// A decoded value (or why it could not be decoded) with its mod revision.
pub type Stored<T> = Option<(i64, Result<T, String>)>;

/// The values known so far.
#[derive(Debug)]
pub struct Known {
    ks: Keyspace,
    k: u8,
    chunks: HashMap<(Family, u128), Lazy<Chunk, CodecError>>,
    covered: Vec<(Family, u128, u128)>,
    /// Full-sets by key (decoded on first look, like chunks).
    full: HashMap<Key, Option<Lazy<RoaringTreemap, String>>>,
    /// The meta record, once read (`Some(None)` = absent).
    pub meta: Option<Stored<Meta>>,
    /// Owner records by key.
    pub owners: HashMap<Key, Stored<OwnerRecord>>,
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
                Ok(c) => Lookup::Present(v.rev, c),
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

    /// Whether the full-set `key` has been read.
    pub fn full_known(&self, key: &str) -> bool {
        self.full.contains_key(key)
    }

    /// The state of one full-set.
    pub fn full(&self, key: &str) -> FullLookup<'_> {
        match self.full.get(key) {
            None => FullLookup::Unknown,
            Some(None) => FullLookup::Absent,
            Some(Some(l)) => match l.get(fullset::decode) {
                Ok(set) => FullLookup::Present(l.rev, set),
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
                            self.put_chunk(*family, idx, Some(v));
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
        if key == self.ks.meta() {
            self.meta = Some(v.map(|v| (v.mod_revision, Meta::decode(&v.value))));
        } else if key.starts_with(&self.ks.owners_prefix()) {
            let rec = v.map(|v| {
                (
                    v.mod_revision,
                    serde_json::from_slice::<OwnerRecord>(&v.value).map_err(|e| e.to_string()),
                )
            });
            self.owners.insert(key.to_string(), rec);
        } else if key.starts_with(&format!("{}/full/", self.ks.root())) {
            self.full.insert(key.to_string(), v.map(Lazy::new));
        } else {
            for family in [Family::V4, Family::V6] {
                if let Some(idx) = self.ks.parse_chunk(family, self.k, key) {
                    self.put_chunk(family, idx, v);
                    return;
                }
            }
        }
    }

    fn put_chunk(&mut self, family: Family, idx: u128, v: Option<Versioned>) {
        match v {
            None => {
                self.chunks.remove(&(family, idx));
                self.covered.push((family, idx, idx));
            }
            Some(v) => {
                self.chunks.insert((family, idx), Lazy::new(v));
            }
        }
    }
}

/// Decodes chunk bytes and checks they cover 2^k addresses.
pub fn decode_chunk(bytes: &[u8], k: u8) -> Result<Chunk, CodecError> {
    codec::decode_expecting(bytes, k)
}
