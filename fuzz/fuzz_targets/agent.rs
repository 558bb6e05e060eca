//! Fuzz target `agent`: agent frames and messages: bytes as a peer's stream on the agent socket.
//! Body: `host_etcd::fuzzing::agent`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host_etcd::fuzzing::agent(data));
