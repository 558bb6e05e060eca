//! The pure part of checking the per-node index against the owner records:
//! which records have no (or a stale) index entry, which entries have no
//! record, and the compare-and-swap transaction that fixes each. No I/O:
//! the driver reads both prefixes, calls [`assess_index`], confirms or
//! writes.
//!
//! An owner record that names a node (one that can be used in a key) must
//! have the entry `{p}/{net}/nodes/{node}/{containerID}/{ifname}` holding
//! the same bytes; every entry must be such a copy. Records that do not
//! decode are `corruptOwner` problems and are not indexed.

use std::collections::BTreeMap;

use super::Problem;
use crate::allocator::keys::Keyspace;
use crate::allocator::owners::decode_owner;
use crate::store::{Compare, Expect, Key, Op, Txn, Versioned};

/// One index problem with the fix for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexSuspect {
    /// The problem as reported.
    pub(crate) problem: Problem,
    /// The owner key and its revision at the scan (`None`: absent).
    pub(crate) owner: (Key, Option<i64>),
    /// The index entry and its revision at the scan (`None`: absent).
    pub(crate) entry: (Key, Option<i64>),
    /// The fix: compares both keys at the scanned revisions, then puts the
    /// record's bytes into the entry or deletes the entry.
    pub(crate) txn: Txn,
}

impl IndexSuspect {
    /// Whether `owner` and `entry`, read again, are as the scan saw them.
    pub(crate) fn unchanged(&self, owner: Option<&Versioned>, entry: Option<&Versioned>) -> bool {
        owner.map(|v| v.mod_revision) == self.owner.1
            && entry.map(|v| v.mod_revision) == self.entry.1
    }
}

fn expect_of(rev: Option<i64>) -> Expect {
    match rev {
        Some(r) => Expect::ModRevision(r),
        None => Expect::Absent,
    }
}

fn fix(
    owner: (Key, Option<i64>),
    entry: (Key, Option<i64>),
    op: Op,
    problem: Problem,
) -> IndexSuspect {
    let txn = Txn {
        compares: vec![
            Compare {
                key: owner.0.clone(),
                expect: expect_of(owner.1),
            },
            Compare {
                key: entry.0.clone(),
                expect: expect_of(entry.1),
            },
        ],
        ops: vec![op],
        read_on_conflict: Vec::new(),
    };
    IndexSuspect {
        problem,
        owner,
        entry,
        txn,
    }
}

/// Every mismatch between the owner records and the index entries the scan
/// read, in key order (records first, then entries).
pub(crate) fn assess_index(
    ks: &Keyspace,
    owners: &[(Key, Versioned)],
    index: &[(Key, Versioned)],
) -> Vec<IndexSuspect> {
    let entries: BTreeMap<&str, &Versioned> = index.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let records: BTreeMap<&str, &Versioned> = owners.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Vec::new();
    // Records whose entry is missing or holds other bytes.
    for (key, v) in owners {
        let Ok(rec) = decode_owner(key, v) else {
            continue;
        };
        let Some(entry_key) = rec
            .node
            .as_deref()
            .and_then(|n| ks.node_entry(n, &rec.container_id, &rec.ifname))
        else {
            continue;
        };
        let entry = entries.get(entry_key.as_str());
        if entry.is_some_and(|e| e.value == v.value) {
            continue;
        }
        let problem = Problem::OwnerNotIndexed {
            owner: key.clone(),
            entry: entry_key.clone(),
        };
        out.push(fix(
            (key.clone(), Some(v.mod_revision)),
            (entry_key.clone(), entry.map(|e| e.mod_revision)),
            Op::Put(entry_key, v.value.clone()),
            problem,
        ));
    }
    // Entries that no record stands behind.
    for (entry_key, e) in index {
        let owner_key = ks
            .parse_node_entry(entry_key)
            .and_then(|(_, cid, ifname)| ks.owner(cid, ifname).ok());
        let record = owner_key.as_deref().and_then(|k| records.get(k).copied());
        let behind = record.is_some_and(|v| {
            decode_owner(entry_key, v).ok().and_then(|rec| {
                rec.node
                    .as_deref()
                    .and_then(|n| ks.node_entry(n, &rec.container_id, &rec.ifname))
            }) == Some(entry_key.clone())
        });
        if behind {
            // Its record names it: a byte mismatch is reported above.
            continue;
        }
        let problem = Problem::StaleIndexEntry {
            entry: entry_key.clone(),
        };
        // An entry that is not even an index key is compared against
        // itself as "owner" (absent compares on a made-up key would do).
        let owner = match owner_key {
            Some(k) => (k, record.map(|v| v.mod_revision)),
            None => (entry_key.clone(), Some(e.mod_revision)),
        };
        out.push(fix(
            owner,
            (entry_key.clone(), Some(e.mod_revision)),
            Op::Delete(entry_key.clone()),
            problem,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::allocator::OwnerRecord;

    fn v(bytes: &[u8], rev: i64) -> Versioned {
        Versioned {
            value: bytes.to_vec(),
            mod_revision: rev,
            create_revision: rev,
        }
    }

    fn rec(cid: &str, node: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&OwnerRecord {
            container_id: cid.into(),
            ifname: "eth0".into(),
            ips: vec!["10.0.0.2".parse().unwrap()],
            created: 7,
            pod_namespace: None,
            pod_name: None,
            node: node.map(str::to_string),
        })
        .unwrap()
    }

    #[test]
    fn records_and_entries_are_matched_both_ways() {
        let ks = Keyspace::new("/p", "n").unwrap();
        let a = rec("a", Some("n1"));
        let owners = vec![
            // indexed
            ("/p/n/owners/a/eth0".to_string(), v(&a, 5)),
            // written before the index: no entry
            (
                "/p/n/owners/b/eth0".to_string(),
                v(&rec("b", Some("n2")), 6),
            ),
            // no node: never indexed
            ("/p/n/owners/c/eth0".to_string(), v(&rec("c", None), 7)),
            // entry with other bytes
            (
                "/p/n/owners/d/eth0".to_string(),
                v(&rec("d", Some("n1")), 8),
            ),
            // does not decode: corruptOwner, not an index problem
            ("/p/n/owners/e/eth0".to_string(), v(b"{", 9)),
        ];
        let index = vec![
            ("/p/n/nodes/n1/a/eth0".to_string(), v(&a, 5)),
            ("/p/n/nodes/n1/d/eth0".to_string(), v(b"old", 3)),
            // record released by a build without the index
            (
                "/p/n/nodes/n1/gone/eth0".to_string(),
                v(&rec("gone", Some("n1")), 2),
            ),
            // entry under the wrong node
            ("/p/n/nodes/n9/a/eth0".to_string(), v(&a, 4)),
        ];
        let got = assess_index(&ks, &owners, &index);
        let problems: Vec<&Problem> = got.iter().map(|s| &s.problem).collect();
        assert_eq!(
            problems,
            vec![
                &Problem::OwnerNotIndexed {
                    owner: "/p/n/owners/b/eth0".into(),
                    entry: "/p/n/nodes/n2/b/eth0".into()
                },
                &Problem::OwnerNotIndexed {
                    owner: "/p/n/owners/d/eth0".into(),
                    entry: "/p/n/nodes/n1/d/eth0".into()
                },
                &Problem::StaleIndexEntry {
                    entry: "/p/n/nodes/n1/gone/eth0".into()
                },
                &Problem::StaleIndexEntry {
                    entry: "/p/n/nodes/n9/a/eth0".into()
                },
            ]
        );
        // The fix of a missing entry creates it (compared absent) from the
        // record's bytes, compared on the record's revision.
        assert_eq!(got[0].txn.compares[1].expect, Expect::Absent);
        assert_eq!(got[0].txn.compares[0].expect, Expect::ModRevision(6));
        assert_eq!(
            got[0].txn.ops,
            vec![Op::Put("/p/n/nodes/n2/b/eth0".into(), rec("b", Some("n2")))]
        );
        // A stale entry is deleted on its revision while its owner is absent.
        assert_eq!(got[2].txn.compares[0].expect, Expect::Absent);
        assert_eq!(got[2].txn.compares[1].expect, Expect::ModRevision(2));
        assert_eq!(
            got[2].txn.ops,
            vec![Op::Delete("/p/n/nodes/n1/gone/eth0".into())]
        );
        assert!(got[2].unchanged(None, Some(&v(b"x", 2))));
        assert!(!got[2].unchanged(Some(&v(b"x", 3)), Some(&v(b"x", 2))));
    }
}
