//! Tests of `check`: the pure assessment on plain data, and the driver's
//! repair against a concurrent writer on the memory store.

use std::net::IpAddr;

use roaring::RoaringTreemap;

use super::assess::{assess, range_chunk_keys, Scanned, Suspect};
use super::usage::{RangeMirror, UsageMirror};
use super::Problem;
use crate::allocator::keys::Keyspace;
use crate::allocator::meta::Meta;
use crate::allocator::{
    fullset, Allocator, Network, Options, OwnerRecord, DEFAULT_CHUNK_BITS, DEFAULT_PREFIX,
};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::{Family, Range, RangeSet, RangeSpec};
use crate::store::counting::CountingStore;
use crate::store::interleaved::Interleaved;
use crate::store::memory::MemoryStore;
use crate::store::{Compare, Expect, Key, Op, Store, Txn, Versioned};

const K: u8 = DEFAULT_CHUNK_BITS;

fn ks() -> Keyspace {
    Keyspace::new(DEFAULT_PREFIX, "checknet").unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v(value: Vec<u8>, rev: i64) -> Versioned {
    Versioned {
        value,
        mod_revision: rev,
        create_revision: rev,
    }
}

/// The key of the chunk of 10.0.0.0/24 and a stored value with `bits` set.
fn chunk_kv(bits: &[usize], rev: i64) -> (Family, Key, Versioned) {
    let mut c = Chunk {
        bits: Bitmap::new(1 << K),
        cursor: 0,
    };
    for b in bits {
        c.bits.set(*b);
    }
    (
        Family::V4,
        ks().chunk(Family::V4, K, 0x0a00_0000 >> K),
        v(codec::encode(&c), rev),
    )
}

fn owner_kv(id: &str, ips: &[&str], rev: i64) -> (Key, Versioned) {
    let rec = OwnerRecord {
        container_id: id.into(),
        ifname: "eth0".into(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        created: 1,
        pod_namespace: None,
        pod_name: None,
        node: None,
    };
    (
        ks().owner(id, "eth0").unwrap(),
        v(serde_json::to_vec(&rec).unwrap(), rev),
    )
}

/// The chunk a repair transaction puts, decoded.
fn put_chunk(txn: &Txn) -> Chunk {
    match &txn.ops[..] {
        [Op::Put(_, bytes)] => codec::decode_expecting(bytes, K).unwrap(),
        ops => panic!("one put expected: {ops:?}"),
    }
}

#[test]
fn agreeing_bits_and_owners_are_clean() {
    let scanned = Scanned {
        chunks: vec![chunk_kv(&[5, 6], 3)],
        owners: vec![
            owner_kv("a", &["10.0.0.5"], 4),
            owner_kv("b", &["10.0.0.6"], 5),
        ],
        meta: Some(v(Meta::new(K).encode().expect("meta"), 1)),
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    assert!(a.report.is_clean(), "{:?}", a.report);
    assert!(a.suspects.is_empty());
    assert_eq!(
        (a.report.chunks, a.report.owners, a.report.allocated),
        (1, 2, 2)
    );
    assert!(a.full_set_repairs().is_empty());
}

#[test]
fn a_bit_without_owner_is_cleared_on_the_scanned_revision() {
    let scanned = Scanned {
        chunks: vec![chunk_kv(&[5, 6], 3)],
        owners: vec![owner_kv("a", &["10.0.0.5"], 4)],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    // Not reported before it is confirmed.
    assert!(a.report.is_clean());
    let [s] = &a.suspects[..] else {
        panic!("one suspect: {:?}", a.suspects)
    };
    let key = ks().chunk(Family::V4, K, 0x0a00_0000 >> K);
    assert_eq!(
        s.problems,
        vec![Problem::BitWithoutOwner {
            ip: ip("10.0.0.6"),
            chunk: key.clone()
        }]
    );
    assert_eq!(s.scanned_rev, Some(3));
    let fix = a.chunk_repair(s);
    assert_eq!(
        fix.txn.compares,
        vec![Compare {
            key,
            expect: Expect::ModRevision(3)
        }]
    );
    let after = put_chunk(&fix.txn);
    assert!(after.bits.get(5) && !after.bits.get(6));
    assert_eq!((fix.fixes, fix.left.len()), (1, 0));
}

#[test]
fn an_owner_without_its_bit_in_an_absent_chunk_creates_it_compared_absent() {
    let scanned = Scanned {
        owners: vec![owner_kv("a", &["10.0.0.9"], 4)],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    let [s] = &a.suspects[..] else {
        panic!("one suspect: {:?}", a.suspects)
    };
    assert_eq!(s.scanned_rev, None);
    assert!(
        matches!(&s.problems[..], [Problem::OwnerWithoutBit { ip: x, owner }]
        if *x == ip("10.0.0.9") && *owner == ks().owner("a", "eth0").unwrap())
    );
    let fix = a.chunk_repair(s);
    assert_eq!(fix.txn.compares[0].expect, Expect::Absent);
    assert!(put_chunk(&fix.txn).bits.get(9));
}

#[test]
fn a_shared_address_is_reported_and_its_bit_left_alone() {
    let scanned = Scanned {
        chunks: vec![chunk_kv(&[7], 3)],
        owners: vec![
            owner_kv("a", &["10.0.0.9"], 4),
            owner_kv("b", &["10.0.0.9"], 5),
        ],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    assert!(
        matches!(&a.report.problems[..], [Problem::SharedAddress { ip: x, owners }]
        if *x == ip("10.0.0.9") && owners.len() == 2)
    );
    let [s] = &a.suspects[..] else {
        panic!("one suspect: {:?}", a.suspects)
    };
    // 10.0.0.7 has no owner; 10.0.0.9 is held twice and not marked.
    assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
    let fix = a.chunk_repair(s);
    let after = put_chunk(&fix.txn);
    assert!(!after.bits.get(7), "the bit without owner is cleared");
    assert!(!after.bits.get(9), "a shared address is not marked");
    assert_eq!(fix.fixes, 1);
    assert!(
        matches!(&fix.left[..], [Problem::OwnerWithoutBit { ip: x, .. }] if *x == ip("10.0.0.9"))
    );
}

#[test]
fn a_corrupt_chunk_is_rebuilt_from_the_owner_records() {
    let (family, key, _) = chunk_kv(&[], 0);
    let scanned = Scanned {
        chunks: vec![(family, key.clone(), v(b"garbage".to_vec(), 8))],
        owners: vec![
            owner_kv("a", &["10.0.0.5"], 4),
            owner_kv("b", &["10.0.0.200"], 5),
            // Another chunk: not part of this one's rebuild.
            owner_kv("c", &["10.0.1.5"], 6),
        ],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    let s = a
        .suspects
        .iter()
        .find(|s| s.key == key)
        .expect("the corrupt chunk is a suspect");
    assert!(
        matches!(&s.problems[..], [Problem::CorruptChunk { .. }]),
        "{:?}",
        s.problems
    );
    let fix = a.chunk_repair(s);
    assert_eq!(fix.txn.compares[0].expect, Expect::ModRevision(8));
    let after = put_chunk(&fix.txn);
    assert_eq!(after.bits.iter_ones().collect::<Vec<_>>(), vec![5, 200]);
}

#[test]
fn corrupt_records_are_reported_in_order_and_full_sets_deleted_on_their_revision() {
    let full_key = ks().full(Family::V4, 0x0a00_0000 >> K);
    let scanned = Scanned {
        full_sets: vec![(full_key.clone(), v(b"\xff\xffnot roaring".to_vec(), 12))],
        meta: Some(v(b"{".to_vec(), 2)),
        owners: vec![(
            ks().owner("z", "eth0").unwrap(),
            v(b"{not json".to_vec(), 9),
        )],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    let kinds: Vec<&str> = a
        .report
        .problems
        .iter()
        .map(|p| match p {
            Problem::CorruptOwner { .. } => "owner",
            Problem::CorruptFullSet { .. } => "full",
            Problem::CorruptMeta { .. } => "meta",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["owner", "full", "meta"]);
    assert_eq!(
        a.full_set_repairs(),
        vec![(
            full_key.clone(),
            Txn {
                compares: vec![Compare {
                    key: full_key.clone(),
                    expect: Expect::ModRevision(12)
                }],
                ops: vec![Op::Delete(full_key)],
                read_on_conflict: vec![],
            }
        )]
    );
}

#[test]
fn keys_that_are_not_chunks_are_not_looked_at() {
    let scanned = Scanned {
        chunks: vec![(
            Family::V4,
            format!("{}/chunks/4/not-hex", ks().root()),
            v(b"garbage".to_vec(), 3),
        )],
        ..Scanned::default()
    };
    let a = assess(&ks(), K, scanned);
    assert_eq!(a.report.chunks, 0);
    assert!(a.suspects.is_empty() && a.report.is_clean());
}

#[test]
fn a_suspect_is_confirmed_only_by_its_scanned_revision() {
    let s = Suspect {
        key: "k".into(),
        at: (Family::V4, 0),
        scanned_rev: Some(3),
        problems: vec![],
    };
    assert!(s.unchanged(Some(&v(vec![], 3))));
    assert!(!s.unchanged(Some(&v(vec![], 4))));
    assert!(!s.unchanged(None));
    let absent = Suspect {
        scanned_rev: None,
        ..s
    };
    assert!(absent.unchanged(None));
    assert!(!absent.unchanged(Some(&v(vec![], 1))));
}

#[test]
fn usage_counts_the_taken_addresses_inside_the_range_only() {
    let r = Range::parse(&RangeSpec {
        subnet: "10.0.0.0/24".into(),
        range_start: Some("10.0.0.10".into()),
        range_end: Some("10.0.0.20".into()),
        ..RangeSpec::default()
    })
    .unwrap();
    let (start, end) = range_chunk_keys(&ks(), K, &r);
    let (_, key, val) = chunk_kv(&[5, 10, 11, 20, 21], 3);
    assert!(start <= key && key < end);
    let mut m = RangeMirror::default();
    m.apply((&ks(), K), &r, &[(key.clone(), val.clone())])
        .unwrap();
    let u = m.usage((0, 1), &r);
    assert_eq!((u.set, u.range, u.size, u.used), (0, 1, 11, 3));
    assert_eq!((u.chunks, u.bytes), (1, val.value.len()));
    // A key in the interval that is no chunk key is kept (for the key
    // count) but adds nothing.
    let junk = format!("{key}x");
    m.apply((&ks(), K), &r, &[(junk, v(b"x".to_vec(), 4))])
        .unwrap();
    assert_eq!(m.usage((0, 1), &r), u);
    // A rewrite of the chunk replaces its figures.
    let (_, _, val2) = chunk_kv(&[5, 10, 11, 12, 20, 21], 5);
    m.apply((&ks(), K), &r, &[(key.clone(), val2)]).unwrap();
    assert_eq!(m.usage((0, 1), &r).used, 4);
    // A whole chunk inside the range counts every bit.
    let whole = Range::parse(&RangeSpec {
        subnet: "10.0.0.0/23".into(),
        ..RangeSpec::default()
    })
    .unwrap();
    let mut w = RangeMirror::default();
    w.apply((&ks(), K), &whole, &[(key.clone(), val.clone())])
        .unwrap();
    assert_eq!(w.usage((0, 0), &whole).used, 5);
    let e = m.apply((&ks(), K), &r, &[(key, v(b"garbage".to_vec(), 4))]);
    assert!(matches!(
        e,
        Err(crate::allocator::AllocError::CorruptChunk { .. })
    ));
}

// ---------------------------------------------------------------------------
// The driver against a concurrent writer
// ---------------------------------------------------------------------------

fn network() -> Network {
    Network::new(
        "checknet",
        vec![RangeSet::from_cidr("10.0.0.0/24").unwrap()],
    )
    .and_then(|n| n.with_chunk_bits(K))
    .unwrap()
}

#[tokio::test]
async fn a_full_set_rewritten_during_repair_is_not_deleted() {
    let store = Interleaved::new(MemoryStore::new());
    let full_key = ks().full(Family::V4, 0x0a00_0000 >> K);
    store
        .inner()
        .put_raw(&full_key, b"\xff\xffnot roaring".to_vec());
    let planted = store.inner().dump()[&full_key].mod_revision;
    // Another writer replaces it (compare on what it saw) after the check
    // read it and before the repair deletes it.
    let mut fresh = RoaringTreemap::new();
    fresh.insert(0x0a00_0000 >> K);
    let fresh = fullset::encode(&fresh);
    store.before_next_txn(Txn {
        compares: vec![Compare {
            key: full_key.clone(),
            expect: Expect::ModRevision(planted),
        }],
        ops: vec![Op::Put(full_key.clone(), fresh.clone())],
        read_on_conflict: vec![],
    });
    let a = Allocator::new(&store, network(), Options::default()).unwrap();
    let report = a.repair().await.unwrap();
    assert_eq!(report.repaired, 0, "{report:?}");
    assert_eq!(report.in_flux, 1, "{report:?}");
    assert_eq!(
        store.inner().dump()[&full_key].value,
        fresh,
        "the fresh full-set survives the repair"
    );
    // Without a concurrent writer, the next repair finds nothing to do.
    let report = a.repair().await.unwrap();
    assert!(report.is_clean() && report.repaired == 0, "{report:?}");
}

#[tokio::test]
async fn a_corrupt_full_set_nobody_touches_is_deleted() {
    let store = MemoryStore::new();
    let full_key = ks().full(Family::V4, 0x0a00_0000 >> K);
    store.put_raw(&full_key, b"\xff\xffnot roaring".to_vec());
    let a = Allocator::new(&store, network(), Options::default()).unwrap();
    let report = a.repair().await.unwrap();
    assert_eq!((report.repaired, report.in_flux), (1, 0), "{report:?}");
    assert!(report.is_clean());
    assert!(!store.dump().contains_key(&full_key));
}

#[tokio::test]
async fn a_chunk_changed_during_repair_is_not_overwritten() {
    let store = Interleaved::new(MemoryStore::new());
    // A bit without owner...
    let (_, key, planted) = chunk_kv(&[5], 0);
    store.inner().put_raw(&key, planted.value);
    let rev = store.inner().dump()[&key].mod_revision;
    // ...that another writer changes (sets 6) just before the repair.
    let (_, _, changed) = chunk_kv(&[5, 6], 0);
    store.before_next_txn(Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect: Expect::ModRevision(rev),
        }],
        ops: vec![Op::Put(key.clone(), changed.value.clone())],
        read_on_conflict: vec![],
    });
    let a = Allocator::new(&store, network(), Options::default()).unwrap();
    let report = a.repair().await.unwrap();
    assert_eq!((report.repaired, report.in_flux), (0, 1), "{report:?}");
    assert_eq!(store.inner().dump()[&key].value, changed.value);
}

// ---------------------------------------------------------------------------
// Usage kept between calls
// ---------------------------------------------------------------------------

/// Plants chunk `i` of 10.0.0.0/22 with `bits` set; returns its key.
fn plant(store: &MemoryStore, i: u128, bits: &[usize]) -> Key {
    let mut c = Chunk {
        bits: Bitmap::new(1 << K),
        cursor: 0,
    };
    for b in bits {
        c.bits.set(*b);
    }
    let key = ks().chunk(Family::V4, K, (0x0a00_0000 >> K) + i);
    store.put_raw(&key, codec::encode(&c));
    key
}

#[tokio::test]
async fn usage_kept_between_calls_reads_only_what_changed_and_notices_deletions() {
    let mem = MemoryStore::new();
    let store = CountingStore::new(&mem);
    let net = Network::new(
        "checknet",
        vec![RangeSet::from_cidr("10.0.0.0/22").unwrap()],
    )
    .and_then(|n| n.with_chunk_bits(K))
    .unwrap();
    let a = Allocator::new(&store, net, Options::default()).unwrap();
    plant(&mem, 0, &[10, 11]);
    let second = plant(&mem, 1, &[0, 1, 2]);
    plant(&mem, 3, &[7]);
    let used = |u: &[super::RangeUsage]| (u[0].used, u[0].chunks);

    // The first call reads every chunk: pages of one chunk, 3 chunks.
    let mut m = UsageMirror::default();
    let reads = store.reads();
    let u = a.usage_paged(&mut m, 1).await.unwrap();
    assert_eq!(store.reads() - reads, 3, "3 pages");
    assert_eq!(used(&u), (6, 3));
    assert_eq!(
        u,
        a.usage().await.unwrap(),
        "the same figures as a fresh read"
    );

    // Nothing written since: one read, the same figures.
    let reads = store.reads();
    assert_eq!(a.usage_paged(&mut m, 1).await.unwrap(), u);
    assert_eq!(store.reads() - reads, 1);

    // A chunk rewritten and one created: read (one page each), counted.
    plant(&mem, 1, &[0, 1, 2, 3, 4]);
    plant(&mem, 2, &[9]);
    let reads = store.reads();
    let u = a.usage_paged(&mut m, 1).await.unwrap();
    assert_eq!(store.reads() - reads, 2, "2 pages");
    assert_eq!(used(&u), (9, 4));
    assert_eq!(u, a.usage().await.unwrap());

    // A deleted chunk never shows as changed; the key count gives it away
    // and the copy is read again.
    store
        .txn(Txn {
            ops: vec![Op::Delete(second)],
            ..Txn::default()
        })
        .await
        .unwrap();
    let u = a.usage_paged(&mut m, 1).await.unwrap();
    assert_eq!(used(&u), (4, 3));
    assert_eq!(u, a.usage().await.unwrap());

    // A chunk that does not decode fails the call and empties the copy:
    // the next call, once it is fixed, reads every chunk again.
    let bad = ks().chunk(Family::V4, K, 0x0a00_0000 >> K);
    mem.put_raw(&bad, b"garbage".to_vec());
    let e = a.usage_paged(&mut m, 1).await;
    assert!(
        matches!(e, Err(crate::allocator::AllocError::CorruptChunk { .. })),
        "{e:?}"
    );
    plant(&mem, 0, &[10]);
    let reads = store.reads();
    let u = a.usage_paged(&mut m, 1).await.unwrap();
    assert_eq!(used(&u), (3, 3));
    assert_eq!(store.reads() - reads, 3, "read whole again");

    // Other ranges (another network config on the same copy) start over.
    let reads = store.reads();
    let net = Network::new(
        "checknet",
        vec![RangeSet::from_cidr("10.0.1.0/24").unwrap()],
    )
    .and_then(|n| n.with_chunk_bits(K))
    .unwrap();
    let b = Allocator::new(&store, net, Options::default()).unwrap();
    let u = b.usage_paged(&mut m, 1).await.unwrap();
    assert_eq!(used(&u), (0, 0), "chunk 1 was deleted");
    assert_eq!(store.reads() - reads, 1);
    plant(&mem, 1, &[100]);
    assert_eq!(used(&b.usage_paged(&mut m, 1).await.unwrap()), (1, 1));
}
