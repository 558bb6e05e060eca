//! The agent's operations side, both off by default: the periodic leak
//! cleanup (`--reconcile-interval`) and the Prometheus exporter
//! (`--metrics-listen`), over the networks the agent serves.
//!
//! * Reconcile: every interval, for every network the agent has a warm
//!   allocator for (etcd networks only, as every network it serves), the
//!   same pass as `ipamctl reconcile --yes` for this node
//!   ([`crate::admin::reconcile_run`]'s survey, decision and
//!   releases): owner records of this node that libcni's result cache no
//!   longer has and that are older than the grace period are released
//!   through the allocator's compare-and-swap release. The same refusals:
//!   an unreadable cache directory fails the pass, a cache file of the
//!   network that does not decode blocks it, and no attachment of the
//!   network at all blocks it; a failed or blocked pass releases nothing.
//!   The releases of a pass take the network's turn (one pass of a
//!   network at a time). One JSON log line (`reconcile`) per pass per
//!   network.
//! * Metrics: `GET /metrics` answers this node's figures only
//!   (`host_etcd_agent_*`, declared in the one metric table,
//!   [`crate::admin::families::agent`]): its request counters and latency histograms
//!   per command, the reconcile results, and per network served the owner
//!   records of this node, read from the node's index entries (one range
//!   read per network: a scrape costs O(this node's records), never a scan
//!   of the cluster). The cluster figures (range use, the consistency
//!   check) come from one `ipamctl metrics` per cluster. Served by
//!   [`crate::admin::exporter::serve`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::ReconcileConfig;
use super::log;
use super::state::{NetEntry, Shared, COMMANDS};
use crate::admin::exporter::Scrape;
use crate::admin::exposition::Samples;
use crate::admin::families::agent::*;
use crate::admin::reconcile::Reason;
use crate::admin::reconcile_run::{self, Note};

/// Runs a reconcile pass of every served network every interval, forever
/// (the caller drops the task on shutdown).
pub(super) async fn reconcile_loop(shared: Arc<Shared>, config: ReconcileConfig) {
    // The command line refuses 0; a zero period would panic the timer.
    let period = config.interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for entry in shared.entries() {
            reconcile_network(&entry, &config).await;
        }
    }
}

/// One pass of one network, logged.
async fn reconcile_network(entry: &NetEntry, config: &ReconcileConfig) {
    let alloc = &*entry.allocator;
    let node = alloc.options().node_name.clone();
    let args = &config.pass;
    let mut notes: Vec<String> = Vec::new();
    let mut note = |n: Note| notes.push(n.to_string());
    let started = Instant::now();
    let outcome = match reconcile_run::survey(alloc, args, &node, &mut note).await {
        Err(e) => Err(e),
        Ok(mut survey) => {
            let mut err = None;
            if !survey.report.plan.release.is_empty() {
                let _turn = entry.turn_for_ops().await;
                err = reconcile_run::release_planned(alloc, args, &mut survey.report, &mut note)
                    .await;
            }
            Ok((survey.report, err))
        }
    };
    let mut fields = json!({
        "network": entry.name,
        "endpoints": entry.endpoints,
        "node": node,
        "cache_dir": args.cache_dir.as_ref().map(|d| d.display().to_string()),
        "grace_secs": args.grace.as_secs(),
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    let ops = &entry.ops;
    ops.reconcile_passes.fetch_add(1, Ordering::Relaxed);
    let level = match outcome {
        Err(e) => {
            ops.reconcile_failed.fetch_add(1, Ordering::Relaxed);
            fields["error"] = json!(format!("pass failed, nothing released: {e}"));
            "warn"
        }
        Ok((report, err)) => {
            let young = report
                .plan
                .keep
                .iter()
                .filter(|d| matches!(d.reason, Reason::YoungerThanGrace { .. }))
                .count();
            let owners: Vec<Value> = report
                .released
                .iter()
                .map(|r| json!({"container": r.container_id, "ifname": r.ifname}))
                .collect();
            ops.reconcile_released
                .fetch_add(report.released.len() as u64, Ordering::Relaxed);
            fields["owners"] = json!(report.plan.keep.len() + report.plan.release.len());
            fields["kept"] = json!(report.plan.keep.len());
            fields["younger_than_grace"] = json!(young);
            fields["released"] = json!(report.released.len());
            fields["released_owners"] = json!(owners);
            fields["skipped"] = json!(report
                .skipped
                .iter()
                .map(|s| json!({"container": s.record.container_id, "ifname": s.record.ifname, "why": s.why}))
                .collect::<Vec<_>>());
            let mut level = "info";
            if let Some(b) = &report.plan.blocked {
                ops.reconcile_blocked.fetch_add(1, Ordering::Relaxed);
                fields["refused"] = json!(b.describe());
                level = "warn";
            }
            if let Some(e) = err {
                ops.reconcile_failed.fetch_add(1, Ordering::Relaxed);
                fields["error"] = json!(format!("a release failed: {e}"));
                level = "warn";
            }
            level
        }
    };
    if !notes.is_empty() {
        fields["notes"] = json!(notes);
    }
    log::line(level, "reconcile", fields);
}

/// Longest a network's store read may take in a scrape.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's `/metrics`: this node's figures. Concurrent scrapes share
/// one read (the exporter's [`ScrapeCache`](crate::admin::exporter::ScrapeCache)).
pub(super) struct AgentMetrics {
    pub(super) shared: Arc<Shared>,
}

impl AgentMetrics {
    async fn collect(&self) -> String {
        let mut entries = self.shared.entries();
        entries.sort_by(|a, b| (&a.name, &a.endpoints).cmp(&(&b.name, &b.endpoints)));
        let mut agent = Samples::default();
        let c = self.shared.counters();
        for (command, h) in COMMANDS.iter().zip(&c.latency) {
            agent.add_histogram(&REQUEST_DURATION, &[command], &h.snapshot());
        }
        agent.add(&REQUESTS, &[], c.requests.load(Ordering::Relaxed));
        agent.add(&ERRORS, &[], c.errors.load(Ordering::Relaxed));
        agent.add(
            &PROTOCOL_ERRORS,
            &[],
            c.protocol_errors.load(Ordering::Relaxed),
        );
        agent.add(&REFUSED_PEERS, &[], c.refused_peers.load(Ordering::Relaxed));
        let a = &c.abandoned;
        agent.add(&ABANDONED_DROPPED, &[], a.dropped.load(Ordering::Relaxed));
        agent.add(&ABANDONED_RELEASED, &[], a.released.load(Ordering::Relaxed));
        agent.add(&ABANDONED_KEPT, &[], a.kept.load(Ordering::Relaxed));
        agent.add(
            &ABANDONED_RELEASE_FAILED,
            &[],
            a.release_failed.load(Ordering::Relaxed),
        );
        agent.add(&IN_FLIGHT, &[], c.in_flight.load(Ordering::Relaxed));
        agent.add(&NETWORKS, &[], entries.len());
        let l = &self.shared.liveness;
        agent.add(&LIVENESS_UP, &[], l.up.load(Ordering::Relaxed));
        agent.add(&NODE_REAPED, &[], l.reaped.load(Ordering::Relaxed));
        agent.add(&LIVENESS_ERRORS, &[], l.errors.load(Ordering::Relaxed));
        // Two configs of one network name (other endpoints or prefix)
        // would give clashing series: the agent's counters are summed per
        // name, the node's records are those of the first config.
        let mut per_name: BTreeMap<&str, [u64; 6]> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for e in &entries {
            let sums = per_name.entry(e.name.as_str()).or_default();
            let ops = &e.ops;
            for (sum, v) in sums.iter_mut().zip([
                e.requests.load(Ordering::Relaxed),
                e.errors.load(Ordering::Relaxed),
                ops.reconcile_passes.load(Ordering::Relaxed),
                ops.reconcile_blocked.load(Ordering::Relaxed),
                ops.reconcile_failed.load(Ordering::Relaxed),
                ops.reconcile_released.load(Ordering::Relaxed),
            ]) {
                *sum += v;
            }
            if !seen.insert(e.name.as_str()) {
                continue;
            }
            let node = e.allocator.options().node_name.clone();
            let count = e.allocator.node_record_count(&node);
            match tokio::time::timeout(SCRAPE_TIMEOUT, count).await {
                Ok(Ok(records)) => agent.add(&NODE_OWNER_RECORDS, &[&e.name, &node], records),
                Ok(Err(err)) => scrape_failed(e, err.to_string()),
                Err(_) => scrape_failed(e, format!("no answer within {SCRAPE_TIMEOUT:?}")),
            }
            agent.add(
                &SCRAPE_ERRORS,
                &[&e.name],
                ops.scrape_errors.load(Ordering::Relaxed),
            );
        }
        for (name, v) in per_name {
            let l = [name];
            agent.add(&NETWORK_REQUESTS, &l, v[0]);
            agent.add(&NETWORK_ERRORS, &l, v[1]);
            agent.add(&RECONCILE_PASSES, &l, v[2]);
            agent.add(&RECONCILE_BLOCKED, &l, v[3]);
            agent.add(&RECONCILE_FAILED, &l, v[4]);
            agent.add(&RECONCILE_RELEASED, &l, v[5]);
        }
        agent.render()
    }
}

/// Counts and logs a scrape whose store read of network `e` failed.
fn scrape_failed(e: &NetEntry, error: String) {
    e.ops.scrape_errors.fetch_add(1, Ordering::Relaxed);
    log::warn("scrape_failed", json!({"network": e.name, "error": error}));
}

impl Scrape for AgentMetrics {
    fn scrape(&self) -> impl std::future::Future<Output = String> + Send {
        self.collect()
    }
}
