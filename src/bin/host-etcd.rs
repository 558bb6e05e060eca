//! The `host-etcd` CNI IPAM plugin binary (thin: see `host_etcd::cni`).

fn main() {}
