//! Bad stored data on real etcd: a chunk overwritten with garbage, a
//! truncated chunk, a chunk of a future format version (a valid header
//! with version 2), an owner record that is not JSON, a garbage full-set,
//! a garbage meta record — each written through the [`Store`] trait.
//!
//! For each: the plugin's ADD/DEL/CHECK either work (when they do not need
//! the damaged key) or fail with code 102 ("stored state corrupt") and
//! details naming the key; never a panic; the damaged bytes are left
//! exactly as they were (no silent overwrite or reset); `ipamctl check`
//! exits non-zero and names the key.
//!
//! Dynamic allocation skips a corrupt chunk while another chunk has room
//! and reports the corruption only when nothing else is free
//! ([`corrupt_chunk_is_skipped_until_nothing_else_is_free`]).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use host_etcd::allocator::{AllocRequest, Keyspace, OwnerId};
use host_etcd::codec;
use host_etcd::range::Family;
use host_etcd::store::{prefix_end, Op, Read, ReadResult, Store, Txn, TxnOutcome, Versioned};
use serde_json::{json, Value};

use support::faults::{inspect, with_allocator};
use support::plugin::{addresses, bare_ip, shared_etcd, Call, Outcome};
use support::EtcdServer;

fn conf(etcd: &EtcdServer, name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "ranges": [[{"subnet": subnet}]],
            "chunkBits": 8
        }
    })
}

fn root(name: &str) -> String {
    format!("/host-etcd/{name}")
}

/// Every key and value under `prefix`, through the Store trait.
fn scan(conf: &Value, prefix: &str) -> Vec<(String, Versioned)> {
    let prefix = prefix.to_string();
    with_allocator(conf, async move |a| {
        let r = a
            .store()
            .read(&[Read::Range {
                start: prefix.clone(),
                end: prefix_end(&prefix),
                limit: 0,
            }])
            .await
            .unwrap();
        match r.into_iter().next() {
            Some(ReadResult::Range { kvs, .. }) => kvs,
            other => panic!("range read: {other:?}"),
        }
    })
}

fn get(conf: &Value, key: &str) -> Option<Versioned> {
    let key = key.to_string();
    with_allocator(conf, async move |a| {
        match a.store().read(&[Read::Get(key)]).await.unwrap().pop() {
            Some(ReadResult::Get(v)) => v,
            other => panic!("get: {other:?}"),
        }
    })
}

/// Overwrites `key` with `bytes` (unconditionally: this is the fault).
fn put(conf: &Value, key: &str, bytes: &[u8]) -> Versioned {
    let (k, b) = (key.to_string(), bytes.to_vec());
    let out = with_allocator(conf, async move |a| {
        a.store()
            .txn(Txn {
                compares: vec![],
                ops: vec![Op::Put(k, b)],
                read_on_conflict: vec![],
            })
            .await
            .unwrap()
    });
    assert!(matches!(out, TxnOutcome::Committed { .. }), "{out:?}");
    get(conf, key).unwrap()
}

/// The one chunk key of a network (after an ADD).
fn only_chunk(conf: &Value, name: &str) -> (String, Versioned) {
    let mut chunks = scan(conf, &format!("{}/chunks/", root(name)));
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    chunks.pop().unwrap()
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

/// Asserts code 102 with `key` in the details, no panic.
fn assert_corrupt(out: &Outcome, key: &str, what: &str) {
    let e = out.err(102);
    let details = e["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(key),
        "{what}: details do not name {key}: {e}"
    );
    assert_eq!(e["msg"], "stored state corrupt", "{what}: {e}");
}

/// `ipamctl check` on the network: non-zero exit, the key named.
fn assert_ipamctl_reports(conf: &Value, key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.conf");
    std::fs::write(&path, serde_json::to_vec(conf).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "ipamctl panicked: {text}");
    assert!(
        !out.status.success(),
        "ipamctl check succeeded on corrupt state: {text}"
    );
    assert!(
        text.contains(key),
        "ipamctl check does not name {key}: {text}"
    );
    text
}

/// Asserts the damaged key still holds exactly what the test wrote.
fn assert_untouched(conf: &Value, key: &str, written: &Versioned) {
    let now = get(conf, key).unwrap_or_else(|| panic!("{key} was deleted"));
    assert_eq!(now.value, written.value, "{key} was overwritten");
    assert_eq!(
        now.mod_revision, written.mod_revision,
        "{key} was rewritten"
    );
}

/// A chunk with the given bytes replacing the one chunk of a /24 network
/// holding `c1`: ADD of another container (nothing else free) and DEL of
/// `c1` fail with 102 naming the key; so does CHECK of `c1` (it verifies the
/// recorded addresses are still marked in their chunks); idempotent ADD of
/// `c1` returns its record.
fn bad_chunk_case(etcd: &EtcdServer, name: &str, subnet: &str, damage: impl Fn(&[u8]) -> Vec<u8>) {
    let c = conf(etcd, name, subnet);
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let (key, good) = only_chunk(&c, name);
    let written = put(&c, &key, &damage(&good.value));

    assert_corrupt(&Call::add("c2", "eth0").config(&c).run(), &key, "ADD");
    assert_corrupt(&Call::del("c1", "eth0").config(&c).run(), &key, "DEL");
    assert_corrupt(
        &Call::check("c1", "eth0")
            .config(&with_prev(&c, &added))
            .run(),
        &key,
        "CHECK",
    );
    let again = Call::add("c1", "eth0").config(&c).run().ok_json();
    assert_eq!(addresses(&again), addresses(&added));
    assert_untouched(&c, &key, &written);
    assert_ipamctl_reports(&c, &key);
    assert_untouched(&c, &key, &written);
    let problems = inspect_problems(&c);
    assert!(problems.contains(&key), "{problems}");
}

/// `check()` problems as text (the allocator's own view).
fn inspect_problems(conf: &Value) -> String {
    format!("{:?}", inspect(conf).report.problems)
}

#[test]
fn chunk_overwritten_with_garbage() {
    bad_chunk_case(&shared_etcd(), "garbage-chunk", "10.50.1.0/24", |_| {
        b"this is not a chunk at all".to_vec()
    });
}

#[test]
fn truncated_chunk() {
    bad_chunk_case(&shared_etcd(), "truncated-chunk", "10.50.2.0/24", |good| {
        good[..good.len() / 2].to_vec()
    });
}

#[test]
fn chunk_of_a_future_format_version() {
    let etcd = shared_etcd();
    bad_chunk_case(&etcd, "future-chunk", "10.50.3.0/24", |good| {
        let mut b = good.to_vec();
        assert_eq!(&b[..4], &codec::MAGIC);
        assert_eq!(b[4], codec::FORMAT_VERSION);
        b[4] = codec::FORMAT_VERSION + 1;
        // A valid header otherwise: recompute the checksum (bytes 0..20
        // followed by the payload, stored at 20..24).
        let mut h = crc32fast::Hasher::new();
        h.update(&b[..20]);
        h.update(&b[24..]);
        b[20..24].copy_from_slice(&h.finalize().to_le_bytes());
        b
    });
    // And the message says what is wrong.
    let c = conf(&etcd, "future-chunk", "10.50.3.0/24");
    let e = Call::del("c1", "eth0").config(&c).run().details();
    assert!(e.contains("version 2"), "{e}");
}

#[test]
fn owner_record_with_bad_json() {
    let name = "bad-owner";
    let etcd = shared_etcd();
    let c = conf(&etcd, name, "10.50.4.0/24");
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let key = format!("{}/owners/c1/eth0", root(name));
    let written = put(&c, &key, b"{\"ips\": [\"10.50.4.");

    assert_corrupt(&Call::add("c1", "eth0").config(&c).run(), &key, "ADD");
    assert_corrupt(&Call::del("c1", "eth0").config(&c).run(), &key, "DEL");
    assert_corrupt(
        &Call::check("c1", "eth0")
            .config(&with_prev(&c, &added))
            .run(),
        &key,
        "CHECK",
    );
    // Other containers are not affected.
    let other = Call::add("c2", "eth0").config(&c).run().ok_json();
    assert_ne!(addresses(&other), addresses(&added));
    Call::del("c2", "eth0").config(&c).run().ok_empty();
    assert_untouched(&c, &key, &written);
    assert_ipamctl_reports(&c, &key);
    assert_untouched(&c, &key, &written);
}

#[test]
fn full_set_with_garbage() {
    let name = "bad-fullset";
    let etcd = shared_etcd();
    let c = conf(&etcd, name, "10.50.5.0/24");
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let key = Keyspace::new("/host-etcd", name)
        .unwrap()
        .full(Family::V4, 0);
    let written = put(&c, &key, b"\x00\x01garbage full-set");

    let add = Call::add("c2", "eth0").config(&c).run();
    let del = Call::del("c1", "eth0").config(&c).run();
    let check = Call::check("c1", "eth0")
        .config(&with_prev(&c, &added))
        .run();
    // The full-set is a hint: a corrupt one means "no hint" for ADD and
    // DEL while no chunk turns full or stops being full (then the
    // transaction would have to change it: 102 naming the key). It is never
    // overwritten; `ipamctl check` reports it and `--repair` deletes it.
    add.ok_json();
    del.ok_empty();
    check.err(3);
    assert_untouched(&c, &key, &written);
    assert_ipamctl_reports(&c, &key);
    assert_untouched(&c, &key, &written);
}

#[test]
fn meta_with_garbage() {
    let name = "bad-meta";
    let etcd = shared_etcd();
    let c = conf(&etcd, name, "10.50.6.0/24");
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let key = format!("{}/meta", root(name));
    assert!(get(&c, &key).is_some(), "ADD wrote no meta record");
    let written = put(&c, &key, b"not json {");

    let add = Call::add("c2", "eth0").config(&c).run();
    let del = Call::del("c1", "eth0").config(&c).run();
    let check = Call::check("c1", "eth0")
        .config(&with_prev(&c, &added))
        .run();
    // ADD checks the chunk size against meta: refused. DEL does not read
    // meta (chunks carry their own k, checked on decode): it releases.
    assert_corrupt(&add, &key, "ADD");
    del.ok_empty();
    check.err(3);
    assert_untouched(&c, &key, &written);
    assert_ipamctl_reports(&c, &key);
    assert_untouched(&c, &key, &written);
}

#[test]
fn corrupt_chunk_is_skipped_until_nothing_else_is_free() {
    let name = "skip-corrupt";
    let etcd = shared_etcd();
    // A /23 with k = 8: two chunks, 10.50.8.0/24 and 10.50.9.0/24.
    let c = conf(&etcd, name, "10.50.8.0/23");
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let first = bare_ip(&addresses(&added)[0]);
    let (key, good) = only_chunk(&c, name);
    let written = put(&c, &key, &good.value[..10]);
    eprintln!("c1 got {first}, its chunk {key} truncated");

    // Dynamic allocation goes to the other chunk until it is full.
    let nets = ["10.50.8.0/24", "10.50.9.0/24"].map(|s| s.parse::<ipnet::IpNet>().unwrap());
    let bad_half = nets.iter().position(|n| n.contains(&first)).unwrap();
    let good_half = nets[1 - bad_half];
    let next = Call::add("c2", "eth0").config(&c).run().ok_json();
    let ip = bare_ip(&addresses(&next)[0]);
    assert!(good_half.contains(&ip), "{ip} not in {good_half}");
    // Fill the rest of the good chunk through the library.
    let filled = with_allocator(&c, async |a| {
        let mut n = 0;
        loop {
            let req = AllocRequest {
                owner: OwnerId {
                    container_id: format!("fill{n}"),
                    ifname: "eth0".into(),
                },
                ..AllocRequest::default()
            };
            match a.allocate(&req).await {
                Ok(got) => {
                    assert!(good_half.contains(&got.assigned[0].ip), "{got:?}");
                    n += 1;
                }
                Err(e) => return (n, e.to_string()),
            }
        }
    });
    eprintln!("filled {} more, then: {}", filled.0, filled.1);
    assert!(filled.1.contains(&key), "{}", filled.1);
    // Nothing else free: the corruption is reported, naming the key.
    assert_corrupt(&Call::add("c3", "eth0").config(&c).run(), &key, "ADD");
    // A requested address in the corrupt chunk: 102 too, never handed out.
    let want = match first {
        std::net::IpAddr::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4) + 1),
        _ => unreachable!(),
    };
    assert_corrupt(
        &Call::add("c4", "eth0")
            .args(&format!("IP={want}"))
            .config(&c)
            .run(),
        &key,
        "ADD IP=",
    );
    assert_untouched(&c, &key, &written);
    // Sanity: the chunk is really not decodable.
    assert!(codec::decode(&written.value).is_err());
}
