//! A `host-etcd agent` process for tests: started with its socket in a
//! directory, its stderr (JSON lines) kept in a log file, killed on drop.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::plugin::host_etcd;

/// A running `host-etcd agent --socket <dir>/agent.sock`; killed on drop.
pub struct Agent {
    child: Option<Child>,
    /// The agent's socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent with its socket in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Agent {
        Agent::start_with(dir, &[])
    }

    /// [`Agent::start`] with extra command-line arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Agent {
        let agent = Agent::spawn(dir, extra);
        agent.wait_ready();
        agent
    }

    /// Starts the process without waiting for it to answer.
    pub fn spawn(dir: &Path, extra: &[&str]) -> Agent {
        Agent::spawn_as(dir, None, extra)
    }

    /// Starts an agent as simulated node `node` (its own UTS namespace with
    /// that host name, `unshare --uts`; the process keeps its pid) and
    /// waits until it answers.
    pub fn start_on_node(dir: &Path, node: &str, extra: &[&str]) -> Agent {
        let agent = Agent::spawn_as(dir, Some(node), extra);
        agent.wait_ready();
        agent
    }

    fn spawn_as(dir: &Path, node: Option<&str>, extra: &[&str]) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let socket = dir.join("agent.sock");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("agent-{n}.log"));
        let mut command = match node {
            None => Command::new(host_etcd()),
            Some(node) => {
                let mut c = Command::new("unshare");
                c.args(["--uts", "--", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
                    .arg(node)
                    .arg(host_etcd());
                c
            }
        };
        let child = command
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("spawn agent");
        Agent {
            child: Some(child),
            socket,
            log,
        }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.socket.exists() && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    }

    /// SIGSTOP, and waits until every thread of the agent is stopped (the
    /// kernel still queues connections on its socket).
    pub fn freeze(&self) {
        self.signal("STOP");
        super::wait_stopped(self.pid());
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent did not exit within {within:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every stderr line, each of which must be a JSON object.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("agent log line is not JSON ({e}): {l}"));
                assert!(v["ts"].is_u64() && v["level"].is_string() && v["event"].is_string());
                v
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One request frame of the agent protocol: a `u32` big-endian length and
/// the bytes.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Reads one reply frame (`None`: the connection closed without one).
pub fn read_reply(s: &mut UnixStream) -> Option<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("reply is JSON"))
}

/// The agent's status document, `None` when it does not answer.
pub fn status(socket: &Path) -> Option<Value> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(&frame(br#"{"v":1,"op":"status"}"#)).ok()?;
    read_reply(&mut s).map(|v| v["status"].clone())
}

/// Requests the status document counts for network `name`.
pub fn network_requests(status: &Value, name: &str) -> u64 {
    status["networks"]
        .as_array()
        .expect("networks")
        .iter()
        .filter(|n| n["name"] == name)
        .map(|n| n["requests"].as_u64().expect("requests"))
        .sum()
}

/// A dual-stack network config on the etcd at `etcd_url` (ranges `v4` and
/// `v6`) keeping its node files in `dir`; the entries of `ipam` are set in
/// (or replace those of) its `ipam` object.
pub fn network_conf(
    etcd_url: &str,
    name: &str,
    (v4, v6): (&str, &str),
    dir: &Path,
    ipam: Value,
) -> Value {
    let mut c = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": name,
        "ipam": {
            "type": "host-etcd",
            "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
            "endpoints": [etcd_url],
            "dataDir": dir.to_str().expect("a UTF-8 path"),
        }
    });
    if let Some(entries) = ipam.as_object() {
        for (k, v) in entries {
            c["ipam"][k] = v.clone();
        }
    }
    c
}

/// The `ipam` entries that send a network's requests to the agent at
/// `socket` in `mode` (`required`, `preferred`, `off`).
pub fn via_agent(socket: &Path, mode: &str) -> Value {
    serde_json::json!({"agent": mode, "agentSocket": socket.to_str().expect("a UTF-8 path")})
}
