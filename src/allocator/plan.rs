//! The pure planner: from what is [`Known`], decide which addresses to hand
//! out or free and build the one compare-and-swap [`Txn`] that commits it —
//! or say which reads are missing first ([`Stop::Need`]).
//!
//! Planning never mutates [`Known`]; it works on a `Draft` overlay that is
//! thrown away when a read is missing or the transaction conflicts, and the
//! driver simply plans again with what it learned. That keeps the retry loop
//! in one place (`engine`) and this module free of I/O.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use roaring::RoaringTreemap;

use super::error::AllocError;
use super::geometry::{self, Candidates};
use super::keys::Keyspace;
use super::meta::Meta;
use super::state::{FullLookup, Known, Lookup, Pending};
use super::{fullset, AllocRequest, Assigned, Binding, Network, OwnerRecord};
use crate::bitmap::Bitmap;
use crate::codec::{self, Chunk};
use crate::range::{from_u128, Family, RangeSet};
use crate::store::{Compare, Expect, Key, Op, Txn};

/// Why planning stopped without a plan.
#[derive(Debug)]
pub enum Stop {
    /// These reads are needed first; plan again after them.
    Need(Vec<Pending>),
    /// A definite error.
    Fail(AllocError),
}

impl From<AllocError> for Stop {
    fn from(e: AllocError) -> Self {
        Stop::Fail(e)
    }
}

/// Inputs of planning that do not change during an operation.
pub struct Ctx<'a> {
    /// The network.
    pub net: &'a Network,
    /// Its keys.
    pub ks: &'a Keyspace,
    /// Per-node spreading seed.
    pub seed: u64,
    /// Present chunks per range read.
    pub read_limit: usize,
    /// Seconds since the epoch, for new owner records.
    pub now: u64,
    /// This node's name for new owner records (empty: none).
    pub node: &'a str,
    /// Per set: the address offset this node's next search starts at (one
    /// past its last dynamic allocation).
    pub hints: &'a BTreeMap<usize, u128>,
    /// A node without a position starts in one of the first `window`
    /// chunks of a set (see [`START_WINDOW`]).
    pub window: u128,
    /// Sticky addresses: seconds a DEL binds a pod's addresses to its name
    /// (`None`: off; nothing sticky is read or written).
    pub sticky_ttl: Option<u64>,
}

/// How many chunks at the start of a range set a node's first search may
/// start in: nodes spread over this many chunks (fewer conflicts between
/// nodes) while addresses stay short (an IPv6 /64 hands out `…::2`…`…::ffff`
/// at k = 8). The collision rates behind the choice are in BENCHMARKS.md
/// ("Start window").
pub const START_WINDOW: u128 = 256;

impl Ctx<'_> {
    fn k(&self) -> u8 {
        self.net.chunk_bits
    }
}

/// What happened to one request of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The owner already held addresses (idempotent ADD).
    Existing(OwnerRecord, Vec<Assigned>),
    /// New addresses, committed by the plan's transaction.
    New(OwnerRecord, Vec<Assigned>),
}

/// A finished plan.
#[derive(Debug)]
pub struct Plan<T> {
    /// Per-request (or per-operation) result, valid once `txn` commits.
    pub result: T,
    /// The transaction; no ops means nothing to write.
    pub txn: Txn,
    /// Per range set, where this node's next search starts once `txn`
    /// commits (only sets that got a dynamic address; last one wins).
    pub moved: Vec<(usize, u128)>,
    /// Some requests of `result` failed (see [`plan_add_each`]): the driver
    /// re-checks such failures from a fresh read when they were planned on
    /// remembered values.
    pub has_failures: bool,
}

impl<T> Plan<T> {
    fn new(result: T, txn: Txn) -> Self {
        Plan {
            result,
            txn,
            moved: Vec::new(),
            has_failures: false,
        }
    }
}

struct DraftChunk {
    /// What the commit compares (the state the draft started from).
    orig: Expect,
    chunk: Chunk,
    /// Whether the stored chunk was full (for ordinary pods) before.
    was_full: bool,
}

struct DraftFull {
    orig: Expect,
    set: RoaringTreemap,
    dirty: bool,
}

/// Modified copies of chunks and full-sets on top of [`Known`].
struct Draft<'a> {
    known: &'a Known,
    net: &'a Network,
    k: u8,
    chunks: BTreeMap<(Family, u128), DraftChunk>,
    full: BTreeMap<Key, DraftFull>,
}

impl<'a> Draft<'a> {
    fn new(known: &'a Known, net: &'a Network, k: u8) -> Self {
        Draft {
            known,
            net,
            k,
            chunks: BTreeMap::new(),
            full: BTreeMap::new(),
        }
    }

    fn view(&self, family: Family, idx: u128) -> Lookup<'_> {
        match self.chunks.get(&(family, idx)) {
            Some(d) => Lookup::Present(&d.chunk),
            None => self.known.chunk(family, idx),
        }
    }

    fn chunk_mut(&mut self, family: Family, idx: u128) -> Result<&mut Chunk, Stop> {
        if !self.chunks.contains_key(&(family, idx)) {
            let d = match self.known.chunk(family, idx) {
                Lookup::Unknown => {
                    let ks = self.known.keyspace();
                    return Err(Stop::Need(vec![
                        Pending::Get(ks.chunk(family, self.k, idx)),
                        Pending::Get(ks.full(family, idx)),
                    ]));
                }
                Lookup::Absent => DraftChunk {
                    orig: Expect::Absent,
                    chunk: Chunk {
                        bits: Bitmap::new(1usize << self.k),
                        cursor: 0,
                    },
                    was_full: false,
                },
                Lookup::Present(c) => DraftChunk {
                    orig: self.known.chunk_expect(family, idx),
                    chunk: c.clone(),
                    was_full: is_full(self.net, family, self.k, idx, c),
                },
                Lookup::Corrupt(e) => {
                    return Err(Stop::Fail(AllocError::CorruptChunk {
                        key: self.known.keyspace().chunk(family, self.k, idx),
                        source: e.clone(),
                    }))
                }
            };
            self.chunks.insert((family, idx), d);
        }
        match self.chunks.get_mut(&(family, idx)) {
            Some(d) => Ok(&mut d.chunk),
            None => Err(Stop::Fail(AllocError::Exhausted {
                set: 0,
                ranges: "internal: draft chunk vanished".into(),
            })),
        }
    }

    fn full_mut(&mut self, key: &Key) -> Result<&mut DraftFull, Stop> {
        if !self.full.contains_key(key) {
            let d = match self.known.full(key) {
                FullLookup::Unknown => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
                FullLookup::Absent => DraftFull {
                    orig: Expect::Absent,
                    set: RoaringTreemap::new(),
                    dirty: false,
                },
                FullLookup::Present(set) => DraftFull {
                    orig: self.known.full_expect(key),
                    set: set.clone(),
                    dirty: false,
                },
                FullLookup::Corrupt(detail) => {
                    return Err(Stop::Fail(AllocError::CorruptFullSet {
                        key: key.clone(),
                        detail: detail.to_string(),
                    }))
                }
            };
            self.full.insert(key.clone(), d);
        }
        match self.full.get_mut(key) {
            Some(d) => Ok(d),
            None => Err(Stop::Need(vec![Pending::Get(key.clone())])),
        }
    }

    /// If the full-set hint lists chunk `idx`: how many consecutive chunks
    /// from `idx` (up to `run_end` and the end of its region) it lists.
    fn full_run(
        &mut self,
        ks: &Keyspace,
        family: Family,
        idx: u128,
        run_end: u128,
    ) -> Result<Option<u128>, Stop> {
        let key = ks.full(family, idx);
        if !self.full.contains_key(&key) && matches!(self.known.full(&key), FullLookup::Corrupt(_))
        {
            // Only a hint: a corrupt full-set means "no hint" when reading;
            // it is an error only where a transaction must change it.
            return Ok(None);
        }
        let d = self.full_mut(&key)?;
        let lo = idx as u64;
        let hi = run_end.min(idx | u128::from(u64::MAX)) as u64;
        if !d.set.contains(lo) {
            return Ok(None);
        }
        Ok(Some(match fullset::first_absent(&d.set, lo, hi) {
            Some(x) => u128::from(x - lo),
            None => u128::from(hi - lo) + 1,
        }))
    }

    /// Adds compares, puts and conflict reads for every modified chunk and
    /// the full-set changes they imply.
    fn finish(mut self, ctx: &Ctx<'_>, txn: &mut Txn) -> Result<(), Stop> {
        let k = ctx.k();
        let chunks = std::mem::take(&mut self.chunks);
        // Full-set changes: only where the chunk was full before this
        // transaction or is full after it (a chunk neither full before nor
        // after cannot be listed, apart from a stale hint, which is harmless).
        let changes: Vec<((Family, u128), bool)> = chunks
            .iter()
            .filter_map(|(key, d)| {
                let full_now = is_full(ctx.net, key.0, k, key.1, &d.chunk);
                (full_now || d.was_full).then_some((*key, full_now))
            })
            .collect();
        // Make sure every full-set needed is known, in one batch of reads.
        let missing: Vec<Pending> = changes
            .iter()
            .map(|((f, idx), _)| ctx.ks.full(*f, *idx))
            .filter(|key| !self.full.contains_key(key) && !self.known.full_known(key))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(Pending::Get)
            .collect();
        if !missing.is_empty() {
            return Err(Stop::Need(missing));
        }
        for ((family, idx), d) in &chunks {
            let key = ctx.ks.chunk(*family, k, *idx);
            txn.compares.push(Compare {
                key: key.clone(),
                expect: d.orig.clone(),
            });
            txn.ops.push(Op::Put(key.clone(), codec::encode(&d.chunk)));
            txn.read_on_conflict.push(key);
        }
        for ((family, idx), full_now) in changes {
            let fkey = ctx.ks.full(family, idx);
            let f = self.full_mut(&fkey)?;
            let listed = f.set.contains(idx as u64);
            if full_now && !listed {
                f.set.insert(idx as u64);
                f.dirty = true;
            } else if !full_now && listed {
                f.set.remove(idx as u64);
                f.dirty = true;
            }
        }
        for (key, f) in &self.full {
            if !f.dirty {
                continue;
            }
            txn.compares.push(Compare {
                key: key.clone(),
                expect: f.orig.clone(),
            });
            if f.set.is_empty() {
                txn.ops.push(Op::Delete(key.clone()));
            } else {
                txn.ops.push(Op::Put(key.clone(), fullset::encode(&f.set)));
            }
            txn.read_on_conflict.push(key.clone());
        }
        Ok(())
    }
}

/// A chunk is full when no set of its family has a free ordinary address in it.
fn is_full(net: &Network, family: Family, k: u8, idx: u128, chunk: &Chunk) -> bool {
    net.sets
        .iter()
        .filter(|s| s.family() == family)
        .all(|s| chunk.bits.count_free(&geometry::normal_mask(s, k, idx)) == 0)
}

/// Checks the meta record and adds to `txn` its creation when absent, or a
/// compare that it is still the record planned against.
fn meta_step(ctx: &Ctx<'_>, known: &Known, txn: &mut Txn) -> Result<(), Stop> {
    let key = ctx.ks.meta();
    match &known.meta {
        None => Err(Stop::Need(vec![Pending::Get(key)])),
        Some(None) => {
            txn.compares.push(Compare {
                key: key.clone(),
                expect: Expect::Absent,
            });
            txn.ops
                .push(Op::Put(key.clone(), Meta::new(ctx.k()).encode()));
            txn.read_on_conflict.push(key);
            Ok(())
        }
        Some(Some((expect, Ok(m)))) if m.chunk_bits == ctx.k() => {
            txn.compares.push(Compare {
                key: key.clone(),
                expect: expect.clone(),
            });
            txn.read_on_conflict.push(key);
            Ok(())
        }
        Some(Some((_, Ok(m)))) => Err(Stop::Fail(AllocError::MetaMismatch {
            key,
            stored: m.chunk_bits,
            configured: ctx.k(),
        })),
        Some(Some((_, Err(detail)))) => Err(Stop::Fail(AllocError::CorruptMeta {
            key,
            detail: detail.clone(),
        })),
    }
}

/// Maps a stored record's addresses back to sets and ranges of the config.
pub fn assigned_of(
    net: &Network,
    key: &str,
    rec: &OwnerRecord,
) -> Result<Vec<Assigned>, AllocError> {
    if rec.ips.len() != net.sets.len() {
        return Err(AllocError::StaleOwner {
            key: key.into(),
            detail: format!(
                "it holds {} address(es) but the config has {} range set(s)",
                rec.ips.len(),
                net.sets.len()
            ),
        });
    }
    rec.ips
        .iter()
        .zip(&net.sets)
        .enumerate()
        .map(|(set, (ip, s))| match s.find(*ip) {
            Some((range, _)) => Ok(Assigned {
                set,
                range,
                ip: *ip,
            }),
            None => Err(AllocError::StaleOwner {
                key: key.into(),
                detail: format!("{ip} is outside every range of range set {set}"),
            }),
        })
        .collect()
}

fn describe(set: &RangeSet) -> String {
    set.ranges()
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reads that let an uncontended ADD plan without any further read:
/// owners, meta, and per dynamic set the full-set and a bounded range read
/// from its starting chunk; per static address its chunk and full-set.
pub fn initial_reads(ctx: &Ctx<'_>, reqs: &[AllocRequest]) -> Vec<Pending> {
    let k = ctx.k();
    let mut out: Vec<Pending> = vec![Pending::Get(ctx.ks.meta())];
    let mut seen = HashSet::new();
    let mut push = |p: Pending, out: &mut Vec<Pending>| {
        if seen.insert(format!("{p:?}")) {
            out.push(p);
        }
    };
    for req in reqs {
        if let Ok(key) = ctx.ks.owner(&req.owner.container_id, &req.owner.ifname) {
            push(Pending::Get(key), &mut out);
        }
        if let Some(key) = sticky_key_of(ctx, req) {
            push(Pending::Get(key), &mut out);
        }
        let statics = map_requested(ctx.net, &req.requested).unwrap_or_default();
        for (i, set) in ctx.net.sets.iter().enumerate() {
            let family = set.family();
            if let Some(ip) = statics.get(&i) {
                let idx = geometry::chunk_of(*ip, k);
                push(Pending::Get(ctx.ks.chunk(family, k, idx)), &mut out);
                push(Pending::Get(ctx.ks.full(family, idx)), &mut out);
                continue;
            }
            let (cands, start) = candidates(ctx, i, set, req.stage.as_deref());
            let Some(idx) = cands.nth(start.ord) else {
                continue;
            };
            push(Pending::Get(ctx.ks.full(family, idx)), &mut out);
            push(
                Pending::Chunks {
                    family,
                    lo: idx,
                    hi: cands.run_end(idx),
                    limit: ctx.read_limit,
                },
                &mut out,
            );
        }
    }
    out
}

/// Which requested address goes to which set.
fn map_requested(
    net: &Network,
    requested: &[IpAddr],
) -> Result<BTreeMap<usize, IpAddr>, AllocError> {
    let mut out = BTreeMap::new();
    for ip in requested {
        let Some(i) = net.sets.iter().position(|s| s.find(*ip).is_some()) else {
            return Err(AllocError::RequestedUnavailable {
                ip: *ip,
                reason: "it is not inside any configured range (rangeStart..rangeEnd)".into(),
            });
        };
        if let Some(prev) = out.insert(i, *ip) {
            return Err(AllocError::RequestedUnavailable {
                ip: *ip,
                reason: format!("{prev} is also requested from range set {i}; one address per set"),
            });
        }
    }
    Ok(out)
}

/// Where a search over a set's candidate chunks starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Start {
    /// Ordinal of the first chunk visited.
    ord: u128,
    /// First bit looked at in that chunk; the bits below it are looked at
    /// last, after every other chunk (round robin over the whole set).
    bit: usize,
}

/// The staged or ordinary candidate chunks of a set, and where to start.
///
/// Ordinary requests start at the node's position (one past its last
/// dynamic address, so it walks the whole set before it comes back to an
/// address it released) or, without one, at the start of a chunk drawn
/// from the first `ctx.window` chunks by the node's seed. Staged requests
/// start at their first reserved chunk.
fn candidates(ctx: &Ctx<'_>, i: usize, set: &RangeSet, stage: Option<&str>) -> (Candidates, Start) {
    let k = ctx.k();
    match stage {
        Some(s) if set.has_stage(s) => (
            geometry::staged_candidates(set, s, k),
            Start { ord: 0, bit: 0 },
        ),
        _ => {
            let c = geometry::normal_candidates(set, k);
            let low = (1u128 << k) - 1;
            let at_position = ctx.hints.get(&i).map(|pos| match c.ordinal_of(pos >> k) {
                Some(ord) => Start {
                    ord,
                    bit: (pos & low) as usize,
                },
                // Past the end of a range: the next candidate chunk, or
                // back to the first one.
                None => Start {
                    ord: c.ordinal_after(pos >> k).unwrap_or(0),
                    bit: 0,
                },
            });
            let start = at_position.unwrap_or_else(|| Start {
                ord: geometry::spread(ctx.seed, i, c.count().min(ctx.window.max(1))),
                bit: 0,
            });
            (c, start)
        }
    }
}

/// A new position for set `set_index`: the start of a chunk drawn by `seed`
/// from the first `ctx.window` chunks (a node moving away from a chunk
/// another node allocates in).
pub fn respread_position(ctx: &Ctx<'_>, set_index: usize, seed: u64) -> Option<u128> {
    let set = ctx.net.sets.get(set_index)?;
    let c = geometry::normal_candidates(set, ctx.k());
    let ord = geometry::spread(seed, set_index, c.count().min(ctx.window.max(1)));
    c.nth(ord).map(|idx| idx << ctx.k())
}

/// Plans an ADD of a batch of requests, each on its own: a request that
/// cannot be served (its static address is taken, its stage list or the
/// pool is exhausted, its owner record is corrupt) gets its error and the
/// others are planned without it, in one transaction.
///
/// Finding the failing request: the whole batch is planned; on a failure
/// each remaining request is planned alone (pure, no I/O) and the first one
/// that fails alone is taken out; a failure that only the combination has
/// (the batch together exhausts the pool) takes out the last request. At
/// most n + n² plans of a batch of n ≤ [`MAX_BATCH`](super::MAX_BATCH).
pub fn plan_add_each(
    ctx: &Ctx<'_>,
    known: &Known,
    reqs: &[AllocRequest],
) -> Result<Plan<Vec<Result<Outcome, AllocError>>>, Stop> {
    let mut failed: BTreeMap<usize, AllocError> = BTreeMap::new();
    loop {
        let active: Vec<usize> = (0..reqs.len())
            .filter(|i| !failed.contains_key(i))
            .collect();
        let batch: Vec<AllocRequest> = active.iter().map(|i| reqs[*i].clone()).collect();
        let err = match plan_add(ctx, known, &batch) {
            Ok(plan) => {
                let mut outcomes = plan.result.into_iter();
                let result = (0..reqs.len())
                    .map(|i| match failed.remove(&i) {
                        Some(e) => Err(e),
                        None => outcomes
                            .next()
                            .ok_or(AllocError::Contention { attempts: 0 }),
                    })
                    .collect::<Vec<_>>();
                let has_failures = result.iter().any(Result::is_err);
                return Ok(Plan {
                    result,
                    txn: plan.txn,
                    moved: plan.moved,
                    has_failures,
                });
            }
            Err(Stop::Need(p)) => return Err(Stop::Need(p)),
            Err(Stop::Fail(e)) => e,
        };
        let mut culprit = None;
        for (pos, req) in batch.iter().enumerate() {
            match plan_add(ctx, known, std::slice::from_ref(req)) {
                Ok(_) => {}
                Err(Stop::Need(p)) => return Err(Stop::Need(p)),
                Err(Stop::Fail(e)) => {
                    culprit = Some((active[pos], e));
                    break;
                }
            }
        }
        let (i, e) = match culprit {
            Some(c) => c,
            None => match active.last() {
                Some(last) => (*last, err),
                None => return Err(Stop::Fail(err)),
            },
        };
        failed.insert(i, e);
    }
}

/// Plans an ADD of a batch of requests (one transaction).
pub fn plan_add(
    ctx: &Ctx<'_>,
    known: &Known,
    reqs: &[AllocRequest],
) -> Result<Plan<Vec<Outcome>>, Stop> {
    let k = ctx.k();
    let mut txn = Txn::default();
    meta_step(ctx, known, &mut txn)?;
    let mut draft = Draft::new(known, ctx.net, k);
    let mut outcomes = Vec::with_capacity(reqs.len());
    let mut moved = Vec::new();
    let mut owners_seen = HashSet::new();
    let mut bindings_seen = HashSet::new();
    for req in reqs {
        let key = ctx
            .ks
            .owner(&req.owner.container_id, &req.owner.ifname)
            .map_err(AllocError::from)?;
        if !owners_seen.insert(key.clone()) {
            return Err(Stop::Fail(AllocError::DuplicateOwner(key)));
        }
        match known.owners.get(&key) {
            None => return Err(Stop::Need(vec![Pending::Get(key)])),
            Some(Some((_, Ok(rec)))) => {
                let assigned = assigned_of(ctx.net, &key, rec)?;
                outcomes.push(Outcome::Existing(rec.clone(), assigned));
                continue;
            }
            Some(Some((_, Err(detail)))) => {
                return Err(Stop::Fail(AllocError::CorruptOwner {
                    key,
                    detail: detail.clone(),
                }))
            }
            Some(None) => {}
        }
        let statics = map_requested(ctx.net, &req.requested)?;
        let bound = sticky_step(ctx, known, req, &mut bindings_seen, &mut txn)?;
        let mut assigned = Vec::with_capacity(ctx.net.sets.len());
        for (i, set) in ctx.net.sets.iter().enumerate() {
            // Static requests win over a sticky binding.
            let sticky = match statics.get(&i) {
                Some(_) => None,
                None => pick_sticky(
                    ctx,
                    &mut draft,
                    &mut txn,
                    (i, set),
                    &bound,
                    req.stage.as_deref(),
                )?,
            };
            let a = match (statics.get(&i), sticky) {
                // A static request does not move the node's position.
                (Some(ip), _) => pick_static(ctx, &mut draft, i, set, *ip, req.stage.as_deref())?,
                // Neither does a sticky address.
                (None, Some(a)) => a,
                (None, None) => {
                    let a = pick_dynamic(ctx, &mut draft, i, set, req.stage.as_deref())?;
                    if !req.stage.as_deref().is_some_and(|s| set.has_stage(s)) {
                        moved.push((i, crate::range::to_u128(a.ip).wrapping_add(1)));
                    }
                    a
                }
            };
            assigned.push(a);
        }
        let rec = OwnerRecord {
            container_id: req.owner.container_id.clone(),
            ifname: req.owner.ifname.clone(),
            ips: assigned.iter().map(|a| a.ip).collect(),
            created: ctx.now,
            pod_namespace: req.pod_namespace.clone(),
            pod_name: req.pod_name.clone(),
            node: Some(ctx.node.to_string()).filter(|n| !n.is_empty()),
        };
        txn.compares.push(Compare {
            key: key.clone(),
            expect: Expect::Absent,
        });
        txn.ops.push(Op::Put(
            key.clone(),
            serde_json::to_vec(&rec).unwrap_or_default(),
        ));
        txn.read_on_conflict.push(key);
        outcomes.push(Outcome::New(rec, assigned));
    }
    if outcomes.iter().all(|o| matches!(o, Outcome::Existing(..))) {
        return Ok(Plan::new(outcomes, Txn::default()));
    }
    draft.finish(ctx, &mut txn)?;
    if ctx.sticky_ttl.is_some() {
        // `pick_sticky` may compare a chunk the draft compares too.
        dedup_keys(&mut txn);
    }
    Ok(Plan {
        result: outcomes,
        txn,
        moved,
        has_failures: false,
    })
}

fn pick_static(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    set_index: usize,
    set: &RangeSet,
    ip: IpAddr,
    stage: Option<&str>,
) -> Result<Assigned, Stop> {
    let k = ctx.k();
    let unavailable = |reason: String| Stop::Fail(AllocError::RequestedUnavailable { ip, reason });
    let Some((range_index, range)) = set.find(ip) else {
        return Err(unavailable("it is not inside any configured range".into()));
    };
    if let Some(owner_stage) = range.stage_of(ip) {
        if stage != Some(owner_stage) {
            return Err(unavailable(format!(
                "it is reserved for pods of stage {owner_stage:?}"
            )));
        }
    }
    if let Some(entry) = range.excluded_by(ip) {
        return Err(unavailable(format!(
            "it is excluded (exclude entry {entry} of range {range})"
        )));
    }
    // The same masks as dynamic allocation, so a static request can never
    // get what a dynamic one would not (e.g. another range's gateway).
    let (idx, bit) = (geometry::chunk_of(ip, k), geometry::bit_of(ip, k));
    let allowed = match stage.filter(|s| range.stage_of(ip) == Some(*s)) {
        Some(s) => geometry::staged_mask(set, s, k, idx).get(bit),
        None => geometry::normal_mask(set, k, idx).get(bit),
    };
    if !allowed {
        return Err(unavailable(
            "it is a gateway, network address or broadcast address of its range set".into(),
        ));
    }
    let chunk = draft.chunk_mut(set.family(), idx)?;
    if chunk.bits.set(bit) {
        return Err(unavailable("it is already allocated".into()));
    }
    Ok(Assigned {
        set: set_index,
        range: range_index,
        ip,
    })
}

fn pick_dynamic(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    set_index: usize,
    set: &RangeSet,
    stage: Option<&str>,
) -> Result<Assigned, Stop> {
    let k = ctx.k();
    let family = set.family();
    let staged = stage.filter(|s| set.has_stage(s));
    let (cands, start) = candidates(ctx, set_index, set, staged);
    let n = cands.count();
    // Visit every chunk once from the start; when the search started inside
    // a chunk, that chunk's lower bits come last (one more visit).
    let visits = if start.bit > 0 { n + 1 } else { n };
    // Ordinary requests skip chunks the full-set lists on a first pass and
    // look at them on a second pass before giving up (the set is a hint).
    let passes: &[bool] = if staged.is_some() {
        &[false]
    } else {
        &[true, false]
    };
    let mut corrupt = None;
    for &use_hint in passes {
        let mut step: u128 = 0;
        while step < visits {
            let ord = (start.ord + step) % n;
            // Bits of this visit: [from, to).
            let (from, to) = match step {
                0 => (start.bit, usize::MAX),
                s if s == n => (0, start.bit),
                _ => (0, usize::MAX),
            };
            step += 1;
            let Some(idx) = cands.nth(ord) else { break };
            // A chunk already read is looked at directly; the full-set is
            // consulted only to skip chunks not read yet or found full.
            let view = draft.view(family, idx);
            let known_free = match &view {
                Lookup::Present(c) => c.bits.count_ones() < c.bits.len(),
                Lookup::Absent => true,
                _ => false,
            };
            if use_hint && !known_free {
                if let Some(skip) = draft.full_run(ctx.ks, family, idx, cands.run_end(idx))? {
                    // Jump over the whole run of listed chunks (never past
                    // the last visit).
                    step = (step - 1 + skip).min(visits);
                    continue;
                }
            }
            let mask = match staged {
                Some(s) => geometry::staged_mask(set, s, k, idx),
                None => geometry::normal_mask(set, k, idx),
            };
            let bit = match draft.view(family, idx) {
                Lookup::Unknown => {
                    let limit = if use_hint {
                        ctx.read_limit
                    } else {
                        ctx.read_limit * 32
                    };
                    return Err(Stop::Need(vec![Pending::Chunks {
                        family,
                        lo: idx,
                        hi: cands.run_end(idx),
                        limit,
                    }]));
                }
                Lookup::Corrupt(e) => {
                    corrupt.get_or_insert_with(|| AllocError::CorruptChunk {
                        key: ctx.ks.chunk(family, k, idx),
                        source: e.clone(),
                    });
                    continue;
                }
                // An absent chunk is all free: the first allowed bit.
                Lookup::Absent => mask.iter_ones().find(|b| *b >= from),
                Lookup::Present(c) => c.bits.find_free(from.min(mask.len()), &mask),
            };
            // find_free wraps around the chunk: keep only [from, to).
            let Some(bit) = bit.filter(|b| (from..to).contains(b)) else {
                continue;
            };
            // The mask only allows addresses inside the set's ranges, so
            // both lookups succeed; check before touching the draft anyway.
            let Some(ip) = from_u128(family, (idx << k) + bit as u128) else {
                continue;
            };
            let Some((range_index, _)) = set.find(ip) else {
                continue;
            };
            let chunk = draft.chunk_mut(family, idx)?;
            chunk.bits.set(bit);
            chunk.cursor = ((bit + 1) % (1usize << k)) as u32;
            return Ok(Assigned {
                set: set_index,
                range: range_index,
                ip,
            });
        }
    }
    if let Some(e) = corrupt {
        return Err(Stop::Fail(e));
    }
    Err(Stop::Fail(match staged {
        Some(s) => AllocError::StageExhausted {
            stage: s.to_string(),
            set: set_index,
        },
        None => AllocError::Exhausted {
            set: set_index,
            ranges: describe(set),
        },
    }))
}

/// Plans the release of one owner: clear its bits, delete its record, in one
/// transaction guarded by the record's revision. `None` if it holds nothing.
pub fn plan_release(
    ctx: &Ctx<'_>,
    known: &Known,
    key: &Key,
) -> Result<Plan<Option<OwnerRecord>>, Stop> {
    let k = ctx.k();
    let (rev, rec) = match known.owners.get(key) {
        None => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => return Ok(Plan::new(None, Txn::default())),
        Some(Some((expect, Ok(rec)))) => (expect.clone(), rec),
        Some(Some((_, Err(detail)))) => {
            return Err(Stop::Fail(AllocError::CorruptOwner {
                key: key.clone(),
                detail: detail.clone(),
            }))
        }
    };
    // Fetch every chunk and full-set involved in one read.
    let mut missing = Vec::new();
    for ip in &rec.ips {
        let family = Family::of(*ip);
        let idx = geometry::chunk_of(*ip, k);
        let mut want = Vec::new();
        if matches!(known.chunk(family, idx), Lookup::Unknown) {
            want.push(Pending::Get(ctx.ks.chunk(family, k, idx)));
        }
        let fkey = ctx.ks.full(family, idx);
        if !known.full_known(&fkey) {
            want.push(Pending::Get(fkey));
        }
        for p in want {
            if !missing.contains(&p) {
                missing.push(p);
            }
        }
    }
    if !missing.is_empty() {
        return Err(Stop::Need(missing));
    }
    let mut draft = Draft::new(known, ctx.net, k);
    for ip in &rec.ips {
        let chunk = draft.chunk_mut(Family::of(*ip), geometry::chunk_of(*ip, k))?;
        // A bit already clear is an inconsistency `check` reports; the
        // release still deletes the record so the owner converges.
        chunk.bits.clear(geometry::bit_of(*ip, k));
    }
    let mut txn = Txn::default();
    txn.compares.push(Compare {
        key: key.clone(),
        expect: rev,
    });
    txn.ops.push(Op::Delete(key.clone()));
    txn.read_on_conflict.push(key.clone());
    sticky_bind(ctx, known, rec, &mut txn);
    draft.finish(ctx, &mut txn)?;
    Ok(Plan::new(Some(rec.clone()), txn))
}

// ---------------------------------------------------------------------------
// Sticky addresses (`Ctx::sticky_ttl`).
//
// DEL of an owner record naming its pod puts a `Binding` of its addresses at
// `{p}/{net}/sticky/{ns}/{name}/{ifname}` in the transaction that frees them.
// The next ADD of that pod and interface (any container ID) reads the
// binding, takes each bound address that is still free in its chunk and
// allowed by the masks (as a static request would, but falling back to a
// dynamic address for that set instead of failing), and deletes the binding
// in its transaction. Bound addresses are only preferred, never reserved:
// dynamic allocation does not look at bindings. A binding that does not
// decode is ignored by ADD and left untouched by ADD and DEL (`ipamctl
// bindings list` shows it, `ipamctl bindings release` deletes it).
// ---------------------------------------------------------------------------

/// The binding key of a request when sticky addresses are on and it names
/// its pod (namespace and name, both usable in a key).
pub fn sticky_key_of(ctx: &Ctx<'_>, req: &AllocRequest) -> Option<Key> {
    sticky_key(
        ctx,
        req.pod_namespace.as_deref(),
        req.pod_name.as_deref(),
        &req.owner.ifname,
    )
}

fn sticky_key(ctx: &Ctx<'_>, ns: Option<&str>, name: Option<&str>, ifname: &str) -> Option<Key> {
    ctx.sticky_ttl?;
    ctx.ks.sticky(ns?, name?, ifname).ok()
}

/// ADD: consumes the request's binding (a compare on it, and its deletion
/// when present) and returns the addresses it still offers (none when
/// absent, expired or corrupt). A compare on an absent binding is what lets
/// a warm ADD, which assumes it absent without reading, learn of it: the
/// conflict answer carries it. Two requests of one batch never use the same
/// binding.
fn sticky_step(
    ctx: &Ctx<'_>,
    known: &Known,
    req: &AllocRequest,
    seen: &mut HashSet<Key>,
    txn: &mut Txn,
) -> Result<Vec<IpAddr>, Stop> {
    let Some(key) = sticky_key_of(ctx, req) else {
        return Ok(Vec::new());
    };
    if !seen.insert(key.clone()) {
        return Ok(Vec::new());
    }
    let (expect, ips) = match known.bindings.get(&key) {
        None => return Err(Stop::Need(vec![Pending::Get(key)])),
        Some(None) => (Expect::Absent, Vec::new()),
        // Corrupt: ignored and never overwritten.
        Some(Some((_, Err(_)))) => return Ok(Vec::new()),
        Some(Some((expect, Ok(b)))) if b.expired(ctx.now) => (expect.clone(), Vec::new()),
        Some(Some((expect, Ok(b)))) => (expect.clone(), b.ips.clone()),
    };
    if expect != Expect::Absent {
        txn.ops.push(Op::Delete(key.clone()));
    }
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.read_on_conflict.push(key);
    Ok(ips)
}

/// ADD: the bound address of set `set_index`, if there is one and it can be
/// given as a static request could (inside the set, not excluded, not a
/// gateway, not reserved for another stage, free in its chunk); `None`
/// otherwise (the set gets a dynamic address).
fn pick_sticky(
    ctx: &Ctx<'_>,
    draft: &mut Draft<'_>,
    txn: &mut Txn,
    (set_index, set): (usize, &RangeSet),
    bound: &[IpAddr],
    stage: Option<&str>,
) -> Result<Option<Assigned>, Stop> {
    let k = ctx.k();
    let Some(ip) = bound.iter().copied().find(|ip| set.find(*ip).is_some()) else {
        return Ok(None);
    };
    // A staged request whose set has reservations for its stage only takes
    // a bound address among them (as dynamic allocation would).
    if let Some(s) = stage.filter(|s| set.has_stage(s)) {
        if set.find(ip).and_then(|(_, r)| r.stage_of(ip)) != Some(s) {
            return Ok(None);
        }
    }
    let (family, idx) = (set.family(), geometry::chunk_of(ip, k));
    // Look before touching the draft: a taken address costs no chunk write.
    match draft.view(family, idx) {
        Lookup::Unknown => {
            return Err(Stop::Need(vec![
                Pending::Get(ctx.ks.chunk(family, k, idx)),
                Pending::Get(ctx.ks.full(family, idx)),
            ]))
        }
        Lookup::Present(c) if c.bits.get(geometry::bit_of(ip, k)) => {
            // Taken as far as a remembered (node cache) value tells: compare
            // that value, so that a stale memory (the address was freed
            // since) conflicts and the plan is redone on the current chunk
            // instead of silently giving up the sticky address.
            if !draft.chunks.contains_key(&(family, idx)) {
                if let expect @ Expect::Value(_) = draft.known.chunk_expect(family, idx) {
                    let key = ctx.ks.chunk(family, k, idx);
                    txn.compares.push(Compare {
                        key: key.clone(),
                        expect,
                    });
                    txn.read_on_conflict.push(key);
                }
            }
            return Ok(None);
        }
        Lookup::Corrupt(_) => return Ok(None),
        _ => {}
    }
    match pick_static(ctx, draft, set_index, set, ip, stage) {
        Ok(a) => Ok(Some(a)),
        Err(Stop::Fail(AllocError::RequestedUnavailable { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Drops repeated compares (same key and expectation) and conflict reads.
fn dedup_keys(txn: &mut Txn) {
    let mut seen = HashSet::new();
    txn.compares
        .retain(|c| seen.insert((c.key.clone(), format!("{:?}", c.expect))));
    let mut seen = HashSet::new();
    txn.read_on_conflict.retain(|k| seen.insert(k.clone()));
}

/// DEL: binds the released addresses to the owner's pod (a put of its
/// binding). An unknown binding is assumed absent (compared absent: a DEL
/// costs no extra read, and a conflict answer brings the real value); a
/// present one is overwritten (the last DEL of the pod wins); a corrupt one
/// is left alone and no binding is made.
fn sticky_bind(ctx: &Ctx<'_>, known: &Known, rec: &OwnerRecord, txn: &mut Txn) {
    let Some(ttl) = ctx.sticky_ttl else { return };
    let Some(key) = sticky_key(
        ctx,
        rec.pod_namespace.as_deref(),
        rec.pod_name.as_deref(),
        &rec.ifname,
    ) else {
        return;
    };
    let expect = match known.bindings.get(&key) {
        None | Some(None) => Expect::Absent,
        Some(Some((_, Err(_)))) => return,
        Some(Some((expect, Ok(_)))) => expect.clone(),
    };
    let binding = Binding {
        namespace: rec.pod_namespace.clone().unwrap_or_default(),
        name: rec.pod_name.clone().unwrap_or_default(),
        ifname: rec.ifname.clone(),
        ips: rec.ips.clone(),
        released_at: ctx.now,
        expires_at: ctx.now.saturating_add(ttl),
        container_id: rec.container_id.clone(),
    };
    let Ok(bytes) = serde_json::to_vec(&binding) else {
        return;
    };
    txn.compares.push(Compare {
        key: key.clone(),
        expect,
    });
    txn.ops.push(Op::Put(key.clone(), bytes));
    txn.read_on_conflict.push(key);
}

/// Plans the deletion of the binding `key` (`ipamctl bindings release`,
/// `expire`): with `expired_at`, only if it has expired at that time (and
/// a corrupt one is left alone); without, whatever it holds. The result is
/// what was deleted (`Err`: the undecodable bytes' error).
pub fn plan_drop_binding(
    known: &Known,
    key: &Key,
    expired_at: Option<u64>,
) -> Result<Plan<Option<Result<Binding, String>>>, Stop> {
    let (expect, value) = match known.bindings.get(key) {
        None => return Err(Stop::Need(vec![Pending::Get(key.clone())])),
        Some(None) => return Ok(Plan::new(None, Txn::default())),
        Some(Some((expect, value))) => (expect.clone(), value.clone()),
    };
    let keep = match (&value, expired_at) {
        (_, None) => false,
        (Ok(b), Some(now)) => !b.expired(now),
        (Err(_), Some(_)) => true,
    };
    if keep {
        return Ok(Plan::new(None, Txn::default()));
    }
    let txn = Txn {
        compares: vec![Compare {
            key: key.clone(),
            expect,
        }],
        ops: vec![Op::Delete(key.clone())],
        read_on_conflict: vec![key.clone()],
    };
    Ok(Plan::new(Some(value), txn))
}
