//! The STATUS policy: when a failing store makes STATUS answer "plugin not
//! available" (code 50).
//!
//! A failed CNI STATUS makes the runtime (containerd 2.0.1 and later, CRI-O)
//! report the network not ready, and the kubelet marks the node NotReady.
//! STATUS runs on every node against the same etcd, so answering 50 on every
//! short etcd blip would take every node of the cluster down at once. So by
//! default ([`StatusPolicy::Grace`]) a store that does not answer is
//! reported only once it has failed for `statusGraceMs` (default
//! [`DEFAULT_GRACE`]):
//!
//! * The current failure streak is kept node-locally in the node
//!   directory, `status.<network>.<host>.json` next to the node cache
//!   ([`StreakFile`]): `{"failingSinceMs": <Unix ms>, "lastFailureMs":
//!   <Unix ms>, "error": "..."}`, written to a temporary file and renamed,
//!   so readers see a whole file or none.
//! * A STATUS whose store does not answer (code 11: unreachable, no quorum,
//!   deadline, lock wait) starts a streak if there is none, else records
//!   itself as the streak's last failure; it succeeds (exit 0, a note on
//!   stderr and in the log) while the streak is younger than the grace, and
//!   from then on it is code 50.
//! * A streak whose last failure is older than the grace, and at least
//!   [`STALE_AFTER_MIN`], is stale (nobody asked for a while, so nobody
//!   knows the store failed all along): the failure starts a new streak.
//! * Any STATUS that reaches the store clears the streak, and so does any
//!   ADD, DEL, CHECK or GC that got an answer from it (success, or codes 3,
//!   100, 101, 103).
//! * A missing, unreadable or garbage file, or one whose time lies in the
//!   future (the wall clock went back), is no streak: the failure starts a
//!   new one now.
//! * If the file cannot be written (the node directory is not writable),
//!   the grace cannot be tracked, and the failure is reported at once.
//!
//! Errors that are not an unreachable store are never graced: a broken
//! config (codes 1, 2, 4, 6, 7) is reported with its own code at once; any
//! other error (I/O on the embedded store, a refused login, corrupt state)
//! is code 50 at once. [`StatusPolicy::Strict`] (`"statusPolicy":
//! "strict"`), or a grace of 0, reports every failure at once and keeps no
//! file.
//!
//! The streak is kept per node, not shared: each node times its own view of
//! the store. The time is the wall clock (the streak outlives processes).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::NetConf;
use super::error::{self, CniError};
use super::node::NodeFiles;

/// Default `statusGraceMs`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// A streak not seen failing for this long (or the grace, if longer) is
/// stale: runtimes ask STATUS every few seconds, so a longer silence means
/// nobody watched the store fail.
pub const STALE_AFTER_MIN: Duration = Duration::from_secs(60);

/// How STATUS reports a store that does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPolicy {
    /// Code 50 only once the failure streak is this old (`statusPolicy`
    /// `"grace"`, the default).
    Grace(Duration),
    /// Code 50 on every failure (`statusPolicy` `"strict"`).
    Strict,
}

impl Default for StatusPolicy {
    fn default() -> Self {
        StatusPolicy::Grace(DEFAULT_GRACE)
    }
}

impl StatusPolicy {
    /// The grace, `None` when every failure is reported at once.
    fn grace(self) -> Option<Duration> {
        match self {
            StatusPolicy::Grace(g) if !g.is_zero() => Some(g),
            _ => None,
        }
    }
}

/// The failure-streak file of one network on this node.
#[derive(Clone, Debug)]
pub struct StreakFile {
    path: PathBuf,
}

/// The file's content.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Streak {
    failing_since_ms: u64,
    /// Absent in a hand-written file: the start.
    #[serde(default)]
    last_failure_ms: Option<u64>,
    #[serde(default)]
    error: String,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

impl StreakFile {
    /// The file of network `name` and node `host` in `dir`: named like the
    /// node cache of [`NodeFiles`] (same host name rule), with `status.`
    /// in place of `node-cache.`.
    pub fn new(dir: &Path, name: &str, host: &str) -> StreakFile {
        let cache = NodeFiles::new(dir, name, host, "");
        let file = cache
            .cache_path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("node-cache."))
            .map_or_else(|| format!("{name}._.json"), str::to_string);
        StreakFile {
            path: dir.join(format!("status.{file}")),
        }
    }

    /// The file of the config's network on this host.
    pub fn of(conf: &NetConf) -> StreakFile {
        StreakFile::new(
            &conf.ipam.node_dir,
            &conf.name,
            &crate::allocator::local_hostname(),
        )
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the current streak began; `None` for a missing, unreadable or
    /// garbage file, or a time after `now`.
    pub fn since(&self, now: SystemTime) -> Option<SystemTime> {
        self.read(now).map(|(since, _)| since)
    }

    /// The streak's start and last failure, both at or before `now`.
    fn read(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        // An object only (serde would take `[since, last]` as well).
        let streak: Streak = serde_json::from_value(v.is_object().then_some(v)?).ok()?;
        let since = from_ms(streak.failing_since_ms)?;
        let last = from_ms(streak.last_failure_ms.unwrap_or(streak.failing_since_ms))?;
        (since <= last && last <= now).then_some((since, last))
    }

    /// Starts a streak at `since` (temporary file + rename).
    pub fn start(&self, since: SystemTime, error: &str) -> std::io::Result<()> {
        self.write(since, since, error)
    }

    /// Writes a streak that began at `since` and last failed at `last`.
    fn write(&self, since: SystemTime, last: SystemTime, error: &str) -> std::io::Result<()> {
        let body = serde_json::to_vec(&Streak {
            failing_since_ms: to_ms(since),
            last_failure_ms: Some(to_ms(last)),
            error: error.to_string(),
        })
        .map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Ends the streak (removes the file; a missing file is fine).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Codes of a broken config or invocation: STATUS reports them as they are.
const CONFIG_CODES: [u32; 5] = [
    error::CODE_INCOMPATIBLE_VERSION,
    error::CODE_UNSUPPORTED_FIELD,
    error::CODE_INVALID_ENV,
    error::CODE_DECODE,
    error::CODE_INVALID_CONFIG,
];

/// Codes of a command that got an answer from the store (it is up).
const ANSWERED_CODES: [u32; 4] = [
    error::CODE_UNKNOWN_CONTAINER,
    error::CODE_ADDRESS_UNAVAILABLE,
    error::CODE_POOL_EXHAUSTED,
    error::CODE_CHECK_MISMATCH,
];

/// What STATUS answers.
#[derive(Debug)]
pub struct Verdict {
    /// Success, or the error to report.
    pub result: Result<(), CniError>,
    /// For a failure within the grace: what was hidden, for stderr and the
    /// log.
    pub note: Option<String>,
}

/// Applies `policy` to the outcome of STATUS's store check at `now`,
/// keeping `file` up to date.
pub fn decide(
    policy: StatusPolicy,
    file: &StreakFile,
    outcome: Result<(), CniError>,
    now: SystemTime,
) -> Verdict {
    let verdict = |result| Verdict { result, note: None };
    let e = match outcome {
        Ok(()) => {
            file.clear();
            return verdict(Ok(()));
        }
        Err(e) if CONFIG_CODES.contains(&e.code()) => return verdict(Err(e)),
        Err(e) => e,
    };
    let not_available = |why: String| verdict(Err(CniError::NotAvailable(why)));
    let Some(grace) = policy
        .grace()
        .filter(|_| e.code() == error::CODE_TRY_AGAIN_LATER)
    else {
        return not_available(e.to_string());
    };
    let grace_ms = grace.as_millis();
    // A streak goes on only if its last failure is recent; else it starts
    // now. Either way this failure is recorded as the last one.
    let since = file
        .read(now)
        .filter(|(_, last)| {
            now.duration_since(*last).unwrap_or_default() <= grace.max(STALE_AFTER_MIN)
        })
        .map_or(now, |(since, _)| since);
    if let Err(io) = file.write(since, now, &e.to_string()) {
        return not_available(format!(
            "{e} (reported at once: the STATUS state file {} cannot be written ({io}), so statusGraceMs {grace_ms} cannot be tracked)",
            file.path().display()
        ));
    }
    let failing = now.duration_since(since).unwrap_or_default();
    let failing_ms = failing.as_millis();
    if failing >= grace {
        return not_available(format!(
            "{e} (failing for {failing_ms} ms, statusGraceMs is {grace_ms})"
        ));
    }
    Verdict {
        result: Ok(()),
        note: Some(format!(
            "STATUS reports available although the store is failing: failing for {failing_ms} ms, within statusGraceMs {grace_ms} (code 50 in {} ms if it goes on): {e}",
            (grace - failing).as_millis()
        )),
    }
}

/// After ADD, DEL, CHECK or GC: a command that got an answer from the store
/// ends a failure streak.
pub fn after_command(conf: &NetConf, outcome: &Result<Option<String>, CniError>) {
    let answered = match outcome {
        Ok(_) => true,
        Err(e) => ANSWERED_CODES.contains(&e.code()),
    };
    if answered {
        StreakFile::of(conf).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn down() -> Result<(), CniError> {
        Err(CniError::Store(StoreError::Unavailable("etcd down".into())))
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn code(v: &Verdict) -> Option<u32> {
        v.result.as_ref().err().map(CniError::code)
    }

    #[test]
    fn a_streak_is_graced_then_reported_and_cleared_by_success() {
        let dir = tempfile::tempdir().unwrap();
        let file = StreakFile::new(dir.path(), "net", "n1");
        assert_eq!(
            file.path(),
            dir.path().join("status.net.n1.json"),
            "named like the node cache"
        );
        let policy = StatusPolicy::Grace(Duration::from_secs(60));
        let v = decide(policy, &file, down(), at(0));
        assert_eq!(code(&v), None);
        assert!(v.note.as_deref().unwrap().contains("etcd down"), "{v:?}");
        assert_eq!(file.since(at(1)), Some(at(0)));
        let v = decide(policy, &file, down(), at(59_999));
        assert_eq!(code(&v), None, "still within");
        assert_eq!(
            file.since(at(59_999)),
            Some(at(0)),
            "the streak keeps its start"
        );
        let v = decide(policy, &file, down(), at(60_000));
        assert_eq!(code(&v), Some(50));
        assert!(v.note.is_none());
        let details = v.result.unwrap_err().to_string();
        assert!(details.contains("failing for 60000 ms"), "{details}");
        let v = decide(policy, &file, Ok(()), at(61_000));
        assert!(v.result.is_ok());
        assert!(!file.path().exists(), "success ends the streak");
        let v = decide(policy, &file, down(), at(200_000));
        assert_eq!(code(&v), None, "a new streak starts graced");
    }

    #[test]
    fn a_streak_not_seen_failing_for_longer_than_the_grace_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = StreakFile::new(dir.path(), "net", "n1");
        let policy = StatusPolicy::Grace(Duration::from_secs(60));
        // Failures every 30 s: one streak, 50 after 60 s.
        for t in [0, 30_000] {
            assert_eq!(code(&decide(policy, &file, down(), at(t))), None);
        }
        assert_eq!(code(&decide(policy, &file, down(), at(60_000))), Some(50));
        // Then nobody asks for two minutes: the next failure starts anew.
        assert_eq!(code(&decide(policy, &file, down(), at(180_001))), None);
        assert_eq!(file.since(at(180_001)), Some(at(180_001)));
        // A short grace is stale only after STALE_AFTER_MIN.
        let short = StatusPolicy::Grace(Duration::from_secs(2));
        file.clear();
        assert_eq!(code(&decide(short, &file, down(), at(0))), None);
        assert_eq!(code(&decide(short, &file, down(), at(59_000))), Some(50));
        assert_eq!(
            code(&decide(short, &file, down(), at(119_001))),
            None,
            "stale"
        );
        // A hand-written file without lastFailureMs: its start counts.
        std::fs::write(
            file.path(),
            format!("{{\"failingSinceMs\": {}}}", to_ms(at(0))),
        )
        .unwrap();
        assert_eq!(code(&decide(policy, &file, down(), at(59_000))), None);
        assert_eq!(file.since(at(59_000)), Some(at(0)));
        assert_eq!(code(&decide(policy, &file, down(), at(61_000))), Some(50));
    }

    #[test]
    fn garbage_or_future_files_are_no_streak() {
        let dir = tempfile::tempdir().unwrap();
        let file = StreakFile::new(dir.path(), "net", "n1");
        let policy = StatusPolicy::Grace(Duration::from_secs(60));
        for garbage in [
            &b"{garbage"[..],
            b"",
            b"{\"failingSinceMs\": -5}",
            b"[1,2]",
            b"{\"failingSinceMs\": 18446744073709551615}",
            b"{\"failingSinceMs\": 5, \"lastFailureMs\": 4}",
        ] {
            std::fs::write(file.path(), garbage).unwrap();
            assert_eq!(file.since(at(0)), None, "{garbage:?}");
            let v = decide(policy, &file, down(), at(0));
            assert_eq!(code(&v), None, "{garbage:?}");
            assert_eq!(file.since(at(0)), Some(at(0)), "rewritten");
        }
        // The clock went back: the file's time is in the future.
        file.start(at(10_000), "x").unwrap();
        assert_eq!(file.since(at(0)), None);
        // Only the file itself is left (no temporary files).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn strict_zero_grace_config_and_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = StreakFile::new(dir.path(), "net", "n1");
        for policy in [StatusPolicy::Strict, StatusPolicy::Grace(Duration::ZERO)] {
            let v = decide(policy, &file, down(), at(0));
            assert_eq!(code(&v), Some(50), "{policy:?}");
            assert!(!file.path().exists(), "no file kept");
        }
        let grace = StatusPolicy::default();
        // A broken config keeps its own code, never graced.
        let v = decide(grace, &file, Err(CniError::config("ipam.x", "bad")), at(0));
        assert_eq!(code(&v), Some(7));
        // Not an unreachable store: 50 at once.
        let refused = Err(CniError::Store(StoreError::Refused("auth".into())));
        assert_eq!(code(&decide(grace, &file, refused, at(0))), Some(50));
        assert!(!file.path().exists());
    }

    #[test]
    fn an_unwritable_directory_reports_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"a file").unwrap();
        let file = StreakFile::new(&dir.path().join("f/sub"), "net", "n1");
        let v = decide(StatusPolicy::default(), &file, down(), at(0));
        assert_eq!(code(&v), Some(50));
        let details = v.result.unwrap_err().to_string();
        assert!(details.contains("cannot be written"), "{details}");
    }

    #[test]
    fn odd_host_names_stay_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for host in ["", "../../etc", "a/b"] {
            let f = StreakFile::new(dir.path(), "net", host);
            assert_eq!(f.path(), dir.path().join("status.net._.json"), "{host:?}");
        }
    }
}
