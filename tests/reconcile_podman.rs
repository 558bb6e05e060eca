//! `ipamctl reconcile` under a real container runtime: Debian's podman
//! (CNI backend, libcni, the `bridge` plugin) runs containers whose
//! addresses come from the host-etcd plugin on a throwaway etcd, then some
//! of them are removed so that no DEL reaches the plugin, and reconcile
//! frees exactly those.
//!
//! How the DELs are lost (realistic, not simulated inside our code):
//! `podman rm -f` runs while the plugin directory lacks `host-etcd`, so
//! libcni's DEL fails. Podman removes the container anyway (its network
//! namespace too) and libcni keeps the container's cache entry, since it
//! only deletes it after a successful DEL:
//! - `gone-netns`: only that. The cache entry still names the attachment,
//!   so plain reconcile keeps it; `--check-netns` sees that the entry's
//!   network namespace no longer exists and frees it.
//! - `lost`: its cache entry is removed as well, as when the runtime's
//!   state is lost (a wiped or tmpfs `/var/lib/cni`, a runtime dying
//!   between the plugin's ADD and libcni's cache write): no attachment at
//!   all, plain reconcile frees it.
//!
//! The live containers are kept throughout; a dry run frees nothing; the
//! default grace keeps everything young; `--interval` frees a new leak
//! and stops on SIGTERM. Everything started is removed afterwards
//! (containers, the bridge, cgroups, podman's storage, cache entries of
//! the test's network, etcd).
//!
//! Needs root, podman, runc, busybox-static and containernetworking-plugins
//! (scripts/setup.sh installs them); libcni writes its cache to
//! /var/lib/cni/results, podman's default.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ipamctl::{json, owners, report_ids, text};
use support::EtcdServer;

const PLUGIN: &str = env!("CARGO_BIN_EXE_host-etcd");
const CACHE: &str = "/var/lib/cni/results";

/// A self-contained podman: its own containers.conf, storage, run root,
/// network config and plugin directories, cgroup parent and network.
struct Podman {
    dir: tempfile::TempDir,
    net: String,
    bridge: String,
    cgroup: String,
}

impl Podman {
    fn new(etcd: &EtcdServer) -> Podman {
        for bin in [
            "/usr/bin/podman",
            "/usr/sbin/runc",
            "/usr/lib/cni/bridge",
            "/bin/busybox",
        ] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/setup.sh (podman, runc, busybox-static, \
                 containernetworking-plugins)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{:06x}", fastrand::u32(..0x100_0000));
        let p = dir.path();
        let net = format!("rcpod{tag}");
        let bridge = format!("rcbr{tag}");
        let cgroup = format!("host-etcd-test-{tag}");
        for d in ["plugins", "netd", "root", "runroot", "tmp", "rootfs/bin"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        for plugin in ["bridge", "loopback"] {
            std::os::unix::fs::symlink(
                Path::new("/usr/lib/cni").join(plugin),
                p.join("plugins").join(plugin),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(PLUGIN, p.join("plugins/host-etcd")).unwrap();
        std::fs::copy("/bin/busybox", p.join("rootfs/bin/busybox")).unwrap();
        for l in ["sh", "sleep", "ip"] {
            std::os::unix::fs::symlink("busybox", p.join("rootfs/bin").join(l)).unwrap();
        }
        std::fs::write(
            p.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugins}\"]\n\
                 network_config_dir = \"{netd}\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nlock_type = \"file\"\n",
                plugins = p.join("plugins").display(),
                netd = p.join("netd").display()
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p.join("root").display(),
                p.join("runroot").display()
            ),
        )
        .unwrap();
        // A random /24 of 10.128.0.0/9 for the bridge.
        let subnet = format!("10.{}.{}.0/24", 128 + fastrand::u8(..127), fastrand::u8(..));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipam": {
                    "type": "host-etcd",
                    "endpoints": [etcd.url()],
                    "prefix": "/reconcile-podman",
                    "subnet": subnet
                }
            }]
        });
        std::fs::write(
            p.join("netd").join(format!("{net}.conflist")),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        Podman {
            dir,
            net,
            bridge,
            cgroup,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir
            .path()
            .join("netd")
            .join(format!("{}.conflist", self.net))
    }

    fn run(&self, args: &[&str]) -> Output {
        let p = self.dir.path();
        Command::new("podman")
            .env_remove("CNI_ARGS")
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .arg("--root")
            .arg(p.join("root"))
            .arg("--runroot")
            .arg(p.join("runroot"))
            .arg("--tmpdir")
            .arg(p.join("tmp"))
            .arg("--network-config-dir")
            .arg(p.join("netd"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a container sleeping on the network; returns its full ID.
    fn start(&self, name: &str) -> String {
        let rootfs = self.dir.path().join("rootfs");
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &self.net,
            "--cgroup-parent",
            &format!("/{}", self.cgroup),
            "--rootfs",
            rootfs.to_str().unwrap(),
            "/bin/sleep",
            "100000",
        ])
    }

    /// `podman rm -f` while the plugin is missing, so libcni's DEL fails
    /// and never reaches host-etcd.
    fn remove_losing_del(&self, names: &[&str]) {
        let plugin = self.dir.path().join("plugins/host-etcd");
        let away = self.dir.path().join("host-etcd.away");
        std::fs::rename(&plugin, &away).unwrap();
        let mut args = vec!["rm", "-f", "-t", "0"];
        args.extend_from_slice(names);
        let out = self.run(&args);
        std::fs::rename(&away, &plugin).unwrap();
        assert!(out.status.success(), "podman rm {names:?}\n{}", text(&out));
        let listed = self.ok(&["ps", "-a", "--format", "{{.Names}}"]);
        for n in names {
            assert!(
                !listed.lines().any(|l| l == *n),
                "podman still has {n}: {listed}"
            );
        }
    }

    fn cache_file(&self, id: &str) -> PathBuf {
        Path::new(CACHE).join(format!("{}-{id}-eth0", self.net))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "-a", "-t", "0"]);
        // Entries of containers whose DEL was lost on purpose.
        if let Ok(entries) = std::fs::read_dir(CACHE) {
            let prefix = format!("{}-", self.net);
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // The cgroup parent, in every hierarchy, deepest first.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let top = h.path().join(&self.cgroup);
                if top.is_dir() {
                    remove_cgroup(&top);
                }
            }
            remove_cgroup(&Path::new("/sys/fs/cgroup").join(&self.cgroup));
        }
    }
}

fn remove_cgroup(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                remove_cgroup(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn reconcile_frees_exactly_the_containers_whose_del_was_lost() {
    let etcd = EtcdServer::start();
    let podman = Podman::new(&etcd);
    let config = podman.config();
    let conf = config.to_str().unwrap();
    let live1 = podman.start("live1");
    let live2 = podman.start("live2");
    let gone = podman.start("gone-netns");
    let lost = podman.start("lost");
    let all = sorted(vec![
        live1.clone(),
        live2.clone(),
        gone.clone(),
        lost.clone(),
    ]);
    assert_eq!(owners(conf), all);
    for id in &all {
        assert!(
            podman.cache_file(id).is_file(),
            "no libcni cache entry for {id}"
        );
    }
    // Each owner record names this host, as reconcile's default --node.
    let list = json(0, &["--config", conf, "list", "--json"]);
    let host = host_etcd::allocator::local_hostname();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["node"] == host.as_str()),
        "{list}"
    );

    podman.remove_losing_del(&["gone-netns", "lost"]);
    // libcni kept both entries (their DEL failed); `lost` loses it too.
    assert!(podman.cache_file(&gone).is_file() && podman.cache_file(&lost).is_file());
    std::fs::remove_file(podman.cache_file(&lost)).unwrap();
    // No DEL reached the plugin: every address is still held.
    assert_eq!(owners(conf), all);

    let reconcile = |extra: &[&str], code: i32| -> Value {
        let mut args = vec![
            "--config",
            conf,
            "reconcile",
            "--cache-dir",
            CACHE,
            "--json",
        ];
        args.extend_from_slice(extra);
        json(code, &args)
    };
    // Default grace (10 minutes): everything is younger, nothing would go.
    let v = reconcile(&["--dry-run"], 0);
    assert_eq!(report_ids(&v, "release"), Vec::<String>::new());
    assert_eq!(report_ids(&v, "keep"), all);
    // Dry runs with grace 0: exactly the leaks, nothing written.
    let v = reconcile(&["--dry-run", "--grace", "0"], 0);
    assert_eq!(report_ids(&v, "release"), std::slice::from_ref(&lost));
    assert_eq!(v["release"][0]["reason"], "notAttached");
    assert_eq!(
        report_ids(&v, "keep"),
        sorted(vec![live1.clone(), live2.clone(), gone.clone()])
    );
    let v = reconcile(&["--dry-run", "--grace", "0", "--check-netns"], 0);
    assert_eq!(
        report_ids(&v, "release"),
        sorted(vec![gone.clone(), lost.clone()])
    );
    assert!(
        v["release"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "netnsGone"),
        "{v}"
    );
    assert_eq!(owners(conf), all);

    // The real runs.
    let v = reconcile(&["--grace", "0", "--yes"], 0);
    assert_eq!(report_ids(&v, "released"), std::slice::from_ref(&lost));
    assert_eq!(
        owners(conf),
        sorted(vec![live1.clone(), live2.clone(), gone.clone()])
    );
    let v = reconcile(&["--grace", "0", "--yes", "--check-netns"], 0);
    assert_eq!(report_ids(&v, "released"), std::slice::from_ref(&gone));
    assert_eq!(owners(conf), sorted(vec![live1.clone(), live2.clone()]));
    let v = json(0, &["--config", conf, "check", "--json"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    // The live containers still run with their addresses.
    for name in ["live1", "live2"] {
        let addrs = podman.ok(&["exec", name, "/bin/ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(addrs.contains("inet "), "{addrs}");
    }

    // Periodic mode: a new lost DEL is freed by a later pass; SIGTERM
    // stops the process cleanly.
    let child = Command::new(support::ipamctl::EXE)
        .args([
            "--config",
            conf,
            "reconcile",
            "--cache-dir",
            CACHE,
            "--grace",
            "0",
            "--yes",
            "--check-netns",
            "--interval",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    podman.remove_losing_del(&["live2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while owners(conf) != std::slice::from_ref(&live1) {
        assert!(
            Instant::now() < deadline,
            "live2 never freed: {:?}",
            owners(conf)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passes = stderr
        .lines()
        .filter(|l| l.contains("reconcile network"))
        .count();
    assert!(passes >= 1, "{stderr}");
    assert!(stderr.contains("released 1"), "{stderr}");
    assert!(stderr.contains("stopped by signal"), "{stderr}");
    assert_eq!(owners(conf), std::slice::from_ref(&live1));
}
