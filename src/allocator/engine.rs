//! The driver: runs the pure planner against a [`Store`], feeding it reads
//! and conflict answers, inside the one bounded retry loop of the crate.
//!
//! Cold ADD: one read (owner, meta, full-chunk set, starting chunks), one
//! transaction; warm ADD or DEL (a [`NodeCache`] that knows the keys): one
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
use std::time::{Duration, Instant};

use super::cache::NodeCache;
use super::plan::{self, Ctx, Outcome, Plan, Stop, START_WINDOW};
use super::state::{Known, Pending};
use super::{AllocError, AllocRequest, Allocation, Allocator, OwnerId, OwnerRecord, MAX_BATCH};
use crate::store::{
    prefix_end, Compare, Expect, Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome,
    Versioned,
};

/// Where a node that found another node allocating in its chunk moves to: a
/// chunk of the first `CONTESTED_WINDOW` of its range set (16 start windows:
/// a crowded start window spills over instead of staying crowded; see
/// BENCHMARKS.md, "Start window").
const CONTESTED_WINDOW: u128 = 16 * START_WINDOW;

/// Upper bound on reads within one operation (a safety net: planning needs
/// O(chunks scanned / read_limit) reads at most).
const MAX_READS: u32 = 100_000;

impl<S: Store> Allocator<S> {
    fn ctx<'a>(&'a self, positions: &'a BTreeMap<usize, u128>) -> Ctx<'a> {
        Ctx {
            positions,
            net: &self.network,
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
        let mut learned = Learned::default();
        let out = self
            .drive_attempts(initial, assume_absent, &planner, &mut learned)
            .await;
        self.apply(learned, out.is_ok());
        out
    }

    async fn drive_attempts<T>(
        &self,
        initial: Vec<Pending>,
        assume_absent: &[Key],
        planner: &impl Fn(&Ctx<'_>, &Known) -> Result<Plan<T>, Stop>,
        learned: &mut Learned,
    ) -> Result<T, AllocError> {
        let deadline = Instant::now() + self.options.budget;
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
        let no_positions = BTreeMap::new();
        let mut ctx = self.ctx(&positions);
        let fresh = || Known::new(self.keyspace.clone(), self.network.chunk_bits);
        let (mut known, mut pending) = if warm {
            let mut known = fresh();
            known.seed(remembered.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
            for key in assume_absent {
                known.assume_absent(key);
            }
            let pending = known.unknown(initial.clone());
            (known, pending)
        } else {
            (fresh(), initial.clone())
        };
        let mut attempts = 0u32;
        let mut transient = 0u32;
        let mut reads = 0u32;
        let mut contested = false;
        let mut last = String::from("none");
        loop {
            if Instant::now() >= deadline {
                return Err(self.budget_exceeded(&last));
            }
            if !pending.is_empty() {
                reads += 1;
                if reads > MAX_READS {
                    return Err(AllocError::Contention { attempts });
                }
                let store_reads = known.to_reads(&pending);
                match self
                    .call(self.store.read(&store_reads), deadline, &last)
                    .await
                {
                    Ok(results) => {
                        learned.reads(&store_reads, &results);
                        known.absorb(&pending, results);
                    }
                    Err(e) if e.is_transient() => {
                        last = e.to_string();
                        transient += 1;
                        self.backoff(transient + 1, deadline).await;
                        known = fresh();
                        pending = initial.clone();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                pending.clear();
            }
            let plan = match planner(&ctx, &known) {
                Ok(plan) => plan,
                Err(Stop::Need(p)) => {
                    pending = p;
                    continue;
                }
                // Planned on remembered values: check against the store.
                Err(Stop::Fail(_)) if known.uses_cache() => {
                    known = fresh();
                    pending = initial.clone();
                    continue;
                }
                Err(Stop::Fail(e)) => return Err(e),
            };
            // Failures planned on remembered values: check them against
            // the store before reporting them.
            if plan.has_failures && known.uses_cache() {
                known = fresh();
                pending = initial.clone();
                continue;
            }
            if plan.txn.ops.is_empty() {
                return Ok(plan.result);
            }
            attempts += 1;
            let ops = plan.txn.ops.clone();
            match self.call(self.store.txn(plan.txn), deadline, &last).await {
                Ok(TxnOutcome::Committed { .. }) => {
                    let mut moved = plan.moved;
                    if contested {
                        // Another node allocates in the chunk this one
                        // remembered: its next search starts elsewhere in
                        // the window, so the two stop invalidating each
                        // other's caches (one read there, then warm again).
                        let seed = fastrand::u64(..);
                        let mut wide = self.ctx(&positions);
                        wide.window = CONTESTED_WINDOW;
                        for (set, pos) in &mut moved {
                            if let Some(p) = plan::respread_position(&wide, *set, seed) {
                                *pos = p;
                            }
                        }
                    }
                    learned.committed(ops, moved);
                    return Ok(plan.result);
                }
                Ok(TxnOutcome::Conflict { current }) => {
                    contested |= current
                        .iter()
                        .any(|(key, value)| known.contested(key, value.as_ref()));
                    learned.current(&current);
                    for (key, value) in current {
                        known.absorb_key(&key, value);
                    }
                    last = "compare-and-swap conflict".into();
                    if attempts >= 2 {
                        // Repeated conflicts: others are busy in the same
                        // chunk. Start the next search at a random chunk
                        // of the whole set (costs a read there, spreads the
                        // contenders).
                        ctx.seed = fastrand::u64(..);
                        ctx.positions = &no_positions;
                        ctx.window = u128::MAX;
                    }
                }
                Err(e) if e.is_transient() => {
                    // The transaction may or may not have been applied:
                    // start over from a fresh read.
                    last = e.to_string();
                    learned.unknown(ops);
                    known = fresh();
                    pending = initial.clone();
                }
                Err(e) => return Err(e),
            }
            if attempts >= self.options.max_attempts {
                return Err(AllocError::Contention { attempts });
            }
            self.backoff(attempts, deadline).await;
        }
    }

    /// Hands out one address per range set to `req.owner`. Idempotent: an
    /// owner that already holds addresses gets them back (`existing`).
    pub async fn allocate(&self, req: &AllocRequest) -> Result<Allocation, AllocError> {
        let mut out = self.allocate_batch(std::slice::from_ref(req)).await?;
        out.pop().ok_or(AllocError::Contention { attempts: 0 })
    }

    /// Allocates for many owners, committing up to [`MAX_BATCH`] of them per
    /// transaction. Results are in request order. On error, the batches
    /// before the failing one stay committed.
    pub async fn allocate_batch(
        &self,
        reqs: &[AllocRequest],
    ) -> Result<Vec<Allocation>, AllocError> {
        let mut out = Vec::with_capacity(reqs.len());
        for batch in reqs.chunks(MAX_BATCH) {
            let (initial, assume_absent) = self.add_start(batch);
            let outcomes = self
                .drive(initial, &assume_absent, |ctx, known| {
                    plan::plan_add(ctx, known, batch)
                })
                .await?;
            out.extend(outcomes.into_iter().map(allocation_of));
        }
        Ok(out)
    }

    /// What an ADD of `batch` starts from: the reads of a cold start, and
    /// the keys a warm start takes as absent without reading them (owner
    /// records; sticky bindings, whose transaction compares them absent, a
    /// conflict answer bringing one that exists).
    fn add_start(&self, batch: &[AllocRequest]) -> (Vec<Pending>, Vec<Key>) {
        let positions = self.search_positions();
        let ctx = self.ctx(&positions);
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
        let mut out = Vec::with_capacity(reqs.len());
        for batch in reqs.chunks(MAX_BATCH) {
            let (initial, assume_absent) = self.add_start(batch);
            match self
                .drive(initial, &assume_absent, |ctx, known| {
                    plan::plan_add_each(ctx, known, batch)
                })
                .await
            {
                Ok(results) => {
                    out.extend(results.into_iter().map(|r| r.map(allocation_of)));
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
                plan::plan_release(ctx, known, &key)
            })
            .await;
        match full {
            Err(e) if e.is_no_space() => {
                self.drive(vec![Pending::Get(key.clone())], &[], |_, known| {
                    plan::plan_release_record_only(known, &key)
                })
                .await
            }
            other => other,
        }
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

    /// The owner record holding `ip`, if any (scans the owner records).
    pub async fn holder_of(&self, ip: IpAddr) -> Result<Option<OwnerRecord>, AllocError> {
        Ok(self
            .owners()
            .await?
            .into_iter()
            .find(|r| r.ips.contains(&ip)))
    }

    /// The owner record of `owner` (if any) and those of its addresses whose
    /// chunk does not mark them taken, both from one consistent read (CNI
    /// CHECK: "the recorded addresses are still held").
    pub async fn verify(
        &self,
        owner: &OwnerId,
    ) -> Result<Option<(OwnerRecord, Vec<IpAddr>)>, AllocError> {
        let key = self.keyspace.owner(&owner.container_id, &owner.ifname)?;
        let k = self.network.chunk_bits;
        let deadline = Instant::now() + self.options.budget;
        let mut chunk_keys: Vec<Key> = Vec::new();
        // The owner may change between reads (DEL, re-ADD): read until the
        // chunks read are those of the record read with them.
        for _ in 0..4 {
            let mut reads = vec![Read::Get(key.clone())];
            reads.extend(chunk_keys.iter().cloned().map(Read::Get));
            let res = self.call(self.store.read(&reads), deadline, "none").await?;
            let mut it = res.into_iter();
            let rec = match it.next() {
                Some(ReadResult::Get(Some(v))) => decode_owner(&key, &v)?,
                _ => return Ok(None),
            };
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

    /// Every stored key and value under `prefix`, in pages of `page`.
    pub(crate) async fn scan(
        &self,
        prefix: &str,
        page: usize,
    ) -> Result<Vec<(Key, Versioned)>, AllocError> {
        self.scan_range(prefix.to_string(), prefix_end(prefix), page)
            .await
    }

    /// Every stored key and value in `[start, end)`, in pages of `page`.
    pub(crate) async fn scan_range(
        &self,
        mut start: Key,
        end: Key,
        page: usize,
    ) -> Result<Vec<(Key, Versioned)>, AllocError> {
        let deadline = Instant::now() + self.options.budget;
        let mut out = Vec::new();
        loop {
            let res = self
                .call(
                    self.store.read(&[Read::Range {
                        start: start.clone(),
                        end: end.clone(),
                        limit: page,
                    }]),
                    deadline,
                    "none",
                )
                .await?;
            let Some(ReadResult::Range { kvs, more }) = res.into_iter().next() else {
                return Ok(out);
            };
            if let Some((last, _)) = kvs.last() {
                start = format!("{last}\0");
            }
            let empty = kvs.is_empty();
            out.extend(kvs);
            if !more || empty {
                return Ok(out);
            }
        }
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

    /// Releases every owner not in `valid` (CNI GC). Owners are released one
    /// by one; every owner is tried, and the first failure is returned after
    /// the others were released.
    pub async fn gc(&self, valid: &[OwnerId]) -> Result<Vec<OwnerRecord>, AllocError> {
        let valid: std::collections::HashSet<&OwnerId> = valid.iter().collect();
        let mut released = Vec::new();
        let mut first_err = None;
        for (key, v) in self.scan(&self.keyspace.owners_prefix(), 1000).await? {
            let rec = match decode_owner(&key, &v) {
                Ok(r) => r,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            let id = OwnerId {
                container_id: rec.container_id.clone(),
                ifname: rec.ifname.clone(),
            };
            if valid.contains(&id) {
                continue;
            }
            match self.release(&id).await {
                Ok(Some(r)) => released.push(r),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(released),
        }
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

/// Decodes an owner record, naming the key when it is corrupt.
pub(crate) fn decode_owner(key: &str, v: &Versioned) -> Result<OwnerRecord, AllocError> {
    serde_json::from_slice(&v.value).map_err(|e| AllocError::CorruptOwner {
        key: key.to_string(),
        detail: e.to_string(),
    })
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
