//! The node agent, `host-etcd agent`: a long-running process per node that
//! serves the plugin over a unix socket, so the plugin processes of a node
//! share warm allocators instead of each connecting to etcd and reading its
//! node cache file.
//!
//! * One etcd client per distinct store config (endpoints, TLS files,
//!   user and password, deadlines), connected on first use.
//! * One [`Allocator`](crate::allocator::Allocator) per network config
//!   (store, name, prefix, range sets, chunk size, CAS attempts, budget),
//!   built on first use and kept: its in-memory node cache makes an ADD or
//!   a DEL one etcd transaction. At most [`server::MAX_NETWORKS`].
//! * A request carries the plugin's whole network config and `CNI_*`
//!   environment, so one agent serves every network of the node; it runs
//!   the plugin's own command logic ([`crate::cni::command::dispatch_with`])
//!   and answers exactly what the plugin would print, with its exit status.
//!   Embedded-store networks (no `endpoints`) are run exactly as the
//!   plugin runs them (store opened and closed per request, off the
//!   runtime); the plugin itself never sends them
//!   (`crate::cni::agent_client` serves them directly).
//! * Requests run concurrently, one task per connection on a multi-thread
//!   runtime. Concurrent ADDs of one network are group-committed, DELs take
//!   turns (`ARCHITECTURE.md`, "Through the node agent, and group commit").
//!
//! The protocol (versioned, length-prefixed JSON frames) is in
//! [`protocol`]; the plugin's side in [`crate::cni::agent_client`].
//!
//! ## Running it
//!
//! ```text
//! host-etcd agent [--socket /run/host-etcd/agent.sock] [--read-timeout-ms 5000]
//!                 [--drain-timeout-ms 10000] [--max-connections 1024] [--log-requests]
//!                 [--batch-window-us 1000]
//!                 [--reconcile-interval DURATION [--reconcile-grace 10m]
//!                  [--cache-dir /var/lib/cni/results] [--check-netns]]
//!                 [--metrics-listen HOST:PORT]
//! host-etcd agent status [--socket PATH] [--timeout-ms 2000]
//! ```
//!
//! * The socket's directory is created with mode 0700 if missing; the
//!   socket file gets mode 0600, and a peer whose uid (`SO_PEERCRED`) is
//!   neither root nor the agent's own user is refused.
//! * A socket file left by an agent that died is removed at start (nothing
//!   answers on it); if something answers, the agent refuses to start
//!   (exit 1): another agent runs. A path that is not a socket is never
//!   removed.
//! * SIGTERM or SIGINT: stop accepting, remove the socket (new plugin
//!   processes go direct), let in-flight requests finish (at most the
//!   drain timeout), save every network's node cache file, exit 0.
//! * A reply is sent only after its command returned, so every
//!   acknowledged ADD and DEL is committed by compare-and-swap in etcd;
//!   `kill -9` loses nothing acknowledged, and a restart needs no cleanup.
//! * `status` prints the agent's status document (JSON: `healthy`, store
//!   endpoints and whether connected, networks served with their request
//!   and error counts and last error, totals, protocol errors, refused
//!   peers) and exits 0; 1 when the agent does not answer. `healthy` is
//!   false while some network's last request failed because its store was
//!   unavailable (code 11 or 50).
//! * `--reconcile-interval`: the leak cleanup of `ipamctl reconcile --yes`
//!   for this node, every interval, on every served network; one
//!   `reconcile` log line per pass per network ([`ops`]).
//! * `--metrics-listen`: the `/metrics` of `ipamctl metrics` for every
//!   served network, plus the agent's own figures ([`ops`]). An address
//!   that cannot be bound: the agent does not start (exit 1, `start_failed`
//!   naming the address).
//! * Logs: one JSON object per line on stderr ([`log`]): start, stop,
//!   stale socket, store connected, network added, failed requests,
//!   protocol errors, refused peers (every request with `--log-requests`).
//!
//! Limits: TLS files are read when a store client is created; after a
//! certificate rotation restart the agent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::cni::config::DEFAULT_AGENT_SOCKET;

pub mod log;
pub mod ops;
pub mod protocol;
pub mod server;

/// `host-etcd agent`: serve the host-etcd CNI plugin of this node over a
/// unix socket.
#[derive(Debug, Parser)]
#[command(name = "host-etcd agent", version)]
struct Cli {
    /// The unix socket (the plugin's `ipam.agentSocket`).
    #[arg(long, global = true, default_value = DEFAULT_AGENT_SOCKET)]
    socket: PathBuf,
    /// Longest wait for a connection's request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    read_timeout_ms: u64,
    /// Longest wait for in-flight requests on SIGTERM, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Log every request (by default only failed ones).
    #[arg(long)]
    log_requests: bool,
    /// How long a group commit waits for more concurrent ADDs of a network
    /// before it sends them, in microseconds (0: send at once; requests
    /// that arrive during a transaction still share the next one).
    #[arg(long, default_value_t = 1000)]
    batch_window_us: u64,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Run `ipamctl reconcile --yes` for this node on every served network
    /// every DURATION (e.g. 5m, 90s): release owner records libcni's
    /// result cache no longer has. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    reconcile_interval: Option<Duration>,
    /// With --reconcile-interval: owner records younger than this are
    /// kept (an ADD may be in flight).
    #[arg(long, value_name = "DURATION", default_value = "10m",
          value_parser = duration_arg, requires = "reconcile_interval")]
    reconcile_grace: Duration,
    /// With --reconcile-interval: libcni's result cache directory.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/cni/results",
        requires = "reconcile_interval"
    )]
    cache_dir: PathBuf,
    /// With --reconcile-interval: also release attachments whose cache
    /// entry names a network namespace that no longer exists.
    #[arg(long, requires = "reconcile_interval")]
    check_netns: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on HOST:PORT: every served
    /// network's `host_etcd_ipam_*` figures and the agent's
    /// `host_etcd_agent_*`. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Sub>,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    crate::admin::reconcile::parse_duration(text)
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Print the running agent's status (JSON); exit 1 if it does not answer.
    Status {
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

/// The `agent` subcommand of the `host-etcd` binary; `args` start with
/// `agent`.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    std::panic::set_hook(Box::new(|info| {
        log::error("panic", json!({"error": info.to_string()}));
    }));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log::error("runtime_failed", json!({"error": e.to_string()}));
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Sub::Status { timeout_ms }) => runtime.block_on(status(cli.socket, timeout_ms)),
        None => {
            if cli.reconcile_interval.is_some_and(|d| d.is_zero()) {
                eprintln!("host-etcd agent: --reconcile-interval must be more than 0");
                return ExitCode::from(2);
            }
            let config = server::Config {
                socket: cli.socket,
                read_timeout: Duration::from_millis(cli.read_timeout_ms),
                drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
                max_connections: cli.max_connections,
                log_requests: cli.log_requests,
                batch_window: Duration::from_micros(cli.batch_window_us),
                reconcile: cli.reconcile_interval.map(|interval| ops::ReconcileConfig {
                    interval,
                    grace: cli.reconcile_grace,
                    cache_dir: cli.cache_dir.clone(),
                    check_netns: cli.check_netns,
                }),
                metrics_listen: cli.metrics_listen.clone(),
            };
            runtime.block_on(async {
                let shutdown = match shutdown_signal() {
                    Ok(s) => s,
                    Err(e) => {
                        log::error("signal_setup_failed", json!({"error": e.to_string()}));
                        return ExitCode::FAILURE;
                    }
                };
                match server::serve(config, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        log::error("start_failed", json!({"error": e.to_string()}));
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log::info("shutdown", json!({"signal": name}));
    })
}

/// `host-etcd agent status`.
async fn status(socket: PathBuf, timeout_ms: u64) -> ExitCode {
    let timeout = Duration::from_millis(timeout_ms);
    let answer =
        crate::cni::agent_client::request(&socket, &protocol::Request::Status, timeout).await;
    let failed = |why: String| {
        let doc = json!({"healthy": false, "socket": socket.display().to_string(), "error": why});
        println!("{doc:#}");
        ExitCode::FAILURE
    };
    match answer {
        Ok(protocol::Reply::Status(doc)) => {
            println!("{doc:#}");
            ExitCode::SUCCESS
        }
        Ok(protocol::Reply::Error { error, .. }) => failed(format!("agent refused: {error}")),
        Ok(other) => failed(format!("unexpected reply {other:?}")),
        Err(e) => failed(e),
    }
}
