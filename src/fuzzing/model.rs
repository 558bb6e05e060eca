//! The allocator model: who holds which addresses, what an operation must
//! do given that, and the invariants of the store after every step. One
//! model for both users: the `allocator` fuzz target
//! ([`allocator()`](super::allocator())) and the proptest in
//! `tests/allocator_model.rs` (several nodes, perturbed node caches). Each
//! decodes its own input into [`Op`]s, injects its faults, and calls
//! [`Model::apply`] then [`Model::check`].
//!
//! The model predicts from the network's ranges alone: a dynamic ADD gets a
//! free address of the pod's pool in every set (its stage's reserved
//! addresses if the set has that stage, else the unreserved ones),
//! exhaustion is reported exactly when a pool is empty, a static ADD is
//! granted exactly when the address is allocatable, free and not reserved
//! for another stage, an ADD of an owner that holds addresses returns them,
//! and releases free exactly what was held.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::allocator::{AllocError, AllocRequest, Allocation, Allocator, Network, OwnerId};
use crate::range::{from_u128, to_u128};
use crate::store::memory::MemoryStore;

/// The allocator the model drives: any node over a shared memory store.
pub type ModelAllocator<'s> = Allocator<&'s MemoryStore>;

/// One operation, with owners, stages and addresses already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// ADD of owner `c<owner>`, optionally with a deploy stage and one
    /// requested (static) address.
    Alloc {
        /// Owner number (container id `c<owner>`).
        owner: u8,
        /// Deploy stage.
        stage: Option<&'static str>,
        /// Requested address.
        ip: Option<IpAddr>,
    },
    /// DEL of owner `c<owner>`.
    Release {
        /// Owner number.
        owner: u8,
    },
    /// Release whoever holds `ip`.
    ReleaseIp {
        /// The address.
        ip: IpAddr,
    },
    /// GC keeping exactly these owners.
    Gc {
        /// Owner numbers to keep.
        keep: Vec<u8>,
    },
}

/// The owner id of owner number `n`: container `c<n>`, interface `eth0`.
pub fn owner_id(n: u8) -> OwnerId {
    OwnerId {
        container_id: format!("c{n}"),
        ifname: "eth0".into(),
    }
}

/// Addresses static requests and release-by-address pick from: every
/// address of every subnet of the network (in range or not), at most 64
/// per range.
pub fn probe_list(net: &Network) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for set in &net.sets {
        for r in set.ranges() {
            let lo = to_u128(r.subnet.network());
            let hi = to_u128(r.subnet.broadcast()).min(lo + 63);
            out.extend((lo..=hi).filter_map(|v| from_u128(r.family(), v)));
        }
    }
    out
}

/// Why the model expects an ADD to fail.
#[derive(Debug, PartialEq, Eq)]
enum Failing {
    /// The requested address cannot be given.
    Static,
    /// Set `i` has no free address for the pod.
    Set(usize),
}

/// The model: who holds which addresses (one per set, in set order).
pub struct Model<'n> {
    net: &'n Network,
    held: BTreeMap<u8, Vec<IpAddr>>,
}

impl<'n> Model<'n> {
    /// An empty model of `net`: nobody holds anything.
    pub fn new(net: &'n Network) -> Self {
        Model {
            net,
            held: BTreeMap::new(),
        }
    }

    /// Who holds what: owner number to its addresses, one per set.
    pub fn held(&self) -> &BTreeMap<u8, Vec<IpAddr>> {
        &self.held
    }

    fn taken(&self) -> BTreeSet<IpAddr> {
        self.held.values().flatten().copied().collect()
    }

    fn holder(&self, ip: IpAddr) -> Option<u8> {
        self.held
            .iter()
            .find(|(_, ips)| ips.contains(&ip))
            .map(|(o, _)| *o)
    }

    /// Free addresses of set `i` a pod of `stage` may get dynamically.
    pub fn pool(&self, i: usize, stage: Option<&str>) -> Vec<IpAddr> {
        let set = &self.net.sets[i];
        let staged = stage.filter(|s| set.has_stage(s));
        let taken = self.taken();
        let mut out = Vec::new();
        for r in set.ranges() {
            for v in r.first()..=r.last() {
                let Some(ip) = from_u128(r.family(), v) else {
                    continue;
                };
                let ok = r.is_allocatable(ip)
                    && !taken.contains(&ip)
                    && match staged {
                        Some(s) => r.stage_of(ip) == Some(s),
                        None => r.stage_of(ip).is_none(),
                    };
                if ok {
                    out.push(ip);
                }
            }
        }
        out
    }

    /// Whether set `i` may grant a static request for `ip` by a pod of
    /// `stage`.
    pub fn static_ok(&self, i: usize, ip: IpAddr, stage: Option<&str>) -> bool {
        self.net.sets[i].find(ip).is_some_and(|(_, r)| {
            r.is_allocatable(ip)
                && r.stage_of(ip).is_none_or(|s| Some(s) == stage)
                && !self.taken().contains(&ip)
        })
    }

    /// Runs `op` on `a`, asserts the outcome is the one the model allows,
    /// and updates the model. Faults queued on the store beforehand are the
    /// caller's; a read the allocator does not retry (the holder lookup of
    /// release-by-address, GC's owner listing) may fail transiently once,
    /// and is then run again without faults.
    pub async fn apply(&mut self, a: &ModelAllocator<'_>, op: &Op) {
        match op {
            Op::Alloc { owner, stage, ip } => self.alloc(a, *owner, *stage, *ip).await,
            Op::Release { owner } => self.release(a, *owner).await,
            Op::ReleaseIp { ip } => self.release_ip(a, *ip).await,
            Op::Gc { keep } => self.gc(a, keep).await,
        }
    }

    /// The model's prediction for an ADD of a new owner: a requested
    /// address outside every range is refused up front; otherwise it goes
    /// to the first set holding it, and the first set that cannot give an
    /// address decides the error. Also returns the set the static address
    /// belongs to.
    fn predict(&self, stage: Option<&str>, ip: Option<IpAddr>) -> (Option<Failing>, Option<usize>) {
        let static_set = ip.and_then(|ip| self.net.sets.iter().position(|s| s.find(ip).is_some()));
        if ip.is_some() && static_set.is_none() {
            return (Some(Failing::Static), None);
        }
        for i in 0..self.net.sets.len() {
            let ok = match ip.filter(|_| static_set == Some(i)) {
                Some(ip) => self.static_ok(i, ip, stage),
                None => !self.pool(i, stage).is_empty(),
            };
            if !ok {
                let failing = if static_set == Some(i) {
                    Failing::Static
                } else {
                    Failing::Set(i)
                };
                return (Some(failing), static_set);
            }
        }
        (None, static_set)
    }

    async fn alloc(
        &mut self,
        a: &ModelAllocator<'_>,
        o: u8,
        stage: Option<&str>,
        ip: Option<IpAddr>,
    ) {
        let req = AllocRequest {
            owner: owner_id(o),
            stage: stage.map(str::to_string),
            requested: ip.into_iter().collect(),
            ..AllocRequest::default()
        };
        let (failing, static_set) = self.predict(stage, ip);
        let result = a.allocate(&req).await;
        if let Some(prev) = self.held.get(&o) {
            match result {
                Ok(got) => {
                    let ips: Vec<IpAddr> = got.assigned.iter().map(|x| x.ip).collect();
                    assert_eq!(&ips, prev, "idempotent ADD of c{o}");
                }
                Err(e) => panic!("ADD of existing c{o} failed: {e}"),
            }
            return;
        }
        match result {
            Ok(got) => {
                assert_eq!(
                    failing, None,
                    "ADD c{o} {stage:?} {ip:?} granted, model says no: {got:?}"
                );
                let ips = self.granted(o, stage, ip, static_set, &got);
                self.held.insert(o, ips);
            }
            Err(AllocError::Exhausted { set, .. } | AllocError::StageExhausted { set, .. }) => {
                assert_eq!(
                    failing,
                    Some(Failing::Set(set)),
                    "ADD c{o} {stage:?}: exhausted set {set}"
                );
            }
            Err(AllocError::RequestedUnavailable { ip: bad, reason }) => {
                assert_eq!(Some(bad), ip, "refused an address not asked for");
                assert_eq!(
                    failing,
                    Some(Failing::Static),
                    "static {bad} refused ({reason}) but model grants"
                );
            }
            Err(e) => panic!("ADD c{o} {stage:?} {ip:?}: unexpected error {e}"),
        }
    }

    /// The addresses of a granted ADD of new owner `o`, checked: one per
    /// set in set order, the requested one in `static_set`, elsewhere a
    /// free address of the pod's pool.
    fn granted(
        &self,
        o: u8,
        stage: Option<&str>,
        ip: Option<IpAddr>,
        static_set: Option<usize>,
        got: &Allocation,
    ) -> Vec<IpAddr> {
        assert_eq!(got.assigned.len(), self.net.sets.len());
        let mut ips = Vec::new();
        for (i, x) in got.assigned.iter().enumerate() {
            assert_eq!(x.set, i);
            match ip.filter(|_| static_set == Some(i)) {
                Some(want) => assert_eq!(x.ip, want, "static ADD c{o}"),
                None => {
                    let pool = self.pool(i, stage);
                    assert!(
                        pool.contains(&x.ip),
                        "{} not free for {stage:?} in set {i}",
                        x.ip
                    );
                }
            }
            ips.push(x.ip);
        }
        ips
    }

    async fn release(&mut self, a: &ModelAllocator<'_>, o: u8) {
        let rel = a
            .release(&owner_id(o))
            .await
            .unwrap_or_else(|e| panic!("release c{o}: {e}"));
        let had = self.held.remove(&o);
        // A lost reply makes the retry find the owner already gone.
        if let Some(rec) = rel {
            assert_eq!(Some(rec.ips), had, "release c{o} returned another record");
        }
    }

    async fn release_ip(&mut self, a: &ModelAllocator<'_>, ip: IpAddr) {
        let rel = match a.release_ip(ip).await {
            Ok(r) => r,
            // The holder lookup is one read, not retried.
            Err(e) if e.is_transient() => {
                a.store().clear_faults();
                a.release_ip(ip)
                    .await
                    .unwrap_or_else(|e| panic!("release_ip {ip}: {e}"))
            }
            Err(e) => panic!("release_ip {ip}: {e}"),
        };
        if let Some(o) = self.holder(ip) {
            let had = self.held.remove(&o);
            if let Some(rec) = rel {
                assert_eq!(rec.container_id, format!("c{o}"));
                assert_eq!(Some(rec.ips), had);
            }
        } else {
            assert!(
                rel.is_none(),
                "release_ip {ip} freed {rel:?}, held by nobody"
            );
        }
    }

    async fn gc(&mut self, a: &ModelAllocator<'_>, keep: &[u8]) {
        let valid: Vec<OwnerId> = keep.iter().map(|o| owner_id(*o)).collect();
        if let Err(e) = a.gc_cluster(&valid).await {
            // Listing owners is one read, not retried: a transient failure
            // is reported (CNI 11) and GC run again.
            assert!(e.is_transient(), "gc: {e}");
            a.store().clear_faults();
            a.gc_cluster(&valid)
                .await
                .unwrap_or_else(|e| panic!("gc retry: {e}"));
        }
        self.held.retain(|o, _| keep.contains(o));
    }

    /// The invariants after a step, read through `a` once any fault still
    /// queued is dropped: the owner records are exactly the model's
    /// holdings, no address is held twice (by the records or the model),
    /// and [`Allocator::check`] is clean with exactly the model's number of
    /// allocated addresses.
    pub async fn check(&self, a: &ModelAllocator<'_>) {
        a.store().clear_faults();
        let recs = a.owners().await.unwrap_or_else(|e| panic!("owners: {e}"));
        let mut seen: HashMap<IpAddr, String> = HashMap::new();
        assert_eq!(recs.len(), self.held.len(), "owner records vs model");
        for r in &recs {
            let o: Option<u8> = r
                .container_id
                .strip_prefix('c')
                .and_then(|s| s.parse().ok());
            assert_eq!(
                o.and_then(|o| self.held.get(&o)),
                Some(&r.ips),
                "record {}",
                r.container_id
            );
            for ip in &r.ips {
                if let Some(other) = seen.insert(*ip, r.container_id.clone()) {
                    panic!("{ip} held by {other} and {}", r.container_id);
                }
            }
        }
        let held: Vec<IpAddr> = self.held.values().flatten().copied().collect();
        assert_eq!(
            self.taken().len(),
            held.len(),
            "the model holds an address twice"
        );
        let report = a.check().await.unwrap_or_else(|e| panic!("check: {e}"));
        assert!(report.is_clean(), "check: {report:?}");
        assert_eq!(
            report.allocated,
            held.len() as u64,
            "allocated bits vs model"
        );
    }
}
