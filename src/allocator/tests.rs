//! Unit tests of the allocation protocol on the memory store.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::range::{Range, RangeSpec};
use crate::store::counting::CountingStore;
use crate::store::memory::{Fault, MemoryStore};

fn spec(subnet: &str) -> RangeSpec {
    RangeSpec {
        subnet: subnet.into(),
        ..RangeSpec::default()
    }
}

fn set(specs: &[RangeSpec]) -> RangeSet {
    RangeSet::new(specs.iter().map(|s| Range::parse(s).unwrap()).collect()).unwrap()
}

fn net(sets: Vec<RangeSet>) -> Network {
    Network {
        name: "testnet".into(),
        prefix: DEFAULT_PREFIX.into(),
        sets,
        chunk_bits: DEFAULT_CHUNK_BITS,
    }
}

fn opts() -> Options {
    Options {
        node_seed: 7,
        ..Options::default()
    }
}

/// Writes the meta record of `n` as another node's first ADD would have.
async fn create_meta<S: Store>(store: &S, n: &Network) {
    let ks = n.validate().unwrap();
    let meta = meta::Meta::new(n.chunk_bits).encode().unwrap();
    let mut t = crate::store::Txn::default();
    t.compares.push(crate::store::Compare {
        key: ks.meta(),
        expect: crate::store::Expect::Absent,
    });
    t.ops.push(crate::store::Op::Put(ks.meta(), meta));
    assert!(matches!(
        store.txn(t).await.unwrap(),
        crate::store::TxnOutcome::Committed { .. }
    ));
}

fn req(id: &str) -> AllocRequest {
    AllocRequest {
        owner: OwnerId {
            container_id: id.into(),
            ifname: "eth0".into(),
        },
        ..AllocRequest::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn alloc_of<S: Store>(store: S, n: Network) -> Allocator<S> {
    Allocator::new(store, n, opts()).unwrap()
}

#[tokio::test]
async fn cold_add_is_two_round_trips_warm_add_and_del_one() {
    let store = CountingStore::new(MemoryStore::new());
    let n = net(vec![
        set(&[spec("10.1.0.0/16")]),
        set(&[spec("2001:db8::/64")]),
    ]);
    // The very first ADD of a network: its guessed meta record is not
    // there yet; the conflict answer says so, the retry creates it.
    let first_node = alloc_of(&store, n.clone());
    first_node.allocate(&req("c0")).await.unwrap();
    assert_eq!((store.reads(), store.txns(), store.conflicts()), (0, 2, 1));
    // A node's first ADD on an existing network: no read, one transaction
    // (meta compared as guessed, start chunks compared absent).
    let a = Allocator::new(
        &store,
        n,
        Options {
            node_seed: 8,
            ..opts()
        },
    )
    .unwrap();
    store.reset();
    let first = a.allocate(&req("c1")).await.unwrap();
    assert_eq!(first.assigned.len(), 2);
    assert_eq!((store.reads(), store.txns()), (0, 1));
    store.reset();
    a.allocate(&req("c2")).await.unwrap();
    assert_eq!(
        (store.reads(), store.txns()),
        (0, 1),
        "warm ADD: one transaction, no read"
    );
    store.reset();
    // Idempotent ADD: the transaction's owner compare fails and its answer
    // carries the record.
    let again = a.allocate(&req("c1")).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.assigned, first.assigned);
    assert_eq!((store.reads(), store.txns()), (0, 1));
    // Warm DEL: the owner record and chunks are remembered.
    store.reset();
    assert!(a.release(&req("c2").owner).await.unwrap().is_some());
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm DEL");
    // DEL of an owner this allocator never saw: read it, then one txn
    // (its chunks are remembered).
    let b = alloc_of(&store, a.network().clone());
    b.set_node_cache(a.node_cache());
    a.set_node_cache(NodeCache::new());
    store.reset();
    assert!(a.release(&req("c1").owner).await.unwrap().is_some());
    assert_eq!((store.reads(), store.txns()), (2, 1), "cold DEL");
    // A stale cache (another allocator moved on): one conflict, then done.
    store.reset();
    b.allocate(&req("c3")).await.unwrap();
    assert_eq!(
        (store.reads(), store.txns()),
        (0, 2),
        "stale: conflict + retry"
    );
    // Garbage remembered for every chunk: the chunks are read again.
    let mut bad = b.node_cache();
    let keys: Vec<String> = bad
        .entries()
        .filter(|(k, _)| k.contains("/chunks/"))
        .map(|(k, _)| k.to_string())
        .collect();
    assert!(!keys.is_empty());
    for k in &keys {
        bad.remember(b.keyspace(), k, Some(b"\x01junk"));
    }
    b.set_node_cache(bad);
    store.reset();
    b.allocate(&req("c4")).await.unwrap();
    assert_eq!(
        (store.reads(), store.txns()),
        (1, 1),
        "garbage chunks: re-read"
    );
    // Another network's cache: ignored (no meta of ours), a cold ADD.
    let mut other_net = a.network().clone();
    other_net.name = "othernet".into();
    let other = alloc_of(&store, other_net);
    other.allocate(&req("o1")).await.unwrap();
    b.set_node_cache(other.node_cache());
    store.reset();
    b.allocate(&req("c5")).await.unwrap();
    // (Its search positions are taken, so the ADD reads first: a cold ADD
    // guesses its start chunk empty only without a position.)
    assert_eq!((store.reads(), store.txns()), (1, 1), "foreign cache: cold");
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn defaults_skip_network_and_gateway_and_go_round_robin() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/29")])]));
    // /29: network .0, gateway .1, start .2, end .6 (broadcast .7 excluded).
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(a.allocate(&req(&format!("c{i}"))).await.unwrap().assigned[0].ip);
    }
    let want: Vec<IpAddr> = (2..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
    assert_eq!(got, want);
    let err = a.allocate(&req("c5")).await.unwrap_err();
    assert!(matches!(err, AllocError::Exhausted { set: 0, .. }), "{err}");
    // Release .3; the next allocation gets it back only because the cursor
    // has wrapped (it is the only free address).
    a.release(&req("c1").owner).await.unwrap();
    assert_eq!(
        a.allocate(&req("c6")).await.unwrap().assigned[0].ip,
        ip("10.0.0.3")
    );
}

#[tokio::test]
async fn released_address_is_not_reused_before_the_cursor_wraps() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    let first = a.allocate(&req("a")).await.unwrap().assigned[0].ip;
    a.release(&req("a").owner).await.unwrap();
    let second = a.allocate(&req("b")).await.unwrap().assigned[0].ip;
    assert_ne!(first, second);
}

#[tokio::test]
async fn release_unknown_owner_is_ok_and_release_frees() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/30")])]));
    assert_eq!(a.release(&req("nobody").owner).await.unwrap(), None);
    let got = a.allocate(&req("x")).await.unwrap();
    let rec = a.release(&req("x").owner).await.unwrap().unwrap();
    assert_eq!(rec.ips, vec![got.assigned[0].ip]);
    assert_eq!(a.owner(&req("x").owner).await.unwrap(), None);
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.usage().await.unwrap()[0].used, 0);
}

#[tokio::test]
async fn static_requests() {
    let store = MemoryStore::new();
    let a = alloc_of(
        &store,
        net(vec![
            set(&[spec("10.0.0.0/24")]),
            set(&[spec("fd00::/120")]),
        ]),
    );
    let mut r = req("s1");
    r.requested = vec![ip("10.0.0.77")];
    let got = a.allocate(&r).await.unwrap();
    assert_eq!(got.assigned[0].ip, ip("10.0.0.77"));
    assert_eq!(got.assigned[1].set, 1);
    // Taken.
    let mut r2 = req("s2");
    r2.requested = vec![ip("10.0.0.77")];
    let e = a.allocate(&r2).await.unwrap_err();
    assert!(
        e.to_string().contains("10.0.0.77") && e.to_string().contains("already allocated"),
        "{e}"
    );
    // Gateway, outside, two in one set.
    for (bad, what) in [
        (vec![ip("10.0.0.1")], "not inside"),
        (vec![ip("10.0.0.255")], "not inside"),
        (vec![ip("10.9.0.5")], "not inside"),
        (vec![ip("10.0.0.5"), ip("10.0.0.6")], "one address per set"),
    ] {
        let mut r = req("s3");
        r.requested = bad;
        let e = a.allocate(&r).await.unwrap_err();
        assert!(matches!(e, AllocError::RequestedUnavailable { .. }), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    // Nothing half-written by the failures.
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocated, 2);
}

#[tokio::test]
async fn staged_reservations() {
    let mut s = spec("10.10.0.0/16");
    s.range_start = Some("10.10.1.20".into());
    s.range_end = Some("10.10.1.40".into());
    s.gateway = Some("10.10.1.1".into());
    s.stages.insert("sandbox".into(), vec!["10.10.1.20".into()]);
    s.stages.insert(
        "smallflow".into(),
        vec!["10.10.1.21".into(), "10.10.1.22".into()],
    );
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[s, spec("172.16.5.0/24")])]));
    let staged = |id: &str, st: &str| {
        let mut r = req(id);
        r.stage = Some(st.into());
        r
    };
    assert_eq!(
        a.allocate(&staged("sb1", "sandbox"))
            .await
            .unwrap()
            .assigned[0]
            .ip,
        ip("10.10.1.20")
    );
    let e = a.allocate(&staged("sb2", "sandbox")).await.unwrap_err();
    assert!(matches!(e, AllocError::StageExhausted { .. }), "{e}");
    let mut small = HashSet::new();
    for i in 0..2 {
        small.insert(
            a.allocate(&staged(&format!("sf{i}"), "smallflow"))
                .await
                .unwrap()
                .assigned[0]
                .ip,
        );
    }
    assert_eq!(small, HashSet::from([ip("10.10.1.21"), ip("10.10.1.22")]));
    // Ordinary pods (and pods of a stage without a list) never get listed addresses.
    let listed = [ip("10.10.1.20"), ip("10.10.1.21"), ip("10.10.1.22")];
    for i in 0..200 {
        let r = if i % 2 == 0 {
            req(&format!("n{i}"))
        } else {
            staged(&format!("n{i}"), "canary")
        };
        let got = a.allocate(&r).await.unwrap().assigned[0].ip;
        assert!(!listed.contains(&got), "{got} handed to an ordinary pod");
    }
    // A static request for a reserved address by another stage is refused.
    let mut r = req("thief");
    r.requested = vec![ip("10.10.1.22")];
    let e = a.allocate(&r).await.unwrap_err();
    assert!(e.to_string().contains("reserved for pods of stage"), "{e}");
}

#[tokio::test]
async fn dual_stack_is_all_or_nothing() {
    let store = MemoryStore::new();
    let a = alloc_of(
        &store,
        net(vec![set(&[spec("10.0.0.0/30")]), set(&[spec("fd00::/64")])]),
    );
    a.allocate(&req("one")).await.unwrap();
    let e = a.allocate(&req("two")).await.unwrap_err();
    assert!(matches!(e, AllocError::Exhausted { set: 0, .. }), "{e}");
    let report = a.check().await.unwrap();
    assert_eq!(
        report.allocated, 2,
        "no IPv6 address leaked by the failed ADD"
    );
    assert_eq!(report.owners, 1);
}

#[tokio::test]
async fn lost_replies_and_conflicts_converge() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    // An existing network: the first ADD's one transaction commits and its
    // reply is lost.
    create_meta(&store, a.network()).await;
    store.inject([Fault::FailAfterCommit]);
    let got = a.allocate(&req("lost")).await.unwrap();
    assert!(got.existing, "the retry found the committed record");
    store.inject([
        Fault::SpuriousConflict,
        Fault::SpuriousConflict,
        Fault::FailBeforeCommit,
        Fault::FailRead,
    ]);
    a.allocate(&req("busy")).await.unwrap();
    store.inject([Fault::FailAfterCommit]);
    assert!(a.release(&req("lost").owner).await.unwrap().is_none());
    assert!(a.owner(&req("lost").owner).await.unwrap().is_none());
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocated, 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let store = MemoryStore::new();
    let a = Allocator::new(
        &store,
        net(vec![set(&[spec("10.0.0.0/24")])]),
        Options {
            max_attempts: 3,
            ..opts()
        },
    )
    .unwrap();
    store.inject([Fault::SpuriousConflict; 5]);
    let e = a.allocate(&req("x")).await.unwrap_err();
    assert!(matches!(e, AllocError::Contention { attempts: 3 }), "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn chunk_size_mismatch_is_refused() {
    let store = MemoryStore::new();
    alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]))
        .allocate(&req("a"))
        .await
        .unwrap();
    let mut n = net(vec![set(&[spec("10.0.0.0/24")])]);
    n.chunk_bits = 12;
    // A chunk size the caller insists on (the CNI config sets `chunkBits`).
    let pinned = Options {
        adopt_stored_chunk_bits: false,
        ..opts()
    };
    let e = Allocator::new(&store, n.clone(), pinned.clone())
        .unwrap()
        .allocate(&req("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AllocError::MetaMismatch {
                stored: DEFAULT_CHUNK_BITS,
                configured: 12,
                ..
            }
        ),
        "{e}"
    );
    // DEL and CHECK refuse it too, before reading a chunk at the wrong size.
    let pinned = Allocator::new(&store, n, pinned).unwrap();
    let owner = req("a").owner;
    let refused = |e: &AllocError| {
        matches!(
            e,
            AllocError::MetaMismatch {
                stored: 8,
                configured: 12,
                ..
            }
        )
    };
    let e = pinned.release(&owner).await.unwrap_err();
    assert!(refused(&e), "{e}");
    let e = pinned.verify(&owner).await.unwrap_err();
    assert!(refused(&e), "{e}");
}

/// A network created at one chunk size, used by allocators whose default is
/// another (an upgrade that changed the default, or two configs): they work
/// at the stored size, for every operation, and the state stays consistent.
#[tokio::test]
async fn an_allocator_follows_the_chunk_size_the_network_was_created_with() {
    let store = CountingStore::new(MemoryStore::new());
    let sets = || vec![set(&[spec("10.2.0.0/16")]), set(&[spec("fd00:2::/64")])];
    let old = alloc_of(&store, net(sets()));
    let a0 = old.allocate(&req("a0")).await.unwrap();
    let a1 = old.allocate(&req("a1")).await.unwrap();
    // Today's default for a /16 is 6; the network is stored at 8.
    let newer = Network::new("testnet", sets()).unwrap();
    assert_eq!(newer.chunk_bits, 6);
    for opts in [
        opts(),
        Options {
            node_seed: 99,
            guess_first_add: false,
            ..opts()
        },
    ] {
        let b = Allocator::new(&store, newer.clone(), opts).unwrap();
        assert_eq!(b.chunk_bits(), 6);
        // CHECK of an owner written at k = 8 finds its bits.
        let (rec, not_marked) = b.verify(&req("a0").owner).await.unwrap().unwrap();
        assert_eq!(
            rec.ips,
            a0.assigned.iter().map(|a| a.ip).collect::<Vec<_>>()
        );
        assert!(not_marked.is_empty(), "{not_marked:?}");
        assert_eq!(b.chunk_bits(), 8, "adopted from the meta record");
    }
    // A fresh allocator's first ADD (guessing) and DEL (cold) adopt it too.
    // The ADD costs its guess (answered with the stored meta record), a
    // check of that answer, a read at the stored size and its transaction:
    // once per node, as the node cache then remembers the size.
    let b = Allocator::new(
        &store,
        newer.clone(),
        Options {
            node_seed: 5,
            ..opts()
        },
    )
    .unwrap();
    store.reset();
    let got = b.allocate(&req("b0")).await.unwrap();
    assert_eq!(b.chunk_bits(), 8);
    assert!(
        store.round_trips() <= 4,
        "{} round trips",
        store.round_trips()
    );
    let c = Allocator::new(
        &store,
        newer,
        Options {
            node_seed: 6,
            ..opts()
        },
    )
    .unwrap();
    let released = c.release(&req("a1").owner).await.unwrap().unwrap();
    assert_eq!(
        released.ips,
        a1.assigned.iter().map(|a| a.ip).collect::<Vec<_>>()
    );
    assert_eq!(c.chunk_bits(), 8);
    // The addresses are distinct, the stored chunks are all of k = 8, and a
    // check at the stored size finds nothing wrong.
    assert!(got
        .assigned
        .iter()
        .all(|g| !a0.assigned.iter().any(|a| a.ip == g.ip)));
    let report = old.check().await.unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.owners, 2, "a0 and b0 remain");
}

#[tokio::test]
async fn corrupt_data_is_named_never_overwritten() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    a.allocate(&req("a")).await.unwrap();
    let key = a.keyspace().chunk(
        crate::range::Family::V4,
        a.network().chunk_bits,
        0x0a00_0000 >> a.network().chunk_bits,
    );
    store.put_raw(&key, b"garbage".to_vec());
    let e = a.allocate(&req("b")).await.unwrap_err();
    assert!(matches!(e, AllocError::CorruptChunk { .. }), "{e}");
    assert!(e.to_string().contains(&key), "{e}");
    assert_eq!(store.dump()[&key].value, b"garbage", "never silently reset");
    let report = a.check().await.unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::CorruptChunk { .. })));
    // Repair rebuilds the chunk from the owner records.
    let fixed = a.repair().await.unwrap();
    assert!(fixed.is_clean(), "{fixed:?}");
    assert!(a.check().await.unwrap().is_clean());
    a.allocate(&req("b")).await.unwrap();
    // A corrupt owner record is named too.
    let okey = a.keyspace().owner("b", "eth0").unwrap();
    store.put_raw(&okey, b"{not json".to_vec());
    let e = a.allocate(&req("b")).await.unwrap_err();
    assert!(e.to_string().contains(&okey), "{e}");
}

#[tokio::test]
async fn check_finds_and_repair_fixes_planted_inconsistencies() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    for i in 0..5 {
        a.allocate(&req(&format!("c{i}"))).await.unwrap();
    }
    // A bit without owner: delete c0's record behind the allocator's back...
    let okey = a.keyspace().owner("c0", "eth0").unwrap();
    let rec = store.dump()[&okey].value.clone();
    let txn = crate::store::Txn {
        compares: vec![],
        ops: vec![crate::store::Op::Delete(okey.clone())],
        read_on_conflict: vec![],
    };
    store.txn(txn).await.unwrap();
    // ...and an owner record whose address is not marked.
    let mut ghost: OwnerRecord = serde_json::from_slice(&rec).unwrap();
    ghost.container_id = "ghost".into();
    ghost.ips = vec![ip("10.0.0.200")];
    store.put_raw(
        &a.keyspace().owner("ghost", "eth0").unwrap(),
        serde_json::to_vec(&ghost).unwrap(),
    );
    let report = a.check().await.unwrap();
    // The record deleted behind the allocator's back left its per-node
    // index entry; the planted one has none.
    assert_eq!(report.problems.len(), 4, "{report:?}");
    let ks = a.keyspace();
    assert!(report.problems.contains(&Problem::StaleIndexEntry {
        entry: ks.node_entry("vm", "c0", "eth0").unwrap()
    }));
    assert!(report.problems.contains(&Problem::OwnerNotIndexed {
        owner: ks.owner("ghost", "eth0").unwrap(),
        entry: ks.node_entry("vm", "ghost", "eth0").unwrap()
    }));
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::BitWithoutOwner { .. })));
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::OwnerWithoutBit { ip: x, .. } if *x == ip("10.0.0.200"))));
    let fixed = a.repair().await.unwrap();
    assert_eq!(fixed.repaired, 4);
    assert!(a.check().await.unwrap().is_clean());
    // The repaired index lists exactly the records left.
    let listed = a.node_records("vm").await.unwrap();
    let mut ids: Vec<&str> = listed
        .records
        .iter()
        .map(|r| r.container_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "ghost"]);
}

#[tokio::test]
async fn gc_releases_all_but_valid() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    for i in 0..6 {
        a.allocate(&req(&format!("c{i}"))).await.unwrap();
    }
    let valid = vec![req("c1").owner, req("c4").owner];
    let released = a.gc_cluster(&valid).await.unwrap();
    assert_eq!(released.len(), 4);
    let left: Vec<String> = a
        .owners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.container_id)
        .collect();
    assert_eq!(left, vec!["c1".to_string(), "c4".to_string()]);
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn full_chunks_enter_and_leave_the_full_set() {
    let store = MemoryStore::new();
    let mut n = net(vec![set(&[spec("10.0.0.0/22")])]);
    n.chunk_bits = 8; // four chunks of 256
    let a = alloc_of(&store, n);
    let reqs: Vec<AllocRequest> = (0..(1021 - 3)).map(|i| req(&format!("c{i}"))).collect();
    let got = a.allocate_batch(&reqs).await.unwrap();
    let distinct: HashSet<IpAddr> = got.iter().map(|g| g.assigned[0].ip).collect();
    assert_eq!(distinct.len(), reqs.len());
    // /22 from .0.2 to .3.254: 1021 usable addresses; 3 stay free.
    let full_key = format!("{}/full/4/0", a.keyspace().root());
    let fs = crate::allocator::fullset::decode(&store.dump()[&full_key].value).unwrap();
    assert!(fs.len() >= 3, "{fs:?}");
    for i in 0..(1021 - 3) {
        a.release(&req(&format!("c{i}")).owner).await.unwrap();
    }
    assert!(
        !store.dump().contains_key(&full_key),
        "full-set emptied and deleted"
    );
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn concurrent_tasks_never_share_an_address() {
    let store = Arc::new(MemoryStore::new());
    let n = net(vec![set(&[spec("10.0.0.0/24")]), set(&[spec("fd00::/64")])]);
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let a = Allocator::new(
            store.clone(),
            n.clone(),
            Options {
                node_seed: t % 2,
                ..Options::default()
            },
        )
        .unwrap();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..30 {
                let got = a.allocate(&req(&format!("t{t}-{i}"))).await.unwrap();
                mine.push(got.assigned[0].ip);
            }
            mine
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        for ipv4 in h.await.unwrap() {
            assert!(all.insert(ipv4), "{ipv4} handed out twice");
        }
    }
    assert_eq!(all.len(), 240);
}

#[tokio::test]
async fn huge_ranges_cost_one_chunk() {
    let store = CountingStore::new(MemoryStore::new());
    let a = alloc_of(
        &store,
        net(vec![
            set(&[spec("10.0.0.0/8")]),
            set(&[spec("2001:db8::/64")]),
        ]),
    );
    let got = a
        .allocate_batch(&(0..200).map(|i| req(&format!("c{i}"))).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(got.len(), 200);
    // Only touched chunks exist: a handful of keys, not 2^24 or 2^64 (plus
    // 200 owner records and their 200 index entries).
    let keys = store.inner().dump().len();
    assert!(keys < 420 + 10, "{keys} keys");
    let usage = a.usage().await.unwrap();
    assert_eq!(usage[0].used, 200);
    assert_eq!(usage[1].used, 200);
    assert_eq!(usage[1].size, (1u128 << 64) - 2);
}

#[tokio::test]
async fn a_full_starting_chunk_costs_no_extra_round_trip_once_hinted() {
    let store = CountingStore::new(MemoryStore::new());
    let mut n = net(vec![set(&[spec("10.0.0.0/22")])]);
    n.chunk_bits = 6;
    let a = alloc_of(&store, n);
    let reqs: Vec<AllocRequest> = (0..100).map(|i| req(&format!("c{i}"))).collect();
    for r in &reqs {
        a.allocate(r).await.unwrap();
    }
    store.reset();
    a.allocate(&req("next")).await.unwrap();
    assert_eq!(
        store.round_trips(),
        1,
        "position points past the full chunk"
    );
    // A fresh allocator (a new plugin process) given the same positions too.
    let b = alloc_of(&store, a.network().clone());
    b.set_search_positions(a.search_positions());
    store.reset();
    b.allocate(&req("next2")).await.unwrap();
    assert_eq!(store.round_trips(), 2);
}

#[tokio::test]
async fn static_requests_follow_the_dynamic_masks() {
    // Range B holds range A's gateway: dynamic allocation never hands it
    // out, and neither does a static request.
    let mut a_spec = spec("10.0.0.0/24");
    a_spec.range_end = Some("10.0.0.100".into());
    a_spec.gateway = Some("10.0.0.150".into());
    let mut b_spec = spec("10.0.0.0/24");
    b_spec.range_start = Some("10.0.0.101".into());
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[a_spec, b_spec])]));
    let mut r = req("s");
    r.requested = vec![ip("10.0.0.150")];
    let e = a.allocate(&r).await.unwrap_err();
    assert!(e.to_string().contains("gateway"), "{e}");
    r.requested = vec![ip("10.0.0.151")];
    assert_eq!(
        a.allocate(&r).await.unwrap().assigned[0].ip,
        ip("10.0.0.151")
    );
}

#[tokio::test]
async fn verify_reports_recorded_addresses_not_marked() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/24")])]));
    let got = a.allocate(&req("v")).await.unwrap().assigned[0].ip;
    let (rec, missing) = a.verify(&req("v").owner).await.unwrap().unwrap();
    assert_eq!((rec.ips, missing), (vec![got], vec![]));
    assert!(a.verify(&req("nobody").owner).await.unwrap().is_none());
    // Clear the bit behind the allocator's back.
    let k = a.network().chunk_bits;
    let key = a
        .keyspace()
        .chunk(crate::range::Family::V4, k, geometry::chunk_of(got, k));
    store.put_raw(
        &key,
        crate::codec::encode(&crate::codec::Chunk::new(k).unwrap()),
    );
    let (_, missing) = a.verify(&req("v").owner).await.unwrap().unwrap();
    assert_eq!(missing, vec![got]);
}

/// ADD then DEL, `n` times, on one allocator: the addresses handed out.
async fn add_del_cycles<S: Store>(a: &Allocator<S>, n: usize) -> Vec<IpAddr> {
    let mut got = Vec::new();
    for i in 0..n {
        let r = req(&format!("cycle{i}"));
        got.push(a.allocate(&r).await.unwrap().assigned[0].ip);
        a.release(&r.owner).await.unwrap();
    }
    got
}

#[tokio::test]
async fn round_robin_advances_to_the_next_range_and_rolls_over() {
    // host-local's "advance to next subnet" / "roll over to start subnet":
    // each /30 has one usable address (.2).
    for k in [6u8, 8, 12] {
        for seed in [0u64, 7, 99] {
            let store = MemoryStore::new();
            let mut n = net(vec![set(&[spec("10.0.0.0/30"), spec("10.0.1.0/30")])]);
            n.chunk_bits = k;
            let a = Allocator::new(
                &store,
                n,
                Options {
                    node_seed: seed,
                    ..Options::default()
                },
            )
            .unwrap();
            let got = add_del_cycles(&a, 6).await;
            for pair in got.windows(2) {
                assert_ne!(pair[0], pair[1], "k={k} seed={seed}: {got:?}");
            }
            let distinct: HashSet<_> = got.iter().collect();
            assert_eq!(distinct.len(), 2, "k={k} seed={seed}: {got:?}");
        }
    }
}

#[tokio::test]
async fn round_robin_walks_the_whole_set_before_reuse() {
    // A /23 has 510 usable addresses: 300 ADD/DEL cycles give 300 distinct
    // addresses at every chunk size (the node's position crosses chunks).
    for k in [6u8, 8, 10] {
        let store = MemoryStore::new();
        let mut n = net(vec![set(&[spec("10.0.0.0/23")])]);
        n.chunk_bits = k;
        let a = alloc_of(&store, n);
        let got = add_del_cycles(&a, 300).await;
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 300, "k={k}");
        // And in address order, wrapping once at most.
        let descents = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(descents <= 1, "k={k}: {descents} wraps");
        // The same through the node cache's byte form (a new plugin
        // process each time).
        let store = MemoryStore::new();
        let mut n = net(vec![set(&[spec("10.0.0.0/23")])]);
        n.chunk_bits = k;
        let mut bytes = Vec::new();
        let mut got = Vec::new();
        for i in 0..40 {
            let a = alloc_of(&store, n.clone());
            if let Some(c) = NodeCache::decode(&bytes, "mem", a.keyspace(), k) {
                a.set_node_cache(c);
            }
            let r = req(&format!("p{i}"));
            got.push(a.allocate(&r).await.unwrap().assigned[0].ip);
            a.release(&r.owner).await.unwrap();
            bytes = a
                .node_cache()
                .encode("mem", a.keyspace(), k)
                .expect("encodes");
        }
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 40, "k={k} through the cache file");
    }
}

#[tokio::test]
async fn static_requests_do_not_move_the_position() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/16")])]));
    let first = a.allocate(&req("d1")).await.unwrap().assigned[0].ip;
    let before = a.search_positions();
    let mut r = req("s1");
    r.requested = vec![ip("10.0.200.9")];
    a.allocate(&r).await.unwrap();
    assert_eq!(a.search_positions(), before);
    let next = a.allocate(&req("d2")).await.unwrap().assigned[0].ip;
    assert_eq!(
        crate::range::to_u128(next),
        crate::range::to_u128(first) + 1
    );
}

#[tokio::test]
async fn ipv6_starts_in_the_window_at_the_start_of_the_range() {
    // Whatever the node, its first address in a /64 lies in the first
    // START_WINDOW chunks: short addresses like 2001:db8:1::2..::ff:ffff at
    // k = 8.
    let base = crate::range::to_u128(ip("2001:db8:1::"));
    let window = plan::START_WINDOW << DEFAULT_CHUNK_BITS;
    let mut starts = HashSet::new();
    for node in 0..64u64 {
        let store = MemoryStore::new();
        let a = Allocator::new(
            &store,
            net(vec![set(&[spec("2001:db8:1::/64")])]),
            Options {
                node_seed: geometry::node_seed_from(&format!("node-{node}")),
                ..Options::default()
            },
        )
        .unwrap();
        let got = crate::range::to_u128(a.allocate(&req("c")).await.unwrap().assigned[0].ip);
        assert!(got >= base + 2 && got < base + window, "{got:x}");
        starts.insert(got >> DEFAULT_CHUNK_BITS);
    }
    // ... and nodes still spread over many chunks of it.
    assert!(starts.len() > 40, "{} distinct start chunks", starts.len());
}

#[tokio::test]
async fn excluded_static_request_names_the_exclude_entry() {
    let mut s = spec("10.0.0.0/24");
    s.exclude = vec!["10.0.0.16/28".into()];
    let store = MemoryStore::new();
    let a = alloc_of(&store, net(vec![set(&[s])]));
    let mut r = req("x");
    r.requested = vec![ip("10.0.0.17")];
    let e = a.allocate(&r).await.unwrap_err();
    assert!(
        matches!(e, AllocError::RequestedUnavailable { ip: bad, .. } if bad == ip("10.0.0.17")),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("excluded") && text.contains("10.0.0.16/28"),
        "{text}"
    );
    r.requested = vec![ip("10.0.0.40")];
    assert_eq!(
        a.allocate(&r).await.unwrap().assigned[0].ip,
        ip("10.0.0.40")
    );
}

#[tokio::test]
async fn allocate_each_fails_only_the_bad_requests() {
    // /29: .2 ..= .6 usable (5 addresses).
    let store = CountingStore::new(MemoryStore::new());
    let a = alloc_of(&store, net(vec![set(&[spec("10.0.0.0/29")])]));
    a.allocate(&{
        let mut r = req("holder");
        r.requested = vec![ip("10.0.0.4")];
        r
    })
    .await
    .unwrap();
    store.reset();
    let mut taken = req("wants-taken");
    taken.requested = vec![ip("10.0.0.4")];
    let mut outside = req("wants-outside");
    outside.requested = vec![ip("10.9.9.9")];
    let reqs = vec![
        req("a"),
        taken,
        req("b"),
        outside,
        req("c"),
        req("d"),
        req("e"),
    ];
    let out = a.allocate_each(&reqs).await;
    assert_eq!(out.len(), reqs.len());
    // a, b, c, d take the four free addresses; e finds the pool exhausted.
    for i in [0, 2, 4, 5] {
        assert!(out[i].is_ok(), "{i}: {:?}", out[i]);
    }
    assert!(
        matches!(out[1], Err(AllocError::RequestedUnavailable { .. })),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[3], Err(AllocError::RequestedUnavailable { .. })),
        "{:?}",
        out[3]
    );
    assert!(
        matches!(out[6], Err(AllocError::Exhausted { .. })),
        "{:?}",
        out[6]
    );
    assert_eq!(store.txns(), 1, "one transaction for the whole batch");
    let ips: HashSet<IpAddr> = out
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|x| x.assigned[0].ip)
        .collect();
    assert_eq!(ips.len(), 4);
    assert!(!ips.contains(&ip("10.0.0.4")));
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.owners().await.unwrap().len(), 5);
}

// Current-thread runtime: the 200 spawned callers all queue before the
// committer task first runs, so the batching is deterministic (MAX_BATCH a
// transaction), not a matter of timing.
#[tokio::test]
async fn group_commit_batches_concurrent_callers() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let a = Arc::new(
        Allocator::new(
            store.clone(),
            net(vec![
                set(&[spec("10.2.0.0/16")]),
                set(&[spec("fd00:2::/64")]),
            ]),
            opts(),
        )
        .unwrap(),
    );
    let group = group::GroupCommit::new(a.clone());
    // Warm up (meta, first chunk), then 200 callers at once.
    group.allocate(req("warm")).await.unwrap();
    store.reset();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let g = group.clone();
            tokio::spawn(async move { g.allocate(req(&format!("g{i}"))).await })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        let got = t.await.unwrap().unwrap();
        for x in got.assigned {
            assert!(ips.insert(x.ip), "{} twice", x.ip);
        }
    }
    assert_eq!(ips.len(), 400);
    assert!(
        store.txns() as usize <= 200usize.div_ceil(MAX_BATCH) + 1,
        "{} transactions for 200 concurrent allocations",
        store.txns()
    );
    // A bad request in the crowd fails alone; releases go through.
    let mut bad = req("bad");
    bad.requested = vec![ip("10.2.0.0")];
    let (x, y) = tokio::join!(group.allocate(bad), group.allocate(req("good")));
    assert!(
        matches!(x, Err(AllocError::RequestedUnavailable { .. })),
        "{x:?}"
    );
    assert!(y.is_ok());
    assert!(group.release(&req("good").owner).await.unwrap().is_some());
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.owners().await.unwrap().len(), 201);
}

// --- Sticky addresses -----------------------------------------------------

const T0: u64 = 1_700_000_000;
const TTL: u64 = 600;

fn sticky_opts(clock: &Clock) -> Options {
    Options {
        sticky_ttl: Some(std::time::Duration::from_secs(TTL)),
        clock: clock.clone(),
        ..opts()
    }
}

fn pod_req(id: &str, ns: &str, name: &str) -> AllocRequest {
    AllocRequest {
        pod_namespace: Some(ns.into()),
        pod_name: Some(name.into()),
        ..req(id)
    }
}

fn dual() -> Network {
    net(vec![
        set(&[spec("10.1.0.0/16")]),
        set(&[spec("2001:db8::/64")]),
    ])
}

fn ips_of(a: &Allocation) -> Vec<IpAddr> {
    a.assigned.iter().map(|x| x.ip).collect()
}

fn binding_keys(store: &MemoryStore) -> Vec<String> {
    store
        .dump()
        .keys()
        .filter(|k| k.contains("/sticky/"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn sticky_del_then_add_with_a_new_container_gets_the_same_addresses() {
    let clock = Clock::manual(T0);
    let store = CountingStore::new(MemoryStore::new());
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    // Another node (its own cache and seed) for the cross-node case.
    let b = Allocator::new(
        &store,
        dual(),
        Options {
            node_seed: 8,
            ..sticky_opts(&clock)
        },
    )
    .unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    // Other pods move the position on: a dynamic ADD would not reuse.
    a.allocate(&pod_req("o1", "ns", "other-0")).await.unwrap();
    store.reset();
    let rec = a.release(&req("c1").owner).await.unwrap().unwrap();
    assert_eq!(rec.pod_name.as_deref(), Some("web-0"));
    assert_eq!(
        (store.reads(), store.txns()),
        (0, 1),
        "warm sticky DEL: one txn"
    );
    let key = a.keyspace().sticky("ns", "web-0", "eth0").unwrap();
    assert_eq!(binding_keys(store.inner()), vec![key.clone()]);
    let bound = a.bindings().await.unwrap();
    let b0 = bound[0].binding.clone().unwrap();
    assert_eq!(b0.ips, ips_of(&first));
    assert_eq!((b0.released_at, b0.expires_at), (T0, T0 + TTL));
    assert_eq!(b0.container_id, "c1");
    clock.advance(TTL - 1);
    // Same node: the binding is remembered, the ADD is one transaction.
    store.reset();
    let again = a.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_eq!(ips_of(&again), ips_of(&first), "same addresses, both sets");
    assert!(!again.existing);
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm, remembered");
    assert!(
        binding_keys(store.inner()).is_empty(),
        "consumed by the ADD"
    );
    // Another node, warm in chunks of its own: the binding is compared
    // absent, the conflict answer brings it, two reads bring the bound
    // chunks (one per family, never seen by `b`), the retry takes the
    // addresses.
    b.allocate(&pod_req("o2", "ns", "other-1")).await.unwrap();
    a.release(&req("c2").owner).await.unwrap();
    store.reset();
    let third = b.allocate(&pod_req("c3", "ns", "web-0")).await.unwrap();
    assert_eq!(ips_of(&third), ips_of(&first));
    assert_eq!(
        (store.reads(), store.txns(), store.conflicts()),
        (2, 2, 1),
        "warm on another node: conflict, reads, then commit"
    );
    // Cold (no cache): the first transaction guesses the binding absent;
    // the conflict answer brings it, the bound chunks are read next.
    a.release(&req("c3").owner).await.unwrap();
    let c = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    store.reset();
    let fourth = c.allocate(&pod_req("c4", "ns", "web-0")).await.unwrap();
    assert_eq!(ips_of(&fourth), ips_of(&first));
    assert!(
        store.reads() <= 2 && store.txns() == 2 && store.conflicts() == 1,
        "cold sticky ADD"
    );
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    // Idempotent ADD of the live container: its addresses, no binding made.
    let same = c.allocate(&pod_req("c4", "ns", "web-0")).await.unwrap();
    assert!(same.existing);
    assert!(binding_keys(store.inner()).is_empty());
}

#[tokio::test]
async fn sticky_binding_expires() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    a.release(&req("c1").owner).await.unwrap();
    a.allocate(&pod_req("d1", "ns", "db-0")).await.unwrap();
    a.release(&req("d1").owner).await.unwrap();
    assert_eq!(binding_keys(&store).len(), 2);
    clock.advance(TTL);
    // Expired: a fresh address, and the ADD deletes the stale binding.
    let again = a.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_ne!(again.assigned[0].ip, first.assigned[0].ip);
    assert_ne!(again.assigned[1].ip, first.assigned[1].ip);
    let left = binding_keys(&store);
    assert_eq!(
        left,
        vec![a.keyspace().sticky("ns", "db-0", "eth0").unwrap()]
    );
    // expire_bindings: nothing before the expiry, then the rest.
    assert!(a.expire_bindings(T0 + TTL - 1).await.unwrap().is_empty());
    assert_eq!(binding_keys(&store).len(), 1);
    let gone = a.expire_bindings(clock.now()).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].name, "db-0");
    assert!(binding_keys(&store).is_empty());
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn sticky_falls_back_per_set_when_a_bound_address_is_taken() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    a.release(&req("c1").owner).await.unwrap();
    // Someone else takes the bound IPv4 address meanwhile.
    let mut thief = req("thief");
    thief.requested = vec![first.assigned[0].ip];
    a.allocate(&thief).await.unwrap();
    let again = a.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_ne!(again.assigned[0].ip, first.assigned[0].ip, "taken: fresh");
    assert_eq!(again.assigned[1].ip, first.assigned[1].ip, "still sticky");
    assert!(binding_keys(&store).is_empty());
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn sticky_two_live_containers_of_one_pod_never_share() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    // A crash-looping sandbox: a new container while the old one is held.
    let c1 = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    let c2 = a.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_ne!(c1.assigned[0].ip, c2.assigned[0].ip);
    assert_ne!(c1.assigned[1].ip, c2.assigned[1].ip);
    // The old one goes: the next one gets its addresses, never c2's.
    a.release(&req("c1").owner).await.unwrap();
    let c3 = a.allocate(&pod_req("c3", "ns", "web-0")).await.unwrap();
    assert_eq!(ips_of(&c3), ips_of(&c1));
    // A binding naming addresses a live container of the pod holds (here
    // planted) is checked against the bits: fresh addresses.
    let key = a.keyspace().sticky("ns", "web-0", "eth0").unwrap();
    let planted = Binding {
        namespace: "ns".into(),
        name: "web-0".into(),
        ifname: "eth0".into(),
        ips: ips_of(&c2),
        released_at: T0,
        expires_at: T0 + TTL,
        container_id: "c0".into(),
    };
    store.put_raw(&key, serde_json::to_vec(&planted).unwrap());
    let c4 = a.allocate(&pod_req("c4", "ns", "web-0")).await.unwrap();
    let live: Vec<Vec<IpAddr>> = [&c2, &c3].iter().map(|x| ips_of(x)).collect();
    for ip in ips_of(&c4) {
        assert!(!live.iter().any(|l| l.contains(&ip)), "{ip} shared");
    }
    assert!(binding_keys(&store).is_empty(), "consumed anyway");
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.owners, 3);
}

#[tokio::test]
async fn sticky_static_request_wins_over_the_binding() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    a.release(&req("c1").owner).await.unwrap();
    let mut r = pod_req("c2", "ns", "web-0");
    r.requested = vec![ip("10.1.200.9")];
    let got = a.allocate(&r).await.unwrap();
    assert_eq!(got.assigned[0].ip, ip("10.1.200.9"), "static wins");
    assert_eq!(got.assigned[1].ip, first.assigned[1].ip, "other set sticky");
    assert!(binding_keys(&store).is_empty());
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn sticky_respects_masks_and_interfaces() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    let mut net1 = pod_req("c1", "ns", "web-0");
    net1.owner.ifname = "net1".into();
    let first_net1 = a.allocate(&net1).await.unwrap();
    a.release(&req("c1").owner).await.unwrap();
    a.release(&net1.owner).await.unwrap();
    assert_eq!(binding_keys(&store).len(), 2, "one binding per interface");
    // The config changed meanwhile: the bound IPv4 address is excluded now.
    let mut n = dual();
    let excluded = format!("{}/32", first.assigned[0].ip);
    n.sets[0] = set(&[RangeSpec {
        exclude: vec![excluded],
        ..spec("10.1.0.0/16")
    }]);
    let b = Allocator::new(&store, n, sticky_opts(&clock)).unwrap();
    let mut net1 = pod_req("c2", "ns", "web-0");
    net1.owner.ifname = "net1".into();
    let again_net1 = b.allocate(&net1).await.unwrap();
    assert_eq!(ips_of(&again_net1), ips_of(&first_net1));
    let again = b.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_ne!(again.assigned[0].ip, first.assigned[0].ip, "excluded");
    assert_eq!(again.assigned[1].ip, first.assigned[1].ip);
    // A pod name unusable in a key: no binding, no error.
    let odd = pod_req("x1", "ns", "a/b");
    b.allocate(&odd).await.unwrap();
    b.release(&odd.owner).await.unwrap();
    assert!(binding_keys(&store).is_empty());
}

#[tokio::test]
async fn sticky_corrupt_binding_is_ignored_listed_and_released_by_name() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let key = a.keyspace().sticky("ns", "web-0", "eth0").unwrap();
    store.put_raw(&key, b"{not json".to_vec());
    // ADD: a dynamic address; the corrupt value is never overwritten.
    a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    assert_eq!(store.dump()[&key].value, b"{not json");
    // DEL: the release goes through, no binding is made over it.
    assert!(a.release(&req("c1").owner).await.unwrap().is_some());
    assert_eq!(store.dump()[&key].value, b"{not json");
    // check looks at chunks and owners only: clean.
    assert!(a.check().await.unwrap().is_clean());
    let listed = a.bindings().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    assert!(listed[0].binding.is_err());
    clock.advance(10 * TTL);
    assert!(a.expire_bindings(clock.now()).await.unwrap().is_empty());
    assert_eq!(binding_keys(&store).len(), 1, "expiry skips corrupt");
    let gone = a.release_binding("ns", "web-0").await.unwrap();
    assert_eq!(gone.len(), 1);
    assert!(binding_keys(&store).is_empty());
    assert!(a.release_binding("ns", "web-0").await.unwrap().is_empty());
}

#[tokio::test]
async fn release_binding_makes_the_next_container_fresh() {
    let clock = Clock::manual(T0);
    let store = MemoryStore::new();
    let a = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "ns", "web-0")).await.unwrap();
    a.allocate(&pod_req("w1", "ns", "web-01")).await.unwrap();
    a.release(&req("c1").owner).await.unwrap();
    a.release(&req("w1").owner).await.unwrap();
    let gone = a.release_binding("ns", "web-0").await.unwrap();
    assert_eq!(gone.len(), 1, "only web-0, not web-01");
    assert_eq!(gone[0].binding.as_ref().unwrap().ips, ips_of(&first));
    let again = a.allocate(&pod_req("c2", "ns", "web-0")).await.unwrap();
    assert_ne!(again.assigned[0].ip, first.assigned[0].ip);
    assert_eq!(binding_keys(&store).len(), 1);
}

#[tokio::test]
async fn without_sticky_round_trips_and_keys_are_unchanged() {
    let store = CountingStore::new(MemoryStore::new());
    let a = alloc_of(&store, dual());
    let mut counts = Vec::new();
    for id in ["c1", "c2", "c3"] {
        store.reset();
        a.allocate(&pod_req(id, "ns", "web-0")).await.unwrap();
        counts.push((store.reads(), store.txns()));
        store.reset();
        a.release(&req(id).owner).await.unwrap();
        counts.push((store.reads(), store.txns()));
    }
    // The first ADD of a fresh network: a conflict on the guessed meta
    // record, then the commit (no read either way).
    assert_eq!(counts, vec![(0, 2), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]);
    assert!(binding_keys(store.inner()).is_empty());
    // The same cycle with sticky on: no extra round trip either (the
    // binding is remembered by the node that wrote it).
    let clock = Clock::manual(T0);
    let store = CountingStore::new(MemoryStore::new());
    let s = Allocator::new(&store, dual(), sticky_opts(&clock)).unwrap();
    let mut sticky_counts = Vec::new();
    let mut got = Vec::new();
    for id in ["c1", "c2", "c3"] {
        store.reset();
        got.push(ips_of(
            &s.allocate(&pod_req(id, "ns", "web-0")).await.unwrap(),
        ));
        sticky_counts.push((store.reads(), store.txns()));
        store.reset();
        s.release(&req(id).owner).await.unwrap();
        sticky_counts.push((store.reads(), store.txns()));
    }
    assert_eq!(sticky_counts, counts);
    assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
}

// --- Batch release and abandoned group-commit callers ----------------------

#[tokio::test]
async fn release_each_frees_every_owner_on_its_own_in_few_transactions() {
    let store = CountingStore::new(MemoryStore::new());
    let a = alloc_of(&store, dual());
    let reqs: Vec<AllocRequest> = (0..120).map(|i| req(&format!("r{i}"))).collect();
    a.allocate_batch(&reqs).await.unwrap();
    let mut owners: Vec<OwnerId> = reqs.iter().map(|r| r.owner.clone()).collect();
    owners.insert(7, req("never-added").owner);
    owners.insert(
        9,
        OwnerId {
            container_id: "bad/id".into(),
            ifname: "eth0".into(),
        },
    );
    store.reset();
    let out = a.release_each(&owners).await;
    assert_eq!(out.len(), 122);
    assert!(matches!(out[7], Ok(None)), "never added: nothing held");
    assert!(
        out[9].is_err(),
        "a bad container ID fails alone: {:?}",
        out[9]
    );
    let released = out.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(released, 120);
    assert!(
        store.txns() as usize <= 120usize.div_ceil(MAX_BATCH) + 1,
        "{} transactions for 120 releases",
        store.txns()
    );
    assert!(a.owners().await.unwrap().is_empty());
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn release_each_with_a_corrupt_record_fails_that_owner_only() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, dual());
    for id in ["x", "y"] {
        a.allocate(&req(id)).await.unwrap();
    }
    let bad = a.keyspace().owner("y", "eth0").unwrap();
    let put = crate::store::Txn {
        compares: vec![],
        ops: vec![crate::store::Op::Put(bad, b"{broken".to_vec())],
        read_on_conflict: vec![],
    };
    store.txn(put).await.unwrap();
    let out = a.release_each(&[req("x").owner, req("y").owner]).await;
    assert!(matches!(out[0], Ok(Some(_))), "{:?}", out[0]);
    assert!(
        matches!(out[1], Err(AllocError::CorruptOwner { .. })),
        "{:?}",
        out[1]
    );
}

// Current-thread runtime: every caller queues before the committer runs.
#[tokio::test]
async fn group_commit_batches_concurrent_releases() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let a = Arc::new(Allocator::new(store.clone(), dual(), opts()).unwrap());
    let group = group::GroupCommit::new(a.clone());
    let reqs: Vec<AllocRequest> = (0..100).map(|i| req(&format!("d{i}"))).collect();
    a.allocate_batch(&reqs).await.unwrap();
    store.reset();
    let tasks: Vec<_> = reqs
        .iter()
        .map(|r| {
            let (g, owner) = (group.clone(), r.owner.clone());
            tokio::spawn(async move { g.release(&owner).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    assert!(
        store.txns() as usize <= 100usize.div_ceil(MAX_BATCH) + 1,
        "{} transactions for 100 concurrent releases",
        store.txns()
    );
    assert!(a.owners().await.unwrap().is_empty());
    assert!(a.check().await.unwrap().is_clean());
}

/// A store whose transactions wait, once armed, until released: the
/// moment an operation's transaction is in flight.
struct Gated<S> {
    inner: S,
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl<S: Store> Store for Gated<S> {
    fn read(
        &self,
        reads: &[crate::store::Read],
    ) -> impl std::future::Future<
        Output = Result<Vec<crate::store::ReadResult>, crate::store::StoreError>,
    > + Send {
        self.inner.read(reads)
    }

    async fn txn(
        &self,
        txn: crate::store::Txn,
    ) -> Result<crate::store::TxnOutcome, crate::store::StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.entered.notify_one();
            if let Ok(p) = self.open.acquire().await {
                p.forget();
            }
        }
        self.inner.txn(txn).await
    }
}

impl Gated<MemoryStore> {
    fn new() -> Self {
        Gated {
            inner: MemoryStore::new(),
            armed: Default::default(),
            entered: tokio::sync::Notify::new(),
            open: tokio::sync::Semaphore::new(0),
        }
    }

    /// An ADD of `id` through `group` whose caller leaves while its
    /// transaction is in flight; the transaction then goes on.
    async fn add_abandoned_in_flight(
        &self,
        group: &group::GroupCommit<Arc<Gated<MemoryStore>>>,
        id: &'static str,
    ) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let caller = {
            let g = group.clone();
            tokio::spawn(async move { g.allocate(req(id)).await })
        };
        self.entered.notified().await;
        caller.abort();
        let _ = caller.await;
        self.open.add_permits(1);
    }
}

fn observer_log() -> (group::Observer, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let observer: group::Observer = Arc::new(move |a: &group::Abandoned| {
        let line = match a {
            group::Abandoned::Dropped { owner, allocation } => {
                format!("dropped {} {allocation}", owner.container_id)
            }
            group::Abandoned::Released { record } => format!("released {}", record.container_id),
            group::Abandoned::Kept { owner } => format!("kept {}", owner.container_id),
            group::Abandoned::ReleaseFailed { owner, .. } => {
                format!("failed {}", owner.container_id)
            }
        };
        log.lock().unwrap().push(line);
    });
    (observer, seen)
}

#[tokio::test]
async fn a_caller_gone_before_the_commit_is_dropped_and_nothing_is_written() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let a = Arc::new(Allocator::new(store.clone(), dual(), opts()).unwrap());
    let (observer, seen) = observer_log();
    let group = group::GroupCommit::new(a.clone()).observed(observer);
    a.allocate(&req("warm")).await.unwrap();
    store.reset();
    // Polled once (queued, the committer spawned), then dropped before the
    // committer ran.
    for (id, add) in [("gone-add", true), ("warm", false)] {
        tokio::select! {
            biased;
            _ = async {
                if add {
                    let _ = group.allocate(req(id)).await;
                } else {
                    let _ = group.release(&req(id).owner).await;
                }
            } => panic!("answered before the committer ran"),
            () = std::future::ready(()) => {}
        }
    }
    // Let the committer run, then check.
    group.allocate(req("present")).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["dropped gone-add true", "dropped warm false"]
    );
    let owners: Vec<String> = a
        .owners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.container_id)
        .collect();
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(
        owners.contains(&"warm".to_string()),
        "the dropped DEL did not run"
    );
    assert!(!owners.contains(&"gone-add".to_string()));
    assert_eq!(store.txns(), 1, "only the present caller's transaction");
}

#[tokio::test]
async fn an_add_committed_after_its_caller_left_is_released_again() {
    let store = Arc::new(Gated::new());
    let a = Arc::new(Allocator::new(store.clone(), dual(), opts()).unwrap());
    let (observer, seen) = observer_log();
    let group = group::GroupCommit::new(a.clone()).observed(observer);
    a.allocate(&req("warm")).await.unwrap();
    store.add_abandoned_in_flight(&group, "late").await;
    // The committer releases it (compare on its revision), then serves the
    // next caller.
    group.allocate(req("next")).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["released late"]);
    assert!(a.owner(&req("late").owner).await.unwrap().is_none());
    assert!(a.check().await.unwrap().is_clean());

    // An ADD of an owner that already held addresses is never released:
    // its caller got nothing new, and whoever holds them keeps them.
    store.add_abandoned_in_flight(&group, "warm").await;
    group.allocate(req("next2")).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["released late"]);
    assert!(a.owner(&req("warm").owner).await.unwrap().is_some());
}

#[tokio::test]
async fn release_created_leaves_a_record_written_again_since() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, dual());
    let out = a.allocate_each_committed(&[req("c")]).await;
    let (_, rev) = out.into_iter().next().unwrap().unwrap();
    let rev = rev.expect("a new record has its revision");
    // Released and allocated again: another record, another revision.
    a.release(&req("c").owner).await.unwrap();
    a.allocate(&req("c")).await.unwrap();
    assert!(a
        .release_created(&req("c").owner, rev)
        .await
        .unwrap()
        .is_none());
    assert!(a.owner(&req("c").owner).await.unwrap().is_some());
    // Its own revision: released.
    let out = a.allocate_each_committed(&[req("d")]).await;
    let rev = out.into_iter().next().unwrap().unwrap().1.unwrap();
    assert!(a
        .release_created(&req("d").owner, rev)
        .await
        .unwrap()
        .is_some());
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn a_confirmed_record_is_not_released_by_its_creators_undo() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, dual());
    let out = a.allocate_each_committed(&[req("c")]).await;
    let (alloc, rev) = out.into_iter().next().unwrap().unwrap();
    // Someone else got the same addresses back (an idempotent ADD) and
    // confirms them before the creator's undo.
    let again = a.allocate(&req("c")).await.unwrap();
    assert!(again.existing);
    let rec = a.confirm_owner(&req("c").owner).await.unwrap().unwrap();
    let held: Vec<IpAddr> = alloc.assigned.iter().map(|x| x.ip).collect();
    assert_eq!(rec.ips, held);
    assert!(a
        .release_created(&req("c").owner, rev.unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(a.owner(&req("c").owner).await.unwrap().is_some());
    // Nothing to confirm once released.
    a.release(&req("c").owner).await.unwrap();
    assert!(a.confirm_owner(&req("c").owner).await.unwrap().is_none());
}

/// Two nodes whose first ADDs start in the same chunk: the second one's
/// guess fails, its conflict answer shows the chunk taken, and it moves to
/// another chunk before writing, so neither node's cache goes stale: every
/// later ADD of both is one transaction.
#[tokio::test]
async fn a_node_meeting_another_moves_away_before_writing() {
    let store = CountingStore::new(MemoryStore::new());
    let n = net(vec![
        set(&[spec("10.64.0.0/12")]),
        set(&[spec("2001:db8::/64")]),
    ]);
    let a = alloc_of(&store, n.clone());
    let b = alloc_of(&store, n); // the same seed: the same start chunks
    let first_a = a.allocate(&req("a1")).await.unwrap();
    store.reset();
    let first_b = b.allocate(&req("b1")).await.unwrap();
    assert_eq!(
        (store.reads(), store.txns(), store.conflicts()),
        (0, 2, 1),
        "guess, conflict, move, commit"
    );
    for (x, y) in first_a.assigned.iter().zip(&first_b.assigned) {
        assert_ne!(
            geometry::chunk_of(x.ip, DEFAULT_CHUNK_BITS),
            geometry::chunk_of(y.ip, DEFAULT_CHUNK_BITS),
            "b moved away in both families"
        );
    }
    for i in 2..6 {
        for (node, name) in [(&a, "a"), (&b, "b")] {
            store.reset();
            node.allocate(&req(&format!("{name}{i}"))).await.unwrap();
            assert_eq!(
                (store.reads(), store.txns()),
                (0, 1),
                "{name}{i}: warm, nobody else in its chunks"
            );
        }
    }
    assert!(a.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn the_holder_of_an_address_is_found_past_a_record_that_does_not_decode() {
    let store = MemoryStore::new();
    let a = alloc_of(&store, dual());
    let held = a.allocate(&req("holder")).await.unwrap().assigned[0].ip;
    // A record of another owner, before the holder's in key order, that
    // does not decode.
    let ks = Keyspace::new(DEFAULT_PREFIX, &dual().name).unwrap();
    store.put_raw(
        &ks.owner("aaa-corrupt", "eth0").unwrap(),
        b"{not json".to_vec(),
    );
    let found = a.holder_of(held).await.unwrap().expect("the holder");
    assert_eq!(found.container_id, "holder");
    // An address nobody else holds: the corrupt record might be its
    // holder's, so that is an error, not "free".
    let other: IpAddr = "10.1.255.250".parse().unwrap();
    let e = a.holder_of(other).await;
    assert!(matches!(e, Err(AllocError::CorruptOwner { .. })), "{e:?}");
}
