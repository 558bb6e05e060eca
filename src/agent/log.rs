//! Structured log lines on stderr: one JSON object per line, with `ts`
//! (Unix time in milliseconds), `level`, `event` and the event's fields.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Writes one line; `fields` (an object) are merged in. Never fails.
pub fn line(level: &str, event: &str, fields: Value) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut obj = Map::new();
    obj.insert("ts".into(), ts.into());
    obj.insert("level".into(), level.into());
    obj.insert("event".into(), event.into());
    match fields {
        Value::Object(m) => obj.extend(m),
        Value::Null => {}
        other => {
            obj.insert("detail".into(), other);
        }
    }
    let mut text = Value::Object(obj).to_string();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// An `info` line.
pub fn info(event: &str, fields: Value) {
    line("info", event, fields);
}

/// A `warn` line.
pub fn warn(event: &str, fields: Value) {
    line("warn", event, fields);
}

/// An `error` line.
pub fn error(event: &str, fields: Value) {
    line("error", event, fields);
}
