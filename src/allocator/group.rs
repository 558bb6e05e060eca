//! Group commit ([`GroupCommit`]): concurrent allocations and releases on
//! one allocator that arrive while a transaction is in flight are
//! committed together in the next one; a request whose caller went away is
//! dropped before its commit, and an allocation committed after its caller
//! went away is released again ([`Abandoned`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{AllocError, AllocRequest, Allocation, Allocator, OwnerId, OwnerRecord, MAX_BATCH};
use crate::store::Store;

/// Group commit: a handle on one allocator whose concurrent
/// [`allocate`](Self::allocate) calls that arrive while a transaction is in
/// flight are committed together in the next one. Cheap to clone; every
/// clone feeds the same queue.
///
/// One committer task at a time takes everything queued (up to
/// [`MAX_BATCH`] requests, etcd's default limit being 128
/// operations per transaction), plans it with
/// [`Allocator::allocate_each`] — every request gets its own result, a bad
/// request (static address taken, stage list exhausted) never fails the
/// others — and answers each caller. With no wait window (the default) the
/// first request goes out at once and the requests that arrive during its
/// round trip form the next batch, so a lone caller pays no extra latency
/// and a burst of n callers costs about n / batch transactions. A window
/// (`with_window`) delays each batch to collect more when callers arrive
/// spread out (plugin processes starting one after the other);
/// `with_window_while_busy` waits it only while more requests are in flight
/// than queued, so a lone request never waits.
/// Releases ([`release`](Self::release)) are grouped the same way, in a
/// transaction of their own ([`Allocator::release_each`]): a batch taken
/// from the queue costs one transaction for its allocations and one for
/// its releases.
///
/// **Callers that go away.** A caller that stops waiting (its future is
/// dropped: the node agent's client closed the connection) before its
/// request is taken into a batch has it dropped: nothing is written for
/// it. An allocation whose caller went away while its transaction was in
/// flight is released again at once, by a compare-and-swap on the
/// revision its owner record was written at
/// ([`Allocator::release_created`]): a record written since (the same
/// owner allocated again) is left alone. Each case is reported to the
/// observer ([`observed`](Self::observed)) as an [`Abandoned`].
///
/// ```
/// use std::sync::Arc;
/// use host_etcd::allocator::{AllocRequest, Allocator, GroupCommit, Network, Options, OwnerId};
/// use host_etcd::range::{Range, RangeSet, RangeSpec};
/// use host_etcd::store::memory::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let range = Range::parse(&RangeSpec { subnet: "10.1.0.0/24".into(), ..RangeSpec::default() })?;
/// let network = Network::new("example", vec![RangeSet::new(vec![range])?])?;
/// let alloc = Arc::new(Allocator::new(MemoryStore::new(), network, Options::default())?);
/// let group = GroupCommit::new(alloc);
/// let req = |id: &str| AllocRequest::new(OwnerId { container_id: id.into(), ifname: "eth0".into() });
/// let (a, b) = tokio::join!(group.allocate(req("a")), group.allocate(req("b")));
/// assert_ne!(a?.assigned[0].ip, b?.assigned[0].ip);
/// # Ok(())
/// # }
/// ```
pub struct GroupCommit<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for GroupCommit<S> {
    fn clone(&self) -> Self {
        GroupCommit {
            shared: self.shared.clone(),
        }
    }
}

/// What the group commit did with a request whose caller went away before
/// its answer (see [`GroupCommit`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Abandoned {
    /// Dropped before its transaction: nothing was written for it.
    Dropped {
        /// The owner of the request.
        owner: OwnerId,
        /// `true` for an allocation, `false` for a release.
        allocation: bool,
    },
    /// An allocation committed after its caller went away, released again.
    Released {
        /// The record written and deleted again.
        record: OwnerRecord,
    },
    /// An allocation committed after its caller went away whose record was
    /// written again since (or is gone): left alone.
    Kept {
        /// The owner.
        owner: OwnerId,
    },
    /// An allocation committed after its caller went away whose release
    /// failed: its record stays (for `ipamctl reconcile` or CNI GC).
    ReleaseFailed {
        /// The owner.
        owner: OwnerId,
        /// Why the release failed.
        error: AllocError,
    },
}

/// Receives every [`Abandoned`] request of a [`GroupCommit`].
pub type Observer = Arc<dyn Fn(&Abandoned) + Send + Sync>;

struct Shared<S> {
    alloc: Arc<Allocator<S>>,
    window: Duration,
    /// When set: the window is waited only while more requests are in
    /// flight at the caller than are queued here (more are on their way).
    busy: Option<Arc<AtomicU64>>,
    observer: Option<Observer>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Whether a committer task is running (it drains the queue).
    running: bool,
    /// When the last batch was taken.
    last_batch: Option<std::time::Instant>,
}

enum Job {
    Allocate {
        req: AllocRequest,
        reply: oneshot::Sender<Result<Allocation, AllocError>>,
    },
    Release {
        owner: OwnerId,
        reply: oneshot::Sender<Result<Option<OwnerRecord>, AllocError>>,
    },
}

impl Job {
    /// Whether the caller stopped waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Job::Allocate { reply, .. } => reply.is_closed(),
            Job::Release { reply, .. } => reply.is_closed(),
        }
    }
}

impl<S: Store + 'static> GroupCommit<S> {
    /// Groups the allocations made through this handle on `alloc`, with no
    /// wait window.
    pub fn new(alloc: Arc<Allocator<S>>) -> Self {
        GroupCommit::with_window(alloc, Duration::ZERO)
    }

    /// Waits `window` before each batch to collect more requests.
    pub fn with_window(alloc: Arc<Allocator<S>>, window: Duration) -> Self {
        GroupCommit::build(alloc, window, None, None)
    }

    /// Waits `window` before a batch only while `busy` (the caller's count
    /// of requests in flight, e.g. the node agent's connections) is larger
    /// than the number of requests queued: a lone request goes out at once,
    /// a burst that is still arriving is collected.
    pub fn with_window_while_busy(
        alloc: Arc<Allocator<S>>,
        window: Duration,
        busy: Arc<AtomicU64>,
    ) -> Self {
        GroupCommit::build(alloc, window, Some(busy), None)
    }

    /// The same group commit, reporting every request whose caller went
    /// away to `observer` (called on the committer task; keep it short).
    /// Takes effect on handles made from the returned one.
    pub fn observed(self, observer: Observer) -> Self {
        let s = &self.shared;
        let (alloc, window, busy) = (s.alloc.clone(), s.window, s.busy.clone());
        GroupCommit::build(alloc, window, busy, Some(observer))
    }

    fn build(
        alloc: Arc<Allocator<S>>,
        window: Duration,
        busy: Option<Arc<AtomicU64>>,
        observer: Option<Observer>,
    ) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                alloc,
                window,
                busy,
                observer,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// The allocator.
    pub fn allocator(&self) -> &Allocator<S> {
        &self.shared.alloc
    }

    /// Like [`Allocator::allocate`], committed together with the other
    /// requests queued at the same time. Needs a tokio runtime (the
    /// committer is a spawned task).
    pub async fn allocate(&self, req: AllocRequest) -> Result<Allocation, AllocError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Allocate { req, reply })?;
        // The committer answers every job it takes; a dropped sender means
        // it died (a panic): report a retryable failure.
        answer
            .await
            .unwrap_or(Err(AllocError::Contention { attempts: 0 }))
    }

    /// Like [`Allocator::release`], committed together with the other
    /// releases queued at the same time ([`Allocator::release_each`]: each
    /// its own result). Needs a tokio runtime. When the store has no space
    /// for the grouped transaction, the owner is released on its own, which
    /// falls back to deleting its record alone ([`Allocator::release`]).
    pub async fn release(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Release {
            owner: owner.clone(),
            reply,
        })?;
        match answer
            .await
            .unwrap_or(Err(AllocError::Contention { attempts: 0 }))
        {
            Err(e) if e.is_no_space() => self.shared.alloc.release(owner).await,
            other => other,
        }
    }

    /// Queues a job and starts the committer when none runs.
    fn enqueue(&self, job: Job) -> Result<(), AllocError> {
        let start = match self.shared.queue.lock() {
            Ok(mut q) => {
                q.jobs.push(job);
                !std::mem::replace(&mut q.running, true)
            }
            Err(_) => return Err(AllocError::Contention { attempts: 0 }),
        };
        if start {
            tokio::spawn(commit_loop(self.shared.clone()));
        }
        Ok(())
    }
}

/// Clears `running` when the committer dies by a panic, so the next caller
/// starts a new one instead of queueing behind a dead one. (A committer
/// that ends normally clears it itself, under the lock that proves the
/// queue empty.)
struct Running<'a>(&'a Mutex<Queue>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut q) = self.0.lock() {
                q.running = false;
            }
        }
    }
}

/// Whether waiting the window may collect more requests: more requests in
/// flight than queued, or a batch taken within the last two windows (a
/// burst whose callers arrive spread out, like plugin processes starting
/// one after the other).
fn more_coming<S>(shared: &Shared<S>) -> bool {
    let Some(busy) = &shared.busy else {
        return true;
    };
    let Ok(q) = shared.queue.lock() else {
        return false;
    };
    busy.load(Ordering::Relaxed) > q.jobs.len() as u64
        || q.last_batch
            .is_some_and(|t| t.elapsed() < shared.window * 2)
}

impl<S> Shared<S> {
    fn report(&self, what: Abandoned) {
        if let Some(observer) = &self.observer {
            observer(&what);
        }
    }
}

async fn commit_loop<S: Store + 'static>(shared: Arc<Shared<S>>) {
    let _running = Running(&shared.queue);
    loop {
        if !shared.window.is_zero() && more_coming(&shared) {
            tokio::time::sleep(shared.window).await;
        }
        let jobs: Vec<Job> = match shared.queue.lock() {
            Ok(mut q) => {
                if q.jobs.is_empty() {
                    q.running = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.last_batch = Some(std::time::Instant::now());
                q.jobs.drain(..n).collect()
            }
            Err(_) => return,
        };
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for job in jobs {
            // A caller that went away is not committed for.
            if job.abandoned() {
                let (owner, allocation) = match job {
                    Job::Allocate { req, .. } => (req.owner, true),
                    Job::Release { owner, .. } => (owner, false),
                };
                shared.report(Abandoned::Dropped { owner, allocation });
                continue;
            }
            match job {
                Job::Allocate { req, reply } => adds.push((req, reply)),
                Job::Release { owner, reply } => dels.push((owner, reply)),
            }
        }
        if !adds.is_empty() {
            commit_allocations(&shared, adds).await;
        }
        if !dels.is_empty() {
            let owners: Vec<OwnerId> = dels.iter().map(|(o, _)| o.clone()).collect();
            let results = shared.alloc.release_each(&owners).await;
            for ((_, reply), result) in dels.into_iter().zip(results) {
                // A caller that went away meanwhile: its DEL is done anyway.
                let _ = reply.send(result);
            }
        }
    }
}

type AllocReply = oneshot::Sender<Result<Allocation, AllocError>>;

/// Commits a batch of allocations and answers each caller; an allocation
/// whose caller went away meanwhile is released again.
async fn commit_allocations<S: Store + 'static>(
    shared: &Shared<S>,
    adds: Vec<(AllocRequest, AllocReply)>,
) {
    let reqs: Vec<AllocRequest> = adds.iter().map(|(r, _)| r.clone()).collect();
    let results = shared.alloc.allocate_each_committed(&reqs).await;
    for ((req, reply), result) in adds.into_iter().zip(results) {
        let revision = result.as_ref().ok().and_then(|(_, rev)| *rev);
        if reply.send(result.map(|(a, _)| a)).is_ok() {
            continue;
        }
        // Nobody takes the answer. Only a record this request wrote is
        // released: an owner that already held addresses keeps them.
        let Some(revision) = revision else { continue };
        let owner = req.owner;
        let what = match shared.alloc.release_created(&owner, revision).await {
            Ok(Some(record)) => Abandoned::Released { record },
            Ok(None) => Abandoned::Kept { owner },
            Err(error) => Abandoned::ReleaseFailed { owner, error },
        };
        shared.report(what);
    }
}
