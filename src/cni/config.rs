//! The network configuration on stdin: decoded once into JSON (code 6 with
//! line and column), typed by serde derive (code 7 naming the field path
//! through `serde_path_to_error`), checked by the rules below, and converted
//! into the allocator's [`Network`] and a store choice. [`Input`] is stdin
//! read once, with everything an invocation takes from it: the config, its
//! `cniVersion` and the log's view.
//!
//! Which fields are read, their types, defaults and allowed values are
//! listed in one place, README.md's "Network configuration reference";
//! keep it in step with [`NetConf::parse`] (whose limits come from the
//! constants they describe, e.g. `chunkBits` from [`CHUNK_BITS_RANGE`] and
//! [`default_chunk_bits`], `stickyTtlSeconds` from
//! [`MAX_STICKY_TTL_SECONDS`]). All
//! other fields are ignored, and JSON `null` counts as absent. Range sets
//! come in host-local's order: `runtimeConfig.ipRanges` first, then the
//! `ipam.subnet` shorthand, then `ipam.ranges` (or whereabouts' `range` and
//! `ipRanges`, which cannot be combined with those).
//!
//! The document is typed in sections, in the order of the checks: the root
//! is an object, `cniVersion` (code 1 before any other error), `name`,
//! `runtimeConfig`, then `ipam`: the refused whereabouts fields (code 2)
//! before its other fields. A field that only one form reads (the etcd
//! fields without `endpoints`, `lockWaitMs` with them, the shorthand's range
//! fields without `subnet`, `gateway` in host-local's `ranges` form) is
//! typed only when that form is used, and ignored otherwise.
//!
//! whereabouts' fields that would change behaviour silently are refused
//! (code 2, naming the field, see [`WHEREABOUTS_REFUSED`]); its logging and
//! leader-election tuning fields are ignored.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::args::{dedup_in_order, parse_ip_or_cidr};
use super::error::CniError;
use super::json::{field, join, object, typed, Object};
use super::log::{self, LogSettings, Sniffed};
use super::result::Route;
use super::status_policy::{StatusPolicy, DEFAULT_GRACE};
use super::version::CniVersion;
use crate::allocator::{
    default_chunk_bits, Network, Options, OwnerId, CHUNK_BITS_RANGE, DEFAULT_PREFIX,
};
use crate::range::{
    check_sets, embedded_ipv4, Family, Range, RangeError, RangeSet, RangeSpec, MAX_RANGES_PER_SET,
    MAX_RANGE_SETS,
};
use crate::store::etcd::EtcdConfig;

/// Stage names whose lists a range object may carry.
pub const STAGES: [&str; 2] = ["sandbox", "smallflow"];

/// whereabouts `ipam` fields that are refused (code 2) because ignoring
/// them would change behaviour silently, each with what to do instead.
pub const WHEREABOUTS_REFUSED: [(&str, &str); 14] = [
    ("etcd_host", "whereabouts' etcd datastore; host-etcd uses endpoints"),
    ("etcd_username", "whereabouts' etcd datastore; host-etcd uses username"),
    ("etcd_password", "whereabouts' etcd datastore; host-etcd uses password"),
    ("etcd_cert_file", "whereabouts' etcd datastore; host-etcd uses certfile"),
    ("etcd_key_file", "whereabouts' etcd datastore; host-etcd uses keyfile"),
    ("etcd_ca_cert_file", "whereabouts' etcd datastore; host-etcd uses trustedcafile"),
    (
        "datastore",
        "state lives in etcd (endpoints) or the embedded store (dataDir); remove it",
    ),
    (
        "kubernetes",
        "state lives in etcd (endpoints) or the embedded store (dataDir), not in Kubernetes; remove it",
    ),
    (
        "configuration_path",
        "host-etcd reads no flat configuration file; move its fields into the ipam section",
    ),
    (
        "network_name",
        "allocation state is keyed by the network's name; remove network_name and set name",
    ),
    (
        "addresses",
        "static addresses come from args.cni.ips, runtimeConfig.ips or CNI_ARGS IP=",
    ),
    (
        "node_slice_size",
        "node slices are not supported; nodes already start in different chunks",
    ),
    (
        "enable_overlapping_ranges",
        "addresses are unique per network only; set it to false or remove it",
    ),
    ("dns", "host-etcd takes the result's DNS from resolvConf"),
];

/// The longest `stickyTtlSeconds` accepted (365 days).
pub const MAX_STICKY_TTL_SECONDS: u64 = 365 * 86_400;

/// `gcGraceSeconds` when not given: the CNI `GC` verb leaves records younger
/// than this (an ADD in flight on the node is never collected).
pub const DEFAULT_GC_GRACE_SECONDS: u64 = 60;

/// The longest `gcGraceSeconds` accepted (one day).
pub const MAX_GC_GRACE_SECONDS: u64 = 86_400;

/// Where embedded-store directories live by default (`<this>/<name>`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/host-etcd";

/// The parsed network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: CniVersion,
    /// `name`.
    pub name: String,
    /// The `ipam` section.
    pub ipam: IpamConf,
    /// `args.cni.ips` then `runtimeConfig.ips`, deduplicated.
    pub requested: Vec<IpAddr>,
    /// The addresses of `prevResult.ips`, when a `prevResult` is given.
    pub prev_result_ips: Option<Vec<IpAddr>>,
    /// `cni.dev/valid-attachments` (or `cni.dev/attachments`), when given.
    pub valid_attachments: Option<Vec<OwnerId>>,
}

/// One range as configured, with its path for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeConf {
    /// Where it is in the config, e.g. `ipam.ranges[0][1]` or `ipam`.
    pub path: String,
    /// The raw range.
    pub spec: RangeSpec,
}

/// Where allocation state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConf {
    /// An etcd cluster.
    Etcd(EtcdConfig),
    /// The embedded store in a directory.
    Local {
        /// The directory.
        data_dir: PathBuf,
        /// How long to wait for the store's file lock.
        lock_wait: Duration,
    },
}

/// The `ipam` section.
#[derive(Clone, Debug, PartialEq)]
pub struct IpamConf {
    /// Range sets (the shorthand, if any, first).
    pub range_sets: Vec<Vec<RangeConf>>,
    /// `routes`.
    pub routes: Vec<Route>,
    /// `resolvConf`.
    pub resolv_conf: Option<PathBuf>,
    /// The store.
    pub store: StoreConf,
    /// Key prefix, without trailing `/`.
    pub prefix: String,
    /// Chunk size exponent, when the config sets one (`None`: the default
    /// of the range sets, [`default_chunk_bits`], and a network stored at
    /// another k is followed instead of refused).
    pub chunk_bits: Option<u8>,
    /// Whole-operation budget.
    pub budget: Duration,
    /// CAS attempts per operation.
    pub max_attempts: u32,
    /// `stickyTtlSeconds`: sticky addresses on, with this binding lifetime.
    pub sticky_ttl: Option<Duration>,
    /// `gcGraceSeconds`: the CNI `GC` verb collects only records at least
    /// this old.
    pub gc_grace: Duration,
    /// Where the node-local state (node cache, node lock) is kept: the
    /// embedded store's directory, or with etcd `dataDir` if given, else
    /// `/var/lib/cni/host-etcd/<name>`.
    pub node_dir: PathBuf,
    /// `statusPolicy` / `statusGraceMs`.
    pub status: StatusPolicy,
    /// `logFile` / `logLevel` / `logMaxBytes`, when `logFile` is given.
    pub log: Option<LogSettings>,
    /// `agent`: whether to go through the node agent (etcd networks only).
    pub agent: AgentMode,
    /// `agentSocket`: the node agent's unix socket.
    pub agent_socket: PathBuf,
    /// `agentAckMs`: the longest wait for the agent's acknowledgement of a
    /// request before `auto` goes direct.
    pub agent_ack: Duration,
}

/// The node agent's default socket (`ipam.agentSocket`).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/host-etcd/agent.sock";

/// `ipam.agent`: when the plugin hands its command to the node agent
/// (`host-etcd agent`, see `crate::agent`). Only etcd networks go through
/// the agent; an embedded-store network is always served by the plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// `"auto"` (default): through the agent when its socket exists and it
    /// answers; directly otherwise.
    #[default]
    Auto,
    /// `"off"`: always directly.
    Off,
    /// `"required"`: through the agent only; code 11 (STATUS: 50) when it
    /// does not answer.
    Required,
}

/// Decodes stdin as JSON; syntax errors are code 6 with line and column.
pub fn decode(bytes: &[u8]) -> Result<Value, CniError> {
    serde_json::from_slice(bytes).map_err(|e| CniError::Decode {
        line: e.line(),
        column: e.column(),
        message: decode_message(&e),
    })
}

/// serde_json's message without its own " at line L column C" suffix.
fn decode_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

/// The `cniVersion` of a decoded stdin, if it names a supported version.
fn version_of(doc: &Value) -> Option<CniVersion> {
    CniVersion::parse(doc.get("cniVersion")?.as_str()?)
}

/// stdin decoded once, and everything an invocation takes from it.
#[derive(Debug)]
pub struct Input<'a> {
    /// stdin as given (what the node agent is sent).
    pub bytes: &'a [u8],
    /// Its `cniVersion`, when it is JSON naming a supported version (the
    /// answer to VERSION, and the version of error output).
    pub version: Option<CniVersion>,
    /// The log settings and the fields the log shows, read leniently from
    /// the same JSON, so that a config broken elsewhere is still logged.
    pub log: Sniffed,
    /// The config, or why it is refused.
    pub conf: Result<NetConf, CniError>,
}

impl<'a> Input<'a> {
    /// Decodes `bytes` once and takes the config, its version and the log's
    /// view from the one document.
    pub fn parse(bytes: &'a [u8]) -> Input<'a> {
        match decode(bytes) {
            Ok(doc) => Input {
                bytes,
                version: version_of(&doc),
                log: log::sniff(&doc),
                conf: NetConf::from_json(&doc),
            },
            Err(e) => Input {
                bytes,
                version: None,
                log: Sniffed::default(),
                conf: Err(e),
            },
        }
    }
}

/// The fields of a range object (`ipam.ranges[i][j]`,
/// `runtimeConfig.ipRanges[i][j]`, and `ipam` itself for the shorthand).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeObject {
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
    exclude: Option<Vec<String>>,
    sandbox: Option<Vec<String>>,
    smallflow: Option<Vec<String>>,
}

/// A whereabouts range object (`ipam` itself or an `ipRanges` entry).
#[derive(Deserialize)]
struct WhereaboutsRange {
    range: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    exclude: Option<Vec<String>>,
}

/// A route object.
#[derive(Deserialize)]
struct RouteObject {
    dst: Option<String>,
    gw: Option<String>,
}

/// `runtimeConfig`'s `ipRanges` capability (its `ips` is typed after
/// `ipam`, with the other requested addresses).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeRanges {
    ip_ranges: Option<Vec<Vec<Object<RangeObject>>>>,
}

/// `prevResult`, as far as CHECK reads it.
#[derive(Deserialize)]
struct PrevResult {
    ips: Option<Vec<Object<PrevIp>>>,
}

/// One `prevResult.ips` entry.
#[derive(Deserialize)]
struct PrevIp {
    address: Option<String>,
}

/// One `cni.dev/valid-attachments` entry.
#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: Option<String>,
    ifname: Option<String>,
}

/// The `ipam` fields every form reads. The log fields are typed by
/// [`LogSettings::parse`]; the etcd fields ([`EtcdFields`]), `lockWaitMs`,
/// the shorthand's range fields and whereabouts' top-level range only when
/// their form is used.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ipam {
    ranges: Option<Vec<Vec<Object<RangeObject>>>>,
    ip_ranges: Option<Vec<Object<WhereaboutsRange>>>,
    routes: Option<Vec<Object<RouteObject>>>,
    resolv_conf: Option<String>,
    endpoints: Option<Endpoints>,
    data_dir: Option<String>,
    prefix: Option<String>,
    chunk_bits: Option<u64>,
    budget_ms: Option<u64>,
    max_attempts: Option<u64>,
    sticky_ttl_seconds: Option<u64>,
    gc_grace_seconds: Option<u64>,
    status_policy: Option<PolicyName>,
    status_grace_ms: Option<u64>,
    agent: Option<AgentMode>,
    agent_socket: Option<String>,
    agent_ack_ms: Option<u64>,
}

/// The etcd fields of `ipam`, typed only when `endpoints` names a cluster.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EtcdFields {
    certfile: Option<String>,
    keyfile: Option<String>,
    trustedcafile: Option<String>,
    username: Option<String>,
    password: Option<String>,
    dial_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

/// `statusPolicy`.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Grace,
    Strict,
}

/// `endpoints`: an array of strings, or one comma-separated string whose
/// empty items are dropped.
struct Endpoints(Vec<String>);

impl<'de> Deserialize<'de> for Endpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings or a comma-separated string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Vec<String>, E> {
                let items = s.split(',').map(str::trim).filter(|s| !s.is_empty());
                Ok(items.map(str::to_string).collect())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element()? {
                    out.push(s);
                }
                Ok(out)
            }
        }
        d.deserialize_any(List).map(Endpoints)
    }
}

/// `"x": missing` for a required field.
fn missing(field: String) -> CniError {
    CniError::config(field, "missing")
}

impl NetConf {
    /// Parses stdin: JSON (6), then `cniVersion` (1), then the rest (7, or 2
    /// for a refused whereabouts field). Ranges are not validated here; see
    /// [`NetConf::network`].
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        NetConf::from_json(&decode(bytes)?)
    }

    /// [`NetConf::parse`] of stdin already decoded (`decode`); the
    /// sections are typed in the order of the checks (see the module docs).
    pub fn from_json(doc: &Value) -> Result<NetConf, CniError> {
        object("", doc)?;
        let raw_version: String = field(doc, "", "cniVersion")?.unwrap_or_default();
        let cni_version = CniVersion::parse(&raw_version).ok_or(CniError::IncompatibleVersion {
            version: raw_version,
        })?;
        let name: String = field(doc, "", "name")?.ok_or_else(|| missing("name".into()))?;
        check_name(&name)?;
        let ipam_v = doc
            .get("ipam")
            .filter(|v| !v.is_null())
            .ok_or_else(|| missing("ipam".into()))?;
        let runtime = field::<Object<RuntimeRanges>>(doc, "", "runtimeConfig")?;
        let runtime_sets = parse_range_sets(
            "runtimeConfig.ipRanges",
            runtime.and_then(|o| o.0.ip_ranges),
        )?;
        let ipam = parse_ipam(ipam_v, &name, runtime_sets)?;
        // `args` of another shape is ignored, as the spec asks.
        let ips = |at: &str, v: Option<&Value>| match v {
            Some(v) => field::<Vec<String>>(v, at, "ips"),
            None => Ok(None),
        };
        let args_ips = ips("args.cni", doc.get("args").and_then(|a| a.get("cni")))?;
        let runtime_ips = ips("runtimeConfig", doc.get("runtimeConfig"))?;
        Ok(NetConf {
            cni_version,
            name,
            ipam,
            requested: requested([
                ("args.cni.ips", args_ips),
                ("runtimeConfig.ips", runtime_ips),
            ])?,
            prev_result_ips: prev_result(doc)?,
            valid_attachments: attachments(doc)?,
        })
    }

    /// Validates the ranges and builds the allocator's network.
    pub fn network(&self) -> Result<Network, CniError> {
        let mut sets = Vec::with_capacity(self.ipam.range_sets.len());
        for (i, set) in self.ipam.range_sets.iter().enumerate() {
            let ranges = set
                .iter()
                .map(|r| {
                    Range::parse(&r.spec).map_err(|source| CniError::Range {
                        field: match source.exclude_index() {
                            Some(i) => format!("{}[{i}]", join(&r.path, "exclude")),
                            None => r.path.clone(),
                        },
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let field = set
                .first()
                .map(|r| set_path(&r.path))
                .unwrap_or_else(|| format!("range set {i}"));
            sets.push(RangeSet::new(ranges).map_err(|source| CniError::Range { field, source })?);
        }
        check_sets(&sets).map_err(|source| CniError::Range {
            field: "ipam.ranges".into(),
            source,
        })?;
        let chunk_bits = self
            .ipam
            .chunk_bits
            .unwrap_or_else(|| default_chunk_bits(&sets));
        Ok(Network {
            name: self.name.clone(),
            prefix: self.ipam.prefix.clone(),
            sets,
            chunk_bits,
        })
    }

    /// Allocator options from the config (`node_seed`: the host name's
    /// hash; a node's first ADD guesses instead of reading on etcd only).
    pub fn options(&self) -> Options {
        Options {
            max_attempts: self.ipam.max_attempts,
            budget: self.ipam.budget,
            sticky_ttl: self.ipam.sticky_ttl,
            guess_first_add: matches!(self.ipam.store, StoreConf::Etcd(_)),
            adopt_stored_chunk_bits: self.ipam.chunk_bits.is_none(),
            ..Options::default()
        }
    }
}

/// The set's path for a range's path: `ipam.ranges[0]` for
/// `ipam.ranges[0][1]` (likewise `runtimeConfig.ipRanges`); the path itself
/// for a one-range set (`ipam`, `ipam.ipRanges[2]`).
fn set_path(range_path: &str) -> String {
    let nested = ["ipam.ranges", "runtimeConfig.ipRanges"]
        .iter()
        .any(|p| range_path.starts_with(p));
    match range_path.rfind('[') {
        Some(i) if nested => range_path[..i].to_string(),
        _ => range_path.to_string(),
    }
}

/// The spec's rule for network names (they also become store key segments).
fn check_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::config(
            "name",
            format!(
                "{name:?} is not a valid network name (alphanumeric first, then alphanumerics, '_', '.', '-')"
            ),
        ))
    }
}

/// Range sets in host-local's `[[range]]` form (`ipam.ranges`,
/// `runtimeConfig.ipRanges`) at `at`.
fn parse_range_sets(
    at: &str,
    sets: Option<Vec<Vec<Object<RangeObject>>>>,
) -> Result<Vec<Vec<RangeConf>>, CniError> {
    let sets = sets.unwrap_or_default();
    limit_sets(at, sets.len())?;
    let mut out = Vec::with_capacity(sets.len());
    for (i, set) in sets.into_iter().enumerate() {
        let set_path = format!("{at}[{i}]");
        if set.is_empty() {
            return Err(CniError::config(set_path, "empty range set"));
        }
        if set.len() > MAX_RANGES_PER_SET {
            return Err(CniError::Range {
                field: set_path,
                source: RangeError::TooManyRanges {
                    count: set.len(),
                    max: MAX_RANGES_PER_SET,
                },
            });
        }
        let set = set
            .into_iter()
            .enumerate()
            .map(|(j, r)| range_conf(format!("{set_path}[{j}]"), r.0))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(set);
    }
    Ok(out)
}

/// Refuses more than [`MAX_RANGE_SETS`] range sets (code 7, naming
/// `field`), before any of them is validated: a runtime-supplied list is
/// untrusted, and validation must stay bounded.
fn limit_sets(field: &str, count: usize) -> Result<(), CniError> {
    if count <= MAX_RANGE_SETS {
        return Ok(());
    }
    Err(CniError::Range {
        field: field.to_string(),
        source: RangeError::TooManySets {
            count,
            max: MAX_RANGE_SETS,
        },
    })
}

/// A range object at `path` as the range it configures.
fn range_conf(path: String, r: RangeObject) -> Result<RangeConf, CniError> {
    let subnet = r.subnet.ok_or_else(|| missing(join(&path, "subnet")))?;
    let stages = STAGES
        .into_iter()
        .zip([r.sandbox, r.smallflow])
        .filter_map(|(stage, list)| Some((stage.to_string(), list?)))
        .collect();
    Ok(RangeConf {
        path,
        spec: RangeSpec {
            subnet,
            range_start: r.range_start,
            range_end: r.range_end,
            gateway: r.gateway,
            exclude: r.exclude.unwrap_or_default(),
            stages,
        },
    })
}

/// Refuses the whereabouts fields of [`WHEREABOUTS_REFUSED`] (code 2).
/// `enable_overlapping_ranges` is accepted when `false`; `dns` only matters
/// in a whereabouts-style section (host-local ignores it too).
fn refuse_whereabouts_fields(ipam: &Value, whereabouts: bool) -> Result<(), CniError> {
    for (key, reason) in WHEREABOUTS_REFUSED {
        let Some(v) = ipam.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let refused = match key {
            "enable_overlapping_ranges" => v.as_bool().ok_or_else(|| {
                CniError::config(
                    join("ipam", key),
                    "expected a boolean (false; host-etcd cannot honour true)",
                )
            })?,
            "dns" => whereabouts,
            _ => true,
        };
        if refused {
            return Err(CniError::UnsupportedField {
                field: join("ipam", key),
                reason: reason.to_string(),
            });
        }
    }
    Ok(())
}

/// Which range fields the `ipam` section holds (present and not `null`),
/// and the rules between them: whereabouts' style and host-local's are not
/// mixed, `range_start` / `range_end` need `range`, and a top-level
/// `exclude` needs a top-level range.
struct Style {
    subnet: bool,
    range: bool,
    whereabouts: bool,
}

impl Style {
    fn of(ipam: &Value) -> Result<Style, CniError> {
        object("ipam", ipam)?;
        let has = |key: &str| ipam.get(key).is_some_and(|v| !v.is_null());
        let (subnet, range) = (has("subnet"), has("range"));
        let whereabouts = range || has("ipRanges");
        refuse_whereabouts_fields(ipam, whereabouts)?;
        if whereabouts && (subnet || has("ranges")) {
            return Err(CniError::config(
                if range { "ipam.range" } else { "ipam.ipRanges" },
                "whereabouts-style ranges (range, ipRanges) cannot be combined with subnet or ranges; use one style",
            ));
        }
        if !range {
            if let Some(key) = ["range_start", "range_end"].into_iter().find(|k| has(k)) {
                return Err(CniError::config(
                    join("ipam", key),
                    "needs ipam.range (the whereabouts range it narrows)",
                ));
            }
            if has("exclude") && !subnet {
                return Err(CniError::config(
                    "ipam.exclude",
                    "applies to the top-level range (ipam.subnet or ipam.range), and there is none; put exclude in each range object",
                ));
            }
        }
        Ok(Style {
            subnet,
            range,
            whereabouts,
        })
    }
}

/// The `ipam` section (`v`, of network `name`), after the range sets of
/// `runtimeConfig.ipRanges`.
fn parse_ipam(
    v: &Value,
    name: &str,
    runtime_sets: Vec<Vec<RangeConf>>,
) -> Result<IpamConf, CniError> {
    let style = Style::of(v)?;
    let mut ipam: Ipam = typed("ipam", v)?;
    let range_sets = ipam_range_sets(v, &style, &mut ipam, runtime_sets)?;
    let routes = ipam
        .routes
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| parse_route(&format!("ipam.routes[{i}]"), r.0))
        .collect::<Result<Vec<_>, _>>()?;
    let budget = Duration::from_millis(ipam.budget_ms.unwrap_or(10_000));
    let (lo, hi) = (CHUNK_BITS_RANGE.start(), CHUNK_BITS_RANGE.end());
    let chunk_bits = bounded(
        "chunkBits",
        ipam.chunk_bits,
        u64::from(*lo)..=u64::from(*hi),
        &format!("{lo}..={hi}"),
    )?
    .and_then(|k| u8::try_from(k).ok());
    let max_attempts = bounded(
        "maxAttempts",
        ipam.max_attempts,
        1..=u64::from(u32::MAX),
        "1..",
    )?
    .and_then(|n| u32::try_from(n).ok());
    let sticky_ttl = bounded(
        "stickyTtlSeconds",
        ipam.sticky_ttl_seconds,
        1..=MAX_STICKY_TTL_SECONDS,
        &format!("1..={MAX_STICKY_TTL_SECONDS} (omit the field to turn sticky addresses off)"),
    )?;
    let gc_grace = bounded(
        "gcGraceSeconds",
        ipam.gc_grace_seconds,
        0..=MAX_GC_GRACE_SECONDS,
        &format!("0..={MAX_GC_GRACE_SECONDS}"),
    )?;
    let (store, node_dir) = parse_store(v, &mut ipam, name, budget)?;
    let budget_ms = millis(budget);
    let agent_ack = bounded(
        "agentAckMs",
        ipam.agent_ack_ms,
        1..=budget_ms,
        &format!("1..={budget_ms} (budgetMs)"),
    )?;
    Ok(IpamConf {
        range_sets,
        routes,
        resolv_conf: nonempty(ipam.resolv_conf.take()).map(PathBuf::from),
        store,
        prefix: key_prefix(ipam.prefix.take())?,
        chunk_bits,
        budget,
        max_attempts: max_attempts.unwrap_or(Options::default().max_attempts),
        sticky_ttl: sticky_ttl.map(Duration::from_secs),
        gc_grace: Duration::from_secs(gc_grace.unwrap_or(DEFAULT_GC_GRACE_SECONDS)),
        node_dir,
        status: status_policy(&ipam)?,
        log: LogSettings::parse(v)?,
        agent: ipam.agent.unwrap_or_default(),
        agent_socket: nonempty(ipam.agent_socket.take())
            .map_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET), PathBuf::from),
        // At most the budget (DEFAULT_ACK_TIMEOUT otherwise).
        agent_ack: agent_ack.map_or(
            super::agent_client::protocol::DEFAULT_ACK_TIMEOUT.min(budget),
            Duration::from_millis,
        ),
    })
}

/// `ipam.<key>`, refused (code 7: "`v` is out of range `text`") outside
/// `range`.
fn bounded(
    key: &str,
    v: Option<u64>,
    range: RangeInclusive<u64>,
    text: &str,
) -> Result<Option<u64>, CniError> {
    match v {
        Some(v) if !range.contains(&v) => Err(CniError::config(
            join("ipam", key),
            format!("{v} is out of range {text}"),
        )),
        v => Ok(v),
    }
}

/// `ipam.prefix` without its trailing `/` (the default when absent; empty
/// is refused).
fn key_prefix(prefix: Option<String>) -> Result<String, CniError> {
    match prefix {
        None => Ok(DEFAULT_PREFIX.to_string()),
        Some(p) if p.trim_end_matches('/').is_empty() => {
            Err(CniError::config("ipam.prefix", format!("{p:?} is empty")))
        }
        Some(p) => Ok(p.trim_end_matches('/').to_string()),
    }
}

/// `s` unless it is empty (an empty path or name counts as absent).
fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The range sets, as host-local orders them: `runtimeConfig.ipRanges`
/// first, then the shorthand, then `ranges` (or whereabouts' ranges).
fn ipam_range_sets(
    v: &Value,
    style: &Style,
    ipam: &mut Ipam,
    runtime_sets: Vec<Vec<RangeConf>>,
) -> Result<Vec<Vec<RangeConf>>, CniError> {
    let mut range_sets = runtime_sets;
    if style.subnet {
        let shorthand: RangeObject = typed("ipam", v)?;
        range_sets.push(vec![range_conf("ipam".into(), shorthand)?]);
    }
    range_sets.extend(parse_range_sets("ipam.ranges", ipam.ranges.take())?);
    if style.whereabouts {
        range_sets.extend(parse_whereabouts(v, style, ipam.ip_ranges.take())?);
    }
    // Each list was bounded as it was read; together they are bounded too.
    limit_sets("ipam.ranges", range_sets.len())?;
    if range_sets.is_empty() {
        return Err(CniError::config(
            "ipam.ranges",
            "no IP ranges specified (need ranges or subnet)",
        ));
    }
    Ok(range_sets)
}

/// `ipam.statusPolicy` / `ipam.statusGraceMs`.
fn status_policy(ipam: &Ipam) -> Result<StatusPolicy, CniError> {
    match (ipam.status_policy, ipam.status_grace_ms) {
        (None | Some(PolicyName::Grace), grace) => Ok(StatusPolicy::Grace(
            grace.map_or(DEFAULT_GRACE, Duration::from_millis),
        )),
        (Some(PolicyName::Strict), None) => Ok(StatusPolicy::Strict),
        (Some(PolicyName::Strict), Some(_)) => Err(CniError::config(
            "ipam.statusGraceMs",
            "applies to statusPolicy \"grace\" only; remove it or the strict policy",
        )),
    }
}

/// whereabouts' ranges: the top-level `range` (with `range_start`,
/// `range_end`, `exclude`) first, then one set per `ipRanges` entry; the
/// top-level `gateway` goes to the range whose subnet holds it.
fn parse_whereabouts(
    v: &Value,
    style: &Style,
    ip_ranges: Option<Vec<Object<WhereaboutsRange>>>,
) -> Result<Vec<Vec<RangeConf>>, CniError> {
    let mut ranges = Vec::new();
    if style.range {
        ranges.push(whereabouts_range("ipam", typed("ipam", v)?)?);
    }
    let ip_ranges = ip_ranges.unwrap_or_default();
    limit_sets("ipam.ipRanges", ip_ranges.len())?;
    for (i, r) in ip_ranges.into_iter().enumerate() {
        ranges.push(whereabouts_range(&format!("ipam.ipRanges[{i}]"), r.0)?);
    }
    if let Some(gw_s) = field::<String>(v, "ipam", "gateway")? {
        let gw = gw_s.parse::<IpAddr>().map_err(|_| {
            CniError::config("ipam.gateway", format!("{gw_s:?} is not an IP address"))
        })?;
        let holder = ranges.iter_mut().find(|r| {
            r.spec
                .subnet
                .parse::<IpNet>()
                .is_ok_and(|n| n.contains(&gw))
        });
        match holder {
            Some(r) => r.spec.gateway = Some(gw_s),
            None => {
                return Err(CniError::config(
                    "ipam.gateway",
                    format!("{gw} is not inside the subnet of any range (range, ipRanges); the gateway must be inside its range's subnet"),
                ))
            }
        }
    }
    Ok(ranges.into_iter().map(|r| vec![r]).collect())
}

/// One whereabouts range object at `path` (`ipam` itself or an `ipRanges`
/// entry): `range` is a CIDR (host bits ignored, as whereabouts does) or
/// `start-end/prefix` (see [`start_end`]); `range_start` / `range_end`
/// narrow a CIDR form (see [`narrowing`]).
fn whereabouts_range(path: &str, w: WhereaboutsRange) -> Result<RangeConf, CniError> {
    let field = join(path, "range");
    let raw = w.range.as_deref().ok_or_else(|| missing(field.clone()))?;
    let bad = |why: String| CniError::config(field.as_str(), format!("{raw:?}: {why}"));
    let (subnet, bounds) = match raw.split_once('-') {
        Some((a, b)) => {
            let (subnet, first, last) = start_end(a, b).map_err(bad)?;
            for (key, given) in [("range_start", &w.range_start), ("range_end", &w.range_end)] {
                if given.is_some() {
                    return Err(CniError::config(
                        join(path, key),
                        "cannot be combined with the start-end/prefix form of range",
                    ));
                }
            }
            (subnet, Some((first, last)))
        }
        None => (cidr(raw).map_err(bad)?.trunc(), None),
    };
    if subnet.prefix_len() > subnet.max_prefix_len().saturating_sub(2) {
        return Err(bad(format!(
            "subnet {subnet} is too small to allocate from (IPv4 needs a /30 or shorter prefix, IPv6 a /126 or shorter)"
        )));
    }
    let (start, end) = match bounds {
        Some((first, last)) => (Some(first), Some(last)),
        None => narrowing(path, subnet, &w)?,
    };
    Ok(RangeConf {
        path: path.to_string(),
        spec: RangeSpec {
            subnet: subnet.to_string(),
            range_start: start.map(|a| a.to_string()),
            range_end: end.map(|a| a.to_string()),
            exclude: w.exclude.unwrap_or_default(),
            ..RangeSpec::default()
        },
    })
}

/// A CIDR of whereabouts' `range` (surrounding blanks ignored).
fn cidr(s: &str) -> Result<IpNet, String> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| format!("{s:?} is not a CIDR such as 192.168.2.0/24 or fd00::/64"))
}

/// whereabouts' `start-end/prefix` (`a` before the `-`, `b` after): the
/// subnet is `end/prefix`; `start` and `end` are the inclusive bounds.
fn start_end(a: &str, b: &str) -> Result<(IpNet, IpAddr, IpAddr), String> {
    let first = a
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("start {a:?} is not an IP address (want start-end/prefix)"))?;
    let written = cidr(b)?;
    let (subnet, last) = (written.trunc(), written.addr());
    if Family::of(first) != Family::of(last) {
        return Err(format!(
            "start {first} and end {last} are of different address families"
        ));
    }
    if !subnet.contains(&first) {
        return Err(format!("start {first} is not in subnet {subnet}"));
    }
    if first > last {
        return Err(format!("start {first} is after end {last}"));
    }
    Ok((subnet, first, last))
}

/// `range_start` / `range_end` of a CIDR `range`: addresses of its family,
/// inside it, in order.
fn narrowing(
    path: &str,
    subnet: IpNet,
    w: &WhereaboutsRange,
) -> Result<(Option<IpAddr>, Option<IpAddr>), CniError> {
    let bound = |key: &str, given: &Option<String>| -> Result<Option<IpAddr>, CniError> {
        let Some(v) = given else {
            return Ok(None);
        };
        let refuse = |why: String| CniError::config(join(path, key), why);
        let ip = v
            .parse::<IpAddr>()
            .map_err(|_| refuse(format!("{v:?} is not an IP address")))?;
        if Family::of(ip) != Family::of(subnet.network()) {
            return Err(refuse(format!(
                "{ip} is not of the address family of range {subnet}"
            )));
        }
        if !subnet.contains(&ip) {
            return Err(refuse(format!("{ip} is not in range {subnet}")));
        }
        Ok(Some(ip))
    };
    let start = bound("range_start", &w.range_start)?;
    let end = bound("range_end", &w.range_end)?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(CniError::config(
                join(path, "range_end"),
                format!("{b} is before range_start {a}"),
            ));
        }
    }
    Ok((start, end))
}

/// A route object at `path`.
fn parse_route(path: &str, r: RouteObject) -> Result<Route, CniError> {
    let dst_field = join(path, "dst");
    let dst_s = r.dst.ok_or_else(|| missing(dst_field.clone()))?;
    let dst = dst_s
        .parse::<IpNet>()
        .map_err(|_| CniError::config(dst_field, format!("{dst_s:?} is not a CIDR")))?;
    let gw =
        r.gw.map(|g| {
            g.parse::<IpAddr>().map_err(|_| {
                CniError::config(join(path, "gw"), format!("{g:?} is not an IP address"))
            })
        })
        .transpose()?;
    Ok(Route { dst, gw })
}

/// The store and the node directory: etcd when `endpoints` names one (its
/// fields typed only then; the node directory is `dataDir` or the default),
/// else the embedded store in `dataDir` (with `lockWaitMs`), which is the
/// node directory too.
fn parse_store(
    v: &Value,
    ipam: &mut Ipam,
    name: &str,
    budget: Duration,
) -> Result<(StoreConf, PathBuf), CniError> {
    let endpoints = ipam.endpoints.take().map(|e| e.0).unwrap_or_default();
    if let Some(e) = endpoints.iter().find(|e| e.trim().is_empty()) {
        return Err(CniError::config(
            "ipam.endpoints",
            format!("empty endpoint {e:?}"),
        ));
    }
    let data_dir = nonempty(ipam.data_dir.take())
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR).join(name), PathBuf::from);
    if endpoints.is_empty() {
        let lock_wait = field::<u64>(v, "ipam", "lockWaitMs")?;
        let store = StoreConf::Local {
            data_dir: data_dir.clone(),
            lock_wait: lock_wait.map_or(budget, Duration::from_millis),
        };
        return Ok((store, data_dir));
    }
    let etcd: EtcdFields = typed("ipam", v)?;
    let defaults = EtcdConfig::default();
    let ms = |ms: Option<u64>, default: Duration| ms.map_or(default, Duration::from_millis);
    let config = EtcdConfig {
        endpoints,
        cert_file: nonempty(etcd.certfile).map(PathBuf::from),
        key_file: nonempty(etcd.keyfile).map(PathBuf::from),
        trusted_ca_file: nonempty(etcd.trustedcafile).map(PathBuf::from),
        username: nonempty(etcd.username),
        password: nonempty(etcd.password),
        dial_timeout: ms(etcd.dial_timeout_ms, defaults.dial_timeout),
        request_timeout: ms(etcd.request_timeout_ms, defaults.request_timeout),
    };
    Ok((StoreConf::Etcd(config), data_dir))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The requested addresses: each list (`args.cni.ips`, then
/// `runtimeConfig.ips`) at its path, deduplicated in order. Unknown content
/// of `args` is ignored, as the spec asks.
fn requested(lists: [(&str, Option<Vec<String>>); 2]) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    for (at, list) in lists {
        for (i, s) in list.unwrap_or_default().iter().enumerate() {
            let field = format!("{at}[{i}]");
            let ip = parse_ip_or_cidr(s).ok_or_else(|| {
                CniError::config(field.as_str(), format!("{s:?} is not an IP address"))
            })?;
            if let Some(kind) = embedded_ipv4(ip) {
                return Err(CniError::config(
                    field,
                    format!("{s:?} is one of the {kind}, an IPv4 host in IPv6 form; request the IPv4 address"),
                ));
            }
            out.push(ip);
        }
    }
    dedup_in_order(&mut out);
    Ok(out)
}

/// The addresses of `prevResult.ips`, when a `prevResult` is given.
fn prev_result(doc: &Value) -> Result<Option<Vec<IpAddr>>, CniError> {
    let Some(Object(prev)) = field::<Object<PrevResult>>(doc, "", "prevResult")? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, ip) in prev.ips.unwrap_or_default().into_iter().enumerate() {
        let field = format!("prevResult.ips[{i}].address");
        let addr = ip.0.address.ok_or_else(|| missing(field.clone()))?;
        let net = addr
            .parse::<IpNet>()
            .map_err(|_| CniError::config(field, format!("{addr:?} is not ip/prefix")))?;
        out.push(net.addr());
    }
    dedup_in_order(&mut out);
    Ok(Some(out))
}

/// `cni.dev/valid-attachments` (or, when it is absent, `cni.dev/attachments`).
fn attachments(doc: &Value) -> Result<Option<Vec<OwnerId>>, CniError> {
    let key = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .into_iter()
        .find(|k| doc.get(k).is_some_and(|v| !v.is_null()));
    let Some(key) = key else {
        return Ok(None);
    };
    let items = field::<Vec<Object<Attachment>>>(doc, "", key)?.unwrap_or_default();
    items
        .into_iter()
        .enumerate()
        .map(|(i, Object(a))| {
            let get = |k: &str, v: Option<String>| {
                nonempty(v).ok_or_else(|| missing(format!("{key}[{i}].{k}")))
            };
            Ok(OwnerId {
                container_id: get("containerID", a.container_id)?,
                ifname: get("ifname", a.ifname)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
