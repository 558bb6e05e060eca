//! Errors of the allocation protocol. The CNI layer maps each variant to a
//! CNI error code in one place (`cni::error`).

use std::net::IpAddr;
use std::time::Duration;

use super::keys::BadKeyPart;
use crate::codec::CodecError;
use crate::range::RangeError;
use crate::store::StoreError;

/// Errors of the allocation protocol.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The network's ranges are invalid.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A name cannot be used in a key (network name, container ID, ifname).
    #[error(transparent)]
    BadName(#[from] BadKeyPart),
    /// The chunk size is outside the supported range.
    #[error("chunkBits {0} is not supported (use {lo}..={hi})", lo = crate::allocator::CHUNK_BITS_RANGE.start(), hi = crate::allocator::CHUNK_BITS_RANGE.end())]
    BadChunkBits(u8),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored chunk size disagrees with the configured one.
    #[error("network state at {key} was written with chunkBits {stored}, but the config says {configured}; set \"chunkBits\": {stored} (existing state is never reinterpreted)")]
    MetaMismatch {
        /// The meta key.
        key: String,
        /// k in the store.
        stored: u8,
        /// k in the config.
        configured: u8,
    },
    /// The meta record could not be read.
    #[error("stored meta record {key} is corrupt: {detail}")]
    CorruptMeta {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A chunk could not be decoded.
    #[error("stored chunk {key} is corrupt: {source}")]
    CorruptChunk {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// A full-chunk set could not be decoded.
    #[error("stored full-set {key} is corrupt: {detail}")]
    CorruptFullSet {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// An owner record could not be decoded.
    #[error("stored owner record {key} is corrupt: {detail}")]
    CorruptOwner {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// An owner record does not fit the current config (e.g. its addresses
    /// are outside every range, or it has another number of addresses).
    #[error("owner record {key} does not match the current ranges: {detail}")]
    StaleOwner {
        /// The key.
        key: String,
        /// What does not match.
        detail: String,
    },
    /// No free address is left in a range set.
    #[error("no free address left in range set {set} ({ranges})")]
    Exhausted {
        /// Index of the range set.
        set: usize,
        /// The set's ranges, for the message.
        ranges: String,
    },
    /// Every address reserved for a deploy stage is taken.
    #[error("every address reserved for stage {stage:?} in range set {set} is taken")]
    StageExhausted {
        /// The stage.
        stage: String,
        /// Index of the range set.
        set: usize,
    },
    /// A requested (static) address cannot be given.
    #[error("requested address {ip} cannot be allocated: {reason}")]
    RequestedUnavailable {
        /// The address.
        ip: IpAddr,
        /// Why.
        reason: String,
    },
    /// A record could not be encoded for the store (a bug: the records are
    /// strings, numbers and addresses). Nothing was written.
    #[error("could not encode the {what}: {reason}")]
    Encode {
        /// Which record (`meta record`, `owner record`).
        what: &'static str,
        /// The encoder's error.
        reason: String,
    },
    /// The same owner appears twice in one batch.
    #[error("owner {0} appears twice in one batch")]
    DuplicateOwner(String),
    /// Compare-and-swap retries ran out (heavy contention).
    #[error("gave up after {attempts} conflicting attempts; try again later")]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// The operation's time budget ran out.
    #[error("operation did not finish within its budget of {budget:?}; try again later (last error: {last})")]
    BudgetExceeded {
        /// The budget.
        budget: Duration,
        /// The last transient error seen, or "none".
        last: String,
    },
}

impl AllocError {
    /// Whether trying again later may succeed (CNI code 11).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AllocError::Store(StoreError::Unavailable(_))
                | AllocError::Contention { .. }
                | AllocError::BudgetExceeded { .. }
        )
    }

    /// Whether the store refused a write for lack of space (etcd's NOSPACE
    /// alarm): deletions still pass.
    pub fn is_no_space(&self) -> bool {
        matches!(self, AllocError::Store(StoreError::NoSpace(_)))
    }
}

/// [`Allocator::allocate_batch`](super::Allocator::allocate_batch) stopped
/// part-way: the requests are committed [`MAX_BATCH`](super::MAX_BATCH) per
/// transaction, and the transactions before the failing one stay
/// committed. `committed` holds their allocations, for the first
/// `committed.len()` requests in request order; the failing transaction's
/// requests and every later one hold nothing new (a failing transaction
/// whose error is transient may still have committed: see
/// [`StoreError::Unavailable`]; an ADD of the same owners again returns
/// what they hold).
///
/// ```
/// use host_etcd::allocator::{AllocRequest, Allocator, Network, Options, OwnerId};
/// use host_etcd::{MemoryStore, RangeSet};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A /26 hands out 61 addresses: the first transaction (50 requests)
/// // commits, the second (20) finds too few left and fails whole.
/// let net = Network::new("small", vec![RangeSet::from_cidr("10.1.0.0/26")?])?;
/// let alloc = Allocator::new(MemoryStore::new(), net, Options::default())?;
/// let owner = |i| OwnerId { container_id: format!("c{i}"), ifname: "eth0".into() };
/// let reqs: Vec<_> = (0..70).map(|i| AllocRequest::new(owner(i))).collect();
/// let err = alloc.allocate_batch(&reqs).await.unwrap_err();
/// assert!(matches!(err.error, host_etcd::AllocError::Exhausted { .. }));
/// assert_eq!(err.committed.len(), 50);
/// // The committed ones hold their addresses; the others hold nothing.
/// assert!(alloc.owner(&owner(49)).await?.is_some());
/// assert!(alloc.owner(&owner(50)).await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error} ({} earlier requests of the batch committed)", committed.len())]
#[non_exhaustive]
pub struct BatchError {
    /// The allocations committed before the failure, in request order:
    /// those of the first `committed.len()` requests.
    pub committed: Vec<super::Allocation>,
    /// Why the next transaction failed.
    pub error: AllocError,
}
