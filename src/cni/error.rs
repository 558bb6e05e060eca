//! The one place where errors become CNI error codes and the CNI error JSON
//! (`{"cniVersion", "code", "msg", "details"}`).
//!
//! Every error the plugin can report is a [`CniError`]; errors of the lower
//! layers ([`RangeError`], [`AllocError`], [`StoreError`]) are wrapped, and
//! [`CniError::code`] maps them. What each code means and when it is
//! raised is tabled once, in README.md's "Error codes"; keep it in step with
//! [`CniError::code`].

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::version::{CniVersion, SUPPORTED};
use crate::allocator::AllocError;
use crate::range::RangeError;
use crate::store::StoreError;

/// Well-known code 1: incompatible CNI version.
pub const CODE_INCOMPATIBLE_VERSION: u32 = 1;
/// Well-known code 2: unsupported field in the network configuration.
pub const CODE_UNSUPPORTED_FIELD: u32 = 2;
/// Well-known code 3: container unknown or does not exist.
pub const CODE_UNKNOWN_CONTAINER: u32 = 3;
/// Well-known code 4: invalid necessary environment variables.
pub const CODE_INVALID_ENV: u32 = 4;
/// Well-known code 5: I/O failure.
pub const CODE_IO: u32 = 5;
/// Well-known code 6: failed to decode content.
pub const CODE_DECODE: u32 = 6;
/// Well-known code 7: invalid network config.
pub const CODE_INVALID_CONFIG: u32 = 7;
/// Well-known code 11: try again later.
pub const CODE_TRY_AGAIN_LATER: u32 = 11;
/// Well-known code 50 (STATUS): the plugin is not available.
pub const CODE_NOT_AVAILABLE: u32 = 50;
/// Plugin code 100: a requested address cannot be handed out.
pub const CODE_ADDRESS_UNAVAILABLE: u32 = 100;
/// Plugin code 101: a range set has no free address.
pub const CODE_POOL_EXHAUSTED: u32 = 101;
/// Plugin code 102: stored state (database or chunk) is corrupt.
pub const CODE_CORRUPT_STATE: u32 = 102;
/// Plugin code 103: CHECK found addresses different from `prevResult`.
pub const CODE_CHECK_MISMATCH: u32 = 103;
/// Plugin code 104: the store refused the request (auth, permission, size).
pub const CODE_STORE_REFUSED: u32 = 104;
/// Code 999: unexpected internal error.
pub const CODE_INTERNAL: u32 = 999;

/// Every error the plugin reports, with its CNI code ([`CniError::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CniError {
    /// The config's `cniVersion` is missing or not supported (code 1).
    #[error("cniVersion {version:?} is not supported; supported versions: {}", SUPPORTED.join(", "))]
    IncompatibleVersion {
        /// What the config said (`""` when absent).
        version: String,
    },
    /// The command does not exist in the config's `cniVersion` (code 1):
    /// CHECK came in 0.4.0, GC and STATUS in 1.1.0.
    #[error("CNI_COMMAND={command} needs cniVersion {since} or later; the config says {version}")]
    CommandNotInVersion {
        /// The command, e.g. `GC`.
        command: &'static str,
        /// The config's version.
        version: CniVersion,
        /// The first version that defines the command.
        since: CniVersion,
    },
    /// A config field the plugin does not implement was used (code 2).
    #[error("{field}: not supported: {reason}")]
    UnsupportedField {
        /// Path of the field, e.g. `runtimeConfig.ipRanges`.
        field: String,
        /// Why.
        reason: String,
    },
    /// CHECK for an attachment that holds nothing (code 3).
    #[error(
        "container {container_id:?} interface {ifname:?} holds no addresses in network {network:?}"
    )]
    UnknownContainer {
        /// CNI_CONTAINERID.
        container_id: String,
        /// CNI_IFNAME.
        ifname: String,
        /// The network name.
        network: String,
    },
    /// A required environment variable is missing (code 4).
    #[error("required environment variable {var} is missing")]
    MissingEnv {
        /// The variable.
        var: &'static str,
    },
    /// An environment variable has an invalid value (code 4).
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable (for `CNI_ARGS`, `CNI_ARGS` and the key).
        var: String,
        /// The offending value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Reading a file or stdin failed (code 5).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path (`-` for stdin).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stdin is not JSON (code 6).
    #[error("network config is not valid JSON: {message} at line {line} column {column}")]
    Decode {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A config field is missing, has the wrong type or an invalid value (code 7).
    #[error("{field}: {reason}")]
    InvalidConfig {
        /// Path of the field, e.g. `ipam.ranges[0][1].subnet`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A range or range set of the config is invalid (code 7).
    #[error("{field}: {source}")]
    Range {
        /// Path of the range (set), e.g. `ipam.ranges[0][1]`.
        field: String,
        /// What the range module refused.
        #[source]
        source: RangeError,
    },
    /// The allocator failed (code by kind, see [`CniError::code`]).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The store could not be opened (code by kind, see [`CniError::code`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// STATUS: the store does not answer, ADD would fail (code 50).
    #[error("store not available: {0}")]
    NotAvailable(String),
    /// The whole operation ran past its budget (code 11).
    #[error("operation did not finish within its budget of {budget_ms} ms")]
    BudgetExceeded {
        /// The budget.
        budget_ms: u64,
    },
    /// CHECK: the recorded addresses differ from `prevResult` (code 103).
    #[error("CHECK failed: addresses held {held:?} differ from prevResult addresses {expected:?}")]
    CheckMismatch {
        /// What the owner record holds.
        held: Vec<IpAddr>,
        /// What `prevResult` lists.
        expected: Vec<IpAddr>,
    },
    /// CHECK: the owner record lists addresses its chunks do not mark taken
    /// (code 103; `ipamctl check --repair` fixes the bits).
    #[error(
        "CHECK failed: {ips:?} are recorded for this attachment but not marked taken in the store"
    )]
    NotMarked {
        /// The addresses whose bits are clear.
        ips: Vec<IpAddr>,
    },
    /// A bug or an impossible state (code 999).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The CNI error JSON object.
#[derive(Debug, Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'static str,
    details: String,
}

impl CniError {
    /// Shorthand for [`CniError::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> CniError {
        CniError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } | CniError::CommandNotInVersion { .. } => {
                CODE_INCOMPATIBLE_VERSION
            }
            CniError::UnsupportedField { .. } => CODE_UNSUPPORTED_FIELD,
            CniError::UnknownContainer { .. } => CODE_UNKNOWN_CONTAINER,
            CniError::MissingEnv { .. } | CniError::InvalidEnv { .. } => CODE_INVALID_ENV,
            CniError::Io { .. } => CODE_IO,
            CniError::Decode { .. } => CODE_DECODE,
            CniError::InvalidConfig { .. } | CniError::Range { .. } => CODE_INVALID_CONFIG,
            CniError::Alloc(e) => alloc_code(e),
            CniError::Store(e) => store_code(e),
            CniError::NotAvailable(_) => CODE_NOT_AVAILABLE,
            CniError::BudgetExceeded { .. } => CODE_TRY_AGAIN_LATER,
            CniError::CheckMismatch { .. } | CniError::NotMarked { .. } => CODE_CHECK_MISMATCH,
            CniError::Internal(_) => CODE_INTERNAL,
        }
    }

    /// The short `msg` of the error JSON (one per code).
    pub fn msg(&self) -> &'static str {
        code_msg(self.code())
    }

    /// The CNI error JSON, pretty-printed, with `details` holding the full
    /// message (which names the field, variable or key at fault).
    pub fn to_json(&self, version: CniVersion) -> String {
        let body = ErrorJson {
            cni_version: version.as_str(),
            code: self.code(),
            msg: self.msg(),
            details: self.to_string(),
        };
        serde_json::to_string_pretty(&body).unwrap_or_else(|_| {
            // Serializing strings and an integer does not fail; if it ever
            // did, the same fields go out through a JSON value, whose
            // `Display` has no error path (keys then in sorted order).
            let value = serde_json::json!({
                "cniVersion": body.cni_version,
                "code": body.code,
                "msg": body.msg,
                "details": body.details,
            });
            format!("{value:#}")
        })
    }
}

/// The short message for a code.
pub fn code_msg(code: u32) -> &'static str {
    match code {
        CODE_INCOMPATIBLE_VERSION => "incompatible CNI version",
        CODE_UNSUPPORTED_FIELD => "unsupported field in network configuration",
        CODE_UNKNOWN_CONTAINER => "container unknown or does not exist",
        CODE_INVALID_ENV => "invalid environment variables",
        CODE_IO => "I/O failure",
        CODE_DECODE => "failed to decode content",
        CODE_INVALID_CONFIG => "invalid network config",
        CODE_TRY_AGAIN_LATER => "try again later",
        CODE_NOT_AVAILABLE => "plugin not available",
        CODE_ADDRESS_UNAVAILABLE => "requested address unavailable",
        CODE_POOL_EXHAUSTED => "address pool exhausted",
        CODE_CORRUPT_STATE => "stored state corrupt",
        CODE_CHECK_MISMATCH => "addresses differ from prevResult",
        CODE_STORE_REFUSED => "store refused the request",
        // CODE_INTERNAL, and any number this plugin does not produce.
        _ => "internal error",
    }
}

/// Code of an allocator error.
fn alloc_code(e: &AllocError) -> u32 {
    // Exhaustive on purpose (the enums are `non_exhaustive` only for other
    // crates): a new variant does not compile until it has a code here.
    match e {
        AllocError::Range(_)
        | AllocError::BadName(_)
        | AllocError::BadChunkBits(_)
        | AllocError::MetaMismatch { .. }
        | AllocError::StaleOwner { .. } => CODE_INVALID_CONFIG,
        AllocError::Store(s) => store_code(s),
        AllocError::CorruptChunk { .. }
        | AllocError::CorruptMeta { .. }
        | AllocError::CorruptFullSet { .. }
        | AllocError::CorruptOwner { .. } => CODE_CORRUPT_STATE,
        AllocError::Exhausted { .. } | AllocError::StageExhausted { .. } => CODE_POOL_EXHAUSTED,
        AllocError::RequestedUnavailable { .. } => CODE_ADDRESS_UNAVAILABLE,
        AllocError::Contention { .. } | AllocError::BudgetExceeded { .. } => CODE_TRY_AGAIN_LATER,
        AllocError::DuplicateOwner(_) | AllocError::Encode { .. } => CODE_INTERNAL,
    }
}

/// Code of a store error.
fn store_code(e: &StoreError) -> u32 {
    // Exhaustive on purpose, as `alloc_code`.
    match e {
        StoreError::Unavailable(_) => CODE_TRY_AGAIN_LATER,
        StoreError::Io { .. } => CODE_IO,
        StoreError::CorruptDatabase { .. } => CODE_CORRUPT_STATE,
        StoreError::Config(_) => CODE_INVALID_CONFIG,
        StoreError::Refused(_) | StoreError::NoSpace(_) => CODE_STORE_REFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &CniError) -> serde_json::Value {
        serde_json::from_str(&e.to_json(CniVersion::V1_0_0)).expect("error JSON parses")
    }

    #[test]
    fn error_json_has_the_four_fields() {
        let e = CniError::MissingEnv {
            var: "CNI_CONTAINERID",
        };
        let v = json(&e);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "invalid environment variables");
        assert!(v["details"]
            .as_str()
            .is_some_and(|d| d.contains("CNI_CONTAINERID")));
    }

    #[test]
    fn well_known_codes() {
        let cases: Vec<(CniError, u32)> = vec![
            (
                CniError::IncompatibleVersion {
                    version: "0.2.0".into(),
                },
                1,
            ),
            (
                CniError::UnsupportedField {
                    field: "runtimeConfig.ipRanges".into(),
                    reason: "x".into(),
                },
                2,
            ),
            (
                CniError::UnknownContainer {
                    container_id: "c".into(),
                    ifname: "eth0".into(),
                    network: "n".into(),
                },
                3,
            ),
            (
                CniError::InvalidEnv {
                    var: "CNI_IFNAME".into(),
                    value: "a/b".into(),
                    reason: "x".into(),
                },
                4,
            ),
            (
                CniError::Io {
                    path: "/x".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                5,
            ),
            (
                CniError::Decode {
                    line: 1,
                    column: 2,
                    message: "x".into(),
                },
                6,
            ),
            (CniError::config("name", "missing"), 7),
            (CniError::NotAvailable("down".into()), 50),
            (CniError::BudgetExceeded { budget_ms: 5 }, 11),
            (
                CniError::CheckMismatch {
                    held: vec![],
                    expected: vec![],
                },
                103,
            ),
            (CniError::NotMarked { ips: vec![] }, 103),
            (CniError::Internal("x".into()), 999),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(json(&e)["code"], code, "{e}");
        }
    }

    // RangeError / CodecError values are not built here: their variants are
    // still being defined by the range and codec modules.
    #[test]
    fn lower_layer_errors_map_in_one_place() {
        let unavailable = StoreError::Unavailable("etcd down".into());
        let cases: Vec<(CniError, u32)> = vec![
            (AllocError::Store(unavailable).into(), 11),
            (
                AllocError::Store(StoreError::Io {
                    path: "/d".into(),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                })
                .into(),
                5,
            ),
            (
                AllocError::Store(StoreError::CorruptDatabase {
                    path: "/d/db".into(),
                    detail: "bad magic".into(),
                })
                .into(),
                102,
            ),
            (
                AllocError::Store(StoreError::Config("bad".into())).into(),
                7,
            ),
            (
                AllocError::Store(StoreError::Refused("auth".into())).into(),
                104,
            ),
            (AllocError::DuplicateOwner("x".into()).into(), 999),
            (
                AllocError::Exhausted {
                    set: 0,
                    ranges: "r".into(),
                }
                .into(),
                101,
            ),
            (AllocError::Contention { attempts: 3 }.into(), 11),
            (StoreError::Unavailable("dial".into()).into(), 11),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }
}
