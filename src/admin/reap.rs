//! The dead-node reaper (`ipamctl reap`, and `ipamctl metrics
//! --reap-after`) and the node listing (`ipamctl nodes`), on the node
//! liveness keys the agents keep ([`crate::liveness`]).
//!
//! One pass, per store and key prefix of the given networks: read every
//! seen record and every live key (O(nodes), run once per cluster), then
//! per node apply [`decide`]: mark a node first seen gone, clear the mark
//! of one alive again, and reap one gone for longer than `node_gone_after`
//! (as counted by a reaper whose reads have all succeeded since
//! `healthy_since`). Reaping reads the node's own index entries in every
//! given network and releases each record created no later than the
//! node's `gone_since` through `release_record` (only while it is exactly
//! the record listed); a record created later means the node is working
//! again (its plugins run without the agent), and the node is left alone.
//! Then the seen record is marked `reaped_at` on its revision. Two reapers
//! at once are safe: each release and each mark is a compare-and-swap, so
//! a record is released once and a node marked once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::error::AdminError;
use crate::allocator::Allocator;
use crate::liveness::{decide, live_prefix, seen_prefix, Decision, NodeState, SeenRecord};
use crate::store::any::AnyStore;
use crate::store::{Compare, Expect, Op, Store, Txn, TxnOutcome, Versioned};

/// Unix seconds now (the system clock, as owner records are stamped).
pub fn now_secs() -> u64 {
    crate::allocator::Clock::system().now()
}

/// What one pass did about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeOutcome {
    /// The node.
    pub node: String,
    /// `marked-gone`, `cleared`, `reaped`, `would-reap`, `active`
    /// (records newer than its gone mark: left alone).
    pub action: &'static str,
    /// Per network, the records released (or that would be).
    pub released: BTreeMap<String, u64>,
}

/// The networks of one store and key prefix.
pub struct Group {
    /// Their allocators (the first one's store reads the liveness keys).
    pub allocs: Vec<Arc<Allocator<AnyStore>>>,
}

impl Group {
    fn prefix(&self) -> Option<&str> {
        self.allocs.first().map(|a| a.network().prefix.as_str())
    }
}

/// Groups allocators by store (endpoints) and key prefix, dropping those
/// of embedded stores (one host: nothing to reap). `key` names the store.
pub fn groups(allocs: Vec<(String, Arc<Allocator<AnyStore>>)>) -> Vec<Group> {
    let mut by: BTreeMap<(String, String), Vec<Arc<Allocator<AnyStore>>>> = BTreeMap::new();
    for (store, a) in allocs {
        if !matches!(a.store(), AnyStore::Etcd(_)) {
            continue;
        }
        by.entry((store, a.network().prefix.clone()))
            .or_default()
            .push(a);
    }
    by.into_values().map(|allocs| Group { allocs }).collect()
}

/// A reaper's passes, one after another: the grace of a gone node counts
/// only from the reaper's start and from its last failed pass (a reaper
/// that could not read cannot tell a gone node from its own blindness).
pub struct Passes {
    healthy_since: u64,
    gone_after: Duration,
    dry_run: bool,
}

impl Passes {
    /// A reaper starting now.
    pub fn new(gone_after: Duration, dry_run: bool) -> Passes {
        Passes {
            healthy_since: now_secs(),
            gone_after,
            dry_run,
        }
    }

    /// One pass over every group: each group's outcomes or error, in
    /// order. A failure, here or met before the pass (`failed_before`,
    /// e.g. a network that could not be opened), restarts the grace.
    pub async fn run(
        &mut self,
        groups: &[Group],
        failed_before: bool,
    ) -> Vec<Result<Vec<NodeOutcome>, AdminError>> {
        let mut results = Vec::with_capacity(groups.len());
        for g in groups {
            let pass = reap_pass(
                g,
                now_secs(),
                self.healthy_since,
                self.gone_after,
                self.dry_run,
            );
            results.push(pass.await);
        }
        if failed_before || results.iter().any(Result::is_err) {
            self.healthy_since = now_secs();
        }
        results
    }
}

/// One reaper pass over a group; what it did, by node. `Err`: the store
/// could not be read or written (nothing decided after that point).
pub async fn reap_pass(
    group: &Group,
    now: u64,
    healthy_since: u64,
    gone_after: Duration,
    dry_run: bool,
) -> Result<Vec<NodeOutcome>, AdminError> {
    let (Some(first), Some(prefix)) = (group.allocs.first(), group.prefix()) else {
        return Ok(Vec::new());
    };
    let seen = first.scan(&seen_prefix(prefix), 1000).await?;
    let live: std::collections::BTreeSet<String> = first
        .scan(&live_prefix(prefix), 1000)
        .await?
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix(&live_prefix(prefix)).map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for (key, v) in seen {
        let Some(node) = key.strip_prefix(&seen_prefix(prefix)).map(str::to_string) else {
            continue;
        };
        // A seen record that does not decode is left alone (never reaped).
        let Ok(record) = serde_json::from_slice::<SeenRecord>(&v.value) else {
            continue;
        };
        let alive = live.contains(&node);
        match decide(&record, alive, now, healthy_since, gone_after) {
            Decision::Wait => {}
            Decision::MarkGone => {
                if !dry_run {
                    let next = SeenRecord {
                        gone_since: Some(now),
                        ..record.clone()
                    };
                    mark(first, &key, &v, &next).await?;
                }
                out.push(outcome(&node, "marked-gone"));
            }
            Decision::ClearGone => {
                if !dry_run {
                    let next = SeenRecord {
                        gone_since: None,
                        ..record.clone()
                    };
                    mark(first, &key, &v, &next).await?;
                }
                out.push(outcome(&node, "cleared"));
            }
            Decision::Reap { gone_since } => {
                out.push(
                    reap_node(group, &node, gone_since, (&key, &v, &record), now, dry_run).await?,
                );
            }
        }
    }
    Ok(out)
}

fn outcome(node: &str, action: &'static str) -> NodeOutcome {
    NodeOutcome {
        node: node.to_string(),
        action,
        released: BTreeMap::new(),
    }
}

/// Writes `next` over the seen record read as `v`, compared on its
/// revision; a conflict (the agent or another reaper changed it) leaves it
/// for the next pass.
async fn mark(
    alloc: &Allocator<AnyStore>,
    key: &str,
    v: &Versioned,
    next: &SeenRecord,
) -> Result<bool, AdminError> {
    let bytes = serde_json::to_vec(next).map_err(|e| AdminError::Usage(e.to_string()))?;
    let txn = Txn {
        compares: vec![Compare {
            key: key.to_string(),
            expect: Expect::ModRevision(v.mod_revision),
        }],
        ops: vec![Op::Put(key.to_string(), bytes)],
        read_on_conflict: Vec::new(),
    };
    Ok(matches!(
        alloc.store().txn(txn).await?,
        TxnOutcome::Committed { .. }
    ))
}

async fn reap_node(
    group: &Group,
    node: &str,
    gone_since: u64,
    (key, v, record): (&str, &Versioned, &SeenRecord),
    now: u64,
    dry_run: bool,
) -> Result<NodeOutcome, AdminError> {
    let mut listed = Vec::new();
    for a in &group.allocs {
        let records = a.node_records(node).await?.records;
        if records.iter().any(|r| r.created > gone_since) {
            eprintln!(
                "ipamctl reap: node {node} is gone since {gone_since} but wrote owner records \
                 after that in network {}: it works without its agent; left alone",
                a.network().name
            );
            return Ok(outcome(node, "active"));
        }
        listed.push((a, records));
    }
    let mut result = outcome(node, if dry_run { "would-reap" } else { "reaped" });
    let mut total = 0;
    for (a, records) in listed {
        let mut n = 0;
        for r in &records {
            if dry_run || a.release_record(r).await?.is_some() {
                n += 1;
            }
        }
        total += n;
        result.released.insert(a.network().name.clone(), n);
    }
    if !dry_run {
        let next = SeenRecord {
            reaped_at: Some(now),
            reaped_records: total,
            ..record.clone()
        };
        mark(&group.allocs[0], key, v, &next).await?;
        eprintln!(
            "ipamctl reap: node {node} gone since {gone_since}: released {total} owner records ({})",
            result
                .released
                .iter()
                .map(|(net, n)| format!("{net}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(result)
}

/// One node as `ipamctl nodes` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    /// The node.
    pub node: String,
    /// Alive, gone, reaped, or never had liveness.
    pub state: NodeState,
    /// Owner records per network, from the per-node index.
    pub records: BTreeMap<String, u64>,
    /// Its seen record, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<SeenRecord>,
}

/// Every node of the group's networks: those with a seen record and those
/// with index entries; their state and owner records per network.
pub async fn list_nodes(group: &Group) -> Result<Vec<NodeRow>, AdminError> {
    let (Some(first), Some(prefix)) = (group.allocs.first(), group.prefix()) else {
        return Ok(Vec::new());
    };
    let mut rows: BTreeMap<String, NodeRow> = BTreeMap::new();
    for (key, v) in first.scan(&seen_prefix(prefix), 1000).await? {
        if let Some(node) = key.strip_prefix(&seen_prefix(prefix)) {
            let seen: Option<SeenRecord> = serde_json::from_slice(&v.value).ok();
            let entry = rows
                .entry(node.to_string())
                .or_insert_with(|| empty_row(node));
            entry.state = match &seen {
                Some(s) if s.reaped_at.is_some() => NodeState::Reaped,
                _ => NodeState::Gone,
            };
            entry.seen = seen;
        }
    }
    for (key, _) in first.scan(&live_prefix(prefix), 1000).await? {
        if let Some(node) = key.strip_prefix(&live_prefix(prefix)) {
            rows.entry(node.to_string())
                .or_insert_with(|| empty_row(node))
                .state = NodeState::Alive;
        }
    }
    for a in &group.allocs {
        let nodes_prefix = a.keyspace().nodes_prefix();
        for (key, _) in a.scan(&nodes_prefix, 1000).await? {
            if let Some((node, _, _)) = a.keyspace().parse_node_entry(&key) {
                *rows
                    .entry(node.to_string())
                    .or_insert_with(|| empty_row(node))
                    .records
                    .entry(a.network().name.clone())
                    .or_default() += 1;
            }
        }
    }
    Ok(rows.into_values().collect())
}

fn empty_row(node: &str) -> NodeRow {
    NodeRow {
        node: node.to_string(),
        state: NodeState::NoLiveness,
        records: BTreeMap::new(),
        seen: None,
    }
}

/// Opens every target (each a network), grouped by store and prefix.
pub async fn open_groups(targets: Vec<super::target::Target>) -> Result<Vec<Group>, AdminError> {
    let mut allocs = Vec::new();
    for t in targets {
        let store = match &t.store {
            crate::cni::config::StoreConf::Etcd(c) => c.endpoints.join(","),
            crate::cni::config::StoreConf::Local { data_dir, .. } => data_dir.display().to_string(),
        };
        allocs.push((store, Arc::new(t.open().await?)));
    }
    Ok(groups(allocs))
}

/// `ipamctl reap`: one pass (trusting the gone marks earlier passes left),
/// or with `--interval` a pass every interval until SIGTERM/SIGINT,
/// counting the grace only from the reaper's start and from its last
/// failed pass. One JSON line (or text line) per node acted on.
pub async fn reap_command(
    targets: Vec<super::target::Target>,
    args: &super::cli::ReapArgs,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<u8, AdminError> {
    if !args.yes && !args.dry_run {
        return Err(AdminError::Usage(
            "reap releases the owner records of dead nodes unattended: give --yes (or --dry-run)"
                .into(),
        ));
    }
    if args.node_gone_after.is_zero() || args.interval.is_some_and(|d| d.is_zero()) {
        return Err(AdminError::Usage(
            "--node-gone-after and --interval must be more than 0".into(),
        ));
    }
    let groups = open_groups(targets).await?;
    let Some(every) = args.interval else {
        let mut all = Vec::new();
        for g in &groups {
            all.extend(reap_pass(g, now_secs(), 0, args.node_gone_after, args.dry_run).await?);
        }
        print_outcomes(&all, json, out)?;
        return Ok(super::error::EXIT_OK);
    };
    let mut passes = Passes::new(args.node_gone_after, args.dry_run);
    let stop = super::commands::stop_signal()?;
    tokio::pin!(stop);
    loop {
        for result in passes.run(&groups, false).await {
            match result {
                Ok(o) => print_outcomes(&o, json, out)?,
                Err(e) => eprintln!("ipamctl reap: pass failed (the grace restarts): {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return Ok(super::error::EXIT_OK),
        }
    }
}

fn print_outcomes(
    outcomes: &[NodeOutcome],
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), AdminError> {
    for o in outcomes {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(o).map_err(|e| AdminError::Usage(e.to_string()))?
            )?;
        } else {
            let n: u64 = o.released.values().sum();
            writeln!(out, "node {}: {} ({n} owner records)", o.node, o.action)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `ipamctl nodes`: every node with its state and owner records.
pub async fn nodes_command(
    targets: Vec<super::target::Target>,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<u8, AdminError> {
    let mut rows = Vec::new();
    for g in &open_groups(targets).await? {
        rows.extend(list_nodes(g).await?);
    }
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&rows).map_err(|e| AdminError::Usage(e.to_string()))?
        )?;
        return Ok(super::error::EXIT_OK);
    }
    let mut t = super::table::Table::new(&[
        "NODE",
        "STATE",
        "RECORDS",
        "LAST SEEN",
        "GONE SINCE",
        "VERSION",
    ]);
    let when = |t: Option<u64>| t.map_or("-".to_string(), crate::timefmt::rfc3339_secs);
    for r in &rows {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        t.row(vec![
            r.node.clone(),
            state,
            r.records.values().sum::<u64>().to_string(),
            when(r.seen.as_ref().map(|s| s.last_seen)),
            when(r.seen.as_ref().and_then(|s| s.gone_since)),
            r.seen.as_ref().map_or("-".into(), |s| s.version.clone()),
        ]);
    }
    write!(out, "{}", t.render())?;
    Ok(super::error::EXIT_OK)
}
