//! Running the `ipamctl` binary from tests: stdin closed (never a
//! terminal), exit status checked, output shown when an assertion fails;
//! the owners it lists; the test's own allocator of a network config
//! file; and libcni cache entries for reconcile.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use host_etcd::allocator::Allocator;
use host_etcd::cni::read_config_file;
use host_etcd::cni::StoreConf;
use host_etcd::store::etcd::EtcdStore;
use serde_json::Value;

/// The `ipamctl` binary cargo built for this test run.
pub const EXE: &str = env!("CARGO_BIN_EXE_ipamctl");

/// Runs `ipamctl ARGS` with stdin closed.
pub fn ipamctl(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {EXE}: {e}"))
}

/// A process's exit status, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `ipamctl ARGS` and asserts exit status `code`.
pub fn expect_exit(code: i32, args: &[&str]) -> Output {
    let out = ipamctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ipamctl {args:?}\n{}",
        text(&out)
    );
    out
}

/// Runs `ipamctl ARGS`, asserts exit status `code`, parses stdout as JSON.
pub fn json(code: i32, args: &[&str]) -> Value {
    let out = expect_exit(code, args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ipamctl {args:?}: {e}\n{}", text(&out)))
}

/// The container IDs, sorted, of a JSON array of owner records, or of
/// reconcile decisions (which carry the record under `record`).
pub fn container_ids(rows: &Value) -> Vec<String> {
    let rows = rows
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {rows}"));
    let mut ids: Vec<String> = rows
        .iter()
        .map(|row| {
            row.get("record").unwrap_or(row)["container_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no container_id: {row}"))
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

/// The container IDs, sorted, of the decisions under `field` (`keep`,
/// `release`, `released`) of an `ipamctl reconcile --json` report.
pub fn report_ids(report: &Value, field: &str) -> Vec<String> {
    container_ids(&report[field])
}

/// The container IDs holding addresses, sorted (`ipamctl --config CONF
/// list --json`).
pub fn owners(conf: &str) -> Vec<String> {
    container_ids(&json(0, &["--config", conf, "list", "--json"]))
}

/// The etcd store a network config file (`.conf` or `.conflist`, read as
/// ipamctl reads it) names.
pub async fn store_of(config: &Path) -> EtcdStore {
    let conf = read_config_file(config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let StoreConf::Etcd(etcd) = &conf.ipam.store else {
        panic!("{}: config must use etcd", config.display());
    };
    EtcdStore::connect(etcd)
        .await
        .unwrap_or_else(|e| panic!("connect to the etcd of {}: {e}", config.display()))
}

/// The test's own allocator of a network config file's network, with the
/// config's options, as node `node` (`None`: the default, this host's
/// name; `Some("")`: records name no node).
pub async fn allocator_of(config: &Path, node: Option<&str>) -> Allocator<EtcdStore> {
    let conf = read_config_file(config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let mut options = conf.options();
    if let Some(node) = node {
        options.node_name = node.to_string();
    }
    let network = conf
        .network()
        .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    Allocator::new(store_of(config).await, network, options)
        .unwrap_or_else(|e| panic!("allocator of {}: {e}", config.display()))
}

/// Writes a cache entry as libcni writes it into `dir`: the captured podman
/// entry (`tests/fixtures/libcni-cache-entry.json`) with this container ID,
/// interface eth0 and network; returns its path.
pub fn cache_entry(dir: &Path, net: &str, cid: &str) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libcni-cache-entry.json");
    let bytes =
        std::fs::read(&fixture).unwrap_or_else(|e| panic!("read {}: {e}", fixture.display()));
    let mut doc: Value = serde_json::from_slice(&bytes).expect("the fixture is JSON");
    doc["containerId"] = cid.into();
    doc["networkName"] = net.into();
    let path = dir.join(format!("{net}-{cid}-eth0"));
    std::fs::write(&path, serde_json::to_vec(&doc).expect("serialize"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
