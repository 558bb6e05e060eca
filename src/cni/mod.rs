//! The CNI protocol layer: environment and `CNI_ARGS`, network config
//! parsing, `resolv.conf`, versioned results, command dispatch, and the one
//! place where errors become CNI error codes.
//!
//! Entry points: [`respond`] (everything, errors included, as the binary
//! needs it) and [`execute`] (one command, typed error).
//!
//! | file | concern |
//! |---|---|
//! | [`env`](mod@env) | `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS`, `CNI_PATH` |
//! | [`args`] | `CNI_ARGS`, deploy stage, requested addresses |
//! | [`config`] | the network config JSON → [`config::NetConf`] → allocator `Network` + store choice |
//! | [`resolv`] | `resolv.conf` → `dns` |
//! | [`result`] | allocation → result JSON per version; `VERSION` answer |
//! | [`error`] | [`CniError`] → code, `msg`, error JSON |
//! | [`node`] | node-local state: the node cache file and the node lock |
//! | [`command`] | ADD / DEL / CHECK / VERSION / GC / STATUS |
//! | [`status`] | the STATUS policy: a failing store is code 50 only after `statusGraceMs` (node-local failure-streak file), or at once (`strict`) |
//! | [`log`] | the plugin log: one JSON line per invocation in `logFile`, size-bounded with one rotated generation |
//! | [`agent_client`] | handing a command to the node agent (`host-etcd agent`), or not |
//!
//! ## Error codes
//!
//! | code | meaning | raised for |
//! |---|---|---|
//! | 1 | incompatible CNI version | `cniVersion` missing or not one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0; CHECK before 0.4.0, GC or STATUS before 1.1.0 |
//! | 2 | unsupported field | a whereabouts field host-etcd cannot honour (`etcd_host`, `kubernetes`, ...; see [`config::WHEREABOUTS_REFUSED`]) |
//! | 3 | container unknown | CHECK of an attachment holding nothing |
//! | 4 | invalid environment variables | missing/invalid `CNI_*`, bad `CNI_ARGS` |
//! | 5 | I/O failure | stdin, `resolvConf`, embedded store files |
//! | 6 | failed to decode content | stdin is not JSON (details give line and column) |
//! | 7 | invalid network config | missing field, wrong type, bad value, invalid ranges, store config |
//! | 11 | try again later | store unavailable, budget exceeded |
//! | 50 | plugin not available | STATUS when the store has not answered for `statusGraceMs` (or at once: `strict`, or an error other than an unreachable store) |
//! | 100 | requested address unavailable | (allocator) a requested IP is taken, outside every range or excluded |
//! | 101 | address pool exhausted | (allocator) a range set has no free address |
//! | 102 | stored state corrupt | corrupt database or chunk (the key is named) |
//! | 103 | addresses differ from prevResult | CHECK (also: a recorded address not marked in its chunk) |
//! | 104 | store refused the request | etcd authentication / permission / size |
//! | 999 | internal error | bugs; a panic caught by the binary |

pub mod agent_client;
pub mod args;
pub mod command;
pub mod config;
pub mod env;
pub mod error;
mod json;
pub mod log;
pub mod node;
pub mod resolv;
pub mod result;
pub mod status;
pub mod version;

pub use command::{execute, respond, Response};
pub use config::NetConf;
pub use env::{Command, Env};
pub use error::CniError;
pub use version::CniVersion;

/// The line printed when the plugin is run by hand without `CNI_COMMAND`.
pub fn about() -> String {
    format!(
        "CNI host-etcd plugin version {}\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        version::SUPPORTED.join(", ")
    )
}
