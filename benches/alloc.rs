//! Allocation cost on the memory store across range sizes: a /24, a half
//! full /16, an IPv4 /8 and an IPv6 /64 each holding 1M taken addresses
//! (planted as full chunks right at this node's starting chunk, so every
//! allocation has to skip all of them through the full-set).
//!
//! Each iteration is one ADD and one DEL of the same owner, so the state is
//! the same before every iteration. The per-allocation time must be flat
//! across range sizes: see BENCHMARKS.md for the recorded ratio.
//!
//! Run: `cargo bench --bench alloc`

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use host_etcd::allocator::internals::{encode_full_set, normal_candidates, spread, START_WINDOW};
use host_etcd::allocator::{AllocRequest, Allocator, Keyspace, Network, Options, OwnerId};
use host_etcd::bitmap::Bitmap;
use host_etcd::codec::{self, Chunk};
use host_etcd::range::RangeSet;
use host_etcd::store::memory::MemoryStore;
use roaring::RoaringTreemap;

const K: u8 = host_etcd::allocator::DEFAULT_CHUNK_BITS;
const SEED: u64 = 42;

fn network(subnet: &str) -> Network {
    Network::new("bench", vec![RangeSet::from_cidr(subnet).unwrap()])
        .and_then(|n| n.with_chunk_bits(K))
        .unwrap()
}

/// Plants `taken` addresses as full chunks from the node's starting chunk on.
fn plant(store: &MemoryStore, net: &Network, taken: u64) {
    let set = &net.sets[0];
    let family = set.family();
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let cands = normal_candidates(set, K);
    let n = cands.count();
    // Where this node starts: anywhere in IPv4, the start window in IPv6.
    let window = match family {
        host_etcd::range::Family::V4 => n,
        host_etcd::range::Family::V6 => n.min(START_WINDOW),
    };
    let start = spread(SEED, window);
    let chunks = taken.div_ceil(1 << K) as u128;
    let full = codec::encode(&Chunk {
        bits: Bitmap::full(1 << K),
        cursor: 0,
    });
    let mut sets: std::collections::BTreeMap<String, RoaringTreemap> = Default::default();
    for i in 0..chunks.min(n.saturating_sub(1)) {
        let idx = cands.nth((start + i) % n).unwrap();
        store.put_raw(&ks.chunk(family, K, idx), full.clone());
        sets.entry(ks.full(family, idx))
            .or_default()
            .insert(idx as u64);
    }
    for (key, set) in sets {
        store.put_raw(&key, encode_full_set(&set));
    }
}

fn bench_alloc(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("alloc_release_memory_store");
    for (name, subnet, taken) in [
        ("v4_slash24_empty", "10.0.0.0/24", 0u64),
        ("v4_slash16_half", "10.0.0.0/16", 32 * 1024),
        ("v4_slash8_1M_taken", "10.0.0.0/8", 1 << 20),
        ("v6_slash64_1M_taken", "2001:db8::/64", 1 << 20),
    ] {
        let store = MemoryStore::new();
        let net = network(subnet);
        plant(&store, &net, taken);
        let a = Allocator::new(&store, net, Options::default().with_node_seed(SEED)).unwrap();
        let req = AllocRequest::new(OwnerId {
            container_id: "bench".into(),
            ifname: "eth0".into(),
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let got = a.allocate(&req).await.unwrap();
                    black_box(got);
                    a.release(&req.owner).await.unwrap();
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_alloc);
criterion_main!(benches);
