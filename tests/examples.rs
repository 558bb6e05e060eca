//! Runs the programs in `examples/` as a user would: `memory` and
//! `embedded` as they are, `etcd_tls` against a throwaway etcd that
//! requires TLS client certificates. `cargo test` builds the examples
//! before it runs this file (`--all-targets` and plain `cargo test` both
//! do); a missing example binary fails the test and says how to build it.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::tls::TestPki;
use support::{EtcdCluster, EtcdServer};

/// `target/<profile>/examples/<name>`, next to this test's own binary
/// (`target/<profile>/deps/examples-<hash>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir")
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --examples` (or `cargo test --all-targets`)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("example starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn memory_example_allocates_and_releases() {
    let out = stdout(&run(&mut Command::new(example("memory"))));
    assert!(out.contains("allocated c1: 10.88.0.2, fd00:88::"), "{out}");
    assert!(out.contains("released c2"), "{out}");
    assert!(out.contains("owners now: 2"), "{out}");
}

#[test]
fn embedded_example_persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = stdout(&run(Command::new(example("embedded")).arg(&data)));
    assert!(out.contains("reopened, found 10.89."), "{out}");
    // The store it left behind is a real embedded store: a second run on
    // the same directory starts from the released state and works again.
    let again = stdout(&run(Command::new(example("embedded")).arg(&data)));
    assert!(again.contains("released it"), "{again}");
}

#[test]
fn etcd_tls_example_runs_against_a_tls_etcd() {
    let pki = TestPki::generate();
    let etcd = EtcdServer::start_with(EtcdCluster::builder().tls(pki.server_tls(true)));
    let endpoint = etcd.endpoint(0);
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let out = stdout(&run(Command::new(example("etcd_tls"))
        .args(["--endpoints", &endpoint, "--network", "tlsnet"])
        .arg("--ca")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)));
    assert!(out.contains("allocated 10.90."), "{out}");
    assert!(out.contains("released 10.90."), "{out}");

    // The allocation really went through etcd: the network's meta record
    // is there, and no owner record is left after the release.
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/host-etcd/tlsnet/"]);
    let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
    assert!(keys.contains("/host-etcd/tlsnet/meta"), "{keys}");
    assert!(!keys.contains("/owners/"), "{keys}");

    // Without the client certificate the server refuses: the example fails
    // with an error, not a panic.
    let refused = Command::new(example("etcd_tls"))
        .args(["--endpoints", &endpoint])
        .arg("--ca")
        .arg(&pki.ca)
        .output()
        .expect("example starts");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn scale_fill_example_writes_indexed_records_per_node() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("net.conf");
    let doc = serde_json::json!({
        "cniVersion": "1.1.0", "name": "scale",
        "ipam": {"type": "host-etcd", "endpoints": [etcd.endpoint(0)],
                 "ranges": [[{"subnet": "10.64.0.0/16"}], [{"subnet": "fd00:64::/64"}]]},
    });
    std::fs::write(&conf, doc.to_string()).expect("write config");
    let fill = |first: &str| {
        let mut cmd = Command::new(example("scale_fill"));
        cmd.arg(&conf)
            .args(["--first-node", first, "--nodes", "2", "--per-node", "30"]);
        stdout(&run(&mut cmd))
    };
    let out = fill("7");
    assert!(out.contains("\"owners\": 60, \"new_owners\": 60"), "{out}");
    // Filling the same nodes again adds nothing (ADD is idempotent).
    let again = fill("7");
    assert!(again.contains("\"new_owners\": 0"), "{again}");

    let keys = |prefix: &str| -> Vec<String> {
        let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(keys("/host-etcd/scale/owners/").len(), 60);
    for node in ["scale-node-00007", "scale-node-00008"] {
        let entries = keys(&format!("/host-etcd/scale/nodes/{node}/"));
        assert_eq!(entries.len(), 30, "{node}: {entries:?}");
        // Each entry is its owner record's copy: the record names the node,
        // a pod, and one address per range set.
        let out = etcd.etcdctl(&["get", "--print-value-only", &entries[0]]);
        let rec: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("index entry is JSON");
        assert_eq!(rec["node"], node, "{rec}");
        assert_eq!(rec["pod_namespace"], "default", "{rec}");
        assert_eq!(rec["ips"].as_array().map(Vec::len), Some(2), "{rec}");
        assert_eq!(
            rec["container_id"].as_str().map(str::len),
            Some(64),
            "{rec}"
        );
    }
}
