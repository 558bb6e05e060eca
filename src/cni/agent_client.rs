//! The plugin's side of the node agent (`host-etcd agent`, see
//! `crate::agent`): hand the command to the agent when it answers, else run
//! it directly, once, within the same deadline.
//!
//! Only etcd networks go through the agent (`ipam.agent`, default `auto`):
//! an embedded-store network keeps its exclusive file lock per process and
//! is always served directly, and VERSION never needs a store.
//!
//! **Timing.** The exchange with the agent ends within `budgetMs`, and the
//! whole invocation — the exchange and a direct run after it — within the
//! command's deadline ([`deadline`]: `budgetMs` plus the store's
//! `dialTimeoutMs`, the same bound as a direct call). The plugin asks the
//! agent to acknowledge its request (`agentAckMs`, default
//! [`protocol::DEFAULT_ACK_TIMEOUT`]): an agent that accepts the connection (the
//! kernel does that for a stopped process too) but does not acknowledge in
//! time is taken for frozen, and with `auto` the command runs directly
//! with what is left of the deadline. Once acknowledged, the reply is
//! awaited until `budgetMs` has passed.
//!
//! | what happens | `auto` | `required` |
//! |---|---|---|
//! | socket file absent | direct, at once | code 11 |
//! | connect refused or not within [`CONNECT_TIMEOUT`] | direct | code 11 |
//! | request not fully written | direct | code 11 |
//! | `error` reply (wrong protocol version, refused request): not run | direct | code 11 |
//! | no acknowledgement within `agentAckMs` (agent frozen) | direct | code 11 after `budgetMs` (it waits for the acknowledgement as for the reply) |
//! | connection lost after the request was sent (agent killed) | direct | code 11 |
//! | acknowledged, no reply within `budgetMs` | code 11 | code 11 |
//! | CNI reply | printed as the agent gave it | same |
//!
//! (STATUS reports code 50 instead of 11, as it does for a store that does
//! not answer.)
//!
//! **Why falling back after a lost reply is safe.** The agent may have run
//! the command before the connection broke, or may run it later (a frozen
//! agent that resumes reads the request still queued on its socket).
//! Running it directly as well is harmless for every command: ADD is
//! idempotent per container and interface (the same addresses come back,
//! whether the agent's ADD committed or not, or commits concurrently: the
//! owner record is created by compare-and-swap on its absence, and the
//! loser reads the winner's record); DEL converges (releasing an owner that
//! holds nothing succeeds); CHECK and STATUS only read; GC releases the
//! same non-valid attachments again. And the agent does not commit for a
//! client that went away: a request still queued when its connection
//! closes is dropped, and an ADD that committed after it is released again
//! (`crate::allocator::GroupCommit`) — by a compare-and-swap on the
//! revision it wrote, so a direct ADD that got those same addresses back
//! confirms them first (`Allocator::confirm_owner`: the record written
//! again, the agent's undo then leaves it alone; if the undo came first,
//! the direct ADD allocates again, once). The fallback happens at most once per
//! invocation, never in a loop, and the direct run gets only what is left
//! of the deadline.
//!
//! The frame format both sides speak is [`protocol`] (the agent imports it
//! from here).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::config::{AgentMode, Input, StoreConf};
use super::deadline::{deadline, timed_out};
use super::env::{Command, Env};
use super::error::CniError;
use super::response::Response;
use crate::store::StoreError;
use protocol::{read_frame, write_frame, FrameError, Reply, Request};

pub mod protocol;

/// Longest wait for the agent to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// What the plugin does with one invocation.
#[derive(Debug)]
pub enum Attempt {
    /// The agent ran the command: print this.
    Answered(Response),
    /// No agent answer and none allowed (`required`), or no time left.
    Failed(CniError),
    /// Run it directly, with `spent` of the deadline already used.
    Direct {
        /// Time used talking to the agent.
        spent: Duration,
        /// Whether the agent may run the command too (it received the
        /// request and did not answer): an ADD that gets back existing
        /// addresses confirms them, since the agent undoes an ADD it
        /// committed for a client that went away.
        agent_may_run: bool,
    },
}

/// How an exchange with the agent failed.
#[derive(Debug)]
enum Miss {
    /// The agent certainly did not run the command.
    NotRun(String),
    /// It may have: the request was sent, the reply did not come back.
    Lost(String),
    /// No acknowledgement within this wait: the agent is taken for frozen
    /// (it may run the command later; see the module docs).
    NotAcked(Duration),
    /// No reply within the deadline.
    TimedOut,
}

/// Hands the invocation to the agent if the config allows it; see the
/// module docs for every case.
pub fn attempt(env: &Env, input: &Input<'_>) -> Attempt {
    let direct = Attempt::Direct {
        spent: Duration::ZERO,
        agent_may_run: false,
    };
    if env.command == Command::Version {
        return direct;
    }
    // A config that does not parse is reported by the direct path.
    let Ok(conf) = &input.conf else {
        return direct;
    };
    if conf.ipam.agent == AgentMode::Off || !matches!(conf.ipam.store, StoreConf::Etcd(_)) {
        return direct;
    }
    let required = conf.ipam.agent == AgentMode::Required;
    let socket = conf.ipam.agent_socket.as_path();
    let Ok(text) = std::str::from_utf8(input.bytes) else {
        // The protocol carries stdin as a string.
        return if required {
            Attempt::Failed(unavailable(
                env.command,
                socket,
                "the network config is not UTF-8 and cannot be sent to the agent",
            ))
        } else {
            direct
        };
    };
    if !required && !socket.exists() {
        return direct;
    }
    let started = Instant::now();
    let deadline = deadline(conf);
    let request = Request::Cni {
        env: env_vars(env),
        stdin: text.to_string(),
        ack: true,
    };
    // The agent is connected to its store already: the exchange gets the
    // budget (a direct run after it gets what is left of the deadline).
    let budget = conf.ipam.budget.min(deadline);
    // `required` has nowhere else to go: it waits for the acknowledgement
    // as long as for the reply.
    let ack = if required {
        budget
    } else {
        conf.ipam.agent_ack
    };
    match exchange(socket, &request, budget, Some(ack)) {
        Ok(Reply::Cni { stdout, exit }) => Attempt::Answered(Response {
            stdout,
            stderr: None,
            exit_code: exit,
        }),
        Ok(Reply::Error { error, versions }) => miss(
            env.command,
            socket,
            required,
            started,
            Miss::NotRun(format!(
                "the agent refused the request: {error} (it speaks versions {versions:?})"
            )),
        ),
        Ok(Reply::Status(_) | Reply::Ack) => miss(
            env.command,
            socket,
            required,
            started,
            Miss::Lost("the agent answered a CNI request with a status".into()),
        ),
        Err(m) => miss(env.command, socket, required, started, m),
    }
    .with_deadline(env.command, deadline)
}

impl Attempt {
    /// A direct run with no time left is a timeout at once.
    fn with_deadline(self, command: Command, deadline: Duration) -> Attempt {
        match self {
            Attempt::Direct { spent, .. } if spent >= deadline => {
                Attempt::Failed(timed_out(command, deadline))
            }
            other => other,
        }
    }
}

fn miss(command: Command, socket: &Path, required: bool, started: Instant, m: Miss) -> Attempt {
    match m {
        Miss::TimedOut => Attempt::Failed(unavailable(
            command,
            socket,
            &format!("no reply within {} ms", started.elapsed().as_millis()),
        )),
        Miss::NotAcked(wait) if required => Attempt::Failed(unavailable(
            command,
            socket,
            &format!("no acknowledgement within {} ms", wait.as_millis()),
        )),
        Miss::NotRun(why) | Miss::Lost(why) if required => {
            Attempt::Failed(unavailable(command, socket, &why))
        }
        Miss::NotRun(_) => Attempt::Direct {
            spent: started.elapsed(),
            agent_may_run: false,
        },
        Miss::Lost(_) | Miss::NotAcked(_) => Attempt::Direct {
            spent: started.elapsed(),
            agent_may_run: true,
        },
    }
}

/// Code 11 (STATUS: 50) naming the socket.
fn unavailable(command: Command, socket: &Path, why: &str) -> CniError {
    let text = format!("host-etcd agent at {}: {why}", socket.display());
    match command {
        Command::Status => CniError::NotAvailable(text),
        _ => CniError::Store(StoreError::Unavailable(text)),
    }
}

/// The `CNI_*` variables of `env`, as the agent reads them back.
fn env_vars(env: &Env) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("CNI_COMMAND".to_string(), env.command.as_str().to_string());
    for (key, value) in [
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_IFNAME", &env.ifname),
        ("CNI_NETNS", &env.netns),
        ("CNI_ARGS", &env.args),
        ("CNI_PATH", &env.path),
    ] {
        if let Some(v) = value {
            vars.insert(key.to_string(), v.clone());
        }
    }
    vars
}

/// One request and its reply, on a current-thread runtime of its own.
fn exchange(
    socket: &Path,
    request: &Request,
    deadline: Duration,
    ack: Option<Duration>,
) -> Result<Reply, Miss> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Miss::NotRun(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(exchange_async(socket, request, deadline, ack))
}

/// [`exchange`] inside a runtime: everything within `deadline`; with `ack`,
/// the request's acknowledgement is awaited at most that long (and within
/// the deadline) before the reply.
async fn exchange_async(
    socket: &Path,
    request: &Request,
    deadline: Duration,
    ack: Option<Duration>,
) -> Result<Reply, Miss> {
    let started = Instant::now();
    let left = || deadline.saturating_sub(started.elapsed());
    let connect = tokio::time::timeout(CONNECT_TIMEOUT.min(left()), UnixStream::connect(socket));
    let mut stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Miss::NotRun(format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(Miss::NotRun(format!(
                "not accepting connections within {} ms",
                CONNECT_TIMEOUT.as_millis()
            )))
        }
    };
    let body = request.encode();
    match tokio::time::timeout(left(), write_frame(&mut stream, &body)).await {
        Ok(Ok(())) => {}
        Ok(Err(FrameError::TooLarge { len })) => {
            return Err(Miss::NotRun(format!(
                "the request of {len} bytes is larger than the protocol allows"
            )))
        }
        Ok(Err(e)) => {
            // The agent may have refused the request before reading it
            // (e.g. the peer check) and closed: its error reply is waiting.
            let early = tokio::time::timeout(
                Duration::from_millis(100).min(left()),
                read_frame(&mut stream),
            );
            if let Ok(Ok(Some(body))) = early.await {
                if let Ok(reply @ Reply::Error { .. }) = Reply::decode(&body) {
                    return Ok(reply);
                }
            }
            return Err(Miss::NotRun(format!("cannot send the request: {e}")));
        }
        Err(_) => return Err(Miss::NotRun("the request could not be sent in time".into())),
    }
    if let Some(wait) = ack {
        match tokio::time::timeout(wait.min(left()), read_frame(&mut stream)).await {
            Ok(Ok(Some(body))) => match Reply::decode(&body) {
                Ok(Reply::Ack) => {}
                // An error reply (not run), or an agent that does not
                // acknowledge and answered at once.
                Ok(reply) => return Ok(reply),
                Err(e) => return Err(Miss::Lost(e)),
            },
            // The agent acknowledges before it runs anything.
            Ok(Ok(None)) => {
                return Err(Miss::NotRun(
                    "connection closed before the acknowledgement (agent stopped?)".into(),
                ))
            }
            Ok(Err(e)) => return Err(Miss::NotRun(format!("no acknowledgement: {e}"))),
            Err(_) => return Err(Miss::NotAcked(wait.min(deadline))),
        }
    }
    match tokio::time::timeout(left(), read_frame(&mut stream)).await {
        Ok(Ok(Some(body))) => Reply::decode(&body).map_err(Miss::Lost),
        Ok(Ok(None)) => Err(Miss::Lost(
            "connection closed before the reply (agent stopped?)".into(),
        )),
        Ok(Err(e)) => Err(Miss::Lost(format!("reply lost: {e}"))),
        Err(_) => Err(Miss::TimedOut),
    }
}

/// One request and its reply inside the caller's runtime, failures as
/// text (`host-etcd agent status`).
#[cfg(feature = "cli")]
pub(crate) async fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, String> {
    exchange_async(socket, request, timeout, None)
        .await
        .map_err(|m| match m {
            Miss::NotRun(s) | Miss::Lost(s) => s,
            Miss::TimedOut | Miss::NotAcked(_) => {
                format!("no reply within {} ms", timeout.as_millis())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::NetConf;

    /// [`super::attempt`] of stdin as the plugin reads it.
    fn attempt(env: &Env, stdin: &[u8]) -> Attempt {
        super::attempt(env, &Input::parse(stdin))
    }

    fn env(command: Command) -> Env {
        Env {
            args: Some("IP=10.0.0.5".into()),
            ..crate::cni::env::test_env(command)
        }
    }

    #[test]
    fn env_vars_read_back_as_the_same_env() {
        for command in [Command::Add, Command::Del, Command::Check, Command::Gc] {
            let e = env(command);
            let vars = env_vars(&e);
            let back = Env::from_lookup(|k| vars.get(k).map(Into::into)).expect("valid env");
            assert_eq!(back, e);
        }
    }

    fn conf(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"1.1.0","name":"n","ipam":{{"subnet":"10.0.0.0/24","endpoints":["127.0.0.1:1"]{extra}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn direct_without_agent_socket_in_auto_and_11_when_required() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let auto = conf(&format!(r#","agentSocket":"{}""#, sock.display()));
        assert!(matches!(
            attempt(&env(Command::Add), &auto),
            Attempt::Direct { spent, agent_may_run: false } if spent.is_zero()
        ));
        let required = conf(&format!(
            r#","agent":"required","agentSocket":"{}""#,
            sock.display()
        ));
        match attempt(&env(Command::Add), &required) {
            Attempt::Failed(e) => assert_eq!(e.code(), 11, "{e}"),
            other => panic!("{other:?}"),
        }
        match attempt(&env(Command::Status), &required) {
            Attempt::Failed(e) => assert_eq!(e.code(), 50, "{e}"),
            other => panic!("{other:?}"),
        }
        // A socket file nobody listens on: refused, so direct (auto).
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let auto = conf(&format!(r#","agentSocket":"{}""#, stale.display()));
        assert!(matches!(
            attempt(&env(Command::Add), &auto),
            Attempt::Direct { .. }
        ));
    }

    #[test]
    fn an_agent_that_never_acknowledges_is_left_for_direct_in_auto_and_is_11_when_required() {
        // A listener nobody accepts on: the kernel queues the connection
        // and takes the request, as for a stopped agent.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("frozen.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let auto = conf(&format!(
            r#","agentSocket":"{}","agentAckMs":50,"budgetMs":5000"#,
            sock.display()
        ));
        match attempt(&env(Command::Add), &auto) {
            Attempt::Direct {
                spent,
                agent_may_run: true,
            } => assert!(spent >= Duration::from_millis(50), "{spent:?}"),
            other => panic!("{other:?}"),
        }
        let required = conf(&format!(
            r#","agent":"required","agentSocket":"{}","agentAckMs":50,"budgetMs":300"#,
            sock.display()
        ));
        match attempt(&env(Command::Add), &required) {
            Attempt::Failed(e) => {
                assert_eq!(e.code(), 11, "{e}");
                assert!(
                    e.to_string().contains("no acknowledgement within 300 ms"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn off_embedded_and_version_never_try_the_agent() {
        let required_missing = r#","agent":"required","agentSocket":"/nonexistent/a.sock""#;
        assert!(matches!(
            attempt(&env(Command::Version), &conf(required_missing)),
            Attempt::Direct { .. }
        ));
        let off = conf(r#","agent":"off","agentSocket":"/nonexistent/a.sock""#);
        assert!(matches!(
            attempt(&env(Command::Add), &off),
            Attempt::Direct { .. }
        ));
        let embedded = br#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","agent":"required","agentSocket":"/nonexistent/a.sock"}}"#;
        assert!(matches!(
            attempt(&env(Command::Add), embedded),
            Attempt::Direct { .. }
        ));
        let bad = conf(r#","agent":"sometimes""#);
        assert!(
            matches!(attempt(&env(Command::Add), &bad), Attempt::Direct { .. }),
            "the direct path reports the bad field"
        );
        assert_eq!(NetConf::parse(&bad).err().map(|e| e.code()), Some(7));
    }
}
