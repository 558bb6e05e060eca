//! A network config read from a file, as an operator tool reads the file a
//! runtime would pass on stdin: a `.conf` as it is, a `.conflist` as its
//! first plugin with an `ipam` section, given the list's `name` and
//! `cniVersion`.

use std::path::Path;

use serde_json::Value;

use super::config::NetConf;

/// Reads and parses the network config in `path` (`.conf` or
/// `.conflist`). The error says what is wrong, without the path.
pub fn read_config_file(path: &Path) -> Result<NetConf, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let bytes = match doc.get("plugins") {
        Some(Value::Array(plugins)) => {
            let plugin = plugins
                .iter()
                .find(|p| p.get("ipam").is_some())
                .ok_or("no plugin in \"plugins\" has an \"ipam\" section")?;
            let mut merged = plugin.clone();
            if let Value::Object(m) = &mut merged {
                for field in ["name", "cniVersion"] {
                    if let Some(v) = doc.get(field) {
                        m.insert(field.into(), v.clone());
                    }
                }
            }
            serde_json::to_vec(&merged).map_err(|e| e.to_string())?
        }
        _ => bytes,
    };
    NetConf::parse(&bytes).map_err(|e| e.to_string())
}
