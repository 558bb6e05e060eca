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

use host_etcd::allocator::{AllocRequest, Keyspace, OwnerId};
use host_etcd::codec;
use host_etcd::range::Family;
use host_etcd::store::{prefix_end, Op, Read, ReadResult, Store, Txn, TxnOutcome, Versioned};
use serde_json::{json, Value};

use support::faults::{inspect, with_allocator};
use support::ipamctl::{ipamctl, text};
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
fn assert_ipamctl_reports(conf: &Value, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.conf");
    std::fs::write(&path, serde_json::to_vec(conf).unwrap()).unwrap();
    let out = ipamctl(&["--config", path.to_str().unwrap(), "check"]);
    let text = text(&out);
    assert!(!text.contains("panicked"), "ipamctl panicked: {text}");
    assert!(
        !out.status.success(),
        "ipamctl check succeeded on corrupt state: {text}"
    );
    assert!(
        text.contains(key),
        "ipamctl check does not name {key}: {text}"
    );
}

/// `check()` problems as text (the allocator's own view).
fn inspect_problems(conf: &Value) -> String {
    format!("{:?}", inspect(conf).report.problems)
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

// ---------------------------------------------------------------------------
// The corrupt-value scenario and its cases
// ---------------------------------------------------------------------------

/// One corrupt-value case: on a fresh network `name` (one range set,
/// `subnet`, k = 8), ADD `c1`/eth0, overwrite the [`Target`] key with
/// `damage(current bytes)`, run `steps` in order, each with its expected
/// outcome; then the damaged key holds exactly what was written, `ipamctl
/// check` exits non-zero naming it (and the key is still untouched), and
/// with `check_names_key` the allocator's own `check()` names it too.
struct Case {
    name: &'static str,
    subnet: &'static str,
    target: Target,
    damage: fn(&[u8]) -> Vec<u8>,
    steps: &'static [(Step, Want)],
    check_names_key: bool,
}

/// The key a case damages (after the ADD of `c1`).
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The network's one chunk (asserted to be the only one).
    OnlyChunk,
    /// The owner record of `c1`/eth0.
    OwnerOfC1,
    /// The full-set of the IPv4 set 0.
    FullSet,
    /// The meta record (asserted to be written by the ADD).
    Meta,
}

impl Target {
    /// The key and its current bytes (empty when absent).
    fn key(self, conf: &Value, name: &str) -> (String, Vec<u8>) {
        let key = match self {
            Target::OnlyChunk => {
                let (key, good) = only_chunk(conf, name);
                return (key, good.value);
            }
            Target::OwnerOfC1 => format!("{}/owners/c1/eth0", root(name)),
            Target::FullSet => Keyspace::new("/host-etcd", name)
                .unwrap()
                .full(Family::V4, 0),
            Target::Meta => {
                let key = format!("{}/meta", root(name));
                assert!(get(conf, &key).is_some(), "ADD wrote no meta record");
                key
            }
        };
        let bytes = get(conf, &key).map(|v| v.value).unwrap_or_default();
        (key, bytes)
    }
}

/// A plugin call on the damaged network: ADD, DEL or CHECK of a
/// container's eth0 (CHECK with `c1`'s ADD result as `prevResult`).
#[derive(Clone, Copy, Debug)]
enum Step {
    Add(&'static str),
    Del(&'static str),
    Check(&'static str),
}

/// What a [`Step`] must do.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Code 102 ("stored state corrupt") with the damaged key in the
    /// details, no panic; with `Some(text)` the details also contain
    /// `text`.
    Corrupt(Option<&'static str>),
    /// Success: an ADD result, or no output for DEL and CHECK.
    Ok,
    /// An ADD result with `c1`'s addresses.
    SameAsC1,
    /// An ADD result with other addresses than `c1`'s.
    OtherThanC1,
    /// Failure with this code.
    Code(u64),
}

/// Runs one [`Case`].
fn corrupt_value(case: &Case) {
    let etcd = shared_etcd();
    let c = conf(&etcd, case.name, case.subnet);
    let added = Call::add("c1", "eth0").config(&c).run().ok_json();
    let (key, good) = case.target.key(&c, case.name);
    let written = put(&c, &key, &(case.damage)(&good));

    for &(step, want) in case.steps {
        let out = match step {
            Step::Add(id) => Call::add(id, "eth0").config(&c),
            Step::Del(id) => Call::del(id, "eth0").config(&c),
            Step::Check(id) => Call::check(id, "eth0").config(&with_prev(&c, &added)),
        }
        .run();
        let what = format!("{:?} on a damaged {:?}", step, case.target);
        match (want, step) {
            (Want::Corrupt(says), _) => {
                assert_corrupt(&out, &key, &what);
                if let Some(text) = says {
                    let details = out.details();
                    assert!(details.contains(text), "{what}: {details}");
                }
            }
            (Want::Ok, Step::Add(_)) => {
                out.ok_json();
            }
            (Want::Ok, _) => out.ok_empty(),
            (Want::SameAsC1, _) => {
                assert_eq!(addresses(&out.ok_json()), addresses(&added), "{what}")
            }
            (Want::OtherThanC1, _) => {
                assert_ne!(addresses(&out.ok_json()), addresses(&added), "{what}")
            }
            (Want::Code(code), _) => {
                out.err(code);
            }
        }
    }
    assert_untouched(&c, &key, &written);
    assert_ipamctl_reports(&c, &key);
    assert_untouched(&c, &key, &written);
    if case.check_names_key {
        let problems = inspect_problems(&c);
        assert!(problems.contains(&key), "{problems}");
    }
}

/// A damaged chunk of a /24 network holding `c1`: ADD of another container
/// (nothing else free) and DEL of `c1` fail with 102 naming the key; so
/// does CHECK of `c1` (it verifies the recorded addresses are still marked
/// in their chunks); idempotent ADD of `c1` returns its record.
const BAD_CHUNK: &[(Step, Want)] = &[
    (Step::Add("c2"), Want::Corrupt(None)),
    (Step::Del("c1"), Want::Corrupt(None)),
    (Step::Check("c1"), Want::Corrupt(None)),
    (Step::Add("c1"), Want::SameAsC1),
];

/// A chunk with a valid header of the next format version: as
/// [`BAD_CHUNK`], and the message says what is wrong.
const FUTURE_CHUNK: &[(Step, Want)] = &[
    (Step::Add("c2"), Want::Corrupt(None)),
    (Step::Del("c1"), Want::Corrupt(Some("version 2"))),
    (Step::Check("c1"), Want::Corrupt(None)),
    (Step::Add("c1"), Want::SameAsC1),
];

/// A valid chunk as the next format version would write it: version byte
/// bumped, checksum recomputed (bytes 0..20 followed by the payload, stored
/// at 20..24).
fn future_version(good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    assert_eq!(&b[..4], &codec::MAGIC);
    assert_eq!(b[4], codec::FORMAT_VERSION);
    b[4] = codec::FORMAT_VERSION + 1;
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..20]);
    h.update(&b[24..]);
    b[20..24].copy_from_slice(&h.finalize().to_le_bytes());
    b
}

/// The table: one `#[test]` per row, `test_name: Case { .. },`.
macro_rules! corrupt_value_cases {
    ($($(#[$doc:meta])* $test:ident: $case:expr,)*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $test() {
                corrupt_value(&$case);
            }
        )*
    };
}

corrupt_value_cases! {
    chunk_overwritten_with_garbage: Case {
        name: "garbage-chunk",
        subnet: "10.50.1.0/24",
        target: Target::OnlyChunk,
        damage: |_| b"this is not a chunk at all".to_vec(),
        steps: BAD_CHUNK,
        check_names_key: true,
    },
    truncated_chunk: Case {
        name: "truncated-chunk",
        subnet: "10.50.2.0/24",
        target: Target::OnlyChunk,
        damage: |good| good[..good.len() / 2].to_vec(),
        steps: BAD_CHUNK,
        check_names_key: true,
    },
    chunk_of_a_future_format_version: Case {
        name: "future-chunk",
        subnet: "10.50.3.0/24",
        target: Target::OnlyChunk,
        damage: future_version,
        steps: FUTURE_CHUNK,
        check_names_key: true,
    },
    /// ADD (idempotent), DEL and CHECK of `c1` need its record: 102. Other
    /// containers are not affected.
    owner_record_with_bad_json: Case {
        name: "bad-owner",
        subnet: "10.50.4.0/24",
        target: Target::OwnerOfC1,
        damage: |_| b"{\"ips\": [\"10.50.4.".to_vec(),
        steps: &[
            (Step::Add("c1"), Want::Corrupt(None)),
            (Step::Del("c1"), Want::Corrupt(None)),
            (Step::Check("c1"), Want::Corrupt(None)),
            (Step::Add("c2"), Want::OtherThanC1),
            (Step::Del("c2"), Want::Ok),
        ],
        check_names_key: false,
    },
    /// The full-set is a hint: a corrupt one means "no hint" for ADD and
    /// DEL while no chunk turns full or stops being full (then the
    /// transaction would have to change it: 102 naming the key). It is
    /// never overwritten; `ipamctl check` reports it and `--repair` deletes
    /// it. (CHECK of `c1` after its DEL: code 3.)
    full_set_with_garbage: Case {
        name: "bad-fullset",
        subnet: "10.50.5.0/24",
        target: Target::FullSet,
        damage: |_| b"\x00\x01garbage full-set".to_vec(),
        steps: &[
            (Step::Add("c2"), Want::Ok),
            (Step::Del("c1"), Want::Ok),
            (Step::Check("c1"), Want::Code(3)),
        ],
        check_names_key: false,
    },
    /// ADD checks the chunk size against meta: refused. DEL is not stopped
    /// by a meta record that does not decode (chunks carry their own k,
    /// checked on decode): it releases.
    /// (CHECK of `c1` after its DEL: code 3.)
    meta_with_garbage: Case {
        name: "bad-meta",
        subnet: "10.50.6.0/24",
        target: Target::Meta,
        damage: |_| b"not json {".to_vec(),
        steps: &[
            (Step::Add("c2"), Want::Corrupt(None)),
            (Step::Del("c1"), Want::Ok),
            (Step::Check("c1"), Want::Code(3)),
        ],
        check_names_key: false,
    },
}

// ---------------------------------------------------------------------------
// A corrupt chunk among good ones
// ---------------------------------------------------------------------------

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
            let req = AllocRequest::new(OwnerId {
                container_id: format!("fill{n}"),
                ifname: "eth0".into(),
            });
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
