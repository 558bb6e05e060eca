//! Fuzz target `config`: arbitrary bytes as a CNI network config.
//! Body: `host_etcd::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::config(data));
