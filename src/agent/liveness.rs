//! The agent's node liveness (`--liveness-config`): one etcd lease per
//! store (endpoints and key prefix of the given network configs), a live
//! key `{p}/_nodes/live/{node}` attached to it and renewed every TTL/3,
//! and the node's seen record (see [`crate::liveness`] for the keys and
//! what the reaper does with them).
//!
//! When the agent starts it reads its seen record: one that says a reaper
//! released this node's records (`reaped_at`) is logged as an error
//! (`node_was_reaped`: the addresses of pods still running on this node may
//! have been handed out again) and exported
//! (`host_etcd_agent_node_reaped`). The agent then clears the reaper's
//! marks and (re)creates its live key; it does the same whenever its lease
//! was lost (a partition longer than the TTL). Every write is a
//! compare-and-swap: the seen record on its revision, the live key only
//! when absent or held by this agent's lease.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::log;
use crate::cni::config::StoreConf;
use crate::liveness::{live_key, seen_key, LiveRecord, SeenRecord, LAST_SEEN_EVERY};
use crate::store::etcd::EtcdStore;
use crate::store::{Compare, Expect, Op, Read, ReadResult, Store, Txn, TxnOutcome};

/// How the liveness runs.
#[derive(Clone, Debug)]
pub struct LivenessConfig {
    /// Network configs naming the stores (endpoints, TLS, prefix) to keep
    /// the live key in.
    pub configs: Vec<PathBuf>,
    /// The lease TTL.
    pub ttl: Duration,
}

/// What the metrics show of the liveness.
#[derive(Debug, Default)]
pub struct LivenessState {
    /// Stores whose live key this agent holds now.
    pub up: AtomicU64,
    /// Stores whose seen record said, at start, that this node was reaped.
    pub reaped: AtomicU64,
    /// Failed liveness calls.
    pub errors: AtomicU64,
}

fn now() -> u64 {
    crate::allocator::Clock::system().now()
}

/// Resolves the configs and keeps the node alive in each distinct store
/// until the task is dropped. A config that cannot be used is logged and
/// skipped.
pub(super) async fn run(config: LivenessConfig, node: String, state: Arc<LivenessState>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for path in &config.configs {
        let conf = match crate::admin::target::read_config(path) {
            Ok(c) => c,
            Err(e) => {
                log::error(
                    "liveness_config",
                    json!({"config": path.display().to_string(), "error": e.to_string()}),
                );
                continue;
            }
        };
        let StoreConf::Etcd(etcd) = &conf.ipam.store else {
            log::warn(
                "liveness_config",
                json!({"config": path.display().to_string(), "error": "an embedded-store network: no liveness"}),
            );
            continue;
        };
        if !seen.insert((etcd.endpoints.clone(), conf.ipam.prefix.clone())) {
            continue;
        }
        let (etcd, prefix) = (etcd.clone(), conf.ipam.prefix.clone());
        let (node, state, ttl) = (node.clone(), state.clone(), config.ttl);
        tasks.spawn(async move {
            loop {
                match EtcdStore::connect(&etcd).await {
                    Ok(store) => keep_alive(&store, &prefix, &node, ttl, &state).await,
                    Err(e) => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        log::warn(
                            "liveness_failed",
                            json!({"prefix": prefix, "error": e.to_string()}),
                        );
                    }
                }
                tokio::time::sleep(ttl / 3).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Holds the live key in one store; returns only when the store client
/// should be rebuilt.
async fn keep_alive(
    store: &EtcdStore,
    prefix: &str,
    node: &str,
    ttl: Duration,
    state: &LivenessState,
) {
    let started = now();
    let mut first = true;
    loop {
        // (Re)start: clear the reaper's marks, take a lease, put the key.
        let lease = match claim(store, prefix, node, started, ttl, first, state).await {
            Ok(lease) => lease,
            Err(e) => {
                state.errors.fetch_add(1, Ordering::Relaxed);
                log::warn("liveness_failed", json!({"prefix": prefix, "error": e}));
                tokio::time::sleep(ttl / 3).await;
                continue;
            }
        };
        first = false;
        state.up.fetch_add(1, Ordering::Relaxed);
        let mut rewritten = Instant::now();
        // Renew every TTL/3; rewrite the records every LAST_SEEN_EVERY.
        // A failed renewal starts over with a new lease: the old key, if
        // its lease still runs, is left to expire (the new put waits for
        // that, at most one TTL, while the old key still says "alive").
        let lost = loop {
            tokio::time::sleep(ttl / 3).await;
            match store.keep_lease_alive(lease).await {
                Ok(left) if left > 0 => {}
                Ok(_) => break "the lease expired".to_string(),
                Err(e) => {
                    state.errors.fetch_add(1, Ordering::Relaxed);
                    break format!("renewing the lease failed: {e}");
                }
            }
            if rewritten.elapsed() >= LAST_SEEN_EVERY {
                rewritten = Instant::now();
                if let Err(e) = put_live(store, prefix, node, started, lease).await {
                    log::warn("liveness_failed", json!({"prefix": prefix, "error": e}));
                }
                if let Err(e) = update_seen(store, prefix, node, false).await {
                    log::warn("liveness_failed", json!({"prefix": prefix, "error": e}));
                }
            }
        };
        state.up.fetch_sub(1, Ordering::Relaxed);
        log::warn("liveness_lost", json!({"prefix": prefix, "why": lost}));
    }
}

async fn claim(
    store: &EtcdStore,
    prefix: &str,
    node: &str,
    started: u64,
    ttl: Duration,
    first: bool,
    state: &LivenessState,
) -> Result<i64, String> {
    let was = update_seen(store, prefix, node, true).await?;
    if let Some(at) = was.and_then(|s| s.reaped_at) {
        if first {
            state.reaped.fetch_add(1, Ordering::Relaxed);
        }
        log::error(
            "node_was_reaped",
            json!({
                "prefix": prefix,
                "node": node,
                "reaped_at": at,
                "error": "a reaper released this node's owner records while its agent was gone: \
                          addresses of pods still running here may have been handed out again"
            }),
        );
    }
    let lease = store.grant_lease(ttl).await.map_err(|e| e.to_string())?;
    put_live(store, prefix, node, started, lease).await?;
    log::info(
        "liveness_up",
        json!({"prefix": prefix, "node": node, "lease": lease, "ttl_secs": ttl.as_secs()}),
    );
    Ok(lease)
}

async fn put_live(
    store: &EtcdStore,
    prefix: &str,
    node: &str,
    started: u64,
    lease: i64,
) -> Result<(), String> {
    let record = LiveRecord {
        node: node.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started,
        last_seen: now(),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    match store.put_leased(&live_key(prefix, node), bytes, lease).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("the live key of node {node} is held by another lease (a second agent with this node name?)")),
        Err(e) => Err(e.to_string()),
    }
}

/// Refreshes the node's seen record (created if absent); with `clear`,
/// drops the reaper's marks. Returns the record as it was. A record that
/// does not decode is replaced.
async fn update_seen(
    store: &EtcdStore,
    prefix: &str,
    node: &str,
    clear: bool,
) -> Result<Option<SeenRecord>, String> {
    let key = seen_key(prefix, node);
    for _ in 0..8 {
        let read = store
            .read(&[Read::Get(key.clone())])
            .await
            .map_err(|e| e.to_string())?;
        let current = match read.into_iter().next() {
            Some(ReadResult::Get(v)) => v,
            _ => None,
        };
        let was: Option<SeenRecord> = current
            .as_ref()
            .and_then(|v| serde_json::from_slice(&v.value).ok());
        let t = now();
        let mut next = was.clone().unwrap_or(SeenRecord {
            node: node.to_string(),
            first_seen: t,
            ..SeenRecord::default()
        });
        next.version = env!("CARGO_PKG_VERSION").to_string();
        next.last_seen = t;
        if clear {
            next.gone_since = None;
            next.reaped_at = None;
            next.reaped_records = 0;
        }
        let bytes = serde_json::to_vec(&next).map_err(|e| e.to_string())?;
        let expect = current.map_or(Expect::Absent, |v| Expect::ModRevision(v.mod_revision));
        let txn = Txn {
            compares: vec![Compare {
                key: key.clone(),
                expect,
            }],
            ops: vec![Op::Put(key.clone(), bytes)],
            read_on_conflict: Vec::new(),
        };
        match store.txn(txn).await.map_err(|e| e.to_string())? {
            TxnOutcome::Committed { .. } => return Ok(was),
            TxnOutcome::Conflict { .. } => continue,
        }
    }
    Err(format!("the seen record of node {node} kept changing"))
}
