//! Target `stored`: bytes as an owner record and a sticky-address binding
//! read back from the store (anyone with write access to the prefix can
//! put anything there), run through every allocator path that reads them.

use std::net::IpAddr;
use std::time::Duration;

use super::node_cache::node_cache_network;
use crate::allocator::{AllocRequest, Allocator, Binding, Options, OwnerId, OwnerRecord};
use crate::store::memory::MemoryStore;
use crate::store::{Compare, Expect, Op, Store, Txn};

/// Separates the owner record from the binding in the input bytes.
pub const STORED_SEPARATOR: &[u8] = b"\n--binding--\n";

fn owner(id: &str) -> OwnerId {
    OwnerId {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

/// Target `stored`: `bytes` split at [`STORED_SEPARATOR`] into an owner
/// record (stored for container `x`) and a binding (stored for pod
/// `ns/pod`, interface `eth0`), beside one real owner `held`. Decoding
/// never panics, and neither do the paths that read them: owner lookup and
/// listing, DEL of `x` (a record that does not decode is refused, one that
/// does is deleted), the ADD of pod `ns/pod` (which consumes the binding),
/// bindings listing and expiry, `check` and `repair`. The ADD hands out
/// addresses of the network, never one that `held` holds unless the stored
/// record claimed it (a forged record's DEL frees what it lists), and
/// after `repair` the check is clean.
pub fn stored(bytes: &[u8]) {
    let (record, binding) = match find(bytes, STORED_SEPARATOR) {
        Some(at) => (&bytes[..at], &bytes[at + STORED_SEPARATOR.len()..]),
        None => (bytes, &b""[..]),
    };
    let decoded_record = serde_json::from_slice::<OwnerRecord>(record).ok();
    if let Some(rec) = &decoded_record {
        let again: Result<OwnerRecord, _> = serde_json::to_vec(rec)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
        assert_eq!(again.as_ref(), Ok(rec), "owner record does not round-trip");
    }
    if let Ok(b) = serde_json::from_slice::<Binding>(binding) {
        let again: Result<Binding, _> = serde_json::to_vec(&b)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_slice(&v).map_err(|e| e.to_string()));
        assert_eq!(again.as_ref(), Ok(&b), "binding does not round-trip");
    }
    let rt = super::runtime();
    rt.block_on(run(record, binding, decoded_record));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn run(record: &[u8], binding: &[u8], decoded: Option<OwnerRecord>) {
    let net = node_cache_network();
    let store = MemoryStore::new();
    let options = Options {
        sticky_ttl: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let a = Allocator::new(&store, net.clone(), options)
        .unwrap_or_else(|e| panic!("Allocator::new: {e}"));
    let held: Vec<IpAddr> = match a
        .allocate(&AllocRequest {
            owner: owner("held"),
            ..AllocRequest::default()
        })
        .await
    {
        Ok(x) => x.assigned.iter().map(|s| s.ip).collect(),
        Err(e) => panic!("the first ADD failed: {e}"),
    };
    let ks = a.keyspace().clone();
    let record_key = ks
        .owner("x", "eth0")
        .unwrap_or_else(|e| panic!("owner key: {e}"));
    let binding_key = ks
        .sticky("ns", "pod", "eth0")
        .unwrap_or_else(|e| panic!("binding key: {e}"));
    let put = |key: String, value: &[u8]| Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect: Expect::Absent,
        }],
        ops: vec![Op::Put(key, value.to_vec())],
        read_on_conflict: vec![],
    };
    for txn in [put(record_key, record), put(binding_key, binding)] {
        if let Err(e) = store.txn(txn).await {
            panic!("planting a stored value: {e}");
        }
    }

    // Reads: never panic, whatever they answer.
    let _ = a.owner(&owner("x")).await;
    let _ = a.owners().await;
    let _ = a.bindings().await;
    let _ = a.holder_of(held[0]).await;
    let _ = a.check().await;

    let released = a.release(&owner("x")).await;
    match (&decoded, &released) {
        (Some(rec), Ok(Some(got))) => assert_eq!(got, rec, "DEL answered another record"),
        (Some(_), other) => panic!("DEL of a decodable record: {other:?}"),
        (None, Ok(_)) => panic!("DEL of an undecodable record succeeded"),
        (None, Err(_)) => {}
    }
    let freed_by_forgery: Vec<IpAddr> = decoded.map(|r| r.ips).unwrap_or_default();

    let add = a
        .allocate(&AllocRequest {
            owner: owner("y"),
            pod_namespace: Some("ns".into()),
            pod_name: Some("pod".into()),
            ..AllocRequest::default()
        })
        .await;
    if let Ok(got) = &add {
        assert_eq!(got.assigned.len(), net.sets.len(), "one address per set");
        for (s, set) in got.assigned.iter().zip(&net.sets) {
            assert!(
                set.find(s.ip).is_some_and(|(_, r)| r.is_allocatable(s.ip)),
                "{} is not an address of its set",
                s.ip
            );
            assert!(
                !held.contains(&s.ip) || freed_by_forgery.contains(&s.ip),
                "{} handed out twice",
                s.ip
            );
        }
    }
    let _ = a.expire_bindings(u64::MAX).await;
    let _ = a.bindings().await;
    match a.repair().await {
        Ok(_) => {}
        Err(e) => panic!("repair: {e}"),
    }
    match a.check().await {
        Ok(report) => assert!(
            report.problems.iter().all(|p| matches!(
                p,
                crate::allocator::Problem::SharedAddress { .. }
                    | crate::allocator::Problem::CorruptOwner { .. }
            )),
            "after repair: {report:?}"
        ),
        Err(e) => panic!("check: {e}"),
    }
}
