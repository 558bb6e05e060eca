//! Fuzz target bodies, as plain functions over [`arbitrary`]-derived inputs,
//! so that libFuzzer (`fuzz/fuzz_targets/*.rs`, run with `cargo fuzz`) and
//! ordinary tests (`tests/fuzz_corpora.rs`, which replays the checked-in
//! seed corpora and a few thousand generated inputs) run the same checks.
//! Built only with the `fuzz` cargo feature (see `Cargo.toml`).
//!
//! Each body panics, with a message naming the broken property, only when
//! the code under test misbehaves; any input, valid or not, is fair.
//!
//! | target | input | property |
//! |---|---|---|
//! | [`config()`] | bytes: a network config | parse + validate never panics; accepted ranges obey the range invariants |
//! | [`range()`] | [`RangeInput`] | `Range::parse` never panics and agrees with a small model |
//! | [`codec()`] | bytes | `decode` never panics; what decodes re-encodes canonically; structured chunks round-trip in every encoding |
//! | [`allocator()`] | [`AllocatorInput`] | op sequences with injected store faults match the [`model`]; `check()` stays clean |
//! | [`agent()`] | bytes: a peer's stream on the agent socket | frames never over the limit, exactly as announced; request and reply decoding never panic; what decodes round-trips |
//! | [`node_cache()`] | bytes: a node cache file | `NodeCache::decode` never panics, its encoding is canonical; an allocator warmed with it hands out no taken address, releases exactly what was held, `check()` clean |
//! | [`libcni_cache()`] | bytes: a libcni cache file | `parse_cache_entry` never panics; accepted entries have their fields; libcni's own file name is recognised |
//! | [`stored()`] | bytes: an owner record and a binding in the store | decoding and every allocator path reading them (lookup, DEL, sticky ADD, bindings, check, repair) never panic; no address handed out twice |
//!
//! One file per target, plus the allocator [`model`] (also driven by the
//! proptest in `tests/allocator_model.rs`) and the network shapes it runs
//! on (`shapes.rs`).
//!
//! Not part of the supported API (hidden from the docs).

use arbitrary::{Arbitrary, Unstructured};

mod agent;
mod allocator;
mod codec;
mod config;
#[cfg(feature = "cli")]
mod libcni_cache;
pub mod model;
mod node_cache;
mod range;
mod shapes;
mod stored;

pub use agent::agent;
pub use allocator::{allocator, AllocatorInput, FaultInput, OpInput, StepInput};
pub use codec::{check_decode, check_roundtrip, codec, frame, ChunkInput, Fill};
pub use config::{check_network, check_range, config};
#[cfg(feature = "cli")]
pub use libcni_cache::libcni_cache;
// What tests/fuzz_corpora.rs checks the seeds against (the crate's parts
// are private; the fuzz bodies and their checks are not an API either).
pub use crate::admin::reconcile::parse_cache_entry;
pub use crate::cni::agent_client::protocol::{Reply as AgentReply, Request as AgentRequest};
pub use node_cache::{node_cache, node_cache_network, NODE_CACHE_STORE};
pub use range::{range, AddrInput, RangeInput, SubnetInput};
pub use shapes::{shape, shape_network, SHAPES};
pub use stored::{stored, STORED_SEPARATOR};

/// The runtime a fuzz body drives the allocator on: current-thread, with
/// timers; with the `fuzz-paused-time` feature on tokio's paused clock, so
/// retry back-offs cost no real time.
fn runtime() -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    #[cfg(feature = "fuzz-paused-time")]
    builder.start_paused(true);
    match builder.build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

/// Builds `T` from raw fuzzer bytes exactly as `libfuzzer-sys`'s typed
/// `fuzz_target!` does (`arbitrary_take_rest`); `None` if the bytes do not
/// make a `T`.
pub fn from_bytes<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}
