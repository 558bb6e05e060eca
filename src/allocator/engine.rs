//! The driver: runs the pure planner against a [`Store`], feeding it reads
//! and conflict answers, inside the one bounded retry loop of the crate.
//!
//! Cold ADD: one read (owner, meta, full-chunk set, starting chunks), one
//! transaction — or, a node's first ADD, one transaction on a guess of a
//! fresh start chunk ([`Options::guess_first_add`](super::Options)); warm
//! ADD or DEL (a [`NodeCache`] that knows the keys): one
//! transaction on the remembered values, compared by their bytes. A
//! conflict answer carries the current values, so each retry
//! is one more round trip. Transient store errors restart the operation from
//! a fresh read (the lost transaction may have committed; compares and the
//! owner record make the retry converge). Everything is bounded by
//! [`Options::max_attempts`](super::Options::max_attempts) and
//! [`Options::budget`](super::Options::budget).
//!
//! The whole ADD and DEL, step by step through this loop and the planner:
//! `ARCHITECTURE.md`, "The life of one ADD".

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::cache::NodeCache;
use super::meta::Meta;
use super::owners::{decode_owner, not_in};
use super::plan::{self, Ctx, Outcome, Plan, Stop, START_WINDOW};
use super::state::{Known, Pending};
use super::{
    AllocError, AllocRequest, Allocation, Allocator, BatchError, OwnerId, OwnerRecord, MAX_BATCH,
};
use crate::range::Family;
use crate::store::{
    prefix_end, Compare, Expect, Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome,
    Versioned,
};

/// Where a node that found another node allocating in its chunk moves to in
/// an IPv6 range set: a chunk of its first `CONTESTED_WINDOW` (16 start
/// windows: a crowded start window spills over instead of staying crowded;
/// an IPv4 range set is its own window). See BENCHMARKS.md, "Rollout at
/// cluster scale".
const CONTESTED_WINDOW: u128 = 16 * START_WINDOW;

/// Upper bound on reads within one operation (a safety net: planning needs
/// O(chunks scanned / read_limit) reads at most).
const MAX_READS: u32 = 100_000;

/// What one operation knows and has tried, across the attempts of
/// [`Allocator::drive_attempts`].
struct Run {
    /// The chunk size the operation works at (taken once: an allocator
    /// adopting another meanwhile does not change it mid-operation).
    k: u8,
    /// The reads of a cold start (made again after a transient error).
    initial: Vec<Pending>,
    /// What is known of the store.
    known: Known,
    /// What the planner waits for.
    pending: Vec<Pending>,
    /// Per range set, where the search starts.
    positions: BTreeMap<usize, u128>,
    /// The meta record a node's first ADD guessed instead of reading.
    optimistic: Option<Vec<u8>>,
    /// After repeated conflicts: a random seed over the whole set.
    scatter: Option<u64>,
    /// Transactions sent.
    attempts: u32,
    /// Transient read errors.
    transient: u32,
    /// Reads made.
    reads: u32,
    /// Another node was met allocating in this node's chunk.
    contested: bool,
    /// This operation already moved away from a contested chunk.
    moved_away: bool,
    /// The last transient error seen, for [`AllocError::BudgetExceeded`].
    last: String,
}

impl Run {
    /// Forgets what is known and starts over from the cold start's reads.
    fn restart(&mut self, fresh: Known) {
        self.known = fresh;
        self.pending = self.initial.clone();
    }
}

impl<S: Store> Allocator<S> {
    /// The planner's context for an operation at chunk size `k`.
    fn ctx<'a>(&'a self, positions: &'a BTreeMap<usize, u128>, k: u8) -> Ctx<'a> {
        Ctx {
            positions,
            net: &self.network,
            k,
            ks: &self.keyspace,
            seed: self.options.node_seed,
            node: &self.options.node_name,
            read_limit: self.options.read_limit.max(1),
            window: START_WINDOW,
            now: self.options.clock.now(),
            sticky_ttl: self.options.sticky_ttl.map(|d| d.as_secs().max(1)),
        }
    }

    /// Awaits a store call within the operation's deadline.
    pub(crate) async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>>,
        deadline: Instant,
        last: &str,
    ) -> Result<T, AllocError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, fut).await {
            Ok(r) => r.map_err(AllocError::from),
            Err(_) => Err(self.budget_exceeded(last)),
        }
    }

    fn budget_exceeded(&self, last: &str) -> AllocError {
        AllocError::BudgetExceeded {
            budget: self.options.budget,
            last: last.to_string(),
        }
    }

    /// Sleeps a random, growing, capped time before retry `attempt`.
    async fn backoff(&self, attempt: u32, deadline: Instant) {
        if attempt <= 1 {
            return;
        }
        let cap_ms = 1u64 << attempt.min(6);
        let wait = Duration::from_micros(fastrand::u64(0..cap_ms * 1000));
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(wait.min(remaining)).await;
    }

    /// The retry loop shared by every write operation (the driver of the
    /// pure planner: read, plan, transact, learn, retry).
    ///
    /// With a warm node cache the operation starts from the remembered
    /// values (compared by their bytes) instead of a read; `assume_absent`
    /// names owner keys a warm start takes as absent without reading them
    /// (the transaction compares them absent). A definite failure planned on
    /// remembered values is not trusted: the operation starts over from a
    /// fresh read. Whatever the operation learns is remembered, also when it
    /// fails.
    pub(super) async fn drive<T>(
        &self,
        initial: Vec<Pending>,
        assume_absent: &[Key],
        planner: impl Fn(&Ctx<'_>, &Known) -> Result<Plan<T>, Stop>,
    ) -> Result<T, AllocError> {
        self.drive_committed(|_| (initial.clone(), assume_absent.to_vec()), planner)
            .await
            .map(|(result, _)| result)
    }

    /// [`drive`](Self::drive), also giving the revision the operation's
    /// transaction committed at (`None`: it wrote nothing). `start` gives,
    /// for the chunk size the operation runs at, the initial reads and the
    /// keys a warm start takes as absent; it is asked again when the
    /// operation starts over at another chunk size.
    ///
    /// Every operation reads (or remembers) the network's meta record, and
    /// every transaction that touches chunks compares it: an operation
    /// planned at a chunk size other than the stored one fails with
    /// [`AllocError::MetaMismatch`] before writing anything. When the
    /// allocator may follow the stored k
    /// ([`Options::adopt_stored_chunk_bits`](super::Options)), it adopts it
    /// and starts the operation over, once.
    pub(super) async fn drive_committed<T>(
        &self,
        start: impl Fn(u8) -> (Vec<Pending>, Vec<Key>),
        planner: impl Fn(&Ctx<'_>, &Known) -> Result<Plan<T>, Stop>,
    ) -> Result<(T, Option<i64>), AllocError> {
        let mut adopted = false;
        loop {
            let k = self.chunk_bits();
            let (mut initial, assume_absent) = start(k);
            let meta = Pending::Get(self.keyspace.meta());
            if !initial.contains(&meta) {
                initial.push(meta);
            }
            let mut learned = Learned::default();
            let out = self
                .drive_attempts(k, initial, &assume_absent, &planner, &mut learned)
                .await;
            self.apply(learned, out.is_ok());
            match out {
                Err(AllocError::MetaMismatch { stored, .. })
                    if !adopted && self.adopt_chunk_bits(stored) =>
                {
                    adopted = true;
                }
                out => return out,
            }
        }
    }

    /// The loop itself: read what the planner needs, plan, send the
    /// transaction, learn from the answer, until it commits, fails for
    /// good, or runs out of attempts or budget. Each step is a method of
    /// its own: [`start`](Self::start), [`read_pending`](Self::read_pending),
    /// [`plan_attempt`](Self::plan_attempt),
    /// [`commit_attempt`](Self::commit_attempt).
    async fn drive_attempts<T>(
        &self,
        k: u8,
        initial: Vec<Pending>,
        assume_absent: &[Key],
        planner: &impl Fn(&Ctx<'_>, &Known) -> Result<Plan<T>, Stop>,
        learned: &mut Learned,
    ) -> Result<(T, Option<i64>), AllocError> {
        let deadline = Instant::now() + self.options.budget;
        let mut run = self.start(k, initial, assume_absent);
        loop {
            if Instant::now() >= deadline {
                return Err(self.budget_exceeded(&run.last));
            }
            if !run.pending.is_empty() && !self.read_pending(&mut run, learned, deadline).await? {
                continue;
            }
            let Some(plan) = self.plan_attempt(&mut run, planner)? else {
                continue;
            };
            if plan.txn.ops.is_empty() {
                return Ok((plan.result, None));
            }
            run.attempts += 1;
            if let Some(done) = self
                .commit_attempt(&mut run, plan, learned, deadline)
                .await?
            {
                return Ok(done);
            }
            if run.attempts >= self.options.max_attempts {
                return Err(AllocError::Contention {
                    attempts: run.attempts,
                });
            }
            self.backoff(run.attempts, deadline).await;
        }
    }

    /// Nothing known yet: what a cold start (or a restart) plans on.
    fn fresh(&self, k: u8) -> Known {
        Known::new(self.keyspace.clone(), k)
    }

    /// What an operation starts from: the remembered values of a warm node
    /// cache (nothing to read unless the planner asks), a guessed fresh
    /// start chunk for a node's first ADD (nothing to read), or nothing
    /// (read `initial`).
    fn start(&self, k: u8, initial: Vec<Pending>, assume_absent: &[Key]) -> Run {
        // Owner records are remembered for DEL: only those this operation
        // reads are taken (decoding every remembered record on every ADD
        // would cost more than the round trip saved).
        let wanted: Vec<&Key> = initial
            .iter()
            .filter_map(|p| match p {
                Pending::Get(k) => Some(k),
                Pending::Chunks { .. } => None,
            })
            .collect();
        let (positions, remembered, warm) = self.cache_view(&wanted);
        let optimistic =
            self.optimistic_start(k, warm || !positions.is_empty(), &initial, assume_absent);
        let (known, pending) = if warm {
            let mut known = self.fresh(k);
            known.seed(remembered.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
            for key in assume_absent {
                known.assume_absent(key);
            }
            let mut pending = known.unknown(initial.clone());
            // A read for the full-chunk set alone is not worth a round
            // trip: the planner asks for it if a chunk it looks at is full.
            let full_prefix = format!("{}/full/", self.keyspace.root());
            if pending
                .iter()
                .all(|p| matches!(p, Pending::Get(k) if k.starts_with(&full_prefix)))
            {
                pending.clear();
            }
            (known, pending)
        } else if let Some(meta) = &optimistic {
            // A node's first ADD: guess the state of a fresh start chunk
            // instead of reading it (section 6.2 of ARCHITECTURE.md).
            let mut known = self.fresh(k);
            known.seed([(self.keyspace.meta().as_str(), Some(meta.as_slice()))]);
            for key in assume_absent {
                known.assume_absent(key);
            }
            for p in &initial {
                if let Pending::Chunks { family, lo, .. } = p {
                    known.assume_chunk_absent(*family, *lo);
                }
            }
            (known, Vec::new())
        } else {
            (self.fresh(k), initial.clone())
        };
        Run {
            k,
            initial,
            known,
            pending,
            positions,
            optimistic,
            scatter: None,
            attempts: 0,
            transient: 0,
            reads: 0,
            contested: false,
            moved_away: false,
            last: String::from("none"),
        }
    }

    /// Reads what the planner is waiting for (`run.pending`) and absorbs
    /// it. `Ok(false)`: a transient error, the operation starts over from
    /// a fresh read after a back-off.
    async fn read_pending(
        &self,
        run: &mut Run,
        learned: &mut Learned,
        deadline: Instant,
    ) -> Result<bool, AllocError> {
        run.reads += 1;
        if run.reads > MAX_READS {
            return Err(AllocError::Contention {
                attempts: run.attempts,
            });
        }
        let store_reads = run.known.to_reads(&run.pending);
        match self
            .call(self.store.read(&store_reads), deadline, &run.last)
            .await
        {
            Ok(results) => {
                learned.reads(&store_reads, &results);
                run.known.absorb(&run.pending, results);
                run.pending.clear();
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                run.last = e.to_string();
                run.transient += 1;
                self.backoff(run.transient + 1, deadline).await;
                run.restart(self.fresh(run.k));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the planner on what is known. `Ok(None)`: not yet a plan (the
    /// planner needs a read, or a failure planned on remembered values is
    /// checked from a fresh read first).
    fn plan_attempt<T>(
        &self,
        run: &mut Run,
        planner: &impl Fn(&Ctx<'_>, &Known) -> Result<Plan<T>, Stop>,
    ) -> Result<Option<Plan<T>>, AllocError> {
        let mut ctx = self.ctx(&run.positions, run.k);
        if let Some(seed) = run.scatter {
            ctx.seed = seed;
            ctx.window = u128::MAX;
        }
        match planner(&ctx, &run.known) {
            Err(Stop::Need(p)) => {
                run.pending = p;
                Ok(None)
            }
            // Planned on remembered values: check against the store.
            Err(Stop::Fail(_)) if run.known.uses_cache() => {
                run.restart(self.fresh(run.k));
                Ok(None)
            }
            Err(Stop::Fail(e)) => Err(e),
            // Failures planned on remembered values: check them against
            // the store before reporting them.
            Ok(plan) if plan.has_failures && run.known.uses_cache() => {
                run.restart(self.fresh(run.k));
                Ok(None)
            }
            Ok(plan) => Ok(Some(plan)),
        }
    }

    /// Sends the plan's transaction and learns from the answer.
    /// `Ok(Some(..))`: committed; `Ok(None)`: a conflict (its answer
    /// absorbed) or a transient error (the operation starts over from a
    /// fresh read), try again.
    async fn commit_attempt<T>(
        &self,
        run: &mut Run,
        plan: Plan<T>,
        learned: &mut Learned,
        deadline: Instant,
    ) -> Result<Option<(T, Option<i64>)>, AllocError> {
        let ops = plan.txn.ops.clone();
        let meta_guessed = run
            .optimistic
            .as_ref()
            .is_some_and(|m| run.known.meta_compared_as(m));
        match self
            .call(self.store.txn(plan.txn), deadline, &run.last)
            .await
        {
            Ok(TxnOutcome::Committed { revision }) => {
                if let (true, Some(meta)) = (meta_guessed, &run.optimistic) {
                    // The commit compared the guessed meta record: it
                    // is the stored one, and the node cache is warm.
                    learned.remember(self.keyspace.meta(), meta.clone());
                }
                let moved = self.next_positions(run, plan.moved);
                learned.committed(ops, moved);
                Ok(Some((plan.result, Some(revision))))
            }
            Ok(TxnOutcome::Conflict { current }) => {
                self.on_conflict(run, current, learned);
                Ok(None)
            }
            Err(e) if e.is_transient() => {
                // The transaction may or may not have been applied:
                // start over from a fresh read.
                run.last = e.to_string();
                learned.unknown(ops);
                run.restart(self.fresh(run.k));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Where this node's next searches start after a commit: where the
    /// plan says, unless another node was met allocating in the chunk
    /// this one remembered and this operation did not move away already;
    /// then its next search starts elsewhere, so the two stop
    /// invalidating each other's caches (one read there, then warm again).
    fn next_positions(&self, run: &Run, mut moved: Vec<(usize, u128)>) -> Vec<(usize, u128)> {
        if run.contested && !run.moved_away {
            let seed = fastrand::u64(..);
            let mut wide = self.ctx(&run.positions, run.k);
            wide.window = CONTESTED_WINDOW;
            for (set, pos) in &mut moved {
                if let Some(p) = plan::respread_position(&wide, *set, seed) {
                    *pos = p;
                }
            }
        }
        moved
    }

    /// Learns the current values a conflict answer carries and decides
    /// where the next attempt searches.
    fn on_conflict(
        &self,
        run: &mut Run,
        current: Vec<(Key, Option<Versioned>)>,
        learned: &mut Learned,
    ) {
        let met = current
            .iter()
            .any(|(key, value)| run.known.contested(key, value.as_ref()));
        run.contested |= met;
        learned.current(&current);
        for (key, value) in current {
            run.known.absorb_key(&key, value);
        }
        run.last = "compare-and-swap conflict".into();
        if met && !run.moved_away && run.scatter.is_none() {
            // Another node allocates in this node's chunk: move
            // now, before writing there, to a chunk drawn from
            // the whole set (IPv4; CONTESTED_WINDOW of IPv6)
            // and taken as empty, so the other node's cache
            // stays valid and the move costs no read.
            run.moved_away = true;
            self.move_away(run.k, &mut run.positions, &mut run.known);
        } else if run.attempts >= 2 + u32::from(run.moved_away) {
            // Repeated conflicts: others are busy in the same
            // chunk. Start the next search at a random chunk
            // of the whole set (costs a read there, spreads the
            // contenders).
            run.scatter = Some(fastrand::u64(..));
            run.positions.clear();
        }
    }

    /// The meta record's bytes when a cold ADD may start without a read
    /// (the node cache is on but knows nothing yet, not even a search
    /// position, and no requested address needs its chunk read): a node's
    /// first ADD. The first transaction compares the
    /// meta record a network of this k holds, takes the owner and the start
    /// chunks as absent, and a conflict answer brings what differs.
    fn optimistic_start(
        &self,
        k: u8,
        warm: bool,
        initial: &[Pending],
        owners: &[Key],
    ) -> Option<Vec<u8>> {
        let reads_a_chunk = initial.iter().any(|p| match p {
            Pending::Get(key) => [Family::V4, Family::V6]
                .into_iter()
                .any(|f| self.keyspace.parse_chunk(f, k, key).is_some()),
            Pending::Chunks { .. } => false,
        });
        let guess = self.options.guess_first_add && self.options.node_cache;
        if warm || !guess || owners.is_empty() || reads_a_chunk {
            return None;
        }
        Meta::new(k).encode().ok()
    }

    /// Moves every range set's search position to a chunk drawn at random
    /// from the whole set (IPv4) or the first `CONTESTED_WINDOW` chunks
    /// (IPv6), taking each new chunk as absent when nothing is known of it.
    fn move_away(&self, k: u8, positions: &mut BTreeMap<usize, u128>, known: &mut Known) {
        let seed = fastrand::u64(..);
        let current = positions.clone();
        let mut wide = self.ctx(&current, k);
        wide.window = CONTESTED_WINDOW;
        for (i, set) in self.network.sets.iter().enumerate() {
            if let Some(p) = plan::respread_position(&wide, i, seed) {
                positions.insert(i, p);
                known.assume_chunk_absent(set.family(), p >> k);
            }
        }
    }

    /// Hands out one address per range set to `req.owner`. Idempotent: an
    /// owner that already holds addresses gets them back (`existing`).
    pub async fn allocate(&self, req: &AllocRequest) -> Result<Allocation, AllocError> {
        let mut out = self
            .allocate_batch(std::slice::from_ref(req))
            .await
            .map_err(|e| e.error)?;
        out.pop().ok_or(AllocError::Contention { attempts: 0 })
    }

    /// Allocates for many owners, committing up to [`MAX_BATCH`] of them per
    /// transaction; a transaction fails whole (one request that cannot be
    /// served fails its batch; [`allocate_each`](Self::allocate_each)
    /// answers each request on its own). Results are in request order. On
    /// error, the transactions before the failing one stay committed, and
    /// the [`BatchError`] carries their allocations.
    pub async fn allocate_batch(
        &self,
        reqs: &[AllocRequest],
    ) -> Result<Vec<Allocation>, BatchError> {
        let mut out = Vec::with_capacity(reqs.len());
        for batch in reqs.chunks(MAX_BATCH) {
            let outcomes = self
                .drive_committed(
                    |k| self.add_start(batch, k),
                    |ctx, known| plan::plan_add(ctx, known, batch),
                )
                .await;
            match outcomes {
                Ok((outcomes, _)) => out.extend(outcomes.into_iter().map(allocation_of)),
                Err(error) => {
                    return Err(BatchError {
                        committed: out,
                        error,
                    })
                }
            }
        }
        Ok(out)
    }

    /// What an ADD of `batch` at chunk size `k` starts from: the reads of a
    /// cold start, and the keys a warm start takes as absent without
    /// reading them (owner records; sticky bindings, whose transaction
    /// compares them absent, a conflict answer bringing one that exists).
    fn add_start(&self, batch: &[AllocRequest], k: u8) -> (Vec<Pending>, Vec<Key>) {
        let positions = self.search_positions();
        let ctx = self.ctx(&positions, k);
        let initial = plan::initial_reads(&ctx, batch);
        let mut assume_absent: Vec<Key> = batch
            .iter()
            .filter_map(|r| {
                self.keyspace
                    .owner(&r.owner.container_id, &r.owner.ifname)
                    .ok()
            })
            .collect();
        assume_absent.extend(batch.iter().filter_map(|r| plan::sticky_key_of(&ctx, r)));
        (initial, assume_absent)
    }

    /// Allocates for many owners, each on its own: one transaction per
    /// [`MAX_BATCH`] requests, and a request that cannot be served (static
    /// address taken, stage list or pool exhausted, corrupt owner record)
    /// gets its own error without failing the others. An error of the
    /// whole transaction (store unavailable, budget exceeded) is every
    /// request's error. Results are in request order. This is what
    /// [`GroupCommit`](super::group::GroupCommit) commits.
    pub async fn allocate_each(
        &self,
        reqs: &[AllocRequest],
    ) -> Vec<Result<Allocation, AllocError>> {
        self.allocate_each_committed(reqs)
            .await
            .into_iter()
            .map(|r| r.map(|(a, _)| a))
            .collect()
    }

    /// [`allocate_each`](Self::allocate_each), each new allocation with the
    /// revision its owner record was written at (`None` for an owner that
    /// already held addresses): what
    /// [`release_created`](Self::release_created) compares.
    pub(super) async fn allocate_each_committed(
        &self,
        reqs: &[AllocRequest],
    ) -> Vec<Result<(Allocation, Option<i64>), AllocError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for batch in reqs.chunks(MAX_BATCH) {
            match self
                .drive_committed(
                    |k| self.add_start(batch, k),
                    |ctx, known| plan::plan_add_each(ctx, known, batch),
                )
                .await
            {
                Ok((results, revision)) => {
                    out.extend(results.into_iter().map(|r| {
                        r.map(|o| {
                            let new = matches!(o, Outcome::New(..));
                            (allocation_of(o), revision.filter(|_| new))
                        })
                    }));
                }
                Err(e) => out.extend(batch.iter().map(|_| Err(e.clone()))),
            }
        }
        out
    }

    /// Per range set, the address offset this allocator's next dynamic
    /// search starts at (one past its last dynamic allocation): a node walks
    /// its whole range set before it comes back to an address it released.
    /// Part of the [node cache](Self::node_cache).
    pub fn search_positions(&self) -> BTreeMap<usize, u128> {
        self.cache
            .lock()
            .map(|c| c.positions().clone())
            .unwrap_or_default()
    }

    /// Replaces the search positions (e.g. read back from a node-local
    /// file). Positions outside the current ranges are ignored.
    pub fn set_search_positions(&self, positions: BTreeMap<usize, u128>) {
        if let Ok(mut c) = self.cache.lock() {
            c.set_positions(positions);
        }
    }

    /// A copy of what this allocator remembers between operations (values
    /// it last saw, search positions); see [`NodeCache`].
    pub fn node_cache(&self) -> NodeCache {
        self.cache_snapshot()
    }

    /// Replaces what this allocator remembers (e.g. a node-local file read
    /// back with [`NodeCache::decode`]). Any content is safe: remembered
    /// values are only trusted through byte compares.
    pub fn set_node_cache(&self, cache: NodeCache) {
        if let Ok(mut c) = self.cache.lock() {
            *c = cache;
        }
    }

    /// What an operation starts from: the search positions, the remembered
    /// values it may use (everything but owner records, plus the owner
    /// records in `owners`), and whether the cache is warm (knows meta).
    #[allow(clippy::type_complexity)]
    fn cache_view(
        &self,
        owners: &[&Key],
    ) -> (BTreeMap<usize, u128>, Vec<(Key, Option<Vec<u8>>)>, bool) {
        let Ok(c) = self.cache.lock() else {
            return Default::default();
        };
        let positions = c.positions().clone();
        if !self.options.node_cache || c.get(&self.keyspace.meta()).is_none() {
            return (positions, Vec::new(), false);
        }
        let owner_prefix = self.keyspace.owners_prefix();
        let mut values: Vec<(Key, Option<Vec<u8>>)> = c
            .entries()
            .filter(|(k, _)| !k.starts_with(&owner_prefix))
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect();
        for key in owners {
            if let Some(v) = c.get(key) {
                values.push(((*key).clone(), v.map(<[u8]>::to_vec)));
            }
        }
        (positions, values, true)
    }

    fn cache_snapshot(&self) -> NodeCache {
        self.cache.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn apply(&self, learned: Learned, ok: bool) {
        let Ok(mut c) = self.cache.lock() else {
            return;
        };
        learned.apply(&self.keyspace, &mut c, ok);
    }

    /// Releases everything `owner` holds; `None` if it held nothing
    /// (releasing an unknown owner succeeds).
    ///
    /// When the store has no space for writes (etcd's NOSPACE alarm), the
    /// release falls back to deleting the owner record alone (under the
    /// compare of its revision; etcd allows deletions under the alarm), so
    /// the pod can terminate: the addresses' bits stay set, reported by
    /// `check` as bits without owner (reclaimable) and cleared by
    /// `repair`.
    pub async fn release(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        let full = self
            .drive(vec![Pending::Get(key.clone())], &[], |ctx, known| {
                plan::plan_release(ctx, known, &key, None)
            })
            .await;
        match full {
            Err(e) if e.is_no_space() => {
                self.drive(vec![Pending::Get(key.clone())], &[], |ctx, known| {
                    plan::plan_release_record_only(ctx, known, &key)
                })
                .await
            }
            other => other,
        }
    }

    /// Releases `expected`'s owner only while its stored record is still
    /// exactly `expected` (same addresses, creation time, node): a record
    /// released and created again meanwhile, e.g. by a new ADD of the same
    /// container ID, is left alone (`None`). For releases decided on a
    /// listing read earlier (GC, reconcile, `release --node`).
    pub async fn release_record(
        &self,
        expected: &OwnerRecord,
    ) -> Result<Option<OwnerRecord>, AllocError> {
        let key = self
            .keyspace
            .owner(&expected.container_id, &expected.ifname)?;
        self.drive(vec![Pending::Get(key.clone())], &[], |ctx, known| {
            plan::plan_release(ctx, known, &key, Some(expected))
        })
        .await
    }

    /// Releases many owners, each on its own: their releases are committed
    /// together (one transaction per [`MAX_BATCH`] owners when they fit in
    /// [`MAX_TXN_OPS`](super::MAX_TXN_OPS) compares and operations, more
    /// otherwise), and an owner that cannot be released (corrupt record or
    /// chunk, bad container ID) gets its own error without failing the
    /// others. An error of a whole transaction (store unavailable, budget
    /// exceeded) is the error of every owner in it. Results are in request
    /// order: the released record, `None` for an owner that held nothing.
    /// This is what [`GroupCommit`](super::group::GroupCommit) commits for
    /// DELs.
    ///
    /// ```
    /// use host_etcd::allocator::{AllocRequest, Allocator, Network, Options, OwnerId};
    /// use host_etcd::{MemoryStore, RangeSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let net = Network::new("example", vec![RangeSet::from_cidr("10.1.0.0/24")?])?;
    /// let alloc = Allocator::new(MemoryStore::new(), net, Options::default())?;
    /// let owner = |id: &str| OwnerId { container_id: id.into(), ifname: "eth0".into() };
    /// alloc.allocate(&AllocRequest::new(owner("a"))).await?;
    /// let out = alloc.release_each(&[owner("a"), owner("never-added")]).await;
    /// assert!(out[0].as_ref().is_ok_and(|r| r.is_some()));
    /// assert!(out[1].as_ref().is_ok_and(|r| r.is_none()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release_each(
        &self,
        owners: &[OwnerId],
    ) -> Vec<Result<Option<OwnerRecord>, AllocError>> {
        let mut out: Vec<Option<Result<Option<OwnerRecord>, AllocError>>> =
            owners.iter().map(|_| None).collect();
        // Owners whose key cannot be made fail alone, before any I/O.
        let mut todo: Vec<(usize, Key)> = Vec::new();
        for (i, o) in owners.iter().enumerate() {
            match self.keyspace.owner(&o.container_id, &o.ifname) {
                Ok(key) => todo.push((i, key)),
                Err(e) => out[i] = Some(Err(e.into())),
            }
        }
        while !todo.is_empty() {
            let n = todo.len().min(MAX_BATCH);
            let batch: Vec<(usize, Key)> = todo.drain(..n).collect();
            let keys: Vec<Key> = batch.iter().map(|(_, k)| k.clone()).collect();
            let initial: Vec<Pending> = keys.iter().cloned().map(Pending::Get).collect();
            match self
                .drive(initial, &[], |ctx, known| {
                    plan::plan_release_each(ctx, known, &keys)
                })
                .await
            {
                Ok(slots) => {
                    // Owners left out of a full transaction go first in
                    // the next one.
                    let mut left = Vec::new();
                    for ((i, key), slot) in batch.into_iter().zip(slots) {
                        match slot {
                            Some(r) => out[i] = Some(r),
                            None => left.push((i, key)),
                        }
                    }
                    left.append(&mut todo);
                    todo = left;
                }
                Err(e) => {
                    for (i, _) in batch {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(AllocError::Contention { attempts: 0 })))
            .collect()
    }

    /// Releases `owner` only if its record is still the one written at
    /// `revision` (the revision of the transaction that created it): the
    /// compare-and-swap is on that mod revision, so a
    /// record written since — the owner allocated again, or its record
    /// rewritten — is left alone. `None` when nothing was released.
    pub async fn release_created(
        &self,
        owner: &OwnerId,
        revision: i64,
    ) -> Result<Option<OwnerRecord>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        self.drive(vec![Pending::Get(key.clone())], &[], |ctx, known| {
            plan::plan_release_created(ctx, known, &key, revision)
        })
        .await
    }

    /// Writes `owner`'s record again, unchanged, by a compare-and-swap on
    /// the revision read: a [`release_created`](Self::release_created) of
    /// an earlier revision no longer applies to it. For a caller that got
    /// back an owner's existing addresses while someone that may have
    /// created them could still undo that (a node agent that gave up on
    /// the same request). The record confirmed, `None` when there is none
    /// (it was released meanwhile).
    pub async fn confirm_owner(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        self.drive(vec![Pending::Get(key.clone())], &[], |_, known| {
            plan::plan_confirm_owner(known, &key)
        })
        .await
    }

    /// Releases whoever holds `ip`; `None` if nobody does.
    pub async fn release_ip(&self, ip: IpAddr) -> Result<Option<OwnerRecord>, AllocError> {
        match self.holder_of(ip).await? {
            Some(rec) => {
                self.release(&OwnerId {
                    container_id: rec.container_id,
                    ifname: rec.ifname,
                })
                .await
            }
            None => Ok(None),
        }
    }

    /// The owner record holding `ip`, if any: scans the owner records,
    /// stopping at the page that holds it. A record that does not decode
    /// is an error only when no other record holds `ip` (it may be the
    /// holder's).
    pub async fn holder_of(&self, ip: IpAddr) -> Result<Option<OwnerRecord>, AllocError> {
        let prefix = self.keyspace.owners_prefix();
        let mut undecodable = None;
        let found = self
            .scan_until(prefix.clone(), prefix_end(&prefix), 1000, |(key, v)| {
                match decode_owner(&key, &v) {
                    Ok(rec) if rec.ips.contains(&ip) => return ControlFlow::Break(rec),
                    Ok(_) => {}
                    Err(e) => {
                        undecodable.get_or_insert(e);
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
        match (found, undecodable) {
            (Some(rec), _) => Ok(Some(rec)),
            // The holder's own record may be the one that does not decode.
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// The owner record of `owner` (if any) and those of its addresses whose
    /// chunk does not mark them taken, both from one consistent read (CNI
    /// CHECK: "the recorded addresses are still held").
    pub async fn verify(
        &self,
        owner: &OwnerId,
    ) -> Result<Option<(OwnerRecord, Vec<IpAddr>)>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        let mut k = self.chunk_bits();
        let deadline = Instant::now() + self.options.budget;
        let mut chunk_keys: Vec<Key> = Vec::new();
        let meta_key = self.keyspace.meta();
        // The owner may change between reads (DEL, re-ADD): read until the
        // chunks read are those of the record read with them (and at the
        // chunk size the network's meta record names).
        for _ in 0..4 {
            let mut reads = vec![Read::Get(key.clone()), Read::Get(meta_key.clone())];
            reads.extend(chunk_keys.iter().cloned().map(Read::Get));
            let res = self.call(self.store.read(&reads), deadline, "none").await?;
            let mut it = res.into_iter();
            let rec = match it.next() {
                Some(ReadResult::Get(Some(v))) => decode_owner(&key, &v)?,
                _ => return Ok(None),
            };
            // A meta record that does not decode does not stop CHECK (as it
            // does not stop DEL): the chunks name their own k.
            let meta = match it.next() {
                Some(ReadResult::Get(Some(v))) => Meta::decode(&v.value).ok(),
                _ => None,
            };
            if let Some(meta) = meta {
                if meta.chunk_bits != k {
                    if !self.adopt_chunk_bits(meta.chunk_bits) {
                        return Err(AllocError::MetaMismatch {
                            key: meta_key,
                            stored: meta.chunk_bits,
                            configured: k,
                        });
                    }
                    k = meta.chunk_bits;
                    chunk_keys.clear();
                    continue;
                }
            }
            let want: Vec<Key> = rec
                .ips
                .iter()
                .map(|ip| {
                    self.keyspace.chunk(
                        crate::range::Family::of(*ip),
                        k,
                        super::geometry::chunk_of(*ip, k),
                    )
                })
                .collect();
            if want.iter().any(|w| !chunk_keys.contains(w)) {
                chunk_keys = want;
                continue;
            }
            let mut chunks = std::collections::HashMap::new();
            for (ck, r) in chunk_keys.iter().zip(it) {
                if let ReadResult::Get(v) = r {
                    chunks.insert(ck.clone(), v);
                }
            }
            let mut missing = Vec::new();
            for (ip, ck) in rec.ips.iter().zip(&want) {
                let taken = match chunks.get(ck) {
                    Some(Some(v)) => super::state::decode_chunk(&v.value, k)
                        .map_err(|e| AllocError::CorruptChunk {
                            key: ck.clone(),
                            source: e,
                        })?
                        .bits
                        .get(super::geometry::bit_of(*ip, k)),
                    _ => false,
                };
                if !taken {
                    missing.push(*ip);
                }
            }
            return Ok(Some((rec, missing)));
        }
        Err(AllocError::Contention { attempts: 4 })
    }

    /// The owner record of `owner`, if any.
    pub async fn owner(&self, owner: &OwnerId) -> Result<Option<OwnerRecord>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        let deadline = Instant::now() + self.options.budget;
        let res = self
            .call(self.store.read(&[Read::Get(key.clone())]), deadline, "none")
            .await?;
        match res.into_iter().next() {
            Some(ReadResult::Get(Some(v))) => decode_owner(&key, &v).map(Some),
            _ => Ok(None),
        }
    }

    /// Every owner record of container `container_id` (each interface): one
    /// range read of its own keys.
    pub async fn container_records(
        &self,
        container_id: &str,
    ) -> Result<Vec<OwnerRecord>, AllocError> {
        let key = self.keyspace.owner(container_id, "x")?;
        let prefix = key.trim_end_matches('x');
        self.scan(prefix, 1000)
            .await?
            .iter()
            .map(|(k, v)| decode_owner(k, v))
            .collect()
    }

    /// Every owner record of the network; a record that does not decode is
    /// an error naming its key.
    pub async fn owners(&self) -> Result<Vec<OwnerRecord>, AllocError> {
        self.scan(&self.keyspace.owners_prefix(), 1000)
            .await?
            .iter()
            .map(|(k, v)| decode_owner(k, v))
            .collect()
    }

    /// Releases every owner of the whole network that is not in `valid`, on
    /// every node (an operator's cluster-wide collection: `ipamctl gc
    /// --valid`; the CNI `GC` verb uses the node-scoped
    /// [`gc_node`](Self::gc_node)). Scans every owner record; each listed
    /// record is released only while it is still the one listed; every
    /// owner is tried, and the first failure (a record that does not decode
    /// included) is returned after the others were released.
    pub async fn gc_cluster(&self, valid: &[OwnerId]) -> Result<Vec<OwnerRecord>, AllocError> {
        let mut records = Vec::new();
        let mut first_err = None;
        for (key, v) in self.scan(&self.keyspace.owners_prefix(), 1000).await? {
            match decode_owner(&key, &v) {
                Ok(r) => records.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let stale: Vec<OwnerRecord> = not_in(valid, records).collect();
        self.release_listed(&stale, first_err).await
    }

    /// One cheap call, to tell whether the store answers and accepts
    /// writes (CNI STATUS): a transaction that would put
    /// [`Keyspace::write_probe`](super::Keyspace::write_probe) under a
    /// compare that never holds (a `mod_revision` of 0), so nothing is
    /// ever written, while the store still checks it as a write: etcd
    /// refuses it under its NOSPACE alarm ([`StoreError::NoSpace`]) and for
    /// a user who may only read ([`StoreError::Refused`]). One round trip,
    /// as a read.
    pub async fn ping(&self) -> Result<(), AllocError> {
        let deadline = Instant::now() + self.options.budget;
        let key = self.keyspace.write_probe();
        let probe = Txn {
            compares: vec![Compare {
                key: key.clone(),
                expect: Expect::ModRevision(0),
            }],
            ops: vec![Op::Put(key, Vec::new())],
            read_on_conflict: Vec::new(),
        };
        match self.call(self.store.txn(probe), deadline, "none").await? {
            TxnOutcome::Conflict { .. } => Ok(()),
            // Impossible by the store contract (no key has revision 0);
            // nothing but an unused key was written.
            TxnOutcome::Committed { .. } => Ok(()),
        }
    }
}

/// The caller's view of one planned ADD.
fn allocation_of(o: Outcome) -> Allocation {
    match o {
        Outcome::Existing(_, assigned) => Allocation {
            assigned,
            existing: true,
        },
        Outcome::New(_, assigned) => Allocation {
            assigned,
            existing: false,
        },
    }
}

/// What one operation learned about the store, applied to the allocator's
/// node cache when it ends (in order).
#[derive(Default)]
struct Learned {
    steps: Vec<Step>,
    moved: Vec<(usize, u128)>,
}

enum Step {
    Remember(Key, Option<Vec<u8>>),
    Forget(Key),
}

impl Learned {
    fn reads(&mut self, reads: &[Read], results: &[ReadResult]) {
        for (read, result) in reads.iter().zip(results) {
            match (read, result) {
                (Read::Get(key), ReadResult::Get(v)) => self.steps.push(Step::Remember(
                    key.clone(),
                    v.as_ref().map(|v| v.value.clone()),
                )),
                (Read::Range { .. }, ReadResult::Range { kvs, .. }) => {
                    for (key, v) in kvs {
                        self.steps
                            .push(Step::Remember(key.clone(), Some(v.value.clone())));
                    }
                }
                _ => {}
            }
        }
    }

    fn current(&mut self, current: &[(Key, Option<Versioned>)]) {
        for (key, v) in current {
            self.steps.push(Step::Remember(
                key.clone(),
                v.as_ref().map(|v| v.value.clone()),
            ));
        }
    }

    /// A value a committed transaction compared (so the store held it).
    fn remember(&mut self, key: Key, value: Vec<u8>) {
        self.steps.push(Step::Remember(key, Some(value)));
    }

    fn committed(&mut self, ops: Vec<Op>, moved: Vec<(usize, u128)>) {
        for op in ops {
            self.steps.push(match op {
                Op::Put(key, value) => Step::Remember(key, Some(value)),
                Op::Delete(key) => Step::Remember(key, None),
            });
        }
        self.moved = moved;
    }

    fn unknown(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Put(key, _) | Op::Delete(key) => self.steps.push(Step::Forget(key)),
            }
        }
    }

    fn apply(self, ks: &super::Keyspace, cache: &mut NodeCache, ok: bool) {
        for step in self.steps {
            match step {
                Step::Remember(key, value) => cache.remember(ks, &key, value.as_deref()),
                Step::Forget(key) => cache.forget(&key),
            }
        }
        if ok {
            for (set, pos) in self.moved {
                cache.set_position(set, pos);
            }
        }
    }
}
