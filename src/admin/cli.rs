//! The command line of `ipamctl` (clap derive). Every command takes the
//! target network either as `--config FILE` (the plugin's network config,
//! a `.conf` or a `.conflist`) or as `--endpoints E --network NAME`
//! (`--prefix`, `--subnet`, `--chunk-bits` where needed). `--json` switches
//! every command from human tables to JSON on stdout.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Operator tool of the host-etcd IPAM: inspect, repair and benchmark the
/// allocation state of a network.
#[derive(Debug, Parser)]
#[command(name = "ipamctl", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// Which network and store.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON instead of human tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Which network and store a command works on.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// The plugin's network config JSON (`.conf`, or a `.conflist` whose
    /// plugin with an `ipam` section is used). Only `metrics` takes several.
    #[arg(long, global = true, value_name = "FILE", action = clap::ArgAction::Append)]
    pub config: Vec<PathBuf>,
    /// etcd endpoints, comma-separated (`host:port` or `http(s)://host:port`).
    #[arg(long, global = true, value_name = "E", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The embedded store's directory (instead of etcd).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// CA bundle (PEM) verifying the etcd servers.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd mutual TLS.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for etcd mutual TLS.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The CNI network name.
    #[arg(long, global = true, value_name = "NAME")]
    pub network: Option<String>,
    /// Key prefix (default `/host-etcd`).
    #[arg(long, global = true, value_name = "P")]
    pub prefix: Option<String>,
    /// A range set of one range (repeat for several sets), host-local
    /// defaults for gateway, rangeStart and rangeEnd.
    #[arg(long, global = true, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// Chunk size exponent k (default: the network's stored value, else the crate default, 8).
    #[arg(long, global = true, value_name = "K")]
    pub chunk_bits: Option<u8>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Size, use and storage of every range.
    Show,
    /// Every owner record (container, interface, addresses, pod, time).
    List(ListArgs),
    /// Who holds an address.
    Get {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// Release a container interface's addresses, or an address's holder.
    Release(ReleaseArgs),
    /// Check that chunk bits and owner records agree (exit 1 on problems).
    Check {
        /// Fix what is safe to fix (compare-and-swap on each chunk).
        #[arg(long)]
        repair: bool,
        /// With `--repair`: print what would be repaired, write nothing.
        #[arg(long, requires = "repair")]
        dry_run: bool,
    },
    /// Index owner records written before the per-node index existed, and
    /// drop index entries without a record (run once after upgrading every
    /// node; safe to run again, and while ADDs and DELs run).
    Reindex {
        /// Print what would be fixed, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Release every owner of the whole network (every node) not in a list
    /// of valid attachments: an operator's cluster-wide collection (the CNI
    /// GC verb only collects its own node's records).
    Gc {
        /// JSON list of `{"containerID", "ifname"}` (as in
        /// `cni.dev/valid-attachments`).
        #[arg(long, value_name = "FILE")]
        valid: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print what would be released, release nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Release this node's owner records that the container runtime no
    /// longer has (libcni's result cache, and/or a valid list), once they
    /// are older than a grace period.
    Reconcile(ReconcileArgs),
    /// Serve Prometheus metrics of one or more networks over HTTP
    /// (`GET /metrics`, text exposition format).
    Metrics(MetricsArgs),
    /// Every node: liveness (alive, gone, reaped, or never had an agent
    /// with liveness), last seen, owner records from the per-node index.
    Nodes,
    /// Release the owner records of nodes whose agent's liveness key has
    /// been gone longer than --node-gone-after (one or more networks).
    Reap(ReapArgs),
    /// Measure allocation throughput against etcd, with the raw CAS limit
    /// and the naive one-key-per-IP baseline in the same run.
    Bench(BenchArgs),
    /// Sticky-address bindings (a released pod's addresses kept for its
    /// next container).
    #[command(subcommand)]
    Bindings(BindingsCommand),
}

/// `bindings` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BindingsCommand {
    /// Every binding: pod, interface, addresses, times, active or expired.
    List,
    /// Delete a pod's bindings (every interface): its next container gets
    /// fresh addresses.
    Release {
        /// The pod, as `NAMESPACE/NAME`.
        pod: String,
    },
    /// Delete every expired binding.
    Expire {
        /// Print what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Filters of `list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Only this container ID.
    #[arg(long)]
    pub container: Option<String>,
    /// Only this pod, as `NAME` or `NAMESPACE/NAME`.
    #[arg(long)]
    pub pod: Option<String>,
    /// Only the holder of this address.
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
    /// Only the records this node allocated (read from the node's index
    /// entries alone).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// What `release` releases.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// The container ID.
    #[arg(
        long,
        conflicts_with_all = ["ip", "node"],
        required_unless_present_any = ["ip", "node"]
    )]
    pub container: Option<String>,
    /// The interface (with `--container`).
    #[arg(long, default_value = "eth0", requires = "container")]
    pub ifname: String,
    /// Release whoever holds this address.
    #[arg(long, conflicts_with = "node")]
    pub ip: Option<std::net::IpAddr>,
    /// Release every owner record allocated by this node (a node that is
    /// gone); records without a node are never touched.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what would be released, release nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The node whose owner records are reconciled (default: this host's
    /// name, as the plugin records it).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Owner records younger than this are always kept (an ADD may be in
    /// flight): e.g. 600, 90s, 10m, 1h30m.
    #[arg(long, value_name = "DURATION", default_value = "10m",
          value_parser = parse_duration_arg)]
    pub grace: std::time::Duration,
    /// libcni's result cache: the runtime's `<cacheDir>/results`
    /// (containerd, CRI-O and podman use /var/lib/cni/results).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cni/results")]
    pub cache_dir: PathBuf,
    /// Do not read the cache; only `--valid` lists the attachments.
    #[arg(long, requires = "valid")]
    pub no_cache: bool,
    /// More valid attachments: a JSON list of `{"containerID", "ifname"}`
    /// (as `gc --valid` takes), in addition to the cache.
    #[arg(long, value_name = "FILE")]
    pub valid: Option<PathBuf>,
    /// Also release attachments whose cache entry names a network
    /// namespace that no longer exists (a runtime that dropped a container
    /// whose DEL failed). Needs the host's mount and PID namespaces.
    #[arg(long)]
    pub check_netns: bool,
    /// Release even when no attachment of this network is known at all
    /// (refused by default: a wrong --cache-dir looks like an empty node).
    #[arg(long)]
    pub allow_empty: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what would be released and why, release nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run a pass every DURATION until SIGTERM or SIGINT (needs --yes or
    /// --dry-run); one line per pass on stderr.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub interval: Option<std::time::Duration>,
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    super::reconcile::parse_duration(text)
}

/// Options of `reap`.
#[derive(Debug, Clone, Args)]
pub struct ReapArgs {
    /// How long a node's liveness key must have been gone (as seen by the
    /// reaper) before its records are released.
    #[arg(long, value_name = "DURATION", default_value = "30m",
          value_parser = parse_duration_arg)]
    pub node_gone_after: std::time::Duration,
    /// Run a pass every DURATION until SIGTERM or SIGINT (the grace then
    /// counts from the reaper's start and from its last failed pass).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub interval: Option<std::time::Duration>,
    /// Release (needed: the reaper runs unattended).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what would be marked and released, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Address to serve on, `HOST:PORT` (e.g. `127.0.0.1:9654`).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Reuse the figures of a scrape for this many seconds (0: read the
    /// store on every scrape; concurrent scrapes always share one read).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub cache_secs: f64,
    /// Run the consistency check (a full scan of chunks and owner records)
    /// every this many seconds, apart from scrapes, and export its last
    /// result (`check_problems`, `check_in_flux`, `owner_records`); off by
    /// default.
    #[arg(long, value_name = "SECS")]
    pub check_interval_secs: Option<f64>,
    /// Also run the dead-node reaper (as `ipamctl reap --yes --interval`):
    /// release the records of nodes whose liveness key has been gone this
    /// long (e.g. 30m), counted in `reaped_*_total`. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub reap_after: Option<std::time::Duration>,
    /// The reaper's pass interval.
    #[arg(long, value_name = "DURATION", default_value = "1m",
          value_parser = parse_duration_arg)]
    pub reap_interval: std::time::Duration,
    /// Give up on a network's store reads after this many seconds (that
    /// network's `up` is then 0).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub scrape_timeout_secs: f64,
    /// A client must send its request, and take the answer, within this
    /// many seconds (slow clients are disconnected).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub client_timeout_secs: f64,
}

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Allocations to measure (in total, over all clients).
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub count: usize,
    /// Concurrent clients (tokio tasks) per process.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// Processes (this binary re-executed); clients are per process.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Fill this fraction of the range (0..1) before measuring.
    #[arg(long, default_value_t = 0.0)]
    pub prefill: f64,
    /// Release each address right after allocating it (alloc+release loop).
    #[arg(long)]
    pub release: bool,
    /// Use a fresh random network name (`bench-XXXXXXXX`) so runs never collide.
    #[arg(long)]
    pub network_per_run: bool,
    /// All clients share one node seed (one node's plugin invocations)
    /// instead of one seed per client (one client per node).
    #[arg(long)]
    pub same_node: bool,
    /// All clients of a process share one allocator behind a group-commit
    /// handle (concurrent allocations committed together), as the node agent
    /// does, instead of one allocator each.
    #[arg(long)]
    pub group: bool,
    /// Skip the raw compare-and-swap measurement.
    #[arg(long)]
    pub no_raw: bool,
    /// Skip the naive one-key-per-IP baseline.
    #[arg(long)]
    pub no_naive: bool,
    /// Time limit of each baseline measurement, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub baseline_secs: f64,
    /// Rollout mode: N simulated nodes (each its own allocator, node name
    /// and seed) start at once and each does --adds-per-node ADDs; at most
    /// --concurrency nodes run at a time. Reports etcd calls per ADD
    /// (from etcd's /metrics), failures, duplicates and latency; --count,
    /// --prefill, --release and the baselines do not apply.
    #[arg(long, value_name = "N")]
    pub rollout_nodes: Option<usize>,
    /// Rollout mode: ADDs per simulated node.
    #[arg(long, default_value_t = 6)]
    pub adds_per_node: usize,
    /// Internal: run as worker process INDEX of a multi-process run.
    #[arg(long, hide = true)]
    pub worker: Option<usize>,
    /// Internal: the network name a worker process uses.
    #[arg(long, hide = true)]
    pub worker_network: Option<String>,
}
