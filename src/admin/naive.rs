//! The naive baseline the benchmark compares against: the layout many
//! etcd-backed IPAM plugins use, one key per address under a prefix (what
//! the chunked layout replaces; see ARCHITECTURE.md). An allocation
//! probes addresses from the start of the range with create-if-absent
//! transactions (compare: absent, then put) until one commits, so its cost
//! grows with the number of addresses already taken below the first free
//! one. Used only by `ipamctl bench`.

use std::net::IpAddr;

use crate::range::{from_u128, Range};
use crate::store::{Compare, Expect, Op, Store, StoreError, Txn, TxnOutcome};

/// Puts per prefill transaction (below etcd's 128 operations).
const PREFILL_BATCH: usize = 100;

/// One-key-per-address allocation over a [`Store`].
pub struct NaiveAllocator<S> {
    store: S,
    prefix: String,
    range: Range,
}

/// The result of one naive allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaiveAllocation {
    /// The address taken.
    pub ip: IpAddr,
    /// Transactions sent (failed probes + the one that committed).
    pub probes: u64,
}

impl<S: Store> NaiveAllocator<S> {
    /// Allocates in `range`, keys `{prefix}/{address as hex}`.
    pub fn new(store: S, prefix: &str, range: Range) -> Self {
        NaiveAllocator {
            store,
            prefix: prefix.trim_end_matches('/').to_string(),
            range,
        }
    }

    fn key(&self, offset: u128) -> String {
        format!("{}/{offset:032x}", self.prefix)
    }

    /// The allocatable offsets of the range, in order.
    fn offsets(&self) -> impl Iterator<Item = u128> + '_ {
        (self.range.first()..=self.range.last()).filter(|o| self.range.is_allocatable_u128(*o))
    }

    /// Marks the first `count` allocatable addresses taken with blind puts
    /// (setup only), `PREFILL_BATCH` per transaction.
    pub async fn prefill(&self, count: usize) -> Result<(), StoreError> {
        let offsets: Vec<u128> = self.offsets().take(count).collect();
        for batch in offsets.chunks(PREFILL_BATCH) {
            let txn = Txn {
                ops: batch
                    .iter()
                    .map(|o| Op::Put(self.key(*o), b"prefill".to_vec()))
                    .collect(),
                ..Txn::default()
            };
            self.store.txn(txn).await?;
        }
        Ok(())
    }

    /// Releases an address (deletes its key).
    pub async fn release(&self, ip: IpAddr) -> Result<(), StoreError> {
        let txn = Txn {
            ops: vec![Op::Delete(self.key(crate::range::to_u128(ip)))],
            ..Txn::default()
        };
        self.store.txn(txn).await.map(|_| ())
    }

    /// Probes from the start of the range until a create-if-absent
    /// transaction commits; `Ok(None)` when the range is full or
    /// `keep_going` turned false between probes (probes so far are added to
    /// `probes`).
    pub async fn allocate(
        &self,
        owner: &str,
        probes: &std::sync::atomic::AtomicU64,
        keep_going: impl Fn() -> bool,
    ) -> Result<Option<NaiveAllocation>, StoreError> {
        for (done, offset) in self.offsets().enumerate() {
            if !keep_going() {
                return Ok(None);
            }
            let key = self.key(offset);
            let txn = Txn {
                compares: vec![Compare {
                    key: key.clone(),
                    expect: Expect::Absent,
                }],
                ops: vec![Op::Put(key, owner.as_bytes().to_vec())],
                read_on_conflict: vec![],
            };
            probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let TxnOutcome::Committed { .. } = self.store.txn(txn).await? {
                return Ok(
                    from_u128(self.range.family(), offset).map(|ip| NaiveAllocation {
                        ip,
                        probes: done as u64 + 1,
                    }),
                );
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RangeSpec;
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::AtomicU64;

    #[tokio::test]
    async fn probes_from_the_start_past_taken_addresses() {
        let range = Range::parse(&RangeSpec {
            subnet: "10.0.0.0/28".into(),
            ..RangeSpec::default()
        })
        .unwrap();
        let naive = NaiveAllocator::new(MemoryStore::new(), "/naive/", range);
        naive.prefill(3).await.unwrap();
        let probes = AtomicU64::new(0);
        let a = naive
            .allocate("a", &probes, || true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.ip.to_string(), "10.0.0.5");
        assert_eq!(a.probes, 4);
        let b = naive
            .allocate("b", &probes, || true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.ip.to_string(), "10.0.0.6");
        assert_eq!(probes.load(std::sync::atomic::Ordering::Relaxed), 9);
        // 10.0.0.2..=10.0.0.14: 13 addresses, 5 taken.
        for i in 0..8 {
            assert!(naive
                .allocate(&i.to_string(), &probes, || true)
                .await
                .unwrap()
                .is_some());
        }
        assert_eq!(naive.allocate("z", &probes, || true).await.unwrap(), None);
        assert_eq!(naive.allocate("z", &probes, || false).await.unwrap(), None);
        naive.release(a.ip).await.unwrap();
        let again = naive
            .allocate("y", &probes, || true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.ip, a.ip);
    }
}
