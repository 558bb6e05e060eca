//! The allocation protocol over a [`Store`]: read, pick a free address in a
//! chunk, commit with compare-and-swap, retry on conflict (bounded, with
//! jitter); owner records; release; GC; consistency check.
//!
//! See `DESIGN.md` ("ADD, uncontended: exactly two etcd round trips").

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::range::{RangeError, RangeSet};
use crate::store::{Store, StoreError};

/// Default chunk size exponent: a chunk covers 2^k addresses.
pub const DEFAULT_CHUNK_BITS: u8 = 10;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/host-etcd";

/// What the allocator manages: one named network's range sets.
#[derive(Clone, Debug)]
pub struct Network {
    /// The CNI network name.
    pub name: String,
    /// Key prefix (default [`DEFAULT_PREFIX`]).
    pub prefix: String,
    /// One address is handed out per set.
    pub sets: Vec<RangeSet>,
    /// k: a chunk covers 2^k addresses (both families).
    pub chunk_bits: u8,
}

/// Who holds addresses: a container's interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerId {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

/// The stored owner record (`{p}/{net}/owners/{containerID}/{ifname}`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// One address per range set, in set order.
    pub ips: Vec<IpAddr>,
    /// Seconds since the Unix epoch at allocation.
    pub created: u64,
    /// K8S_POD_NAMESPACE, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// K8S_POD_NAME, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

/// One allocation request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocRequest {
    /// Who asks.
    pub owner: OwnerId,
    /// Deploy stage (`sandbox`, `smallflow`, ...), already parsed by the caller.
    pub stage: Option<String>,
    /// Exact addresses asked for (at most one per set).
    pub requested: Vec<IpAddr>,
    /// K8S_POD_NAMESPACE, recorded in the owner record.
    pub pod_namespace: Option<String>,
    /// K8S_POD_NAME, recorded in the owner record.
    pub pod_name: Option<String>,
}

impl Default for OwnerId {
    fn default() -> Self {
        OwnerId {
            container_id: String::new(),
            ifname: "eth0".into(),
        }
    }
}

/// One address handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Index of the range set.
    pub set: usize,
    /// Index of the range inside the set.
    pub range: usize,
    /// The address.
    pub ip: IpAddr,
}

/// The result of [`Allocator::allocate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// One per range set, in set order.
    pub assigned: Vec<Assigned>,
    /// `true` if the owner already held these addresses (idempotent ADD).
    pub existing: bool,
}

/// Tunables of the protocol.
#[derive(Clone, Debug)]
pub struct Options {
    /// Maximum CAS attempts per operation.
    pub max_attempts: u32,
    /// Overall time budget per operation.
    pub budget: Duration,
    /// Stable per-node value spreading nodes over chunks (hostname hash).
    pub node_seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_attempts: 64,
            budget: Duration::from_secs(10),
            node_seed: 0,
        }
    }
}

/// Errors of the allocation protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The network's ranges are invalid.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chunk could not be decoded.
    #[error("stored chunk {key} is corrupt: {source}")]
    CorruptChunk {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// Placeholder until the allocator is implemented.
    #[error("{0}")]
    Other(String),
}

/// The allocation protocol bound to a store and a network.
pub struct Allocator<S> {
    store: S,
    network: Network,
    options: Options,
}

impl<S: Store> Allocator<S> {
    /// Binds a store and a network.
    pub fn new(store: S, network: Network, options: Options) -> Self {
        Allocator {
            store,
            network,
            options,
        }
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Hands out one address per range set to `req.owner` (idempotent).
    pub async fn allocate(&self, req: &AllocRequest) -> Result<Allocation, AllocError> {
        let _ = req;
        todo!("allocator::allocate")
    }

    /// Releases everything `owner` holds; `None` if it held nothing.
    pub async fn release(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let _ = owner;
        todo!("allocator::release")
    }

    /// The owner record of `owner`, if any.
    pub async fn owner(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let _ = owner;
        todo!("allocator::owner")
    }

    /// Every owner record of the network.
    pub async fn owners(&self) -> Result<Vec<OwnerRecord>, AllocError> {
        todo!("allocator::owners")
    }

    /// Releases every owner not in `valid`; returns what was released.
    pub async fn gc(&self, valid: &[OwnerId]) -> Result<Vec<OwnerRecord>, AllocError> {
        let _ = valid;
        todo!("allocator::gc")
    }

    /// One cheap read, to tell whether the store answers (CNI STATUS).
    pub async fn ping(&self) -> Result<(), AllocError> {
        todo!("allocator::ping")
    }
}
