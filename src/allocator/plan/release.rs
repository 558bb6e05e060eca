//! DEL of one owner ([`plan_release`]): clear its bits and delete its
//! record in one transaction (and, with sticky addresses on, bind the
//! addresses to its pod).

use super::draft::Draft;
use super::sticky::sticky_bind;
use super::{Ctx, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::state::{Known, Lookup, Pending};
use crate::allocator::OwnerRecord;
use crate::range::Family;
use crate::store::{Compare, Key, Op, Txn};

/// Plans the release of one owner: clear its bits, delete its record (and
/// its per-node index entry), in one transaction guarded by the record's
/// revision. `None` if it holds nothing, or, with `expected`, if its record
/// is not exactly `expected`.
///
/// One function: every chunk and full-set it needs is asked for in one
/// batch of reads before the draft changes anything.
pub fn plan_release(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
    expected: Option<&OwnerRecord>,
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
    if expected.is_some_and(|e| e != rec) {
        return Ok(Plan::new(None, Txn::default()));
    }
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
    // Its per-node index entry goes in the same transaction (deleting an
    // absent one, e.g. of a record written before the index, is a no-op).
    if let Some(entry) = ctx.node_entry(rec) {
        txn.ops.push(Op::Delete(entry));
    }
    txn.read_on_conflict.push(key.clone());
    sticky_bind(ctx, known, rec, &mut txn);
    draft.finish(ctx, &mut txn)?;
    Ok(Plan::new(Some(rec.clone()), txn))
}
