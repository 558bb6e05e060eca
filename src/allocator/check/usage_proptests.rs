//! Property test of the usage copy (`usage.rs`): whatever chunks are
//! written, rewritten and deleted between refreshes and between the pages
//! of one refresh, at any page size, a refresh during which nothing was
//! written gives the figures of a fresh read. (A refresh that writes
//! overtook may lag; it must never lose a change for good.)

use std::collections::VecDeque;
use std::sync::Mutex;

use proptest::prelude::*;

use super::usage::UsageMirror;
use crate::allocator::keys::Keyspace;
use crate::allocator::{Allocator, Network, Options, DEFAULT_PREFIX};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::{Family, RangeSet};
use crate::store::memory::MemoryStore;
use crate::store::{Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome};

/// Chunks of 64 addresses (the smallest k): a /22 is 16 chunks, enough
/// for many pages.
const K: u8 = 6;

/// A write to chunk `index` of 10.0.0.0/22: its bits (`None`: deleted).
#[derive(Clone, Debug)]
struct Write {
    index: u128,
    bits: Option<u64>,
}

/// The memory store, with writes applied just before read calls.
struct Meddling {
    inner: MemoryStore,
    before_reads: Mutex<VecDeque<Write>>,
}

impl Meddling {
    fn apply(&self, w: &Write) {
        let key = Keyspace::new(DEFAULT_PREFIX, "usage")
            .expect("keyspace")
            .chunk(Family::V4, K, (0x0a00_0000 >> K) + w.index);
        match w.bits {
            Some(bits) => {
                let mut c = Chunk {
                    bits: Bitmap::new(1 << K),
                    cursor: 0,
                };
                for b in (0..64).filter(|b| bits & (1u64 << b) != 0) {
                    c.bits.set(b);
                }
                self.inner.put_raw(&key, codec::encode(&c));
            }
            None => {
                let _ = self.inner.txn_sync(Txn {
                    ops: vec![Op::Delete(key)],
                    ..Txn::default()
                });
            }
        }
    }
}

impl Store for Meddling {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let next = self.before_reads.lock().expect("lock").pop_front();
        if let Some(w) = next {
            self.apply(&w);
        }
        self.inner.read(reads).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.inner.txn(txn).await
    }
}

fn write() -> impl Strategy<Value = Write> {
    (0u128..16, prop::option::weighted(0.8, any::<u64>()))
        .prop_map(|(index, bits)| Write { index, bits })
}

/// A refresh at page size `page`, with `during` applied one before each of
/// its read calls, after `before` was applied.
#[derive(Clone, Debug)]
struct Step {
    before: Vec<Write>,
    page: usize,
    during: Vec<Write>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(write(), 0..6),
        1usize..6,
        prop::collection::vec(write(), 0..4),
    )
        .prop_map(|(before, page, during)| Step {
            before,
            page,
            during,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_quiet_refresh_always_gives_a_fresh_reads_figures(steps in prop::collection::vec(step(), 1..12)) {
        let store = Meddling { inner: MemoryStore::new(), before_reads: Mutex::new(VecDeque::new()) };
        let net = Network::new("usage", vec![RangeSet::from_cidr("10.0.0.0/22").expect("set")])
            .and_then(|n| n.with_chunk_bits(K))
            .expect("network");
        let a = Allocator::new(&store, net, Options::default()).expect("allocator");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let mut mirror = UsageMirror::default();
        for s in &steps {
            for w in &s.before {
                store.apply(w);
            }
            *store.before_reads.lock().expect("lock") = s.during.iter().cloned().collect();
            let got = rt.block_on(a.usage_paged(&mut mirror, s.page)).expect("refresh");
            if s.during.is_empty() {
                let fresh = rt.block_on(a.usage()).expect("fresh read");
                prop_assert_eq!(got, fresh);
            }
            // Writes the refresh did not reach happen after it.
            let left: Vec<Write> = store.before_reads.lock().expect("lock").drain(..).collect();
            for w in &left {
                store.apply(w);
            }
        }
        // Whatever happened before, one refresh with nothing written during
        // it catches up.
        let got = rt.block_on(a.usage_paged(&mut mirror, 3)).expect("last refresh");
        let fresh = rt.block_on(a.usage()).expect("fresh read");
        prop_assert_eq!(got, fresh);
    }
}
