//! The allocation protocol over a [`Store`]: a pure planner decides, from
//! what is known of the store, which addresses to hand out or free and
//! builds the one compare-and-swap transaction that commits it; the driver
//! ([`Allocator`]) runs it in the crate's one bounded retry loop (with
//! jitter), feeding it reads and conflict answers. Owner records, release,
//! GC, consistency check and repair, sticky bindings and group commit
//! ([`GroupCommit`]) are built on that loop.
//!
//! A cold ADD is two round trips (one read, one transaction); with a warm
//! [`NodeCache`] an ADD or a DEL is one transaction and no read. Remembered
//! values are compared by their bytes, so a stale cache costs a retry,
//! never an address.
//!
//! The whole ADD and DEL step by step, the keyspace with every value
//! format, and the measured reasons behind the chunk size, the start
//! window, the node cache, the node lock and group commit: the repository's
//! `ARCHITECTURE.md`.
//!
//! Sticky addresses (opt-in, [`Options::sticky_ttl`]): a DEL of a pod's
//! container leaves a [`Binding`] of its addresses to its pod name, and the
//! pod's next container gets them back when they are still free (see
//! [`Allocator::bindings`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::range::RangeSet;
use crate::store::Store;

// The protocol's parts are private; what an embedder (and this crate's
// cni, agent and admin layers) uses is re-exported below.
mod cache;
mod check;
mod engine;
mod error;
mod fullset;
mod geometry;
mod group;
mod keys;
pub(crate) mod meta;
mod nodes;
mod owners;
mod plan;
mod scan;
mod state;
mod sticky;

pub use cache::NodeCache;
#[cfg(feature = "cli")]
pub(crate) use check::UsageMirror;
pub use check::{CheckReport, Problem, RangeUsage};
pub use error::{AllocError, BatchError};
pub use geometry::node_seed_from;
pub use group::{Abandoned, GroupCommit, Observer};
pub use keys::{BadKeyPart, Keyspace};
pub use nodes::NodeRecords;
pub use scan::ScanProgress;
pub use sticky::BindingEntry;

/// Not API: internals this crate's own benches, examples and tests use (the
/// spreading function, candidate chunks, the full-set encoding). No
/// stability promise; hidden from the docs.
#[doc(hidden)]
pub mod internals {
    pub use super::fullset::encode as encode_full_set;
    pub use super::geometry::{normal_candidates, spread, Candidates};
    pub use super::plan::START_WINDOW;
}

/// Default chunk size exponent: a chunk covers 2^k addresses. Chosen by
/// measurement (BENCHMARKS.md, "Chunk size"): fewest CAS retries at 64
/// concurrent clients with the same single-client cost as larger chunks.
/// A network whose IPv4 range sets are small gets a smaller k
/// ([`default_chunk_bits`]), so that it still has enough chunks for its
/// nodes to allocate without sharing one.
pub const DEFAULT_CHUNK_BITS: u8 = 8;

/// The fewest chunks [`default_chunk_bits`] gives an IPv4 range set (while
/// k stays at least [`MIN_DEFAULT_CHUNK_BITS`]): two per node of a
/// 512-node cluster. Two nodes allocating in one chunk at once find it
/// changed before about every second ADD, whatever the search does
/// (ARCHITECTURE.md, "Decisions changed by measurement").
const MIN_DEFAULT_CHUNKS: u128 = 1024;

/// IPv4 sets of fewer chunks than this at k = 8 leave [`default_chunk_bits`]
/// at 8.
const SMALL_SET_CHUNKS: u128 = 16;

/// The smallest k [`default_chunk_bits`] picks (64 addresses per chunk).
const MIN_DEFAULT_CHUNK_BITS: u8 = 6;

/// The default chunk size exponent of a network with these range sets:
/// [`DEFAULT_CHUNK_BITS`] (8), lowered to 7 or 6 while some IPv4 set
/// would hold fewer than 1,024 chunks (a /16 gets 6, a
/// /15 7, a /14 or larger 8). An IPv4 set of fewer than 16 chunks at
/// k = 8 (under 4,096 addresses, e.g. a single host's /24) does not lower
/// it: few nodes share it, and one chunk keeps host-local's order (the
/// first address first). IPv6 sets never lower it (a /64 has 2^56 chunks
/// at k = 8). Pure; every node computes the same value from the same
/// config.
///
/// ```
/// use host_etcd::{allocator::default_chunk_bits, RangeSet};
/// let k = |cidr: &str| default_chunk_bits(&[RangeSet::from_cidr(cidr).unwrap()]);
/// assert_eq!(k("10.0.0.0/12"), 8);
/// assert_eq!(k("10.0.0.0/15"), 7);
/// assert_eq!(k("10.0.0.0/16"), 6);
/// assert_eq!(k("10.0.0.0/20"), 6);
/// assert_eq!(k("10.0.0.0/24"), 8);
/// assert_eq!(k("fd00::/64"), 8);
/// ```
pub fn default_chunk_bits(sets: &[RangeSet]) -> u8 {
    let mut k = DEFAULT_CHUNK_BITS;
    for set in sets.iter().filter(|s| {
        s.family() == crate::range::Family::V4
            && geometry::normal_candidates(s, DEFAULT_CHUNK_BITS).count() >= SMALL_SET_CHUNKS
    }) {
        while k > MIN_DEFAULT_CHUNK_BITS
            && geometry::normal_candidates(set, k).count() < MIN_DEFAULT_CHUNKS
        {
            k -= 1;
        }
    }
    k
}

/// Supported chunk size exponents.
pub const CHUNK_BITS_RANGE: std::ops::RangeInclusive<u8> = 6..=20;

/// Requests committed per transaction by [`Allocator::allocate_batch`]
/// (etcd refuses transactions with more than 128 operations by default).
pub const MAX_BATCH: usize = 50;

/// Most compares, and most operations, one transaction of the allocator
/// carries: etcd's default limit (`--max-txn-ops`). The batch release
/// ([`Allocator::release_each`]) splits its owners to stay within it.
pub const MAX_TXN_OPS: usize = 128;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/host-etcd";

/// What the allocator manages: one named network's range sets.
///
/// Build it with [`Network::new`] (and [`Network::with_prefix`],
/// [`Network::with_chunk_bits`]), which check what [`Allocator::new`]
/// relies on; the fields are public for reading, and [`Allocator::new`]
/// checks them again. `#[non_exhaustive]`: a new setting is a new `with_*`
/// method, not a breaking change.
///
/// `chunk_bits` is what a *new* network is created with: the network's
/// meta record pins k at its first allocation, and an allocator whose
/// [`Options::adopt_stored_chunk_bits`] is on (the default) works with the
/// stored k when it differs ([`Allocator::chunk_bits`]).
///
/// ```
/// use host_etcd::{Network, RangeSet};
/// let net = Network::new("pods", vec![
///     RangeSet::from_cidr("10.22.0.0/16")?,
///     RangeSet::from_cidr("fd00:22::/64")?,
/// ])?;
/// assert_eq!(net.prefix, host_etcd::allocator::DEFAULT_PREFIX);
/// // A /16 is cut into 1,024 chunks of 64 addresses (k = 6) by default.
/// assert_eq!(net.chunk_bits, host_etcd::allocator::default_chunk_bits(&net.sets));
/// assert_eq!(net.chunk_bits, 6);
///
/// // Range sets of one network never overlap: one address would be handed
/// // out twice.
/// let err = Network::new("pods", vec![
///     RangeSet::from_cidr("10.22.0.0/16")?,
///     RangeSet::from_cidr("10.22.9.0/24")?,
/// ]).unwrap_err();
/// assert!(err.to_string().contains("10.22.9.0/24"), "{err}");
/// // And there is at least one.
/// assert!(Network::new("pods", vec![]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
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

impl Network {
    /// A network named `name` handing out one address per range set, with
    /// the default key prefix and the default chunk size of its range sets
    /// ([`default_chunk_bits`]). Checks the name (a key part:
    /// no `/`, not empty), that there is at least one set, and that no range
    /// of one set overlaps a range of another (each [`RangeSet`] is already
    /// one family with disjoint ranges).
    pub fn new(name: impl Into<String>, sets: Vec<RangeSet>) -> Result<Network, AllocError> {
        let network = Network {
            name: name.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            chunk_bits: default_chunk_bits(&sets),
            sets,
        };
        if network.sets.is_empty() {
            return Err(crate::range::RangeError::NoSets.into());
        }
        network.validate()?;
        Ok(network)
    }

    /// The same network under another key prefix (checked).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Network, AllocError> {
        self.prefix = prefix.into();
        self.validate()?;
        Ok(self)
    }

    /// The same network with chunks of 2^`chunk_bits` addresses (checked:
    /// [`CHUNK_BITS_RANGE`]).
    pub fn with_chunk_bits(mut self, chunk_bits: u8) -> Result<Network, AllocError> {
        self.chunk_bits = chunk_bits;
        self.validate()?;
        Ok(self)
    }

    /// What [`Allocator::new`] checks: chunk size, name and prefix, and
    /// range sets pairwise disjoint. No range set at all is allowed here (an
    /// operator tool may open a network only to list its owner records);
    /// [`Network::new`] requires one.
    fn validate(&self) -> Result<Keyspace, AllocError> {
        if !CHUNK_BITS_RANGE.contains(&self.chunk_bits) {
            return Err(AllocError::BadChunkBits(self.chunk_bits));
        }
        let keyspace = Keyspace::new(&self.prefix, &self.name)?;
        if !self.sets.is_empty() {
            crate::range::check_sets(&self.sets)?;
        }
        Ok(keyspace)
    }
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
    /// Host name of the node that allocated ([`Options::node_name`]), when
    /// known. Records written before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A released pod's addresses, kept for its next container
/// (`{p}/{net}/sticky/{namespace}/{name}/{ifname}`, JSON). Written by the
/// DEL (release) of an owner record that names its pod, in the transaction
/// that frees the addresses, when [`Options::sticky_ttl`] is set; consumed
/// (deleted) by the next ADD of that pod and interface. Only a preference:
/// the addresses are free in their chunks meanwhile, and the ADD takes one
/// only if its bit is still clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// K8S_POD_NAMESPACE.
    pub namespace: String,
    /// K8S_POD_NAME.
    pub name: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// The released addresses, one per range set (in set order then).
    pub ips: Vec<IpAddr>,
    /// Seconds since the Unix epoch at the DEL.
    pub released_at: u64,
    /// The binding is ignored from this time on (seconds since the epoch).
    pub expires_at: u64,
    /// The container that held the addresses.
    pub container_id: String,
}

impl Binding {
    /// Whether the binding has expired at `now` (seconds since the epoch).
    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }
}

/// Where the allocator takes the time from (seconds since the Unix epoch):
/// the system clock, or a value the caller sets (tests, simulations). Used
/// for owner records' `created` and for binding expiry.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock standing at `secs` until [`set`](Self::set) or
    /// [`advance`](Self::advance) moves it (clones share the time).
    pub fn manual(secs: u64) -> Self {
        Clock(Some(Arc::new(AtomicU64::new(secs))))
    }

    /// The current time.
    pub fn now(&self) -> u64 {
        match &self.0 {
            Some(t) => t.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, secs: u64) {
        if let Some(t) = &self.0 {
            t.store(secs, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, secs: u64) {
        if let Some(t) = &self.0 {
            t.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

/// One allocation request: [`AllocRequest::new`] and the `with_*` methods
/// (`#[non_exhaustive]`: a new field is a new method, not a breaking
/// change).
///
/// ```
/// use host_etcd::{AllocRequest, OwnerId};
/// let owner = OwnerId { container_id: "c1".into(), ifname: "eth0".into() };
/// let req = AllocRequest::new(owner)
///     .with_pod("default", "web-0")
///     .with_requested(vec!["10.22.0.9".parse()?]);
/// assert_eq!(req.pod_name.as_deref(), Some("web-0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocRequest {
    /// Who asks.
    pub owner: OwnerId,
    /// Deploy stage (`sandbox`, `smallflow`, ...), already parsed by the caller.
    pub stage: Option<String>,
    /// Exact addresses asked for (at most one per set).
    pub requested: Vec<IpAddr>,
    /// K8S_POD_NAMESPACE, recorded in the owner record.
    pub pod_namespace: Option<String>,
    /// K8S_POD_NAME, recorded in the owner record (with the namespace, the
    /// key of [sticky addresses](Options::sticky_ttl)).
    pub pod_name: Option<String>,
}

impl AllocRequest {
    /// A dynamic request of `owner`: no stage, no requested address, no
    /// pod name.
    pub fn new(owner: OwnerId) -> Self {
        AllocRequest {
            owner,
            ..AllocRequest::default()
        }
    }

    /// The deploy stage ([`AllocRequest::stage`]).
    pub fn with_stage(mut self, stage: impl Into<String>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    /// The exact addresses asked for ([`AllocRequest::requested`]).
    pub fn with_requested(mut self, requested: Vec<IpAddr>) -> Self {
        self.requested = requested;
        self
    }

    /// The pod's namespace and name, recorded in the owner record
    /// ([`AllocRequest::pod_namespace`], [`AllocRequest::pod_name`]).
    pub fn with_pod(mut self, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        self.pod_namespace = Some(namespace.into());
        self.pod_name = Some(name.into());
        self
    }
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

/// Tunables of the protocol: [`Options::default`] and the `with_*` methods
/// (`#[non_exhaustive]`: a new setting is a new method, not a breaking
/// change). The fields are public for reading.
///
/// ```
/// use std::time::Duration;
/// use host_etcd::Options;
/// let options = Options::default()
///     .with_budget(Duration::from_secs(5))
///     .with_node("node-a")
///     .with_sticky_ttl(Some(Duration::from_secs(300)));
/// assert_eq!(options.node_name, "node-a");
/// assert_eq!(options.node_seed, host_etcd::allocator::node_seed_from("node-a"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Maximum CAS attempts per operation.
    pub max_attempts: u32,
    /// Overall time budget per operation.
    pub budget: Duration,
    /// Stable per-node value spreading nodes over chunks (hostname hash).
    pub node_seed: u64,
    /// This node's name, recorded in new owner records (default: the host
    /// name; empty: none recorded).
    pub node_name: String,
    /// Present chunks fetched per range read while searching.
    pub read_limit: usize,
    /// Start operations from the [`NodeCache`] (what this allocator last
    /// saw) instead of a read: a warm ADD or DEL is one transaction.
    pub node_cache: bool,
    /// A node's first ADD (node cache on, nothing remembered, no search
    /// position) sends its transaction without a read, guessing what a
    /// fresh start chunk looks like: the network's meta record exists with
    /// this k, the owner and the start chunks do not. Right, the ADD is one
    /// round trip; wrong, the conflict answer brings the real values, as a
    /// read would have (the network's very first ADD always is: its meta
    /// record does not exist yet). Default on; the CNI layer turns it off
    /// for the embedded store, where a read is a local file read and no
    /// other node races (ARCHITECTURE.md, "Decisions changed by
    /// measurement").
    pub guess_first_add: bool,
    /// Sticky addresses: how long a DEL keeps a pod's addresses bound to
    /// its namespace and name (a [`Binding`]) for the pod's next container
    /// (whole seconds, at least 1). `None` (the default): off, no binding
    /// is read or written.
    pub sticky_ttl: Option<Duration>,
    /// The time source (default: the system clock).
    pub clock: Clock,
    /// When the network's meta record holds another chunk size than
    /// [`Network::chunk_bits`], work with the stored one (on by default:
    /// `chunk_bits` is then only what a new network is created with). Off,
    /// such a network is refused ([`AllocError::MetaMismatch`]); the CNI
    /// layer turns it off when the config sets `chunkBits`.
    pub adopt_stored_chunk_bits: bool,
}

/// This host's name (Linux), or an empty string. Read from the kernel
/// once per process; later calls return the same name.
pub fn local_hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

impl Default for Options {
    /// The defaults, for this host: [`Options::node_name`] is the host name
    /// ([`local_hostname`]) and [`Options::node_seed`] its hash.
    fn default() -> Self {
        let host = local_hostname();
        Options {
            max_attempts: 64,
            budget: Duration::from_secs(10),
            node_seed: geometry::node_seed_from(&host),
            node_name: host,
            read_limit: 8,
            node_cache: true,
            guess_first_add: true,
            sticky_ttl: None,
            clock: Clock::system(),
            adopt_stored_chunk_bits: true,
        }
    }
}

impl Options {
    /// Maximum CAS attempts per operation ([`Options::max_attempts`]).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Overall time budget per operation ([`Options::budget`]).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The per-node spreading value ([`Options::node_seed`]).
    pub fn with_node_seed(mut self, node_seed: u64) -> Self {
        self.node_seed = node_seed;
        self
    }

    /// The node name recorded in new owner records
    /// ([`Options::node_name`]); the seed is left as it is.
    pub fn with_node_name(mut self, node_name: impl Into<String>) -> Self {
        self.node_name = node_name.into();
        self
    }

    /// Both node settings from one name: [`Options::node_name`] and the
    /// seed [`node_seed_from`] derives from it (what
    /// [`Options::default`] does with the host name).
    pub fn with_node(self, name: impl Into<String>) -> Self {
        let name = name.into();
        let seed = geometry::node_seed_from(&name);
        self.with_node_name(name).with_node_seed(seed)
    }

    /// Present chunks fetched per range read ([`Options::read_limit`]).
    pub fn with_read_limit(mut self, read_limit: usize) -> Self {
        self.read_limit = read_limit;
        self
    }

    /// Whether operations start from the node cache
    /// ([`Options::node_cache`]).
    pub fn with_node_cache(mut self, node_cache: bool) -> Self {
        self.node_cache = node_cache;
        self
    }

    /// Whether a node's first ADD guesses a fresh start chunk
    /// ([`Options::guess_first_add`]).
    pub fn with_guess_first_add(mut self, guess_first_add: bool) -> Self {
        self.guess_first_add = guess_first_add;
        self
    }

    /// Sticky addresses on (`Some`) or off ([`Options::sticky_ttl`]).
    pub fn with_sticky_ttl(mut self, sticky_ttl: Option<Duration>) -> Self {
        self.sticky_ttl = sticky_ttl;
        self
    }

    /// The time source ([`Options::clock`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Follow the chunk size the network was created with
    /// ([`Options::adopt_stored_chunk_bits`]).
    pub fn with_adopt_stored_chunk_bits(mut self, adopt: bool) -> Self {
        self.adopt_stored_chunk_bits = adopt;
        self
    }
}

/// The allocation protocol bound to a store and a network: the type an
/// embedder uses. Methods are in `engine` (allocation, release, GC) and
/// `check` (consistency, usage). Share one allocator per network (e.g. in
/// an `Arc`): its [`NodeCache`] makes a warm ADD or DEL one transaction.
///
/// ```
/// use host_etcd::{AllocRequest, Allocator, MemoryStore, Network, Options, OwnerId, RangeSet};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let network = Network::new("pods", vec![RangeSet::from_cidr("10.22.0.0/24")?])?;
/// let alloc = Allocator::new(MemoryStore::new(), network, Options::default())?;
///
/// let owner = OwnerId { container_id: "c1".into(), ifname: "eth0".into() };
/// let req = AllocRequest::new(owner.clone());
/// let first = alloc.allocate(&req).await?;
/// assert_eq!(first.assigned[0].ip.to_string(), "10.22.0.2");
///
/// // ADD is idempotent per owner: the same request gets the same address.
/// let again = alloc.allocate(&req).await?;
/// assert!(again.existing);
/// assert_eq!(again.assigned, first.assigned);
///
/// // DEL frees it; a second DEL finds nothing and is not an error.
/// let released = alloc.release(&owner).await?.expect("held");
/// assert_eq!(released.ips, vec![first.assigned[0].ip]);
/// assert!(alloc.release(&owner).await?.is_none());
/// # Ok(())
/// # }
/// ```
pub struct Allocator<S> {
    store: S,
    network: Network,
    keyspace: Keyspace,
    options: Options,
    /// The chunk size in use: the network's, or the stored one adopted.
    chunk_bits: std::sync::atomic::AtomicU8,
    cache: std::sync::Mutex<NodeCache>,
    progress: std::sync::Mutex<Option<ScanProgress>>,
}

impl<S: Store> Allocator<S> {
    /// Binds a store and a network; checks the network name and prefix,
    /// the chunk size, and that the range sets do not overlap.
    pub fn new(store: S, network: Network, options: Options) -> Result<Self, AllocError> {
        let keyspace = network.validate()?;
        Ok(Allocator {
            store,
            chunk_bits: std::sync::atomic::AtomicU8::new(network.chunk_bits),
            network,
            keyspace,
            options,
            cache: Default::default(),
            progress: Default::default(),
        })
    }

    /// The network as configured (its `chunk_bits` is what a new network
    /// is created with; [`chunk_bits`](Self::chunk_bits) is the one in use).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The chunk size exponent in use: the network's, or, with
    /// [`Options::adopt_stored_chunk_bits`], the one the network's meta
    /// record holds once an operation has met it.
    pub fn chunk_bits(&self) -> u8 {
        self.chunk_bits.load(Ordering::Relaxed)
    }

    /// Works with chunk size `k` from now on, when
    /// [`Options::adopt_stored_chunk_bits`] allows it and `k` is supported;
    /// returns whether `k` is now in use. Safe with any `k` (e.g. a hint
    /// from a node-local file): every transaction compares the meta record,
    /// which names the network's k, so a wrong one costs a retry, never an
    /// address.
    pub fn adopt_chunk_bits(&self, k: u8) -> bool {
        if k == self.chunk_bits() {
            return true;
        }
        if !self.options.adopt_stored_chunk_bits || !CHUNK_BITS_RANGE.contains(&k) {
            return false;
        }
        self.chunk_bits.store(k, Ordering::Relaxed);
        true
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The keyspace.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }
}

#[cfg(test)]
mod tests;
