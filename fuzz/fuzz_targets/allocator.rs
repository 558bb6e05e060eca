//! Fuzz target `allocator`: operation sequences with injected store faults
//! on the memory store, checked against a model. Body:
//! `host_etcd::fuzzing::allocator`.
#![no_main]

use host_etcd::fuzzing::AllocatorInput;

libfuzzer_sys::fuzz_target!(|input: AllocatorInput| host_etcd::fuzzing::allocator(&input));
