//! The valid-attachments file of `ipamctl gc --valid` and `ipamctl
//! reconcile --valid`: the owners that must be kept, as the operator lists
//! them. Read by both commands ([`super::commands`]) and by the reconcile
//! pass ([`super::reconcile_run`]).

use std::path::Path;

use serde_json::Value;

use super::error::AdminError;
use crate::allocator::OwnerId;

/// Reads a valid-attachments file: a JSON list of
/// `{"containerID": ..., "ifname": ...}`.
pub fn read_valid(path: &Path) -> Result<Vec<OwnerId>, AdminError> {
    let bad = |detail: String| AdminError::Input {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let Value::Array(items) = doc else {
        return Err(bad(
            "expected a JSON list of {\"containerID\", \"ifname\"}".into()
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| -> Result<String, AdminError> {
                item.get(name)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("[{i}].{name}: missing or not a non-empty string")))
            };
            Ok(OwnerId {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}
