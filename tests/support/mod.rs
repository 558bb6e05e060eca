//! Test harness: real etcd servers and clusters on loopback ports.
//!
//! * [`EtcdServer::start`] — one member; [`EtcdCluster::start`] — `n`
//!   members; [`EtcdCluster::builder`] for TLS and extra flags.
//! * Free ports are found by binding port 0; if etcd then loses the race
//!   for a port ("address already in use") the start is retried on fresh
//!   ports.
//! * Data and logs live in a temp dir (on `/dev/shm` when present, so
//!   fsync is cheap); every member logs to `<dir>/<name>.log`, and the log
//!   tails are printed when a test panics.
//! * Drop kills exactly the processes it started and removes the temp dir.
//!
//! Used by several test files with `mod support;`, so not every helper is
//! used by each of them.
#![allow(dead_code)]

pub mod agent;
pub mod alloc_harness;
pub mod contract;
pub mod etcd_metrics;
pub mod faults;
pub mod ipamctl;
pub mod plugin;
pub mod prometheus;
pub mod tls;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use host_etcd::store::etcd::EtcdConfig;

/// Where Debian's etcd-server package installs etcd.
const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long a start or restart may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How many times a start is retried on fresh ports after a port collision.
const PORT_RETRIES: usize = 5;

/// Path of an executable: `default` if it exists, else found on `PATH`.
fn find_exe(default: &str, name: &str) -> Option<PathBuf> {
    if Path::new(default).is_file() {
        return Some(default.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The etcd binary; panics with install instructions when missing.
pub fn etcd_bin() -> PathBuf {
    find_exe(ETCD_BIN, "etcd").unwrap_or_else(|| {
        panic!(
            "etcd not found: install it with `apt-get install etcd-server` \
             (the README's test command does this)"
        )
    })
}

/// The etcdctl binary (shipped with etcd-server's companion etcd-client
/// package on Debian).
pub fn etcdctl_bin() -> PathBuf {
    find_exe("/usr/bin/etcdctl", "etcdctl").unwrap_or_else(|| {
        panic!(
            "etcdctl not found: install it with `apt-get install etcd-server etcd-client` \
             (the README's test command does this)"
        )
    })
}

/// A port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners at once so the ports are distinct.
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Server-side TLS of the client listener (peers stay on plain HTTP).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (SAN 127.0.0.1).
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// Require client certificates signed by `ca` (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Client certificate and key the harness's own etcdctl uses.
    pub client_cert: PathBuf,
    /// Key of `client_cert`.
    pub client_key: PathBuf,
}

/// Options for starting etcd.
#[derive(Clone, Debug)]
pub struct EtcdBuilder {
    members: usize,
    tls: Option<ServerTls>,
    extra_args: Vec<String>,
}

impl EtcdBuilder {
    /// Number of members (default 1).
    pub fn members(mut self, n: usize) -> Self {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        self.members = n;
        self
    }

    /// Serve clients over TLS.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// More etcd flags, passed to every member after the harness's own
    /// (a later flag wins), e.g. `["--max-txn-ops=16"]`.
    pub fn extra_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts every member and waits until the cluster is healthy.
    pub fn start(self) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..PORT_RETRIES {
            match EtcdCluster::try_start(&self) {
                Ok(cluster) => return cluster,
                Err(StartError::PortTaken(log)) => last = log,
                Err(StartError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("etcd could not get free ports after {PORT_RETRIES} tries; last log:\n{last}");
    }
}

enum StartError {
    /// A port was taken between probing and etcd binding it: retry.
    PortTaken(String),
    Failed(String),
}

struct Member {
    name: String,
    client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members.
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<ServerTls>,
    // Declared last: dropped after the processes are killed.
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Options for a cluster (1 member, plain HTTP, no extra flags).
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder {
            members: 1,
            tls: None,
            extra_args: Vec::new(),
        }
    }

    /// Starts an `n`-member cluster on plain HTTP.
    pub fn start(n: usize) -> EtcdCluster {
        Self::builder().members(n).start()
    }

    fn try_start(b: &EtcdBuilder) -> Result<EtcdCluster, StartError> {
        etcd_bin(); // panics with install instructions when missing
        let dir = temp_dir();
        let ports = free_ports(2 * b.members);
        let scheme = if b.tls.is_some() { "https" } else { "http" };
        let token = format!("host-etcd-test-{}", ports[0]);
        let names: Vec<String> = (0..b.members).map(|i| format!("m{i}")).collect();
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let client_url = format!("{scheme}://127.0.0.1:{}", ports[2 * i]);
            let mut args = vec![
                format!("--name={name}"),
                format!(
                    "--data-dir={}",
                    dir.path().join(format!("{name}.etcd")).display()
                ),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={}", peer_url(i)),
                format!("--initial-advertise-peer-urls={}", peer_url(i)),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".into(),
                format!("--initial-cluster-token={token}"),
                // Small footprint: 256 MiB quota, snapshots every 10k writes.
                "--quota-backend-bytes=268435456".into(),
                "--snapshot-count=10000".into(),
                "--logger=zap".into(),
                "--log-level=error".into(),
                "--log-outputs=stderr".into(),
            ];
            if let Some(tls) = &b.tls {
                args.push(format!("--cert-file={}", tls.cert.display()));
                args.push(format!("--key-file={}", tls.key.display()));
                args.push(format!("--trusted-ca-file={}", tls.ca.display()));
                if tls.client_cert_auth {
                    args.push("--client-cert-auth".into());
                }
            }
            args.extend(b.extra_args.iter().cloned());
            members.push(Member {
                name: name.clone(),
                client_url,
                args,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            members,
            tls: b.tls.clone(),
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        let all: Vec<usize> = (0..cluster.members.len()).collect();
        match cluster.wait_healthy_inner(&all) {
            Ok(()) => Ok(cluster),
            Err(msg) => {
                let logs = cluster.logs();
                if logs.contains("address already in use") {
                    Err(StartError::PortTaken(logs))
                } else {
                    Err(StartError::Failed(format!("{msg}\n{logs}")))
                }
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open etcd log");
        let child = Command::new(etcd_bin())
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Client URL of member `i`, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A store config for every member (with the client TLS files when the
    /// cluster serves TLS), 2 s deadlines.
    pub fn config(&self) -> EtcdConfig {
        self.config_for(self.endpoints())
    }

    /// A store config for member `i` only.
    pub fn member_config(&self, i: usize) -> EtcdConfig {
        self.config_for(vec![self.endpoint(i)])
    }

    fn config_for(&self, endpoints: Vec<String>) -> EtcdConfig {
        let mut config = EtcdConfig::default()
            .with_endpoints(endpoints)
            .with_dial_timeout(Duration::from_secs(2))
            .with_request_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            config.trusted_ca_file = Some(tls.ca.clone());
            config.cert_file = Some(tls.client_cert.clone());
            config.key_file = Some(tls.client_key.clone());
        }
        config
    }

    /// Process id of member `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Whether member `i` has a live (possibly paused) process.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` and wait for it to exit (SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts member `i` again on its data dir and waits until it is
    /// healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        if let Err(msg) = self.wait_healthy_inner(&[i]) {
            panic!("restart of member {i}: {msg}\n{}", self.logs());
        }
    }

    /// SIGSTOP member `i` (it keeps its sockets but answers nothing).
    pub fn pause(&self, i: usize) {
        let pid = self.pid(i).expect("member is not running");
        signal(pid, "STOP");
        wait_stopped(pid);
    }

    /// SIGCONT member `i`.
    pub fn resume(&self, i: usize) {
        signal(self.pid(i).expect("member is not running"), "CONT");
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&mut self) {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        if let Err(msg) = self.wait_healthy_inner(&running) {
            panic!("{msg}\n{}", self.logs());
        }
    }

    fn wait_healthy_inner(&mut self, which: &[usize]) -> Result<(), String> {
        let endpoints: Vec<String> = which.iter().map(|&i| self.endpoint(i)).collect();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            for &i in which {
                if let Some(child) = self.members[i].child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        self.members[i].child = None;
                        return Err(format!(
                            "etcd member {} exited during start: {status}",
                            self.members[i].name
                        ));
                    }
                }
            }
            let out = self.etcdctl_on(&endpoints, &["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd {endpoints:?} not healthy after {START_DEADLINE:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs etcdctl against every running member (with the TLS flags).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let endpoints: Vec<String> = (0..self.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.endpoint(i))
            .collect();
        self.etcdctl_on(&endpoints, args)
    }

    /// Runs etcdctl against `endpoints`.
    pub fn etcdctl_on(&self, endpoints: &[String], args: &[&str]) -> Output {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=1s");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// Index of the current leader among the running members, if any
    /// member answers and names a leader.
    pub fn leader(&self) -> Option<usize> {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        let endpoints: Vec<String> = running.iter().map(|&i| self.endpoint(i)).collect();
        let out = self.etcdctl_on(
            &endpoints,
            &["endpoint", "status", "-w", "json", "--command-timeout=1s"],
        );
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let statuses = statuses.as_array()?;
        let leader = statuses
            .iter()
            .find_map(|s| s["Status"]["leader"].as_u64().filter(|&l| l != 0))?;
        statuses.iter().find_map(|s| {
            if s["Status"]["header"]["member_id"].as_u64() != Some(leader) {
                return None;
            }
            let endpoint = s["Endpoint"].as_str()?;
            running
                .iter()
                .copied()
                .find(|&i| self.members[i].client_url == endpoint)
        })
    }

    /// The temp dir holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log of member `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The last lines of every member's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- etcd {} ({}) log tail ---\n",
                m.name,
                m.log.display()
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // SIGKILL also ends a SIGSTOPped process.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A single-member etcd; dereferences to its [`EtcdCluster`].
pub struct EtcdServer(EtcdCluster);

impl EtcdServer {
    /// Starts one member on plain HTTP.
    pub fn start() -> EtcdServer {
        EtcdServer(EtcdCluster::start(1))
    }

    /// Starts one member from a builder (TLS, extra flags).
    pub fn start_with(builder: EtcdBuilder) -> EtcdServer {
        EtcdServer(builder.members(1).start())
    }

    /// The client URL.
    pub fn url(&self) -> String {
        self.0.endpoint(0)
    }

    /// SIGKILL the server.
    pub fn kill(&mut self) {
        self.0.kill(0);
    }

    /// SIGTERM the server and wait for it to exit.
    pub fn stop(&mut self) {
        self.0.stop(0);
    }

    /// Start the server again on its data dir.
    pub fn restart(&mut self) {
        self.0.restart(0);
    }

    /// SIGSTOP the server.
    pub fn pause(&self) {
        self.0.pause(0);
    }

    /// SIGCONT the server.
    pub fn resume(&self) {
        self.0.resume(0);
    }
}

impl Deref for EtcdServer {
    type Target = EtcdCluster;

    fn deref(&self) -> &EtcdCluster {
        &self.0
    }
}

/// Sends a signal by name (`"STOP"`, `"CONT"`, `"TERM"`) with kill(1).
/// Waits until every thread of `pid` is stopped (`T` in
/// `/proc/<pid>/task/*/stat`): `kill -STOP` returns once the signal is
/// queued, and a thread still running on the other core could answer one
/// more request.
/// Waits until every thread of process `pid` is stopped (SIGSTOP taken).
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc tasks");
        let all_stopped = tasks.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the parenthesised command name.
                    let after = stat.rsplit_once(')')?.1;
                    after.trim_start().chars().next()
                })
                .is_some_and(|state| state == 'T' || state == 't')
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// A fresh temp dir, on tmpfs when available.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("host-etcd-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("host-etcd-test-")
        .tempdir()
        .expect("create temp dir")
}
