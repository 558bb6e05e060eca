//! Unit tests of the planner on plain data: a [`Known`] filled by hand, no
//! store.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::allocator::state::Known;
use crate::allocator::{AllocRequest, OwnerId, DEFAULT_CHUNK_BITS, MAX_TXN_OPS};
use crate::codec::{self, Chunk};
use crate::range::{Family, RangeSet};
use crate::store::{Expect, Key, Op, ReadResult, Versioned};

const K: u8 = DEFAULT_CHUNK_BITS;

fn network() -> Network {
    Network::new("plannet", vec![RangeSet::from_cidr("10.0.0.0/24").unwrap()])
        .and_then(|n| n.with_chunk_bits(K))
        .unwrap()
}

fn ctx<'a>(net: &'a Network, ks: &'a Keyspace, positions: &'a BTreeMap<usize, u128>) -> Ctx<'a> {
    Ctx {
        net,
        k: net.chunk_bits,
        ks,
        seed: 7,
        read_limit: 8,
        now: 1_000,
        node: "node-a",
        positions,
        window: START_WINDOW,
        sticky_ttl: None,
    }
}

fn req(id: &str, requested: &[&str]) -> AllocRequest {
    AllocRequest {
        owner: OwnerId {
            container_id: id.into(),
            ifname: "eth0".into(),
        },
        requested: requested.iter().map(|s| s.parse().unwrap()).collect(),
        ..AllocRequest::default()
    }
}

fn versioned(value: Vec<u8>, rev: i64) -> Versioned {
    Versioned {
        value,
        mod_revision: rev,
        create_revision: rev,
    }
}

/// What an empty store answers to `pending`.
fn answer_empty(known: &mut Known, pending: &[Pending]) {
    let results = pending
        .iter()
        .map(|p| match p {
            Pending::Get(_) => ReadResult::Get(None),
            Pending::Chunks { .. } => ReadResult::Range {
                kvs: Vec::new(),
                more: false,
            },
        })
        .collect();
    known.absorb(pending, results);
}

fn need(r: Result<impl std::fmt::Debug, Stop>) -> Vec<Pending> {
    match r {
        Err(Stop::Need(p)) => p,
        other => panic!("expected reads, got {other:?}"),
    }
}

/// The stored record of owner `a`/`eth0` holding 10.0.0.7.
fn record_a() -> OwnerRecord {
    OwnerRecord {
        container_id: "a".into(),
        ifname: "eth0".into(),
        ips: vec!["10.0.0.7".parse().unwrap()],
        created: 5,
        pod_namespace: None,
        pod_name: None,
        node: None,
    }
}

#[test]
fn add_with_nothing_known_asks_for_the_meta_record() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let known = Known::new(ks.clone(), K);
    assert_eq!(
        need(plan_add(&ctx, &known, &[req("a", &[])])),
        vec![Pending::Get(ks.meta())]
    );
}

#[test]
fn the_initial_reads_of_an_empty_store_are_all_an_add_needs() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let reqs = [req("a", &[]), req("b", &["10.0.0.9"])];
    let mut known = Known::new(ks.clone(), K);
    answer_empty(&mut known, &initial_reads(&ctx, &reqs));
    let plan = match plan_add(&ctx, &known, &reqs) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    // Both new; b has its static address.
    let ips: Vec<IpAddr> = plan
        .result
        .iter()
        .map(|o| match o {
            Outcome::New(rec, _) => rec.ips[0],
            Outcome::Existing(..) => panic!("nothing existed"),
        })
        .collect();
    assert_eq!(ips[1], "10.0.0.9".parse::<IpAddr>().unwrap());
    assert_ne!(ips[0], ips[1]);
    // Every key written is compared absent: meta, one chunk, two owners;
    // each owner's per-node index entry is written with the same bytes,
    // riding on its owner's absent compare.
    let chunk = ks.chunk(Family::V4, K, 0x0a00_0000 >> K);
    for cid in ["a", "b"] {
        let entry = ks.node_entry(ctx.node, cid, "eth0").unwrap();
        let owner = ks.owner(cid, "eth0").unwrap();
        let value_of = |key: &str| {
            plan.txn.ops.iter().find_map(|op| match op {
                Op::Put(k, v) if k == key => Some(v.clone()),
                _ => None,
            })
        };
        assert_eq!(value_of(&entry), value_of(&owner), "{entry}");
        assert!(value_of(&entry).is_some(), "{entry} written");
    }
    let mut written: Vec<String> = plan
        .txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put(k, _) => k.clone(),
            Op::Delete(k) => panic!("no delete expected: {k}"),
        })
        .filter(|k| !k.starts_with(&ks.nodes_prefix()))
        .collect();
    written.sort();
    let mut want = vec![
        ks.meta(),
        chunk.clone(),
        ks.owner("a", "eth0").unwrap(),
        ks.owner("b", "eth0").unwrap(),
    ];
    want.sort();
    assert_eq!(written, want);
    for key in &want {
        assert!(
            plan.txn
                .compares
                .iter()
                .any(|c| &c.key == key && c.expect == Expect::Absent),
            "{key} compared absent: {:?}",
            plan.txn.compares
        );
    }
    // Only the dynamic address moves the node's position (one past it).
    assert_eq!(
        plan.moved,
        vec![(0, crate::range::to_u128(ips[0]) + 1)],
        "{:?}",
        plan.moved
    );
}

#[test]
fn add_of_an_owner_that_holds_addresses_writes_nothing() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let r = req("a", &[]);
    let mut known = Known::new(ks.clone(), K);
    answer_empty(&mut known, &initial_reads(&ctx, std::slice::from_ref(&r)));
    let rec = record_a();
    known.absorb_key(
        &ks.owner("a", "eth0").unwrap(),
        Some(versioned(serde_json::to_vec(&rec).unwrap(), 3)),
    );
    let plan = plan_add(&ctx, &known, &[r]).unwrap();
    assert!(plan.txn.ops.is_empty() && plan.txn.compares.is_empty());
    assert!(
        matches!(&plan.result[..], [Outcome::Existing(got, a)] if *got == rec && a[0].ip == rec.ips[0])
    );
}

#[test]
fn add_each_gives_a_taken_static_address_its_own_error() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let reqs = [req("a", &[]), req("b", &["10.0.0.9"]), req("c", &[])];
    let mut known = Known::new(ks.clone(), K);
    answer_empty(&mut known, &initial_reads(&ctx, &reqs));
    // 10.0.0.9 is taken.
    let mut chunk = Chunk {
        bits: crate::bitmap::Bitmap::new(1 << K),
        cursor: 0,
    };
    chunk.bits.set(9);
    let chunk_key = ks.chunk(Family::V4, K, 0x0a00_0000 >> K);
    known.absorb_key(&chunk_key, Some(versioned(codec::encode(&chunk), 4)));
    let plan = plan_add_each(&ctx, &known, &reqs).unwrap();
    assert!(plan.has_failures);
    assert!(
        matches!(
            &plan.result[1],
            Err(AllocError::RequestedUnavailable { .. })
        ),
        "{:?}",
        plan.result[1]
    );
    let ips: Vec<IpAddr> = [0, 2]
        .iter()
        .map(|i| match &plan.result[*i] {
            Ok(Outcome::New(rec, _)) => rec.ips[0],
            other => panic!("request {i}: {other:?}"),
        })
        .collect();
    assert_ne!(ips[0], ips[1]);
    // The failed request writes nothing; the others commit on the chunk's
    // revision.
    let b = ks.owner("b", "eth0").unwrap();
    assert!(!plan
        .txn
        .ops
        .iter()
        .any(|op| matches!(op, Op::Put(k, _) if *k == b)));
    assert!(plan.txn.compares.contains(&crate::store::Compare {
        key: chunk_key,
        expect: Expect::ModRevision(4),
    }));
}

#[test]
fn release_clears_the_bits_and_deletes_the_record_on_their_revisions() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let owner = ks.owner("a", "eth0").unwrap();
    let chunk_key = ks.chunk(Family::V4, K, 0x0a00_0000 >> K);
    let mut known = Known::new(ks.clone(), K);
    // Nothing known: the record is read first, with the network's meta
    // record (which names the chunk size the release's keys are cut at).
    assert_eq!(
        need(plan_release(&ctx, &known, &owner, None)),
        vec![Pending::Get(owner.clone()), Pending::Get(ks.meta())]
    );
    // Absent: nothing to do.
    known.absorb_key(&owner, None);
    known.absorb_key(&ks.meta(), meta_at(K));
    let plan = plan_release(&ctx, &known, &owner, None).unwrap();
    assert!(plan.result.is_none() && plan.txn.ops.is_empty());
    // Present: its chunk and full-set are read, in one batch.
    let rec = record_a();
    known.absorb_key(
        &owner,
        Some(versioned(serde_json::to_vec(&rec).unwrap(), 11)),
    );
    let full_key = ks.full(Family::V4, 0x0a00_0000 >> K);
    assert_eq!(
        need(plan_release(&ctx, &known, &owner, None)),
        vec![
            Pending::Get(chunk_key.clone()),
            Pending::Get(full_key.clone())
        ]
    );
    let mut chunk = Chunk {
        bits: crate::bitmap::Bitmap::new(1 << K),
        cursor: 8,
    };
    chunk.bits.set(7);
    chunk.bits.set(8);
    known.absorb_key(&chunk_key, Some(versioned(codec::encode(&chunk), 10)));
    known.absorb_key(&full_key, None);
    let plan = plan_release(&ctx, &known, &owner, None).unwrap();
    assert_eq!(plan.result, Some(rec));
    assert!(plan.txn.compares.contains(&crate::store::Compare {
        key: owner.clone(),
        expect: Expect::ModRevision(11),
    }));
    assert!(
        plan.txn.compares.contains(&crate::store::Compare {
            key: ks.meta(),
            expect: Expect::ModRevision(2),
        }),
        "the meta record is compared"
    );
    assert!(plan.txn.compares.contains(&crate::store::Compare {
        key: chunk_key.clone(),
        expect: Expect::ModRevision(10),
    }));
    assert!(plan.txn.ops.contains(&Op::Delete(owner.clone())));
    let put = plan.txn.ops.iter().find_map(|op| match op {
        Op::Put(k, v) if *k == chunk_key => Some(v.clone()),
        _ => None,
    });
    let after = codec::decode_expecting(&put.unwrap(), K).unwrap();
    assert!(!after.bits.get(7), "the released bit is cleared");
    assert!(after.bits.get(8), "the other bit stays");
    // Stored at another chunk size: refused before anything is planned
    // (the allocator adopts the stored k, or reports it).
    known.absorb_key(&ks.meta(), meta_at(K + 2));
    assert!(matches!(
        plan_release(&ctx, &known, &owner, None),
        Err(Stop::Fail(AllocError::MetaMismatch { stored, configured, .. }))
            if stored == K + 2 && configured == K
    ));
}

#[test]
fn a_node_without_position_starts_anywhere_in_ipv4_and_in_the_ipv6_window() {
    let net = Network {
        sets: vec![
            RangeSet::from_cidr("10.0.0.0/8").unwrap(),
            RangeSet::from_cidr("fd00::/64").unwrap(),
        ],
        ..network()
    };
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let positions = BTreeMap::new();
    let first4 = 0x0a00_0000u128 >> K;
    let first6 = crate::range::to_u128("fd00::".parse().unwrap()) >> K;
    let v4_chunks = 1u128 << (24 - K);
    for seed in 0..256 {
        let ctx = Ctx {
            seed,
            ..ctx(&net, &ks, &positions)
        };
        let pos = respread_position(&ctx, 0, seed).unwrap();
        assert_eq!(pos % (1 << K), 0, "the start of a chunk");
        assert!(
            (first4..first4 + v4_chunks).contains(&(pos >> K)),
            "{pos:x}"
        );
        let pos6 = respread_position(&ctx, 1, seed).unwrap();
        assert!(
            (first6..first6 + START_WINDOW).contains(&(pos6 >> K)),
            "{pos6:x}"
        );
        // One draw for both sets: the same ordinal modulo each count.
        assert_eq!(
            ((pos >> K) - first4) % START_WINDOW,
            ((pos6 >> K) - first6) % v4_chunks.min(START_WINDOW)
        );
    }
    // IPv4 starts spread over the whole /8, not its first chunks.
    let spread_out = (0..256u64)
        .filter(|seed| {
            let ctx = Ctx {
                seed: *seed,
                ..ctx(&net, &ks, &positions)
            };
            respread_position(&ctx, 0, *seed).unwrap() >> K >= first4 + v4_chunks / 4
        })
        .count();
    assert!(
        spread_out > 128,
        "{spread_out} of 256 past the first quarter"
    );
}

#[test]
fn add_each_takes_out_the_last_request_when_only_the_combination_fails() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    // Each alone gets 10.0.0.9; together, the second one cannot.
    let reqs = [req("a", &["10.0.0.9"]), req("b", &["10.0.0.9"])];
    let mut known = Known::new(ks.clone(), K);
    answer_empty(&mut known, &initial_reads(&ctx, &reqs));
    let plan = plan_add_each(&ctx, &known, &reqs).unwrap();
    assert!(
        matches!(&plan.result[0], Ok(Outcome::New(rec, _)) if rec.ips[0].to_string() == "10.0.0.9")
    );
    assert!(
        matches!(
            &plan.result[1],
            Err(AllocError::RequestedUnavailable { .. })
        ),
        "{:?}",
        plan.result[1]
    );
}

/// Owner `id`/`eth0` holding `ip`, as stored.
fn record(id: &str, ip: &str) -> OwnerRecord {
    OwnerRecord {
        container_id: id.into(),
        ips: vec![ip.parse().unwrap()],
        ..record_a()
    }
}

/// A known state where owners `o0`…`o{n-1}` hold 10.0.0.1… (read at
/// revision 20 + i), in chunk 10.0.0.0/24 (revision 10), no full-set.
/// The network's meta record at chunk size `k`, as read at revision 2.
fn meta_at(k: u8) -> Option<Versioned> {
    Some(versioned(
        crate::allocator::meta::Meta::new(k).encode().unwrap(),
        2,
    ))
}

fn known_owners(ks: &Keyspace, n: usize) -> (Known, Vec<Key>) {
    let mut known = Known::new(ks.clone(), K);
    known.absorb_key(&ks.meta(), meta_at(K));
    let mut chunk = Chunk {
        bits: crate::bitmap::Bitmap::new(1 << K),
        cursor: 0,
    };
    let mut keys = Vec::new();
    for i in 0..n {
        let id = format!("o{i}");
        let key = ks.owner(&id, "eth0").unwrap();
        let rec = record(&id, &format!("10.0.0.{}", i + 1));
        known.absorb_key(
            &key,
            Some(versioned(serde_json::to_vec(&rec).unwrap(), 20 + i as i64)),
        );
        chunk.bits.set(i + 1);
        keys.push(key);
    }
    let idx = 0x0a00_0000 >> K;
    known.absorb_key(
        &ks.chunk(Family::V4, K, idx),
        Some(versioned(codec::encode(&chunk), 10)),
    );
    known.absorb_key(&ks.full(Family::V4, idx), None);
    (known, keys)
}

#[test]
fn release_each_gives_every_owner_its_own_result_in_one_transaction() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let (mut known, mut keys) = known_owners(&ks, 3);
    // Nothing known of two more owners: both records are asked for at once.
    let absent = ks.owner("gone", "eth0").unwrap();
    let corrupt = ks.owner("bad", "eth0").unwrap();
    keys.push(absent.clone());
    keys.push(corrupt.clone());
    assert_eq!(
        need(plan_release_each(&ctx, &known, &keys)),
        vec![Pending::Get(absent.clone()), Pending::Get(corrupt.clone())]
    );
    known.absorb_key(&absent, None);
    known.absorb_key(&corrupt, Some(versioned(b"not json".to_vec(), 30)));
    let plan = plan_release_each(&ctx, &known, &keys).unwrap();
    assert!(plan.has_failures);
    let r = &plan.result;
    for (i, slot) in r.iter().take(3).enumerate() {
        let rec = slot.as_ref().unwrap().as_ref().unwrap().as_ref().unwrap();
        assert_eq!(rec.container_id, format!("o{i}"));
    }
    assert!(matches!(r[3], Some(Ok(None))), "absent: nothing to release");
    assert!(
        matches!(r[4], Some(Err(AllocError::CorruptOwner { .. }))),
        "{:?}",
        r[4]
    );
    // One transaction: three record deletes compared on their revisions,
    // one chunk put with the three bits cleared; the corrupt record is
    // neither compared nor touched.
    let deletes: Vec<&Key> = plan
        .txn
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete(k) => Some(k),
            Op::Put(..) => None,
        })
        .collect();
    assert_eq!(deletes, keys.iter().take(3).collect::<Vec<_>>());
    for (i, key) in keys.iter().take(3).enumerate() {
        assert!(plan.txn.compares.contains(&crate::store::Compare {
            key: key.clone(),
            expect: Expect::ModRevision(20 + i as i64),
        }));
    }
    assert!(!plan.txn.compares.iter().any(|c| c.key == corrupt));
    let chunk_key = ks.chunk(Family::V4, K, 0x0a00_0000 >> K);
    let puts: Vec<&Vec<u8>> = plan
        .txn
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put(k, v) if *k == chunk_key => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(puts.len(), 1, "one chunk write for the three");
    let after = codec::decode_expecting(puts[0], K).unwrap();
    assert_eq!(after.bits.count_ones(), 0, "every bit of the three cleared");
    // The single-owner planner plans the same release for one of them.
    let one = plan_release(&ctx, &known, &keys[0], None).unwrap();
    assert_eq!(
        one.result.as_ref().map(|r| &r.container_id),
        Some(&"o0".to_string())
    );
}

#[test]
fn release_each_keeps_a_transaction_within_etcds_limits_and_defers_the_rest() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    // 200 owners in one chunk: 200 deletes and a chunk put do not fit.
    let (known, mut keys) = known_owners(&ks, 200);
    // The same owner twice (a repeated DEL) is one release.
    keys.insert(1, keys[0].clone());
    let plan = plan_release_each(&ctx, &known, &keys).unwrap();
    let t = &plan.txn;
    assert!(t.ops.len() <= MAX_TXN_OPS, "{} ops", t.ops.len());
    assert!(
        t.compares.len() <= MAX_TXN_OPS,
        "{} compares",
        t.compares.len()
    );
    assert!(t.read_on_conflict.len() <= MAX_TXN_OPS);
    let served = plan.result.iter().filter(|r| r.is_some()).count();
    let deletes = t
        .ops
        .iter()
        .filter(|op| matches!(op, Op::Delete(_)))
        .count();
    assert!(
        served >= MAX_TXN_OPS / 4,
        "only {served} owners in the transaction"
    );
    assert_eq!(deletes + 1, served, "the duplicate is one delete");
    // Served ones come first; the rest are left for the next transaction.
    assert!(plan.result[..served].iter().all(Option::is_some));
    assert!(plan.result[served..].iter().all(Option::is_none));
    let rec = |i: usize| match &plan.result[i] {
        Some(Ok(Some(r))) => r.container_id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (rec(0), rec(1)),
        ("o0".into(), "o0".into()),
        "both DELs of o0 answered"
    );
}

#[test]
fn release_created_releases_only_the_record_written_at_its_revision() {
    let (net, positions) = (network(), BTreeMap::new());
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let ctx = ctx(&net, &ks, &positions);
    let (known, keys) = known_owners(&ks, 1);
    // o0's record was read at revision 20.
    let plan = plan_release_created(&ctx, &known, &keys[0], 20).unwrap();
    assert_eq!(plan.result.map(|r| r.container_id), Some("o0".to_string()));
    assert!(plan.txn.compares.contains(&crate::store::Compare {
        key: keys[0].clone(),
        expect: Expect::ModRevision(20),
    }));
    // Written again since (another revision): left alone.
    let plan = plan_release_created(&ctx, &known, &keys[0], 19).unwrap();
    assert!(plan.result.is_none() && plan.txn.ops.is_empty());
    // Gone: nothing to do.
    let gone = ks.owner("gone", "eth0").unwrap();
    let mut known = known;
    known.absorb_key(&gone, None);
    let plan = plan_release_created(&ctx, &known, &gone, 20).unwrap();
    assert!(plan.result.is_none() && plan.txn.ops.is_empty());
    // Remembered bytes (node cache) say nothing of the revision: read it.
    let mut cached = Known::new(ks.clone(), K);
    let rec = serde_json::to_vec(&record("o0", "10.0.0.1")).unwrap();
    cached.seed([(keys[0].as_str(), Some(rec.as_slice()))]);
    assert_eq!(
        need(plan_release_created(&ctx, &cached, &keys[0], 20)),
        vec![Pending::Get(keys[0].clone())]
    );
}
