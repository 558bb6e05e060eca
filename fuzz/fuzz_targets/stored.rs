//! Fuzz target `stored`: an owner record and a binding read back from the store.
//! Body: `host_etcd::fuzzing::stored`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::stored(data));
