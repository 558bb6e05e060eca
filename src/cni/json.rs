//! Reading fields out of a decoded JSON document with errors that name the
//! field's full path (`ipam.ranges[0][1].subnet: expected a string, found a
//! number`). JSON `null` counts as absent, as in the reference plugins.

use serde_json::{Map, Value};

use super::error::CniError;

/// A JSON object and its path in the document.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Obj<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
}

/// Name of a JSON value's type, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(path: &str, expected: &str, v: &Value) -> CniError {
    CniError::config(path, format!("expected {expected}, found {}", kind(v)))
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `v` as an object at `path`.
pub(crate) fn as_obj<'a>(path: &'a str, v: &'a Value) -> Result<Obj<'a>, CniError> {
    match v {
        Value::Object(map) => Ok(Obj { path, map }),
        other => Err(wrong(display(path), "an object", other)),
    }
}

/// `v` as a string at `path`.
pub(crate) fn as_str<'a>(path: &str, v: &'a Value) -> Result<&'a str, CniError> {
    v.as_str().ok_or_else(|| wrong(path, "a string", v))
}

/// `v` as an array at `path`, each item with its own path.
pub(crate) fn as_items<'a>(path: &str, v: &'a Value) -> Result<Vec<(String, &'a Value)>, CniError> {
    match v {
        Value::Array(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{path}[{i}]"), item))
            .collect()),
        other => Err(wrong(path, "an array", other)),
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "network config"
    } else {
        path
    }
}

impl<'a> Obj<'a> {
    /// The object's own path.
    pub(crate) fn path(&self) -> &'a str {
        self.path
    }

    /// The path of one of its fields.
    pub(crate) fn field(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// A field's value; `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string field.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, CniError> {
        self.get(key)
            .map(|v| as_str(&self.field(key), v))
            .transpose()
    }

    /// An optional non-negative integer field.
    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, CniError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| wrong(&self.field(key), "a non-negative integer", v))
            })
            .transpose()
    }

    /// An optional array field, each item with its path.
    pub(crate) fn items(&self, key: &str) -> Result<Option<Vec<(String, &'a Value)>>, CniError> {
        self.get(key)
            .map(|v| as_items(&self.field(key), v))
            .transpose()
    }

    /// An optional array-of-strings field.
    pub(crate) fn strs(&self, key: &str) -> Result<Option<Vec<String>>, CniError> {
        let Some(items) = self.items(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|(p, v)| as_str(p, v).map(str::to_string))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_full_path() {
        let v = json!({"ipam": {"ranges": [[{"subnet": 5}]], "budgetMs": -1, "x": null}});
        let root = as_obj("", &v).expect("object");
        let ipam_v = root.get("ipam").expect("ipam");
        let path = root.field("ipam");
        let ipam = as_obj(&path, ipam_v).expect("object");
        let sets = ipam.items("ranges").expect("array").expect("present");
        let (p0, set0) = &sets[0];
        let ranges = as_items(p0, set0).expect("array");
        let (p00, r) = &ranges[0];
        let r = as_obj(p00, r).expect("object");
        let e = r.str("subnet").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("ipam.ranges[0][0].subnet: expected a string, found a number")
        );
        let e = ipam.u64("budgetMs").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("ipam.budgetMs: expected a non-negative integer, found a number")
        );
        assert!(matches!(ipam.str("x"), Ok(None)), "null is absent");
        assert!(matches!(ipam.strs("missing"), Ok(None)));
    }

    #[test]
    fn root_must_be_an_object() {
        let v = json!([1]);
        let e = as_obj("", &v).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("network config: expected an object, found an array")
        );
    }
}
