//! The agent's shared state: the store clients and warm allocators it
//! keeps (one `NetEntry` per network config, at most [`MAX_NETWORKS`]),
//! the counters of its status document and metrics, and the status
//! document itself. The server ([`super::server`]) fills it as it serves;
//! the operations side ([`super::ops`]) reads it for the periodic
//! reconcile and the metrics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::config::Config;
use super::log;
use crate::admin::exposition::Histogram;
use crate::allocator::{Abandoned, Allocator, GroupCommit, Observer};
use crate::cni::agent_client::protocol::VERSIONS;
use crate::cni::config::{NetConf, StoreConf};
use crate::cni::error::{CODE_NOT_AVAILABLE, CODE_TRY_AGAIN_LATER};
use crate::cni::node::{NodeFiles, LOCK_WAIT_MAX};
use crate::cni::CniError;
use crate::store::any::AnyStore;
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::StoreError;

/// Networks (allocators) kept at most; beyond, the least recently used one
/// is dropped (its node cache saved first).
pub const MAX_NETWORKS: usize = 256;

/// The commands with a latency histogram (anything else counts as `other`).
pub const COMMANDS: [&str; 7] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "other"];

/// Counters of the status document (and of the metrics).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) cancelled: AtomicU64,
    pub(super) protocol_errors: AtomicU64,
    pub(super) refused_peers: AtomicU64,
    /// CNI requests being served (shared with the group commits, which
    /// wait for more ADDs only while others are in flight).
    pub(super) in_flight: Arc<AtomicU64>,
    /// Answer times per command, in the order of [`COMMANDS`].
    pub(super) latency: [Histogram; COMMANDS.len()],
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
                "{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{}",
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
    pub(super) group: GroupCommit<Arc<AnyStore>>,
    files: NodeFiles,
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) ops: OpsCounters,
    /// CNI code of the last request (0: success).
    pub(super) last_code: AtomicU32,
    pub(super) last_error: Mutex<Option<String>>,
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
        let k = self.allocator.chunk_bits();
        self.files
            .save(self.allocator.keyspace(), k, &self.allocator.node_cache());
    }
}

/// The agent's shared state.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) own_uid: u32,
    started: Instant,
    pub(super) counters: Counters,
    /// The node liveness figures (all zero when it is off).
    pub(super) liveness: Arc<super::liveness::LivenessState>,
    stores: Mutex<HashMap<StoreKey, Arc<StoreSlot>>>,
    nets: Mutex<HashMap<NetKey, Arc<OnceCell<Arc<NetEntry>>>>>,
}

/// Locks a mutex, taking over a poisoned one (the data are counters and
/// caches: a panic elsewhere cannot leave them unsafe to read).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(super) fn new(config: Config, own_uid: u32) -> Shared {
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
    pub(super) async fn network(&self, conf: &NetConf) -> Result<Arc<NetEntry>, CniError> {
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
                allocator.set_node_cache(files.load_for(&allocator));
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

    pub(super) fn save_caches(&self) {
        let entries: Vec<Arc<NetEntry>> = lock(&self.nets)
            .values()
            .filter_map(|c| c.get().cloned())
            .collect();
        for e in entries {
            e.save_cache();
        }
    }

    /// The status document.
    pub(super) fn status(&self) -> Value {
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
