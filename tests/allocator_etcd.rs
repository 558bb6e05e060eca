//! The allocator proven against real etcd (Debian etcd-server 3.4):
//!
//! * the round trips of ADD, idempotent ADD and DEL, counted;
//! * many OS processes × many tasks filling, emptying and refilling one
//!   IPv4 /22 (and a dual-stack /24 + /64): the final state, the children's
//!   logs, and the *entire* etcd history of the network (replayed revision
//!   by revision from a watch at revision 1) show that no address was ever
//!   held by two owners and that chunk bits and owner records agree at
//!   every committed revision;
//! * etcd killed under the allocator: a bounded, transient failure
//!   (CNI code 11) and nothing half-written;
//! * 64 allocators racing on one chunk.
//!
//! The harness (builders, the proof's workers and checkers) is
//! `tests/support/alloc_harness.rs`. The multi-process tests re-execute
//! this test binary: the child entry is the test [`child_worker`], which
//! does its child work only when the proof's role variable is set and
//! otherwise runs the same protocol in-process, in miniature, as a sanity
//! check.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use host_etcd::allocator::{AllocError, Allocator, Keyspace, Network, Options, OwnerRecord};
use host_etcd::cni::CniError;
use host_etcd::store::counting::CountingStore;
use host_etcd::store::etcd::EtcdStore;
use support::alloc_harness::{
    capacity, child_main, config, connect, ips, line, network, owner, panic_text, patient, pod_req,
    replay_history, req, run_heavy, sticky, verify_logs, History, LogLine, LogOp, Role,
};
use support::EtcdServer;
// ---------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_add_idempotent_add_and_del() {
    let etcd = EtcdServer::start();
    let store = CountingStore::new(connect(&etcd.url()).await);
    let a = Allocator::new(
        &store,
        network("rt", &["10.1.0.0/16", "2001:db8:1::/64"]),
        patient(3),
    )
    .unwrap();

    // ADD on an empty store: no read; the first transaction guesses the
    // meta record present and the owner and start chunks absent, its
    // conflict answer says the meta record is absent too, and the second
    // transaction creates it with both chunks and the owner record.
    let first = a.allocate(&req("c1")).await.unwrap();
    assert!(!first.existing);
    assert_eq!(first.assigned.len(), 2);
    assert_eq!(
        (store.reads(), store.txns(), store.conflicts()),
        (0, 2, 1),
        "first ADD of the network"
    );
    // Another node's first ADD on the existing network: the guess holds,
    // one transaction.
    let b = Allocator::new(&store, a.network().clone(), patient(4)).unwrap();
    store.reset();
    b.allocate(&req("b1")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "a node's first ADD");

    // A second owner, warm: the allocator remembers meta, full-sets and the
    // chunks it allocated from, and takes the new owner as absent (the
    // transaction compares it absent): one transaction, no read.
    store.reset();
    let second = a.allocate(&req("c2")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm ADD");
    assert_ne!(first.assigned, second.assigned);

    // Idempotent repeat: the owner compare fails and the conflict answer
    // carries the record; nothing written.
    store.reset();
    let again = a.allocate(&req("c1")).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.assigned, first.assigned);
    assert_eq!((store.reads(), store.txns()), (0, 1), "idempotent ADD");

    // Warm DEL: the owner record and its chunks are remembered: one
    // transaction comparing their bytes.
    store.reset();
    let rec = a.release(&owner("c1")).await.unwrap().unwrap();
    assert_eq!(
        rec.ips,
        first.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()
    );
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm DEL");

    // DEL of an owner that holds nothing: one read.
    store.reset();
    assert_eq!(a.release(&owner("c1")).await.unwrap(), None);
    assert_eq!((store.reads(), store.txns()), (1, 0), "DEL of nobody");

    // Cold (no node cache, as before it existed): ADD is a read and a
    // transaction; DEL reads the owner record first because only it says
    // which chunks to read next, then those, then one transaction.
    let cold = Allocator::new(
        &store,
        a.network().clone(),
        patient(3).with_node_cache(false),
    )
    .unwrap();
    store.reset();
    cold.allocate(&req("c3")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (1, 1), "cold ADD");
    store.reset();
    cold.release(&owner("c3")).await.unwrap().unwrap();
    assert_eq!((store.reads(), store.txns()), (2, 1), "cold DEL");

    // Stale: another node wrote the chunks this one remembers (the cold
    // allocator above started from the same seed): one conflict whose
    // answer carries the current values, then one transaction.
    store.reset();
    a.allocate(&req("c4")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 2), "stale cache");
    store.reset();
    a.allocate(&req("c5")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm again");

    // Garbage remembered for the chunks (a damaged cache that still
    // parses): the byte compares fail, the answer brings the real chunks.
    let mut bad = a.node_cache();
    let keys: Vec<String> = bad
        .entries()
        .filter(|(k, _)| k.contains("/chunks/"))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in &keys {
        bad.remember(a.keyspace(), k, Some(b"\x00garbage"));
    }
    a.set_node_cache(bad);
    store.reset();
    let after_garbage = a.allocate(&req("c6")).await.unwrap();
    assert!(
        store.round_trips() <= 3,
        "garbage cache: {} round trips",
        store.round_trips()
    );
    // A cache of another network: ignored, a cold start.
    let other = Allocator::new(
        &store,
        network("rt-other", &["10.1.0.0/16", "2001:db8:1::/64"]),
        patient(3),
    )
    .unwrap();
    other.allocate(&req("o1")).await.unwrap();
    a.set_node_cache(other.node_cache());
    store.reset();
    let after_foreign = a.allocate(&req("c7")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (1, 1), "foreign cache");

    // Everything handed out is distinct and the state is consistent.
    let ips: Vec<IpAddr> = [&second, &after_garbage, &after_foreign]
        .iter()
        .flat_map(|x| x.assigned.iter().map(|a| a.ip))
        .collect();
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), ips.len());
    assert!(a.check().await.unwrap().is_clean());
}

/// Group commit on real etcd: 128 concurrent callers on one allocator get
/// distinct addresses in a handful of transactions; a bad request fails
/// alone. (Current-thread runtime: the callers all queue before the
/// committer first runs, so the count does not depend on timing.)
#[tokio::test]
async fn group_commit_on_etcd() {
    let etcd = EtcdServer::start();
    let store = Arc::new(CountingStore::new(connect(&etcd.url()).await));
    let a = Arc::new(
        Allocator::new(
            store.clone(),
            network("grp", &["10.3.0.0/16", "2001:db8:3::/64"]),
            patient(5),
        )
        .unwrap(),
    );
    let group = host_etcd::allocator::GroupCommit::new(a.clone());
    group.allocate(req("warm")).await.unwrap();
    store.reset();
    let tasks: Vec<_> = (0..128)
        .map(|i| {
            let g = group.clone();
            tokio::spawn(async move { g.allocate(req(&format!("g{i}"))).await })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        for x in t.await.unwrap().unwrap().assigned {
            assert!(ips.insert(x.ip), "{} twice", x.ip);
        }
    }
    assert_eq!(ips.len(), 256);
    assert!(
        store.round_trips() <= 128 / 4,
        "{} round trips for 128 grouped allocations",
        store.round_trips()
    );
    let mut bad = req("bad");
    bad.requested = vec!["10.9.0.1".parse().unwrap()];
    let (x, y) = tokio::join!(group.allocate(bad), group.allocate(req("good")));
    assert!(
        matches!(x, Err(AllocError::RequestedUnavailable { .. })),
        "{x:?}"
    );
    assert!(y.is_ok(), "{y:?}");
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.owners().await.unwrap().len(), 130);
}

/// DELs committed together on real etcd: owners spread over many chunks
/// (each its own chunk in both families: three operations per owner) do
/// not fit in one transaction of etcd's 128 operations, so the batch is
/// split; each owner gets its own result, a bad one fails alone, and the
/// state is clean after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_each_splits_what_etcd_would_refuse_and_frees_everyone() {
    let etcd = EtcdServer::start();
    let store = Arc::new(CountingStore::new(connect(&etcd.url()).await));
    let net = network("rel", &["10.4.0.0/16", "2001:db8:4::/64"])
        .with_chunk_bits(6)
        .unwrap();
    let a = Arc::new(Allocator::new(store.clone(), net, patient(9)).unwrap());
    let reqs: Vec<_> = (0..60)
        .map(|i| {
            let mut r = req(&format!("s{i}"));
            r.requested = vec![
                format!("10.4.{i}.70").parse().unwrap(),
                format!("2001:db8:4::{:x}", (i + 1) << 8).parse().unwrap(),
            ];
            r
        })
        .collect();
    for r in &reqs {
        a.allocate(r).await.unwrap();
    }
    let mut owners: Vec<_> = reqs.iter().map(|r| r.owner.clone()).collect();
    owners.push(owner("never-added"));
    store.reset();
    let out = a.release_each(&owners).await;
    for (o, r) in owners.iter().zip(&out) {
        match r {
            Ok(Some(rec)) => assert_eq!(rec.container_id, o.container_id),
            Ok(None) => assert_eq!(o.container_id, "never-added"),
            Err(e) => panic!("{}: {e}", o.container_id),
        }
    }
    // 60 owners × 3 operations: at least two transactions, far fewer than
    // one per owner.
    let txns = store.txns();
    assert!(
        (2..=8).contains(&txns),
        "{txns} transactions for 60 releases"
    );
    assert!(a.owners().await.unwrap().is_empty());
    assert!(a.check().await.unwrap().is_clean());
}

// ---------------------------------------------------------------------------
// 2./3. Multi-process proof
// ---------------------------------------------------------------------------

/// The child entry of the multi-process proofs (see
/// [`support::alloc_harness::child_main`]).
#[test]
fn child_worker() {
    child_main();
}

/// 8 processes × 16 tasks fill, empty and refill one IPv4 /22.
#[test]
fn processes_fill_empty_refill_ipv4_22() {
    // A /22 with the defaults: .0.0 network, .0.1 gateway, .3.255
    // broadcast.
    assert_eq!(capacity(&Role::V4.network().sets[0]), 1021);
    run_heavy(Role::V4);
}

/// The same with IPv4 /24 + IPv6 /64: every owner holds one of each.
#[test]
fn processes_fill_empty_refill_dual_stack() {
    assert_eq!(capacity(&Role::Dual.network().sets[0]), 253);
    run_heavy(Role::Dual);
}

// ---------------------------------------------------------------------------
// 4. etcd down
// ---------------------------------------------------------------------------

/// Budget of the allocator facing a dead etcd.
const SMALL_BUDGET: Duration = Duration::from_secs(2);

/// An allocator of `net` that faces a dying etcd: 500 ms request deadline,
/// [`SMALL_BUDGET`], otherwise the default options.
async fn impatient(endpoint: &str, net: &Network, seed: u64) -> Allocator<EtcdStore> {
    let store = EtcdStore::connect(&config(endpoint, Duration::from_millis(500)))
        .await
        .unwrap();
    let options = Options::default()
        .with_budget(SMALL_BUDGET)
        .with_node_seed(seed);
    Allocator::new(store, net.clone(), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_fails_transient_within_budget_and_writes_nothing() {
    let mut etcd = EtcdServer::start();
    let endpoint = etcd.url();
    let net = network("down", &["10.40.0.0/24", "fd00:40::/64"]);
    let a = impatient(&endpoint, &net, 4).await;
    // Planted state, written while etcd is up.
    let planted = a.allocate(&req("planted")).await.unwrap();

    etcd.kill();
    let t0 = Instant::now();
    let err = a.allocate(&req("lost")).await.unwrap_err();
    let took = t0.elapsed();
    // A bound, not a speed test: the budget must stop the retry loop.
    assert!(
        took < SMALL_BUDGET * 3,
        "allocate against a dead etcd took {took:?} (budget {SMALL_BUDGET:?})"
    );
    assert!(err.is_transient(), "not transient: {err:?}");
    let cni = CniError::from(err);
    assert_eq!(cni.code(), 11, "{cni}");
    // DEL and STATUS fail the same way.
    let err = a.release(&owner("planted")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(CniError::from(err).code(), 11);
    let err = a.ping().await.unwrap_err();
    assert_eq!(CniError::from(err).code(), 11);

    // Same data dir, same port: nothing of the failed calls was written.
    etcd.restart();
    let fresh = Allocator::new(connect(&endpoint).await, net.clone(), patient(5)).unwrap();
    let report = fresh.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fresh.owner(&owner("lost")).await.unwrap(), None);
    let rec = fresh.owner(&owner("planted")).await.unwrap().unwrap();
    assert_eq!(
        rec.ips,
        planted.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()
    );
    assert_eq!(fresh.owners().await.unwrap().len(), 1);
    let usage = fresh.usage().await.unwrap();
    assert_eq!((usage[0].used, usage[1].used), (1, 1));
    // The old allocator's client works again once etcd is back (its
    // transient errors are retried, as a runtime would).
    let mut retried = 0;
    let after = loop {
        match a.allocate(&req("after")).await {
            Ok(x) => break x,
            Err(e) if e.is_transient() && retried < 20 => retried += 1,
            Err(e) => panic!("allocate after restart: {e}"),
        }
    };
    assert!(!after.existing);
    assert!(fresh.check().await.unwrap().is_clean());
}

/// etcd killed while allocations stream: every ADD that succeeded is
/// stored whole, every failed one is transient, and the state is consistent
/// (an ADD whose reply was lost may or may not have committed, but never
/// half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_mid_stream_leaves_no_half_written_add() {
    let mut etcd = EtcdServer::start();
    let endpoint = etcd.url();
    let net = network("midstream", &["10.41.0.0/22", "fd00:41::/64"]);
    let a = Arc::new(impatient(&endpoint, &net, 6).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for t in 0..4 {
        let a = a.clone();
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for i in 0.. {
                let id = format!("s{t}-{i}");
                match a.allocate(&req(&id)).await {
                    Ok(x) => {
                        let _ = tx.send(());
                        ok.push((id, x.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()));
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "{id}: {e:?}");
                        failed.push(id);
                        if failed.len() >= 2 {
                            break;
                        }
                    }
                }
            }
            (ok, failed)
        }));
    }
    drop(tx);
    for _ in 0..40 {
        rx.recv().await.unwrap();
    }
    etcd.kill();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        let (o, f) = h.await.unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    etcd.restart();
    let fresh = Allocator::new(connect(&endpoint).await, net.clone(), patient(7)).unwrap();
    let report = fresh.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    for (id, ips) in &ok {
        let rec = fresh.owner(&owner(id)).await.unwrap();
        assert_eq!(rec.map(|r| r.ips).as_ref(), Some(ips), "{id}");
    }
    let owners = fresh.owners().await.unwrap();
    let lost_but_committed = owners.len() - ok.len();
    assert!(
        lost_but_committed <= failed.len(),
        "{} owners, {} successes, {} failures",
        owners.len(),
        ok.len(),
        failed.len()
    );
    for rec in &owners {
        assert_eq!(rec.ips.len(), 2, "{rec:?}");
    }
    let usage = fresh.usage().await.unwrap();
    assert_eq!(usage[0].used, owners.len() as u128);
    assert_eq!(usage[1].used, owners.len() as u128);
    eprintln!(
        "mid-stream kill: {} successes, {} transient failures, {lost_but_committed} of those committed",
        ok.len(),
        failed.len()
    );
}

// ---------------------------------------------------------------------------
// 5. Contention on one chunk
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_allocators_on_one_chunk() {
    let etcd = EtcdServer::start();
    let net = network("contention", &["10.50.0.0/24"]);
    let cap = capacity(&net.sets[0]);
    assert_eq!(cap, 253);
    let store = Arc::new(CountingStore::new(connect(&etcd.url()).await));
    let mut handles = Vec::new();
    for t in 0..64u64 {
        let a = Allocator::new(store.clone(), net.clone(), patient(t)).unwrap();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut transient = 0u64;
            let mut i = 0;
            loop {
                let id = format!("c{t}-{i}");
                match a.allocate(&req(&id)).await {
                    Ok(x) => {
                        assert!(!x.existing || transient > 0, "{id}: {x:?}");
                        mine.push((id, x.assigned[0].ip));
                        i += 1;
                    }
                    Err(AllocError::Exhausted { .. }) => break,
                    Err(e) if e.is_transient() => transient += 1,
                    Err(e) => panic!("{id}: {e}"),
                }
            }
            (mine, transient)
        }));
    }
    let mut all: HashMap<IpAddr, String> = HashMap::new();
    let mut transient = 0;
    for h in handles {
        let (mine, tr) = h.await.unwrap();
        transient += tr;
        for (id, ip) in mine {
            if let Some(other) = all.insert(ip, id.clone()) {
                panic!("{ip} handed to {other} and {id}");
            }
        }
    }
    assert_eq!(all.len() as u128, cap, "every address handed out once");
    let txns = store.txns();
    let reads = store.reads();
    let a = Allocator::new(store.clone(), net.clone(), patient(99)).unwrap();
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocated as u128, cap);
    let owners = a.owners().await.unwrap();
    assert_eq!(owners.len() as u128, cap);
    for rec in &owners {
        assert_eq!(all.get(&rec.ips[0]), Some(&rec.container_id));
    }
    // Every successful allocation committed exactly one transaction (none
    // failed transiently here, or the figure is an upper bound); the rest
    // lost their compare-and-swap.
    let conflicts = txns - all.len() as u64;
    eprintln!(
        "64 allocators on one /24 chunk: {} allocations, {txns} transactions, \
         {conflicts} conflicts ({:.2} per allocation), {reads} reads, {transient} transient errors",
        all.len(),
        conflicts as f64 / all.len() as f64
    );
    assert!(txns >= all.len() as u64);
}

// ---------------------------------------------------------------------------
// The checkers themselves catch what they look for
// ---------------------------------------------------------------------------

#[test]
fn log_checker_catches_an_overlapping_grant() {
    let ip = "10.0.0.2";
    let history = History {
        created: [("a", ip), ("b", ip)]
            .into_iter()
            .map(|(o, i)| (o.to_string(), vec![i.parse().unwrap()]))
            .collect(),
        deleted: ["a".to_string()].into_iter().collect(),
        ..History::default()
    };
    let exhausted = |seq| line("x", LogOp::Exhausted, ip, seq, seq);
    let mut lines = vec![
        line("a", LogOp::Alloc, ip, 1, 2),
        line("b", LogOp::Alloc, ip, 3, 4),
        line("a", LogOp::Release, ip, 5, 6),
        exhausted(7),
    ];
    lines.push(LogLine {
        phase: 3,
        ..exhausted(8)
    });
    // b was granted (by 4) before a's release even started (5).
    let err = std::panic::catch_unwind(|| verify_logs(&lines, 1, 1, &history)).unwrap_err();
    assert!(panic_text(err).contains("at the same time"));
    // Granted after the release started: only possibly overlapping, so the
    // log check accepts it (etcd's history decides).
    lines[1] = line("b", LogOp::Alloc, ip, 5, 7);
    lines[2] = line("a", LogOp::Release, ip, 4, 6);
    verify_logs(&lines, 1, 1, &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replay_catches_a_shared_address_and_a_missing_bit() {
    let etcd = EtcdServer::start();
    let net = network("replay", &["10.60.0.0/24"]);
    let a = Allocator::new(connect(&etcd.url()).await, net.clone(), patient(1)).unwrap();
    let got = a.allocate(&req("a")).await.unwrap();
    replay_history(&etcd.url(), &net).await;

    // A second owner record with a's address, written behind the
    // allocator's back.
    let mut rec = a.owner(&owner("a")).await.unwrap().unwrap();
    rec.container_id = "b".into();
    let text = replay_panic_after_planting(&etcd, a.keyspace(), &net, &rec).await;
    assert!(text.contains("granted to b while a holds it"), "{text}");

    // An owner whose bit is not set.
    let etcd = EtcdServer::start();
    rec.container_id = "c".into();
    rec.ips = vec![got.assigned[0].ip];
    let text = replay_panic_after_planting(&etcd, a.keyspace(), &net, &rec).await;
    assert!(text.contains("bit is false"), "{text}");
}

/// Writes `rec` as the owner record of its container's eth0 on `etcd`
/// (behind any allocator's back), replays `net`'s history there and returns
/// the message the replay panicked with.
async fn replay_panic_after_planting(
    etcd: &EtcdServer,
    ks: &Keyspace,
    net: &Network,
    rec: &OwnerRecord,
) -> String {
    let key = ks.owner(&rec.container_id, "eth0").unwrap();
    let mut client = Client::connect([etcd.url()], None).await.unwrap();
    client
        .put(key, serde_json::to_vec(rec).unwrap(), None)
        .await
        .unwrap();
    let (endpoint, n) = (etcd.url(), net.clone());
    let err = tokio::spawn(async move { replay_history(&endpoint, &n).await })
        .await
        .unwrap_err();
    panic_text(err.into_panic())
}

// ---------------------------------------------------------------------------
// Sticky addresses
// ---------------------------------------------------------------------------

/// On real etcd: a DEL binds a pod's addresses in its transaction, the pod's
/// next container on another node gets them back (one conflict when warm),
/// two new containers of the pod racing on one binding never share and
/// exactly one of them consumes it, and expiry and release go through
/// compare-and-swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_addresses_on_etcd() {
    let etcd = EtcdServer::start();
    let clock = host_etcd::allocator::Clock::manual(1_700_000_000);
    let store = CountingStore::new(connect(&etcd.url()).await);
    let net = network("sticky", &["10.7.0.0/16", "2001:db8:7::/64"]);
    let a = Allocator::new(&store, net.clone(), sticky(1, &clock)).unwrap();
    let b = Allocator::new(&store, net.clone(), sticky(2, &clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "web-0")).await.unwrap();
    b.allocate(&pod_req("b1", "other-0")).await.unwrap();
    store.reset();
    a.release(&owner("c1")).await.unwrap().unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm sticky DEL");
    let listed = a.bindings().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].binding.as_ref().unwrap().ips, ips(&first));
    store.reset();
    let second = b.allocate(&pod_req("c2", "web-0")).await.unwrap();
    assert_eq!(ips(&second), ips(&first), "other node, same addresses");
    // Warm on another node: the binding arrives in a conflict answer. This
    // node never saw the bound chunks (its first ADD read nothing): they are
    // read, one per family. (A node that remembered them from before the
    // DEL would compare those stale values instead and pay one more
    // conflict, which brings the current chunks: no read, three txns.)
    assert!(
        matches!((store.reads(), store.txns()), (0..=2, 2) | (0, 3))
            && store.conflicts() == store.txns() - 1,
        "{} txns, {} conflicts",
        store.txns(),
        store.conflicts()
    );
    assert!(a.bindings().await.unwrap().is_empty());

    // Race: two new containers of web-0 on two nodes, one binding.
    b.release(&owner("c2")).await.unwrap().unwrap();
    let (r3, r4) = (pod_req("c3", "web-0"), pod_req("c4", "web-0"));
    let (x, y) = tokio::join!(a.allocate(&r3), b.allocate(&r4));
    let (x, y) = (ips(&x.unwrap()), ips(&y.unwrap()));
    assert!(x.iter().all(|ip| !y.contains(ip)), "{x:?} / {y:?}");
    assert!(
        x == ips(&first) || y == ips(&first),
        "one of them got the bound addresses: {x:?} / {y:?}"
    );
    assert!(a.bindings().await.unwrap().is_empty(), "consumed once");

    // Expiry: ADD ignores an expired binding; expire_bindings deletes it.
    a.release(&owner("c3")).await.unwrap().unwrap();
    b.release(&owner("c4")).await.unwrap().unwrap();
    assert_eq!(a.bindings().await.unwrap().len(), 1, "the last DEL wins");
    clock.advance(299);
    assert!(a.expire_bindings(clock.now()).await.unwrap().is_empty());
    clock.advance(1);
    let gone = a.expire_bindings(clock.now()).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert!(a.bindings().await.unwrap().is_empty());
    // release_binding: a fresh container after it.
    let c5 = a.allocate(&pod_req("c5", "web-0")).await.unwrap();
    a.release(&owner("c5")).await.unwrap().unwrap();
    assert_eq!(a.release_binding("ns", "web-0").await.unwrap().len(), 1);
    let c6 = b.allocate(&pod_req("c6", "web-0")).await.unwrap();
    assert_ne!(ips(&c6), ips(&c5));
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}
