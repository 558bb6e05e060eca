//! DEL: of one owner ([`plan_release`]), of a batch of owners each with its
//! own result ([`plan_release_each`]), and of one owner only if its record
//! is still the one a given transaction wrote ([`plan_release_created`]).
//! All three clear the owners' bits and delete their records in one
//! transaction (and, with sticky addresses on, bind the addresses to their
//! pods) through the same per-owner step, [`release_owner`]. And the
//! counterpart of the third: [`plan_confirm_owner`] rewrites a record so
//! that such a conditional release no longer applies.
//! When the store has no space for writes, the DEL's fallback
//! [`plan_release_record_only`] deletes the record (and its per-node index
//! entry) alone.

use std::collections::BTreeMap;

use super::draft::{is_full, Draft};
use super::sticky::sticky_bind;
use super::{meta_seen, Ctx, MetaSeen, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::state::{Known, Lookup, Pending};
use crate::allocator::{OwnerRecord, MAX_TXN_OPS};
use crate::range::Family;
use crate::store::{Compare, Expect, Key, Op, Txn};

/// The reads the release of `key` still needs (the record, then every
/// chunk and full-set of its addresses), or the record (`None`: it holds
/// nothing). Nothing is changed.
fn release_reads<'k>(
    ctx: &Ctx<'_>,
    known: &'k Known,
    key: &Key,
) -> Result<Option<(Expect, &'k OwnerRecord)>, Stop> {
    let k = ctx.k();
    let (rev, rec) = match known.owners.get(key) {
        None => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => return Ok(None),
        Some(Some((expect, Ok(rec)))) => (expect.clone(), rec),
        Some(Some((_, Err(detail)))) => {
            return Err(Stop::Fail(AllocError::CorruptOwner {
                key: key.clone(),
                detail: detail.clone(),
            }))
        }
    };
    // Fetch every chunk and full-set involved in one read.
    let mut missing = Vec::new();
    for ip in &rec.ips {
        let family = Family::of(*ip);
        let idx = geometry::chunk_of(*ip, k);
        let mut want = Vec::new();
        // The full-chunk set changes only if the chunk was full: it is
        // needed when the chunk is unknown or known full (a node that
        // never read it, e.g. after an ADD that started without a read,
        // releases from a chunk with free addresses in one transaction).
        let full_matters = match known.chunk(family, idx) {
            Lookup::Unknown => {
                want.push(Pending::Get(ctx.ks.chunk(family, k, idx)));
                true
            }
            Lookup::Present(c) => is_full(ctx.net, family, k, idx, c),
            Lookup::Absent | Lookup::Corrupt(_) => false,
        };
        let fkey = ctx.ks.full(family, idx);
        if full_matters && !known.full_known(&fkey) {
            want.push(Pending::Get(fkey));
        }
        for p in want {
            if !missing.contains(&p) {
                missing.push(p);
            }
        }
    }
    if !missing.is_empty() {
        return Err(Stop::Need(missing));
    }
    Ok(Some((rev, rec)))
}

/// Adds to `txn` a compare of the network's meta record, which names its k:
/// a release planned with chunk keys of another size cannot commit, and an
/// allocator that follows the stored k learns it from the answer
/// ([`AllocError::MetaMismatch`]). Asks for the record when it is unknown.
/// A meta record that does not decode does not stop a DEL (the pod must be
/// able to terminate): the release goes on at the k in use, unguarded as
/// before this compare existed — every chunk names its own k, and decoding
/// one of another k fails — and `check` reports the record.
fn meta_guard(ctx: &Ctx<'_>, known: &Known, txn: &mut Txn) -> Result<(), Stop> {
    let expect = match meta_seen(ctx, known)? {
        MetaSeen::Absent => Expect::Absent,
        MetaSeen::AtK(expect) => expect,
        MetaSeen::Undecodable(_) => return Ok(()),
    };
    let key = ctx.ks.meta();
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.read_on_conflict.push(key);
    Ok(())
}

/// The meta guard's reads joined to `need` (one round trip for both), or
/// its failure.
fn need_with_meta(guard: Result<(), Stop>, mut need: Vec<Pending>) -> Stop {
    match guard {
        Err(Stop::Need(meta)) => {
            for p in meta {
                if !need.contains(&p) {
                    need.push(p);
                }
            }
            Stop::Need(need)
        }
        Err(fail) => fail,
        Ok(()) => Stop::Need(need),
    }
}

/// The release of one owner into a draft and a transaction shared with
/// other owners: clear its bits, compare and delete its record, bind its
/// addresses (sticky). `None` if it holds nothing. Every read it needs is
/// asked for before anything is changed, so a `Stop` leaves `draft` and
/// `txn` as they were.
fn release_owner(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
    draft: &mut Draft<'_>,
    txn: &mut Txn,
) -> Result<Option<OwnerRecord>, Stop> {
    let Some((rev, rec)) = release_reads(ctx, known, key)? else {
        return Ok(None);
    };
    let k = ctx.k();
    for ip in &rec.ips {
        let chunk = draft.chunk_mut(Family::of(*ip), geometry::chunk_of(*ip, k))?;
        // A bit already clear is an inconsistency `check` reports; the
        // release still deletes the record so the owner converges.
        chunk.bits.clear(geometry::bit_of(*ip, k));
    }
    txn.compares.push(Compare {
        key: key.clone(),
        expect: rev,
    });
    txn.ops.push(Op::Delete(key.clone()));
    // Its per-node index entry goes in the same transaction (deleting an
    // absent one, e.g. of a record written before the index, is a no-op).
    if let Some(entry) = ctx.node_entry(rec) {
        txn.ops.push(Op::Delete(entry));
    }
    txn.read_on_conflict.push(key.clone());
    sticky_bind(ctx, known, rec, txn);
    Ok(Some(rec.clone()))
}

/// Plans the release of one owner: clear its bits, delete its record (and
/// its per-node index entry), in one transaction guarded by the record's
/// revision. `None` if it holds nothing, or, with `expected`, if its record
/// is not exactly `expected` (decided before any chunk is read).
pub fn plan_release(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
    expected: Option<&OwnerRecord>,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    if let (Some(e), Some(Some((expect, Ok(rec))))) = (expected, known.owners.get(key)) {
        if e != rec {
            // Remembered bytes may be stale: only a record read in this
            // operation says the owner changed.
            if matches!(expect, Expect::Value(_)) {
                return Err(Stop::Need(vec![Pending::Get(key.clone())]));
            }
            return Ok(Plan::new(None, Txn::default()));
        }
    }
    let mut draft = Draft::new(known, ctx.net, ctx.k());
    let mut txn = Txn::default();
    let guard = meta_guard(ctx, known, &mut txn);
    if let Err(Stop::Fail(e)) = guard {
        return Err(Stop::Fail(e));
    }
    let rec = match release_owner(ctx, known, key, &mut draft, &mut txn) {
        Err(Stop::Need(need)) => return Err(need_with_meta(guard, need)),
        other => other?,
    };
    if rec.is_none() {
        return Ok(Plan::new(None, Txn::default()));
    }
    guard?;
    draft.finish(ctx, &mut txn)?;
    Ok(Plan::new(rec, txn))
}

/// Plans the release of `key` only if its record is the one the
/// transaction committed at `revision` wrote (its mod revision): a record
/// written since (the owner released and allocated again, or rewritten) is
/// left alone, and so is an absent one. The result says whether it is
/// released.
pub fn plan_release_created(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
    revision: i64,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    match known.owners.get(key) {
        // Remembered bytes say nothing about the revision: read it.
        None | Some(Some((Expect::Value(_), _))) => {
            Err(Stop::Need(vec![Pending::Get(key.clone())]))
        }
        Some(Some((Expect::ModRevision(r), Ok(_)))) if *r == revision => {
            plan_release(ctx, known, key, None)
        }
        _ => Ok(Plan::new(None, Txn::default())),
    }
}

/// Plans the confirmation of `key`'s record: the same record written again
/// (compare-and-swap on the revision read), so that a release conditioned
/// on an earlier revision ([`plan_release_created`]) no longer applies. The
/// result is the record confirmed, `None` when there is none.
pub fn plan_confirm_owner(known: &Known, key: &Key) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    match known.owners.get(key) {
        None | Some(Some((Expect::Value(_), _))) => {
            Err(Stop::Need(vec![Pending::Get(key.clone())]))
        }
        Some(None) => Ok(Plan::new(None, Txn::default())),
        Some(Some((_, Err(detail)))) => Err(Stop::Fail(AllocError::CorruptOwner {
            key: key.clone(),
            detail: detail.clone(),
        })),
        Some(Some((expect, Ok(rec)))) => {
            let bytes = serde_json::to_vec(rec).map_err(|e| AllocError::CorruptOwner {
                key: key.clone(),
                detail: e.to_string(),
            })?;
            let txn = Txn {
                compares: vec![Compare {
                    key: key.clone(),
                    expect: expect.clone(),
                }],
                ops: vec![Op::Put(key.clone(), bytes)],
                read_on_conflict: vec![key.clone()],
            };
            Ok(Plan::new(Some(rec.clone()), txn))
        }
    }
}

/// Result of one owner of [`plan_release_each`]: `None` when it is left for
/// the next transaction (this one is full), else its own result.
pub type ReleaseSlot = Option<Result<Option<OwnerRecord>, AllocError>>;

/// Whether `txn` is within etcd's limits on compares, operations and
/// conflict reads per transaction.
fn fits(txn: &Txn) -> bool {
    txn.compares.len() <= MAX_TXN_OPS
        && txn.ops.len() <= MAX_TXN_OPS
        && txn.read_on_conflict.len() <= MAX_TXN_OPS
}

/// The release of the owners `active` (indices into `keys`) in one draft:
/// per owner its record, and the transaction. Every read any of them
/// needs is asked for at once.
#[allow(clippy::type_complexity)]
fn release_set(
    ctx: &Ctx<'_>,
    known: &Known,
    keys: &[Key],
    active: &[usize],
) -> Result<(BTreeMap<usize, Option<OwnerRecord>>, Txn), Stop> {
    let mut draft = Draft::new(known, ctx.net, ctx.k());
    let mut txn = Txn::default();
    let mut out = BTreeMap::new();
    let mut missing: Vec<Pending> = Vec::new();
    match meta_guard(ctx, known, &mut txn) {
        Ok(()) => {}
        Err(Stop::Need(p)) => missing.extend(p),
        Err(fail) => return Err(fail),
    }
    let mut first: BTreeMap<&Key, usize> = BTreeMap::new();
    for &i in active {
        // The same owner twice (a repeated DEL): one release, both answered.
        if let Some(&j) = first.get(&keys[i]) {
            let rec = out.get(&j).cloned().flatten();
            out.insert(i, rec);
            continue;
        }
        first.insert(&keys[i], i);
        match release_owner(ctx, known, &keys[i], &mut draft, &mut txn) {
            Ok(rec) => {
                out.insert(i, rec);
            }
            Err(Stop::Need(p)) => {
                for p in p {
                    if !missing.contains(&p) {
                        missing.push(p);
                    }
                }
            }
            Err(Stop::Fail(e)) => return Err(Stop::Fail(e)),
        }
    }
    if !missing.is_empty() {
        return Err(Stop::Need(missing));
    }
    if !txn.ops.is_empty() {
        draft.finish(ctx, &mut txn)?;
    }
    Ok((out, txn))
}

/// Plans the release of a batch of owner keys, each with its own result: an
/// owner that cannot be released (its record does not decode, a chunk of
/// its addresses is corrupt) gets its error and the others are released
/// without it, in one transaction of at most [`MAX_TXN_OPS`] compares and
/// operations; owners that do not fit are left for the next transaction
/// (`None` in the result). Releasing an owner that holds nothing succeeds.
///
/// One loop: each round plans the owners not taken out, and halves the
/// number taken when the transaction is too large, takes out the one that
/// fails on its own, or returns.
pub fn plan_release_each(
    ctx: &Ctx<'_>,
    known: &Known,
    keys: &[Key],
) -> Result<Plan<Vec<ReleaseSlot>>, Stop> {
    let mut failed: BTreeMap<usize, AllocError> = BTreeMap::new();
    let mut take = keys.len();
    loop {
        let active: Vec<usize> = (0..keys.len())
            .filter(|i| !failed.contains_key(i))
            .take(take)
            .collect();
        match release_set(ctx, known, keys, &active) {
            Ok((_, txn)) if !fits(&txn) && active.len() > 1 => {
                take = active.len() / 2;
            }
            Ok((mut released, txn)) => {
                let result: Vec<ReleaseSlot> = (0..keys.len())
                    .map(|i| match failed.remove(&i) {
                        Some(e) => Some(Err(e)),
                        None => released.remove(&i).map(Ok),
                    })
                    .collect();
                let has_failures = result.iter().any(|r| matches!(r, Some(Err(_))));
                let mut plan = Plan::new(result, txn);
                plan.has_failures = has_failures;
                return Ok(plan);
            }
            Err(Stop::Need(p)) => return Err(Stop::Need(p)),
            // The network's meta record fails every owner alike.
            Err(Stop::Fail(e @ AllocError::MetaMismatch { .. })) => return Err(Stop::Fail(e)),
            Err(Stop::Fail(e)) => {
                // A release fails only on its own (corrupt data): find it.
                let culprit =
                    active
                        .iter()
                        .find_map(|&i| match plan_release(ctx, known, &keys[i], None) {
                            Err(Stop::Fail(e)) => Some((i, e)),
                            _ => None,
                        });
                match culprit {
                    Some((i, e)) => {
                        failed.insert(i, e);
                    }
                    None => return Err(Stop::Fail(e)),
                }
            }
        }
    }
}

/// The DEL fallback when the store has no space for writes (etcd's NOSPACE
/// alarm refuses any transaction that puts, but allows deletions): delete
/// the owner record alone, guarded by its revision, so the pod can
/// terminate. Its chunk bits stay set (no put is allowed); `check` reports
/// each as a bit without owner, reclaimable, and `repair` clears it. No
/// sticky binding is written (it would be a put). `None` if the owner
/// holds nothing. A record that does not decode is deleted all the same:
/// only its key and revision are used.
pub fn plan_release_record_only(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    match known.owners.get(key) {
        None => Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => Ok(Plan::new(None, Txn::default())),
        Some(Some((rev, rec))) => {
            let entry = rec.as_ref().ok().and_then(|r| ctx.node_entry(r));
            Ok(Plan::new(
                rec.as_ref().ok().cloned(),
                record_only_txn(key, rev.clone(), entry),
            ))
        }
    }
}

/// The fallback's transaction: every op is a deletion (what etcd still
/// applies under NOSPACE), every deletion guarded by a compare.
/// The record's per-node index entry, when it has one, is deleted with it.
fn record_only_txn(key: &Key, rev: Expect, entry: Option<Key>) -> Txn {
    let mut ops = vec![Op::Delete(key.clone())];
    ops.extend(entry.map(Op::Delete));
    Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect: rev,
        }],
        ops,
        read_on_conflict: vec![key.clone()],
    }
}
