//! How the agent runs: its command line's settings ([`Config`], and the
//! periodic reconcile's, [`ReconcileConfig`]), read by the server
//! ([`super::server`]), the shared state ([`super::state`]) and the
//! operations side ([`super::ops`]).

use std::path::PathBuf;
use std::time::Duration;

use super::liveness::LivenessConfig;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The unix socket to listen on.
    pub socket: PathBuf,
    /// Longest wait for a connection's request frame.
    pub read_timeout: Duration,
    /// Longest wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Log every request, not only failures.
    pub log_requests: bool,
    /// The group commit's wait for more concurrent ADDs of a network.
    pub batch_window: Duration,
    /// The periodic reconcile, when on.
    pub reconcile: Option<ReconcileConfig>,
    /// The metrics address (`HOST:PORT`), when on.
    pub metrics_listen: Option<String>,
    /// Node liveness in etcd, when on.
    pub liveness: Option<LivenessConfig>,
}

/// How the periodic reconcile runs.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// Time between passes (the first pass runs one interval after start).
    pub interval: Duration,
    /// What every pass is told (a cache directory, the grace, whether
    /// gone network namespaces count; never a dry run).
    pub pass: crate::admin::reconcile_run::PassSettings,
}
