//! The agent process: the socket (stale file, mode, peer check), the
//! accept loop, one task per connection lending the shared allocators
//! ([`super::state`]) to the plugin's command logic, and the drain on
//! shutdown.
//!
//! Every connection is served by its own task on the multi-thread runtime,
//! so requests run concurrently and call into the shared allocators
//! concurrently (the allocator is `Sync`; every write is a
//! compare-and-swap). Concurrent ADDs of one network are committed together
//! ([`GroupCommit`](crate::allocator::GroupCommit): the requests that arrive while a transaction is in
//! flight go into the next one, each with its own result), and so are
//! concurrent DELs (in a transaction of their own). A reply is written only
//! after the command returned, so an answered ADD or DEL is committed in
//! etcd: killing the agent (even with `kill -9`) loses nothing it answered.
//!
//! A CNI request that asks for it is acknowledged (an `ack` frame) as soon
//! as it is read and decoded, before it runs; a client that closes its
//! connection before its request is committed has it dropped, and an ADD
//! committed after its client went away is released again (logged as
//! `abandoned_request`, counted in the metrics).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::Config;
use super::log;
use super::state::{lock, NetEntry, Shared, COMMANDS};
use crate::allocator::{AllocRequest, Allocation, Allocator, OwnerId};
use crate::cni::agent_client::protocol::{
    read_frame, write_frame, FrameError, Reply, Request, MAX_FRAME, VERSIONS,
};
use crate::cni::command::{self, AllocatorSource, Prepared};
use crate::cni::config::{Input, NetConf, StoreConf};
use crate::cni::deadline::{deadline, timed_out};
use crate::cni::{CniError, Env};
use crate::store::any::AnyStore;

/// Longest wait to write a reply to a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Something answers on the socket already.
    #[error("another agent answers on {}; not starting", path.display())]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
    },
    /// The socket path is taken by something that is not a socket.
    #[error("{} exists and is not a socket; not removing it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The metrics address cannot be listened on.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file system or socket call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a peer of uid `peer` may use an agent running as uid `own`:
/// root, and the agent's own user.
pub fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == 0 || peer == own
}

/// The bound socket and what identifies its file.
struct Bound {
    listener: UnixListener,
    /// (device, inode) of the socket file, so shutdown removes only ours.
    file: (u64, u64),
    /// The uid that owns the socket file: the agent's own user.
    uid: u32,
}

/// Prepares and binds the socket: creates a missing parent directory (mode
/// 0700), removes a stale socket file nothing answers on, refuses to start
/// when something does, binds and sets the file's mode to 0600.
async fn bind(path: &Path) -> Result<Bound, AgentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create the socket directory", dir))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AgentError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {
            match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
                // Accepted, or at least queued (a full backlog): it lives.
                Ok(Ok(_)) | Err(_) => {
                    return Err(AgentError::AlreadyRunning {
                        path: path.to_path_buf(),
                    })
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(io_err("cannot remove the stale socket", path))?;
                    log::info(
                        "stale_socket_removed",
                        json!({"socket": path.display().to_string()}),
                    );
                }
                Ok(Err(e)) => return Err(io_err("cannot probe the socket", path)(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot inspect the socket path", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot set the mode of", path))?;
    let meta = std::fs::metadata(path).map_err(io_err("cannot inspect", path))?;
    Ok(Bound {
        listener,
        file: (meta.dev(), meta.ino()),
        uid: meta.uid(),
    })
}

/// Removes the socket file if it is still the one this agent bound.
fn remove_socket(path: &Path, file: (u64, u64)) {
    let ours = std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == file);
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn(
                "socket_remove_failed",
                json!({"socket": path.display().to_string(), "error": e.to_string()}),
            );
        }
    }
}

/// Serves until `shutdown` completes, then stops accepting, removes the
/// socket, drains in-flight requests (at most `drain_timeout`) and saves
/// every network's node cache.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    // The metrics address first: one that cannot be bound stops the start
    // before the socket is taken.
    let metrics = bind_metrics(config.metrics_listen.as_deref()).await?;
    let bound = bind(&config.socket).await?;
    let shared = Arc::new(Shared::new(config.clone(), bound.uid));
    let mut background = start_background(&config, &shared, metrics);
    log::info(
        "listening",
        json!({
            "socket": config.socket.display().to_string(),
            "pid": std::process::id(),
            "protocol": VERSIONS,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    );
    let tasks = accept_until(&bound.listener, &shared, config.max_connections, shutdown).await;
    drop(bound.listener);
    remove_socket(&config.socket, bound.file);
    // A reconcile pass in flight is dropped between two store calls: every
    // release is one compare-and-swap, so nothing is left half done.
    background.abort_all();
    while background.join_next().await.is_some() {}
    drain(tasks, config.drain_timeout).await;
    shared.save_caches();
    log::info(
        "stopped",
        json!({"requests": shared.counters.requests.load(Ordering::Relaxed)}),
    );
    Ok(())
}

/// Binds the metrics address, when there is one.
async fn bind_metrics(
    addr: Option<&str>,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, AgentError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let failed = |source| AgentError::MetricsListen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(Some((listener, local)))
}

/// Starts what runs beside the socket, each when it is on: the metrics
/// exporter on `metrics`, the periodic reconcile, the node liveness. The
/// tasks are aborted on shutdown.
fn start_background(
    config: &Config,
    shared: &Arc<Shared>,
    metrics: Option<(tokio::net::TcpListener, SocketAddr)>,
) -> JoinSet<()> {
    let mut background = JoinSet::new();
    if let Some((listener, local)) = metrics {
        log::info(
            "metrics_listening",
            json!({"address": local.to_string(), "url": format!("http://{local}/metrics")}),
        );
        let scraper = Arc::new(super::ops::AgentMetrics {
            shared: shared.clone(),
        });
        background.spawn(crate::admin::exporter::serve(
            listener,
            scraper,
            super::ops::SCRAPE_TIMEOUT,
        ));
    }
    if let Some(rc) = &config.reconcile {
        log::info(
            "reconcile_enabled",
            json!({
                "interval_ms": rc.interval.as_millis() as u64,
                "grace_secs": rc.pass.grace.as_secs(),
                "cache_dir": rc.pass.cache_dir.as_ref().map(|d| d.display().to_string()),
                "check_netns": rc.pass.check_netns,
            }),
        );
        background.spawn(super::ops::reconcile_loop(shared.clone(), rc.clone()));
    }
    if let Some(lc) = &config.liveness {
        let node = crate::allocator::local_hostname();
        log::info(
            "liveness_enabled",
            json!({"node": node, "ttl_secs": lc.ttl.as_secs(), "configs": lc.configs.len()}),
        );
        background.spawn(super::liveness::run(
            lc.clone(),
            node,
            shared.liveness.clone(),
        ));
    }
    background
}

/// Accepts connections until `shutdown` completes, each served by its own
/// task, at most `max_connections` at once (more wait in the listen
/// backlog). Gives the connections still in flight.
async fn accept_until(
    listener: &UnixListener,
    shared: &Arc<Shared>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        serve_connection(&shared, stream).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    log::warn("accept_failed", json!({"error": e.to_string()}));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => reaped(done),
        }
        while let Some(done) = tasks.try_join_next() {
            reaped(done);
        }
    }
    tasks
}

/// Lets the connections in flight finish, at most `timeout`; aborts the
/// rest.
async fn drain(mut tasks: JoinSet<()>, timeout: Duration) {
    log::info("draining", json!({"connections": tasks.len()}));
    let drained = tokio::time::timeout(timeout, async {
        while let Some(done) = tasks.join_next().await {
            reaped(done);
        }
    })
    .await;
    if drained.is_err() {
        log::warn(
            "drain_timeout",
            json!({"aborted_connections": tasks.len(), "drain_timeout_ms": timeout.as_millis() as u64}),
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn reaped(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            log::error("connection_task_panicked", json!({"error": e.to_string()}));
        }
    }
}

/// The agent's [`AllocatorSource`] for one request: the shared allocator
/// of the request's network, remembered for the request's figures.
struct Lender<'a> {
    shared: &'a Shared,
    used: Mutex<Option<Arc<NetEntry>>>,
}

/// A shared allocator lent to one request.
struct NetHandle(Arc<NetEntry>);

impl Deref for NetHandle {
    type Target = Allocator<Arc<AnyStore>>;

    fn deref(&self) -> &Self::Target {
        &self.0.allocator
    }
}

impl AllocatorSource for Lender<'_> {
    type Store = Arc<AnyStore>;
    type Handle = NetHandle;

    async fn allocator(&self, conf: &NetConf) -> Result<NetHandle, CniError> {
        let entry = self.shared.network(conf).await?;
        *lock(&self.used) = Some(entry.clone());
        Ok(NetHandle(entry))
    }

    // The warm allocator keeps its node cache in memory (no cache file).
    async fn allocate(
        &self,
        _conf: &NetConf,
        allocator: &NetHandle,
        request: &AllocRequest,
    ) -> Result<Allocation, CniError> {
        // Concurrent ADDs of the network are committed together: no turns.
        Ok(allocator.0.group.allocate(request.clone()).await?)
    }

    // Concurrent DELs of the network are committed together too (they
    // would conflict in the node's chunk if each went alone).
    async fn release(
        &self,
        _conf: &NetConf,
        allocator: &NetHandle,
        owner: &OwnerId,
    ) -> Result<(), CniError> {
        allocator.0.group.release(owner).await?;
        Ok(())
    }
}

/// Runs one CNI request as the plugin would and gives what it would print
/// and its exit status.
async fn run_cni(shared: &Shared, vars: &BTreeMap<String, String>, stdin: &str) -> Reply {
    let started = std::time::Instant::now();
    let bytes = stdin.as_bytes();
    // Decoded once: the config and the error output's version.
    let input = Input::parse(bytes);
    let version = input.version;
    let lender = Lender {
        shared,
        used: Mutex::new(None),
    };
    let env = Env::from_lookup(|k| vars.get(k).map(OsString::from));
    let outcome = match env {
        Err(e) => Err(e),
        Ok(env) => match command::prepare(&env, input) {
            Err(e) => Err(e),
            Ok(Prepared::Answer(out)) => Ok(out),
            Ok(Prepared::Conf(conf)) => match conf.ipam.store {
                // The embedded store is one process's at a time: run the
                // plugin's own path (open, command, close) off the runtime.
                StoreConf::Local { .. } => {
                    let owned = bytes.to_vec();
                    tokio::task::spawn_blocking(move || command::execute(&env, &owned))
                        .await
                        .unwrap_or_else(|e| Err(CniError::Internal(format!("agent task: {e}"))))
                }
                StoreConf::Etcd(_) => {
                    let deadline = deadline(&conf);
                    let outcome = tokio::time::timeout(
                        deadline,
                        command::dispatch_with(&env, &conf, &lender),
                    )
                    .await
                    .unwrap_or_else(|_| Err(timed_out(env.command, deadline)));
                    // The same STATUS policy and failure-streak file as
                    // the plugin's direct path.
                    command::conclude(&conf, env.command, outcome).0
                }
            },
        },
    };
    let c = &shared.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let command = vars.get("CNI_COMMAND").map_or("other", String::as_str);
    let slot = COMMANDS
        .iter()
        .position(|k| *k == command)
        .unwrap_or(COMMANDS.len() - 1);
    c.latency[slot].observe(started.elapsed());
    let code = outcome.as_ref().err().map_or(0, CniError::code);
    let used = lock(&lender.used).take();
    if let Some(entry) = &used {
        entry.requests.fetch_add(1, Ordering::Relaxed);
        entry.last_code.store(code, Ordering::Relaxed);
    }
    if let Err(e) = &outcome {
        c.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = &used {
            entry.errors.fetch_add(1, Ordering::Relaxed);
            *lock(&entry.last_error) = Some(e.to_string());
        }
    }
    if shared.config.log_requests || outcome.is_err() {
        let mut fields = json!({
            "command": vars.get("CNI_COMMAND"),
            "container": vars.get("CNI_CONTAINERID"),
            "network": used.as_ref().map(|e| e.name.clone()),
            "code": code,
        });
        if let Err(e) = &outcome {
            fields["error"] = json!(e.to_string());
        }
        let level = if outcome.is_err() { "warn" } else { "info" };
        log::line(level, "request", fields);
    }
    let response = command::response(version, outcome);
    Reply::Cni {
        stdout: response.stdout,
        exit: response.exit_code,
    }
}

/// Serves one connection: peer check, one request frame, one reply.
async fn serve_connection(shared: &Shared, mut stream: UnixStream) {
    if !peer_checked(shared, &mut stream).await {
        return;
    }
    match read_request(shared, &mut stream).await {
        None => {}
        Some(Request::Status) => reply(&mut stream, &Reply::Status(shared.status())).await,
        Some(Request::Cni { env, stdin, ack }) => serve_cni(shared, stream, env, stdin, ack).await,
    }
}

/// Whether the peer may use the agent; one that may not gets an error
/// reply (and is counted and logged).
async fn peer_checked(shared: &Shared, stream: &mut UnixStream) -> bool {
    match stream.peer_cred().map(|cred| cred.uid()) {
        Ok(uid) if peer_allowed(uid, shared.own_uid) => true,
        other => {
            shared
                .counters
                .refused_peers
                .fetch_add(1, Ordering::Relaxed);
            let uid = other.as_ref().ok().copied();
            log::warn("peer_refused", json!({"uid": uid}));
            let why = match uid {
                Some(uid) => format!(
                    "peer uid {uid} is not allowed (only root and uid {} may use this agent)",
                    shared.own_uid
                ),
                None => "the peer's credentials cannot be read".into(),
            };
            reply(stream, &Reply::error(why)).await;
            linger(stream).await;
            false
        }
    }
}

/// The connection's request, within the read timeout; `None` when there
/// is none to serve (a malformed or late one got its error reply).
async fn read_request(shared: &Shared, stream: &mut UnixStream) -> Option<Request> {
    let body = match tokio::time::timeout(shared.config.read_timeout, read_frame(stream)).await {
        Ok(Ok(Some(body))) => body,
        // Connected and closed: a liveness probe.
        Ok(Ok(None)) => return None,
        Ok(Err(FrameError::Io(_))) => return None,
        Ok(Err(e)) => {
            protocol_error(shared, stream, e.to_string()).await;
            return None;
        }
        Err(_) => {
            let why = format!(
                "no complete request within {} ms",
                shared.config.read_timeout.as_millis()
            );
            protocol_error(shared, stream, why).await;
            return None;
        }
    };
    match Request::decode(&body) {
        Ok(r) => Some(r),
        Err(why) => {
            protocol_error(shared, stream, why).await;
            None
        }
    }
}

/// One CNI request: the acknowledgement when asked for, the command
/// (cancelled when the client goes away first), the reply.
async fn serve_cni(
    shared: &Shared,
    mut stream: UnixStream,
    env: BTreeMap<String, String>,
    stdin: String,
    ack: bool,
) {
    let c = &shared.counters;
    if ack {
        let sent = tokio::time::timeout(
            WRITE_TIMEOUT,
            write_frame(&mut stream, &Reply::Ack.encode()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            // The client went away before the acknowledgement (it
            // runs the command directly): nothing is run.
            c.cancelled.fetch_add(1, Ordering::Relaxed);
            c.abandoned.dropped.fetch_add(1, Ordering::Relaxed);
            log::info(
                "abandoned_request",
                json!({
                    "outcome": "client gone before the acknowledgement; not run",
                    "command": env.get("CNI_COMMAND"),
                    "container": env.get("CNI_CONTAINERID"),
                }),
            );
            return;
        }
    }
    c.in_flight.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = stream.split();
    // The command first: when its answer and the client's close are
    // both ready, the answer is taken and written (a closed client
    // then loses it, as a plugin killed after the reply would). A
    // client already gone is seen at the first poll, after the
    // command has only queued its request: the group commit drops
    // it.
    let outcome = tokio::select! {
        biased;
        r = run_cni(shared, &env, &stdin) => Some(r),
        _ = peer_gone(&mut rd) => None,
    };
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Some(r) => {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut wr, &r.encode())).await;
        }
        None => {
            c.cancelled.fetch_add(1, Ordering::Relaxed);
            log::warn(
                "request_cancelled",
                json!({
                    "reason": "client closed the connection",
                    "command": env.get("CNI_COMMAND"),
                    "container": env.get("CNI_CONTAINERID"),
                }),
            );
        }
    }
}

/// Completes when the client closes (or half-closes) its side.
async fn peer_gone<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) {
    let mut buf = [0u8; 256];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn protocol_error(shared: &Shared, stream: &mut UnixStream, why: String) {
    shared
        .counters
        .protocol_errors
        .fetch_add(1, Ordering::Relaxed);
    log::warn("protocol_error", json!({"error": why}));
    reply(stream, &Reply::error(why)).await;
    linger(stream).await;
}

/// After an early error reply: closes our side for writing and reads
/// what the client still sends (at most 1 s and [`MAX_FRAME`] bytes), so a
/// client still writing its request gets to read the reply instead of a
/// broken pipe.
async fn linger(stream: &mut UnixStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    let mut left = MAX_FRAME;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn reply(stream: &mut UnixStream, r: &Reply) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(stream, &r.encode())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_agents_own_user_are_allowed() {
        assert!(peer_allowed(0, 0));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(65534, 0));
    }
}
