//! Consistency check (owner records vs chunk bits), safe repair through the
//! same compare-and-swap transactions, and usage figures.
//!
//! The scan reads chunks first and owner records second. An ADD or DEL that
//! commits in between changes the chunk's `mod_revision`, so every problem
//! is confirmed by re-reading its chunk: one whose chunk changed is dropped
//! as "in flux", and every repair compares the revision the scan read (the
//! chunk's, or the corrupt full-set's), so a repair never undoes a
//! concurrent allocation or deletes a value written since.
//!
//! Split like the planner: `assess` decides (pure: from what was read, the
//! problems and the repairs), `usage` keeps the usage figures current from
//! what was read (pure), `driver` reads from the store, calls them, and
//! writes.

mod assess;
mod driver;
mod index;
mod usage;
#[cfg(feature = "cli")]
pub(crate) use usage::UsageMirror;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_proptests;

use std::net::IpAddr;

use serde::Serialize;

/// One inconsistency found by [`Allocator::check`](super::Allocator::check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    /// A chunk that does not decode.
    CorruptChunk {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// An owner record that does not decode.
    CorruptOwner {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// A full-set that does not decode.
    CorruptFullSet {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// The meta record does not decode.
    CorruptMeta {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// An address marked taken that no owner holds.
    BitWithoutOwner {
        /// The address.
        ip: IpAddr,
        /// Its chunk key.
        chunk: String,
    },
    /// An address an owner holds that is not marked taken.
    OwnerWithoutBit {
        /// The address.
        ip: IpAddr,
        /// The owner key.
        owner: String,
    },
    /// An address held by more than one owner.
    SharedAddress {
        /// The address.
        ip: IpAddr,
        /// The owner keys.
        owners: Vec<String>,
    },
    /// An owner record that names its node but whose per-node index entry
    /// is missing or holds other bytes (e.g. written before the index
    /// existed): that node's GC, reconcile and `release --node` do not see
    /// it until it is indexed (`ipamctl reindex` or `check --repair`).
    OwnerNotIndexed {
        /// The owner key.
        owner: String,
        /// The index entry it should have.
        entry: String,
    },
    /// A per-node index entry without the owner record it copies (e.g. the
    /// record was released by a build without the index).
    StaleIndexEntry {
        /// The index entry.
        entry: String,
    },
}

/// The result of [`Allocator::check`](super::Allocator::check).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Chunks read.
    pub chunks: usize,
    /// Owner records read.
    pub owners: usize,
    /// Addresses marked taken.
    pub allocated: u64,
    /// Problems found (confirmed against a second read).
    pub problems: Vec<Problem>,
    /// Problems whose chunk (or corrupt full-set) changed during the check
    /// or its repair (re-run to decide).
    pub in_flux: usize,
    /// Problems fixed by `repair` (0 for a plain check).
    pub repaired: usize,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Usage of one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RangeUsage {
    /// Range set index.
    pub set: usize,
    /// Range index within the set.
    pub range: usize,
    /// `subnet` of the range.
    pub subnet: String,
    /// `rangeStart`.
    pub start: IpAddr,
    /// `rangeEnd`.
    pub end: IpAddr,
    /// Addresses in `start..=end` that no `exclude` entry covers.
    pub size: u128,
    /// Of those, marked taken.
    pub used: u128,
    /// Stored chunks overlapping the range.
    pub chunks: usize,
    /// Bytes of those chunks' values.
    pub bytes: usize,
}
