//! The operator CLI `ipamctl`, as a library: inspect a network's
//! allocation state (`show`, `list`, `get`), fix it (`release`, `check
//! --repair`, `gc`, each with `--dry-run`), export it to Prometheus
//! (`metrics`), and measure throughput (`bench`). Built on the
//! [`allocator`](crate::allocator) API, never on the CNI layer; it reads the
//! same network config file as the plugin (`crate::cni::config`).
//!
//! | module | concern |
//! |---|---|
//! | `cli` | the command line (clap derive) |
//! | `target` | config file or flags → network, store, chunk size |
//! | `commands` | `show`, `list`, `get`, `release`, `check`, `gc`, `reconcile` |
//! | `reconcile` | `reconcile`: the pure decision, libcni cache entries |
//! | `reconcile_run` | `reconcile`: the I/O of a pass (ipamctl and the agent) |
//! | `valid` | the valid-attachments file of `gc --valid` and `reconcile --valid` |
//! | `bindings` | `bindings list\|release\|expire` (sticky addresses) |
//! | `metrics` | `metrics`: the cluster figures of every network |
//! | `families` | the one metric table of both exporters (`ipamctl metrics`, the agent) |
//! | `exposition` | the Prometheus text format both exporters answer with |
//! | `exporter` | the HTTP endpoint of both exporters (hyper), the scrape cache |
//! | `bench` | `bench`: ours vs raw compare-and-swap vs naive |
//! | `naive` | the naive one-key-per-IP baseline |
//! | `table` | human tables |
//! | `error` | errors and exit statuses |
//!
//! Exit statuses: 0 success; 1 `check` found problems; 2 bad usage, bad
//! input, a refused (unconfirmed) operation, or a metrics address that
//! cannot be listened on; 3 the store or allocator failed.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub(crate) mod bench;
pub(crate) mod bindings;
pub(crate) mod cli;
pub(crate) mod commands;
pub(crate) mod error;
pub(crate) mod exporter;
pub(crate) mod exposition;
pub(crate) mod families;
pub(crate) mod metrics;
pub(crate) mod naive;
pub(crate) mod reap;
pub(crate) mod reconcile;
pub(crate) mod reconcile_run;
pub(crate) mod table;
pub(crate) mod target;
pub(crate) mod valid;

use cli::{Cli, Command};
use commands::{Confirm, StdinConfirm};
use error::{AdminError, EXIT_FAILED};
use target::Target;

/// Runs one parsed command, writing its output to `out`; returns the exit
/// status.
pub(crate) async fn dispatch(
    cli: &Cli,
    out: &mut dyn Write,
    confirm: &mut dyn Confirm,
) -> Result<u8, AdminError> {
    if let Command::Bench(args) = &cli.command {
        return bench::bench_command(&cli.target, args, cli.json, out).await;
    }
    if let Command::Metrics(args) = &cli.command {
        return metrics::metrics_command(Target::resolve_all(&cli.target)?, args, out).await;
    }
    if let Command::Reap(args) = &cli.command {
        return reap::reap_command(Target::resolve_all(&cli.target)?, args, cli.json, out).await;
    }
    if let Command::Nodes = &cli.command {
        return reap::nodes_command(Target::resolve_all(&cli.target)?, cli.json, out).await;
    }
    let target = Target::resolve(&cli.target, None)?;
    if let Command::Show = &cli.command {
        target.require_ranges("show")?;
    }
    let alloc = match &cli.command {
        Command::List(_) => target.open_for_records().await?,
        _ => target.open().await?,
    };
    alloc.set_scan_progress(Some(scan_progress()));
    match &cli.command {
        Command::Show => commands::show(&alloc, cli.json, out).await,
        Command::List(filter) => commands::list(&alloc, filter, cli.json, out).await,
        Command::Get { ip } => commands::get(&alloc, *ip, cli.json, out).await,
        Command::Release(args) => commands::release(&alloc, args, cli.json, confirm, out).await,
        Command::Check { repair, dry_run } => {
            commands::check(&alloc, *repair, *dry_run, cli.json, out).await
        }
        Command::Reindex { dry_run } => commands::reindex(&alloc, *dry_run, cli.json, out).await,
        Command::Gc {
            valid,
            yes,
            dry_run,
        } => commands::gc(&alloc, valid, *yes, *dry_run, cli.json, confirm, out).await,
        Command::Reconcile(args) => commands::reconcile(&alloc, args, cli.json, confirm, out).await,
        Command::Bindings(cmd) => bindings::bindings_command(&alloc, cmd, cli.json, out).await,
        Command::Bench(_) | Command::Metrics(_) | Command::Reap(_) | Command::Nodes => {
            Ok(error::EXIT_OK)
        }
    }
}

/// Tells the operator on stderr how far a long scan has come: at most one
/// line every 2 seconds, none for a scan that ends sooner.
fn scan_progress() -> crate::allocator::ScanProgress {
    let started = std::sync::Mutex::new(None::<(String, std::time::Instant, std::time::Instant)>);
    std::sync::Arc::new(move |what: &str, keys: usize| {
        let Ok(mut state) = started.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        let (label, first, last) = match state.take() {
            Some(s) if s.0 == what => s,
            _ => (what.to_string(), now, now),
        };
        let last = if now.duration_since(last) >= std::time::Duration::from_secs(2) {
            eprintln!(
                "ipamctl: scanning {label}: {keys} keys read in {:.0?}",
                now.duration_since(first)
            );
            now
        } else {
            last
        };
        *state = Some((label, first, last));
    })
}

/// The `ipamctl` process: parses the command line, runs the command on a
/// tokio runtime, prints errors to stderr, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipamctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = runtime.block_on(dispatch(&cli, &mut stdout, &mut StdinConfirm));
    let _ = stdout.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ipamctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
