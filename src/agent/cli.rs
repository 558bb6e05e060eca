//! The command line of `host-etcd agent` (clap derive) and its entry point
//! [`main`]: parse, build the runtime, serve or print the status.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::admin::reconcile_run::PassSettings;
use crate::cni::config::DEFAULT_AGENT_SOCKET;

use super::{config, log, server};
use crate::cni::agent_client::protocol;

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
    /// Serve Prometheus metrics (`GET /metrics`) on HOST:PORT: this node's
    /// figures (`host_etcd_agent_*`). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Keep this node's liveness key in the etcd (and key prefix) of this
    /// network config (repeat for several stores): a cluster reaper
    /// (`ipamctl reap`, `ipamctl metrics --reap-after`) releases the owner
    /// records of a node whose key has been gone too long. Off by default.
    #[arg(long, value_name = "FILE")]
    liveness_config: Vec<PathBuf>,
    /// The liveness lease's TTL in seconds (renewed every third of it).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    liveness_ttl_secs: u64,
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
            if !(5..=3600).contains(&cli.liveness_ttl_secs) {
                eprintln!("host-etcd agent: --liveness-ttl-secs must be in 5..=3600");
                return ExitCode::from(2);
            }
            if cli.reconcile_interval.is_some_and(|d| d.is_zero()) {
                eprintln!("host-etcd agent: --reconcile-interval must be more than 0");
                return ExitCode::from(2);
            }
            let config = config::Config {
                socket: cli.socket,
                read_timeout: Duration::from_millis(cli.read_timeout_ms),
                drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
                max_connections: cli.max_connections,
                log_requests: cli.log_requests,
                batch_window: Duration::from_micros(cli.batch_window_us),
                reconcile: cli
                    .reconcile_interval
                    .map(|interval| config::ReconcileConfig {
                        interval,
                        pass: PassSettings {
                            cache_dir: Some(cli.cache_dir.clone()),
                            valid: None,
                            check_netns: cli.check_netns,
                            grace: cli.reconcile_grace,
                            allow_empty: false,
                            dry_run: false,
                        },
                    }),
                metrics_listen: cli.metrics_listen.clone(),
                liveness: (!cli.liveness_config.is_empty()).then(|| {
                    super::liveness::LivenessConfig {
                        configs: cli.liveness_config.clone(),
                        ttl: Duration::from_secs(cli.liveness_ttl_secs),
                    }
                }),
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
