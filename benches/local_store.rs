//! One plugin-style ADD on the embedded store (`dataDir`): open the store
//! (directory lock, redb open, marker check), allocate one address, close —
//! what one `host-etcd ADD` process does — on an empty store and on one
//! holding 50,000 owners. The open must not read the whole file, so the two
//! must cost about the same: see BENCHMARKS.md ("Embedded store size").
//!
//! Each iteration's owner is released afterwards, outside the timed part,
//! so the state is the same before every iteration.
//!
//! Run: `cargo bench --bench local_store`

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use host_etcd::allocator::{AllocRequest, Allocator, Network, Options, OwnerId};
use host_etcd::range::RangeSet;
use host_etcd::store::local::LocalStore;

/// Owners in the full store.
const OWNERS: usize = 50_000;
/// Owners per prefill transaction.
const BATCH: usize = 50;
const WAIT: Duration = Duration::from_secs(10);

fn network() -> Network {
    Network::new(
        "bench-embedded",
        vec![RangeSet::from_cidr("10.64.0.0/15").unwrap()],
    )
    .unwrap()
}

fn owner(name: String) -> OwnerId {
    OwnerId {
        container_id: name,
        ifname: "eth0".into(),
    }
}

/// Creates the store in `dir` with `owners` allocated owners.
fn prefill(rt: &tokio::runtime::Runtime, dir: &Path, owners: usize) {
    let store = LocalStore::open(dir, WAIT).unwrap();
    let alloc = Allocator::new(store, network(), Options::default()).unwrap();
    rt.block_on(async {
        let mut done = 0;
        while done < owners {
            let n = BATCH.min(owners - done);
            let reqs: Vec<AllocRequest> = (done..done + n)
                .map(|i| AllocRequest::new(owner(format!("prefill-{i}"))))
                .collect();
            alloc.allocate_batch(&reqs).await.unwrap();
            done += n;
        }
    });
}

/// One ADD as a plugin process makes it: open, allocate, close.
fn add(rt: &tokio::runtime::Runtime, dir: &Path, who: &OwnerId) {
    let store = LocalStore::open(dir, WAIT).unwrap();
    let alloc = Allocator::new(store, network(), Options::default()).unwrap();
    let req = AllocRequest::new(who.clone());
    rt.block_on(alloc.allocate(&req)).unwrap();
}

fn release(rt: &tokio::runtime::Runtime, dir: &Path, who: &OwnerId) {
    let store = LocalStore::open(dir, WAIT).unwrap();
    let alloc = Allocator::new(store, network(), Options::default()).unwrap();
    rt.block_on(alloc.release(who)).unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("embedded_add");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    for (label, owners) in [("empty", 0), ("50k_owners", OWNERS)] {
        let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
        let dir = tmp.path().join("data");
        prefill(&rt, &dir, owners);
        let size = std::fs::metadata(dir.join("store.redb")).unwrap().len();
        eprintln!("{label}: {owners} owners, store.redb {} KiB", size / 1024);
        let who = owner("bench-add".into());
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    add(&rt, &dir, &who);
                    spent += t.elapsed();
                    release(&rt, &dir, &who);
                }
                spent
            })
        });
    }
    group.finish();
}

/// Where the stores live: `LOCAL_BENCH_DIR`, else the system temp dir.
fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("LOCAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

criterion_group!(benches, bench);
criterion_main!(benches);
