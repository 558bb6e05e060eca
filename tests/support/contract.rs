//! The [`Store`] contract (see `src/store/mod.rs`) as a reusable test
//! suite. [`check_contract`] runs every check; each check works under its
//! own sub-prefix of the given prefix, so the suite can share a store with
//! other data and be run more than once on the same store with different
//! prefixes.

use host_etcd::store::{
    prefix_end, Compare, Expect, Op, Read, ReadResult, Store, Txn, TxnOutcome, Versioned,
};

/// Runs every contract check under `prefix` (e.g. `"/contract"`).
pub async fn check_contract<S: Store>(s: &S, prefix: &str) {
    revisions(s, &format!("{prefix}/revisions/")).await;
    compares(s, &format!("{prefix}/compares/")).await;
    value_compares(s, &format!("{prefix}/value-compares/")).await;
    atomicity(s, &format!("{prefix}/atomicity/")).await;
    ops_order(s, &format!("{prefix}/ops-order/")).await;
    delete_absent(s, &format!("{prefix}/delete-absent/")).await;
    read_on_conflict(s, &format!("{prefix}/read-on-conflict/")).await;
    empty_txn(s, &format!("{prefix}/empty-txn/")).await;
    ranges(s, &format!("{prefix}/ranges/")).await;
    changed(s, &format!("{prefix}/changed/")).await;
    reads_in_order(s, &format!("{prefix}/reads/")).await;
    values_are_bytes(s, &format!("{prefix}/bytes/")).await;
}

/// Commits `txn`, panicking on a conflict or error; returns the revision.
pub async fn commit<S: Store>(s: &S, txn: Txn) -> i64 {
    match s.txn(txn.clone()).await {
        Ok(TxnOutcome::Committed { revision }) => revision,
        other => panic!("expected {txn:?} to commit, got {other:?}"),
    }
}

/// Runs `txn`, expecting a conflict; returns the current values.
pub async fn conflict<S: Store>(s: &S, txn: Txn) -> Vec<(String, Option<Versioned>)> {
    match s.txn(txn.clone()).await {
        Ok(TxnOutcome::Conflict { current }) => current,
        other => panic!("expected {txn:?} to conflict, got {other:?}"),
    }
}

/// Unconditional put of one key (tests only; the allocator never does it).
pub async fn put<S: Store>(s: &S, key: &str, value: &[u8]) -> i64 {
    commit(
        s,
        Txn {
            ops: vec![Op::Put(key.into(), value.to_vec())],
            ..Txn::default()
        },
    )
    .await
}

/// Unconditional delete of one key.
pub async fn delete<S: Store>(s: &S, key: &str) -> i64 {
    commit(
        s,
        Txn {
            ops: vec![Op::Delete(key.into())],
            ..Txn::default()
        },
    )
    .await
}

/// The current value of one key.
pub async fn get<S: Store>(s: &S, key: &str) -> Option<Versioned> {
    match s.read(&[Read::Get(key.into())]).await {
        Ok(mut r) if r.len() == 1 => match r.remove(0) {
            ReadResult::Get(v) => v,
            other => panic!("get {key}: wrong result shape {other:?}"),
        },
        other => panic!("get {key}: {other:?}"),
    }
}

/// The keys and values of one range read.
pub async fn range<S: Store>(
    s: &S,
    start: &str,
    end: &str,
    limit: usize,
) -> (Vec<(String, Versioned)>, bool) {
    let read = Read::Range {
        start: start.into(),
        end: end.into(),
        limit,
    };
    match s.read(std::slice::from_ref(&read)).await {
        Ok(mut r) if r.len() == 1 => match r.remove(0) {
            ReadResult::Range { kvs, more } => (kvs, more),
            other => panic!("{read:?}: wrong result shape {other:?}"),
        },
        other => panic!("{read:?}: {other:?}"),
    }
}

fn keys(kvs: &[(String, Versioned)]) -> Vec<&str> {
    kvs.iter().map(|(k, _)| k.as_str()).collect()
}

fn cmp(key: &str, expect: Expect) -> Compare {
    Compare {
        key: key.into(),
        expect,
    }
}

/// Contract 1: revisions are positive and grow; create/mod revisions.
pub async fn revisions<S: Store>(s: &S, p: &str) {
    let a = format!("{p}a");
    let b = format!("{p}b");
    let r1 = put(s, &a, b"1").await;
    assert!(r1 > 0, "revision must be positive, got {r1}");
    let v = get(s, &a).await.expect("a was just written");
    assert_eq!(v.value, b"1");
    assert_eq!((v.mod_revision, v.create_revision), (r1, r1));

    let r2 = put(s, &a, b"2").await;
    assert!(r2 > r1, "revision must grow: {r1} then {r2}");
    let v = get(s, &a).await.expect("a exists");
    assert_eq!(v.value, b"2");
    assert_eq!(v.mod_revision, r2, "mod_revision is the last change");
    assert_eq!(v.create_revision, r1, "create_revision stays");

    // One transaction, several keys: one revision for all of them.
    let r3 = commit(
        s,
        Txn {
            ops: vec![
                Op::Put(a.clone(), b"3".to_vec()),
                Op::Put(b.clone(), b"x".to_vec()),
            ],
            ..Txn::default()
        },
    )
    .await;
    assert!(r3 > r2);
    let (va, vb) = (get(s, &a).await.expect("a"), get(s, &b).await.expect("b"));
    assert_eq!((va.mod_revision, vb.mod_revision), (r3, r3));
    assert_eq!((va.create_revision, vb.create_revision), (r1, r3));

    // Delete then create again: a new create_revision.
    let r4 = delete(s, &a).await;
    assert!(r4 > r3);
    assert_eq!(get(s, &a).await, None);
    let r5 = put(s, &a, b"again").await;
    assert!(r5 > r4);
    let v = get(s, &a).await.expect("a recreated");
    assert_eq!((v.mod_revision, v.create_revision), (r5, r5));
}

/// Contract 2: `Absent` and `ModRevision` compares.
pub async fn compares<S: Store>(s: &S, p: &str) {
    let k = format!("{p}k");
    let other = format!("{p}other");
    let create = |expect| Txn {
        compares: vec![cmp(&k, expect)],
        ops: vec![Op::Put(k.clone(), b"v".to_vec())],
        read_on_conflict: vec![k.clone()],
    };

    // ModRevision never holds for an absent key, not even ModRevision(0).
    for r in [0, 1, i64::MAX] {
        let current = conflict(s, create(Expect::ModRevision(r))).await;
        assert_eq!(
            current,
            vec![(k.clone(), None)],
            "ModRevision({r}) on absent key"
        );
    }
    assert_eq!(get(s, &k).await, None);

    // Absent holds for an absent key.
    let r1 = commit(s, create(Expect::Absent)).await;
    // ... and not for a present one.
    let current = conflict(s, create(Expect::Absent)).await;
    let v = current[0].1.clone().expect("k is present");
    assert_eq!(v.mod_revision, r1);

    // ModRevision holds for the current mod_revision only.
    put(s, &other, b"bump").await; // moves the store revision on
    conflict(s, create(Expect::ModRevision(r1 - 1))).await;
    conflict(s, create(Expect::ModRevision(r1 + 1))).await;
    conflict(s, create(Expect::ModRevision(0))).await;
    let r2 = commit(s, create(Expect::ModRevision(r1))).await;
    assert!(r2 > r1);
    // The old revision is now stale.
    let current = conflict(s, create(Expect::ModRevision(r1))).await;
    assert_eq!(current[0].1.as_ref().map(|v| v.mod_revision), Some(r2));

    // After a delete, Absent holds again and ModRevision does not.
    delete(s, &k).await;
    conflict(s, create(Expect::ModRevision(r2))).await;
    commit(s, create(Expect::Absent)).await;
}

/// Contract 2: `Value` compares hold for the exact current bytes only, and
/// never for an absent key.
pub async fn value_compares<S: Store>(s: &S, p: &str) {
    let k = format!("{p}k");
    let create = |expect| Txn {
        compares: vec![cmp(&k, expect)],
        ops: vec![Op::Put(k.clone(), b"next".to_vec())],
        read_on_conflict: vec![k.clone()],
    };
    // Never holds for an absent key, not even for empty bytes.
    for bytes in [Vec::new(), b"v".to_vec()] {
        assert_eq!(
            conflict(s, create(Expect::Value(bytes))).await,
            vec![(k.clone(), None)]
        );
    }
    put(s, &k, b"v1").await;
    conflict(s, create(Expect::Value(b"v".to_vec()))).await;
    conflict(s, create(Expect::Value(b"v1\0".to_vec()))).await;
    conflict(s, create(Expect::Value(Vec::new()))).await;
    commit(s, create(Expect::Value(b"v1".to_vec()))).await;
    assert_eq!(get(s, &k).await.map(|v| v.value), Some(b"next".to_vec()));
    // Same bytes written again (a new revision): the value compare still
    // holds, where a revision compare taken before would not.
    let before = get(s, &k).await.expect("present").mod_revision;
    put(s, &k, b"next").await;
    conflict(s, create(Expect::ModRevision(before))).await;
    commit(s, create(Expect::Value(b"next".to_vec()))).await;
    // An empty stored value matches an empty expectation.
    put(s, &k, b"").await;
    commit(s, create(Expect::Value(Vec::new()))).await;
}

/// Contract 2: a failing compare applies nothing, whatever the others say.
pub async fn atomicity<S: Store>(s: &S, p: &str) {
    let (x, y, z) = (format!("{p}x"), format!("{p}y"), format!("{p}z"));
    let ry = put(s, &y, b"y0").await;
    let txn = Txn {
        compares: vec![
            cmp(&x, Expect::Absent),          // holds
            cmp(&y, Expect::ModRevision(ry)), // holds
            cmp(&z, Expect::ModRevision(ry)), // fails: z is absent
        ],
        ops: vec![
            Op::Put(x.clone(), b"x1".to_vec()),
            Op::Put(y.clone(), b"y1".to_vec()),
            Op::Delete(y.clone()),
            Op::Put(z.clone(), b"z1".to_vec()),
        ],
        read_on_conflict: vec![x.clone(), y.clone(), z.clone()],
    };
    let current = conflict(s, txn.clone()).await;
    assert_eq!(current.len(), 3);
    assert_eq!(get(s, &x).await, None, "nothing applied on conflict");
    assert_eq!(get(s, &z).await, None, "nothing applied on conflict");
    let vy = get(s, &y).await.expect("y untouched");
    assert_eq!((vy.value.as_slice(), vy.mod_revision), (&b"y0"[..], ry));

    // Make every compare hold: all ops apply, in one revision.
    let rz = put(s, &z, b"z0").await;
    let mut ok = txn;
    ok.compares[1] = cmp(&y, Expect::ModRevision(ry));
    ok.compares[2] = cmp(&z, Expect::ModRevision(rz));
    let r = commit(s, ok).await;
    let vx = get(s, &x).await.expect("x written");
    let vz = get(s, &z).await.expect("z written");
    assert_eq!((vx.value.as_slice(), vx.mod_revision), (&b"x1"[..], r));
    assert_eq!((vz.value.as_slice(), vz.mod_revision), (&b"z1"[..], r));
    assert_eq!(
        get(s, &y).await,
        None,
        "put then delete of y: the delete wins"
    );
}

/// Contract 3: ops apply in order; the last op on a key wins.
pub async fn ops_order<S: Store>(s: &S, p: &str) {
    let k = format!("{p}k");
    let ops = |ops: Vec<Op>| Txn {
        ops,
        ..Txn::default()
    };
    commit(
        s,
        ops(vec![
            Op::Put(k.clone(), b"1".to_vec()),
            Op::Put(k.clone(), b"2".to_vec()),
        ]),
    )
    .await;
    assert_eq!(get(s, &k).await.expect("k").value, b"2");

    commit(
        s,
        ops(vec![
            Op::Put(k.clone(), b"3".to_vec()),
            Op::Delete(k.clone()),
        ]),
    )
    .await;
    assert_eq!(get(s, &k).await, None);

    let r = commit(
        s,
        ops(vec![
            Op::Delete(k.clone()),
            Op::Put(k.clone(), b"4".to_vec()),
        ]),
    )
    .await;
    let v = get(s, &k).await.expect("k");
    assert_eq!(
        (v.value.as_slice(), v.mod_revision, v.create_revision),
        (&b"4"[..], r, r),
        "deleted (absent) then put in one transaction: created there"
    );

    // Several keys, interleaved.
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    commit(
        s,
        ops(vec![
            Op::Put(a.clone(), b"a1".to_vec()),
            Op::Put(b.clone(), b"b1".to_vec()),
            Op::Put(a.clone(), b"a2".to_vec()),
            Op::Delete(k.clone()),
            Op::Put(b.clone(), b"b2".to_vec()),
        ]),
    )
    .await;
    assert_eq!(get(s, &a).await.expect("a").value, b"a2");
    assert_eq!(get(s, &b).await.expect("b").value, b"b2");
    assert_eq!(get(s, &k).await, None);
}

/// Contract 3: deleting an absent key is a no-op that commits.
pub async fn delete_absent<S: Store>(s: &S, p: &str) {
    let (gone, kept) = (format!("{p}gone"), format!("{p}kept"));
    let r = put(s, &kept, b"v").await;
    delete(s, &gone).await;
    assert_eq!(get(s, &gone).await, None);
    let v = get(s, &kept).await.expect("kept");
    assert_eq!((v.value.as_slice(), v.mod_revision), (&b"v"[..], r));
    // Guarded by Absent on the same key, twice in a row.
    for _ in 0..2 {
        commit(
            s,
            Txn {
                compares: vec![cmp(&gone, Expect::Absent)],
                ops: vec![Op::Delete(gone.clone())],
                read_on_conflict: vec![],
            },
        )
        .await;
    }
}

/// `read_on_conflict` returns the current values, in the requested order,
/// absent keys as `None`; with no keys, an empty list.
pub async fn read_on_conflict<S: Store>(s: &S, p: &str) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let ra = put(s, &a, b"va").await;
    let rc = put(s, &c, b"vc").await;
    let current = conflict(
        s,
        Txn {
            compares: vec![cmp(&a, Expect::Absent)],
            ops: vec![Op::Put(b.clone(), b"never".to_vec())],
            read_on_conflict: vec![c.clone(), b.clone(), a.clone()],
        },
    )
    .await;
    let expect_c = Versioned {
        value: b"vc".to_vec(),
        mod_revision: rc,
        create_revision: rc,
    };
    let expect_a = Versioned {
        value: b"va".to_vec(),
        mod_revision: ra,
        create_revision: ra,
    };
    assert_eq!(
        current,
        vec![
            (c.clone(), Some(expect_c)),
            (b.clone(), None),
            (a.clone(), Some(expect_a)),
        ]
    );
    assert_eq!(get(s, &b).await, None);

    let current = conflict(
        s,
        Txn {
            compares: vec![cmp(&a, Expect::Absent)],
            ops: vec![],
            read_on_conflict: vec![],
        },
    )
    .await;
    assert!(current.is_empty());
}

/// Contract 3: a transaction without ops still evaluates its compares.
pub async fn empty_txn<S: Store>(s: &S, p: &str) {
    let k = format!("{p}k");
    let before = put(s, &k, b"v").await;
    let r = commit(s, Txn::default()).await;
    assert!(r >= before, "revision {r} of a no-op txn is below {before}");
    commit(
        s,
        Txn {
            compares: vec![cmp(&k, Expect::ModRevision(before))],
            ..Txn::default()
        },
    )
    .await;
    let current = conflict(
        s,
        Txn {
            compares: vec![cmp(&k, Expect::Absent)],
            read_on_conflict: vec![k.clone()],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!(current[0].1.as_ref().map(|v| v.mod_revision), Some(before));
    // Nothing changed.
    let after = put(s, &k, b"w").await;
    assert!(after > before);
}

/// Contract 4 and 5: range bounds, byte order, limit and `more`, empty
/// intervals, `prefix_end`.
pub async fn ranges<S: Store>(s: &S, p: &str) {
    // Byte order: 'B' < '_' < 'a' < 'a/...' < 'a0' < 'b' < '~'.
    let names = ["a", "B", "a/x", "a0", "b", "~", "_"];
    for n in names {
        put(s, &format!("{p}{n}"), n.as_bytes()).await;
    }
    // Neighbours outside the prefix must never show up.
    let below = p.trim_end_matches('/'); // the prefix without its '/'
    put(s, below, b"outside").await;
    let after = prefix_end(p);
    put(s, &after, b"outside").await;

    let mut sorted: Vec<String> = names.iter().map(|n| format!("{p}{n}")).collect();
    sorted.sort(); // String order is byte order.
    let all: Vec<&str> = sorted.iter().map(String::as_str).collect();

    let end = prefix_end(p);
    assert!(
        end.as_str() > p && !end.starts_with(p),
        "prefix_end({p}) = {end}"
    );
    let (kvs, more) = range(s, p, &end, 0).await;
    assert_eq!(keys(&kvs), all);
    assert!(!more);
    for (k, v) in &kvs {
        let name = k.strip_prefix(p).expect("key under the prefix");
        assert_eq!(v.value, name.as_bytes(), "value of {k}");
        assert!(v.mod_revision > 0 && v.create_revision > 0);
    }

    // Limits.
    let (kvs, more) = range(s, p, &end, 3).await;
    assert_eq!(keys(&kvs), all[..3]);
    assert!(more, "3 of {} returned: more", all.len());
    let (kvs, more) = range(s, p, &end, all.len()).await;
    assert_eq!(keys(&kvs), all);
    assert!(!more, "limit == count: no more");
    let (kvs, more) = range(s, p, &end, all.len() + 1).await;
    assert_eq!(keys(&kvs), all);
    assert!(!more);
    let (kvs, more) = range(s, p, &end, usize::MAX).await;
    assert_eq!(keys(&kvs), all);
    assert!(!more);

    // Start inclusive, end exclusive.
    let a = format!("{p}a");
    let a0 = format!("{p}a0");
    let (kvs, more) = range(s, &a, &a0, 0).await;
    assert_eq!(keys(&kvs), [a.as_str(), &format!("{p}a/x")]);
    assert!(!more);
    // Paging: continue after the last key returned.
    let (kvs, more) = range(s, &a, &end, 2).await;
    assert!(more);
    let next = format!("{}\0", kvs[1].0);
    let (kvs, more) = range(s, &next, &end, 0).await;
    assert_eq!(keys(&kvs), all[all.len() - 3..]);
    assert!(!more);

    // Empty intervals: end == start, end < start, a gap with no keys.
    for (start, end) in [(a.clone(), a.clone()), (a0.clone(), a.clone())] {
        assert_eq!(
            range(s, &start, &end, 0).await,
            (vec![], false),
            "[{start}, {end})"
        );
    }
    let (kvs, more) = range(s, &format!("{p}c"), &format!("{p}d"), 1).await;
    assert!(kvs.is_empty() && !more);
    // An empty prefix range of a prefix with no keys.
    let none = format!("{p}none/");
    assert_eq!(
        range(s, &none, &prefix_end(&none), 0).await,
        (vec![], false)
    );
}

/// The answer to one [`Read::Changed`]: (keys, more, total, revision).
pub async fn changed_since<S: Store>(
    s: &S,
    (start, end): (&str, &str),
    after: i64,
    limit: usize,
) -> (Vec<(String, Versioned)>, bool, u64, i64) {
    let read = Read::Changed {
        start: start.into(),
        end: end.into(),
        after,
        limit,
    };
    match s.read(std::slice::from_ref(&read)).await {
        Ok(mut r) if r.len() == 1 => match r.remove(0) {
            ReadResult::Changed {
                kvs,
                more,
                total,
                revision,
            } => (kvs, more, total, revision),
            other => panic!("{read:?}: wrong result shape {other:?}"),
        },
        other => panic!("{read:?}: {other:?}"),
    }
}

/// Contract 4, `Read::Changed`: only keys changed after `after`, every key
/// counted, the snapshot's revision, limits and `more` on the filtered keys.
pub async fn changed<S: Store>(s: &S, p: &str) {
    let end = prefix_end(p);
    let (a, b, c, d) = (
        format!("{p}a"),
        format!("{p}b"),
        format!("{p}c"),
        format!("{p}d"),
    );
    put(s, &a, b"a1").await;
    let rb = put(s, &b, b"b1").await;
    put(s, &c, b"c1").await;
    let rd = put(s, &d, b"d1").await;
    // Outside the interval: never returned, never counted.
    put(s, &end, b"outside").await;

    // after <= 0: every key, like a range read.
    let (kvs, more, total, rev) = changed_since(s, (p, &end), 0, 0).await;
    assert_eq!(keys(&kvs), [a.as_str(), &b, &c, &d]);
    assert!(!more);
    assert_eq!(total, 4);
    assert!(rev >= rd, "snapshot revision {rev} < last write {rd}");
    let (all_again, ..) = changed_since(s, (p, &end), -5, 0).await;
    assert_eq!(all_again, kvs);

    // Only what changed after rb; every key still counted.
    let rb2 = put(s, &b, b"b2").await;
    let (kvs, more, total, rev) = changed_since(s, (p, &end), rb, 0).await;
    assert_eq!(keys(&kvs), [b.as_str(), &c, &d]);
    assert_eq!(kvs[0].1.value, b"b2");
    assert_eq!(kvs[0].1.mod_revision, rb2);
    assert!(!more);
    assert_eq!(total, 4);
    assert!(rev >= rb2);
    // Nothing changed after the snapshot: no keys, the same count.
    let (kvs, more, total, rev2) = changed_since(s, (p, &end), rev, 0).await;
    assert!(kvs.is_empty() && !more, "{kvs:?}");
    assert_eq!(total, 4);
    assert_eq!(rev2, rev, "no write in between: the same revision");

    // A deletion shows only in the count.
    delete(s, &c).await;
    let (kvs, _, total, _) = changed_since(s, (p, &end), rev, 0).await;
    assert!(kvs.is_empty(), "{kvs:?}");
    assert_eq!(total, 3);

    // The limit applies to the changed keys, `more` says others remain.
    let (kvs, more, total, _) = changed_since(s, (p, &end), rb, 1).await;
    assert_eq!(keys(&kvs), [b.as_str()]);
    assert!(more);
    assert_eq!(total, 3);
    let next = format!("{b}\0");
    let (kvs, more, total, _) = changed_since(s, (&next, &end), rb, 1).await;
    assert_eq!(keys(&kvs), [d.as_str()]);
    assert!(!more);
    assert_eq!(total, 1, "the count is the interval's: [b\\0, end) holds d");
    let (kvs, more, ..) = changed_since(s, (p, &end), rb, 2).await;
    assert_eq!(keys(&kvs), [b.as_str(), &d]);
    assert!(!more, "limit == changed keys: no more");

    // A count: no key sent, every key counted.
    let counted = s
        .read(&[Read::count(p.into(), end.clone())])
        .await
        .expect("count");
    assert!(
        matches!(&counted[..], [ReadResult::Changed { kvs, more: false, total: 3, revision }]
            if kvs.is_empty() && *revision > 0),
        "{counted:?}"
    );

    // Empty intervals.
    assert_eq!(
        changed_since(s, (&d, &a), 0, 0).await,
        (vec![], false, 0, 0)
    );
    let none = format!("{p}none/");
    let (kvs, more, total, _) = changed_since(s, (&none, &prefix_end(&none)), 0, 0).await;
    assert!(kvs.is_empty() && !more && total == 0);
}

/// Contract 4: several reads in one call, answered in request order.
pub async fn reads_in_order<S: Store>(s: &S, p: &str) {
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let ra = put(s, &a, b"1").await;
    let reads = [
        Read::Get(b.clone()),
        Read::Range {
            start: p.into(),
            end: prefix_end(p),
            limit: 0,
        },
        Read::Get(a.clone()),
        Read::Range {
            start: b.clone(),
            end: a.clone(), // empty
            limit: 0,
        },
    ];
    let results = s.read(&reads).await.expect("read");
    let va = Versioned {
        value: b"1".to_vec(),
        mod_revision: ra,
        create_revision: ra,
    };
    assert_eq!(
        results,
        vec![
            ReadResult::Get(None),
            ReadResult::Range {
                kvs: vec![(a.clone(), va.clone())],
                more: false
            },
            ReadResult::Get(Some(va)),
            ReadResult::Range {
                kvs: vec![],
                more: false
            },
        ]
    );
    assert_eq!(s.read(&[]).await.expect("empty read"), vec![]);
}

/// Contract 5: values are arbitrary bytes, returned unchanged.
pub async fn values_are_bytes<S: Store>(s: &S, p: &str) {
    let all: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (name, value) in [("empty", vec![]), ("all", all), ("big", big)] {
        let k = format!("{p}{name}");
        put(s, &k, &value).await;
        assert_eq!(get(s, &k).await.expect("written").value, value, "{name}");
    }
}
