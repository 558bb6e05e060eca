//! The pure planner: from what is [`Known`](super::state::Known), decide
//! which addresses to hand out or free and build the one compare-and-swap
//! [`Txn`] that commits it — or say which reads are missing first
//! ([`Stop::Need`]).
//!
//! Planning never mutates `Known`; it works on a `Draft` overlay that is
//! thrown away when a read is missing or the transaction conflicts, and the
//! driver simply plans again with what it learned. That keeps the retry loop
//! in one place (`engine`) and this module free of I/O.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the vocabulary: [`Ctx`], [`Plan`], [`Stop`], [`Outcome`] |
//! | `draft.rs` | the overlay of modified chunks and full-sets, and how it becomes compares and puts |
//! | `search.rs` | where a set's search starts (node position, start window) and the search for a free dynamic address |
//! | `requested.rs` | a static address the request names: checked against its set and taken |
//! | `add.rs` | ADD of a batch in one transaction: initial reads, meta, owner records, the addresses of each request |
//! | `batch.rs` | ADD with a result per request: taking failing requests out of a batch |
//! | `release.rs` | DEL of one owner, of a batch of owners (each its own result), of a record only if a given transaction wrote it; confirming a record against that last one |
//! | `sticky.rs` | sticky addresses: the binding an ADD consumes and a DEL writes, and its deletion |

mod add;
mod batch;
mod draft;
mod release;
mod requested;
mod search;
mod sticky;
#[cfg(test)]
mod tests;

pub use add::{initial_reads, plan_add};
pub use batch::plan_add_each;
pub use release::{
    plan_confirm_owner, plan_release, plan_release_created, plan_release_each,
    plan_release_record_only,
};
pub use search::respread_position;
pub use sticky::{plan_drop_binding, sticky_key_of};

use std::collections::BTreeMap;

use super::error::AllocError;
use super::keys::Keyspace;
use super::state::{self, Pending};
use super::{Assigned, Network, OwnerRecord};
use crate::store::Txn;

/// Why planning stopped without a plan.
#[derive(Debug)]
pub enum Stop {
    /// These reads are needed first; plan again after them.
    Need(Vec<Pending>),
    /// A definite error.
    Fail(AllocError),
}

impl From<AllocError> for Stop {
    fn from(e: AllocError) -> Self {
        Stop::Fail(e)
    }
}

/// Inputs of planning that do not change during an operation.
pub struct Ctx<'a> {
    /// The network.
    pub net: &'a Network,
    /// The chunk size exponent the operation works with (the network's, or
    /// the stored one the allocator adopted).
    pub k: u8,
    /// Its keys.
    pub ks: &'a Keyspace,
    /// Per-node spreading seed.
    pub seed: u64,
    /// Present chunks per range read.
    pub read_limit: usize,
    /// Seconds since the epoch, for new owner records.
    pub now: u64,
    /// This node's name for new owner records (empty: none).
    pub node: &'a str,
    /// Per set: the address offset this node's next search starts at (one
    /// past its last dynamic allocation).
    pub positions: &'a BTreeMap<usize, u128>,
    /// A node without a position starts in one of the first `window`
    /// chunks of an IPv6 set (see [`START_WINDOW`]); in an IPv4 set it
    /// starts anywhere.
    pub window: u128,
    /// Sticky addresses: seconds a DEL binds a pod's addresses to its name
    /// (`None`: off; nothing sticky is read or written).
    pub sticky_ttl: Option<u64>,
}

/// How many chunks at the start of an IPv6 range set a node's first search
/// may start in: nodes spread over this many chunks (fewer conflicts
/// between nodes) while addresses stay short (a /64 hands out
/// `…::2`…`…::ff:ffff` at k = 8). An IPv4 range set has no short-address
/// reason to start at its beginning: there a node starts anywhere in it.
/// The collision rates and rollout costs behind the choice are in
/// BENCHMARKS.md ("Start window", "Rollout at cluster scale").
pub const START_WINDOW: u128 = 1 << 16;

impl Ctx<'_> {
    fn k(&self) -> u8 {
        self.k
    }

    /// The per-node index key of an owner record, when it names a node
    /// that can be used in a key.
    fn node_entry(&self, rec: &OwnerRecord) -> Option<crate::store::Key> {
        self.ks
            .node_entry(rec.node.as_deref()?, &rec.container_id, &rec.ifname)
    }
}

/// What planning knows of the network's meta record (it names k), once it
/// is known to name the operation's k or to be absent.
enum MetaSeen {
    /// No meta record: the network holds nothing yet.
    Absent,
    /// Present with the operation's k, read (or remembered) as this.
    AtK(crate::store::Expect),
    /// Present but not decodable (the detail says why).
    Undecodable(String),
}

/// The meta record as a plan needs it: asked for when unknown, and
/// [`AllocError::MetaMismatch`] when it names another k than the
/// operation's (the driver adopts the stored k, or reports it). ADD
/// creates or compares it ([`add`]'s meta step), a release compares it.
fn meta_seen(ctx: &Ctx<'_>, known: &state::Known) -> Result<MetaSeen, Stop> {
    match &known.meta {
        None => Err(Stop::Need(vec![Pending::Get(ctx.ks.meta())])),
        Some(None) => Ok(MetaSeen::Absent),
        Some(Some((expect, Ok(m)))) if m.chunk_bits == ctx.k() => Ok(MetaSeen::AtK(expect.clone())),
        Some(Some((_, Ok(m)))) => Err(Stop::Fail(AllocError::MetaMismatch {
            key: ctx.ks.meta(),
            stored: m.chunk_bits,
            configured: ctx.k(),
        })),
        Some(Some((_, Err(detail)))) => Ok(MetaSeen::Undecodable(detail.clone())),
    }
}

/// What happened to one request of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The owner already held addresses (idempotent ADD).
    Existing(OwnerRecord, Vec<Assigned>),
    /// New addresses, committed by the plan's transaction.
    New(OwnerRecord, Vec<Assigned>),
}

/// A finished plan.
#[derive(Debug)]
pub struct Plan<T> {
    /// Per-request (or per-operation) result, valid once `txn` commits.
    pub result: T,
    /// The transaction; no ops means nothing to write.
    pub txn: Txn,
    /// Per range set, where this node's next search starts once `txn`
    /// commits (only sets that got a dynamic address; last one wins).
    pub moved: Vec<(usize, u128)>,
    /// Some requests of `result` failed (see [`plan_add_each`]): the driver
    /// re-checks such failures from a fresh read when they were planned on
    /// remembered values.
    pub has_failures: bool,
}

impl<T> Plan<T> {
    fn new(result: T, txn: Txn) -> Self {
        Plan {
            result,
            txn,
            moved: Vec::new(),
            has_failures: false,
        }
    }
}
