//! ADD of a batch of requests in one transaction: the reads an uncontended
//! ADD needs up front, the meta record, the owner records (idempotent for
//! an owner that already holds addresses), and per range set a static,
//! sticky or dynamic address.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::draft::Draft;
use super::requested::pick_static;
use super::search::{candidates, pick_dynamic};
use super::sticky::{pick_sticky, sticky_key_of, sticky_step};
use super::{meta_seen, Ctx, MetaSeen, Outcome, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::meta::Meta;
use crate::allocator::state::{Known, Pending};
use crate::allocator::{AllocRequest, Assigned, Network, OwnerRecord};
use crate::store::{Compare, Expect, Key, Op, Txn};

/// Checks the meta record and adds to `txn` its creation when absent, or a
/// compare that it is still the record planned against.
fn meta_step(ctx: &Ctx<'_>, known: &Known, txn: &mut Txn) -> Result<(), Stop> {
    let key = ctx.ks.meta();
    let expect = match meta_seen(ctx, known)? {
        MetaSeen::Absent => {
            txn.ops
                .push(Op::Put(key.clone(), Meta::new(ctx.k()).encode()?));
            Expect::Absent
        }
        MetaSeen::AtK(expect) => expect,
        MetaSeen::Undecodable(detail) => {
            return Err(Stop::Fail(AllocError::CorruptMeta { key, detail }))
        }
    };
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.read_on_conflict.push(key);
    Ok(())
}

/// Maps a stored record's addresses back to sets and ranges of the config.
fn assigned_of(net: &Network, key: &str, rec: &OwnerRecord) -> Result<Vec<Assigned>, AllocError> {
    if rec.ips.len() != net.sets.len() {
        return Err(AllocError::StaleOwner {
            key: key.into(),
            detail: format!(
                "it holds {} address(es) but the config has {} range set(s)",
                rec.ips.len(),
                net.sets.len()
            ),
        });
    }
    rec.ips
        .iter()
        .zip(&net.sets)
        .enumerate()
        .map(|(set, (ip, s))| match s.find(*ip) {
            Some((range, _)) => Ok(Assigned {
                set,
                range,
                ip: *ip,
            }),
            None => Err(AllocError::StaleOwner {
                key: key.into(),
                detail: format!("{ip} is outside every range of range set {set}"),
            }),
        })
        .collect()
}

/// The reads that let an uncontended ADD plan without any further read:
/// owners, meta, and per dynamic set the full-set and a bounded range read
/// from its starting chunk; per static address its chunk and full-set.
pub fn initial_reads(ctx: &Ctx<'_>, reqs: &[AllocRequest]) -> Vec<Pending> {
    let k = ctx.k();
    let mut out: Vec<Pending> = vec![Pending::Get(ctx.ks.meta())];
    let mut seen = HashSet::new();
    let mut push = |p: Pending, out: &mut Vec<Pending>| {
        if seen.insert(format!("{p:?}")) {
            out.push(p);
        }
    };
    for req in reqs {
        if let Ok(key) = ctx.ks.owner(&req.owner.container_id, &req.owner.ifname) {
            push(Pending::Get(key), &mut out);
        }
        if let Some(key) = sticky_key_of(ctx, req) {
            push(Pending::Get(key), &mut out);
        }
        let statics = map_requested(ctx.net, &req.requested).unwrap_or_default();
        for (i, set) in ctx.net.sets.iter().enumerate() {
            let family = set.family();
            if let Some(ip) = statics.get(&i) {
                let idx = geometry::chunk_of(*ip, k);
                push(Pending::Get(ctx.ks.chunk(family, k, idx)), &mut out);
                push(Pending::Get(ctx.ks.full(family, idx)), &mut out);
                continue;
            }
            let (cands, start) = candidates(ctx, i, set, req.stage.as_deref());
            let Some(idx) = cands.nth(start.ord) else {
                continue;
            };
            push(Pending::Get(ctx.ks.full(family, idx)), &mut out);
            push(
                Pending::Chunks {
                    family,
                    lo: idx,
                    hi: cands.run_end(idx),
                    limit: ctx.read_limit,
                },
                &mut out,
            );
        }
    }
    out
}

/// Which requested address goes to which set.
fn map_requested(
    net: &Network,
    requested: &[IpAddr],
) -> Result<BTreeMap<usize, IpAddr>, AllocError> {
    let mut out = BTreeMap::new();
    for ip in requested {
        let Some(i) = net.sets.iter().position(|s| s.find(*ip).is_some()) else {
            return Err(AllocError::RequestedUnavailable {
                ip: *ip,
                reason: "it is not inside any configured range (rangeStart..rangeEnd)".into(),
            });
        };
        if let Some(prev) = out.insert(i, *ip) {
            return Err(AllocError::RequestedUnavailable {
                ip: *ip,
                reason: format!("{prev} is also requested from range set {i}; one address per set"),
            });
        }
    }
    Ok(out)
}

/// Plans an ADD of a batch of requests (one transaction).
///
/// One function because the batch's bookkeeping — owners and bindings seen,
/// the draft, the positions moved — spans every request and the
/// transaction's end.
pub fn plan_add(
    ctx: &Ctx<'_>,
    known: &Known,
    reqs: &[AllocRequest],
) -> Result<Plan<Vec<Outcome>>, Stop> {
    let k = ctx.k();
    let mut txn = Txn::default();
    meta_step(ctx, known, &mut txn)?;
    let mut draft = Draft::new(known, ctx.net, k);
    let mut outcomes = Vec::with_capacity(reqs.len());
    let mut moved = Vec::new();
    let mut owners_seen = HashSet::new();
    let mut bindings_seen = HashSet::new();
    for req in reqs {
        let key = ctx
            .ks
            .owner(&req.owner.container_id, &req.owner.ifname)
            .map_err(AllocError::from)?;
        if !owners_seen.insert(key.clone()) {
            return Err(Stop::Fail(AllocError::DuplicateOwner(key)));
        }
        match known.owners.get(&key) {
            None => return Err(Stop::Need(vec![Pending::Get(key)])),
            Some(Some((_, Ok(rec)))) => {
                let assigned = assigned_of(ctx.net, &key, rec)?;
                outcomes.push(Outcome::Existing(rec.clone(), assigned));
                continue;
            }
            Some(Some((_, Err(detail)))) => {
                return Err(Stop::Fail(AllocError::CorruptOwner {
                    key,
                    detail: detail.clone(),
                }))
            }
            Some(None) => {}
        }
        let statics = map_requested(ctx.net, &req.requested)?;
        let bound = sticky_step(ctx, known, req, &mut bindings_seen, &mut txn)?;
        let assigned = pick_addresses(
            ctx,
            &mut draft,
            &mut txn,
            req,
            (&statics, &bound),
            &mut moved,
        )?;
        let rec = put_owner(ctx, req, key, &assigned, &mut txn)?;
        outcomes.push(Outcome::New(rec, assigned));
    }
    if outcomes.iter().all(|o| matches!(o, Outcome::Existing(..))) {
        return Ok(Plan::new(outcomes, Txn::default()));
    }
    draft.finish(ctx, &mut txn)?;
    if ctx.sticky_ttl.is_some() {
        // `pick_sticky` may compare a chunk the draft compares too.
        dedup_keys(&mut txn);
    }
    Ok(Plan {
        result: outcomes,
        txn,
        moved,
        has_failures: false,
    })
}

/// One address per range set for a request whose owner holds nothing yet:
/// the static address it asks for, else its sticky address when still
/// free, else a dynamic one. Adds to `moved` where the node's next search
/// of a set starts (after a dynamic, unstaged address only).
fn pick_addresses(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    txn: &mut Txn,
    req: &AllocRequest,
    (statics, bound): (&BTreeMap<usize, IpAddr>, &[IpAddr]),
    moved: &mut Vec<(usize, u128)>,
) -> Result<Vec<Assigned>, Stop> {
    let mut assigned = Vec::with_capacity(ctx.net.sets.len());
    for (i, set) in ctx.net.sets.iter().enumerate() {
        // Static requests win over a sticky binding.
        let sticky = match statics.get(&i) {
            Some(_) => None,
            None => pick_sticky(ctx, draft, txn, (i, set), bound, req.stage.as_deref())?,
        };
        let a = match (statics.get(&i), sticky) {
            // A static request does not move the node's position.
            (Some(ip), _) => pick_static(ctx, draft, i, set, *ip, req.stage.as_deref())?,
            // Neither does a sticky address.
            (None, Some(a)) => a,
            (None, None) => {
                let a = pick_dynamic(ctx, draft, i, set, req.stage.as_deref())?;
                if !req.stage.as_deref().is_some_and(|s| set.has_stage(s)) {
                    moved.push((i, crate::range::to_u128(a.ip).wrapping_add(1)));
                }
                a
            }
        };
        assigned.push(a);
    }
    Ok(assigned)
}

/// The owner record of a new allocation, and its creation in `txn`
/// (compared absent).
fn put_owner(
    ctx: &Ctx<'_>,
    req: &AllocRequest,
    key: Key,
    assigned: &[Assigned],
    txn: &mut Txn,
) -> Result<OwnerRecord, AllocError> {
    let rec = OwnerRecord {
        container_id: req.owner.container_id.clone(),
        ifname: req.owner.ifname.clone(),
        ips: assigned.iter().map(|a| a.ip).collect(),
        created: ctx.now,
        pod_namespace: req.pod_namespace.clone(),
        pod_name: req.pod_name.clone(),
        node: Some(ctx.node.to_string()).filter(|n| crate::allocator::keys::key_safe(n)),
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| AllocError::Encode {
        what: "owner record",
        reason: e.to_string(),
    })?;
    txn.compares.push(Compare {
        key: key.clone(),
        expect: Expect::Absent,
    });
    // The per-node index entry rides on the owner's `Absent` compare: it is
    // written exactly when the record is, with the same bytes.
    if let Some(entry) = ctx.node_entry(&rec) {
        txn.ops.push(Op::Put(entry, bytes.clone()));
    }
    txn.ops.push(Op::Put(key.clone(), bytes));
    txn.read_on_conflict.push(key);
    Ok(rec)
}

/// Drops repeated compares (same key and expectation) and conflict reads.
fn dedup_keys(txn: &mut Txn) {
    let mut seen = HashSet::new();
    txn.compares
        .retain(|c| seen.insert((c.key.clone(), format!("{:?}", c.expect))));
    let mut seen = HashSet::new();
    txn.read_on_conflict.retain(|k| seen.insert(k.clone()));
}
