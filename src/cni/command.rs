//! Command dispatch: ADD, DEL, CHECK, VERSION, GC, STATUS over an
//! [`Allocator`] on the configured store, inside a current-thread tokio
//! runtime and the configured budget. The command logic takes its allocator
//! from an [`AllocatorSource`]: [`Direct`] for the plugin process, the node
//! agent's shared allocators through [`dispatch_with`] (`crate::agent`).
//!
//! Around the dispatch ([`respond`]): the STATUS policy ([`status`]) turns
//! STATUS's store check into its answer ([`conclude`], also used by the
//! agent), and every invocation is logged ([`log`]) with the store's round
//! trips, counted by a [`CountingStore`] around the store.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::agent_client::{self, Attempt};
use super::args::{dedup_in_order, CniArgs};
use super::config::{Input, NetConf, StoreConf};
use super::deadline::{deadline, timed_out};
use super::env::{Command, Env};
use super::error::CniError;
use super::log::{self, Invocation, StoreCounts};
use super::node::{NodeFiles, LOCK_WAIT_MAX};
use super::resolv::{self, Dns};
use super::response::Response;
use super::result::{version_json, CniResult};
use super::status::{self, StreakFile};
use super::version::CniVersion;
use crate::allocator::{AllocRequest, Allocation, Allocator, OwnerId};
use crate::store::any::AnyStore;
use crate::store::counting::CountingStore;
use crate::store::etcd::EtcdStore;
use crate::store::local::LocalStore;
use crate::store::{Store, StoreError};

/// What an invocation reports besides its result (for the log and stderr).
#[derive(Default)]
struct Report {
    /// The stores the command opened, counting their round trips.
    opened: Arc<Mutex<Vec<Counted>>>,
    /// A failure STATUS did not report.
    note: Option<String>,
}

impl Report {
    /// Round trips of every store opened, `None` when none was.
    fn counts(&self) -> Option<StoreCounts> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        (!opened.is_empty()).then(|| {
            opened
                .iter()
                .fold(StoreCounts::default(), |c, s| StoreCounts {
                    reads: c.reads + s.reads(),
                    txns: c.txns + s.txns(),
                    conflicts: c.conflicts + s.conflicts(),
                })
        })
    }
}

/// The store as the allocator sees it: counted, and shared with the
/// invocation's [`Report`].
type Counted = Arc<CountingStore<AnyStore>>;

tokio::task_local! {
    /// Where [`allocator`] registers the stores it opens, for the
    /// invocation's report (set around the whole dispatch by [`execute_reported`]).
    static OPENED: Arc<Mutex<Vec<Counted>>>;
}

/// Runs one invocation end to end, turning any error into the CNI error JSON
/// (in the config's `cniVersion` when it is a supported one, else the
/// latest), and logs it when the config asks for a log.
pub fn respond(env: Result<Env, CniError>, stdin: Result<&[u8], CniError>) -> Response {
    let started = Instant::now();
    // stdin is decoded once: the error output's version, the log's view
    // and the config all come from the one document.
    let input = stdin.map(Input::parse);
    let version = input.as_ref().ok().and_then(|i| i.version);
    let version = version.unwrap_or(CniVersion::LATEST);
    let sniffed = input.as_ref().map(|i| i.log.clone()).unwrap_or_default();
    let mut report = Report::default();
    let (env, outcome) = match (env, input) {
        (Ok(env), Ok(input)) => match agent_client::attempt(&env, &input) {
            // The agent ran the command (and logged it in its own log).
            Attempt::Answered(response) => return response,
            Attempt::Failed(e) => (Some(env), Err(e)),
            Attempt::Direct {
                spent,
                agent_may_run,
            } => {
                let direct = Direct {
                    confirm_existing: agent_may_run,
                };
                let outcome = execute_reported(&env, input, &mut report, spent, direct);
                (Some(env), outcome)
            }
        },
        (Ok(env), Err(e)) => (Some(env), Err(e)),
        (Err(e), _) => (None, Err(e)),
    };
    let log_problem = log::record(
        &sniffed,
        &Invocation {
            env: env.as_ref(),
            outcome: &outcome,
            started,
            counts: report.counts(),
            note: report.note.as_deref(),
        },
    );
    let stderr = [report.note.map(|n| format!("host-etcd: {n}")), log_problem]
        .into_iter()
        .flatten()
        .reduce(|a, b| format!("{a}\n{b}"));
    match outcome {
        Ok(stdout) => Response {
            stdout,
            stderr,
            exit_code: 0,
        },
        Err(e) => Response {
            stdout: Some(e.to_json(version)),
            stderr,
            exit_code: 1,
        },
    }
}

/// Runs one command. `Ok(Some(json))` is printed on stdout; `Ok(None)` means
/// success with no output (DEL, CHECK, GC, STATUS).
#[cfg(feature = "cli")]
pub fn execute(env: &Env, stdin: &[u8]) -> Result<Option<String>, CniError> {
    execute_reported(
        env,
        Input::parse(stdin),
        &mut Report::default(),
        Duration::ZERO,
        Direct::default(),
    )
}

/// [`execute`], reporting into `report`, when `spent` of the deadline is already
/// used up (by a node agent that did not answer): the direct path gets what
/// is left.
fn execute_reported(
    env: &Env,
    input: Input<'_>,
    report: &mut Report,
    spent: Duration,
    direct: Direct,
) -> Result<Option<String>, CniError> {
    let conf = match prepare(env, input)? {
        Prepared::Answer(out) => return Ok(out),
        Prepared::Conf(conf) => conf,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::Internal(format!("cannot start the async runtime: {e}")))?;
    // A fallback after a request the agent took but did not acknowledge
    // keeps the whole call within `budgetMs`: the dial allowance was spent
    // waiting on the agent.
    let deadline = if direct.confirm_existing {
        conf.ipam.budget
    } else {
        deadline(&conf)
    };
    let command = env.command;
    let outcome = runtime.block_on(OPENED.scope(report.opened.clone(), async {
        let left = deadline.saturating_sub(spent);
        match tokio::time::timeout(left, dispatch_with(env, &conf, &direct)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(command, deadline)),
        }
    }));
    let (outcome, note) = conclude(&conf, command, outcome);
    report.note = note;
    outcome
}

/// The node-local bookkeeping after a command ran on the store, shared by
/// the plugin and the node agent: a STATUS's store check becomes its answer
/// under the STATUS policy ([`status::decide`], with the note to print when a
/// failure is not reported); any other command that reached the store ends a
/// failure streak ([`status::after_command`]).
pub fn conclude(
    conf: &NetConf,
    command: Command,
    outcome: Result<Option<String>, CniError>,
) -> (Result<Option<String>, CniError>, Option<String>) {
    if command != Command::Status {
        status::after_command(conf, &outcome);
        return (outcome, None);
    }
    let file = StreakFile::of(conf);
    let verdict = status::decide(
        conf.ipam.status,
        &file,
        outcome.map(|_| ()),
        SystemTime::now(),
    );
    (verdict.result.map(|()| None), verdict.note)
}

/// What [`execute`] does before it needs a store: VERSION is answered, the
/// config parsed and the command checked against its `cniVersion`.
#[derive(Debug)]
pub enum Prepared {
    /// The answer, without a store (VERSION).
    Answer(Option<String>),
    /// The parsed config of a command that needs an allocator.
    Conf(Box<NetConf>),
}

/// The checks of [`execute`] that need no store, in its order (also the node
/// agent's first step, so both report the same error for the same input).
pub fn prepare(env: &Env, input: Input<'_>) -> Result<Prepared, CniError> {
    if env.command == Command::Version {
        let v = input.version.unwrap_or(CniVersion::LATEST);
        return Ok(Prepared::Answer(Some(version_json(v)?)));
    }
    let conf = input.conf?;
    check_command_version(env.command, conf.cni_version)?;
    Ok(Prepared::Conf(Box::new(conf)))
}

/// The [`Response`] for an outcome of [`execute`]: errors as CNI error JSON in
/// the config's `cniVersion` (`version`, [`Input::version`]) when it is a
/// supported one, else the latest.
#[cfg(feature = "cli")]
pub fn response(
    version: Option<CniVersion>,
    outcome: Result<Option<String>, CniError>,
) -> Response {
    match outcome {
        Ok(stdout) => Response {
            stdout,
            stderr: None,
            exit_code: 0,
        },
        Err(e) => Response {
            stdout: Some(e.to_json(version.unwrap_or(CniVersion::LATEST))),
            stderr: None,
            exit_code: 1,
        },
    }
}

/// Refuses a command the config's `cniVersion` does not define, as the
/// reference plugin library does (code 1): CHECK needs 0.4.0, GC and STATUS
/// need 1.1.0.
fn check_command_version(command: Command, version: CniVersion) -> Result<(), CniError> {
    let (name, since) = match command {
        Command::Check => ("CHECK", CniVersion::V0_4_0),
        Command::Gc => ("GC", CniVersion::V1_1_0),
        Command::Status => ("STATUS", CniVersion::V1_1_0),
        Command::Add | Command::Del | Command::Version => return Ok(()),
    };
    if version < since {
        return Err(CniError::CommandNotInVersion {
            command: name,
            version,
            since,
        });
    }
    Ok(())
}

/// Where the commands get their allocator, and how ADD and DEL run on it:
/// the plugin process opens the store and works under the node lock and
/// node cache file ([`Direct`]); the node agent (`crate::agent`) lends a
/// warm allocator it keeps per network.
pub trait AllocatorSource: Sync {
    /// The store under the allocators.
    type Store: Store;
    /// What [`AllocatorSource::allocator`] lends.
    type Handle: Deref<Target = Allocator<Self::Store>> + Send + Sync;
    /// The allocator of the config's network on the config's store.
    fn allocator(
        &self,
        conf: &NetConf,
    ) -> impl Future<Output = Result<Self::Handle, CniError>> + Send;
    /// ADD's allocation.
    fn allocate(
        &self,
        conf: &NetConf,
        allocator: &Self::Handle,
        request: &AllocRequest,
    ) -> impl Future<Output = Result<Allocation, CniError>> + Send;
    /// DEL's release.
    fn release(
        &self,
        conf: &NetConf,
        allocator: &Self::Handle,
        owner: &OwnerId,
    ) -> impl Future<Output = Result<(), CniError>> + Send;
}

/// The plugin process's own allocator: the store opened for this one
/// command, ADD and DEL under the node lock and from the node cache file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Direct {
    /// An ADD that gets back an owner's existing addresses confirms them
    /// ([`Allocator::confirm_owner`]) and allocates again, once, when they
    /// were released meanwhile: set when a node agent may have created
    /// them for this same request and may undo that (its client, this
    /// plugin, went away).
    pub confirm_existing: bool,
}

impl AllocatorSource for Direct {
    type Store = Counted;
    type Handle = Box<Allocator<Counted>>;

    async fn allocator(&self, conf: &NetConf) -> Result<Self::Handle, CniError> {
        allocator(conf).await.map(Box::new)
    }

    async fn allocate(
        &self,
        conf: &NetConf,
        allocator: &Self::Handle,
        request: &AllocRequest,
    ) -> Result<Allocation, CniError> {
        let first = with_node_state(conf, allocator, allocator.allocate(request)).await?;
        if !(self.confirm_existing && first.existing) {
            return Ok(first);
        }
        let held: Vec<_> = first.assigned.iter().map(|a| a.ip).collect();
        let confirmed =
            with_node_state(conf, allocator, allocator.confirm_owner(&request.owner)).await?;
        if confirmed.is_some_and(|r| r.ips == held) {
            return Ok(first);
        }
        // Released (or replaced) meanwhile: allocate again, once.
        with_node_state(conf, allocator, allocator.allocate(request)).await
    }

    async fn release(
        &self,
        conf: &NetConf,
        allocator: &Self::Handle,
        owner: &OwnerId,
    ) -> Result<(), CniError> {
        with_node_state(conf, allocator, allocator.release(owner))
            .await
            .map(drop)
    }
}

/// Runs one command of a [`prepare`]d config on allocators from `source`
/// (no deadline of its own: callers bound it by [`deadline`]).
pub async fn dispatch_with<A: AllocatorSource>(
    env: &Env,
    conf: &NetConf,
    source: &A,
) -> Result<Option<String>, CniError> {
    match env.command {
        Command::Add => add(env, conf, source).await,
        Command::Del => {
            let owner = env.owner()?;
            let allocator = source.allocator(conf).await?;
            source.release(conf, &allocator, &owner).await?;
            Ok(None)
        }
        Command::Check => check(env, conf, source).await,
        Command::Gc => {
            let valid = conf.valid_attachments.as_deref().ok_or_else(|| {
                CniError::config(
                    "cni.dev/valid-attachments",
                    "missing; GC without the list of valid attachments would release everything",
                )
            })?;
            // Only this node's records: the runtime lists its own
            // attachments, never another node's.
            source
                .allocator(conf)
                .await?
                .gc_node(valid, conf.ipam.gc_grace)
                .await?;
            Ok(None)
        }
        Command::Status => status(conf, source).await,
        Command::Version => Ok(Some(version_json(conf.cni_version)?)),
    }
}

async fn add<A: AllocatorSource>(
    env: &Env,
    conf: &NetConf,
    source: &A,
) -> Result<Option<String>, CniError> {
    let owner = env.owner()?;
    let args = CniArgs::parse(env.args.as_deref().unwrap_or(""))?;
    let mut requested = args.ips.clone();
    requested.extend(&conf.requested);
    dedup_in_order(&mut requested);
    // Read resolv.conf before allocating, so a bad path leaks nothing.
    let dns = match &conf.ipam.resolv_conf {
        Some(path) => resolv::read(path)?,
        None => Dns::default(),
    };
    let allocator = source.allocator(conf).await?;
    let request = AllocRequest {
        owner,
        stage: args.stage(),
        requested,
        pod_namespace: args.pod_namespace.clone(),
        pod_name: args.pod_name.clone(),
    };
    let allocation = source.allocate(conf, &allocator, &request).await?;
    let result =
        CniResult::from_allocation(&allocation, allocator.network(), &conf.ipam.routes, dns)?;
    Ok(Some(result.encode(conf.cni_version)?))
}

async fn check<A: AllocatorSource>(
    env: &Env,
    conf: &NetConf,
    source: &A,
) -> Result<Option<String>, CniError> {
    let owner = env.owner()?;
    let allocator = source.allocator(conf).await?;
    let (record, not_marked) =
        allocator
            .verify(&owner)
            .await?
            .ok_or_else(|| CniError::UnknownContainer {
                container_id: owner.container_id.clone(),
                ifname: owner.ifname.clone(),
                network: conf.name.clone(),
            })?;
    if !not_marked.is_empty() {
        return Err(CniError::NotMarked { ips: not_marked });
    }
    if let Some(prev) = &conf.prev_result_ips {
        // Only addresses inside this network's subnets are ours to vouch for.
        let ours: BTreeSet<IpAddr> = prev
            .iter()
            .copied()
            .filter(|ip| {
                allocator
                    .network()
                    .sets
                    .iter()
                    .any(|s| s.ranges().iter().any(|r| r.subnet.contains(ip)))
            })
            .collect();
        let held: BTreeSet<IpAddr> = record.ips.iter().copied().collect();
        if ours != held {
            return Err(CniError::CheckMismatch {
                held: record.ips.clone(),
                expected: ours.into_iter().collect(),
            });
        }
    }
    Ok(None)
}

/// STATUS's store check: the errors as they are; [`conclude`] turns them
/// into STATUS's answer.
async fn status<A: AllocatorSource>(
    conf: &NetConf,
    source: &A,
) -> Result<Option<String>, CniError> {
    source.allocator(conf).await?.ping().await?;
    Ok(None)
}

/// Runs one allocator operation with the node-local state around it: under
/// the node lock (etcd only; the embedded store has its own exclusive lock)
/// and from the node cache file, which is written back afterwards. The store
/// connection is already up, so the lock covers the protocol only.
async fn with_node_state<T>(
    conf: &NetConf,
    allocator: &Allocator<Counted>,
    op: impl std::future::Future<Output = Result<T, crate::allocator::AllocError>>,
) -> Result<T, CniError> {
    let files = NodeFiles::of(conf);
    let _lock = match conf.ipam.store {
        StoreConf::Etcd(_) => files.lock((conf.ipam.budget / 4).min(LOCK_WAIT_MAX)),
        StoreConf::Local { .. } => None,
    };
    let before = files.load_for(allocator);
    let k_before = allocator.chunk_bits();
    allocator.set_node_cache(before.clone());
    let out = op.await;
    let after = allocator.node_cache();
    let k = allocator.chunk_bits();
    if after != before || k != k_before {
        files.save(allocator.keyspace(), k, &after);
    }
    Ok(out?)
}

async fn allocator(conf: &NetConf) -> Result<Allocator<Counted>, CniError> {
    let network = conf.network()?;
    let store = Arc::new(CountingStore::new(open_store(&conf.ipam.store).await?));
    let _ = OPENED.try_with(|opened| {
        opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store.clone())
    });
    Ok(Allocator::new(store, network, conf.options())?)
}

async fn open_store(store: &StoreConf) -> Result<AnyStore, StoreError> {
    match store {
        StoreConf::Etcd(config) => EtcdStore::connect(config).await.map(AnyStore::Etcd),
        StoreConf::Local {
            data_dir,
            lock_wait,
        } => LocalStore::open(data_dir, *lock_wait).map(AnyStore::Local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn env(command: Command) -> Env {
        Env {
            netns: Some("/x".into()),
            ..crate::cni::env::test_env(command)
        }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("JSON")
    }

    #[test]
    fn version_echoes_a_supported_requested_version() {
        let out = execute(&env(Command::Version), br#"{"cniVersion":"0.4.0"}"#).expect("ok");
        let v = parse(out.as_deref().unwrap_or(""));
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn version_needs_no_config() {
        for stdin in [&b""[..], b"garbage", br#"{"cniVersion":"9.9.9"}"#] {
            let out = execute(&env(Command::Version), stdin).expect("ok");
            assert_eq!(parse(out.as_deref().unwrap_or(""))["cniVersion"], "1.1.0");
        }
    }

    #[test]
    fn errors_become_cni_json_with_exit_1() {
        let r = respond(
            Ok(env(Command::Add)),
            Ok(b"{\"cniVersion\": \"0.3.1\",\n  \"name\": }"),
        );
        assert_eq!(r.exit_code, 1);
        let v = parse(r.stdout.as_deref().unwrap_or(""));
        assert_eq!(v["code"], 6);
        assert_eq!(
            v["cniVersion"], "1.1.0",
            "stdin undecodable: latest version"
        );
        let r = respond(
            Ok(env(Command::Add)),
            Ok(br#"{"cniVersion":"0.4.0","name":"n","ipam":{}}"#),
        );
        let v = parse(r.stdout.as_deref().unwrap_or(""));
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(7), Some("0.4.0"))
        );
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let r = respond(
            Ok(env(Command::Add)),
            Ok(br#"{"cniVersion":"0.2.0","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#),
        );
        assert_eq!(r.exit_code, 1);
        assert_eq!(parse(r.stdout.as_deref().unwrap_or(""))["code"], 1);
    }

    #[test]
    fn env_and_stdin_errors_pass_through() {
        let r = respond(Err(CniError::MissingEnv { var: "CNI_IFNAME" }), Ok(b"{}"));
        assert_eq!(parse(r.stdout.as_deref().unwrap_or(""))["code"], 4);
        let io = CniError::Io {
            path: "-".into(),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        };
        let r = respond(Ok(env(Command::Add)), Err(io));
        assert_eq!(parse(r.stdout.as_deref().unwrap_or(""))["code"], 5);
    }

    #[test]
    fn gc_without_the_list_is_refused_before_touching_the_store() {
        let stdin = br#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","dataDir":"/nonexistent"}}"#;
        let e = execute(&env(Command::Gc), stdin).err();
        assert_eq!(e.as_ref().map(CniError::code), Some(7));
        assert!(e.is_some_and(|e| e.to_string().contains("cni.dev/valid-attachments")));
    }

    #[test]
    fn commands_newer_than_the_config_version_are_code_1() {
        let conf = |v: &str| {
            format!(
                r#"{{"cniVersion":"{v}","name":"n","ipam":{{"subnet":"10.0.0.0/24","dataDir":"/nonexistent"}}}}"#
            )
        };
        for (command, old) in [
            (Command::Check, "0.3.1"),
            (Command::Gc, "1.0.0"),
            (Command::Status, "1.0.0"),
        ] {
            let e = execute(&env(command), conf(old).as_bytes()).err();
            assert_eq!(e.as_ref().map(CniError::code), Some(1), "{command:?} {old}");
        }
    }
}
