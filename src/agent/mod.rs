//! The node agent, `host-etcd agent`: a long-running process per node that
//! serves the plugin over a unix socket, so the plugin processes of a node
//! share warm allocators instead of each connecting to etcd and reading its
//! node cache file.
//!
//! * One etcd client per distinct store config (endpoints, TLS files,
//!   user and password, deadlines), connected on first use.
//! * One [`Allocator`](crate::allocator::Allocator) per network config
//!   (store, name, prefix, range sets, chunk size, CAS attempts, budget),
//!   built on first use and kept: its in-memory node cache makes an ADD or
//!   a DEL one etcd transaction. At most `state::MAX_NETWORKS`.
//! * A request carries the plugin's whole network config and `CNI_*`
//!   environment, so one agent serves every network of the node; it runs
//!   the plugin's own command logic (`crate::cni::command::dispatch_with`)
//!   and answers exactly what the plugin would print, with its exit status.
//!   Embedded-store networks (no `endpoints`) are run exactly as the
//!   plugin runs them (store opened and closed per request, off the
//!   runtime); the plugin itself never sends them
//!   (`crate::cni::agent_client` serves them directly).
//! * Requests run concurrently, one task per connection on a multi-thread
//!   runtime. Concurrent ADDs of one network are group-committed, and so
//!   are concurrent DELs (`ARCHITECTURE.md`, "Through the node agent, and
//!   group commit"). A request is acknowledged once read, before it runs;
//!   a request whose client went away is never committed late (dropped,
//!   or an ADD committed meanwhile released again).
//!
//! The protocol (versioned, length-prefixed JSON frames) lives with the
//! plugin's side, in `crate::cni::agent_client::protocol`; the agent
//! imports it from there.
//!
//! ## Running it
//!
//! ```text
//! host-etcd agent [--socket /run/host-etcd/agent.sock] [--read-timeout-ms 5000]
//!                 [--drain-timeout-ms 10000] [--max-connections 1024] [--log-requests]
//!                 [--batch-window-us 1000]
//!                 [--reconcile-interval DURATION [--reconcile-grace 10m]
//!                  [--cache-dir /var/lib/cni/results] [--check-netns]]
//!                 [--metrics-listen HOST:PORT]
//! host-etcd agent status [--socket PATH] [--timeout-ms 2000]
//! ```
//!
//! * The socket's directory is created with mode 0700 if missing; the
//!   socket file gets mode 0600, and a peer whose uid (`SO_PEERCRED`) is
//!   neither root nor the agent's own user is refused.
//! * A socket file left by an agent that died is removed at start (nothing
//!   answers on it); if something answers, the agent refuses to start
//!   (exit 1): another agent runs. A path that is not a socket is never
//!   removed.
//! * SIGTERM or SIGINT: stop accepting, remove the socket (new plugin
//!   processes go direct), let in-flight requests finish (at most the
//!   drain timeout), save every network's node cache file, exit 0.
//! * A reply is sent only after its command returned, so every
//!   acknowledged ADD and DEL is committed by compare-and-swap in etcd;
//!   `kill -9` loses nothing acknowledged, and a restart needs no cleanup.
//! * `status` prints the agent's status document (JSON: `healthy`, store
//!   endpoints and whether connected, networks served with their request
//!   and error counts and last error, totals, protocol errors, refused
//!   peers) and exits 0; 1 when the agent does not answer. `healthy` is
//!   false while some network's last request failed because its store was
//!   unavailable (code 11 or 50).
//! * `--reconcile-interval`: the leak cleanup of `ipamctl reconcile --yes`
//!   for this node, every interval, on every served network; one
//!   `reconcile` log line per pass per network (`ops`).
//! * `--metrics-listen`: the `/metrics` of `ipamctl metrics` for every
//!   served network, plus the agent's own figures (`ops`). An address
//!   that cannot be bound: the agent does not start (exit 1, `start_failed`
//!   naming the address).
//! * Logs: one JSON object per line on stderr (`log`): start, stop,
//!   stale socket, store connected, network added, failed requests,
//!   protocol errors, refused peers (every request with `--log-requests`).
//!
//! Limits: TLS files are read when a store client is created; after a
//! certificate rotation restart the agent.

//! ## Files
//!
//! Each file imports only the ones below it in this table.
//!
//! | file | concern |
//! |---|---|
//! | `cli` | the command line: `host-etcd agent` and `host-etcd agent status` |
//! | `server` | the socket, the accept loop, one connection's request and reply, the drain |
//! | `ops` | the periodic reconcile and the metrics |
//! | `state` | the store clients and warm allocators kept, the counters, the status document |
//! | `config` | the settings (`config::Config`) |
//! | `liveness` | the node's liveness key in etcd |
//! | `log` | the JSON log lines |
//!
//! ## Features
//!
//! The whole module is built only with the `cli` feature (on by default):
//! nothing below it imports it, and the plugin's side of the protocol is in
//! [`crate::cni`].

mod cli;
pub(crate) mod config;
pub(crate) mod liveness;
pub(crate) mod log;
pub(crate) mod ops;
pub(crate) mod server;
pub(crate) mod state;

pub use cli::main;
