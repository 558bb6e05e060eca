//! DEL of one owner ([`plan_release`]): clear its bits and delete its
//! record in one transaction (and, with sticky addresses on, bind the
//! addresses to its pod).

use super::draft::{is_full, Draft};
use super::sticky::sticky_bind;
use super::{Ctx, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::state::{Known, Lookup, Pending};
use crate::allocator::OwnerRecord;
use crate::range::Family;
use crate::store::{Compare, Key, Op, Txn};

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
