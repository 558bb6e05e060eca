//! The operator CLI `ipamctl`, as a library: inspect a network's
//! allocation state (`show`, `list`, `get`), fix it (`release`, `check
//! --repair`, `gc`), and measure throughput (`bench`). Built on the
//! [`allocator`](crate::allocator) API, never on the CNI layer; it reads the
//! same network config file as the plugin ([`crate::cni::config`]).
//!
//! | module | concern |
//! |---|---|
//! | [`cli`] | the command line (clap derive) |
//! | [`target`] | config file or flags → network, store, chunk size |
//! | [`commands`] | `show`, `list`, `get`, `release`, `check`, `gc` |
//! | [`bench`] | `bench`: ours vs raw compare-and-swap vs naive |
//! | [`naive`] | the naive one-key-per-IP baseline |
//! | [`table`] | human tables |
//! | [`error`] | errors and exit statuses |
//!
//! Exit statuses: 0 success; 1 `check` found problems; 2 bad usage, bad
//! input or a refused (unconfirmed) operation; 3 the store or allocator
//! failed.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub mod bench;
pub mod cli;
pub mod commands;
pub mod error;
pub mod naive;
pub mod table;
pub mod target;

use cli::{Cli, Command};
use commands::{Confirm, StdinConfirm};
use error::{AdminError, EXIT_FAILED};
use target::Target;

/// Runs one parsed command, writing its output to `out`; returns the exit
/// status.
pub async fn run(
    cli: &Cli,
    out: &mut dyn Write,
    confirm: &mut dyn Confirm,
) -> Result<u8, AdminError> {
    if let Command::Bench(args) = &cli.command {
        return bench::run(&cli.target, args, cli.json, out).await;
    }
    let target = Target::resolve(&cli.target, None)?;
    if let Command::Show = &cli.command {
        target.require_ranges("show")?;
    }
    let alloc = target.open().await?;
    match &cli.command {
        Command::Show => commands::show(&alloc, cli.json, out).await,
        Command::List(filter) => commands::list(&alloc, filter, cli.json, out).await,
        Command::Get { ip } => commands::get(&alloc, *ip, cli.json, out).await,
        Command::Release(args) => commands::release(&alloc, args, cli.json, confirm, out).await,
        Command::Check { repair } => commands::check(&alloc, *repair, cli.json, out).await,
        Command::Gc { valid, yes } => {
            commands::gc(&alloc, valid, *yes, cli.json, confirm, out).await
        }
        Command::Bench(_) => Ok(error::EXIT_OK),
    }
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
    let result = runtime.block_on(run(&cli, &mut stdout, &mut StdinConfirm));
    let _ = stdout.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ipamctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
