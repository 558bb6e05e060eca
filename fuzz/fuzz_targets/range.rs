//! Fuzz target `range`: structured range specs through `Range::parse`,
//! checked against a model. Body: `host_etcd::fuzzing::range`.
#![no_main]

use host_etcd::fuzzing::RangeInput;

libfuzzer_sys::fuzz_target!(|input: RangeInput| host_etcd::fuzzing::range(&input));
