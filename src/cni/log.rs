//! The plugin's own log: one JSON line per invocation, appended to
//! `ipam.logFile` (default: no log).
//!
//! `logLevel` picks the lines and their detail: `error` writes only the
//! invocations that failed (level `error`) or that hid a failure (level
//! `warn`: a STATUS within its grace, see [`status`](super::status)),
//! `info` (the default) writes every invocation, `debug` every invocation
//! with more fields (pid, `cniVersion`, endpoints, TLS file paths, user
//! name, node directory, `CNI_NETNS`, `CNI_ARGS`).
//!
//! A line ([`Line`]) holds the time (RFC 3339, UTC, milliseconds), the
//! level, the command, network, container id and interface, the pod (from
//! `CNI_ARGS`), the result (`ok`, or `error` with the CNI `code`, `msg` and
//! `details`), the addresses an ADD returned, the duration, and the store's
//! work: round trips (`reads` + `txns`) and CAS retries (transactions that
//! lost a compare-and-swap). It never holds a secret: no password (the
//! configured one is also masked in the free-text fields, should an error
//! ever quote it) and no key or certificate contents (only paths).
//!
//! The log settings are read on their own ([`sniff`]), leniently, from the
//! same decoded stdin as the config, so that an invocation whose config is
//! otherwise broken is still logged; the same fields are validated strictly
//! with the rest of the config (`LogSettings::parse`, code 7 naming the
//! field), so a broken log setting fails the command and is never silently
//! ignored.
//!
//! Writing never fails the CNI command: a log file that cannot be opened or
//! written leaves the result as it would be, with one line on stderr.
//!
//! Size and concurrency ([`append`]): the file is opened `O_APPEND` and each
//! line is written with one `write`, so lines of concurrent plugin processes
//! never interleave (Linux serializes appending writes to a regular file on
//! a local file system; not so on NFS). When a line would take the file past
//! `logMaxBytes` (default [`DEFAULT_MAX_BYTES`]), the file is renamed to
//! `<file>.1` (replacing the previous generation) and the line starts a new
//! file, so the log takes at most about twice the cap. Rotation takes an
//! `flock` on the file being rotated and checks, under it, that the path
//! still names that file; a process that finds it already rotated reopens
//! the path instead. A line written by a process that opened the file just
//! before a rotation lands in `<file>.1`. So lines go only the way rotation
//! sends them anyway (the generation before `<file>.1`), with one race: a
//! line that lands in `<file>.1` just as a second rotation follows the
//! first goes with that generation. A failed rename still appends the line
//! (and reports the failure); if the lock cannot be had within
//! [`ROTATE_WAIT`], the line is appended without rotating.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::env::{Command, Env};
use super::error::CniError;
use super::json::{typed, Object};
use crate::fsutil::{self, Backoff, Wait};

/// Default `logMaxBytes`: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Longest wait for the rotation lock.
pub const ROTATE_WAIT: Duration = Duration::from_millis(200);

/// Pauses between attempts on a held rotation lock: about a millisecond
/// (the holder only renames a file).
const ROTATE_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(1),
    max: Duration::from_millis(1),
};

/// Which lines are written, and how much they say (`logLevel`: `"error"`,
/// `"info"` or `"debug"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failed invocations (and graced STATUS failures) only.
    Error,
    /// Every invocation.
    Info,
    /// Every invocation, with more fields.
    Debug,
}

/// `logFile`, `logLevel`, `logMaxBytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// The file (absolute).
    pub file: PathBuf,
    /// The level.
    pub level: LogLevel,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
}

/// The log fields of the `ipam` section.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogFields {
    log_file: Option<String>,
    log_level: Option<LogLevel>,
    log_max_bytes: Option<u64>,
}

impl LogSettings {
    /// Reads the log fields of the `ipam` section (an object); `None`
    /// without `logFile`.
    pub(crate) fn parse(ipam: &Value) -> Result<Option<LogSettings>, CniError> {
        let Object(f) = typed::<Object<LogFields>>("ipam", ipam)?;
        let Some(file) = f.log_file.filter(|s| !s.is_empty()) else {
            for (key, set) in [
                ("logLevel", f.log_level.is_some()),
                ("logMaxBytes", f.log_max_bytes.is_some()),
            ] {
                if set {
                    return Err(CniError::config(
                        format!("ipam.{key}"),
                        "has no effect without ipam.logFile; set logFile or remove it",
                    ));
                }
            }
            return Ok(None);
        };
        let file = PathBuf::from(file);
        if !file.is_absolute() {
            return Err(CniError::config(
                "ipam.logFile",
                format!(
                    "{:?} is not an absolute path (the runtime's working directory is unknown)",
                    file.display()
                ),
            ));
        }
        let max_bytes = match f.log_max_bytes {
            None => DEFAULT_MAX_BYTES,
            Some(0) => {
                return Err(CniError::config(
                    "ipam.logMaxBytes",
                    "0 is out of range 1..",
                ))
            }
            Some(n) => n,
        };
        Ok(Some(LogSettings {
            file,
            level: f.log_level.unwrap_or(LogLevel::Info),
            max_bytes,
        }))
    }
}

/// What the log takes from stdin, read leniently (a field that is missing
/// or of the wrong type is absent).
#[derive(Clone, Debug, Default)]
pub struct Sniffed {
    /// The log settings, when `ipam.logFile` is given and the log fields
    /// are valid.
    pub settings: Option<LogSettings>,
    name: Option<String>,
    cni_version: Option<String>,
    endpoints: Vec<String>,
    data_dir: Option<String>,
    tls_files: Vec<(&'static str, String)>,
    username: Option<String>,
    /// Masked wherever it might appear; never written.
    password: Option<String>,
}

/// Reads the log settings and the fields the log shows from the decoded
/// stdin; without valid log settings the rest is not read.
pub fn sniff(doc: &Value) -> Sniffed {
    let Some(ipam) = doc.get("ipam").filter(|v| v.is_object()) else {
        return Sniffed::default();
    };
    let Some(settings) = LogSettings::parse(ipam).ok().flatten() else {
        return Sniffed::default();
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let endpoints = match ipam.get("endpoints") {
        Some(Value::String(s)) => s.split(',').map(|e| e.trim().to_string()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let tls_files = ["certfile", "keyfile", "trustedcafile"]
        .into_iter()
        .filter_map(|k| text(ipam.get(k)).map(|p| (k, p)))
        .collect();
    Sniffed {
        settings: Some(settings),
        name: text(doc.get("name")),
        cni_version: text(doc.get("cniVersion")),
        endpoints: endpoints.into_iter().filter(|e| !e.is_empty()).collect(),
        data_dir: text(ipam.get("dataDir")),
        tls_files,
        username: text(ipam.get("username")),
        password: text(ipam.get("password")).filter(|p| !p.is_empty()),
    }
}

/// The store's work during one invocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Read round trips.
    pub reads: u64,
    /// Transaction round trips.
    pub txns: u64,
    /// Transactions that lost their compare-and-swap (CAS retries).
    pub conflicts: u64,
}

/// One invocation, as the log sees it.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The environment, when valid.
    pub env: Option<&'a Env>,
    /// What the command answered.
    pub outcome: &'a Result<Option<String>, CniError>,
    /// When it started.
    pub started: Instant,
    /// The store's work, when a store was opened.
    pub counts: Option<StoreCounts>,
    /// A hidden failure (STATUS within its grace).
    pub note: Option<&'a str>,
}

/// One log line. Field names are those of the JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `error`, `warn` or `info`.
    pub level: &'static str,
    /// `ADD`, `DEL`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<&'static str>,
    /// The network's `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `CNI_IFNAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// `namespace/name` of `CNI_ARGS` `K8S_POD_NAMESPACE` / `K8S_POD_NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `ok` or `error`.
    pub result: &'static str,
    /// The CNI error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    /// The CNI error `msg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<&'static str>,
    /// The CNI error `details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// ADD: the addresses returned (`ip/prefix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// A failure STATUS did not report (within its grace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall time of the invocation, milliseconds (microsecond resolution).
    pub duration_ms: f64,
    /// `reads + txns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trips: Option<u64>,
    /// Read round trips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<u64>,
    /// Transaction round trips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txns: Option<u64>,
    /// Transactions that lost a compare-and-swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_retries: Option<u64>,
    /// Debug: the process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Debug: the config's `cniVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    /// Debug: etcd endpoints (user info masked), or none for the embedded
    /// store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// Debug: `dataDir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Debug: TLS file paths (`certfile`, `keyfile`, `trustedcafile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_files: Option<std::collections::BTreeMap<&'static str, String>>,
    /// Debug: the etcd user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Debug: `CNI_NETNS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Debug: `CNI_ARGS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<String>,
}

/// Builds the line of an invocation at `now`; `None` when `level` does not
/// write it.
pub fn line(
    sniffed: &Sniffed,
    level: LogLevel,
    inv: &Invocation<'_>,
    now: SystemTime,
) -> Option<Line> {
    let line_level = match (inv.outcome, inv.note) {
        (Err(_), _) => "error",
        (Ok(_), Some(_)) => "warn",
        (Ok(_), None) => "info",
    };
    if level == LogLevel::Error && line_level == "info" {
        return None;
    }
    let mask = |s: String| match &sniffed.password {
        Some(p) => s.replace(p.as_str(), "<redacted>"),
        None => s,
    };
    let env = inv.env;
    let command = env.map(|e| e.command);
    let args = env.and_then(|e| e.args.as_deref());
    let pod = args
        .and_then(|a| super::args::CniArgs::parse(a).ok())
        .and_then(|a| match (a.pod_namespace, a.pod_name) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name),
            _ => None,
        });
    let (result, code, msg, details) = match inv.outcome {
        Ok(_) => ("ok", None, None, None),
        Err(e) => (
            "error",
            Some(e.code()),
            Some(e.msg()),
            Some(mask(e.to_string())),
        ),
    };
    let addresses = match (command, inv.outcome) {
        (Some(Command::Add), Ok(Some(out))) => Some(result_addresses(out)),
        _ => None,
    };
    let debug = level == LogLevel::Debug;
    let counts = inv.counts;
    let elapsed = inv.started.elapsed();
    Some(Line {
        time: crate::timefmt::rfc3339_millis(now),
        level: line_level,
        command: command.map(Command::as_str),
        network: sniffed.name.clone(),
        container_id: env.and_then(|e| e.container_id.clone()),
        ifname: env.and_then(|e| e.ifname.clone()),
        pod,
        result,
        code,
        msg,
        details,
        addresses,
        note: inv.note.map(|n| mask(n.to_string())),
        duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        round_trips: counts.map(|c| c.reads + c.txns),
        reads: counts.map(|c| c.reads),
        txns: counts.map(|c| c.txns),
        cas_retries: counts.map(|c| c.conflicts),
        pid: debug.then(std::process::id),
        cni_version: sniffed.cni_version.clone().filter(|_| debug),
        endpoints: debug.then(|| sniffed.endpoints.iter().map(|e| mask_userinfo(e)).collect()),
        data_dir: sniffed.data_dir.clone().filter(|_| debug),
        tls_files: (debug && !sniffed.tls_files.is_empty())
            .then(|| sniffed.tls_files.iter().cloned().collect()),
        username: sniffed.username.clone().filter(|_| debug),
        netns: env.and_then(|e| e.netns.clone()).filter(|_| debug),
        cni_args: args.map(str::to_string).filter(|_| debug).map(mask),
    })
}

/// An endpoint with any `user:password@` part masked.
fn mask_userinfo(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), endpoint),
    };
    match rest.split_once('@') {
        Some((_, host)) => format!("{scheme}<redacted>@{host}"),
        None => endpoint.to_string(),
    }
}

/// The `ips[].address` of an ADD result.
fn result_addresses(out: &str) -> Vec<String> {
    serde_json::from_str::<Value>(out)
        .ok()
        .and_then(|v| {
            v.get("ips")?.as_array().map(|ips| {
                ips.iter()
                    .filter_map(|ip| ip.get("address")?.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Logs one invocation if the config asks for it. Returns a line for stderr
/// when the log cannot be written (the command's result is unaffected).
pub fn record(sniffed: &Sniffed, inv: &Invocation<'_>) -> Option<String> {
    let settings = sniffed.settings.as_ref()?;
    let line = line(sniffed, settings.level, inv, SystemTime::now())?;
    let mut bytes = match serde_json::to_vec(&line) {
        Ok(b) => b,
        Err(e) => return Some(format!("host-etcd: cannot encode a log line: {e}")),
    };
    bytes.push(b'\n');
    append(&settings.file, settings.max_bytes, &bytes)
        .err()
        .map(|e| {
            format!(
                "host-etcd: cannot write the log file {}: {e}",
                settings.file.display()
            )
        })
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Appends `line` (one whole line) to `path`, rotating to `<path>.1` first
/// when the file would grow past `max_bytes` (see the module docs).
pub fn append(path: &Path, max_bytes: u64, line: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = open(path)?;
    let mut rotation_failed = None;
    // Each round either writes to a file under the cap, rotates, or finds
    // the file rotated by another process and looks again.
    for _ in 0..4 {
        let size = file.metadata()?.len();
        if size == 0 || size.saturating_add(line.len() as u64) <= max_bytes {
            break;
        }
        match rotate(path, &file) {
            Ok(Rotation::Done | Rotation::AlreadyMoved) => file = open(path)?,
            Ok(Rotation::Busy) => break,
            Err(e) => {
                // The line still goes in; the failure is reported after.
                rotation_failed = Some(e);
                break;
            }
        }
    }
    file.write_all(line)?;
    match rotation_failed {
        None => Ok(()),
        Some(e) => Err(std::io::Error::new(
            e.kind(),
            format!(
                "line appended, but rotating to {}.1 failed: {e}",
                path.display()
            ),
        )),
    }
}

enum Rotation {
    /// This process renamed the file to `<path>.1`.
    Done,
    /// `path` no longer names the file (another process rotated it).
    AlreadyMoved,
    /// The lock could not be had in time: append without rotating.
    Busy,
}

fn rotate(path: &Path, file: &File) -> std::io::Result<Rotation> {
    if let Wait::TimedOut { .. } = fsutil::lock_within(file, ROTATE_WAIT, ROTATE_BACKOFF)? {
        return Ok(Rotation::Busy);
    }
    // Under the lock of the open file: rotate only if the path still names
    // it (the lock is released when the caller drops the file).
    let ours = file.metadata()?;
    let same =
        std::fs::metadata(path).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
    if !same {
        return Ok(Rotation::AlreadyMoved);
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::rename(path, PathBuf::from(old))?;
    Ok(Rotation::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn settings(v: Value) -> Result<Option<LogSettings>, CniError> {
        LogSettings::parse(&v)
    }

    #[test]
    fn settings_are_validated_naming_the_field() {
        assert_eq!(settings(json!({})).unwrap(), None);
        assert_eq!(settings(json!({"logFile": ""})).unwrap(), None);
        let s = settings(json!({"logFile": "/var/log/h.log"}))
            .unwrap()
            .unwrap();
        assert_eq!((s.level, s.max_bytes), (LogLevel::Info, DEFAULT_MAX_BYTES));
        let s = settings(json!({"logFile": "/l", "logLevel": "debug", "logMaxBytes": 1}))
            .unwrap()
            .unwrap();
        assert_eq!((s.level, s.max_bytes), (LogLevel::Debug, 1));
        for (bad, field) in [
            (json!({"logFile": "rel/h.log"}), "ipam.logFile"),
            (json!({"logFile": 5}), "ipam.logFile"),
            (
                json!({"logFile": "/l", "logLevel": "warn"}),
                "ipam.logLevel",
            ),
            (json!({"logFile": "/l", "logLevel": 1}), "ipam.logLevel"),
            (
                json!({"logFile": "/l", "logMaxBytes": 0}),
                "ipam.logMaxBytes",
            ),
            (
                json!({"logFile": "/l", "logMaxBytes": -1}),
                "ipam.logMaxBytes",
            ),
            (
                json!({"logFile": "/l", "logMaxBytes": "1k"}),
                "ipam.logMaxBytes",
            ),
            (json!({"logLevel": "info"}), "ipam.logLevel"),
            (json!({"logMaxBytes": 100}), "ipam.logMaxBytes"),
        ] {
            let e = settings(bad.clone()).unwrap_err();
            assert_eq!(e.code(), 7, "{bad}");
            assert!(e.to_string().starts_with(field), "{bad}: {e}");
        }
    }

    fn env(command: Command) -> Env {
        Env {
            netns: Some("/var/run/netns/x".into()),
            args: Some("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1".into()),
            path: None,
            ..crate::cni::env::test_env(command)
        }
    }

    fn sniffed(level: &str) -> Sniffed {
        let stdin = json!({
            "cniVersion": "1.1.0", "name": "net1",
            "ipam": {"logFile": "/l", "logLevel": level, "endpoints": "https://u:pw@a:1, b:2",
                     "certfile": "/c.pem", "keyfile": "/k.pem", "username": "root",
                     "password": "s3cret-pw"}
        });
        sniff(&stdin)
    }

    fn to_json(l: &Line) -> Value {
        serde_json::to_value(l).unwrap()
    }

    #[test]
    fn line_format_ok_error_and_levels() {
        let now = UNIX_EPOCH + Duration::from_millis(1_764_658_448_123);
        let e = env(Command::Add);
        let ok: Result<Option<String>, CniError> = Ok(Some(
            json!({"ips": [{"address": "10.0.0.2/24"}, {"address": "fd00::2/64"}]}).to_string(),
        ));
        let counts = Some(StoreCounts {
            reads: 1,
            txns: 2,
            conflicts: 1,
        });
        let inv = Invocation {
            env: Some(&e),
            outcome: &ok,
            started: Instant::now(),
            counts,
            note: None,
        };
        let s = sniffed("info");
        let v = to_json(&line(&s, LogLevel::Info, &inv, now).unwrap());
        assert_eq!(v["time"], "2025-12-02T06:54:08.123Z");
        assert_eq!(v["level"], "info");
        assert_eq!(v["command"], "ADD");
        assert_eq!(v["network"], "net1");
        assert_eq!(v["containerID"], "c1");
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["pod"], "ns/web-1");
        assert_eq!(v["result"], "ok");
        assert_eq!(v["addresses"], json!(["10.0.0.2/24", "fd00::2/64"]));
        assert_eq!(
            (
                v["roundTrips"].as_u64(),
                v["reads"].as_u64(),
                v["txns"].as_u64(),
                v["casRetries"].as_u64()
            ),
            (Some(3), Some(1), Some(2), Some(1))
        );
        assert!(v["durationMs"].as_f64().is_some_and(|d| d >= 0.0));
        assert!(v.get("code").is_none() && v.get("pid").is_none() && v.get("username").is_none());
        // Level error: successes are not written.
        assert!(line(&s, LogLevel::Error, &inv, now).is_none());

        // An error, quoting the password: masked.
        let err: Result<Option<String>, CniError> = Err(CniError::Store(StoreError::Unavailable(
            "dial s3cret-pw failed".into(),
        )));
        let inv = Invocation {
            env: Some(&e),
            outcome: &err,
            started: Instant::now(),
            counts: None,
            note: None,
        };
        let v = to_json(&line(&s, LogLevel::Error, &inv, now).unwrap());
        assert_eq!(
            (
                v["level"].as_str(),
                v["result"].as_str(),
                v["code"].as_u64()
            ),
            (Some("error"), Some("error"), Some(11))
        );
        assert_eq!(v["msg"], "try again later");
        assert_eq!(v["details"], "store unavailable: dial <redacted> failed");
        assert!(v.get("addresses").is_none() && v.get("roundTrips").is_none());

        // A graced STATUS is a warning, written at level error too.
        let st = env(Command::Status);
        let none: Result<Option<String>, CniError> = Ok(None);
        let inv = Invocation {
            env: Some(&st),
            outcome: &none,
            started: Instant::now(),
            counts: None,
            note: Some("hidden"),
        };
        let v = to_json(&line(&s, LogLevel::Error, &inv, now).unwrap());
        assert_eq!(
            (v["level"].as_str(), v["note"].as_str()),
            (Some("warn"), Some("hidden"))
        );
    }

    #[test]
    fn debug_adds_fields_and_never_the_password() {
        let s = sniffed("debug");
        let e = env(Command::Del);
        let ok: Result<Option<String>, CniError> = Ok(None);
        let inv = Invocation {
            env: Some(&e),
            outcome: &ok,
            started: Instant::now(),
            counts: None,
            note: None,
        };
        let l = line(&s, LogLevel::Debug, &inv, SystemTime::now()).unwrap();
        let text = serde_json::to_string(&l).unwrap();
        assert!(!text.contains("s3cret") && !text.contains(":pw@"), "{text}");
        let v = to_json(&l);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["endpoints"], json!(["https://<redacted>@a:1", "b:2"]));
        assert_eq!(
            v["tlsFiles"],
            json!({"certfile": "/c.pem", "keyfile": "/k.pem"})
        );
        assert_eq!(v["username"], "root");
        assert_eq!(v["netns"], "/var/run/netns/x");
        assert_eq!(v["cniArgs"], "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1");
    }

    #[test]
    fn sniff_is_lenient_and_needs_valid_settings() {
        for stdin in [
            &b"garbage"[..],
            b"{}",
            br#"{"ipam": 5}"#,
            br#"{"ipam": {}}"#,
            br#"{"ipam": {"logFile": "relative"}}"#,
            br#"{"ipam": {"logFile": "/l", "logLevel": "loud"}}"#,
        ] {
            assert!(
                sniff(&serde_json::from_slice(stdin).unwrap_or_default())
                    .settings
                    .is_none(),
                "{}",
                String::from_utf8_lossy(stdin)
            );
        }
        // The rest of the config may be broken.
        let s = sniff(&json!({"name": 5, "ipam": {"logFile": "/l", "ranges": "x"}}));
        assert!(s.settings.is_some() && s.name.is_none());
    }

    #[test]
    fn append_rotates_to_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/h.log");
        let old = dir.path().join("sub/h.log.1");
        let line = |i: usize| format!("{{\"n\":\"{i:04}\"}}\n"); // 13 bytes
        for i in 0..3 {
            append(&path, 40, line(i).as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            line(0) + &line(1) + &line(2)
        );
        append(&path, 40, line(3).as_bytes()).unwrap(); // 52 > 40: rotate
        assert_eq!(
            std::fs::read_to_string(&old).unwrap(),
            line(0) + &line(1) + &line(2)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line(3));
        for i in 4..8 {
            append(&path, 40, line(i).as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&old).unwrap(),
            line(3) + &line(4) + &line(5)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line(6) + &line(7));
        // A line longer than the cap goes into a file of its own.
        let long = "x".repeat(100) + "\n";
        append(&path, 40, long.as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long);
        append(&path, 40, line(9).as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), long);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// Four threads append 200 lines each (one `append` per line, as
    /// plugin processes do) with `cap` as the size limit.
    fn appenders(path: &Path, cap: u64) {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let l = format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n", "p".repeat(40));
                        append(&path, cap, l.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    fn lines_of(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
            .collect()
    }

    #[test]
    fn concurrent_appenders_lose_and_tear_no_line() {
        let dir = tempfile::tempdir().unwrap();
        // No rotation: every line of every writer, whole.
        let path = dir.path().join("big.log");
        appenders(&path, DEFAULT_MAX_BYTES);
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 800);
        for t in 0..4u64 {
            let mine: Vec<u64> = lines
                .iter()
                .filter(|v| v["t"] == t)
                .map(|v| v["i"].as_u64().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..200).collect::<Vec<_>>(),
                "thread {t}: in order, none lost"
            );
        }
        // Rotating all the time: whole lines only, both files near the cap
        // (a writer that checked the size just before another's line went
        // in may add one line over it).
        let path = dir.path().join("small.log");
        appenders(&path, 1024);
        let old = dir.path().join("small.log.1");
        assert!(!lines_of(&path).is_empty() && !lines_of(&old).is_empty());
        for p in [&path, &old] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= 1024 + 4 * 80, "{} is {len} bytes", p.display());
        }
    }
}
