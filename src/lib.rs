//! # host-etcd
//!
//! A CNI IPAM plugin and allocator library that hands out container IPv4/IPv6
//! addresses for large clusters. Allocation state lives in a [`Store`] (etcd
//! in production, an embedded database on a single host, memory in tests) as
//! compressed bitmap *chunks* updated with compare-and-swap, so allocating
//! inside a huge range costs O(chunk), never O(range) and never
//! O(allocations).
//!
//! ## Embedding the allocator
//!
//! Describe the network ([`Network::new`] from [`RangeSet`]s, e.g.
//! [`RangeSet::from_cidr`]), open a store ([`MemoryStore`], [`LocalStore`]
//! for one host, [`EtcdStore`] for a cluster), bind them in an
//! [`Allocator`], then [`allocate`](Allocator::allocate) and
//! [`release`](Allocator::release) per owner (a container's interface):
//!
//! ```
//! use host_etcd::{AllocRequest, Allocator, MemoryStore, Network, Options, OwnerId, RangeSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = Network::new("pods", vec![
//!     RangeSet::from_cidr("10.22.0.0/16")?,  // one IPv4 address per owner
//!     RangeSet::from_cidr("fd00:22::/64")?,  // and one IPv6 address
//! ])?;
//! let alloc = Allocator::new(MemoryStore::new(), network, Options::default())?;
//!
//! let owner = OwnerId { container_id: "c1".into(), ifname: "eth0".into() };
//! let got = alloc.allocate(&AllocRequest::new(owner.clone())).await?;
//! assert_eq!(got.assigned.len(), 2);
//! assert!(alloc.release(&owner).await?.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! Option structs ([`Options`], [`AllocRequest`], [`Network`],
//! [`EtcdConfig`]) are built with `new`/`default` and `with_*` methods; an
//! embedder with its own etcd client wraps it with
//! [`EtcdStore::from_client`]. No store blocks the executor: [`LocalStore`]
//! runs redb (and its fsync) on tokio's blocking pool.
//!
//! Every write is a compare-and-swap, so any number of allocators on any
//! number of hosts may share one etcd. The runnable programs in `examples/`
//! do the same on each store (`memory`, `embedded`, `etcd_tls`); the
//! repository's `ARCHITECTURE.md` follows one ADD through every layer.
//!
//! ## Layout
//!
//! Each layer calls only the layers below it: the agent speaks the frame
//! format of the plugin's agent client (`cni::agent_client::protocol`),
//! which needs nothing above it. What each layer
//! does, the keyspace, and one ADD followed through all of them: the
//! repository's `ARCHITECTURE.md`.
//!
//! | layer | module | I/O |
//! |---|---|---|
//! | Node agent (`host-etcd agent`, feature `cli`): the CNI commands on warm shared allocators over a unix socket; optionally `ipamctl`'s reconcile pass and metrics | `agent` | socket; through [`cni`], `admin` and the allocator |
//! | Operator CLI and benchmark (`ipamctl`), on the library API (feature `cli`) | `admin` | through the allocator and stores; reads the plugin's config with [`cni::NetConf`] |
//! | CNI protocol: commands, config, args, results, error codes | [`cni`] | env, stdin, `resolv.conf`, the agent socket, node-local files (cache, lock, status streak, log) |
//! | Allocation protocol over a store: read, plan, CAS, retry | [`allocator`] | through [`Store`] |
//! | Range math (subnet / rangeStart / rangeEnd / gateway) | [`range`] | none |
//! | Chunk bytes <-> chunk (versioned, checksummed) | [`codec`] | none |
//! | One chunk of 2^k addresses as bits | [`bitmap`] | none |
//! | Persistence: the `Store` trait and its backends | [`store`] | yes |
//!
//! The binaries in `src/bin/` are thin: they parse their inputs and call into
//! this library. What an embedder uses is the crate root's re-exports and the
//! public modules; of the CNI layer only its entry point ([`cni::respond`])
//! and its config types are public, and `admin` and `agent` (feature `cli`)
//! are the two binaries' entry points (`admin::main`, `agent::main`), not an
//! API: their parts are private to the crate.
//!
//! ## Features
//!
//! * `cli` (default): what the two binaries need on top of the library —
//!   `admin` (ipamctl as a library), the agent's server and command line,
//!   and their dependencies (clap, indicatif). An embedder can build with
//!   `default-features = false`.
//! * `fuzz`: the fuzz target bodies (`fuzzing`, hidden), shared by `fuzz/`
//!   and `tests/fuzz_corpora.rs`; `fuzz-paused-time` runs them on tokio's
//!   paused clock.
//! * `testing`: helpers for this crate's own tests (`store::interleaved`,
//!   hidden); enabled for them through the self dev-dependency.

#[cfg(feature = "cli")]
pub mod admin;
#[cfg(feature = "cli")]
pub mod agent;
pub mod allocator;
pub mod bitmap;
pub mod cni;
pub mod codec;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "cli")]
pub(crate) mod liveness;
pub mod range;
pub mod store;

// Crate-internal helpers: node-local file I/O, and time stamps.
mod fsutil;
mod timefmt;

pub use allocator::{
    AllocError, AllocRequest, Allocation, Allocator, Assigned, BatchError, Network, NodeCache,
    Options, OwnerId, OwnerRecord,
};
pub use range::{Family, Range, RangeError, RangeSet, RangeSpec};
pub use store::etcd::{EtcdConfig, EtcdStore};
pub use store::local::LocalStore;
pub use store::memory::MemoryStore;
pub use store::{Store, StoreError};
