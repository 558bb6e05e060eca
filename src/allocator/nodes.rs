//! What one node's operations read: the per-node index.
//!
//! Every owner record that names its node (`node`, the allocating host) has
//! an index entry `{p}/{net}/nodes/{node}/{containerID}/{ifname}` holding
//! the same bytes, written in the ADD transaction that creates the record
//! (under the record's `Absent` compare) and deleted in the transaction
//! that releases it. So a node's records are one range read of its own
//! prefix, whatever the size of the cluster: the CNI `GC` verb
//! ([`Allocator::gc_node`]), `ipamctl reconcile`, `release --node` and
//! `list --node` cost O(that node's records); the agent's node figure
//! ([`Allocator::node_record_count`]) is a count of the same prefix, whose
//! answer is a few bytes whatever the node holds.
//!
//! The index is a copy, never the truth: a release is decided on the entry
//! but carried out on the owner record itself, compared unchanged
//! ([`Allocator::release_record`]). Records written before the index
//! existed have no entry until `ipamctl reindex` (or `check --repair`)
//! adds it; `check` reports entries and records that do not match.

use std::time::{Duration, Instant};

use super::keys::BadKeyPart;
use super::owners::{decode_owner, not_in};
use super::{AllocError, Allocator, OwnerId, OwnerRecord};
use crate::store::{prefix_end, Read, ReadResult, Store, StoreError};

/// Index entries read per range read.
const PAGE: usize = 1000;

/// One node's owner records as its index lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecords {
    /// The records whose entries decode, in key order.
    pub records: Vec<OwnerRecord>,
    /// Keys of entries that do not decode as an owner record (`check`
    /// reports their owners).
    pub corrupt: Vec<String>,
}

impl<S: Store> Allocator<S> {
    /// The owner records of `node`, read from its index entries alone: one
    /// range read per 1,000 records, never a scan of other nodes' keys.
    pub async fn node_records(&self, node: &str) -> Result<NodeRecords, AllocError> {
        let prefix = self.keyspace.node_prefix(node).ok_or_else(|| BadKeyPart {
            what: "node name",
            value: node.to_string(),
        })?;
        let mut out = NodeRecords::default();
        for (key, v) in self.scan(&prefix, PAGE).await? {
            match decode_owner(&key, &v) {
                Ok(rec) => out.records.push(rec),
                Err(_) => out.corrupt.push(key),
            }
        }
        Ok(out)
    }

    /// How many index entries `node` has (its owner records, a corrupt
    /// entry included): one read that sends the count and no entry, so
    /// what the agent exports per scrape costs the same bytes whatever the
    /// node holds.
    pub async fn node_record_count(&self, node: &str) -> Result<u64, AllocError> {
        let prefix = self.keyspace.node_prefix(node).ok_or_else(|| BadKeyPart {
            what: "node name",
            value: node.to_string(),
        })?;
        let deadline = Instant::now() + self.options.budget;
        let read = Read::count(prefix.clone(), prefix_end(&prefix));
        let answer = self
            .call(self.store.read(&[read]), deadline, "none")
            .await?;
        match answer.into_iter().next() {
            Some(ReadResult::Changed { total, .. }) => Ok(total),
            _ => Err(AllocError::Store(StoreError::Unavailable(format!(
                "the store answered the count of {prefix:?} with a result of the wrong shape"
            )))),
        }
    }

    /// The CNI `GC` verb, scoped to this node ([`Options::node_name`]):
    /// releases the owner records this node's index lists that are not in
    /// `valid` and were created at least `grace` ago (an ADD still in
    /// flight on this node is never collected), each only while its record
    /// is exactly the one listed. Records of other nodes and records that
    /// name no node are never touched; without a node name nothing is
    /// collected. Every candidate is tried; the first failure is returned
    /// after the others were released.
    ///
    /// [`Options::node_name`]: super::Options::node_name
    pub async fn gc_node(
        &self,
        valid: &[OwnerId],
        grace: Duration,
    ) -> Result<Vec<OwnerRecord>, AllocError> {
        let node = self.options.node_name.as_str();
        if self.keyspace.node_prefix(node).is_none() {
            return Ok(Vec::new());
        }
        let now = self.options.clock.now();
        let stale: Vec<OwnerRecord> = not_in(valid, self.node_records(node).await?.records)
            .filter(|rec| {
                rec.node.as_deref() == Some(node)
                    && rec.created.saturating_add(grace.as_secs()) <= now
            })
            .collect();
        self.release_listed(&stale, None).await
    }

    /// Releases each listed record, only while it is still exactly the one
    /// listed ([`release_record`](Self::release_record)); every record is
    /// tried, and the first failure (or `failed`, a failure met while
    /// listing) is returned after the others were released.
    pub(crate) async fn release_listed(
        &self,
        records: &[OwnerRecord],
        failed: Option<AllocError>,
    ) -> Result<Vec<OwnerRecord>, AllocError> {
        let done = self.release_records(records).await;
        match failed.or_else(|| done.failed.into_iter().next().map(|(_, e)| e)) {
            Some(e) => Err(e),
            None => Ok(done.released),
        }
    }

    /// Releases each listed record, only while it is still exactly the one
    /// listed; every record is tried. Says what was released and what
    /// failed, record by record (`ipamctl` prints both).
    pub(crate) async fn release_records(&self, records: &[OwnerRecord]) -> Released {
        let mut done = Released::default();
        for rec in records {
            match self.release_record(rec).await {
                Ok(Some(r)) => done.released.push(r),
                Ok(None) => {}
                Err(e) => done.failed.push((rec.clone(), e)),
            }
        }
        done
    }
}

/// What [`Allocator::release_records`] did.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// The records released (as they were stored).
    pub(crate) released: Vec<OwnerRecord>,
    /// The records that could not be released, with why.
    pub(crate) failed: Vec<(OwnerRecord, AllocError)>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::allocator::{AllocRequest, Clock, Network, Options};
    use crate::range::RangeSet;
    use crate::store::counting::CountingStore;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;

    const T0: u64 = 1_000_000;

    fn node<'a>(
        store: &'a CountingStore<MemoryStore>,
        name: &str,
        clock: &Clock,
    ) -> Allocator<&'a CountingStore<MemoryStore>> {
        let net = Network::new("n", vec![RangeSet::from_cidr("10.1.0.0/16").unwrap()]).unwrap();
        let opts = Options {
            node_name: name.into(),
            node_seed: crate::allocator::node_seed_from(name),
            clock: clock.clone(),
            ..Options::default()
        };
        Allocator::new(store, net, opts).unwrap()
    }

    fn id(cid: &str) -> OwnerId {
        OwnerId {
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    fn add(a: &Allocator<&CountingStore<MemoryStore>>, cid: &str) {
        let req = AllocRequest {
            owner: id(cid),
            ..AllocRequest::default()
        };
        futures_lite(a.allocate(&req)).unwrap();
    }

    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn ids(records: &[OwnerRecord]) -> Vec<String> {
        let mut v: Vec<String> = records.iter().map(|r| r.container_id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn gc_of_one_node_never_touches_another_nodes_records() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let (a, b) = (
            node(&store, "node-a", &clock),
            node(&store, "node-b", &clock),
        );
        for cid in ["a1", "a2", "a3"] {
            add(&a, cid);
        }
        for cid in ["b1", "b2", "b3"] {
            add(&b, cid);
        }
        // A record without a node (written by a build that did not record
        // one): never collected by the CNI verb.
        let anon = Allocator::new(
            &store,
            a.network().clone(),
            Options {
                node_name: String::new(),
                clock: clock.clone(),
                ..Options::default()
            },
        )
        .unwrap();
        add(&anon, "x1");
        clock.advance(3600);
        // Node A's runtime knows only a1: its GC releases a2 and a3 only.
        store.reset();
        let released = futures_lite(a.gc_node(&[id("a1")], Duration::from_secs(60))).unwrap();
        assert_eq!(ids(&released), ["a2", "a3"]);
        let left = futures_lite(a.owners()).unwrap();
        assert_eq!(ids(&left), ["a1", "b1", "b2", "b3", "x1"]);
        // Node B's index is untouched, A's lists a1 only.
        assert_eq!(
            ids(&futures_lite(b.node_records("node-b")).unwrap().records),
            ["b1", "b2", "b3"]
        );
        assert_eq!(
            ids(&futures_lite(a.node_records("node-a")).unwrap().records),
            ["a1"]
        );
        assert!(futures_lite(a.check()).unwrap().is_clean());
    }

    #[test]
    fn gc_leaves_records_younger_than_the_grace() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let a = node(&store, "node-a", &clock);
        add(&a, "old");
        clock.advance(30);
        add(&a, "young");
        clock.advance(40);
        // old is 70 s old, young 40 s: a 60 s grace keeps young.
        let released = futures_lite(a.gc_node(&[], Duration::from_secs(60))).unwrap();
        assert_eq!(ids(&released), ["old"]);
        clock.advance(20);
        let released = futures_lite(a.gc_node(&[], Duration::from_secs(60))).unwrap();
        assert_eq!(ids(&released), ["young"]);
    }

    #[test]
    fn a_nodes_gc_reads_only_its_own_keys() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let a = node(&store, "node-a", &clock);
        for i in 0..20 {
            add(
                &node(&store, &format!("other-{i}"), &clock),
                &format!("o{i}"),
            );
        }
        add(&a, "mine");
        store.reset();
        let released = futures_lite(a.gc_node(&[id("mine")], Duration::ZERO)).unwrap();
        assert!(released.is_empty());
        // One range read of node-a's index, nothing else.
        assert_eq!(store.reads(), 1);
        assert_eq!(store.txns(), 0);
    }

    #[test]
    fn release_record_leaves_a_record_created_again() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let a = node(&store, "node-a", &clock);
        add(&a, "c");
        let listed = futures_lite(a.node_records("node-a")).unwrap().records;
        // The container is deleted and added again (a new record).
        futures_lite(a.release(&id("c"))).unwrap();
        clock.advance(5);
        add(&a, "c");
        assert_eq!(futures_lite(a.release_record(&listed[0])).unwrap(), None);
        assert!(futures_lite(a.owner(&id("c"))).unwrap().is_some());
        // The current one is released, with its index entry.
        let now = futures_lite(a.owner(&id("c"))).unwrap().unwrap();
        assert_eq!(futures_lite(a.release_record(&now)).unwrap(), Some(now));
        assert!(futures_lite(a.node_records("node-a"))
            .unwrap()
            .records
            .is_empty());
        assert!(futures_lite(a.check()).unwrap().is_clean());
    }

    #[test]
    fn release_record_is_not_fooled_by_a_stale_node_cache() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let (a, b) = (
            node(&store, "node-a", &clock),
            node(&store, "node-a", &clock),
        );
        // A remembers the record it wrote; B releases it and writes a new
        // one for the same container.
        add(&a, "c");
        futures_lite(b.release(&id("c"))).unwrap();
        clock.advance(5);
        add(&b, "c");
        let current = futures_lite(b.owner(&id("c"))).unwrap().unwrap();
        // A's stale copy differs from `current`: A reads, and releases.
        assert_eq!(
            futures_lite(a.release_record(&current)).unwrap(),
            Some(current)
        );
        assert!(futures_lite(a.owner(&id("c"))).unwrap().is_none());
        assert!(futures_lite(a.check()).unwrap().is_clean());
    }

    #[test]
    fn reindex_adds_missing_entries_and_drops_stale_ones() {
        let store = CountingStore::new(MemoryStore::new());
        let clock = Clock::manual(T0);
        let a = node(&store, "node-a", &clock);
        for cid in ["c1", "c2", "c3"] {
            add(&a, cid);
        }
        let ks = a.keyspace().clone();
        // c1 and c2 as a build without the index wrote them; an entry
        // whose record is gone.
        for cid in ["c1", "c2"] {
            let entry = ks.node_entry("node-a", cid, "eth0").unwrap();
            let txn = crate::store::Txn {
                ops: vec![crate::store::Op::Delete(entry)],
                ..crate::store::Txn::default()
            };
            futures_lite(store.inner().txn(txn)).unwrap();
        }
        store.inner().put_raw(
            &ks.node_entry("node-a", "gone", "eth0").unwrap(),
            b"{}".to_vec(),
        );
        let dry = futures_lite(a.reindex(true)).unwrap();
        assert_eq!(dry.problems.len(), 3, "{dry:?}");
        assert_eq!(dry.repaired, 0);
        assert_eq!(
            futures_lite(a.node_records("node-a"))
                .unwrap()
                .records
                .len(),
            1
        );
        let done = futures_lite(a.reindex(false)).unwrap();
        assert_eq!(done.repaired, 3, "{done:?}");
        assert_eq!(
            ids(&futures_lite(a.node_records("node-a")).unwrap().records),
            ["c1", "c2", "c3"]
        );
        assert!(futures_lite(a.check()).unwrap().is_clean());
        // Run again: nothing left to do.
        assert_eq!(futures_lite(a.reindex(false)).unwrap().repaired, 0);
    }
}
