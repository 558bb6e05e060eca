//! The embedded `dataDir` store: its revision numbering (the store contract
//! itself runs on it in `tests/store_contract.rs`), persistence, refusal of
//! foreign files, the directory lock, and multi-process and crash safety
//! (the test binary re-executes itself as child processes).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use host_etcd::store::local::{LocalOptions, LocalStore};
use host_etcd::store::{
    Compare, Expect, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned,
};

/// Env var that turns a re-executed test binary into a child worker; its
/// value is the data directory.
const CHILD_DIR_ENV: &str = "HOST_ETCD_LOCAL_TEST_CHILD_DIR";
/// Env var naming the child's id (used in its item keys).
const CHILD_ID_ENV: &str = "HOST_ETCD_LOCAL_TEST_CHILD_ID";
/// Printed by a crash-test child after its first commit.
const COMMITTED_LINE: &str = "host-etcd-child: committed";

const COUNTER: &str = "/counter";
const ITEMS: &str = "/items/";
const ITEMS_END: &str = "/items0";

const WAIT: Duration = Duration::from_secs(60);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn open(dir: &Path) -> LocalStore {
    LocalStore::open(dir, WAIT).unwrap()
}

fn put(k: &str, v: &[u8]) -> Op {
    Op::Put(k.to_string(), v.to_vec())
}

fn ops(ops: Vec<Op>) -> Txn {
    Txn {
        ops,
        ..Txn::default()
    }
}

fn commit(store: &LocalStore, txn: Txn) -> i64 {
    match block_on(store.txn(txn)).unwrap() {
        TxnOutcome::Committed { revision } => revision,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn get(store: &LocalStore, key: &str) -> Option<Versioned> {
    match block_on(store.read(&[Read::Get(key.to_string())]))
        .unwrap()
        .pop()
    {
        Some(ReadResult::Get(v)) => v,
        other => panic!("expected a get result, got {other:?}"),
    }
}

fn range(store: &LocalStore, start: &str, end: &str, limit: usize) -> (Vec<String>, bool) {
    let read = Read::Range {
        start: start.to_string(),
        end: end.to_string(),
        limit,
    };
    match block_on(store.read(&[read])).unwrap().pop() {
        Some(ReadResult::Range { kvs, more }) => (kvs.into_iter().map(|(k, _)| k).collect(), more),
        other => panic!("expected a range result, got {other:?}"),
    }
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("store.redb")
}

// ---------------------------------------------------------------- contract

// The store contract itself runs on this store in
// `tests/store_contract.rs` (`local_store_keeps_the_contract`); here only
// what the contract leaves open and the embedded store fixes.

/// Revisions start at 0 and count transactions one by one (a delete too;
/// a transaction without ops commits at the current revision),
/// `revision()` reads the current one, and the database is `store.redb`
/// in the data directory.
#[test]
fn revisions_follow_puts_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert_eq!(store.revision().unwrap(), 0);
    assert_eq!(store.path(), db_file(tmp.path()));

    assert_eq!(commit(&store, ops(vec![put("/a", b"1")])), 1);
    assert_eq!(
        commit(&store, ops(vec![put("/a", b"2"), put("/b", b"")])),
        2
    );
    assert_eq!(commit(&store, ops(vec![Op::Delete("/a".into())])), 3);
    assert_eq!(commit(&store, ops(vec![put("/a", b"3")])), 4);

    // A transaction without ops commits at the current revision.
    assert_eq!(commit(&store, Txn::default()), 4);
    assert_eq!(store.revision().unwrap(), 4);
}

/// A transaction whose compares fail, and one with compares but no ops,
/// leave the revision where it was: the next commit takes the next number.
#[test]
fn conflicts_and_compare_only_checks_keep_the_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    commit(&store, ops(vec![put("/a", b"a1")]));

    let cmp = |key: &str, expect| Compare {
        key: key.to_string(),
        expect,
    };
    for failing in [
        cmp("/a", Expect::Absent),
        cmp("/a", Expect::ModRevision(2)),
        cmp("/missing", Expect::ModRevision(1)),
    ] {
        let txn = Txn {
            compares: vec![cmp("/b", Expect::Absent), failing.clone()],
            ops: vec![put("/b", b"b"), put("/a", b"a2")],
            read_on_conflict: vec!["/missing".into(), "/a".into()],
        };
        let outcome = block_on(store.txn(txn)).unwrap();
        assert!(
            matches!(outcome, TxnOutcome::Conflict { .. }),
            "{failing:?}: expected a conflict, got {outcome:?}"
        );
        assert_eq!(
            store.revision().unwrap(),
            1,
            "{failing:?}: no revision bump"
        );
    }

    let txn = Txn {
        compares: vec![cmp("/a", Expect::ModRevision(1)), cmp("/b", Expect::Absent)],
        ops: vec![put("/b", b"b"), put("/a", b"a2")],
        read_on_conflict: vec!["/a".into()],
    };
    assert_eq!(commit(&store, txn), 2);

    // Compares without ops: a consistent check that writes nothing.
    let check = Txn {
        compares: vec![cmp("/a", Expect::ModRevision(2))],
        ..Txn::default()
    };
    assert_eq!(commit(&store, check), 2);
}

// ------------------------------------------------------------- persistence

#[test]
fn data_and_revision_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        commit(&store, ops(vec![put("/a", b"1")]));
        commit(&store, ops(vec![put("/a", b"2"), put("/b", b"b")]));
    }
    let store = open(tmp.path());
    assert_eq!(store.revision().unwrap(), 2);
    let a = get(&store, "/a").unwrap();
    assert_eq!(
        (a.value.as_slice(), a.mod_revision, a.create_revision),
        (&b"2"[..], 2, 1)
    );
    assert_eq!(commit(&store, ops(vec![put("/c", b"c")])), 3);
    drop(store);
    // Reopening without the integrity check sees the same data.
    let options = LocalOptions::new(WAIT).with_verify_on_open(false);
    let store = LocalStore::open_with(tmp.path(), &options).unwrap();
    assert_eq!(range(&store, "/", "0", 0).0, ["/a", "/b", "/c"]);
}

// ---------------------------------------------------------- foreign files

fn assert_corrupt(result: Result<LocalStore, StoreError>, path: &Path, what: &str) -> String {
    match result {
        Err(StoreError::CorruptDatabase { path: p, detail }) => {
            assert_eq!(p, path, "{what}");
            detail
        }
        Err(other) => panic!("{what}: expected CorruptDatabase, got {other:?}"),
        Ok(store) => panic!("{what}: expected CorruptDatabase, opened {store:?}"),
    }
}

/// Opens `dir` with or without the full integrity check, expects
/// `CorruptDatabase` naming its database file, and that the file still
/// holds `before`; returns the detail.
fn refused_untouched(dir: &Path, verify_on_open: bool, before: &[u8], what: &str) -> String {
    let file = db_file(dir);
    let options = LocalOptions::new(WAIT).with_verify_on_open(verify_on_open);
    let detail = assert_corrupt(LocalStore::open_with(dir, &options), &file, what);
    assert!(
        std::fs::read(&file).unwrap() == before,
        "{what}: file changed (verify_on_open {verify_on_open})"
    );
    detail
}

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let mut random = vec![0u8; 64 * 1024];
    fastrand::Rng::with_seed(7).fill(&mut random);
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", random),
        ("empty file", Vec::new()),
        ("text file", b"this is not a database\n".repeat(100)),
        ("short file", b"redb".to_vec()),
    ];
    for (what, bytes) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let file = db_file(tmp.path());
        std::fs::write(&file, &bytes).unwrap();
        for verify_on_open in [true, false] {
            refused_untouched(tmp.path(), verify_on_open, &bytes, what);
        }
    }
}

fn plant_redb(file: &Path, meta: &[(&str, &[u8])], with_kv: bool) {
    let db = redb::Database::create(file).unwrap();
    let wtx = db.begin_write().unwrap();
    {
        let other: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
        wtx.open_table(other).unwrap().insert(1, 2).unwrap();
        if !meta.is_empty() {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut table = wtx.open_table(def).unwrap();
            for (k, v) in meta {
                table.insert(*k, *v).unwrap();
            }
        }
        if with_kv {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
            wtx.open_table(def).unwrap();
        }
    }
    wtx.commit().unwrap();
}

#[test]
fn redb_databases_without_our_marker_are_refused() {
    let rev0 = 0i64.to_le_bytes();
    let v1 = 1u32.to_le_bytes();
    let v3 = 3u32.to_le_bytes();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: [Case; 4] = [
        ("no meta table", vec![], "marker"),
        (
            "other magic",
            vec![
                ("magic", b"someone-else"),
                ("format_version", &v1),
                ("revision", &rev0),
            ],
            "marker",
        ),
        (
            "unknown version",
            vec![
                ("magic", b"host-etcd-local"),
                ("format_version", &v3),
                ("revision", &rev0),
            ],
            "format version 3",
        ),
        (
            "no revision",
            vec![("magic", b"host-etcd-local"), ("format_version", &v1)],
            "revision",
        ),
    ];
    for (what, meta, expect) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let file = db_file(tmp.path());
        plant_redb(&file, &meta, true);
        let before = std::fs::read(&file).unwrap();
        let detail = refused_untouched(tmp.path(), false, &before, what);
        assert!(detail.contains(expect), "{what}: {detail}");
        // With the integrity check the verdict is the same.
        assert_corrupt(LocalStore::open(tmp.path(), WAIT), &file, what);
    }

    // Our marker but a meta table of another type.
    let tmp = tempfile::tempdir().unwrap();
    let file = db_file(tmp.path());
    {
        let db = redb::Database::create(&file).unwrap();
        let wtx = db.begin_write().unwrap();
        let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("meta");
        wtx.open_table(def).unwrap().insert(1, 1).unwrap();
        wtx.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    refused_untouched(tmp.path(), false, &before, "typed meta");
}

#[test]
fn damaged_store_is_corrupt_with_the_integrity_check() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        for i in 0..50u8 {
            commit(&store, ops(vec![put(&format!("/k{i}"), &[i; 500])]));
        }
    }
    let file = db_file(tmp.path());
    let mut bytes = std::fs::read(&file).unwrap();
    // Keep redb's header page, damage every page after it.
    for b in &mut bytes[8192..] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let detail = refused_untouched(tmp.path(), true, &bytes, "damaged");
    assert!(!detail.is_empty());
    // The default open reads little, but what it reads here is damaged.
    let detail = refused_untouched(tmp.path(), false, &bytes, "damaged, default");
    assert!(!detail.is_empty());
}

// ------------------------------------------------------------ large stores

/// Records in the large stores below.
const MANY: usize = 20_000;

fn many_key(i: usize) -> String {
    format!("/many/{i:06}")
}

/// A value that names its key, so its bytes can be found in the file.
fn many_value(i: usize) -> Vec<u8> {
    format!("value-of-{i:06}|").repeat(6).into_bytes()
}

/// Fills a store with [`MANY`] records in batches, closes it, and returns
/// the database file.
fn fill_many(dir: &Path) -> PathBuf {
    let store = open(dir);
    for batch in 0..MANY / 500 {
        let puts = (batch * 500..(batch + 1) * 500)
            .map(|i| put(&many_key(i), &many_value(i)))
            .collect();
        commit(&store, ops(puts));
    }
    // A last commit elsewhere in the key space, so that the previous commit
    // slot shares the pages of the records with the current one.
    commit(&store, ops(vec![put("/zz", b"last")]));
    drop(store);
    db_file(dir)
}

/// Offsets of every occurrence of `needle` in `haystack` (old copies of a
/// page may remain in free space; the live one is among them).
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_store_with_many_records_opens_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fill_many(tmp.path());
    assert!(std::fs::metadata(&file).unwrap().len() > 2 << 20);
    for round in 0..3 {
        let store = open(tmp.path());
        let revision = store.revision().unwrap();
        assert_eq!(revision, (MANY / 500) as i64 + 1 + round);
        for i in [0, 1, MANY / 3, MANY / 2, MANY - 1] {
            let v = get(&store, &many_key(i)).unwrap();
            assert_eq!(v.value, many_value(i), "{i}");
        }
        let (keys, more) = range(&store, "/many/", "/many0", 0);
        assert!(!more);
        assert_eq!(keys.len(), MANY);
        assert_eq!(keys[MANY / 2], many_key(MANY / 2));
        let (keys, more) = range(&store, &many_key(100), "/many0", 10);
        assert!(more);
        assert_eq!(keys.len(), 10);
        assert_eq!(keys[9], many_key(109));
        let rev = commit(&store, ops(vec![put(&format!("/round/{round}"), b"r")]));
        assert_eq!(rev, revision + 1);
    }
    // The full integrity check agrees the file is sound.
    let verify = LocalOptions::new(WAIT).with_verify_on_open(true);
    let store = LocalStore::open_with(tmp.path(), &verify).unwrap();
    assert_eq!(range(&store, "/round/", "/round0", 0).0.len(), 3);
}

/// Opens `dir` (cheaply: the damage is not where the open reads), expects
/// `read` to report the damage as corrupt, and checks that from then on
/// nothing is served or written: the file keeps the bytes it had while the
/// store was open. Twice, since the store is opened again after a refusal
/// (each time the damage is found again when read); then the full integrity
/// check refuses the file on open, without writing either.
///
/// redb built with debug assertions (this test profile's default) walks
/// every page on a writable open; there the open itself may be the read
/// that finds the damage, and then it must refuse the file untouched.
fn expect_damage_found_on_read(dir: &Path, what: &str, read: impl Fn(&LocalStore)) {
    let file = db_file(dir);
    for attempt in 0..2 {
        let what = format!("{what} (open {attempt})");
        let before = std::fs::read(&file).unwrap();
        let store = match LocalStore::open(dir, WAIT) {
            Ok(store) => store,
            Err(e) if cfg!(debug_assertions) => {
                assert_corrupt(Err(e), &file, &what);
                assert!(
                    std::fs::read(&file).unwrap() == before,
                    "{what}: file changed by a refused open"
                );
                continue;
            }
            Err(e) => panic!("{what}: the open should not read the damage: {e}"),
        };
        // Untouched records are still served.
        assert_eq!(get(&store, "/zz").unwrap().value, b"last", "{what}");
        let while_open = std::fs::read(&file).unwrap();
        read(&store);
        // Sealed: reads and writes are refused, nothing is committed.
        match block_on(store.read(&[Read::Get("/zz".into())])) {
            Err(StoreError::CorruptDatabase { path, detail }) => {
                assert_eq!(path, file, "{what}");
                assert!(detail.contains("found damage earlier"), "{what}: {detail}");
            }
            other => panic!("{what}: expected CorruptDatabase after the damage, got {other:?}"),
        }
        let txn = block_on(store.txn(ops(vec![put("/after", b"x")])));
        assert!(
            matches!(txn, Err(StoreError::CorruptDatabase { .. })),
            "{what}: {txn:?}"
        );
        drop(store);
        assert!(
            std::fs::read(&file).unwrap() == while_open,
            "{what}: file written after the damage was found"
        );
    }
    let before = std::fs::read(&file).unwrap();
    refused_untouched(dir, true, &before, what);
}

#[test]
fn a_damaged_value_deep_in_a_large_store_is_found_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fill_many(tmp.path());
    let victim = MANY * 3 / 4;
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = format!("value-of-{victim:06}|").into_bytes();
    let hits = find_all(&bytes, &needle);
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|&at| at > bytes.len() / 8),
        "the damage is not where the open reads"
    );
    for at in hits {
        bytes[at + 3] ^= 0x01; // "value" -> "valte"
    }
    std::fs::write(&file, &bytes).unwrap();

    expect_damage_found_on_read(tmp.path(), "damaged value", |store| {
        // The neighbours on the same page are intact.
        let next = get(store, &many_key(victim + 1)).unwrap();
        assert_eq!(next.value, many_value(victim + 1));
        match block_on(store.read(&[Read::Get(many_key(victim))])) {
            Err(StoreError::CorruptDatabase { detail, .. }) => {
                assert!(detail.contains(&many_key(victim)), "{detail}");
                assert!(detail.contains("checksum"), "{detail}");
            }
            other => panic!("expected CorruptDatabase, got {other:?}"),
        }
    });
}

#[test]
fn a_damaged_page_deep_in_a_large_store_is_found_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fill_many(tmp.path());
    let victim = MANY / 2;
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = format!("value-of-{victim:06}|").into_bytes();
    let mut pages: Vec<usize> = find_all(&bytes, &needle)
        .into_iter()
        .map(|at| at / 4096 * 4096)
        .collect();
    pages.dedup();
    assert!(!pages.is_empty());
    // Every page holding the record, whole: its type byte, its offsets and
    // its keys are garbage too.
    let len = bytes.len();
    for page in pages {
        for b in &mut bytes[page..(page + 4096).min(len)] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&file, &bytes).unwrap();

    expect_damage_found_on_read(tmp.path(), "damaged page", |store| {
        let read = Read::Range {
            start: "/many/".into(),
            end: "/many0".into(),
            limit: 0,
        };
        match block_on(store.read(&[read])) {
            Err(StoreError::CorruptDatabase { detail, .. }) => assert!(!detail.is_empty()),
            other => panic!("expected CorruptDatabase, got {other:?}"),
        }
    });
}

#[test]
fn a_format_1_store_is_read_and_written_as_format_1() {
    let tmp = tempfile::tempdir().unwrap();
    let file = db_file(tmp.path());
    {
        let db = redb::Database::create(&file).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut meta = wtx.open_table(meta).unwrap();
            meta.insert("magic", b"host-etcd-local".as_slice()).unwrap();
            meta.insert("format_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
            meta.insert("revision", 3i64.to_le_bytes().as_slice())
                .unwrap();
            let kv: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
            let mut kv = wtx.open_table(kv).unwrap();
            // mod 3 | create 2 | value, without a checksum.
            let mut record = 3i64.to_le_bytes().to_vec();
            record.extend_from_slice(&2i64.to_le_bytes());
            record.extend_from_slice(b"old");
            kv.insert("/old", record.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    {
        let store = open(tmp.path());
        let old = get(&store, "/old").unwrap();
        assert_eq!(
            (old.value.as_slice(), old.mod_revision, old.create_revision),
            (&b"old"[..], 3, 2)
        );
        assert_eq!(commit(&store, ops(vec![put("/new", b"new")])), 4);
    }
    // Written in format 1: 16 header bytes, no checksum.
    let db = redb::Database::open(&file).unwrap();
    let rtx = redb::ReadableDatabase::begin_read(&db).unwrap();
    let kv: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    let kv = rtx.open_table(kv).unwrap();
    let new = kv.get("/new").unwrap().unwrap();
    assert_eq!(new.value().len(), 16 + 3);
    assert_eq!(&new.value()[16..], b"new");
}

#[test]
fn data_dir_that_cannot_be_created_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain-file");
    std::fs::write(&plain, b"x").unwrap();
    for dir in [
        plain.join("data"),
        PathBuf::from("/proc/host-etcd-test/data"),
    ] {
        match LocalStore::open(&dir, Duration::from_secs(1)) {
            Err(StoreError::Io { path, .. }) => assert_eq!(path, dir),
            Err(other) => panic!("{}: expected Io, got {other:?}", dir.display()),
            Ok(store) => panic!("{}: expected Io, opened {store:?}", dir.display()),
        }
    }
    assert_eq!(std::fs::read(&plain).unwrap(), b"x");
}

// ------------------------------------------------------------------- lock

#[test]
fn second_open_waits_for_the_first_to_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let first = open(&dir);
    commit(&first, ops(vec![put("/k", b"first")]));
    let dropped = Arc::new(AtomicBool::new(false));

    let waiter = {
        let (dir, dropped) = (dir.clone(), dropped.clone());
        std::thread::spawn(move || {
            let second = LocalStore::open(&dir, WAIT).unwrap();
            // The lock is only granted once the first store is gone.
            assert!(
                dropped.load(Ordering::SeqCst),
                "opened while the first was held"
            );
            commit(&second, ops(vec![put("/k", b"second")]));
            get(&second, "/k").unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    dropped.store(true, Ordering::SeqCst);
    drop(first);
    let k = waiter.join().unwrap();
    assert_eq!((k.value.as_slice(), k.mod_revision), (&b"second"[..], 2));
}

#[test]
fn lock_held_past_lock_wait_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(tmp.path());
    let dir = tmp.path().to_path_buf();
    let result =
        std::thread::spawn(move || LocalStore::open(&dir, Duration::from_millis(50)).map(|_| ()))
            .join()
            .unwrap();
    match result {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("lock held by another process"), "{msg}");
            assert!(
                msg.contains(&tmp.path().join("lock").display().to_string()),
                "{msg}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A zero wait makes one attempt and fails the same way.
    assert!(matches!(
        LocalStore::open(tmp.path(), Duration::ZERO),
        Err(StoreError::Unavailable(_))
    ));
    drop(first);
    LocalStore::open(tmp.path(), Duration::ZERO).unwrap();
}

// ----------------------------------------------------------- processes

/// One compare-and-swap increment of the counter plus a unique item key, in
/// one transaction; retried on conflict. Keeps `counter == #items ==
/// revision` in every committed state.
fn increment(store: &LocalStore, item: &str) {
    let key = COUNTER.to_string();
    let mut current = get(store, COUNTER);
    loop {
        let (expect, next) = match &current {
            None => (Expect::Absent, 1u64),
            Some(v) => {
                let n = u64::from_le_bytes(v.value.as_slice().try_into().unwrap());
                (Expect::ModRevision(v.mod_revision), n + 1)
            }
        };
        let txn = Txn {
            compares: vec![Compare {
                key: key.clone(),
                expect,
            }],
            ops: vec![
                put(COUNTER, &next.to_le_bytes()),
                put(&format!("{ITEMS}{item}"), item.as_bytes()),
            ],
            read_on_conflict: vec![key.clone()],
        };
        match block_on(store.txn(txn)).unwrap() {
            TxnOutcome::Committed { .. } => return,
            TxnOutcome::Conflict { current: mut now } => current = now.pop().unwrap().1,
        }
    }
}

/// A child's batch: open the store, two threads each make `per_thread`
/// increments on it (so they conflict with each other), drop the store.
fn child_batch(dir: &Path, child: &str, batch: usize, per_thread: usize) {
    let store = open(dir);
    std::thread::scope(|s| {
        for thread in 0..2 {
            let store = &store;
            s.spawn(move || {
                for j in 0..per_thread {
                    increment(store, &format!("{child}-{batch}-{thread}-{j}"));
                }
            });
        }
    });
    drop(store);
    // Let waiting processes take the lock (flock is not fair).
    std::thread::sleep(Duration::from_millis(fastrand::u64(1..5)));
}

/// Checks `counter == #items == revision` and returns the counter.
fn check_invariant(dir: &Path, verify_on_open: bool) -> u64 {
    let options = LocalOptions::new(WAIT).with_verify_on_open(verify_on_open);
    let store = LocalStore::open_with(dir, &options).unwrap();
    let counter = get(&store, COUNTER).map_or(0, |v| {
        u64::from_le_bytes(v.value.as_slice().try_into().unwrap())
    });
    let (items, more) = range(&store, ITEMS, ITEMS_END, 0);
    assert!(!more);
    assert_eq!(items.len() as u64, counter, "counter and items disagree");
    assert_eq!(
        store.revision().unwrap(),
        counter as i64,
        "one revision per increment"
    );
    counter
}

/// A child process that is killed if the parent test fails first, so that
/// no orphan keeps writing into a deleted temporary directory.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(test: &str, dir: &Path, id: usize, piped: bool) -> ChildGuard {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ID_ENV, id.to_string())
        .stdout(if piped { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// Parent: 8 processes x 200 increments. Child (when `CHILD_DIR_ENV` is
/// set): 20 batches of 2 threads x 5 increments.
#[test]
fn processes_increment_a_counter_with_cas() {
    const TEST: &str = "processes_increment_a_counter_with_cas";
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let id = std::env::var(CHILD_ID_ENV).unwrap();
        for batch in 0..20 {
            child_batch(Path::new(&dir), &id, batch, 5);
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut children: Vec<ChildGuard> = (0..8)
        .map(|id| spawn_child(TEST, tmp.path(), id, false))
        .collect();
    for child in &mut children {
        assert!(child.0.wait().unwrap().success(), "a child failed");
    }
    assert_eq!(check_invariant(tmp.path(), true), 1600);
    let store = open(tmp.path());
    for id in 0..8 {
        for batch in 0..20 {
            for thread in 0..2 {
                for j in 0..5 {
                    let item = format!("{ITEMS}{id}-{batch}-{thread}-{j}");
                    assert!(get(&store, &item).is_some(), "{item} missing");
                }
            }
        }
    }
}

/// Parent: rounds of children killed with SIGKILL at random moments after
/// their first commit; the store opens and the invariant holds after each
/// round. Child: increments until killed.
#[test]
fn sigkilled_processes_leave_a_consistent_store() {
    const TEST: &str = "sigkilled_processes_leave_a_consistent_store";
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let id = std::env::var(CHILD_ID_ENV).unwrap();
        child_batch(Path::new(&dir), &id, 0, 1);
        println!("{COMMITTED_LINE}");
        let parent = std::os::unix::process::parent_id();
        // Runs until killed; stops if the parent test died first.
        for batch in 1.. {
            if std::os::unix::process::parent_id() != parent {
                break;
            }
            child_batch(Path::new(&dir), &id, batch, 3);
        }
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut last = 0;
    for round in 0..8 {
        let mut children: Vec<ChildGuard> = (0..3)
            .map(|i| spawn_child(TEST, tmp.path(), round * 10 + i, true))
            .collect();
        for child in &mut children {
            // Wait for the child's first commit, so every round makes progress.
            let stdout = child.0.stdout.take().unwrap();
            let committed = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.ends_with(COMMITTED_LINE));
            assert!(committed, "round {round}: a child exited before committing");
        }
        for child in &mut children {
            std::thread::sleep(Duration::from_millis(rng.u64(0..40)));
            child.0.kill().unwrap(); // SIGKILL
            assert!(!child.0.wait().unwrap().success());
        }
        // Alternate the two ways of checking a store that was not shut
        // down cleanly (read-only handle falls back to a memory copy; the
        // integrity check always uses one).
        let counter = check_invariant(tmp.path(), round % 2 == 0);
        assert!(counter > last, "round {round}: no progress ({counter})");
        last = counter;
    }
}
