//! DEL of one owner ([`plan_release`]): clear its bits and delete its
//! record in one transaction (and, with sticky addresses on, bind the
//! addresses to its pod). When the store has no space for writes, the
//! fallback [`plan_release_record_only`] deletes the record alone.

use super::draft::Draft;
use super::sticky::sticky_bind;
use super::{Ctx, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::state::{Known, Lookup, Pending};
use crate::allocator::OwnerRecord;
use crate::range::Family;
use crate::store::{Compare, Expect, Key, Op, Txn};

/// Plans the release of one owner: clear its bits, delete its record, in one
/// transaction guarded by the record's revision. `None` if it holds nothing.
///
/// One function: every chunk and full-set it needs is asked for in one
/// batch of reads before the draft changes anything.
pub fn plan_release(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    let k = ctx.k();
    let (rev, rec) = match known.owners.get(key) {
        None => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => return Ok(Plan::new(None, Txn::default())),
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
        if matches!(known.chunk(family, idx), Lookup::Unknown) {
            want.push(Pending::Get(ctx.ks.chunk(family, k, idx)));
        }
        let fkey = ctx.ks.full(family, idx);
        if !known.full_known(&fkey) {
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
    let mut draft = Draft::new(known, ctx.net, k);
    for ip in &rec.ips {
        let chunk = draft.chunk_mut(Family::of(*ip), geometry::chunk_of(*ip, k))?;
        // A bit already clear is an inconsistency `check` reports; the
        // release still deletes the record so the owner converges.
        chunk.bits.clear(geometry::bit_of(*ip, k));
    }
    let mut txn = Txn::default();
    txn.compares.push(Compare {
        key: key.clone(),
        expect: rev,
    });
    txn.ops.push(Op::Delete(key.clone()));
    txn.read_on_conflict.push(key.clone());
    sticky_bind(ctx, known, rec, &mut txn);
    draft.finish(ctx, &mut txn)?;
    Ok(Plan::new(Some(rec.clone()), txn))
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
    known: &Known,
    key: &Key,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    match known.owners.get(key) {
        None => Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => Ok(Plan::new(None, Txn::default())),
        Some(Some((rev, rec))) => Ok(Plan::new(
            rec.as_ref().ok().cloned(),
            record_only_txn(key, rev.clone()),
        )),
    }
}

/// The fallback's transaction: every op is a deletion (what etcd still
/// applies under NOSPACE), every deletion guarded by a compare.
fn record_only_txn(key: &Key, rev: Expect) -> Txn {
    Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect: rev,
        }],
        ops: vec![Op::Delete(key.clone())],
        read_on_conflict: vec![key.clone()],
    }
}
