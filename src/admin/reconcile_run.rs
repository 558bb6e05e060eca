//! `reconcile`, the I/O part shared by `ipamctl reconcile` and the node
//! agent's periodic pass (`host-etcd agent --reconcile-interval`): list a
//! network's owner records, read libcni's result cache directory (and an
//! optional valid list), decide ([`super::reconcile::plan`]), and release
//! the planned records through the allocator's compare-and-swap release,
//! each re-checked first ([`release_planned`]).
//!
//! Nothing here prints: diagnostics go to a [`Note`] sink, so `ipamctl`
//! writes them as its stderr lines and the agent puts them in its JSON log
//! line.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::cli::ReconcileArgs;
use super::error::AdminError;
use super::reconcile::{self, Attachment, BadCacheFile, Inputs, Plan, Reason, Source};
use super::valid::read_valid;
use crate::allocator::{Allocator, OwnerId, OwnerRecord};
use crate::store::Store;

/// What the runtime's libcni cache directory says about one network.
#[derive(Debug, Default)]
pub struct CacheScan {
    /// The network's attachments.
    pub attachments: Vec<Attachment>,
    /// Files that cannot be used.
    pub bad: Vec<BadCacheFile>,
    /// Entries of other networks.
    pub other_networks: usize,
}

/// Whether a cache entry's network namespace path is gone: `Some(path)`
/// only when the path is known and looking it up says "not found" (any
/// other error keeps the attachment).
fn netns_gone(netns: Option<&str>) -> Option<String> {
    let path = netns?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(path.to_string()),
        _ => None,
    }
}

/// Reads libcni's result cache directory `dir` (every file, see
/// [`reconcile::parse_cache_entry`]) and keeps the entries of `network`.
/// A directory that cannot be read is an error (never "no attachments");
/// a file that vanishes while reading was deleted by a finished DEL and is
/// skipped; a file that cannot be read or decoded is reported in
/// [`CacheScan::bad`]; subdirectories are skipped (libcni writes files).
pub fn read_cache_dir(
    dir: &Path,
    network: &str,
    check_netns: bool,
) -> Result<CacheScan, AdminError> {
    let bad_dir = |detail: String| AdminError::Input {
        path: dir.to_path_buf(),
        detail: format!("the runtime's CNI cache directory {detail}; nothing released"),
    };
    let meta = std::fs::metadata(dir).map_err(|e| bad_dir(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(bad_dir("is not a directory".into()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| bad_dir(format!("cannot be listed: {e}")))?;
    let mut scan = CacheScan::default();
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad_dir(format!("cannot be listed: {e}")))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    names.sort();
    for (name, path) in names {
        let mut bad = |error: String| {
            scan.bad.push(BadCacheFile {
                blocks: reconcile::may_belong_to(&name, network),
                file: name.clone(),
                error,
            })
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&path).is_ok() {
                    bad(format!("dangling symbolic link: {e}"));
                }
                continue;
            }
            Err(e) => {
                bad(format!("cannot be read: {e}"));
                continue;
            }
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                bad(format!("cannot be read: {e}"));
                continue;
            }
        };
        match reconcile::parse_cache_entry(&bytes) {
            Ok(e) if e.network == network => {
                let gone = if check_netns {
                    netns_gone(e.netns.as_deref())
                } else {
                    None
                };
                scan.attachments.push(Attachment {
                    container_id: e.container_id,
                    ifname: e.ifname,
                    source: Source::Cache {
                        file: name,
                        netns_gone: gone,
                    },
                });
            }
            Ok(_) => scan.other_networks += 1,
            Err(error) => bad(error),
        }
    }
    Ok(scan)
}

/// The outcome of one `reconcile` pass.
#[derive(Debug, Serialize)]
pub struct ReconcileReport {
    /// The network.
    pub network: String,
    /// The node whose records were looked at.
    pub node: String,
    /// The grace period, seconds.
    pub grace_secs: u64,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// The decision.
    #[serde(flatten)]
    pub plan: Plan,
    /// Cache files that cannot be used.
    pub bad_cache_files: Vec<BadCacheFile>,
    /// What was released (empty in a dry run).
    pub released: Vec<OwnerRecord>,
    /// Planned releases left alone because the record or the cache
    /// changed since the listing, with why.
    pub skipped: Vec<Skipped>,
}

/// A planned release not done.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// The record as listed.
    pub record: OwnerRecord,
    /// Why.
    pub why: String,
}

/// A diagnostic of a pass (not its outcome, which is the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Owner records that do not decode were skipped.
    CorruptOwners(usize),
    /// A cache file that cannot be used.
    BadCacheFile {
        /// Its path.
        path: PathBuf,
        /// Whether it blocks the pass.
        blocks: bool,
        /// Why it cannot be used.
        error: String,
    },
    /// Re-reading a planned record before its release failed.
    Reread {
        /// The owner.
        owner: OwnerId,
        /// The error.
        error: String,
    },
    /// A release failed.
    Release {
        /// The owner.
        owner: OwnerId,
        /// The error.
        error: String,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::CorruptOwners(n) => write!(
                f,
                "skipped {n} owner records that do not decode (see `ipamctl check`)"
            ),
            Note::BadCacheFile {
                path,
                blocks,
                error,
            } => write!(
                f,
                "cache file {} {}: {error}",
                path.display(),
                if *blocks {
                    "(might be this network's; blocks releases)"
                } else {
                    "(not this network's by its name; ignored)"
                }
            ),
            Note::Reread { owner, error } => write!(
                f,
                "re-reading container {} interface {}: {error}",
                owner.container_id, owner.ifname
            ),
            Note::Release { owner, error } => write!(
                f,
                "releasing container {} interface {}: {error}",
                owner.container_id, owner.ifname
            ),
        }
    }
}

/// The decision of a pass, before anything is released.
#[derive(Debug)]
pub struct Survey {
    /// The report (nothing released or skipped yet).
    pub report: ReconcileReport,
    /// The time the decision was made for, seconds since the Unix epoch.
    pub now: u64,
    /// Attachments of the network known (cache and list).
    pub attachments: usize,
}

fn id_of(rec: &OwnerRecord) -> OwnerId {
    OwnerId {
        container_id: rec.container_id.clone(),
        ifname: rec.ifname.clone(),
    }
}

/// What one reconcile pass is told: where the attachments come from and
/// how careful to be. `ipamctl reconcile` fills it from its flags
/// ([`From<&ReconcileArgs>`]); the node agent fills it from its own
/// settings. Not a command line type: a pass is not tied to clap.
#[derive(Clone, Debug)]
pub struct PassSettings {
    /// libcni's result cache (`<cacheDir>/results`); `None`: not read, only
    /// `valid` lists the attachments.
    pub cache_dir: Option<PathBuf>,
    /// More valid attachments: a JSON list of `{"containerID", "ifname"}`.
    pub valid: Option<PathBuf>,
    /// Also release attachments whose cache entry names a network
    /// namespace that no longer exists.
    pub check_netns: bool,
    /// Owner records younger than this are always kept.
    pub grace: Duration,
    /// Release even when no attachment of the network is known at all.
    pub allow_empty: bool,
    /// Decide and report, release nothing.
    pub dry_run: bool,
}

impl From<&ReconcileArgs> for PassSettings {
    fn from(args: &ReconcileArgs) -> Self {
        PassSettings {
            cache_dir: (!args.no_cache).then(|| args.cache_dir.clone()),
            valid: args.valid.clone(),
            check_netns: args.check_netns,
            grace: args.grace,
            allow_empty: args.allow_empty,
            dry_run: args.dry_run,
        }
    }
}

/// Lists the network's owner records, then reads the attachments (cache
/// directory unless `--no-cache`, `--valid`) and decides. Owners are
/// listed before the cache is read, so an ADD that completes in between is
/// seen as attached. An unreadable cache directory or valid list is an
/// error: nothing is decided, nothing released.
pub async fn survey<S: Store>(
    alloc: &Allocator<S>,
    args: &PassSettings,
    node: &str,
    note: &mut (dyn FnMut(Note) + Send),
) -> Result<Survey, AdminError> {
    let network = alloc.network().name.clone();
    // This node's index entries only: one range read, whatever the size
    // of the cluster.
    let listed = alloc.node_records(node).await?;
    if !listed.corrupt.is_empty() {
        note(Note::CorruptOwners(listed.corrupt.len()));
    }
    let records = listed.records;
    let mut scan = match &args.cache_dir {
        None => CacheScan::default(),
        Some(dir) => read_cache_dir(dir, &network, args.check_netns)?,
    };
    if let Some(file) = &args.valid {
        scan.attachments
            .extend(read_valid(file)?.into_iter().map(|id| Attachment {
                container_id: id.container_id,
                ifname: id.ifname,
                source: Source::List,
            }));
    }
    for b in &scan.bad {
        note(Note::BadCacheFile {
            path: args
                .cache_dir
                .as_deref()
                .map_or_else(|| PathBuf::from(&b.file), |d| d.join(&b.file)),
            blocks: b.blocks,
            error: b.error.clone(),
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let plan = reconcile::plan(&Inputs {
        node,
        records: &records,
        attachments: &scan.attachments,
        bad_files: &scan.bad,
        now,
        grace: args.grace,
        allow_empty: args.allow_empty,
    });
    let attachments = scan.attachments.len();
    Ok(Survey {
        report: ReconcileReport {
            network,
            node: node.to_string(),
            grace_secs: reconcile::grace_secs(args.grace),
            dry_run: args.dry_run,
            plan,
            bad_cache_files: scan.bad,
            released: Vec::new(),
            skipped: Vec::new(),
        },
        now,
        attachments,
    })
}

/// Releases every planned record of `report` through the allocator's
/// compare-and-swap release, after checking once more that the record is
/// unchanged and (unless `--no-cache`) that no cache entry for it
/// appeared; fills `released` and `skipped`. Returns the first failure
/// (the other releases are still tried).
pub async fn release_planned<S: Store>(
    alloc: &Allocator<S>,
    args: &PassSettings,
    report: &mut ReconcileReport,
    note: &mut (dyn FnMut(Note) + Send),
) -> Option<AdminError> {
    let network = report.network.clone();
    let mut first_err = None;
    for d in &report.plan.release {
        let id = id_of(&d.record);
        match alloc.owner(&id).await {
            Ok(Some(current)) if current == d.record => {}
            Ok(Some(_)) => {
                report.skipped.push(Skipped {
                    record: d.record.clone(),
                    why: "the owner record changed since the listing".into(),
                });
                continue;
            }
            Ok(None) => {
                report.skipped.push(Skipped {
                    record: d.record.clone(),
                    why: "released meanwhile".into(),
                });
                continue;
            }
            Err(e) => {
                note(Note::Reread {
                    owner: id.clone(),
                    error: e.to_string(),
                });
                first_err.get_or_insert(AdminError::from(e));
                continue;
            }
        }
        if let (Some(dir), Reason::NotAttached { .. }) = (&args.cache_dir, &d.reason) {
            let file = format!("{network}-{}-{}", id.container_id, id.ifname);
            if std::fs::symlink_metadata(dir.join(&file)).is_ok() {
                report.skipped.push(Skipped {
                    record: d.record.clone(),
                    why: format!("cache entry {file} appeared since the listing"),
                });
                continue;
            }
        }
        // Released only while the record is still the one listed: an ADD of
        // the same container ID since the re-read is never undone.
        match alloc.release_record(&d.record).await {
            Ok(Some(rec)) => report.released.push(rec),
            Ok(None) => report.skipped.push(Skipped {
                record: d.record.clone(),
                why: "released or changed meanwhile".into(),
            }),
            Err(e) => {
                note(Note::Release {
                    owner: id.clone(),
                    error: e.to_string(),
                });
                first_err.get_or_insert(AdminError::from(e));
            }
        }
    }
    first_err
}
