//! Sticky addresses (`Ctx::sticky_ttl`), the protocol side.
//!
//! DEL of an owner record naming its pod puts a `Binding` of its addresses at
//! `{p}/{net}/sticky/{ns}/{name}/{ifname}` in the transaction that frees them.
//! The next ADD of that pod and interface (any container ID) reads the
//! binding, takes each bound address that is still free in its chunk and
//! allowed by the masks (as a static request would, but falling back to a
//! dynamic address for that set instead of failing), and deletes the binding
//! in its transaction. Bound addresses are only preferred, never reserved:
//! dynamic allocation does not look at bindings. A binding that does not
//! decode is ignored by ADD and left untouched by ADD and DEL (`ipamctl
//! bindings list` shows it, `ipamctl bindings release` deletes it).

use std::collections::HashSet;
use std::net::IpAddr;

use super::draft::Draft;
use super::requested::pick_static;
use super::{Ctx, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::state::{Known, Lookup, Pending};
use crate::allocator::{AllocRequest, Assigned, Binding, OwnerRecord};
use crate::range::RangeSet;
use crate::store::{Compare, Expect, Key, Op, Txn};

/// The binding key of a request when sticky addresses are on and it names
/// its pod (namespace and name, both usable in a key).
pub fn sticky_key_of(ctx: &Ctx<'_>, req: &AllocRequest) -> Option<Key> {
    sticky_key(
        ctx,
        req.pod_namespace.as_deref(),
        req.pod_name.as_deref(),
        &req.owner.ifname,
    )
}

fn sticky_key(ctx: &Ctx<'_>, ns: Option<&str>, name: Option<&str>, ifname: &str) -> Option<Key> {
    ctx.sticky_ttl?;
    ctx.ks.sticky(ns?, name?, ifname).ok()
}

/// ADD: consumes the request's binding (a compare on it, and its deletion
/// when present) and returns the addresses it still offers (none when
/// absent, expired or corrupt). A compare on an absent binding is what lets
/// a warm ADD, which assumes it absent without reading, learn of it: the
/// conflict answer carries it. Two requests of one batch never use the same
/// binding.
pub(super) fn sticky_step(
    ctx: &Ctx<'_>,
    known: &Known,
    req: &AllocRequest,
    seen: &mut HashSet<Key>,
    txn: &mut Txn,
) -> Result<Vec<IpAddr>, Stop> {
    let Some(key) = sticky_key_of(ctx, req) else {
        return Ok(Vec::new());
    };
    if !seen.insert(key.clone()) {
        return Ok(Vec::new());
    }
    let (expect, ips) = match known.bindings.get(&key) {
        None => return Err(Stop::Need(vec![Pending::Get(key)])),
        Some(None) => (Expect::Absent, Vec::new()),
        // Corrupt: ignored and never overwritten.
        Some(Some((_, Err(_)))) => return Ok(Vec::new()),
        Some(Some((expect, Ok(b)))) if b.expired(ctx.now) => (expect.clone(), Vec::new()),
        Some(Some((expect, Ok(b)))) => (expect.clone(), b.ips.clone()),
    };
    if expect != Expect::Absent {
        txn.ops.push(Op::Delete(key.clone()));
    }
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.read_on_conflict.push(key);
    Ok(ips)
}

/// ADD: the bound address of set `set_index`, if there is one and it can be
/// given as a static request could (inside the set, not excluded, not a
/// gateway, not reserved for another stage, free in its chunk); `None`
/// otherwise (the set gets a dynamic address).
///
/// One function: each early return is one reason the bound address is not
/// taken, checked before the draft is touched.
pub(super) fn pick_sticky(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    txn: &mut Txn,
    (set_index, set): (usize, &RangeSet),
    bound: &[IpAddr],
    stage: Option<&str>,
) -> Result<Option<Assigned>, Stop> {
    let k = ctx.k();
    let Some(ip) = bound.iter().copied().find(|ip| set.find(*ip).is_some()) else {
        return Ok(None);
    };
    // A staged request whose set has reservations for its stage only takes
    // a bound address among them (as dynamic allocation would).
    if let Some(s) = stage.filter(|s| set.has_stage(s)) {
        if set.find(ip).and_then(|(_, r)| r.stage_of(ip)) != Some(s) {
            return Ok(None);
        }
    }
    let (family, idx) = (set.family(), geometry::chunk_of(ip, k));
    // Look before touching the draft: a taken address costs no chunk write.
    match draft.view(family, idx) {
        Lookup::Unknown => {
            return Err(Stop::Need(vec![
                Pending::Get(ctx.ks.chunk(family, k, idx)),
                Pending::Get(ctx.ks.full(family, idx)),
            ]))
        }
        Lookup::Present(c) if c.bits.get(geometry::bit_of(ip, k)) => {
            // Taken as far as a remembered (node cache) value tells: compare
            // that value, so that a stale memory (the address was freed
            // since) conflicts and the plan is redone on the current chunk
            // instead of silently giving up the sticky address.
            if !draft.drafted(family, idx) {
                if let expect @ Expect::Value(_) = draft.known().chunk_expect(family, idx) {
                    let key = ctx.ks.chunk(family, k, idx);
                    txn.compares.push(Compare {
                        key: key.clone(),
                        expect,
                    });
                    txn.read_on_conflict.push(key);
                }
            }
            return Ok(None);
        }
        Lookup::Corrupt(_) => return Ok(None),
        _ => {}
    }
    match pick_static(ctx, draft, set_index, set, ip, stage) {
        Ok(a) => Ok(Some(a)),
        Err(Stop::Fail(AllocError::RequestedUnavailable { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// DEL: binds the released addresses to the owner's pod (a put of its
/// binding). An unknown binding is assumed absent (compared absent: a DEL
/// costs no extra read, and a conflict answer brings the real value); a
/// present one is overwritten (the last DEL of the pod wins); a corrupt one
/// is left alone and no binding is made.
pub(super) fn sticky_bind(ctx: &Ctx<'_>, known: &Known, rec: &OwnerRecord, txn: &mut Txn) {
    let Some(ttl) = ctx.sticky_ttl else { return };
    let Some(key) = sticky_key(
        ctx,
        rec.pod_namespace.as_deref(),
        rec.pod_name.as_deref(),
        &rec.ifname,
    ) else {
        return;
    };
    let expect = match known.bindings.get(&key) {
        None | Some(None) => Expect::Absent,
        Some(Some((_, Err(_)))) => return,
        Some(Some((expect, Ok(_)))) => expect.clone(),
    };
    let binding = Binding {
        namespace: rec.pod_namespace.clone().unwrap_or_default(),
        name: rec.pod_name.clone().unwrap_or_default(),
        ifname: rec.ifname.clone(),
        ips: rec.ips.clone(),
        released_at: ctx.now,
        expires_at: ctx.now.saturating_add(ttl),
        container_id: rec.container_id.clone(),
    };
    // Like a corrupt binding: no binding is made (it is only a preference
    // for the pod's next container; the release itself goes on).
    let Ok(bytes) = serde_json::to_vec(&binding) else {
        return;
    };
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.ops.push(Op::Put(key.clone(), bytes));
    txn.read_on_conflict.push(key);
}

/// Plans the deletion of the binding `key` (`ipamctl bindings release`,
/// `expire`): with `expired_at`, only if it has expired at that time (and
/// a corrupt one is left alone); without, whatever it holds. The result is
/// what was deleted (`Err`: the undecodable bytes' error).
pub fn plan_drop_binding(
    known: &Known,
    key: &Key,
    expired_at: Option<u64>,
) -> Result<Plan<Option<Result<Binding, String>>>, Stop> {
    let (expect, value) = match known.bindings.get(key) {
        None => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => return Ok(Plan::new(None, Txn::default())),
        Some(Some((expect, value))) => (expect.clone(), value.clone()),
    };
    let keep = match (&value, expired_at) {
        (_, None) => false,
        (Ok(b), Some(now)) => !b.expired(now),
        (Err(_), Some(_)) => true,
    };
    if keep {
        return Ok(Plan::new(None, Txn::default()));
    }
    let txn = Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect,
        }],
        ops: vec![Op::Delete(key.clone())],
        read_on_conflict: vec![key.clone()],
    };
    Ok(Plan::new(Some(value), txn))
}
