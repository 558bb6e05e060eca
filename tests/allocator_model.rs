//! Model-based property test: random ADD / static ADD / DEL / GC sequences
//! with injected store faults, on the memory store, checked step by step
//! against a plain HashMap/HashSet model. No address is ever given twice;
//! every release frees exactly what was held; exhaustion is reported exactly
//! when the model has no free address.
//!
//! Several nodes (allocators with their own seeds and node caches) share the
//! store; before a step a node's cache may be made stale (an old snapshot),
//! swapped with another node's, or filled with garbage values: the same
//! invariants must hold.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use host_etcd::allocator::{
    AllocError, AllocRequest, Allocator, Network, NodeCache, Options, OwnerId, DEFAULT_PREFIX,
};
use host_etcd::range::{to_u128, Range, RangeSet, RangeSpec};
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

fn network(chunk_bits: u8) -> Network {
    // 10.0.0.0/28: .2 ..= .14, gateway .1; .3 sandbox, .4/.5 smallflow.
    let mut spec = RangeSpec {
        subnet: "10.0.0.0/28".into(),
        ..RangeSpec::default()
    };
    spec.stages
        .insert("sandbox".into(), vec!["10.0.0.3".into()]);
    spec.stages.insert(
        "smallflow".into(),
        vec!["10.0.0.4".into(), "10.0.0.5".into()],
    );
    let v6 = RangeSpec {
        subnet: "fd00::/124".into(),
        ..RangeSpec::default()
    };
    Network {
        name: "model".into(),
        prefix: DEFAULT_PREFIX.into(),
        sets: vec![
            RangeSet::new(vec![Range::parse(&spec).unwrap()]).unwrap(),
            RangeSet::new(vec![Range::parse(&v6).unwrap()]).unwrap(),
        ],
        chunk_bits,
    }
}

fn owner(n: u8) -> OwnerId {
    OwnerId {
        container_id: format!("c{n}"),
        ifname: "eth0".into(),
    }
}

#[derive(Default)]
struct Model {
    held: HashMap<u8, Vec<IpAddr>>,
    stage_of: HashMap<u8, Option<&'static str>>,
}

impl Model {
    fn taken(&self) -> HashSet<IpAddr> {
        self.held.values().flatten().copied().collect()
    }

    /// Free IPv4 addresses a pod of `stage` may get.
    fn free_v4(&self, stage: Option<&str>) -> Vec<IpAddr> {
        let taken = self.taken();
        let pool: Vec<u32> = match stage {
            Some("sandbox") => vec![3],
            Some("smallflow") => vec![4, 5],
            _ => (2..=14).filter(|o| ![3, 4, 5].contains(o)).collect(),
        };
        pool.into_iter()
            .map(|o| IpAddr::from([10, 0, 0, o as u8]))
            .filter(|ip| !taken.contains(ip))
            .collect()
    }
}

fn run(steps: Vec<Step>, chunk_bits: u8) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = MemoryStore::new();
        let nodes: Vec<Allocator<&MemoryStore>> = (0..NODES)
            .map(|i| {
                Allocator::new(
                    &store,
                    network(chunk_bits),
                    Options {
                        node_seed: i as u64 * 7919,
                        ..Options::default()
                    },
                )
                .unwrap()
            })
            .collect();
        let mut snapshots: Vec<NodeCache> = vec![NodeCache::new()];
        let mut m = Model::default();
        for (n, s) in steps.into_iter().enumerate() {
            let a = &nodes[s.node as usize];
            match s.perturb {
                6 => a.set_node_cache(snapshots[n % snapshots.len()].clone()),
                7 => a.set_node_cache(nodes[(s.node as usize + 1) % NODES].node_cache()),
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
            store.inject(s.faults.iter().map(|b| fault(*b)));
            match s.op {
                OpKind::Add { owner: o, stage } => {
                    let stage = stage.map(|i| STAGES[i as usize]);
                    let req = AllocRequest {
                        owner: owner(o),
                        stage: stage.map(str::to_string),
                        ..AllocRequest::default()
                    };
                    let free = m.free_v4(stage);
                    match a.allocate(&req).await {
                        Ok(got) => {
                            let ips: Vec<IpAddr> = got.assigned.iter().map(|x| x.ip).collect();
                            if let Some(prev) = m.held.get(&o) {
                                assert_eq!(&ips, prev, "idempotent ADD");
                            } else {
                                assert!(
                                    free.contains(&ips[0]),
                                    "{} not free for {stage:?}",
                                    ips[0]
                                );
                                assert!(!m.taken().contains(&ips[1]), "v6 reuse");
                                m.held.insert(o, ips);
                                m.stage_of.insert(o, stage);
                            }
                        }
                        Err(
                            AllocError::Exhausted { set: 0, .. }
                            | AllocError::StageExhausted { set: 0, .. },
                        ) => {
                            assert!(!m.held.contains_key(&o));
                            assert!(free.is_empty(), "exhausted but {free:?} free");
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                OpKind::AddStatic { owner: o, offset } => {
                    let ip: IpAddr = IpAddr::from([10, 0, 0, offset]);
                    let req = AllocRequest {
                        owner: owner(o),
                        requested: vec![ip],
                        ..AllocRequest::default()
                    };
                    let ok_in_model = (2..=14).contains(&offset)
                        && ![3, 4, 5].contains(&offset)
                        && !m.taken().contains(&ip);
                    match a.allocate(&req).await {
                        Ok(got) => {
                            if let Some(prev) = m.held.get(&o) {
                                assert_eq!(
                                    &got.assigned.iter().map(|x| x.ip).collect::<Vec<_>>(),
                                    prev
                                );
                            } else {
                                assert!(ok_in_model, "static {ip} granted but model says no");
                                assert_eq!(got.assigned[0].ip, ip);
                                m.held
                                    .insert(o, got.assigned.iter().map(|x| x.ip).collect());
                            }
                        }
                        Err(AllocError::RequestedUnavailable { ip: bad, .. }) => {
                            assert_eq!(bad, ip);
                            assert!(!m.held.contains_key(&o));
                            assert!(!ok_in_model, "static {ip} refused but free");
                        }
                        Err(AllocError::Exhausted { set: 1, .. }) => {
                            unreachable!("v6 /124 never fills")
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                OpKind::Del { owner: o } => {
                    let rel = a.release(&owner(o)).await.unwrap();
                    let had = m.held.remove(&o);
                    // A lost reply may make the allocator see "already gone".
                    if let Some(rec) = rel {
                        assert_eq!(Some(rec.ips), had);
                    }
                }
                OpKind::Gc { keep } => {
                    let valid: Vec<OwnerId> = keep.iter().map(|o| owner(*o)).collect();
                    if let Err(e) = a.gc(&valid).await {
                        // Listing owners is one read, not retried: a transient
                        // failure is reported (CNI 11) and GC run again.
                        assert!(e.is_transient(), "{e}");
                        store.clear_faults();
                        a.gc(&valid).await.unwrap();
                    }
                    m.held.retain(|o, _| keep.contains(o));
                }
            }
            // Invariants after every step.
            store.clear_faults();
            let recs = a.owners().await.unwrap();
            assert_eq!(recs.len(), m.held.len());
            for r in &recs {
                let o: u8 = r.container_id[1..].parse().unwrap();
                assert_eq!(Some(&r.ips), m.held.get(&o));
            }
            let report = a.check().await.unwrap();
            assert!(report.is_clean(), "{report:?}");
            snapshots.push(a.node_cache());
            assert_eq!(report.allocated as usize, 2 * m.held.len());
            let all: Vec<u128> = m.held.values().flatten().map(|ip| to_u128(*ip)).collect();
            let distinct: HashSet<&u128> = all.iter().collect();
            assert_eq!(distinct.len(), all.len(), "an address is held twice");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_model(steps in prop::collection::vec(step(), 1..60), small in any::<bool>()) {
        run(steps, if small { 6 } else { 10 });
    }
}
