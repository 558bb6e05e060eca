//! Model-based property test: random ADD / static ADD / DEL / GC sequences
//! with injected store faults, on the memory store, checked step by step
//! against the allocator model the `allocator` fuzz target also uses
//! (`host_etcd::fuzzing::model`, built with the `fuzz` feature the
//! dev-dependency enables). No address is ever given twice; every release
//! frees exactly what was held; exhaustion is reported exactly when the
//! model has no free address.
//!
//! Several nodes (allocators with their own seeds and node caches) share the
//! store; before a step a node's cache may be made stale (an old snapshot),
//! swapped with another node's, or filled with garbage values: the same
//! invariants must hold.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use host_etcd::allocator::{Allocator, Network, NodeCache, Options};
use host_etcd::fuzzing::{
    self,
    model::{Model, Op},
};
use host_etcd::store::memory::{Fault, MemoryStore};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum OpKind {
    Add { owner: u8, stage: Option<u8> },
    AddStatic { owner: u8, offset: u8 },
    Del { owner: u8 },
    Gc { keep: Vec<u8> },
}

#[derive(Clone, Debug)]
struct Step {
    op: OpKind,
    faults: Vec<u8>,
    /// Which node runs the step.
    node: u8,
    /// What happens to that node's cache first: 0..=5 nothing, 6 an old
    /// snapshot, 7 another node's cache, 8 garbage values, 9 emptied.
    perturb: u8,
}

const NODES: usize = 3;

fn op() -> impl Strategy<Value = OpKind> {
    prop_oneof![
        4 => (0u8..24, prop::option::of(0u8..3)).prop_map(|(owner, stage)| OpKind::Add { owner, stage }),
        1 => (0u8..24, 0u8..20).prop_map(|(owner, offset)| OpKind::AddStatic { owner, offset }),
        3 => (0u8..24).prop_map(|owner| OpKind::Del { owner }),
        1 => prop::collection::vec(0u8..24, 0..8).prop_map(|keep| OpKind::Gc { keep }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        op(),
        prop::collection::vec(0u8..4, 0..3),
        0u8..NODES as u8,
        0u8..10,
    )
        .prop_map(|(op, faults, node, perturb)| Step {
            op,
            faults,
            node,
            perturb,
        })
}

fn fault(b: u8) -> Fault {
    match b {
        0 => Fault::FailAfterCommit,
        1 => Fault::SpuriousConflict,
        2 => Fault::FailBeforeCommit,
        _ => Fault::FailRead,
    }
}

const STAGES: [&str; 3] = ["sandbox", "smallflow", "other"];

/// The network: shape 0 of the fuzz model, 10.0.0.0/28 (.2 ..= .14, gateway
/// .1; .3 sandbox, .4/.5 smallflow) and fd00::/124; see
/// `shape_zero_is_the_documented_network` for its pools.
fn network(chunk_bits: u8) -> Network {
    fuzzing::shape_network(0, chunk_bits).unwrap()
}

/// The model operation of `op`.
fn decode(op: OpKind) -> Op {
    match op {
        OpKind::Add { owner, stage } => Op::Alloc {
            owner,
            stage: stage.map(|i| STAGES[i as usize]),
            ip: None,
        },
        OpKind::AddStatic { owner, offset } => Op::Alloc {
            owner,
            stage: None,
            ip: Some(IpAddr::from([10, 0, 0, offset])),
        },
        OpKind::Del { owner } => Op::Release { owner },
        OpKind::Gc { keep } => Op::Gc { keep },
    }
}

/// What happens to `a`'s node cache before a step (see [`Step::perturb`]).
fn perturb(
    a: &Allocator<&MemoryStore>,
    how: u8,
    n: usize,
    snapshots: &[NodeCache],
    other: &Allocator<&MemoryStore>,
) {
    match how {
        6 => a.set_node_cache(snapshots[n % snapshots.len()].clone()),
        7 => a.set_node_cache(other.node_cache()),
        8 => {
            let mut c = a.node_cache();
            let keys: Vec<String> = c.entries().map(|(k, _)| k.to_string()).collect();
            for (i, k) in keys.iter().enumerate() {
                let junk = vec![i as u8; i % 5];
                c.remember(a.keyspace(), k, Some(&junk));
            }
            a.set_node_cache(c);
        }
        9 => a.set_node_cache(NodeCache::new()),
        _ => {}
    }
}

/// Runs `steps` on [`NODES`] allocators sharing one memory store, each step
/// checked by the fuzz model (`host_etcd::fuzzing::model`): the outcome of
/// the operation, then the store's invariants read through the node that
/// ran it.
fn run(steps: Vec<Step>, chunk_bits: u8) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = MemoryStore::new();
        let net = network(chunk_bits);
        let nodes: Vec<Allocator<&MemoryStore>> = (0..NODES)
            .map(|i| {
                Allocator::new(
                    &store,
                    net.clone(),
                    Options::default().with_node_seed(i as u64 * 7919),
                )
                .unwrap()
            })
            .collect();
        let mut snapshots: Vec<NodeCache> = vec![NodeCache::new()];
        let mut m = Model::new(&net);
        for (n, s) in steps.into_iter().enumerate() {
            let node = s.node as usize;
            let a = &nodes[node];
            perturb(a, s.perturb, n, &snapshots, &nodes[(node + 1) % NODES]);
            store.inject(s.faults.iter().map(|b| fault(*b)));
            m.apply(a, &decode(s.op)).await;
            // Invariants after every step.
            m.check(a).await;
            snapshots.push(a.node_cache());
            assert_eq!(
                m.held().values().map(Vec::len).sum::<usize>(),
                2 * m.held().len()
            );
        }
    });
}

/// The model's pools on the empty network are the ones this test was
/// written against: dynamic IPv4 pods get .2 and .6 ..= .14, sandbox pods
/// .3, smallflow pods .4 and .5; a static request succeeds exactly for an
/// unreserved address in .2 ..= .14; IPv6 has fd00::2 ..= fd00::f.
#[test]
fn shape_zero_is_the_documented_network() {
    let net = network(6);
    let m = Model::new(&net);
    let v4 = |o: &[u8]| -> Vec<IpAddr> { o.iter().map(|o| IpAddr::from([10, 0, 0, *o])).collect() };
    let regular: Vec<u8> = (2..=14).filter(|o| ![3, 4, 5].contains(o)).collect();
    assert_eq!(m.pool(0, None), v4(&regular));
    assert_eq!(m.pool(0, Some("other")), v4(&regular));
    assert_eq!(m.pool(0, Some("sandbox")), v4(&[3]));
    assert_eq!(m.pool(0, Some("smallflow")), v4(&[4, 5]));
    for offset in 0u8..20 {
        let ip = IpAddr::from([10, 0, 0, offset]);
        let want = (2..=14).contains(&offset) && ![3, 4, 5].contains(&offset);
        let got = net
            .sets
            .iter()
            .enumerate()
            .any(|(i, _)| m.static_ok(i, ip, None));
        assert_eq!(got, want, "static {ip}");
    }
    let v6: Vec<IpAddr> = (2u16..=15)
        .map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
        .collect();
    assert_eq!(m.pool(1, None), v6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_model(steps in prop::collection::vec(step(), 1..60), small in any::<bool>()) {
        run(steps, if small { 6 } else { 10 });
    }
}
