//! The measured workload, "ours": `count` allocations (each released again
//! with `--release`) over `concurrency` client tasks, each with its own
//! [`Allocator`] (or a share of one group-committing allocator with
//! `--group`), in this process or spread over re-executed worker
//! processes; and the prefill before it.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;

use super::progress::progress;
use super::report::{micros, Ours, WorkerResult};
use super::{split, Shared};
use crate::admin::cli::BenchArgs;
use crate::admin::error::{AdminError, EXIT_OK};
use crate::allocator::node_seed_from;
use crate::allocator::GroupCommit;
use crate::allocator::{AllocError, AllocRequest, Allocator, Network, Options, OwnerId};

/// Requests per `allocate_batch` call while prefilling.
const PREFILL_CALL: usize = 1000;

/// Now, in microseconds since the Unix epoch (0 before it).
fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The node seed of client `client` of worker `worker`.
fn seed_of(same_node: bool, worker: usize, client: usize) -> u64 {
    if same_node {
        node_seed_from("bench-node")
    } else {
        node_seed_from(&format!("bench-node-{worker}-{client}"))
    }
}

/// One bench client: its own allocator, or a share of a group-committing one.
enum Client {
    Own(Box<Allocator<Shared>>),
    Group(GroupCommit<Shared>),
}

impl Client {
    async fn allocate(&self, req: &AllocRequest) -> Result<(), AllocError> {
        match self {
            Client::Own(a) => a.allocate(req).await.map(|_| ()),
            Client::Group(g) => g.allocate(req.clone()).await.map(|_| ()),
        }
    }

    async fn release(&self, owner: &OwnerId) -> Result<(), AllocError> {
        match self {
            Client::Own(a) => a.release(owner).await.map(|_| ()),
            Client::Group(g) => g.release(owner).await.map(|_| ()),
        }
    }
}

/// Makes the clients of worker `worker`: each with its own allocator
/// (seeded per client, or all alike with `--same-node`), or with `--group`
/// each a share of the process's one group-committing allocator.
struct Clients<'a> {
    store: &'a Shared,
    network: &'a Network,
    options: &'a Options,
    same_node: bool,
    worker: usize,
    grouped: Option<GroupCommit<Shared>>,
}

impl<'a> Clients<'a> {
    fn new(
        store: &'a Shared,
        network: &'a Network,
        options: &'a Options,
        args: &BenchArgs,
        worker: usize,
    ) -> Result<Self, AdminError> {
        let grouped = if args.group {
            let alloc = Allocator::new(
                store.clone(),
                network.clone(),
                Options {
                    node_seed: seed_of(true, worker, 0),
                    ..options.clone()
                },
            )?;
            Some(GroupCommit::new(Arc::new(alloc)))
        } else {
            None
        };
        Ok(Clients {
            store,
            network,
            options,
            same_node: args.same_node,
            worker,
            grouped,
        })
    }

    fn client(&self, client: usize) -> Result<Client, AdminError> {
        Ok(match &self.grouped {
            Some(g) => Client::Group(g.clone()),
            None => Client::Own(Box::new(Allocator::new(
                self.store.clone(),
                self.network.clone(),
                Options {
                    node_seed: seed_of(self.same_node, self.worker, client),
                    ..self.options.clone()
                },
            )?)),
        })
    }
}

/// One client task: takes allocation numbers from `next` until `count`,
/// allocating for owner `bench-<worker>-<i>` (and releasing it again with
/// `release`), timing each allocation.
async fn client_loop(
    alloc: Client,
    next: Arc<AtomicUsize>,
    count: usize,
    worker: usize,
    release: bool,
    pb: ProgressBar,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            break;
        }
        let owner = OwnerId {
            container_id: format!("bench-{worker}-{i}"),
            ifname: "eth0".into(),
        };
        let req = AllocRequest {
            owner: owner.clone(),
            ..AllocRequest::default()
        };
        let t = Instant::now();
        match alloc.allocate(&req).await {
            Ok(_) => {
                out.latencies_us.push(micros(t.elapsed()));
                out.allocations += 1;
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
        if release {
            if let Err(e) = alloc.release(&owner).await {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
        pb.inc(1);
    }
    out
}

/// Runs `count` allocations over `concurrency` tasks on `store`.
async fn run_ours(
    store: &Shared,
    network: &Network,
    options: &Options,
    args: &BenchArgs,
    worker: usize,
    count: usize,
    pb: &ProgressBar,
) -> Result<WorkerResult, AdminError> {
    store.reset();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let start_us = epoch_us();
    let clients = Clients::new(store, network, options, args, worker)?;
    for client in 0..args.concurrency.max(1) {
        let alloc = clients.client(client)?;
        tasks.push(tokio::spawn(client_loop(
            alloc,
            next.clone(),
            count,
            worker,
            args.release,
            pb.clone(),
        )));
    }
    let mut total = WorkerResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| AdminError::Worker {
            index: worker,
            detail: format!("client task failed: {e}"),
        })?;
        total.merge(r);
    }
    total.end_us = epoch_us();
    total.start_us = start_us;
    total.reads = store.reads();
    total.txns = store.txns();
    total.bytes_written = store.bytes_written();
    Ok(total)
}

/// Re-executes this binary once per entry of `per_worker` (that many
/// allocations each) and merges the workers' results.
async fn run_processes(network: &str, per_worker: &[usize]) -> Result<WorkerResult, AdminError> {
    let exe = std::env::current_exe()?;
    let base: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut waits = Vec::new();
    for (index, n) in per_worker.iter().enumerate() {
        let child = worker_command(&exe, &base, network, index, *n).spawn()?;
        // One blocking waiter per child, so no child stalls on a full pipe.
        waits.push(tokio::task::spawn_blocking(move || {
            child.wait_with_output()
        }));
    }
    let mut merged = WorkerResult {
        start_us: u64::MAX,
        ..WorkerResult::default()
    };
    for (index, wait) in waits.into_iter().enumerate() {
        let out = wait.await.map_err(|e| AdminError::Worker {
            index,
            detail: e.to_string(),
        })??;
        merged.merge(worker_result(index, &out)?);
    }
    Ok(merged)
}

/// This run's command line (`base`) again as worker `index`, measuring `n`
/// allocations on `network` and printing its result as JSON.
fn worker_command(
    exe: &std::path::Path,
    base: &[std::ffi::OsString],
    network: &str,
    index: usize,
    n: usize,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(base)
        .args(["--count", &n.to_string()])
        .args(["--worker", &index.to_string()])
        .args(["--worker-network", network])
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The result worker `index` printed, or why there is none.
fn worker_result(index: usize, out: &std::process::Output) -> Result<WorkerResult, AdminError> {
    if !out.status.success() {
        return Err(AdminError::Worker {
            index,
            detail: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| AdminError::Worker {
        index,
        detail: format!("unreadable result: {e}"),
    })
}

/// A worker process's whole run (`--worker`): the measured loop on `store`,
/// its [`WorkerResult`] as one line of JSON on `out`.
pub(super) async fn run_worker(
    store: &Shared,
    network: &Network,
    options: &Options,
    args: &BenchArgs,
    worker: usize,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let r = run_ours(
        store,
        network,
        options,
        args,
        worker,
        args.count,
        &ProgressBar::hidden(),
    )
    .await?;
    let text = serde_json::to_string(&r).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    Ok(EXIT_OK)
}

/// Allocates `prefill` addresses (owners `prefill-<i>`) in batches of
/// [`PREFILL_CALL`] requests, before anything is measured; returns the
/// seconds it took.
pub(super) async fn prefill(
    store: &Shared,
    network: &Network,
    options: &Options,
    prefill: usize,
    show: bool,
) -> Result<f64, AdminError> {
    let prefill_start = Instant::now();
    if prefill > 0 {
        let alloc = Allocator::new(store.clone(), network.clone(), options.clone())?;
        let pb = progress(prefill as u64, show, "prefill");
        let mut done = 0;
        while done < prefill {
            let n = PREFILL_CALL.min(prefill - done);
            let reqs: Vec<AllocRequest> = (done..done + n)
                .map(|i| AllocRequest {
                    owner: OwnerId {
                        container_id: format!("prefill-{i}"),
                        ifname: "eth0".into(),
                    },
                    ..AllocRequest::default()
                })
                .collect();
            alloc.allocate_batch(&reqs).await.map_err(|e| e.error)?;
            done += n;
            pb.set_position(done as u64);
        }
        pb.finish_and_clear();
    }
    Ok(prefill_start.elapsed().as_secs_f64())
}

/// The measured loop, over `--processes` worker processes or in this one
/// (with a progress bar if `show`), and its figures.
pub(super) async fn measure(
    store: &Shared,
    network: &Network,
    options: &Options,
    args: &BenchArgs,
    show: bool,
) -> Result<Ours, AdminError> {
    let r = if args.processes > 1 {
        run_processes(&network.name, &split(args.count, args.processes)).await?
    } else {
        let pb = progress(args.count as u64, show, "ours");
        let r = run_ours(store, network, options, args, 0, args.count, &pb).await?;
        pb.finish_and_clear();
        r
    };
    Ok(Ours::of(r, args.release))
}
