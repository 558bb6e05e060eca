//! The allocator against real etcd, as `tests/allocator_etcd.rs` drives it:
//!
//! * small builders of networks, requests and owners, store configs and
//!   [`patient`] options, [`capacity`] of a range set;
//! * the multi-process proof ([`prove`]): worker processes (or in-process
//!   tasks) fill, empty and refill one network while the coordinator
//!   checks the stored state at each checkpoint, then replays the entire
//!   etcd history of the network ([`replay_history`]) and checks the
//!   workers' logs against it ([`verify_logs`]);
//! * [`child_main`], the body of the child entry test: a test file that
//!   calls [`prove`] with processes must define
//!   `#[test] fn child_worker() { child_main() }` (the name is
//!   [`CHILD_TEST`]; the workers re-execute the test binary with
//!   `--exact child_worker`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, EventType, WatchOptions};
use host_etcd::allocator::{
    AllocError, AllocRequest, Allocation, Allocator, Clock, Keyspace, Network, Options, OwnerId,
    OwnerRecord,
};
use host_etcd::codec::decode_expecting as decode_chunk;
use host_etcd::range::{from_u128, Family, RangeSet};
use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
use serde::{Deserialize, Serialize};

use super::EtcdServer;

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// A range set of one subnet, with the defaults of a range.
pub fn set(subnet: &str) -> RangeSet {
    RangeSet::from_cidr(subnet).unwrap()
}

/// A network under the default prefix with the default chunk size, one
/// range set per subnet.
pub fn network(name: &str, subnets: &[&str]) -> Network {
    Network::new(name, subnets.iter().map(|s| set(s)).collect())
        .unwrap_or_else(|e| panic!("network {name} {subnets:?}: {e}"))
}

/// A dynamic request of owner `id`/eth0.
pub fn req(id: &str) -> AllocRequest {
    AllocRequest::new(owner(id))
}

/// The owner `id`/eth0.
pub fn owner(id: &str) -> OwnerId {
    OwnerId {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

/// A store config with deadlines generous enough for a loaded 2-core box.
pub fn config(endpoint: &str, request_timeout: Duration) -> EtcdConfig {
    EtcdConfig::default()
        .with_endpoints([endpoint])
        .with_dial_timeout(Duration::from_secs(5))
        .with_request_timeout(request_timeout)
}

/// A store on `endpoint` with 5 s deadlines; panics naming the endpoint.
pub async fn connect(endpoint: &str) -> EtcdStore {
    EtcdStore::connect(&config(endpoint, Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {endpoint}: {e}"))
}

/// Options for correctness tests: retries effectively unbounded (contention
/// limits are unit-tested on the memory store), a long budget.
pub fn patient(seed: u64) -> Options {
    Options::default()
        .with_max_attempts(100_000)
        .with_budget(Duration::from_secs(60))
        .with_node_seed(seed)
}

/// Allocatable addresses of a set, counted address by address with the
/// range module (gateway, network and broadcast excluded).
pub fn capacity(set: &RangeSet) -> u128 {
    set.ranges()
        .iter()
        .map(|r| {
            (r.first()..=r.last())
                .filter(|v| r.is_allocatable_u128(*v))
                .count() as u128
        })
        .sum()
}

/// Wall clock in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------
// Sticky addresses
// ---------------------------------------------------------------------------

/// [`patient`] options that keep a pod's addresses for 300 s after its
/// DEL, on `clock`.
pub fn sticky(seed: u64, clock: &Clock) -> Options {
    patient(seed)
        .with_sticky_ttl(Some(Duration::from_secs(300)))
        .with_clock(clock.clone())
}

/// A request of owner `id`/eth0 for pod `ns/name`.
pub fn pod_req(id: &str, name: &str) -> AllocRequest {
    req(id).with_pod("ns", name)
}

/// The addresses of an allocation, in order.
pub fn ips(a: &Allocation) -> Vec<IpAddr> {
    a.assigned.iter().map(|x| x.ip).collect()
}

// ---------------------------------------------------------------------------
// The multi-process proof
// ---------------------------------------------------------------------------

/// Set in a worker process: which network its proof run uses
/// ([`Role::as_str`]).
pub const ENV_ROLE: &str = "HOST_ETCD_PROOF_ROLE";
const ENV_ENDPOINT: &str = "HOST_ETCD_PROOF_ENDPOINT";
const ENV_PROC: &str = "HOST_ETCD_PROOF_PROC";
const ENV_TASKS: &str = "HOST_ETCD_PROOF_TASKS";
const ENV_DIR: &str = "HOST_ETCD_PROOF_DIR";
/// Name of the child entry test (run with `--exact`).
pub const CHILD_TEST: &str = "child_worker";

/// How many times a filling task meets `Exhausted` (releasing one of its
/// own owners after each but the last) before it stops.
const EXHAUSTED_ROUNDS: u32 = 2;
/// Chunk size of the multi-process proofs: 64-address chunks, so the /22
/// spans 16 chunks and the processes (one node seed each) start in
/// different ones. At the default k = 10 the /22 is a single key that all
/// 128 tasks hit; measured on a loaded 2-core box that ran at ~7
/// allocations/s (one run took 15 min), because each commit costs dozens of
/// conflicting transactions. The protocol does not depend on k; contention
/// on a single default-size chunk is proven by
/// `sixty_four_allocators_on_one_chunk` (tests/allocator_etcd.rs).
const PROOF_CHUNK_BITS: u8 = 6;
/// A filling task releases one of its owners after ~1 in this many
/// allocations.
const CHURN_ONE_IN: u32 = 8;
/// Guard against hangs of a whole proof run (not a speed assertion).
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// Which network a proof run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One IPv4 /22: exactly one chunk at k = 10, 1021 addresses.
    V4,
    /// IPv4 /24 + IPv6 /64.
    Dual,
    /// A /28, for the in-process sanity run.
    Tiny,
}

impl Role {
    /// The role's name, as passed to a worker in [`ENV_ROLE`].
    pub fn as_str(self) -> &'static str {
        match self {
            Role::V4 => "v4",
            Role::Dual => "dual",
            Role::Tiny => "tiny",
        }
    }

    /// The role named `s` (panics on an unknown name).
    pub fn parse(s: &str) -> Role {
        match s {
            "v4" => Role::V4,
            "dual" => Role::Dual,
            "tiny" => Role::Tiny,
            other => panic!("{ENV_ROLE}={other:?} is not a role"),
        }
    }

    /// The network of the role's proof run.
    pub fn network(self) -> Network {
        match self {
            Role::V4 => network("proof-v4", &["10.22.0.0/22"])
                .with_chunk_bits(PROOF_CHUNK_BITS)
                .expect("proof chunk size"),
            Role::Dual => network("proof-dual", &["10.24.0.0/24", "fd00:24::/64"])
                .with_chunk_bits(PROOF_CHUNK_BITS)
                .expect("proof chunk size"),
            Role::Tiny => network("proof-tiny", &["10.28.0.0/28"]),
        }
    }
}

/// What a log line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOp {
    /// An owner got its addresses.
    Alloc,
    /// An owner gave them back.
    Release,
    /// No address was free.
    Exhausted,
}

/// One line of a child's JSON-lines log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// Worker process.
    pub proc: usize,
    /// Task within the process.
    pub task: usize,
    /// Per-process sequence number, in the order lines were recorded.
    pub seq: u64,
    /// 1 = fill, 2 = release all, 3 = refill.
    pub phase: u8,
    /// What happened.
    pub op: LogOp,
    /// Container ID of the owner.
    pub owner: String,
    /// Addresses allocated or released (none for `Exhausted`).
    pub ips: Vec<IpAddr>,
    /// Wall clock (ns) before the first attempt of the operation.
    pub t_start: u64,
    /// Wall clock (ns) after it returned.
    pub t_end: u64,
    /// Transient errors retried within this operation.
    pub retries: u32,
}

/// One worker process (or, in the sanity run, one in-process worker).
struct Worker {
    proc: usize,
    /// One allocator per task, each with its own node seed (a task stands
    /// for one node), all on one connection.
    allocs: Vec<Allocator<Arc<EtcdStore>>>,
    sets: usize,
    seq: AtomicU64,
    lines: Mutex<Vec<LogLine>>,
    log_path: PathBuf,
}

struct TaskState {
    task: usize,
    next: u64,
    held: Vec<(String, Vec<IpAddr>)>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        st: &TaskState,
        phase: u8,
        op: LogOp,
        owner: &str,
        ips: Vec<IpAddr>,
        t_start: u64,
        retries: u32,
    ) {
        let line = LogLine {
            proc: self.proc,
            task: st.task,
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            phase,
            op,
            owner: owner.to_string(),
            ips,
            t_start,
            t_end: now_ns(),
            retries,
        };
        self.lines.lock().unwrap().push(line);
    }

    /// Appends the recorded lines to the log file.
    fn flush(&self) {
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        for l in lines {
            serde_json::to_writer(&mut f, &l).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.sync_all().unwrap();
    }

    /// Allocates for a fresh owner; retries transient errors with the same
    /// owner (idempotent, as a runtime would). `false` on `Exhausted`.
    async fn alloc_one(&self, st: &mut TaskState, phase: u8) -> bool {
        let id = format!("p{}-t{}-{}", self.proc, st.task, st.next);
        st.next += 1;
        let request = req(&id);
        let t_start = now_ns();
        let mut retries = 0u32;
        loop {
            match self.allocs[st.task].allocate(&request).await {
                Ok(a) => {
                    // Only a retry after a lost reply may find the owner.
                    assert!(
                        !a.existing || retries > 0,
                        "fresh owner {id} came back as existing: {a:?}"
                    );
                    let ips: Vec<IpAddr> = a.assigned.iter().map(|x| x.ip).collect();
                    assert_eq!(ips.len(), self.sets, "{id}: {a:?}");
                    self.record(st, phase, LogOp::Alloc, &id, ips.clone(), t_start, retries);
                    st.held.push((id, ips));
                    return true;
                }
                Err(AllocError::Exhausted { .. }) => {
                    self.record(st, phase, LogOp::Exhausted, &id, vec![], t_start, retries);
                    return false;
                }
                Err(e) if e.is_transient() => {
                    retries += 1;
                    assert!(
                        retries < 1000,
                        "allocate {id}: {retries} transient errors: {e}"
                    );
                }
                Err(e) => panic!("allocate {id}: {e}"),
            }
        }
    }

    /// Releases the task's `i`-th held owner, retrying transient errors.
    async fn release_one(&self, st: &mut TaskState, i: usize, phase: u8) {
        let (id, ips) = st.held.swap_remove(i);
        let t_start = now_ns();
        let mut retries = 0u32;
        loop {
            match self.allocs[st.task].release(&owner(&id)).await {
                Ok(Some(rec)) => {
                    assert_eq!(rec.ips, ips, "release {id} returned another record");
                    break;
                }
                // Only a retry after a lost reply may find nothing.
                Ok(None) => {
                    assert!(retries > 0, "release {id}: the owner record vanished");
                    break;
                }
                Err(e) if e.is_transient() => {
                    retries += 1;
                    assert!(
                        retries < 1000,
                        "release {id}: {retries} transient errors: {e}"
                    );
                }
                Err(e) => panic!("release {id}: {e}"),
            }
        }
        self.record(st, phase, LogOp::Release, &id, ips, t_start, retries);
    }

    async fn release_random(&self, st: &mut TaskState, phase: u8) {
        if !st.held.is_empty() {
            let i = fastrand::usize(0..st.held.len());
            self.release_one(st, i, phase).await;
        }
    }

    /// Allocates (with churn) until `Exhausted` was met [`EXHAUSTED_ROUNDS`]
    /// times. The task's last operation is an `Exhausted`.
    async fn fill(&self, st: &mut TaskState, phase: u8) {
        let mut exhausted = 0;
        loop {
            if self.alloc_one(st, phase).await {
                if fastrand::u32(0..CHURN_ONE_IN) == 0 {
                    self.release_random(st, phase).await;
                }
            } else {
                exhausted += 1;
                if exhausted >= EXHAUSTED_ROUNDS {
                    return;
                }
                self.release_random(st, phase).await;
            }
        }
    }

    async fn release_all(&self, st: &mut TaskState, phase: u8) {
        while !st.held.is_empty() {
            let i = st.held.len() - 1;
            self.release_one(st, i, phase).await;
        }
    }
}

/// Runs `tasks` tasks of one phase concurrently and collects their states.
async fn run_phase(w: &Arc<Worker>, states: Vec<TaskState>, phase: u8) -> Vec<TaskState> {
    let handles: Vec<_> = states
        .into_iter()
        .map(|mut st| {
            let w = w.clone();
            tokio::spawn(async move {
                match phase {
                    2 => w.release_all(&mut st, phase).await,
                    _ => w.fill(&mut st, phase).await,
                }
                st
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    w.flush();
    out
}

/// Files through which workers and the coordinator meet.
fn marker(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.marker"))
}

fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap();
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + RUN_DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {RUN_DEADLINE:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of one worker: fill, (coordinator checks), release all,
/// (coordinator checks), refill.
async fn worker_main(role: Role, endpoint: String, proc: usize, tasks: usize, dir: PathBuf) {
    let net = role.network();
    let store = EtcdStore::connect(&config(&endpoint, Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("worker {proc}: connect to {endpoint}: {e}"));
    let store = Arc::new(store);
    let w = Arc::new(Worker {
        proc,
        sets: net.sets.len(),
        allocs: (0..tasks)
            .map(|t| {
                let seed = (proc * tasks + t) as u64;
                Allocator::new(store.clone(), net.clone(), patient(seed)).unwrap()
            })
            .collect(),
        seq: AtomicU64::new(0),
        lines: Mutex::new(Vec::new()),
        log_path: dir.join(format!("proc-{proc}.jsonl")),
    });
    let states: Vec<TaskState> = (0..tasks)
        .map(|task| TaskState {
            task,
            next: 0,
            held: Vec::new(),
        })
        .collect();
    let states = run_phase(&w, states, 1).await;
    touch(&marker(&dir, &format!("filled-{proc}")));
    wait_for_file(&marker(&dir, "go-release")).await;
    let states = run_phase(&w, states, 2).await;
    touch(&marker(&dir, &format!("emptied-{proc}")));
    wait_for_file(&marker(&dir, "go-refill")).await;
    run_phase(&w, states, 3).await;
    touch(&marker(&dir, &format!("done-{proc}")));
}

/// The workers of a proof run: OS processes or in-process tasks.
enum Workers {
    Procs(Vec<(Child, PathBuf)>),
    Tasks(Vec<tokio::task::JoinHandle<()>>),
}

impl Workers {
    /// Panics if a worker ended without writing its `done` marker (with
    /// its output, for a process).
    fn assert_alive(&mut self, dir: &Path) {
        match self {
            Workers::Procs(children) => {
                for (i, (child, out)) in children.iter_mut().enumerate() {
                    if let Some(status) = child.try_wait().unwrap() {
                        if !status.success() || !marker(dir, &format!("done-{i}")).exists() {
                            panic!(
                                "worker process {i} ended early ({status}); its output:\n{}",
                                tail(out, 80)
                            );
                        }
                    }
                }
            }
            Workers::Tasks(handles) => {
                for (i, h) in handles.iter().enumerate() {
                    assert!(
                        !h.is_finished() || marker(dir, &format!("done-{i}")).exists(),
                        "worker task {i} ended early (see its panic above)"
                    );
                }
            }
        }
    }

    async fn join(&mut self) {
        match self {
            Workers::Procs(children) => {
                let deadline = Instant::now() + RUN_DEADLINE;
                for (i, (child, out)) in children.iter_mut().enumerate() {
                    loop {
                        if let Some(status) = child.try_wait().unwrap() {
                            assert!(
                                status.success(),
                                "worker process {i} failed ({status}); its output:\n{}",
                                tail(out, 80)
                            );
                            break;
                        }
                        assert!(Instant::now() < deadline, "worker process {i} hangs");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            Workers::Tasks(handles) => {
                for h in handles.drain(..) {
                    h.await.unwrap();
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Only on failure paths: kill the children this test started.
        if let Workers::Procs(children) = self {
            for (child, _) in children {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until every worker created `{name}-{i}`; fails early if one died.
async fn wait_markers(workers: &mut Workers, dir: &Path, name: &str, n: usize) {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if (0..n).all(|i| marker(dir, &format!("{name}-{i}")).exists()) {
            return;
        }
        workers.assert_alive(dir);
        assert!(
            Instant::now() < deadline,
            "workers did not reach {name} within {RUN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the coordinator expects of the state at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Full,
    Empty,
}

/// Checks the stored state with a fresh allocator: `check()` clean, one
/// owner per address, every owner one address per set (in its set),
/// bits per set == owners, and full/empty as expected. Returns the owners.
async fn verify_state(endpoint: &str, net: &Network, expect: Expect) -> Vec<OwnerRecord> {
    let a = Allocator::new(connect(endpoint).await, net.clone(), patient(0)).unwrap();
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "check() at {expect:?}: {report:?}");
    assert_eq!(report.in_flux, 0, "nobody writes at a checkpoint");
    let owners = a.owners().await.unwrap();
    let mut holder: HashMap<IpAddr, String> = HashMap::new();
    for rec in &owners {
        assert_eq!(
            rec.ips.len(),
            net.sets.len(),
            "owner {} must hold one address per set: {rec:?}",
            rec.container_id
        );
        for (ip, s) in rec.ips.iter().zip(&net.sets) {
            assert!(s.find(*ip).is_some(), "{ip} of {rec:?} is outside its set");
            if let Some(other) = holder.insert(*ip, rec.container_id.clone()) {
                panic!("{ip} is held by {other} and {}", rec.container_id);
            }
        }
    }
    let usage = a.usage().await.unwrap();
    assert_eq!(usage.len(), net.sets.len());
    for (u, s) in usage.iter().zip(&net.sets) {
        assert_eq!(
            u.used,
            owners.len() as u128,
            "set {} ({}): bits set vs owners",
            u.set,
            u.subnet
        );
        if expect == Expect::Full && s.family() == Family::V4 {
            assert_eq!(u.used, capacity(s), "set {} must be full", u.set);
        }
    }
    assert_eq!(report.allocated, (owners.len() * net.sets.len()) as u64);
    assert_eq!(report.owners, owners.len());
    if expect == Expect::Empty {
        assert!(owners.is_empty(), "{} owners left", owners.len());
    }
    owners
}

/// What the replay of the etcd history found.
#[derive(Debug, Default)]
pub struct History {
    /// Owner container ID → addresses, for every owner record created.
    pub created: HashMap<String, Vec<IpAddr>>,
    /// Owner container IDs whose record was deleted.
    pub deleted: HashSet<String>,
    /// Revisions replayed.
    pub revisions: usize,
    /// Most owners alive at once.
    pub peak: usize,
}

/// Replays every event under the network's keys from revision 1 and checks
/// at each revision: no address held by two owner records, and the chunk
/// bits equal the owners' addresses (ADD and DEL commit both in one
/// transaction, so they must agree at every revision).
pub async fn replay_history(endpoint: &str, net: &Network) -> History {
    let k = net.chunk_bits;
    let ks = Keyspace::new(&net.prefix, &net.name).unwrap();
    let root = format!("{}/", ks.root());
    let owners_prefix = ks.owners_prefix();
    let mut client = Client::connect([endpoint], None).await.unwrap();
    let target = client
        .get(root.as_str(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut stream = client
        .watch(
            root.as_str(),
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
        )
        .await
        .unwrap();

    let mut h = History::default();
    // Address → owner, by owner records.
    let mut by_owner: HashMap<IpAddr, String> = HashMap::new();
    let mut owner_ips: HashMap<String, Vec<IpAddr>> = HashMap::new();
    // Addresses marked in each chunk.
    let mut chunk_ips: HashMap<String, HashSet<IpAddr>> = HashMap::new();
    let mut by_bits: HashSet<IpAddr> = HashSet::new();
    let mut touched: HashSet<IpAddr> = HashSet::new();
    let mut rev = 0i64;
    let check_rev = |rev: i64,
                     touched: &mut HashSet<IpAddr>,
                     by_owner: &HashMap<IpAddr, String>,
                     by_bits: &HashSet<IpAddr>| {
        for ip in touched.drain() {
            assert_eq!(
                by_bits.contains(&ip),
                by_owner.contains_key(&ip),
                "revision {rev}: {ip} bit is {} but its owner is {:?}",
                by_bits.contains(&ip),
                by_owner.get(&ip)
            );
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    'outer: while rev < target {
        let msg = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .expect("watch history: timed out")
            .unwrap()
            .expect("watch stream ended");
        assert!(
            !msg.canceled(),
            "watch canceled (compacted at {}?): {}",
            msg.compact_revision(),
            msg.cancel_reason()
        );
        for ev in msg.events() {
            let kv = ev.kv().unwrap();
            let r = kv.mod_revision();
            if r > target {
                break 'outer;
            }
            if r != rev {
                check_rev(rev, &mut touched, &by_owner, &by_bits);
                h.peak = h.peak.max(owner_ips.len());
                rev = r;
                h.revisions += 1;
            }
            let key = kv.key_str().unwrap().to_string();
            let put = ev.event_type() == EventType::Put;
            if let Some(rest) = key.strip_prefix(&owners_prefix) {
                let id = rest.split('/').next().unwrap().to_string();
                if put {
                    let rec: OwnerRecord = serde_json::from_slice(kv.value()).unwrap();
                    assert_eq!(
                        kv.version(),
                        1,
                        "revision {r}: owner record {key} rewritten"
                    );
                    for ip in &rec.ips {
                        if let Some(other) = by_owner.insert(*ip, id.clone()) {
                            panic!("revision {r}: {ip} granted to {id} while {other} holds it");
                        }
                        touched.insert(*ip);
                    }
                    assert!(
                        h.created.insert(id.clone(), rec.ips.clone()).is_none(),
                        "revision {r}: owner {id} created twice"
                    );
                    owner_ips.insert(id, rec.ips);
                } else {
                    let ips = owner_ips
                        .remove(&id)
                        .unwrap_or_else(|| panic!("revision {r}: delete of unknown owner {key}"));
                    for ip in ips {
                        assert_eq!(by_owner.remove(&ip).as_deref(), Some(id.as_str()));
                        touched.insert(ip);
                    }
                    assert!(h.deleted.insert(id.clone()), "owner {id} deleted twice");
                }
                continue;
            }
            let Some((family, idx)) = [Family::V4, Family::V6]
                .into_iter()
                .find_map(|f| ks.parse_chunk(f, k, &key).map(|i| (f, i)))
            else {
                continue; // meta or full-set
            };
            let new: HashSet<IpAddr> = if put {
                let chunk = decode_chunk(kv.value(), k)
                    .unwrap_or_else(|e| panic!("revision {r}: chunk {key}: {e}"));
                chunk
                    .bits
                    .iter_ones()
                    .map(|b| from_u128(family, (idx << k) + b as u128).unwrap())
                    .collect()
            } else {
                HashSet::new()
            };
            let old = chunk_ips.remove(&key).unwrap_or_default();
            for ip in old.symmetric_difference(&new) {
                touched.insert(*ip);
                if new.contains(ip) {
                    by_bits.insert(*ip);
                } else {
                    by_bits.remove(ip);
                }
            }
            chunk_ips.insert(key, new);
        }
    }
    check_rev(rev, &mut touched, &by_owner, &by_bits);
    assert_eq!(rev, target, "history replay stopped early");
    h
}

/// Reads every worker's log.
fn read_logs(dir: &Path, procs: usize) -> Vec<LogLine> {
    let mut out = Vec::new();
    for p in 0..procs {
        let path = dir.join(format!("proc-{p}.jsonl"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for line in text.lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

/// Checks the logs: every task ended both fill phases on `Exhausted`; no
/// address was certainly held by two owners at once (wall-clock intervals
/// from the end of an ADD to the start of its DEL, which lie inside the
/// true holding interval, never overlap); the logs match etcd's history.
pub fn verify_logs(lines: &[LogLine], procs: usize, tasks: usize, history: &History) {
    // Last operation of each task in each fill phase.
    let mut last: BTreeMap<(usize, usize, u8), (u64, LogOp)> = BTreeMap::new();
    for l in lines {
        let e = last
            .entry((l.proc, l.task, l.phase))
            .or_insert((l.seq, l.op));
        if l.seq >= e.0 {
            *e = (l.seq, l.op);
        }
    }
    for p in 0..procs {
        for t in 0..tasks {
            for phase in [1u8, 3] {
                assert_eq!(
                    last.get(&(p, t, phase)).map(|x| x.1),
                    Some(LogOp::Exhausted),
                    "process {p} task {t} must end phase {phase} on Exhausted"
                );
            }
        }
    }
    // Holding intervals per address.
    let mut granted: HashMap<&str, &LogLine> = HashMap::new();
    let mut intervals: HashMap<IpAddr, Vec<(u64, u64, &str)>> = HashMap::new();
    let mut releases = 0usize;
    for l in lines.iter().filter(|l| l.op == LogOp::Alloc) {
        assert!(
            granted.insert(&l.owner, l).is_none(),
            "{} allocated twice",
            l.owner
        );
    }
    for l in lines.iter().filter(|l| l.op == LogOp::Release) {
        releases += 1;
        let g = granted
            .get(l.owner.as_str())
            .unwrap_or_else(|| panic!("release of {} never allocated", l.owner));
        assert_eq!(g.ips, l.ips);
        assert!(
            g.t_end <= l.t_start,
            "{} released before allocated",
            l.owner
        );
        for ip in &l.ips {
            intervals
                .entry(*ip)
                .or_default()
                .push((g.t_end, l.t_start, &l.owner));
        }
    }
    let released: HashSet<&str> = lines
        .iter()
        .filter(|l| l.op == LogOp::Release)
        .map(|l| l.owner.as_str())
        .collect();
    for (id, g) in &granted {
        if !released.contains(id) {
            for ip in &g.ips {
                intervals
                    .entry(*ip)
                    .or_default()
                    .push((g.t_end, u64::MAX, id));
            }
        }
    }
    for (ip, mut iv) in intervals {
        iv.sort();
        for w in iv.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "{ip} was held by {} and {} at the same time (logs)",
                w[0].2,
                w[1].2
            );
        }
    }
    // The logs and etcd's history agree exactly.
    assert_eq!(
        granted.len(),
        history.created.len(),
        "allocations vs creates"
    );
    for (id, g) in &granted {
        assert_eq!(history.created.get(*id), Some(&g.ips), "owner {id}");
    }
    assert_eq!(released.len(), releases);
    assert_eq!(
        released,
        history.deleted.iter().map(String::as_str).collect(),
        "releases vs deletes"
    );
}

/// Runs the whole proof: workers fill, empty and refill the network while
/// the coordinator checks the state at each checkpoint, then replays the
/// history and the logs.
pub async fn prove(role: Role, procs: usize, tasks: usize, in_process: bool) {
    let started = Instant::now();
    let etcd = EtcdServer::start();
    let endpoint = etcd.url();
    let net = role.network();
    let dir = tempfile::tempdir().unwrap();
    let mut workers = if in_process {
        Workers::Tasks(
            (0..procs)
                .map(|p| {
                    tokio::spawn(worker_main(
                        role,
                        endpoint.clone(),
                        p,
                        tasks,
                        dir.path().to_path_buf(),
                    ))
                })
                .collect(),
        )
    } else {
        let exe = std::env::current_exe().unwrap();
        Workers::Procs(
            (0..procs)
                .map(|p| {
                    let out = dir.path().join(format!("proc-{p}.out"));
                    let f = std::fs::File::create(&out).unwrap();
                    let child = Command::new(&exe)
                        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
                        .env(ENV_ROLE, role.as_str())
                        .env(ENV_ENDPOINT, &endpoint)
                        .env(ENV_PROC, p.to_string())
                        .env(ENV_TASKS, tasks.to_string())
                        .env(ENV_DIR, dir.path())
                        .stdin(Stdio::null())
                        .stdout(f.try_clone().unwrap())
                        .stderr(f)
                        .spawn()
                        .unwrap();
                    (child, out)
                })
                .collect(),
        )
    };

    let mut phases = Vec::new();
    let mut t = Instant::now();
    wait_markers(&mut workers, dir.path(), "filled", procs).await;
    phases.push(t.elapsed());
    let full = verify_state(&endpoint, &net, Expect::Full).await;
    touch(&marker(dir.path(), "go-release"));
    t = Instant::now();
    wait_markers(&mut workers, dir.path(), "emptied", procs).await;
    phases.push(t.elapsed());
    verify_state(&endpoint, &net, Expect::Empty).await;
    touch(&marker(dir.path(), "go-refill"));
    t = Instant::now();
    wait_markers(&mut workers, dir.path(), "done", procs).await;
    workers.join().await;
    phases.push(t.elapsed());
    let owners = verify_state(&endpoint, &net, Expect::Full).await;

    let lines = read_logs(dir.path(), procs);
    let history = replay_history(&endpoint, &net).await;
    verify_logs(&lines, procs, tasks, &history);
    let allocs = lines.iter().filter(|l| l.op == LogOp::Alloc).count();
    let releases = lines.iter().filter(|l| l.op == LogOp::Release).count();
    assert_eq!(
        owners.len(),
        allocs - releases,
        "owners == allocations − releases"
    );
    assert_eq!(full.len(), owners.len(), "full before and after the refill");
    let v4 = net.sets.iter().find(|s| s.family() == Family::V4).unwrap();
    assert_eq!(owners.len() as u128, capacity(v4));
    let retries: u32 = lines.iter().map(|l| l.retries).sum();
    eprintln!(
        "proof {}: {procs} processes x {tasks} tasks: {allocs} allocations, {releases} releases, \
         {} owners at the end (capacity {}), {retries} transient retries, {} revisions replayed, \
         peak {} owners; fill/empty/refill {phases:.1?}, total {:.1?}",
        role.as_str(),
        owners.len(),
        capacity(v4),
        history.revisions,
        history.peak,
        started.elapsed()
    );
}

/// The body of the child entry test of the multi-process proofs. With
/// [`ENV_ROLE`] set it is one worker process; otherwise it runs the same
/// protocol with in-process workers on a /28 as a sanity check.
pub fn child_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(ENV_ROLE) {
        Ok(role) => {
            // An orphaned worker (its coordinator was killed) exits instead
            // of retrying against a vanished etcd.
            let parent = std::os::unix::process::parent_id();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                if std::os::unix::process::parent_id() != parent {
                    eprintln!("worker: coordinator {parent} is gone, exiting");
                    std::process::exit(2);
                }
            });
            let var =
                |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
            rt.block_on(worker_main(
                Role::parse(&role),
                var(ENV_ENDPOINT),
                var(ENV_PROC).parse().unwrap(),
                var(ENV_TASKS).parse().unwrap(),
                PathBuf::from(var(ENV_DIR)),
            ));
        }
        Err(_) => {
            assert_eq!(capacity(&Role::Tiny.network().sets[0]), 13);
            rt.block_on(prove(Role::Tiny, 2, 4, true));
        }
    }
}

/// The multi-process proofs run one at a time (each starts 8 processes).
static HEAVY: Mutex<()> = Mutex::new(());

/// One multi-process proof of `role`: 8 worker processes × 16 tasks, one
/// proof at a time.
pub fn run_heavy(role: Role) {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(prove(role, 8, 16, false));
}

// ---------------------------------------------------------------------------
// For the tests of the checkers themselves
// ---------------------------------------------------------------------------

/// A log line of owner `owner` holding `ip`, process 0, task 0, phase 1.
pub fn line(owner: &str, op: LogOp, ip: &str, t_start: u64, t_end: u64) -> LogLine {
    LogLine {
        proc: 0,
        task: 0,
        seq: t_start,
        phase: 1,
        op,
        owner: owner.into(),
        ips: vec![ip.parse().unwrap()],
        t_start,
        t_end,
        retries: 0,
    }
}

/// The message of a caught panic.
pub fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
