//! Owner records as stored: decoding one ([`decode_owner`], naming its key
//! when it is corrupt) and keeping those whose owner is not in a valid
//! list ([`not_in`], for GC). Used by the driver (`engine`), the per-node
//! index (`nodes`) and the consistency check (`check`).

use std::collections::HashSet;

use super::{AllocError, OwnerId, OwnerRecord};
use crate::store::Versioned;

/// Decodes an owner record, naming the key when it is corrupt.
pub(crate) fn decode_owner(key: &str, v: &Versioned) -> Result<OwnerRecord, AllocError> {
    serde_json::from_slice(&v.value).map_err(|e| AllocError::CorruptOwner {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// The records whose owner is not in `valid`.
pub(crate) fn not_in(
    valid: &[OwnerId],
    records: Vec<OwnerRecord>,
) -> impl Iterator<Item = OwnerRecord> + '_ {
    let valid: HashSet<&OwnerId> = valid.iter().collect();
    records.into_iter().filter(move |r| {
        !valid.contains(&OwnerId {
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
        })
    })
}
