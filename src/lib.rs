//! # host-etcd
//!
//! A CNI IPAM plugin and allocator library that hands out container IPv4/IPv6
//! addresses for large clusters. Allocation state lives in a [`store::Store`]
//! (etcd in production, an embedded database on a single host, memory in
//! tests) as compressed bitmap *chunks* updated with compare-and-swap, so
//! allocating inside a huge range costs O(chunk), never O(range) and never
//! O(allocations).
//!
//! ## Layout (data flows top to bottom, one way)
//!
//! | layer | module | I/O? |
//! |---|---|---|
//! | Operator CLI and benchmark (`ipamctl`), on the library API | [`admin`] | through the allocator and stores |
//! | Node agent (`host-etcd agent`): the CNI commands on warm shared allocators, over a unix socket | [`agent`] | socket; through [`cni`] and the allocator |
//! | CNI protocol: commands, config, args, results, error codes | [`cni`] | env/stdin only |
//! | Allocation protocol over a store: read, pick, CAS, retry | [`allocator`] | through [`store::Store`] |
//! | Range math (subnet / rangeStart / rangeEnd / gateway) | [`range`] | none |
//! | One chunk of 2^k addresses as bits | [`bitmap`] | none |
//! | Chunk bytes <-> chunk (versioned, checksummed) | [`codec`] | none |
//! | Persistence: the `Store` trait and its backends | [`store`] | yes |
//!
//! The binaries in `src/bin/` are thin: they parse their inputs and call into
//! this library. `fuzzing` (hidden) holds the fuzz target bodies shared by
//! `fuzz/` and `tests/fuzz_corpora.rs`.

pub mod admin;
pub mod agent;
pub mod allocator;
pub mod bitmap;
pub mod cni;
pub mod codec;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzzing;
pub mod range;
pub mod store;
