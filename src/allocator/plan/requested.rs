//! Static addresses: the address a request names (`ips` in `CNI_ARGS`, or
//! a sticky binding's), checked against the set and taken in the draft.
//! Used by ADD ([`super::add`]) and by the sticky path ([`super::sticky`]);
//! the dynamic search is [`super::search`].

use std::net::IpAddr;

use super::draft::Draft;
use super::{Ctx, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::geometry;
use crate::allocator::Assigned;
use crate::range::RangeSet;

/// The static address `ip` of set `set_index`, taken in the draft, when the
/// request may have it (inside the set, not reserved for another stage,
/// not excluded, allowed by the masks, free).
pub(super) fn pick_static(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    set_index: usize,
    set: &RangeSet,
    ip: IpAddr,
    stage: Option<&str>,
) -> Result<Assigned, Stop> {
    let k = ctx.k();
    let unavailable = |reason: String| Stop::Fail(AllocError::RequestedUnavailable { ip, reason });
    let Some((range_index, range)) = set.find(ip) else {
        return Err(unavailable("it is not inside any configured range".into()));
    };
    if let Some(owner_stage) = range.stage_of(ip) {
        if stage != Some(owner_stage) {
            return Err(unavailable(format!(
                "it is reserved for pods of stage {owner_stage:?}"
            )));
        }
    }
    if let Some(entry) = range.excluded_by(ip) {
        return Err(unavailable(format!(
            "it is excluded (exclude entry {entry} of range {range})"
        )));
    }
    // The same masks as dynamic allocation, so a static request can never
    // get what a dynamic one would not (e.g. another range's gateway).
    let (idx, bit) = (geometry::chunk_of(ip, k), geometry::bit_of(ip, k));
    let allowed = match stage.filter(|s| range.stage_of(ip) == Some(*s)) {
        Some(s) => geometry::staged_mask(set, s, k, idx).get(bit),
        None => geometry::normal_mask(set, k, idx).get(bit),
    };
    if !allowed {
        return Err(unavailable(
            "it is a gateway, network address or broadcast address of its range set".into(),
        ));
    }
    let chunk = draft.chunk_mut(set.family(), idx)?;
    if chunk.bits.set(bit) {
        return Err(unavailable("it is already allocated".into()));
    }
    Ok(Assigned {
        set: set_index,
        range: range_index,
        ip,
    })
}
