//! Fuzz target `libcni_cache`: a libcni cache file, as `ipamctl reconcile` reads it.
//! Body: `host_etcd::fuzzing::libcni_cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::libcni_cache(data));
