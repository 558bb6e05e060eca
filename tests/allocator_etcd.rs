//! The allocator proven against real etcd (Debian etcd-server 3.4):
//!
//! * the round trips of ADD, idempotent ADD and DEL, counted;
//! * many OS processes × many tasks filling, emptying and refilling one
//!   IPv4 /22 (and a dual-stack /24 + /64): the final state, the children's
//!   logs, and the *entire* etcd history of the network (replayed revision
//!   by revision from a watch at revision 1) show that no address was ever
//!   held by two owners and that chunk bits and owner records agree at
//!   every committed revision;
//! * etcd killed under the allocator: a bounded, transient failure
//!   (CNI code 11) and nothing half-written;
//! * 64 allocators racing on one chunk.
//!
//! The multi-process tests re-execute this test binary: the child entry is
//! the test [`child_worker`], which does its child work only when
//! [`ENV_ROLE`] is set and otherwise runs the same protocol in-process, in
//! miniature, as a sanity check.

#![allow(clippy::unwrap_used)]

mod support;

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
    AllocError, AllocRequest, Allocator, Network, Options, OwnerId, OwnerRecord,
    DEFAULT_CHUNK_BITS, DEFAULT_PREFIX,
};
use host_etcd::cni::CniError;
use host_etcd::codec::decode_expecting as decode_chunk;
use host_etcd::range::{from_u128, Family, Range, RangeSet, RangeSpec};
use host_etcd::store::counting::CountingStore;
use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
use serde::{Deserialize, Serialize};
use support::EtcdServer;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn set(subnet: &str) -> RangeSet {
    let range = Range::parse(&RangeSpec {
        subnet: subnet.into(),
        ..RangeSpec::default()
    })
    .unwrap();
    RangeSet::new(vec![range]).unwrap()
}

fn network(name: &str, subnets: &[&str]) -> Network {
    Network {
        name: name.into(),
        prefix: DEFAULT_PREFIX.into(),
        sets: subnets.iter().map(|s| set(s)).collect(),
        chunk_bits: DEFAULT_CHUNK_BITS,
    }
}

fn req(id: &str) -> AllocRequest {
    AllocRequest {
        owner: owner(id),
        ..AllocRequest::default()
    }
}

fn owner(id: &str) -> OwnerId {
    OwnerId {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

/// A store config with deadlines generous enough for a loaded 2-core box.
fn config(endpoint: &str, request_timeout: Duration) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint.to_string()],
        dial_timeout: Duration::from_secs(5),
        request_timeout,
        ..EtcdConfig::default()
    }
}

async fn connect(endpoint: &str) -> EtcdStore {
    EtcdStore::connect(&config(endpoint, Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {endpoint}: {e}"))
}

/// Options for correctness tests: retries effectively unbounded (contention
/// limits are unit-tested on the memory store), a long budget.
fn patient(seed: u64) -> Options {
    Options {
        max_attempts: 100_000,
        budget: Duration::from_secs(60),
        node_seed: seed,
        ..Options::default()
    }
}

/// Allocatable addresses of a set, counted address by address with the
/// range module (gateway, network and broadcast excluded).
fn capacity(set: &RangeSet) -> u128 {
    set.ranges()
        .iter()
        .map(|r| {
            (r.first()..=r.last())
                .filter(|v| r.is_allocatable_u128(*v))
                .count() as u128
        })
        .sum()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_add_idempotent_add_and_del() {
    let etcd = EtcdServer::start();
    let store = CountingStore::new(connect(&etcd.url()).await);
    let a = Allocator::new(
        &store,
        network("rt", &["10.1.0.0/16", "2001:db8:1::/64"]),
        patient(3),
    )
    .unwrap();

    // ADD on an empty store: one read (meta, owner, per set the full-set
    // and a bounded range read of chunks from the starting chunk), one
    // transaction (meta creation, both chunks, owner record).
    let first = a.allocate(&req("c1")).await.unwrap();
    assert!(!first.existing);
    assert_eq!(first.assigned.len(), 2);
    assert_eq!((store.reads(), store.txns()), (1, 1), "first ADD");

    // A second owner, warm: the allocator remembers meta, full-sets and the
    // chunks it allocated from, and takes the new owner as absent (the
    // transaction compares it absent): one transaction, no read.
    store.reset();
    let second = a.allocate(&req("c2")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm ADD");
    assert_ne!(first.assigned, second.assigned);

    // Idempotent repeat: the owner compare fails and the conflict answer
    // carries the record; nothing written.
    store.reset();
    let again = a.allocate(&req("c1")).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.assigned, first.assigned);
    assert_eq!((store.reads(), store.txns()), (0, 1), "idempotent ADD");

    // Warm DEL: the owner record and its chunks are remembered: one
    // transaction comparing their bytes.
    store.reset();
    let rec = a.release(&owner("c1")).await.unwrap().unwrap();
    assert_eq!(
        rec.ips,
        first.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()
    );
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm DEL");

    // DEL of an owner that holds nothing: one read.
    store.reset();
    assert_eq!(a.release(&owner("c1")).await.unwrap(), None);
    assert_eq!((store.reads(), store.txns()), (1, 0), "DEL of nobody");

    // Cold (no node cache, as before it existed): ADD is a read and a
    // transaction; DEL reads the owner record first because only it says
    // which chunks to read next, then those, then one transaction.
    let cold = Allocator::new(
        &store,
        a.network().clone(),
        Options {
            node_cache: false,
            ..patient(3)
        },
    )
    .unwrap();
    store.reset();
    cold.allocate(&req("c3")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (1, 1), "cold ADD");
    store.reset();
    cold.release(&owner("c3")).await.unwrap().unwrap();
    assert_eq!((store.reads(), store.txns()), (2, 1), "cold DEL");

    // Stale: another node wrote the chunks this one remembers (the cold
    // allocator above started from the same seed): one conflict whose
    // answer carries the current values, then one transaction.
    store.reset();
    a.allocate(&req("c4")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 2), "stale cache");
    store.reset();
    a.allocate(&req("c5")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm again");

    // Garbage remembered for the chunks (a damaged cache that still
    // parses): the byte compares fail, the answer brings the real chunks.
    let mut bad = a.node_cache();
    let keys: Vec<String> = bad
        .entries()
        .filter(|(k, _)| k.contains("/chunks/"))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in &keys {
        bad.remember(a.keyspace(), k, Some(b"\x00garbage"));
    }
    a.set_node_cache(bad);
    store.reset();
    let after_garbage = a.allocate(&req("c6")).await.unwrap();
    assert!(
        store.round_trips() <= 3,
        "garbage cache: {} round trips",
        store.round_trips()
    );
    // A cache of another network: ignored, a cold start.
    let other = Allocator::new(
        &store,
        network("rt-other", &["10.1.0.0/16", "2001:db8:1::/64"]),
        patient(3),
    )
    .unwrap();
    other.allocate(&req("o1")).await.unwrap();
    a.set_node_cache(other.node_cache());
    store.reset();
    let after_foreign = a.allocate(&req("c7")).await.unwrap();
    assert_eq!((store.reads(), store.txns()), (1, 1), "foreign cache");

    // Everything handed out is distinct and the state is consistent.
    let ips: Vec<IpAddr> = [&second, &after_garbage, &after_foreign]
        .iter()
        .flat_map(|x| x.assigned.iter().map(|a| a.ip))
        .collect();
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), ips.len());
    assert!(a.check().await.unwrap().is_clean());
}

/// Group commit on real etcd: 128 concurrent callers on one allocator get
/// distinct addresses in a handful of transactions; a bad request fails
/// alone. (Current-thread runtime: the callers all queue before the
/// committer first runs, so the count does not depend on timing.)
#[tokio::test]
async fn group_commit_on_etcd() {
    let etcd = EtcdServer::start();
    let store = Arc::new(CountingStore::new(connect(&etcd.url()).await));
    let a = Arc::new(
        Allocator::new(
            store.clone(),
            network("grp", &["10.3.0.0/16", "2001:db8:3::/64"]),
            patient(5),
        )
        .unwrap(),
    );
    let group = host_etcd::allocator::GroupCommit::new(a.clone());
    group.allocate(req("warm")).await.unwrap();
    store.reset();
    let tasks: Vec<_> = (0..128)
        .map(|i| {
            let g = group.clone();
            tokio::spawn(async move { g.allocate(req(&format!("g{i}"))).await })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        for x in t.await.unwrap().unwrap().assigned {
            assert!(ips.insert(x.ip), "{} twice", x.ip);
        }
    }
    assert_eq!(ips.len(), 256);
    assert!(
        store.round_trips() <= 128 / 4,
        "{} round trips for 128 grouped allocations",
        store.round_trips()
    );
    let mut bad = req("bad");
    bad.requested = vec!["10.9.0.1".parse().unwrap()];
    let (x, y) = tokio::join!(group.allocate(bad), group.allocate(req("good")));
    assert!(
        matches!(x, Err(AllocError::RequestedUnavailable { .. })),
        "{x:?}"
    );
    assert!(y.is_ok(), "{y:?}");
    assert!(a.check().await.unwrap().is_clean());
    assert_eq!(a.owners().await.unwrap().len(), 130);
}

// ---------------------------------------------------------------------------
// 2./3. Multi-process proof
// ---------------------------------------------------------------------------

/// Which network a proof run uses.
const ENV_ROLE: &str = "HOST_ETCD_PROOF_ROLE";
const ENV_ENDPOINT: &str = "HOST_ETCD_PROOF_ENDPOINT";
const ENV_PROC: &str = "HOST_ETCD_PROOF_PROC";
const ENV_TASKS: &str = "HOST_ETCD_PROOF_TASKS";
const ENV_DIR: &str = "HOST_ETCD_PROOF_DIR";
/// Name of the child entry test (run with `--exact`).
const CHILD_TEST: &str = "child_worker";

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
/// `sixty_four_allocators_on_one_chunk`.
const PROOF_CHUNK_BITS: u8 = 6;
/// A filling task releases one of its owners after ~1 in this many
/// allocations.
const CHURN_ONE_IN: u32 = 8;
/// Guard against hangs of a whole proof run (not a speed assertion).
const RUN_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// One IPv4 /22: exactly one chunk at k = 10, 1021 addresses.
    V4,
    /// IPv4 /24 + IPv6 /64.
    Dual,
    /// A /28, for the in-process sanity run.
    Tiny,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::V4 => "v4",
            Role::Dual => "dual",
            Role::Tiny => "tiny",
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "v4" => Role::V4,
            "dual" => Role::Dual,
            "tiny" => Role::Tiny,
            other => panic!("{ENV_ROLE}={other:?} is not a role"),
        }
    }

    fn network(self) -> Network {
        match self {
            Role::V4 => Network {
                chunk_bits: PROOF_CHUNK_BITS,
                ..network("proof-v4", &["10.22.0.0/22"])
            },
            Role::Dual => Network {
                chunk_bits: PROOF_CHUNK_BITS,
                ..network("proof-dual", &["10.24.0.0/24", "fd00:24::/64"])
            },
            Role::Tiny => network("proof-tiny", &["10.28.0.0/28"]),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogOp {
    Alloc,
    Release,
    Exhausted,
}

/// One line of a child's JSON-lines log.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LogLine {
    proc: usize,
    task: usize,
    /// Per-process sequence number, in the order lines were recorded.
    seq: u64,
    /// 1 = fill, 2 = release all, 3 = refill.
    phase: u8,
    op: LogOp,
    /// Container ID of the owner.
    owner: String,
    ips: Vec<IpAddr>,
    /// Wall clock (ns) before the first attempt of the operation.
    t_start: u64,
    /// Wall clock (ns) after it returned.
    t_end: u64,
    /// Transient errors retried within this operation.
    retries: u32,
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
struct History {
    /// Owner container ID → addresses, for every owner record created.
    created: HashMap<String, Vec<IpAddr>>,
    /// Owner container IDs whose record was deleted.
    deleted: HashSet<String>,
    /// Revisions replayed.
    revisions: usize,
    /// Most owners alive at once.
    peak: usize,
}

/// Replays every event under the network's keys from revision 1 and checks
/// at each revision: no address held by two owner records, and the chunk
/// bits equal the owners' addresses (ADD and DEL commit both in one
/// transaction, so they must agree at every revision).
async fn replay_history(endpoint: &str, net: &Network) -> History {
    let k = net.chunk_bits;
    let ks = host_etcd::allocator::Keyspace::new(&net.prefix, &net.name).unwrap();
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
fn verify_logs(lines: &[LogLine], procs: usize, tasks: usize, history: &History) {
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
async fn prove(role: Role, procs: usize, tasks: usize, in_process: bool) {
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

/// The child entry of the multi-process proofs. With [`ENV_ROLE`] set it is
/// one worker process; otherwise it runs the same protocol with in-process
/// workers on a /28 as a sanity check.
#[test]
fn child_worker() {
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

fn run_heavy(role: Role) {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(prove(role, 8, 16, false));
}

/// 8 processes × 16 tasks fill, empty and refill one IPv4 /22.
#[test]
fn processes_fill_empty_refill_ipv4_22() {
    // A /22 with the defaults: .0.0 network, .0.1 gateway, .3.255
    // broadcast.
    assert_eq!(capacity(&Role::V4.network().sets[0]), 1021);
    run_heavy(Role::V4);
}

/// The same with IPv4 /24 + IPv6 /64: every owner holds one of each.
#[test]
fn processes_fill_empty_refill_dual_stack() {
    assert_eq!(capacity(&Role::Dual.network().sets[0]), 253);
    run_heavy(Role::Dual);
}

// ---------------------------------------------------------------------------
// 4. etcd down
// ---------------------------------------------------------------------------

/// Budget of the allocator facing a dead etcd.
const SMALL_BUDGET: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_fails_transient_within_budget_and_writes_nothing() {
    let mut etcd = EtcdServer::start();
    let endpoint = etcd.url();
    let net = network("down", &["10.40.0.0/24", "fd00:40::/64"]);
    let store = EtcdStore::connect(&config(&endpoint, Duration::from_millis(500)))
        .await
        .unwrap();
    let options = Options {
        budget: SMALL_BUDGET,
        node_seed: 4,
        ..Options::default()
    };
    let a = Allocator::new(store, net.clone(), options).unwrap();
    // Planted state, written while etcd is up.
    let planted = a.allocate(&req("planted")).await.unwrap();

    etcd.kill();
    let t0 = Instant::now();
    let err = a.allocate(&req("lost")).await.unwrap_err();
    let took = t0.elapsed();
    // A bound, not a speed test: the budget must stop the retry loop.
    assert!(
        took < SMALL_BUDGET * 3,
        "allocate against a dead etcd took {took:?} (budget {SMALL_BUDGET:?})"
    );
    assert!(err.is_transient(), "not transient: {err:?}");
    let cni = CniError::from(err);
    assert_eq!(cni.code(), 11, "{cni}");
    // DEL and STATUS fail the same way.
    let err = a.release(&owner("planted")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(CniError::from(err).code(), 11);
    let err = a.ping().await.unwrap_err();
    assert_eq!(CniError::from(err).code(), 11);

    // Same data dir, same port: nothing of the failed calls was written.
    etcd.restart();
    let fresh = Allocator::new(connect(&endpoint).await, net.clone(), patient(5)).unwrap();
    let report = fresh.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fresh.owner(&owner("lost")).await.unwrap(), None);
    let rec = fresh.owner(&owner("planted")).await.unwrap().unwrap();
    assert_eq!(
        rec.ips,
        planted.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()
    );
    assert_eq!(fresh.owners().await.unwrap().len(), 1);
    let usage = fresh.usage().await.unwrap();
    assert_eq!((usage[0].used, usage[1].used), (1, 1));
    // The old allocator's client works again once etcd is back (its
    // transient errors are retried, as a runtime would).
    let mut retried = 0;
    let after = loop {
        match a.allocate(&req("after")).await {
            Ok(x) => break x,
            Err(e) if e.is_transient() && retried < 20 => retried += 1,
            Err(e) => panic!("allocate after restart: {e}"),
        }
    };
    assert!(!after.existing);
    assert!(fresh.check().await.unwrap().is_clean());
}

/// etcd killed while allocations stream: every ADD that succeeded is
/// stored whole, every failed one is transient, and the state is consistent
/// (an ADD whose reply was lost may or may not have committed, but never
/// half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_mid_stream_leaves_no_half_written_add() {
    let mut etcd = EtcdServer::start();
    let endpoint = etcd.url();
    let net = network("midstream", &["10.41.0.0/22", "fd00:41::/64"]);
    let store = EtcdStore::connect(&config(&endpoint, Duration::from_millis(500)))
        .await
        .unwrap();
    let options = Options {
        budget: SMALL_BUDGET,
        node_seed: 6,
        ..Options::default()
    };
    let a = Arc::new(Allocator::new(store, net.clone(), options).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for t in 0..4 {
        let a = a.clone();
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for i in 0.. {
                let id = format!("s{t}-{i}");
                match a.allocate(&req(&id)).await {
                    Ok(x) => {
                        let _ = tx.send(());
                        ok.push((id, x.assigned.iter().map(|x| x.ip).collect::<Vec<_>>()));
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "{id}: {e:?}");
                        failed.push(id);
                        if failed.len() >= 2 {
                            break;
                        }
                    }
                }
            }
            (ok, failed)
        }));
    }
    drop(tx);
    for _ in 0..40 {
        rx.recv().await.unwrap();
    }
    etcd.kill();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        let (o, f) = h.await.unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    etcd.restart();
    let fresh = Allocator::new(connect(&endpoint).await, net.clone(), patient(7)).unwrap();
    let report = fresh.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    for (id, ips) in &ok {
        let rec = fresh.owner(&owner(id)).await.unwrap();
        assert_eq!(rec.map(|r| r.ips).as_ref(), Some(ips), "{id}");
    }
    let owners = fresh.owners().await.unwrap();
    let lost_but_committed = owners.len() - ok.len();
    assert!(
        lost_but_committed <= failed.len(),
        "{} owners, {} successes, {} failures",
        owners.len(),
        ok.len(),
        failed.len()
    );
    for rec in &owners {
        assert_eq!(rec.ips.len(), 2, "{rec:?}");
    }
    let usage = fresh.usage().await.unwrap();
    assert_eq!(usage[0].used, owners.len() as u128);
    assert_eq!(usage[1].used, owners.len() as u128);
    eprintln!(
        "mid-stream kill: {} successes, {} transient failures, {lost_but_committed} of those committed",
        ok.len(),
        failed.len()
    );
}

// ---------------------------------------------------------------------------
// 5. Contention on one chunk
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_allocators_on_one_chunk() {
    let etcd = EtcdServer::start();
    let net = network("contention", &["10.50.0.0/24"]);
    let cap = capacity(&net.sets[0]);
    assert_eq!(cap, 253);
    let store = Arc::new(CountingStore::new(connect(&etcd.url()).await));
    let mut handles = Vec::new();
    for t in 0..64u64 {
        let a = Allocator::new(store.clone(), net.clone(), patient(t)).unwrap();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut transient = 0u64;
            let mut i = 0;
            loop {
                let id = format!("c{t}-{i}");
                match a.allocate(&req(&id)).await {
                    Ok(x) => {
                        assert!(!x.existing || transient > 0, "{id}: {x:?}");
                        mine.push((id, x.assigned[0].ip));
                        i += 1;
                    }
                    Err(AllocError::Exhausted { .. }) => break,
                    Err(e) if e.is_transient() => transient += 1,
                    Err(e) => panic!("{id}: {e}"),
                }
            }
            (mine, transient)
        }));
    }
    let mut all: HashMap<IpAddr, String> = HashMap::new();
    let mut transient = 0;
    for h in handles {
        let (mine, tr) = h.await.unwrap();
        transient += tr;
        for (id, ip) in mine {
            if let Some(other) = all.insert(ip, id.clone()) {
                panic!("{ip} handed to {other} and {id}");
            }
        }
    }
    assert_eq!(all.len() as u128, cap, "every address handed out once");
    let txns = store.txns();
    let reads = store.reads();
    let a = Allocator::new(store.clone(), net.clone(), patient(99)).unwrap();
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocated as u128, cap);
    let owners = a.owners().await.unwrap();
    assert_eq!(owners.len() as u128, cap);
    for rec in &owners {
        assert_eq!(all.get(&rec.ips[0]), Some(&rec.container_id));
    }
    // Every successful allocation committed exactly one transaction (none
    // failed transiently here, or the figure is an upper bound); the rest
    // lost their compare-and-swap.
    let conflicts = txns - all.len() as u64;
    eprintln!(
        "64 allocators on one /24 chunk: {} allocations, {txns} transactions, \
         {conflicts} conflicts ({:.2} per allocation), {reads} reads, {transient} transient errors",
        all.len(),
        conflicts as f64 / all.len() as f64
    );
    assert!(txns >= all.len() as u64);
}

// ---------------------------------------------------------------------------
// The checkers themselves catch what they look for
// ---------------------------------------------------------------------------

fn line(owner: &str, op: LogOp, ip: &str, t_start: u64, t_end: u64) -> LogLine {
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

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn log_checker_catches_an_overlapping_grant() {
    let ip = "10.0.0.2";
    let history = History {
        created: [("a", ip), ("b", ip)]
            .into_iter()
            .map(|(o, i)| (o.to_string(), vec![i.parse().unwrap()]))
            .collect(),
        deleted: ["a".to_string()].into_iter().collect(),
        ..History::default()
    };
    let exhausted = |seq| line("x", LogOp::Exhausted, ip, seq, seq);
    let mut lines = vec![
        line("a", LogOp::Alloc, ip, 1, 2),
        line("b", LogOp::Alloc, ip, 3, 4),
        line("a", LogOp::Release, ip, 5, 6),
        exhausted(7),
    ];
    lines.push(LogLine {
        phase: 3,
        ..exhausted(8)
    });
    // b was granted (by 4) before a's release even started (5).
    let err = std::panic::catch_unwind(|| verify_logs(&lines, 1, 1, &history)).unwrap_err();
    assert!(panic_text(err).contains("at the same time"));
    // Granted after the release started: only possibly overlapping, so the
    // log check accepts it (etcd's history decides).
    lines[1] = line("b", LogOp::Alloc, ip, 5, 7);
    lines[2] = line("a", LogOp::Release, ip, 4, 6);
    verify_logs(&lines, 1, 1, &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replay_catches_a_shared_address_and_a_missing_bit() {
    let etcd = EtcdServer::start();
    let net = network("replay", &["10.60.0.0/24"]);
    let a = Allocator::new(connect(&etcd.url()).await, net.clone(), patient(1)).unwrap();
    let got = a.allocate(&req("a")).await.unwrap();
    replay_history(&etcd.url(), &net).await;

    // A second owner record with a's address, written behind the
    // allocator's back.
    let mut rec = a.owner(&owner("a")).await.unwrap().unwrap();
    rec.container_id = "b".into();
    let key = a.keyspace().owner("b", "eth0").unwrap();
    let mut client = Client::connect([etcd.url()], None).await.unwrap();
    client
        .put(key, serde_json::to_vec(&rec).unwrap(), None)
        .await
        .unwrap();
    let (endpoint, n) = (etcd.url(), net.clone());
    let err = tokio::spawn(async move { replay_history(&endpoint, &n).await })
        .await
        .unwrap_err();
    let text = panic_text(err.into_panic());
    assert!(text.contains("granted to b while a holds it"), "{text}");

    // An owner whose bit is not set.
    let etcd = EtcdServer::start();
    let mut client = Client::connect([etcd.url()], None).await.unwrap();
    rec.container_id = "c".into();
    rec.ips = vec![got.assigned[0].ip];
    client
        .put(
            a.keyspace().owner("c", "eth0").unwrap(),
            serde_json::to_vec(&rec).unwrap(),
            None,
        )
        .await
        .unwrap();
    let (endpoint, n) = (etcd.url(), net.clone());
    let err = tokio::spawn(async move { replay_history(&endpoint, &n).await })
        .await
        .unwrap_err();
    let text = panic_text(err.into_panic());
    assert!(text.contains("bit is false"), "{text}");
}

// ---------------------------------------------------------------------------
// Sticky addresses
// ---------------------------------------------------------------------------

fn sticky(seed: u64, clock: &host_etcd::allocator::Clock) -> Options {
    Options {
        sticky_ttl: Some(Duration::from_secs(300)),
        clock: clock.clone(),
        ..patient(seed)
    }
}

fn pod_req(id: &str, name: &str) -> AllocRequest {
    AllocRequest {
        pod_namespace: Some("ns".into()),
        pod_name: Some(name.into()),
        ..req(id)
    }
}

fn ips(a: &host_etcd::allocator::Allocation) -> Vec<IpAddr> {
    a.assigned.iter().map(|x| x.ip).collect()
}

/// On real etcd: a DEL binds a pod's addresses in its transaction, the pod's
/// next container on another node gets them back (one conflict when warm),
/// two new containers of the pod racing on one binding never share and
/// exactly one of them consumes it, and expiry and release go through
/// compare-and-swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_addresses_on_etcd() {
    let etcd = EtcdServer::start();
    let clock = host_etcd::allocator::Clock::manual(1_700_000_000);
    let store = CountingStore::new(connect(&etcd.url()).await);
    let net = network("sticky", &["10.7.0.0/16", "2001:db8:7::/64"]);
    let a = Allocator::new(&store, net.clone(), sticky(1, &clock)).unwrap();
    let b = Allocator::new(&store, net.clone(), sticky(2, &clock)).unwrap();
    let first = a.allocate(&pod_req("c1", "web-0")).await.unwrap();
    b.allocate(&pod_req("b1", "other-0")).await.unwrap();
    store.reset();
    a.release(&owner("c1")).await.unwrap().unwrap();
    assert_eq!((store.reads(), store.txns()), (0, 1), "warm sticky DEL");
    let listed = a.bindings().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].binding.as_ref().unwrap().ips, ips(&first));
    store.reset();
    let second = b.allocate(&pod_req("c2", "web-0")).await.unwrap();
    assert_eq!(ips(&second), ips(&first), "other node, same addresses");
    // Warm on another node: the binding arrives in a conflict answer; if
    // this node remembers the bound chunks from before the DEL (here: its
    // first range read saw them), comparing those stale values costs one
    // more conflict, which brings the current chunks.
    assert_eq!(store.reads(), 0);
    assert!(
        (2..=3).contains(&store.txns()) && store.conflicts() == store.txns() - 1,
        "{} txns, {} conflicts",
        store.txns(),
        store.conflicts()
    );
    assert!(a.bindings().await.unwrap().is_empty());

    // Race: two new containers of web-0 on two nodes, one binding.
    b.release(&owner("c2")).await.unwrap().unwrap();
    let (r3, r4) = (pod_req("c3", "web-0"), pod_req("c4", "web-0"));
    let (x, y) = tokio::join!(a.allocate(&r3), b.allocate(&r4));
    let (x, y) = (ips(&x.unwrap()), ips(&y.unwrap()));
    assert!(x.iter().all(|ip| !y.contains(ip)), "{x:?} / {y:?}");
    assert!(
        x == ips(&first) || y == ips(&first),
        "one of them got the bound addresses: {x:?} / {y:?}"
    );
    assert!(a.bindings().await.unwrap().is_empty(), "consumed once");

    // Expiry: ADD ignores an expired binding; expire_bindings deletes it.
    a.release(&owner("c3")).await.unwrap().unwrap();
    b.release(&owner("c4")).await.unwrap().unwrap();
    assert_eq!(a.bindings().await.unwrap().len(), 1, "the last DEL wins");
    clock.advance(299);
    assert!(a.expire_bindings(clock.now()).await.unwrap().is_empty());
    clock.advance(1);
    let gone = a.expire_bindings(clock.now()).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert!(a.bindings().await.unwrap().is_empty());
    // release_binding: a fresh container after it.
    let c5 = a.allocate(&pod_req("c5", "web-0")).await.unwrap();
    a.release(&owner("c5")).await.unwrap().unwrap();
    assert_eq!(a.release_binding("ns", "web-0").await.unwrap().len(), 1);
    let c6 = b.allocate(&pod_req("c6", "web-0")).await.unwrap();
    assert_ne!(ips(&c6), ips(&c5));
    let report = a.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}
