//! Helpers of the reliability tests: plugin invocations that can be killed
//! mid-flight, a per-worker ledger of what the plugin reported, and an
//! inspection of the stored state through the library (a fresh
//! [`Allocator`] over an [`EtcdStore`] built from the same network config
//! the plugin was given).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use host_etcd::allocator::{Allocator, CheckReport, Options, OwnerRecord};
use host_etcd::cni::NetConf;
use host_etcd::cni::StoreConf;
use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
use serde_json::Value;

use super::plugin::{addresses, host_etcd, Outcome};

/// The network config parsed the way the plugin parses it.
pub fn netconf(conf: &Value) -> NetConf {
    NetConf::parse(&serde_json::to_vec(conf).expect("serialize config"))
        .unwrap_or_else(|e| panic!("test config does not parse: {e}: {conf}"))
}

/// The etcd config the plugin would use, with patient deadlines (for
/// inspection after the faults are over).
pub fn patient_etcd_config(conf: &Value) -> EtcdConfig {
    match netconf(conf).ipam.store {
        StoreConf::Etcd(mut c) => {
            c.dial_timeout = Duration::from_secs(5);
            c.request_timeout = Duration::from_secs(5);
            c
        }
        StoreConf::Local { .. } => panic!("test config has no etcd endpoints: {conf}"),
    }
}

/// The test's own allocator of `conf`'s network with `options`, on the
/// config's first etcd endpoint with the default client settings.
pub async fn allocator_with(conf: &Value, options: Options) -> Allocator<EtcdStore> {
    let endpoint = conf["ipam"]["endpoints"][0]
        .as_str()
        .unwrap_or_else(|| panic!("test config has no etcd endpoints: {conf}"));
    let store = EtcdStore::connect(&EtcdConfig::default().with_endpoints([endpoint]))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    let network = netconf(conf)
        .network()
        .expect("test config ranges are valid");
    Allocator::new(store, network, options).expect("the test's allocator")
}

/// What the store holds for a network: the check report and every owner
/// record, read by a fresh allocator.
pub struct Inspection {
    /// `Allocator::check()`.
    pub report: CheckReport,
    /// `Allocator::owners()`, by `container/ifname`.
    pub owners: BTreeMap<String, OwnerRecord>,
}

/// Runs `f` on a fresh allocator for `conf` (its own tokio runtime).
pub fn with_allocator<T>(conf: &Value, f: impl AsyncFnOnce(&Allocator<EtcdStore>) -> T) -> T {
    let nc = netconf(conf);
    let network = nc.network().expect("test config ranges are valid");
    let options = nc.options();
    let config = patient_etcd_config(conf);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let store = EtcdStore::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connect for inspection: {e}"));
        let a = Allocator::new(store, network, options).expect("allocator for inspection");
        f(&a).await
    })
}

/// Checks and lists owners (panics on a store error: call it with the
/// cluster healthy).
pub fn inspect(conf: &Value) -> Inspection {
    with_allocator(conf, async |a| {
        let report = a.check().await.unwrap_or_else(|e| panic!("check(): {e}"));
        let owners = a
            .owners()
            .await
            .unwrap_or_else(|e| panic!("owners(): {e}"))
            .into_iter()
            .map(|r| (format!("{}/{}", r.container_id, r.ifname), r))
            .collect();
        Inspection { report, owners }
    })
}

/// Asserts that no address is held by two owner records.
pub fn assert_no_duplicate(owners: &BTreeMap<String, OwnerRecord>) {
    let mut seen: BTreeMap<std::net::IpAddr, &str> = BTreeMap::new();
    for (key, r) in owners {
        for ip in &r.ips {
            if let Some(other) = seen.insert(*ip, key) {
                panic!("address {ip} held by both {other} and {key}");
            }
        }
    }
}

/// What the plugin told one worker about its containers (all on `eth0`).
#[derive(Debug, Default)]
pub struct Ledger {
    /// ADD succeeded with these addresses, no DEL attempted since.
    pub held: BTreeMap<String, Vec<String>>,
    /// DEL succeeded (after a successful or failed ADD).
    pub released: BTreeSet<String>,
    /// ADD or DEL failed: the state is unknown until a DEL succeeds.
    pub uncertain: BTreeSet<String>,
    /// Invocations that succeeded.
    pub ok: usize,
    /// Failures by CNI code.
    pub failures: BTreeMap<u64, usize>,
    /// Longest failing invocation.
    pub slowest_failure: Duration,
    /// Longest invocation overall.
    pub slowest: Duration,
}

impl Ledger {
    /// Merges another worker's ledger (container names are distinct).
    pub fn merge(&mut self, other: Ledger) {
        self.held.extend(other.held);
        self.released.extend(other.released);
        self.uncertain.extend(other.uncertain);
        self.ok += other.ok;
        for (c, n) in other.failures {
            *self.failures.entry(c).or_default() += n;
        }
        self.slowest_failure = self.slowest_failure.max(other.slowest_failure);
        self.slowest = self.slowest.max(other.slowest);
    }

    /// Total failures.
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// Records a failed invocation; returns its code.
    fn failure(&mut self, out: &Outcome, took: Duration) -> u64 {
        let code = out.error()["code"].as_u64().expect("numeric code");
        *self.failures.entry(code).or_default() += 1;
        self.slowest_failure = self.slowest_failure.max(took);
        code
    }

    /// ADD of `container` through the plugin; records the outcome.
    pub fn add(&mut self, conf: &Value, container: &str) -> Option<u64> {
        let start = Instant::now();
        let out = super::plugin::Call::add(container, "eth0")
            .config(conf)
            .run();
        let took = start.elapsed();
        self.slowest = self.slowest.max(took);
        if out.exit == Some(0) {
            let ips = addresses(&out.ok_json());
            self.ok += 1;
            self.uncertain.remove(container);
            self.held.insert(container.to_string(), ips);
            None
        } else {
            self.held.remove(container);
            self.uncertain.insert(container.to_string());
            Some(self.failure(&out, took))
        }
    }

    /// DEL of `container` through the plugin; records the outcome.
    pub fn del(&mut self, conf: &Value, container: &str) -> Option<u64> {
        let start = Instant::now();
        let out = super::plugin::Call::del(container, "eth0")
            .config(conf)
            .run();
        let took = start.elapsed();
        self.slowest = self.slowest.max(took);
        if out.exit == Some(0) {
            out.ok_empty();
            self.ok += 1;
            self.held.remove(container);
            self.uncertain.remove(container);
            self.released.insert(container.to_string());
            None
        } else {
            self.held.remove(container);
            self.uncertain.insert(container.to_string());
            Some(self.failure(&out, took))
        }
    }

    /// Asserts the stored owners agree with the ledger: every held
    /// container is recorded with exactly the reported addresses, every
    /// released one is absent. Uncertain ones may be either.
    pub fn assert_matches(&self, owners: &BTreeMap<String, OwnerRecord>) {
        for (c, ips) in &self.held {
            let key = format!("{c}/eth0");
            let r = owners
                .get(&key)
                .unwrap_or_else(|| panic!("{c}: ADD succeeded, no DEL, but no owner record"));
            let stored: Vec<String> = r.ips.iter().map(|ip| ip.to_string()).collect();
            let reported: Vec<String> = ips
                .iter()
                .map(|a| super::plugin::bare_ip(a).to_string())
                .collect();
            assert_eq!(stored, reported, "{c}: stored addresses differ from ADD's");
        }
        for c in &self.released {
            assert!(
                !owners.contains_key(&format!("{c}/eth0")),
                "{c}: DEL succeeded but the owner record is still there"
            );
        }
    }
}

/// A plugin invocation killed with SIGKILL `after` its start (or finished
/// before). Returns `(exit code, stdout)`; `None` exit = killed.
pub fn run_and_kill(
    command: &str,
    container: &str,
    conf: &Value,
    after: Duration,
) -> (Option<i32>, String) {
    let mut child = Command::new(host_etcd())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host-etcd");
    let bytes = serde_json::to_vec(conf).expect("serialize config");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    // The config is small: it fits in the pipe buffer, so this never blocks.
    let _ = stdin.write_all(&bytes);
    drop(stdin);
    std::thread::sleep(after);
    let _ = child.kill(); // only this child; an error means it already exited
    let out = child.wait_with_output().expect("wait for host-etcd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "plugin panicked: {stderr}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
