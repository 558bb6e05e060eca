//! Fuzz target `node_cache`: the plugin's node cache file, and the allocator warmed with it.
//! Body: `host_etcd::fuzzing::node_cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::node_cache(data));
