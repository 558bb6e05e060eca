//! Target `node_cache`: bytes as the plugin's node cache file
//! (`NodeCache::decode`), and the allocator run from whatever decodes.

use std::net::IpAddr;

use crate::allocator::Network;
use crate::allocator::{AllocRequest, Allocator, NodeCache, OwnerId};
use crate::range::RangeSet;
use crate::store::memory::MemoryStore;

/// The store name the fuzzed files are decoded for (a file naming another
/// store is ignored, as the plugin ignores it).
pub const NODE_CACHE_STORE: &str = "fuzz-store";

/// The network the node cache body runs on: `/host-etcd/fuzz`, k = 6,
/// `10.9.0.0/26` and `fd00:9::/122`.
pub fn node_cache_network() -> Network {
    let sets = ["10.9.0.0/26", "fd00:9::/122"]
        .iter()
        .map(|c| RangeSet::from_cidr(c).unwrap_or_else(|e| panic!("{c}: {e}")))
        .collect();
    match Network::new("fuzz", sets).and_then(|n| n.with_chunk_bits(6)) {
        Ok(n) => n,
        Err(e) => panic!("network: {e}"),
    }
}

fn owner(id: &str) -> OwnerId {
    OwnerId {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

fn request(id: &str) -> AllocRequest {
    AllocRequest {
        owner: owner(id),
        ..AllocRequest::default()
    }
}

/// Target `node_cache`: decoding never panics; a decoded cache encodes to a
/// form that decodes and re-encodes to the same bytes (one round makes it
/// canonical); and an allocator warmed with it stays correct, since the
/// cache is only a hint compared by value: with one address already held by
/// another owner, an ADD gets addresses of the network that owner does not
/// hold, the DELs release exactly what was held, and `check` is clean.
pub fn node_cache(bytes: &[u8]) {
    let net = node_cache_network();
    let ks = match crate::allocator::Keyspace::new(&net.prefix, &net.name) {
        Ok(ks) => ks,
        Err(e) => panic!("keyspace: {e}"),
    };
    let k = net.chunk_bits;
    let Some(cache) = NodeCache::decode(bytes, NODE_CACHE_STORE, &ks, k) else {
        return;
    };
    let once = cache.encode(NODE_CACHE_STORE, &ks, k);
    if let Some(once) = &once {
        let back = NodeCache::decode(once, NODE_CACHE_STORE, &ks, k)
            .unwrap_or_else(|| panic!("an encoded cache does not decode"));
        assert_eq!(
            back.encode(NODE_CACHE_STORE, &ks, k).as_ref(),
            Some(once),
            "the encoded form is not canonical"
        );
    }
    let rt = super::runtime();
    rt.block_on(run_warm(net, cache));
}

async fn run_warm(net: Network, cache: NodeCache) {
    let store = MemoryStore::new();
    let cold = Allocator::new(&store, net.clone(), Default::default())
        .unwrap_or_else(|e| panic!("Allocator::new: {e}"));
    let held: Vec<IpAddr> = match cold.allocate(&request("held")).await {
        Ok(a) => a.assigned.iter().map(|x| x.ip).collect(),
        Err(e) => panic!("the first ADD failed: {e}"),
    };
    let warm = Allocator::new(&store, net.clone(), Default::default())
        .unwrap_or_else(|e| panic!("Allocator::new: {e}"));
    warm.set_node_cache(cache);
    let got: Vec<IpAddr> = match warm.allocate(&request("new")).await {
        Ok(a) => a.assigned.iter().map(|x| x.ip).collect(),
        Err(e) => panic!("ADD with a fuzzed cache failed: {e}"),
    };
    assert_eq!(got.len(), net.sets.len(), "one address per set");
    for (ip, set) in got.iter().zip(&net.sets) {
        assert!(!held.contains(ip), "{ip} handed out twice");
        assert!(
            set.find(*ip).is_some_and(|(_, r)| r.is_allocatable(*ip)),
            "{ip} is not an address of its set"
        );
    }
    for (id, ips) in [("new", &got), ("held", &held)] {
        match warm.release(&owner(id)).await {
            Ok(Some(rec)) => assert_eq!(&rec.ips, ips, "{id} released other addresses"),
            other => panic!("DEL of {id} with a fuzzed cache: {other:?}"),
        }
    }
    match warm.check().await {
        Ok(report) => assert!(report.is_clean() && report.allocated == 0, "{report:?}"),
        Err(e) => panic!("check: {e}"),
    }
}
