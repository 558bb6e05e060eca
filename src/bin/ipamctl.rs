//! The `ipamctl` operator CLI (thin: see `host_etcd::admin`).

fn main() -> std::process::ExitCode {
    host_etcd::admin::main()
}
