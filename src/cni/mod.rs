//! The CNI protocol layer: environment and `CNI_ARGS`, network config
//! parsing, `resolv.conf`, versioned results, command dispatch, and the one
//! place where errors become CNI error codes.
//!
//! Entry point: [`respond`] (everything, errors included, as the binary
//! needs it; the node agent runs one command with the crate-internal
//! `execute`, which keeps the typed error). How one ADD goes
//! from [`respond`] through the allocator to the store and back, step by
//! step: `ARCHITECTURE.md`, "The life of one ADD".
//!
//! | file | concern |
//! |---|---|
//! | `env` | `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS`, `CNI_PATH` |
//! | `args` | `CNI_ARGS`, deploy stage, requested addresses |
//! | `config` | the network config JSON → [`config::NetConf`] → allocator `Network` + store choice |
//! | `resolv` | `resolv.conf` → `dns` |
//! | `result` | allocation → result JSON per version; `VERSION` answer |
//! | `error` | [`CniError`] → code, `msg`, error JSON |
//! | `node` | node-local state: the node cache file and the node lock |
//! | `command` | ADD / DEL / CHECK / VERSION / GC / STATUS |
//! | `deadline` | one command's deadline (`budgetMs` plus the store's connect allowance) and its timeout error |
//! | `response` | what an invocation prints and its exit code ([`Response`]), direct or from the agent |
//! | `status` | the STATUS policy: a failing store is code 50 only after `statusGraceMs` (node-local failure-streak file), or at once (`strict`) |
//! | `status_policy` | the `statusPolicy` / `statusGraceMs` setting (`status_policy::StatusPolicy`) |
//! | `log` | the plugin log: one JSON line per invocation in `logFile`, size-bounded with one rotated generation |
//! | `agent_client` | handing a command to the node agent (`host-etcd agent`), or not; the wire protocol both speak (`agent_client::protocol`) |
//!
//! ## Error codes
//!
//! Every error the plugin reports is a [`CniError`]; [`CniError::code`] (in
//! `error`) is the one mapping of errors to CNI codes, and README.md's
//! "Error codes" is the one table of what each code means and when it is
//! raised. The well-known codes (1–11, 50) are the CNI specification's; the
//! plugin's own are 100–104 and 999.

pub(crate) mod agent_client;
pub(crate) mod args;
pub(crate) mod command;
mod conf_file;
pub(crate) mod config;
pub(crate) mod deadline;
pub(crate) mod env;
pub(crate) mod error;
mod json;
pub(crate) mod log;
pub(crate) mod node;
pub(crate) mod resolv;
pub(crate) mod response;
pub(crate) mod result;
pub(crate) mod status;
pub(crate) mod status_policy;
pub(crate) mod version;

pub use command::respond;
pub use conf_file::read_config_file;
pub use config::{NetConf, StoreConf};
pub use env::{Command, Env};
pub use error::CniError;
pub use response::Response;
pub use version::CniVersion;

/// The line printed when the plugin is run by hand without `CNI_COMMAND`.
pub fn about() -> String {
    format!(
        "CNI host-etcd plugin version {}\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        version::SUPPORTED.join(", ")
    )
}
