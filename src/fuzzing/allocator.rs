//! Target `allocator`: a structured [`AllocatorInput`] (a network shape and
//! up to 48 operations, each after up to 3 injected store faults) decoded
//! into the [`model`](super::model)'s operations and run on one allocator
//! over a fresh [`MemoryStore`].

use arbitrary::Arbitrary;

use super::model::{probe_list, Model, Op};
use super::shapes::shape_network;
use crate::allocator::{Allocator, Options};
use crate::store::memory::{Fault, MemoryStore};

/// A store fault to inject before an operation.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum FaultInput {
    /// [`Fault::FailBeforeCommit`].
    BeforeCommit,
    /// [`Fault::FailAfterCommit`].
    AfterCommit,
    /// [`Fault::SpuriousConflict`].
    Conflict,
    /// [`Fault::FailRead`].
    Read,
}

impl From<FaultInput> for Fault {
    fn from(f: FaultInput) -> Fault {
        match f {
            FaultInput::BeforeCommit => Fault::FailBeforeCommit,
            FaultInput::AfterCommit => Fault::FailAfterCommit,
            FaultInput::Conflict => Fault::SpuriousConflict,
            FaultInput::Read => Fault::FailRead,
        }
    }
}

/// One allocator operation. Owners are `owner % 16`; stages index
/// `sandbox`, `smallflow`, `other`; static addresses index the network's
/// probe list (see [`AllocatorInput`]).
#[derive(Arbitrary, Clone, Debug)]
pub enum OpInput {
    /// ADD, optionally with a stage and a static address.
    Alloc {
        /// Owner.
        owner: u8,
        /// Deploy stage.
        stage: Option<u8>,
        /// Static address (index into the probe list).
        ip: Option<u8>,
    },
    /// DEL.
    Release {
        /// Owner.
        owner: u8,
    },
    /// Release by address (index into the probe list).
    ReleaseIp {
        /// Address.
        ip: u8,
    },
    /// GC keeping these owners.
    Gc {
        /// Owners to keep.
        keep: Vec<u8>,
    },
}

/// One step: faults queued, then an operation.
#[derive(Arbitrary, Clone, Debug)]
pub struct StepInput {
    /// Faults (at most 3 are used).
    pub faults: Vec<FaultInput>,
    /// The operation.
    pub op: OpInput,
}

/// Structured input of the [`allocator()`] target.
#[derive(Arbitrary, Clone, Debug)]
pub struct AllocatorInput {
    /// Network shape, modulo the number of shapes (see [`shape`](super::shape)).
    pub shape: u8,
    /// k = 6 if true, else 10.
    pub small_chunks: bool,
    /// The operations (at most 48 are run).
    pub steps: Vec<StepInput>,
}

const OWNERS: u8 = 16;
const STAGES: [&str; 3] = ["sandbox", "smallflow", "other"];

impl OpInput {
    /// The model operation: owners `% 16`, stages and static addresses
    /// indexing [`STAGES`] and `probes` (never empty).
    fn decode(&self, probes: &[std::net::IpAddr]) -> Op {
        match self {
            OpInput::Alloc { owner, stage, ip } => Op::Alloc {
                owner: owner % OWNERS,
                stage: stage.map(|s| STAGES[usize::from(s) % STAGES.len()]),
                ip: ip.map(|i| probes[usize::from(i) % probes.len()]),
            },
            OpInput::Release { owner } => Op::Release {
                owner: owner % OWNERS,
            },
            OpInput::ReleaseIp { ip } => Op::ReleaseIp {
                ip: probes[usize::from(*ip) % probes.len()],
            },
            OpInput::Gc { keep } => Op::Gc {
                keep: keep.iter().take(16).map(|o| o % OWNERS).collect(),
            },
        }
    }
}

/// Target `allocator`: runs `input`'s steps on a fresh [`MemoryStore`]
/// with the given faults injected before each step, against the
/// [`Model`]. After
/// every step: the owner records equal the model's holdings, no address is
/// held twice, and [`Allocator::check`] is clean with exactly the model's
/// number of allocated addresses. Dynamic ADDs get a free address of the
/// right pool, exhaustion is reported exactly when the pool is empty, static
/// ADDs are granted exactly when the model allows, releases free exactly
/// what was held.
///
/// With the `fuzz-paused-time` feature (enabled by `fuzz/` and this crate's
/// tests) the body runs on tokio's paused clock: the allocator's retry
/// back-off sleeps advance virtual time at once instead of sleeping, so
/// injected faults cost no real time. Nothing else changes: the allocator's
/// budget is measured with `std::time::Instant`, which keeps running.
pub fn allocator(input: &AllocatorInput) {
    let rt = super::runtime();
    rt.block_on(run_allocator(input));
}

async fn run_allocator(input: &AllocatorInput) {
    let k = if input.small_chunks { 6 } else { 10 };
    let net = shape_network(input.shape, k).unwrap_or_else(|e| panic!("shape: {e}"));
    let probes = probe_list(&net);
    let store = MemoryStore::new();
    let options = Options {
        node_seed: u64::from(input.shape),
        ..Options::default()
    };
    let a = Allocator::new(&store, net.clone(), options)
        .unwrap_or_else(|e| panic!("Allocator::new: {e}"));
    let mut m = Model::new(&net);
    for step in input.steps.iter().take(48) {
        store.inject(step.faults.iter().take(3).map(|f| Fault::from(*f)));
        m.apply(&a, &step.op.decode(&probes)).await;
        m.check(&a).await;
    }
}
