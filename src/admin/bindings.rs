//! `ipamctl bindings`: the sticky-address bindings DELs leave for a pod's
//! next container (see [`Allocator::bindings`]): `list` them, `release
//! NS/NAME` (the pod's next container gets fresh addresses), `expire` the
//! expired ones (`--dry-run`: print them, delete nothing). Bindings are only
//! preferences, so none of these asks for confirmation.

use std::io::Write;

use serde::Serialize;

use super::cli::BindingsCommand;
use super::error::{AdminError, EXIT_OK};
use super::table::Table;
use crate::allocator::{Allocator, Binding, BindingEntry};
use crate::store::Store;
use crate::timefmt::rfc3339_secs;

/// One row of `bindings list --json` (and of `release`, `expire`).
#[derive(Debug, Serialize)]
pub struct BindingRow {
    /// The store key.
    pub key: String,
    /// The binding, when it decodes.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
    /// Whether it has expired (ADD ignores it then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
    /// Why it does not decode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn row(entry: BindingEntry, now: u64) -> BindingRow {
    match entry.binding {
        Ok(b) => BindingRow {
            key: entry.key,
            expired: Some(b.expired(now)),
            binding: Some(b),
            error: None,
        },
        Err(e) => BindingRow {
            key: entry.key,
            binding: None,
            expired: None,
            error: Some(e),
        },
    }
}

fn render(rows: &[BindingRow], json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    if json {
        let text = serde_json::to_string_pretty(rows)
            .map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let mut t = Table::new(&[
        "POD",
        "IFNAME",
        "ADDRESSES",
        "CONTAINER",
        "RELEASED",
        "EXPIRES",
        "STATE",
    ]);
    for r in rows {
        match (&r.binding, &r.error) {
            (Some(b), _) => t.row(vec![
                format!("{}/{}", b.namespace, b.name),
                b.ifname.clone(),
                b.ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                b.container_id.clone(),
                rfc3339_secs(b.released_at),
                rfc3339_secs(b.expires_at),
                if r.expired == Some(true) {
                    "expired".into()
                } else {
                    "active".into()
                },
            ]),
            (None, e) => t.row(vec![
                r.key.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("corrupt: {}", e.clone().unwrap_or_default()),
            ]),
        }
    }
    write!(out, "{}", t.render())?;
    Ok(())
}

/// `bindings list|release|expire`.
pub async fn bindings_command<S: Store>(
    alloc: &Allocator<S>,
    cmd: &BindingsCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let now = alloc.options().clock.now();
    let rows: Vec<BindingRow> = match cmd {
        BindingsCommand::List => alloc
            .bindings()
            .await?
            .into_iter()
            .map(|e| row(e, now))
            .collect(),
        BindingsCommand::Release { pod } => {
            let Some((ns, name)) = pod.split_once('/') else {
                return Err(AdminError::Usage(format!(
                    "bindings release takes NAMESPACE/NAME, not {pod:?}"
                )));
            };
            alloc
                .release_binding(ns, name)
                .await?
                .into_iter()
                .map(|e| row(e, now))
                .collect()
        }
        BindingsCommand::Expire { dry_run: true } => alloc
            .bindings()
            .await?
            .into_iter()
            .filter(|e| matches!(&e.binding, Ok(b) if b.expired(now)))
            .map(|e| row(e, now))
            .collect(),
        BindingsCommand::Expire { dry_run: false } => {
            let ks = alloc.keyspace();
            alloc
                .expire_bindings(now)
                .await?
                .into_iter()
                .map(|b| {
                    let key = ks
                        .sticky(&b.namespace, &b.name, &b.ifname)
                        .unwrap_or_default();
                    row(
                        BindingEntry {
                            key,
                            binding: Ok(b),
                        },
                        now,
                    )
                })
                .collect()
        }
    };
    if !json {
        match cmd {
            BindingsCommand::Release { pod } if rows.is_empty() => {
                writeln!(out, "no binding of {pod}")?;
                return Ok(EXIT_OK);
            }
            BindingsCommand::Release { .. } => writeln!(out, "released:")?,
            BindingsCommand::Expire { dry_run: true } => writeln!(out, "would expire:")?,
            BindingsCommand::Expire { dry_run: false } => writeln!(out, "expired:")?,
            BindingsCommand::List => {}
        }
    }
    render(&rows, json, out)?;
    Ok(EXIT_OK)
}
