//! The agent process: the socket (stale file, mode, peer check), the
//! accept loop, one task per connection, the shared store clients and
//! allocators, the status document, and the drain on shutdown.
//!
//! Every connection is served by its own task on the multi-thread runtime,
//! so requests run concurrently and call into the shared allocators
//! concurrently (the allocator is `Sync`; every write is a
//! compare-and-swap). Concurrent ADDs of one network are committed together
//! ([`GroupCommit`]: the requests that arrive while a transaction is in
//! flight go into the next one, each with its own result), and so are
//! concurrent DELs (in a transaction of their own). A reply is written only
//! after the command returned, so an answered ADD or DEL is committed in
//! etcd: killing the agent (even with `kill -9`) loses nothing it answered.
//!
//! A CNI request that asks for it is acknowledged (an `ack` frame) as soon
//! as it is read and decoded, before it runs; a client that closes its
//! connection before its request is committed has it dropped, and an ADD
//! committed after its client went away is released again (logged as
//! `abandoned_request`, counted in the metrics).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::future::Future;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

use super::log;
use super::protocol::{read_frame, write_frame, FrameError, Reply, Request, MAX_FRAME, VERSIONS};
use crate::allocator::{
    Abandoned, AllocRequest, Allocation, Allocator, GroupCommit, Observer, OwnerId,
};
use crate::cni::command::{self, AllocatorSource, Prepared};
use crate::cni::config::{Input, NetConf, StoreConf};
use crate::cni::error::{CODE_NOT_AVAILABLE, CODE_TRY_AGAIN_LATER};
use crate::cni::node::{NodeFiles, LOCK_WAIT_MAX};
use crate::cni::{CniError, Env};
use crate::store::any::AnyStore;
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::StoreError;

/// Networks (allocators) kept at most; beyond, the least recently used one
/// is dropped (its node cache saved first).
pub const MAX_NETWORKS: usize = 256;

/// Longest wait to write a reply to a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The unix socket to listen on.
    pub socket: PathBuf,
    /// Longest wait for a connection's request frame.
    pub read_timeout: Duration,
    /// Longest wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Log every request, not only failures.
    pub log_requests: bool,
    /// The group commit's wait for more concurrent ADDs of a network.
    pub batch_window: Duration,
    /// The periodic reconcile, when on.
    pub reconcile: Option<super::ops::ReconcileConfig>,
    /// The metrics address (`HOST:PORT`), when on.
    pub metrics_listen: Option<String>,
    /// Node liveness in etcd, when on.
    pub liveness: Option<super::liveness::LivenessConfig>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Something answers on the socket already.
    #[error("another agent answers on {}; not starting", path.display())]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
    },
    /// The socket path is taken by something that is not a socket.
    #[error("{} exists and is not a socket; not removing it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The metrics address cannot be listened on.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file system or socket call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a peer of uid `peer` may use an agent running as uid `own`:
/// root, and the agent's own user.
pub fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == 0 || peer == own
}

/// The bound socket and what identifies its file.
struct Bound {
    listener: UnixListener,
    /// (device, inode) of the socket file, so shutdown removes only ours.
    file: (u64, u64),
    /// The uid that owns the socket file: the agent's own user.
    uid: u32,
}

/// Prepares and binds the socket: creates a missing parent directory (mode
/// 0700), removes a stale socket file nothing answers on, refuses to start
/// when something does, binds and sets the file's mode to 0600.
async fn bind(path: &Path) -> Result<Bound, AgentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create the socket directory", dir))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AgentError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {
            match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
                // Accepted, or at least queued (a full backlog): it lives.
                Ok(Ok(_)) | Err(_) => {
                    return Err(AgentError::AlreadyRunning {
                        path: path.to_path_buf(),
                    })
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(io_err("cannot remove the stale socket", path))?;
                    log::info(
                        "stale_socket_removed",
                        json!({"socket": path.display().to_string()}),
                    );
                }
                Ok(Err(e)) => return Err(io_err("cannot probe the socket", path)(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot inspect the socket path", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot set the mode of", path))?;
    let meta = std::fs::metadata(path).map_err(io_err("cannot inspect", path))?;
    Ok(Bound {
        listener,
        file: (meta.dev(), meta.ino()),
        uid: meta.uid(),
    })
}

/// Removes the socket file if it is still the one this agent bound.
fn remove_socket(path: &Path, file: (u64, u64)) {
    let ours = std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == file);
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn(
                "socket_remove_failed",
                json!({"socket": path.display().to_string(), "error": e.to_string()}),
            );
        }
    }
}

/// Serves until `shutdown` completes, then stops accepting, removes the
/// socket, drains in-flight requests (at most `drain_timeout`) and saves
/// every network's node cache.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    // The metrics address first: one that cannot be bound stops the start
    // before the socket is taken.
    let metrics = match &config.metrics_listen {
        None => None,
        Some(addr) => {
            let failed = |source| AgentError::MetricsListen {
                addr: addr.clone(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(failed)?;
            let local = listener.local_addr().map_err(failed)?;
            Some((listener, local))
        }
    };
    let bound = bind(&config.socket).await?;
    let shared = Arc::new(Shared::new(config.clone(), bound.uid));
    let mut background = JoinSet::new();
    if let Some((listener, local)) = metrics {
        log::info(
            "metrics_listening",
            json!({"address": local.to_string(), "url": format!("http://{local}/metrics")}),
        );
        let scraper = Arc::new(super::ops::AgentMetrics {
            shared: shared.clone(),
            cache: tokio::sync::Mutex::new(None),
        });
        background.spawn(crate::admin::exporter::serve(
            listener,
            scraper,
            super::ops::SCRAPE_TIMEOUT,
        ));
    }
    if let Some(rc) = &config.reconcile {
        log::info(
            "reconcile_enabled",
            json!({
                "interval_ms": rc.interval.as_millis() as u64,
                "grace_secs": rc.grace.as_secs(),
                "cache_dir": rc.cache_dir.display().to_string(),
                "check_netns": rc.check_netns,
            }),
        );
        background.spawn(super::ops::reconcile_loop(shared.clone(), rc.clone()));
    }
    if let Some(lc) = &config.liveness {
        let node = crate::allocator::local_hostname();
        log::info(
            "liveness_enabled",
            json!({"node": node, "ttl_secs": lc.ttl.as_secs(), "configs": lc.configs.len()}),
        );
        background.spawn(super::liveness::run(
            lc.clone(),
            node,
            shared.liveness.clone(),
        ));
    }
    log::info(
        "listening",
        json!({
            "socket": config.socket.display().to_string(),
            "pid": std::process::id(),
            "protocol": VERSIONS,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    );
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        serve_connection(&shared, stream).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    log::warn("accept_failed", json!({"error": e.to_string()}));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => reaped(done),
        }
        while let Some(done) = tasks.try_join_next() {
            reaped(done);
        }
    }
    drop(bound.listener);
    remove_socket(&config.socket, bound.file);
    // A reconcile pass in flight is dropped between two store calls: every
    // release is one compare-and-swap, so nothing is left half done.
    background.abort_all();
    while background.join_next().await.is_some() {}
    log::info("draining", json!({"connections": tasks.len()}));
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while let Some(done) = tasks.join_next().await {
            reaped(done);
        }
    })
    .await;
    if drained.is_err() {
        log::warn(
            "drain_timeout",
            json!({"aborted_connections": tasks.len(), "drain_timeout_ms": config.drain_timeout.as_millis() as u64}),
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    shared.save_caches();
    log::info(
        "stopped",
        json!({"requests": shared.counters.requests.load(Ordering::Relaxed)}),
    );
    Ok(())
}

fn reaped(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            log::error("connection_task_panicked", json!({"error": e.to_string()}));
        }
    }
}

/// Counters of the status document (and of the metrics).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    cancelled: AtomicU64,
    pub(super) protocol_errors: AtomicU64,
    pub(super) refused_peers: AtomicU64,
    /// CNI requests being served (shared with the group commits, which
    /// wait for more ADDs only while others are in flight).
    pub(super) in_flight: Arc<AtomicU64>,
    /// Answer times per command, in the order of [`super::ops::COMMANDS`].
    pub(super) latency: [crate::admin::metrics::Histogram; 7],
    /// Requests whose client went away (shared with the group commits).
    pub(super) abandoned: Arc<AbandonedCounters>,
}

/// What became of requests whose client went away ([`Abandoned`]).
#[derive(Default)]
pub(super) struct AbandonedCounters {
    /// Dropped before their commit (and those whose client was gone
    /// before they started).
    pub(super) dropped: AtomicU64,
    /// ADDs committed after their client went away, released again.
    pub(super) released: AtomicU64,
    /// Such ADDs whose record was written again since: left alone.
    pub(super) kept: AtomicU64,
    /// Such ADDs whose release failed.
    pub(super) release_failed: AtomicU64,
}

impl AbandonedCounters {
    /// The group commit's observer of one network: counts and logs.
    fn observer(self: &Arc<Self>, network: &str) -> Observer {
        let counters = self.clone();
        let network = network.to_string();
        Arc::new(move |what: &Abandoned| {
            let (counter, fields) = match what {
                Abandoned::Dropped { owner, allocation } => (
                    &counters.dropped,
                    json!({
                        "outcome": "dropped before its commit",
                        "command": if *allocation { "ADD" } else { "DEL" },
                        "container": owner.container_id,
                        "ifname": owner.ifname,
                    }),
                ),
                Abandoned::Released { record } => (
                    &counters.released,
                    json!({
                        "outcome": "ADD committed after its client went away; released again",
                        "command": "ADD",
                        "container": record.container_id,
                        "ifname": record.ifname,
                        "ips": record.ips,
                    }),
                ),
                Abandoned::Kept { owner } => (
                    &counters.kept,
                    json!({
                        "outcome": "ADD committed after its client went away; its record was written again since, left alone",
                        "command": "ADD",
                        "container": owner.container_id,
                        "ifname": owner.ifname,
                    }),
                ),
                Abandoned::ReleaseFailed { owner, error } => (
                    &counters.release_failed,
                    json!({
                        "outcome": "ADD committed after its client went away; releasing it again failed (reconcile or GC releases it)",
                        "command": "ADD",
                        "container": owner.container_id,
                        "ifname": owner.ifname,
                        "error": error.to_string(),
                    }),
                ),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut fields = fields;
            fields["network"] = json!(network);
            let level = if matches!(what, Abandoned::ReleaseFailed { .. }) {
                "warn"
            } else {
                "info"
            };
            log::line(level, "abandoned_request", fields);
        })
    }
}

/// A network's figures of the operations side ([`super::ops`]).
#[derive(Default)]
pub(super) struct OpsCounters {
    pub(super) reconcile_passes: AtomicU64,
    pub(super) reconcile_blocked: AtomicU64,
    pub(super) reconcile_failed: AtomicU64,
    pub(super) reconcile_released: AtomicU64,
    pub(super) scrape_errors: AtomicU64,
}

/// What identifies one etcd client: every field of its config (the
/// password included, so two users never share a client). Not `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
struct StoreKey {
    endpoints: Vec<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    dial_timeout: Duration,
    request_timeout: Duration,
}

impl StoreKey {
    fn of(c: &EtcdConfig) -> StoreKey {
        StoreKey {
            endpoints: c.endpoints.clone(),
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
            trusted_ca_file: c.trusted_ca_file.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
            dial_timeout: c.dial_timeout,
            request_timeout: c.request_timeout,
        }
    }
}

/// What identifies one allocator: its store, and every config field the
/// allocator is built from (name, prefix, range sets, chunk size, CAS
/// attempts, budget, node directory).
#[derive(Clone, PartialEq, Eq, Hash)]
struct NetKey {
    store: StoreKey,
    network: String,
}

impl NetKey {
    fn of(store: StoreKey, conf: &NetConf) -> NetKey {
        let ipam = &conf.ipam;
        NetKey {
            store,
            network: format!(
                "{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}",
                conf.name,
                ipam.prefix,
                ipam.range_sets,
                ipam.chunk_bits,
                ipam.max_attempts,
                ipam.budget,
                ipam.node_dir.display()
            ),
        }
    }
}

/// One store client, connected on first use.
struct StoreSlot {
    endpoints: String,
    store: OnceCell<Arc<AnyStore>>,
}

/// One network's warm allocator and its figures.
pub(super) struct NetEntry {
    pub(super) name: String,
    pub(super) endpoints: String,
    pub(super) allocator: Arc<Allocator<Arc<AnyStore>>>,
    /// ADDs and DELs of this network, committed together (group commit).
    group: GroupCommit<Arc<AnyStore>>,
    files: NodeFiles,
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) ops: OpsCounters,
    /// CNI code of the last request (0: success).
    last_code: AtomicU32,
    last_error: Mutex<Option<String>>,
    last_used: AtomicU64,
    /// Turns for the periodic reconcile's releases.
    turn: tokio::sync::Mutex<()>,
}

impl NetEntry {
    /// The network's turn for the periodic reconcile's releases, waited for
    /// at most [`LOCK_WAIT_MAX`] (then the releases go on without it, as a
    /// DEL does: compare-and-swap keeps that correct).
    pub(super) async fn turn_for_ops(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        tokio::time::timeout(LOCK_WAIT_MAX, self.turn.lock())
            .await
            .ok()
    }

    fn save_cache(&self) {
        let k = self.allocator.network().chunk_bits;
        self.files
            .save(self.allocator.keyspace(), k, &self.allocator.node_cache());
    }
}

/// The agent's shared state.
pub(super) struct Shared {
    config: Config,
    own_uid: u32,
    started: Instant,
    counters: Counters,
    /// The node liveness figures (all zero when it is off).
    pub(super) liveness: Arc<super::liveness::LivenessState>,
    stores: Mutex<HashMap<StoreKey, Arc<StoreSlot>>>,
    nets: Mutex<HashMap<NetKey, Arc<OnceCell<Arc<NetEntry>>>>>,
}

/// Locks a mutex, taking over a poisoned one (the data are counters and
/// caches: a panic elsewhere cannot leave them unsafe to read).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new(config: Config, own_uid: u32) -> Shared {
        Shared {
            config,
            own_uid,
            started: Instant::now(),
            counters: Counters::default(),
            liveness: Arc::default(),
            stores: Mutex::new(HashMap::new()),
            nets: Mutex::new(HashMap::new()),
        }
    }

    /// Every network with a built allocator.
    pub(super) fn entries(&self) -> Vec<Arc<NetEntry>> {
        lock(&self.nets)
            .values()
            .filter_map(|c| c.get().cloned())
            .collect()
    }

    /// The agent's counters.
    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The store client of `config`, connecting on first use.
    async fn store(&self, config: &EtcdConfig) -> Result<Arc<AnyStore>, StoreError> {
        let slot = lock(&self.stores)
            .entry(StoreKey::of(config))
            .or_insert_with(|| {
                Arc::new(StoreSlot {
                    endpoints: config.endpoints.join(","),
                    store: OnceCell::new(),
                })
            })
            .clone();
        slot.store
            .get_or_try_init(|| async {
                let store = EtcdStore::connect(config).await?;
                log::info("store_connected", json!({"endpoints": slot.endpoints}));
                Ok(Arc::new(AnyStore::Etcd(store)))
            })
            .await
            .cloned()
    }

    /// The network's allocator, built on first use (as the plugin builds
    /// its own: network check, store, allocator; the node cache file seeds
    /// its cache).
    async fn network(&self, conf: &NetConf) -> Result<Arc<NetEntry>, CniError> {
        let StoreConf::Etcd(etcd) = &conf.ipam.store else {
            return Err(CniError::Internal(
                "agent: only etcd networks are served on shared allocators".into(),
            ));
        };
        let key = NetKey::of(StoreKey::of(etcd), conf);
        let cell = {
            let mut nets = lock(&self.nets);
            let cell = nets.entry(key.clone()).or_default().clone();
            if nets.len() > MAX_NETWORKS {
                self.evict(&mut nets, &key);
            }
            cell
        };
        let entry = cell
            .get_or_try_init(|| async {
                let network = conf.network()?;
                let store = self.store(etcd).await?;
                let allocator = Allocator::new(store, network, conf.options())?;
                let files = NodeFiles::of(conf);
                let k = allocator.network().chunk_bits;
                allocator.set_node_cache(files.load(allocator.keyspace(), k));
                log::info(
                    "network_added",
                    json!({"network": conf.name, "endpoints": etcd.endpoints.join(",")}),
                );
                let allocator = Arc::new(allocator);
                Ok::<_, CniError>(Arc::new(NetEntry {
                    name: conf.name.clone(),
                    endpoints: etcd.endpoints.join(","),
                    group: GroupCommit::with_window_while_busy(
                        allocator.clone(),
                        self.config.batch_window,
                        self.counters.in_flight.clone(),
                    )
                    .observed(self.counters.abandoned.observer(&conf.name)),
                    allocator,
                    files,
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    last_code: AtomicU32::new(0),
                    last_error: Mutex::new(None),
                    last_used: AtomicU64::new(0),
                    ops: OpsCounters::default(),
                    turn: tokio::sync::Mutex::new(()),
                }))
            })
            .await?
            .clone();
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        Ok(entry)
    }

    /// Drops the least recently used network other than `keep` (one not
    /// built yet first), saving its node cache.
    fn evict(&self, nets: &mut HashMap<NetKey, Arc<OnceCell<Arc<NetEntry>>>>, keep: &NetKey) {
        let victim = nets
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, c)| c.get().map(|e| e.last_used.load(Ordering::Relaxed) + 1))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            if let Some(entry) = nets.remove(&k).and_then(|c| c.get().cloned()) {
                entry.save_cache();
                log::info("network_evicted", json!({"network": entry.name}));
            }
        }
    }

    fn save_caches(&self) {
        let entries: Vec<Arc<NetEntry>> = lock(&self.nets)
            .values()
            .filter_map(|c| c.get().cloned())
            .collect();
        for e in entries {
            e.save_cache();
        }
    }

    /// The status document.
    fn status(&self) -> Value {
        let c = &self.counters;
        let stores: Vec<Value> = lock(&self.stores)
            .values()
            .map(|s| json!({"endpoints": s.endpoints, "connected": s.store.initialized()}))
            .collect();
        let entries: Vec<Arc<NetEntry>> = lock(&self.nets)
            .values()
            .filter_map(|c| c.get().cloned())
            .collect();
        let mut healthy = true;
        let mut networks: Vec<Value> = entries
            .iter()
            .map(|e| {
                let code = e.last_code.load(Ordering::Relaxed);
                healthy &= !matches!(code, CODE_TRY_AGAIN_LATER | CODE_NOT_AVAILABLE);
                json!({
                    "name": e.name,
                    "endpoints": e.endpoints,
                    "requests": e.requests.load(Ordering::Relaxed),
                    "errors": e.errors.load(Ordering::Relaxed),
                    "last_code": code,
                    "last_error": *lock(&e.last_error),
                })
            })
            .collect();
        networks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({
            "healthy": healthy,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": VERSIONS,
            "socket": self.config.socket.display().to_string(),
            "uptime_ms": self.now_ms(),
            "requests": c.requests.load(Ordering::Relaxed),
            "errors": c.errors.load(Ordering::Relaxed),
            "cancelled": c.cancelled.load(Ordering::Relaxed),
            "abandoned": {
                "dropped": c.abandoned.dropped.load(Ordering::Relaxed),
                "released": c.abandoned.released.load(Ordering::Relaxed),
                "kept": c.abandoned.kept.load(Ordering::Relaxed),
                "release_failed": c.abandoned.release_failed.load(Ordering::Relaxed),
            },
            "protocol_errors": c.protocol_errors.load(Ordering::Relaxed),
            "refused_peers": c.refused_peers.load(Ordering::Relaxed),
            "in_flight": c.in_flight.load(Ordering::Relaxed),
            "stores": stores,
            "networks": networks,
        })
    }
}

/// The agent's [`AllocatorSource`] for one request: the shared allocator
/// of the request's network, remembered for the request's figures.
struct Lender<'a> {
    shared: &'a Shared,
    used: Mutex<Option<Arc<NetEntry>>>,
}

/// A shared allocator lent to one request.
struct NetHandle(Arc<NetEntry>);

impl Deref for NetHandle {
    type Target = Allocator<Arc<AnyStore>>;

    fn deref(&self) -> &Self::Target {
        &self.0.allocator
    }
}

impl AllocatorSource for Lender<'_> {
    type Store = Arc<AnyStore>;
    type Handle = NetHandle;

    async fn allocator(&self, conf: &NetConf) -> Result<NetHandle, CniError> {
        let entry = self.shared.network(conf).await?;
        *lock(&self.used) = Some(entry.clone());
        Ok(NetHandle(entry))
    }

    // The warm allocator keeps its node cache in memory (no cache file).
    async fn allocate(
        &self,
        _conf: &NetConf,
        allocator: &NetHandle,
        request: &AllocRequest,
    ) -> Result<Allocation, CniError> {
        // Concurrent ADDs of the network are committed together: no turns.
        Ok(allocator.0.group.allocate(request.clone()).await?)
    }

    // Concurrent DELs of the network are committed together too (they
    // would conflict in the node's chunk if each went alone).
    async fn release(
        &self,
        _conf: &NetConf,
        allocator: &NetHandle,
        owner: &OwnerId,
    ) -> Result<(), CniError> {
        allocator.0.group.release(owner).await?;
        Ok(())
    }
}

/// Runs one CNI request as the plugin would and gives what it would print
/// and its exit status.
async fn run_cni(shared: &Shared, vars: &BTreeMap<String, String>, stdin: &str) -> Reply {
    let started = std::time::Instant::now();
    let bytes = stdin.as_bytes();
    // Decoded once: the config and the error output's version.
    let input = Input::parse(bytes);
    let version = input.version;
    let lender = Lender {
        shared,
        used: Mutex::new(None),
    };
    let env = Env::from_lookup(|k| vars.get(k).map(OsString::from));
    let outcome = match env {
        Err(e) => Err(e),
        Ok(env) => match command::prepare(&env, input) {
            Err(e) => Err(e),
            Ok(Prepared::Answer(out)) => Ok(out),
            Ok(Prepared::Conf(conf)) => match conf.ipam.store {
                // The embedded store is one process's at a time: run the
                // plugin's own path (open, command, close) off the runtime.
                StoreConf::Local { .. } => {
                    let owned = bytes.to_vec();
                    tokio::task::spawn_blocking(move || command::execute(&env, &owned))
                        .await
                        .unwrap_or_else(|e| Err(CniError::Internal(format!("agent task: {e}"))))
                }
                StoreConf::Etcd(_) => {
                    let deadline = command::deadline(&conf);
                    let outcome = tokio::time::timeout(
                        deadline,
                        command::dispatch_with(&env, &conf, &lender),
                    )
                    .await
                    .unwrap_or_else(|_| Err(command::timed_out(env.command, deadline)));
                    // The same STATUS policy and failure-streak file as
                    // the plugin's direct path.
                    command::conclude(&conf, env.command, outcome).0
                }
            },
        },
    };
    let c = &shared.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let command = vars.get("CNI_COMMAND").map_or("other", String::as_str);
    let slot = super::ops::COMMANDS
        .iter()
        .position(|k| *k == command)
        .unwrap_or(super::ops::COMMANDS.len() - 1);
    c.latency[slot].observe(started.elapsed());
    let code = outcome.as_ref().err().map_or(0, CniError::code);
    let used = lock(&lender.used).take();
    if let Some(entry) = &used {
        entry.requests.fetch_add(1, Ordering::Relaxed);
        entry.last_code.store(code, Ordering::Relaxed);
    }
    if let Err(e) = &outcome {
        c.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = &used {
            entry.errors.fetch_add(1, Ordering::Relaxed);
            *lock(&entry.last_error) = Some(e.to_string());
        }
    }
    if shared.config.log_requests || outcome.is_err() {
        let mut fields = json!({
            "command": vars.get("CNI_COMMAND"),
            "container": vars.get("CNI_CONTAINERID"),
            "network": used.as_ref().map(|e| e.name.clone()),
            "code": code,
        });
        if let Err(e) = &outcome {
            fields["error"] = json!(e.to_string());
        }
        let level = if outcome.is_err() { "warn" } else { "info" };
        log::line(level, "request", fields);
    }
    let response = command::response(version, outcome);
    Reply::Cni {
        stdout: response.stdout,
        exit: response.exit_code,
    }
}

/// Serves one connection: peer check, one request frame, one reply.
async fn serve_connection(shared: &Shared, mut stream: UnixStream) {
    let c = &shared.counters;
    match stream.peer_cred().map(|cred| cred.uid()) {
        Ok(uid) if peer_allowed(uid, shared.own_uid) => {}
        other => {
            c.refused_peers.fetch_add(1, Ordering::Relaxed);
            let uid = other.as_ref().ok().copied();
            log::warn("peer_refused", json!({"uid": uid}));
            let why = match uid {
                Some(uid) => format!(
                    "peer uid {uid} is not allowed (only root and uid {} may use this agent)",
                    shared.own_uid
                ),
                None => "the peer's credentials cannot be read".into(),
            };
            reply(&mut stream, &Reply::error(why)).await;
            linger(&mut stream).await;
            return;
        }
    }
    let body = match tokio::time::timeout(shared.config.read_timeout, read_frame(&mut stream)).await
    {
        Ok(Ok(Some(body))) => body,
        // Connected and closed: a liveness probe.
        Ok(Ok(None)) => return,
        Ok(Err(FrameError::Io(_))) => return,
        Ok(Err(e)) => {
            protocol_error(shared, &mut stream, e.to_string()).await;
            return;
        }
        Err(_) => {
            let why = format!(
                "no complete request within {} ms",
                shared.config.read_timeout.as_millis()
            );
            protocol_error(shared, &mut stream, why).await;
            return;
        }
    };
    let request = match Request::decode(&body) {
        Ok(r) => r,
        Err(why) => {
            protocol_error(shared, &mut stream, why).await;
            return;
        }
    };
    match request {
        Request::Status => reply(&mut stream, &Reply::Status(shared.status())).await,
        Request::Cni { env, stdin, ack } => {
            if ack {
                let sent = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    write_frame(&mut stream, &Reply::Ack.encode()),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    // The client went away before the acknowledgement (it
                    // runs the command directly): nothing is run.
                    c.cancelled.fetch_add(1, Ordering::Relaxed);
                    c.abandoned.dropped.fetch_add(1, Ordering::Relaxed);
                    log::info(
                        "abandoned_request",
                        json!({
                            "outcome": "client gone before the acknowledgement; not run",
                            "command": env.get("CNI_COMMAND"),
                            "container": env.get("CNI_CONTAINERID"),
                        }),
                    );
                    return;
                }
            }
            c.in_flight.fetch_add(1, Ordering::Relaxed);
            let (mut rd, mut wr) = stream.split();
            // The command first: when its answer and the client's close are
            // both ready, the answer is taken and written (a closed client
            // then loses it, as a plugin killed after the reply would). A
            // client already gone is seen at the first poll, after the
            // command has only queued its request: the group commit drops
            // it.
            let outcome = tokio::select! {
                biased;
                r = run_cni(shared, &env, &stdin) => Some(r),
                _ = peer_gone(&mut rd) => None,
            };
            c.in_flight.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Some(r) => {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut wr, &r.encode()))
                        .await;
                }
                None => {
                    c.cancelled.fetch_add(1, Ordering::Relaxed);
                    log::warn(
                        "request_cancelled",
                        json!({
                            "reason": "client closed the connection",
                            "command": env.get("CNI_COMMAND"),
                            "container": env.get("CNI_CONTAINERID"),
                        }),
                    );
                }
            }
        }
    }
}

/// Completes when the client closes (or half-closes) its side.
async fn peer_gone<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) {
    let mut buf = [0u8; 256];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn protocol_error(shared: &Shared, stream: &mut UnixStream, why: String) {
    shared
        .counters
        .protocol_errors
        .fetch_add(1, Ordering::Relaxed);
    log::warn("protocol_error", json!({"error": why}));
    reply(stream, &Reply::error(why)).await;
    linger(stream).await;
}

/// After an early error reply: closes our side for writing and reads
/// what the client still sends (at most 1 s and [`MAX_FRAME`] bytes), so a
/// client still writing its request gets to read the reply instead of a
/// broken pipe.
async fn linger(stream: &mut UnixStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    let mut left = MAX_FRAME;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn reply(stream: &mut UnixStream, r: &Reply) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(stream, &r.encode())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_agents_own_user_are_allowed() {
        assert!(peer_allowed(0, 0));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(65534, 0));
    }
}
