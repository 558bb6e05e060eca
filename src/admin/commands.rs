//! The inspection and repair commands: `show`, `list`, `get`, `release`,
//! `check`, `gc`, `reconcile` (the I/O around [`super::reconcile`]). Each writes a human table or JSON to `out` and returns the
//! exit status. `release`, `gc` and `check --repair` take `--dry-run`:
//! they then print exactly what they would release or repair (the same
//! table or JSON shape as the real run) and write nothing to the store.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::cli::{ListArgs, ReconcileArgs, ReleaseArgs};
use super::error::{AdminError, EXIT_OK, EXIT_PROBLEMS};
use super::reconcile::{Decision, Reason};
use super::reconcile_run;
pub use super::reconcile_run::ReconcileReport;
use super::table::Table;
use super::valid::read_valid;
use crate::allocator::{Allocator, CheckReport, OwnerId, OwnerRecord, Problem, RangeUsage};
use crate::store::Store;

/// Where confirmations come from.
pub trait Confirm {
    /// Asks `question`; `Ok(true)` when the answer is yes.
    fn ask(&mut self, question: &str) -> Result<bool, AdminError>;
}

/// Confirmation on the process's stdin; refuses when stdin is not a
/// terminal (a script must say `--yes`).
pub struct StdinConfirm;

impl Confirm for StdinConfirm {
    fn ask(&mut self, question: &str) -> Result<bool, AdminError> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(AdminError::Refused(format!(
                "{question}: refusing without confirmation because stdin is not a terminal; \
                 pass --yes to confirm"
            )));
        }
        let mut err = std::io::stderr().lock();
        write!(err, "{question} [y/N] ")?;
        err.flush()?;
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }
}

/// `used / size` as a percentage (0 for an empty range).
pub fn percent(used: u128, size: u128) -> f64 {
    if size == 0 {
        0.0
    } else {
        used as f64 * 100.0 / size as f64
    }
}

fn json_line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), AdminError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// One row of `show --json`.
#[derive(Debug, Serialize)]
pub struct ShowRow {
    /// The usage figures.
    #[serde(flatten)]
    pub usage: RangeUsage,
    /// `size - used`.
    pub free: u128,
    /// `used / size` in percent.
    pub utilization: f64,
    /// The range's `exclude` entries (canonical CIDRs), never handed out.
    pub exclude: Vec<String>,
}

/// `show`.
pub async fn show<S: Store>(
    alloc: &Allocator<S>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let rows: Vec<ShowRow> = alloc
        .usage()
        .await?
        .into_iter()
        .map(|u| ShowRow {
            free: u.size.saturating_sub(u.used),
            utilization: percent(u.used, u.size),
            exclude: alloc
                .network()
                .sets
                .get(u.set)
                .and_then(|s| s.ranges().get(u.range))
                .map(|r| r.exclude.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            usage: u,
        })
        .collect();
    if json {
        json_line(out, &rows)?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "network {} (prefix {}, chunk bits {})",
        alloc.network().name,
        alloc.network().prefix,
        alloc.chunk_bits()
    )?;
    let mut t = Table::new(&[
        "SET", "RANGE", "SUBNET", "START", "END", "SIZE", "USED", "FREE", "UTIL%", "CHUNKS",
        "BYTES", "EXCLUDE",
    ]);
    for r in &rows {
        let u = &r.usage;
        t.row(vec![
            u.set.to_string(),
            u.range.to_string(),
            u.subnet.clone(),
            u.start.to_string(),
            u.end.to_string(),
            u.size.to_string(),
            u.used.to_string(),
            r.free.to_string(),
            format!("{:.2}", r.utilization),
            u.chunks.to_string(),
            u.bytes.to_string(),
            if r.exclude.is_empty() {
                "-".into()
            } else {
                r.exclude.join(",")
            },
        ]);
    }
    write!(out, "{}", t.render())?;
    Ok(EXIT_OK)
}

fn ips(rec: &OwnerRecord) -> String {
    rec.ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn pod(rec: &OwnerRecord) -> String {
    match (&rec.pod_namespace, &rec.pod_name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.clone(),
        (Some(ns), None) => format!("{ns}/"),
        (None, None) => "-".into(),
    }
}

fn owner_table(records: &[OwnerRecord]) -> String {
    let mut t = Table::new(&["CONTAINER", "IFNAME", "ADDRESSES", "POD", "NODE", "CREATED"]);
    for r in records {
        t.row(vec![
            r.container_id.clone(),
            r.ifname.clone(),
            ips(r),
            pod(r),
            r.node.clone().unwrap_or_else(|| "-".into()),
            crate::timefmt::rfc3339_secs(r.created),
        ]);
    }
    t.render()
}

fn id_of(rec: &OwnerRecord) -> OwnerId {
    OwnerId {
        container_id: rec.container_id.clone(),
        ifname: rec.ifname.clone(),
    }
}

/// Whether `rec` passes the filters of `list`.
pub fn matches(rec: &OwnerRecord, filter: &ListArgs) -> bool {
    if filter
        .container
        .as_ref()
        .is_some_and(|c| *c != rec.container_id)
    {
        return false;
    }
    if let Some(p) = &filter.pod {
        let ok = match p.split_once('/') {
            Some((ns, name)) => {
                rec.pod_namespace.as_deref() == Some(ns) && rec.pod_name.as_deref() == Some(name)
            }
            None => rec.pod_name.as_deref() == Some(p.as_str()),
        };
        if !ok {
            return false;
        }
    }
    if filter.ip.is_some_and(|ip| !rec.ips.contains(&ip)) {
        return false;
    }
    if filter
        .node
        .as_ref()
        .is_some_and(|n| rec.node.as_deref() != Some(n.as_str()))
    {
        return false;
    }
    true
}

/// `list`.
pub async fn list<S: Store>(
    alloc: &Allocator<S>,
    filter: &ListArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    // The narrowest read the filters allow: one node's index entries, one
    // container's records (a point range read), else every record.
    let candidates = match (&filter.node, &filter.container) {
        (Some(node), _) => alloc.node_records(node).await?.records,
        (None, Some(cid)) => alloc.container_records(cid).await?,
        (None, None) => alloc.owners().await?,
    };
    let mut records: Vec<OwnerRecord> = candidates
        .into_iter()
        .filter(|r| matches(r, filter))
        .collect();
    records.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    if json {
        json_line(out, &records)?;
    } else {
        write!(out, "{}", owner_table(&records))?;
    }
    Ok(EXIT_OK)
}

/// `get IP`.
pub async fn get<S: Store>(
    alloc: &Allocator<S>,
    ip: IpAddr,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let holder = alloc.holder_of(ip).await?;
    if json {
        json_line(out, &holder)?;
    } else {
        match &holder {
            Some(r) => write!(out, "{}", owner_table(std::slice::from_ref(r)))?,
            None => writeln!(out, "{ip} is not held by any owner")?,
        }
    }
    Ok(EXIT_OK)
}

/// `release`: one container interface (`--container`), the holder of an
/// address (`--ip`), or every owner record of a node (`--node`).
pub async fn release<S: Store>(
    alloc: &Allocator<S>,
    args: &ReleaseArgs,
    json: bool,
    confirm: &mut dyn Confirm,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    if let Some(node) = &args.node {
        return release_node(alloc, node, args, json, confirm, out).await;
    }
    let found = match (&args.container, args.ip) {
        (Some(c), _) => {
            alloc
                .owner(&OwnerId {
                    container_id: c.clone(),
                    ifname: args.ifname.clone(),
                })
                .await?
        }
        (None, Some(ip)) => alloc.holder_of(ip).await?,
        (None, None) => {
            return Err(AdminError::Usage(
                "release needs --container ID, --ip IP or --node NAME".into(),
            ))
        }
    };
    let Some(rec) = found else {
        if json {
            json_line(out, &Option::<OwnerRecord>::None)?;
        } else {
            writeln!(out, "nothing to release: no owner holds it")?;
        }
        return Ok(EXIT_OK);
    };
    let what = format!(
        "{} of container {} interface {}",
        ips(&rec),
        rec.container_id,
        rec.ifname
    );
    if args.dry_run {
        if json {
            json_line(out, &rec)?;
        } else {
            writeln!(out, "dry run: would release {what}")?;
        }
        return Ok(EXIT_OK);
    }
    let question = format!("release {what}");
    if !args.yes && !confirm.ask(&question)? {
        return Err(AdminError::Refused(format!("{question}: not confirmed")));
    }
    let released = alloc.release(&id_of(&rec)).await?;
    if json {
        json_line(out, &released)?;
    } else {
        match &released {
            Some(r) => writeln!(
                out,
                "released {} (container {} interface {})",
                ips(r),
                r.container_id,
                r.ifname
            )?,
            None => writeln!(out, "nothing to release: released concurrently")?,
        }
    }
    Ok(EXIT_OK)
}

/// `release --node NAME`: lists the node's owner records, asks (unless
/// `--yes`), and releases exactly those, each with the allocator's normal
/// compare-and-swap release. Every listed owner is tried; the first
/// failure is returned after the others were released.
async fn release_node<S: Store>(
    alloc: &Allocator<S>,
    node: &str,
    args: &ReleaseArgs,
    json: bool,
    confirm: &mut dyn Confirm,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    if node.is_empty() {
        return Err(AdminError::Usage("--node: the node name is empty".into()));
    }
    // The node's own index entries: one range read, whatever the cluster.
    let listed = alloc.node_records(node).await?;
    let mut mine: Vec<OwnerRecord> = listed
        .records
        .into_iter()
        .filter(|r| r.node.as_deref() == Some(node))
        .collect();
    mine.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    if !listed.corrupt.is_empty() {
        eprintln!(
            "ipamctl: skipped {} index entries that do not decode (see `ipamctl check`)",
            listed.corrupt.len()
        );
    }
    if mine.is_empty() {
        if json {
            json_line(out, &mine)?;
        } else {
            writeln!(out, "nothing to release: no owner record of node {node}")?;
        }
        return Ok(EXIT_OK);
    }
    if args.dry_run {
        if json {
            json_line(out, &mine)?;
        } else {
            writeln!(
                out,
                "dry run: would release {} owners of node {node}",
                mine.len()
            )?;
            write!(out, "{}", owner_table(&mine))?;
        }
        return Ok(EXIT_OK);
    }
    if !args.yes {
        if !json {
            write!(out, "{}", owner_table(&mine))?;
            out.flush()?;
        }
        let question = format!("release {} owners of node {node}", mine.len());
        if !confirm.ask(&question)? {
            return Err(AdminError::Refused(format!("{question}: not confirmed")));
        }
    }
    let (released, first_err) = release_each(alloc, &mine).await;
    if json {
        json_line(out, &released)?;
    } else {
        writeln!(out, "released {} owners of node {node}", released.len())?;
        if !released.is_empty() {
            write!(out, "{}", owner_table(&released))?;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

/// Releases each listed record (compare-and-swap, as the plugin's DEL),
/// only while it is still exactly the record listed: an owner created again
/// since the listing is never touched. Prints each failure; returns what
/// was released and the first failure.
async fn release_each<S: Store>(
    alloc: &Allocator<S>,
    records: &[OwnerRecord],
) -> (Vec<OwnerRecord>, Option<AdminError>) {
    let done = alloc.release_records(records).await;
    for (r, e) in &done.failed {
        eprintln!(
            "ipamctl: releasing container {} interface {}: {e}",
            r.container_id, r.ifname
        );
    }
    let first_err = done.failed.into_iter().next().map(|(_, e)| e.into());
    (done.released, first_err)
}

/// One problem as a line of text.
pub fn describe(p: &Problem) -> String {
    match p {
        Problem::CorruptChunk { key, error } => format!("corrupt chunk {key}: {error}"),
        Problem::CorruptOwner { key, error } => format!("corrupt owner record {key}: {error}"),
        Problem::CorruptFullSet { key, error } => format!("corrupt full-set {key}: {error}"),
        Problem::CorruptMeta { key, error } => format!("corrupt meta record {key}: {error}"),
        Problem::BitWithoutOwner { ip, chunk } => {
            format!("{ip} is marked taken in {chunk} but no owner holds it (reclaimable: `check --repair` clears it)")
        }
        Problem::OwnerWithoutBit { ip, owner } => {
            format!("{ip} is held by {owner} but not marked taken")
        }
        Problem::OwnerNotIndexed { owner, entry } => {
            format!("owner record {owner} has no per-node index entry {entry}")
        }
        Problem::StaleIndexEntry { entry } => {
            format!("per-node index entry {entry} has no owner record behind it")
        }
        Problem::SharedAddress { ip, owners } => {
            format!("{ip} is held by several owners: {}", owners.join(", "))
        }
    }
}

/// Whether `check --repair` fixes `p` (given every problem of the same
/// report): bits without owner are cleared, bits of owners set (unless the
/// address is shared), corrupt chunks rebuilt from the owner records and
/// corrupt full-sets deleted; shared addresses and corrupt owner or meta
/// records are left for an operator.
pub fn repairable(p: &Problem, all: &[Problem]) -> bool {
    match p {
        Problem::BitWithoutOwner { .. }
        | Problem::CorruptChunk { .. }
        | Problem::CorruptFullSet { .. }
        | Problem::OwnerNotIndexed { .. }
        | Problem::StaleIndexEntry { .. } => true,
        Problem::OwnerWithoutBit { ip, .. } => !all
            .iter()
            .any(|q| matches!(q, Problem::SharedAddress { ip: shared, .. } if shared == ip)),
        Problem::SharedAddress { .. }
        | Problem::CorruptOwner { .. }
        | Problem::CorruptMeta { .. } => false,
    }
}

/// `check --repair --dry-run --json`: the check's report and how
/// `--repair` would treat each problem.
#[derive(Debug, Serialize)]
pub struct RepairPlan {
    /// The (read-only) check.
    #[serde(flatten)]
    pub report: CheckReport,
    /// Problems `--repair` would fix.
    pub would_repair: Vec<Problem>,
    /// Problems `--repair` would leave.
    pub would_leave: Vec<Problem>,
}

/// `check [--repair [--dry-run]]`: exit 1 when problems remain (for a dry
/// run: when problems were found).
pub async fn check<S: Store>(
    alloc: &Allocator<S>,
    repair: bool,
    dry_run: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let report: CheckReport = if repair && !dry_run {
        alloc.repair().await?
    } else {
        alloc.check().await?
    };
    let status = if report.is_clean() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    };
    if repair && dry_run {
        let (would_repair, would_leave): (Vec<Problem>, Vec<Problem>) = report
            .problems
            .iter()
            .cloned()
            .partition(|p| repairable(p, &report.problems));
        let plan = RepairPlan {
            report,
            would_repair,
            would_leave,
        };
        if json {
            json_line(out, &plan)?;
            return Ok(status);
        }
        let r = &plan.report;
        writeln!(
            out,
            "{} chunks, {} owner records, {} addresses marked taken",
            r.chunks, r.owners, r.allocated
        )?;
        for p in &plan.would_repair {
            writeln!(out, "WOULD REPAIR {}", describe(p))?;
        }
        for p in &plan.would_leave {
            writeln!(out, "WOULD LEAVE {}", describe(p))?;
        }
        if r.in_flux > 0 {
            writeln!(
                out,
                "{} findings changed during the check (concurrent writes); run it again to decide",
                r.in_flux
            )?;
        }
        writeln!(
            out,
            "dry run: would repair {}, would leave {}; nothing written",
            plan.would_repair.len(),
            plan.would_leave.len()
        )?;
        return Ok(status);
    }
    if json {
        json_line(out, &report)?;
    } else {
        writeln!(
            out,
            "{} chunks, {} owner records, {} addresses marked taken",
            report.chunks, report.owners, report.allocated
        )?;
        for p in &report.problems {
            writeln!(out, "PROBLEM {}", describe(p))?;
        }
        if report.in_flux > 0 {
            writeln!(
                out,
                "{} findings changed during the check (concurrent writes); run it again to decide",
                report.in_flux
            )?;
        }
        if repair {
            writeln!(out, "repaired {}", report.repaired)?;
        }
        if report.is_clean() {
            writeln!(out, "clean")?;
        } else {
            writeln!(out, "{} problems", report.problems.len())?;
        }
    }
    Ok(status)
}

/// `reindex [--dry-run]`: adds missing per-node index entries and drops
/// entries without a record (`Allocator::reindex`). Exit 0 when everything
/// is indexed (or was fixed), 1 when problems are left (a dry run that
/// found some, or fixes in flux: run it again).
pub async fn reindex<S: Store>(
    alloc: &Allocator<S>,
    dry_run: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let report = alloc.reindex(dry_run).await?;
    if json {
        json_line(out, &report)?;
    } else {
        for p in &report.problems {
            writeln!(out, "{}", describe(p))?;
        }
        writeln!(
            out,
            "{} owner records read; {} index problems {}; {} in flux (changed meanwhile: run again)",
            report.owners,
            if dry_run { report.problems.len() } else { report.repaired },
            if dry_run { "found (dry run)" } else { "fixed" },
            report.in_flux
        )?;
    }
    let clean = report.in_flux == 0 && report.problems.is_empty();
    Ok(if clean {
        EXIT_OK
    } else {
        super::error::EXIT_PROBLEMS
    })
}

/// `gc --valid FILE`: lists the owners not in the file, asks, and
/// releases exactly those (an owner created after the listing is never
/// touched).
pub async fn gc<S: Store>(
    alloc: &Allocator<S>,
    valid_file: &Path,
    yes: bool,
    dry_run: bool,
    json: bool,
    confirm: &mut dyn Confirm,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let valid: HashSet<OwnerId> = read_valid(valid_file)?.into_iter().collect();
    let stale: Vec<OwnerRecord> = alloc
        .owners()
        .await?
        .into_iter()
        .filter(|r| !valid.contains(&id_of(r)))
        .collect();
    if dry_run {
        if json {
            json_line(out, &stale)?;
        } else {
            writeln!(
                out,
                "dry run: would release {} owners not in {}",
                stale.len(),
                valid_file.display()
            )?;
            if !stale.is_empty() {
                write!(out, "{}", owner_table(&stale))?;
            }
        }
        return Ok(EXIT_OK);
    }
    if !stale.is_empty() && !yes {
        let question = format!(
            "release {} owners not in {}",
            stale.len(),
            valid_file.display()
        );
        if !json {
            write!(out, "{}", owner_table(&stale))?;
            out.flush()?;
        }
        if !confirm.ask(&question)? {
            return Err(AdminError::Refused(format!("{question}: not confirmed")));
        }
    }
    let (released, first_err) = release_each(alloc, &stale).await;
    if json {
        json_line(out, &released)?;
    } else {
        writeln!(out, "released {} owners", released.len())?;
        if !released.is_empty() {
            write!(out, "{}", owner_table(&released))?;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

fn age(now: u64, rec: &OwnerRecord) -> String {
    let s = now.saturating_sub(rec.created);
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn decision_table(rows: &[(&str, &Decision)], now: u64, grace: Duration) -> String {
    let mut t = Table::new(&[
        "ACTION",
        "CONTAINER",
        "IFNAME",
        "ADDRESSES",
        "POD",
        "AGE",
        "REASON",
    ]);
    for (action, d) in rows {
        let r = &d.record;
        t.row(vec![
            (*action).to_string(),
            r.container_id.clone(),
            r.ifname.clone(),
            ips(r),
            pod(r),
            age(now, r),
            d.reason.describe(grace),
        ]);
    }
    t.render()
}

/// One reconcile pass: [`reconcile_run::survey`] (owner records, then
/// the attachments, then the decision), printed, and (unless a dry run,
/// after confirmation unless `--yes`) [`reconcile_run::release_planned`].
/// Diagnostics go to stderr. `verbose`: list kept records too.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_pass<S: Store>(
    alloc: &Allocator<S>,
    args: &ReconcileArgs,
    node: &str,
    json: bool,
    verbose: bool,
    confirm: &mut dyn Confirm,
    out: &mut dyn Write,
) -> Result<(ReconcileReport, Option<AdminError>), AdminError> {
    let mut note = |n: reconcile_run::Note| eprintln!("ipamctl: {n}");
    let settings = reconcile_run::PassSettings::from(args);
    let reconcile_run::Survey {
        mut report,
        now,
        attachments,
    } = reconcile_run::survey(alloc, &settings, node, &mut note).await?;
    let network = report.network.clone();
    let verb = if args.dry_run {
        "WOULD RELEASE"
    } else {
        "RELEASE"
    };
    let mut rows: Vec<(&str, &Decision)> = report.plan.release.iter().map(|d| (verb, d)).collect();
    if verbose {
        rows.extend(report.plan.keep.iter().map(|d| ("KEEP", d)));
    }
    let table = if !json && !rows.is_empty() {
        decision_table(&rows, now, args.grace)
    } else {
        String::new()
    };
    let header = format!(
        "network {network} node {node}: {} owner records of this node (read from its index; \
         other nodes' records are never read), {} attachments known, grace {}s",
        report.plan.release.len() + report.plan.keep.len(),
        attachments,
        report.grace_secs
    );
    if args.dry_run || report.plan.release.is_empty() {
        if json {
            json_line(out, &report)?;
        } else {
            writeln!(out, "{header}")?;
            write!(out, "{table}")?;
            if let Some(b) = &report.plan.blocked {
                writeln!(out, "refusing to release: {}", b.describe())?;
            }
            writeln!(
                out,
                "{}{} to release",
                if args.dry_run { "dry run: " } else { "" },
                report.plan.release.len()
            )?;
        }
        return Ok((report, None));
    }
    if !args.yes {
        if !json {
            writeln!(out, "{header}")?;
            write!(out, "{table}")?;
            out.flush()?;
        }
        let question = format!(
            "release {} owner records of node {node} that the runtime no longer has",
            report.plan.release.len()
        );
        if !confirm.ask(&question)? {
            return Err(AdminError::Refused(format!("{question}: not confirmed")));
        }
    }
    let first_err = reconcile_run::release_planned(alloc, &settings, &mut report, &mut note).await;
    if json {
        json_line(out, &report)?;
    } else {
        if args.yes {
            writeln!(out, "{header}")?;
            write!(out, "{table}")?;
        }
        for s in &report.skipped {
            writeln!(
                out,
                "skipped container {} interface {}: {}",
                s.record.container_id, s.record.ifname, s.why
            )?;
        }
        writeln!(out, "released {}", report.released.len())?;
    }
    Ok((report, first_err))
}

/// One line about a pass, for stderr.
pub fn pass_line(r: &ReconcileReport) -> String {
    let young = r
        .plan
        .keep
        .iter()
        .filter(|d| matches!(d.reason, Reason::YoungerThanGrace { .. }))
        .count();
    let blocked = r
        .plan
        .keep
        .iter()
        .filter(|d| matches!(d.reason, Reason::Blocked))
        .count();
    let mut line = format!(
        "reconcile network {} node {}: {} owners, kept {} ({} younger than grace, {} blocked), ",
        r.network,
        r.node,
        r.plan.keep.len() + r.plan.release.len(),
        r.plan.keep.len(),
        young,
        blocked
    );
    if r.dry_run {
        line.push_str(&format!("would release {}", r.plan.release.len()));
    } else {
        line.push_str(&format!(
            "released {}, skipped {}",
            r.released.len(),
            r.skipped.len()
        ));
    }
    if let Some(b) = &r.plan.blocked {
        line.push_str(&format!("; refused: {}", b.describe()));
    }
    line
}

/// `reconcile`: one pass, or with `--interval` a pass every interval until
/// SIGTERM or SIGINT (a pass that fails is logged and the next one runs).
/// A single pass exits 2 when it was blocked (bad cache files, no
/// attachments known), 3 when a release failed.
pub async fn reconcile<S: Store>(
    alloc: &Allocator<S>,
    args: &ReconcileArgs,
    json: bool,
    confirm: &mut dyn Confirm,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let node = match &args.node {
        Some(n) => n.clone(),
        None => crate::allocator::local_hostname(),
    };
    if node.is_empty() {
        return Err(AdminError::Usage(
            "reconcile: the node name is empty (this host has none?); pass --node NAME".into(),
        ));
    }
    let Some(interval) = args.interval else {
        let (report, err) = reconcile_pass(alloc, args, &node, json, true, confirm, out).await?;
        eprintln!("ipamctl: {}", pass_line(&report));
        if let Some(e) = err {
            return Err(e);
        }
        if let Some(b) = &report.plan.blocked {
            return Err(AdminError::Refused(format!(
                "reconcile released nothing: {}",
                b.describe()
            )));
        }
        return Ok(EXIT_OK);
    };
    if interval.is_zero() {
        return Err(AdminError::Usage("--interval must be more than 0".into()));
    }
    if !args.yes && !args.dry_run {
        return Err(AdminError::Usage(
            "reconcile --interval runs unattended: pass --yes (or --dry-run)".into(),
        ));
    }
    let stop = stop_signal()?;
    tokio::pin!(stop);
    loop {
        match reconcile_pass(alloc, args, &node, json, false, confirm, out).await {
            Ok((report, err)) => {
                let mut line = pass_line(&report);
                if let Some(e) = err {
                    line.push_str(&format!("; a release failed: {e}"));
                }
                eprintln!("ipamctl: {line}");
            }
            Err(e) => eprintln!(
                "ipamctl: reconcile network {} node {node}: pass failed, nothing released: {e}",
                alloc.network().name
            ),
        }
        out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => break,
        }
    }
    eprintln!("ipamctl: reconcile stopped by signal");
    Ok(EXIT_OK)
}

/// Completes on the first SIGTERM or SIGINT (the long-running forms stop
/// after their current pass).
pub fn stop_signal() -> Result<impl std::future::Future<Output = ()>, AdminError> {
    let signal = |kind| {
        tokio::signal::unix::signal(kind)
            .map_err(|e| AdminError::Usage(format!("cannot handle signals: {e}")))
    };
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::allocator::{AllocError, AllocRequest, Network, Options};
    use crate::range::{Range, RangeSet, RangeSpec};
    use crate::store::memory::MemoryStore;
    use serde_json::Value;

    /// `show` lists a range's exclusions and leaves them out of its size;
    /// allocating the whole range never hands one out.
    #[tokio::test]
    async fn show_lists_exclusions_and_sizes_without_them() {
        let range = Range::parse(&RangeSpec {
            subnet: "10.0.0.0/28".into(),
            exclude: vec!["10.0.0.4/30".into(), "10.0.0.11".into()],
            ..RangeSpec::default()
        })
        .unwrap();
        let network = Network {
            name: "n".into(),
            prefix: "/t".into(),
            sets: vec![RangeSet::new(vec![range]).unwrap()],
            chunk_bits: 6,
        };
        let alloc = Allocator::new(MemoryStore::new(), network, Options::default()).unwrap();
        let mut got = Vec::new();
        // At most one more request than there are addresses.
        for i in 0..20 {
            let req = AllocRequest {
                owner: OwnerId {
                    container_id: format!("c{i}"),
                    ifname: "eth0".into(),
                },
                stage: None,
                requested: vec![],
                pod_namespace: None,
                pod_name: None,
            };
            match alloc.allocate(&req).await {
                Ok(a) => got.extend(a.assigned.iter().map(|x| x.ip.to_string())),
                Err(e) => {
                    assert!(matches!(e, AllocError::Exhausted { .. }), "{e}");
                    break;
                }
            }
        }
        got.sort_by_key(|s| s.parse::<IpAddr>().unwrap());
        // .2..=.14 minus .4-.7 and .11: 8 addresses.
        assert_eq!(
            got,
            [
                "10.0.0.2",
                "10.0.0.3",
                "10.0.0.8",
                "10.0.0.9",
                "10.0.0.10",
                "10.0.0.12",
                "10.0.0.13",
                "10.0.0.14"
            ]
        );
        let mut out = Vec::new();
        show(&alloc, true, &mut out).await.unwrap();
        let rows: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(rows[0]["size"], 8);
        assert_eq!(rows[0]["used"], 8);
        assert_eq!(rows[0]["free"], 0);
        assert_eq!(
            rows[0]["exclude"],
            serde_json::json!(["10.0.0.4/30", "10.0.0.11/32"])
        );
        let mut out = Vec::new();
        show(&alloc, false, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("EXCLUDE") && text.contains("10.0.0.4/30,10.0.0.11/32"),
            "{text}"
        );
    }
}
