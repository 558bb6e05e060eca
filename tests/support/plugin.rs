//! Running a CNI plugin binary the way a container runtime does: the `CNI_*`
//! variables in a clean environment, the network config on stdin, the result
//! or the CNI error JSON read back from stdout.
//!
//! * [`host_etcd`] — the plugin under test (`CARGO_BIN_EXE_host-etcd`);
//!   [`host_local`] — Debian's reference plugin, for differential tests.
//! * [`Call`] — one invocation (builder); [`Outcome`] — what came back, with
//!   assertions that every error is well-formed CNI error JSON on stdout,
//!   with a non-zero exit and no panic on stderr.
//! * [`shared_etcd`] — one etcd server shared by the tests of a file that
//!   run at the same time (killed when the last of them lets go).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use super::EtcdServer;

/// Where Debian's containernetworking-plugins package installs host-local.
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// The `host-etcd` plugin binary built by cargo for this test run.
pub fn host_etcd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-etcd"))
}

/// The reference `host-local` plugin; panics with install instructions when
/// missing.
pub fn host_local() -> PathBuf {
    let p = Path::new(HOST_LOCAL);
    assert!(
        p.is_file(),
        "{HOST_LOCAL} not found: install the reference plugins with \
         `apt-get install containernetworking-plugins`"
    );
    p.to_path_buf()
}

/// An etcd server shared with every other test of this process that holds
/// one right now; a new one is started when nobody does. Dropping the last
/// `Arc` kills it, so nothing outlives the test binary.
pub fn shared_etcd() -> Arc<EtcdServer> {
    static SHARED: Mutex<Weak<EtcdServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(etcd) = slot.upgrade() {
        return etcd;
    }
    let etcd = Arc::new(EtcdServer::start());
    *slot = Arc::downgrade(&etcd);
    etcd
}

/// One plugin invocation.
#[derive(Clone, Debug)]
pub struct Call {
    exe: PathBuf,
    /// The plugin under test: its errors must carry `cniVersion`.
    strict: bool,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
    /// Run on a simulated node: in a UTS namespace of its own with this
    /// host name (the plugin records it in owner records).
    node: Option<String>,
}

impl Call {
    /// `command` on `exe` with no attachment variables set.
    pub fn bare(exe: &Path, command: &str) -> Call {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), command.to_string());
        Call {
            exe: exe.to_path_buf(),
            strict: exe == host_etcd(),
            env,
            stdin: Vec::new(),
            node: None,
        }
    }

    /// Runs the plugin as node `name` would: in a new UTS namespace
    /// (`unshare --uts`, needs root) whose host name is `name`.
    pub fn on_node(mut self, name: &str) -> Call {
        self.node = Some(name.to_string());
        self
    }

    /// `command` for attachment (`container`, `ifname`), with `CNI_NETNS`
    /// and `CNI_PATH` set as a runtime sets them.
    pub fn new(exe: &Path, command: &str, container: &str, ifname: &str) -> Call {
        Call::bare(exe, command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", ifname)
            .env("CNI_NETNS", &format!("/var/run/netns/{container}"))
            .env("CNI_PATH", "/opt/cni/bin")
    }

    /// ADD on the host-etcd plugin.
    pub fn add(container: &str, ifname: &str) -> Call {
        Call::new(&host_etcd(), "ADD", container, ifname)
    }

    /// DEL on the host-etcd plugin.
    pub fn del(container: &str, ifname: &str) -> Call {
        Call::new(&host_etcd(), "DEL", container, ifname)
    }

    /// CHECK on the host-etcd plugin.
    pub fn check(container: &str, ifname: &str) -> Call {
        Call::new(&host_etcd(), "CHECK", container, ifname)
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Call {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes an environment variable.
    pub fn unset(mut self, key: &str) -> Call {
        self.env.remove(key);
        self
    }

    /// Sets `CNI_ARGS`.
    pub fn args(self, args: &str) -> Call {
        self.env("CNI_ARGS", args)
    }

    /// The config on stdin, as JSON.
    pub fn config(mut self, config: &Value) -> Call {
        self.stdin = serde_json::to_vec(config).expect("serialize config");
        self
    }

    /// Raw bytes on stdin.
    pub fn stdin(mut self, bytes: &[u8]) -> Call {
        self.stdin = bytes.to_vec();
        self
    }

    /// Runs the plugin in a clean environment (only `PATH` and the
    /// variables set here) and collects its output.
    pub fn run(&self) -> Outcome {
        let mut cmd = match &self.node {
            None => Command::new(&self.exe),
            Some(node) => {
                let mut c = Command::new("unshare");
                c.args(["--uts", "--", "sh", "-c", "hostname \"$0\" && exec \"$1\""])
                    .arg(node)
                    .arg(&self.exe);
                c
            }
        };
        cmd.env_clear()
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.exe.display()));
        let mut stdin = child.stdin.take().expect("stdin pipe");
        let bytes = self.stdin.clone();
        // Write from a thread so a plugin that answers before reading all of
        // stdin cannot deadlock the test.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let out = child.wait_with_output().expect("wait for plugin");
        let _ = writer.join();
        Outcome {
            call: self.describe(),
            strict: self.strict,
            exit: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the plugin as [`Call::run`] does, its stdin written and
    /// closed, without waiting for it (stdout and stderr discarded): for
    /// tests that kill it or let it give up.
    pub fn spawn(&self) -> std::process::Child {
        let mut cmd = Command::new(&self.exe);
        cmd.env_clear()
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.exe.display()));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&self.stdin);
        }
        child
    }

    fn describe(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let node = self
            .node
            .as_ref()
            .map_or(String::new(), |n| format!("[node {n}] "));
        format!(
            "{node}{} {} <<< {}",
            env.join(" "),
            self.exe.display(),
            String::from_utf8_lossy(&self.stdin)
        )
    }
}

/// What one invocation produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The invocation, for failure messages.
    pub call: String,
    /// Whether this was host-etcd (whose errors always carry `cniVersion`;
    /// host-local 1.1.1's do not).
    pub strict: bool,
    /// Exit code (`None` when killed by a signal).
    pub exit: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl Outcome {
    fn context(&self) -> String {
        format!(
            "\n  call: {}\n  exit: {:?}\n  stdout: {}\n  stderr: {}",
            self.call, self.exit, self.stdout, self.stderr
        )
    }

    /// Asserts stderr shows no panic or backtrace.
    pub fn assert_no_panic(&self) {
        for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr.contains(bad),
                "plugin stderr shows a panic ({bad:?}):{}",
                self.context()
            );
        }
    }

    /// Asserts success (exit 0) and returns stdout parsed as JSON.
    pub fn ok_json(&self) -> Value {
        self.assert_no_panic();
        assert_eq!(self.exit, Some(0), "expected success:{}", self.context());
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):{}", self.context()))
    }

    /// Asserts success (exit 0) with nothing on stdout.
    pub fn ok_empty(&self) {
        self.assert_no_panic();
        assert_eq!(self.exit, Some(0), "expected success:{}", self.context());
        assert!(
            self.stdout.trim().is_empty(),
            "expected no output:{}",
            self.context()
        );
    }

    /// Asserts failure: a non-zero exit, the CNI error JSON on stdout
    /// (numeric `code`, string `msg`, and for host-etcd `cniVersion`), no
    /// panic; returns the error object.
    pub fn error(&self) -> Value {
        self.assert_no_panic();
        assert!(
            matches!(self.exit, Some(c) if c != 0),
            "expected a non-zero exit:{}",
            self.context()
        );
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("error output is not JSON ({e}):{}", self.context()));
        assert!(v["code"].is_u64(), "no numeric code:{}", self.context());
        assert!(v["msg"].is_string(), "no msg:{}", self.context());
        if self.strict {
            assert!(
                v["cniVersion"].is_string(),
                "no cniVersion:{}",
                self.context()
            );
        }
        v
    }

    /// Asserts failure with exactly `code` and returns the error object.
    pub fn err(&self, code: u64) -> Value {
        let v = self.error();
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "wrong code:{}",
            self.context()
        );
        v
    }

    /// The `details` (or `msg`) of an error, for substring checks.
    pub fn details(&self) -> String {
        let v = self.error();
        v["details"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| v["msg"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// The addresses (`ip/prefix` strings) of a result's `ips`.
pub fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("result has no ips: {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().expect("ips[].address").to_string())
        .collect()
}

/// The bare IP (no prefix) of an `ip/prefix` string.
pub fn bare_ip(address: &str) -> std::net::IpAddr {
    address
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not ip/prefix: {address}"))
}

/// The bare IPs (no prefix) of a result's `ips`, in order.
pub fn ips(result: &Value) -> Vec<std::net::IpAddr> {
    addresses(result).iter().map(|a| bare_ip(a)).collect()
}

/// ADDs of `ids` (interface eth0) with config `conf`, all at once, one
/// plugin process each: every call must succeed; their bare IPs, in the
/// order of `ids`.
pub fn add_all_at_once(ids: &[String], conf: &Value) -> Vec<Vec<std::net::IpAddr>> {
    std::thread::scope(|s| {
        let calls: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| ips(&Call::add(id, "eth0").config(conf).run().ok_json())))
            .collect();
        calls
            .into_iter()
            .map(|h| h.join().expect("an ADD thread panicked"))
            .collect()
    })
}

/// Asserts that no address occurs twice among all the results' addresses.
pub fn assert_distinct(all: &[Vec<std::net::IpAddr>]) {
    let flat: Vec<_> = all.iter().flatten().collect();
    let set: std::collections::HashSet<_> = flat.iter().collect();
    assert_eq!(set.len(), flat.len(), "an address was handed out twice");
}
