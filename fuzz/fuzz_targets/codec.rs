//! Fuzz target `codec`: arbitrary bytes as chunk bytes (as is and
//! re-framed), and as a structured chunk round-tripped through every
//! encoding. Body: `host_etcd::fuzzing::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::codec(data));
