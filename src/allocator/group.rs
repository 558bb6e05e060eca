//! Group commit ([`GroupCommit`]): concurrent allocations on one allocator
//! that arrive while a transaction is in flight are committed together in
//! the next one.

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
/// Releases are not grouped: [`GroupCommit::release`] goes straight to the
/// allocator (one transaction when warm).
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
/// let network = Network {
///     name: "example".into(),
///     prefix: "/host-etcd".into(),
///     sets: vec![RangeSet::new(vec![range])?],
///     chunk_bits: 8,
/// };
/// let alloc = Arc::new(Allocator::new(MemoryStore::new(), network, Options::default())?);
/// let group = GroupCommit::new(alloc);
/// let req = |id: &str| AllocRequest {
///     owner: OwnerId { container_id: id.into(), ifname: "eth0".into() },
///     ..AllocRequest::default()
/// };
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

struct Shared<S> {
    alloc: Arc<Allocator<S>>,
    window: Duration,
    /// When set: the window is waited only while more requests are in
    /// flight at the caller than are queued here (more are on their way).
    busy: Option<Arc<AtomicU64>>,
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

struct Job {
    req: AllocRequest,
    reply: oneshot::Sender<Result<Allocation, AllocError>>,
}

impl<S: Store + 'static> GroupCommit<S> {
    /// Groups the allocations made through this handle on `alloc`, with no
    /// wait window.
    pub fn new(alloc: Arc<Allocator<S>>) -> Self {
        GroupCommit::with_window(alloc, Duration::ZERO)
    }

    /// Waits `window` before each batch to collect more requests.
    pub fn with_window(alloc: Arc<Allocator<S>>, window: Duration) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                alloc,
                window,
                busy: None,
                queue: Mutex::new(Queue::default()),
            }),
        }
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
        GroupCommit {
            shared: Arc::new(Shared {
                alloc,
                window,
                busy: Some(busy),
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
        let start = match self.shared.queue.lock() {
            Ok(mut q) => {
                q.jobs.push(Job { req, reply });
                !std::mem::replace(&mut q.running, true)
            }
            Err(_) => return Err(AllocError::Contention { attempts: 0 }),
        };
        if start {
            tokio::spawn(commit_loop(self.shared.clone()));
        }
        // The committer answers every job it takes; a dropped sender means
        // it died (a panic): report a retryable failure.
        answer
            .await
            .unwrap_or(Err(AllocError::Contention { attempts: 0 }))
    }

    /// [`Allocator::release`], not grouped.
    pub async fn release(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        self.shared.alloc.release(owner).await
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
        let reqs: Vec<AllocRequest> = jobs.iter().map(|j| j.req.clone()).collect();
        let results = shared.alloc.allocate_each(&reqs).await;
        for (job, result) in jobs.into_iter().zip(results) {
            // A caller that went away does not matter to the others.
            let _ = job.reply.send(result);
        }
    }
}
