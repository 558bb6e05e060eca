//! Typing a decoded JSON document with serde derive, with errors that name
//! the field's full path (`ipam.ranges[0][1].subnet: invalid type: integer
//! `5`, expected a string`; the path from `serde_path_to_error`). The config
//! is decoded into one [`Value`] and typed from it (see
//! [`config`](super::config)). Optional fields are `Option`s, so JSON `null`
//! counts as absent, as in the reference plugins; unknown fields are ignored.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::error::CniError;

/// `v`, found at `at` (`""` for the document), typed as `T`; a value of the
/// wrong shape is code 7 naming the field's path.
pub(crate) fn typed<T: DeserializeOwned>(at: &str, v: &Value) -> Result<T, CniError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut field = at.to_string();
        for segment in e.path() {
            match segment {
                Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                Segment::Map { key } => field = join(&field, key),
                Segment::Enum { .. } | Segment::Unknown => {}
            }
        }
        CniError::config(display(&field), e.into_inner().to_string())
    })
}

/// Field `key` of the object `v` (at `at`) typed as `T`; `None` when absent
/// or `null`.
pub(crate) fn field<T: DeserializeOwned>(
    v: &Value,
    at: &str,
    key: &str,
) -> Result<Option<T>, CniError> {
    match v.get(key) {
        None => Ok(None),
        Some(x) => typed::<Option<T>>(&join(at, key), x),
    }
}

/// Refuses `v`, at `at`, unless it is a JSON object.
pub(crate) fn object(at: &str, v: &Value) -> Result<(), CniError> {
    if v.is_object() {
        return Ok(());
    }
    typed::<Object<IgnoredAny>>(at, v).map(drop)
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "network config"
    } else {
        path
    }
}

/// A JSON object typed as `T`. serde derive also takes an array for a
/// struct (its fields in order); the config never did, so a nested struct
/// is read through this.
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMap<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMap<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMap(PhantomData)).map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Range {
        subnet: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ipam {
        ranges: Option<Vec<Vec<Object<Range>>>>,
        budget_ms: Option<u64>,
    }

    #[test]
    fn errors_name_the_full_path() {
        let e = |v: Value| {
            typed::<Object<Ipam>>("ipam", &v)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            e(json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": 5}]]})).as_deref(),
            Some("ipam.ranges[0][1].subnet: invalid type: integer `5`, expected a string")
        );
        assert_eq!(
            e(json!({"budgetMs": -1})).as_deref(),
            Some("ipam.budgetMs: invalid value: integer `-1`, expected u64")
        );
        assert_eq!(
            e(json!({"ranges": [[["10.0.0.0/24"]]]})).as_deref(),
            Some("ipam.ranges[0][0]: invalid type: sequence, expected an object")
        );
        let ok = typed::<Object<Ipam>>("ipam", &json!({"budgetMs": null, "x": [1]}));
        assert!(
            matches!(
                ok,
                Ok(Object(Ipam {
                    ranges: None,
                    budget_ms: None
                }))
            ),
            "null is absent"
        );
        let ok = typed::<Object<Ipam>>("ipam", &json!({"ranges": [[{"subnet": "s"}]]}));
        let subnet = ok
            .ok()
            .and_then(|Object(i)| i.ranges?.pop()?.pop()?.0.subnet);
        assert_eq!(subnet.as_deref(), Some("s"));
        let root = json!({"a": null, "b": "x"});
        assert!(matches!(field::<String>(&root, "", "a"), Ok(None)));
        assert!(matches!(field::<String>(&root, "", "c"), Ok(None)));
        assert_eq!(
            field::<u64>(&root, "", "b")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("b: invalid type: string \"x\", expected u64")
        );
    }

    #[test]
    fn root_must_be_an_object() {
        let e = object("", &json!([1])).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("network config: invalid type: sequence, expected an object")
        );
    }
}
