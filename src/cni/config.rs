//! The network configuration on stdin: decoding (code 6 with line and
//! column), field-by-field reading (code 7 naming the field path), and
//! conversion into the allocator's [`Network`] and a store choice.
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
//! whereabouts' fields that would change behaviour silently are refused
//! (code 2, naming the field, see [`WHEREABOUTS_REFUSED`]); its logging and
//! leader-election tuning fields are ignored.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::args::{dedup_in_order, parse_ip_or_cidr};
use super::error::CniError;
use super::json::{as_items, as_obj, as_str, join, Obj};
use super::log::LogSettings;
use super::result::Route;
use super::status_policy::StatusPolicy;
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// The `cniVersion` of stdin if it is JSON naming a supported version
/// (used for `VERSION` and for the version of error output).
pub fn requested_version(bytes: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    CniVersion::parse(v.get("cniVersion")?.as_str()?)
}

impl NetConf {
    /// Parses stdin: JSON (6), then `cniVersion` (1), then the rest (7, or 2
    /// for a refused whereabouts field). Ranges are not validated here; see
    /// [`NetConf::network`].
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let doc = decode(bytes)?;
        let root = as_obj("", &doc)?;
        let raw_version = root.str("cniVersion")?.unwrap_or("");
        let cni_version =
            CniVersion::parse(raw_version).ok_or_else(|| CniError::IncompatibleVersion {
                version: raw_version.to_string(),
            })?;
        let name = root
            .str("name")?
            .ok_or_else(|| CniError::config("name", "missing"))?;
        check_name(name)?;
        let ipam_v = root
            .get("ipam")
            .ok_or_else(|| CniError::config("ipam", "missing"))?;
        let runtime_sets = parse_runtime_ranges(&root)?;
        let ipam = parse_ipam(&as_obj("ipam", ipam_v)?, name, runtime_sets)?;
        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            ipam,
            requested: parse_requested(&root)?,
            prev_result_ips: parse_prev_result(&root)?,
            valid_attachments: parse_attachments(&root)?,
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
/// `runtimeConfig.ipRanges`).
fn parse_range_sets(sets: &[(String, &Value)]) -> Result<Vec<Vec<RangeConf>>, CniError> {
    if let Some((first, _)) = sets.first() {
        limit_sets(&set_path(first), sets.len())?;
    }
    let mut out = Vec::with_capacity(sets.len());
    for (set_path, set_v) in sets {
        let items = as_items(set_path, set_v)?;
        if items.is_empty() {
            return Err(CniError::config(set_path.as_str(), "empty range set"));
        }
        if items.len() > MAX_RANGES_PER_SET {
            return Err(CniError::Range {
                field: set_path.clone(),
                source: RangeError::TooManyRanges {
                    count: items.len(),
                    max: MAX_RANGES_PER_SET,
                },
            });
        }
        let set = items
            .iter()
            .map(|(p, v)| parse_range(&as_obj(p, v)?))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(set);
    }
    Ok(out)
}

/// Refuses more than [`MAX_RANGE_SETS`] range sets (code 7, naming
/// `field`), before any of them is parsed: a runtime-supplied list is
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

/// `runtimeConfig.ipRanges` (the `ipRanges` capability): range sets in
/// host-local's form. host-local prepends them to the configured sets; an
/// empty list is ignored.
fn parse_runtime_ranges(root: &Obj<'_>) -> Result<Vec<Vec<RangeConf>>, CniError> {
    let Some(rc_v) = root.get("runtimeConfig") else {
        return Ok(Vec::new());
    };
    let rc = as_obj("runtimeConfig", rc_v)?;
    match rc.items("ipRanges")? {
        None => Ok(Vec::new()),
        Some(sets) => parse_range_sets(&sets),
    }
}

/// Refuses the whereabouts fields of [`WHEREABOUTS_REFUSED`] (code 2).
/// `enable_overlapping_ranges` is accepted when `false`; `dns` only matters
/// in a whereabouts-style section (host-local ignores it too).
fn refuse_whereabouts_fields(ipam: &Obj<'_>, whereabouts: bool) -> Result<(), CniError> {
    for (key, reason) in WHEREABOUTS_REFUSED {
        let Some(v) = ipam.get(key) else { continue };
        let refused = match key {
            "enable_overlapping_ranges" => match v {
                Value::Bool(b) => *b,
                _ => {
                    return Err(CniError::config(
                        ipam.field(key),
                        "expected a boolean (false; host-etcd cannot honour true)",
                    ))
                }
            },
            "dns" => whereabouts,
            _ => true,
        };
        if refused {
            return Err(CniError::UnsupportedField {
                field: ipam.field(key),
                reason: reason.to_string(),
            });
        }
    }
    Ok(())
}

fn parse_ipam(
    ipam: &Obj<'_>,
    name: &str,
    runtime_sets: Vec<Vec<RangeConf>>,
) -> Result<IpamConf, CniError> {
    let whereabouts = ipam.get("range").is_some() || ipam.get("ipRanges").is_some();
    refuse_whereabouts_fields(ipam, whereabouts)?;
    let host_local = ipam.get("subnet").is_some() || ipam.get("ranges").is_some();
    if whereabouts && host_local {
        let key = if ipam.get("range").is_some() {
            "range"
        } else {
            "ipRanges"
        };
        return Err(CniError::config(
            ipam.field(key),
            "whereabouts-style ranges (range, ipRanges) cannot be combined with subnet or ranges; use one style",
        ));
    }
    if ipam.get("range").is_none() {
        for key in ["range_start", "range_end"] {
            if ipam.get(key).is_some() {
                return Err(CniError::config(
                    ipam.field(key),
                    "needs ipam.range (the whereabouts range it narrows)",
                ));
            }
        }
        if ipam.get("exclude").is_some() && ipam.get("subnet").is_none() {
            return Err(CniError::config(
                ipam.field("exclude"),
                "applies to the top-level range (ipam.subnet or ipam.range), and there is none; put exclude in each range object",
            ));
        }
    }
    // As host-local: runtimeConfig.ipRanges first, then the shorthand, then
    // ranges.
    let mut range_sets = runtime_sets;
    if ipam.get("subnet").is_some() {
        range_sets.push(vec![parse_range(ipam)?]);
    }
    if let Some(sets) = ipam.items("ranges")? {
        range_sets.extend(parse_range_sets(&sets)?);
    }
    if whereabouts {
        range_sets.extend(parse_whereabouts(ipam)?);
    }
    // Each list was bounded as it was read; together they are bounded too.
    limit_sets(&ipam.field("ranges"), range_sets.len())?;
    if range_sets.is_empty() {
        return Err(CniError::config(
            ipam.field("ranges"),
            "no IP ranges specified (need ranges or subnet)",
        ));
    }

    let routes = match ipam.items("routes")? {
        None => Vec::new(),
        Some(items) => items
            .iter()
            .map(|(p, v)| parse_route(&as_obj(p, v)?))
            .collect::<Result<Vec<_>, _>>()?,
    };

    let budget = Duration::from_millis(ipam.u64("budgetMs")?.unwrap_or(10_000));
    let chunk_bits = match ipam.u64("chunkBits")? {
        None => None,
        Some(k) => Some(
            u8::try_from(k)
                .ok()
                .filter(|k| CHUNK_BITS_RANGE.contains(k))
                .ok_or_else(|| {
                    CniError::config(
                        ipam.field("chunkBits"),
                        format!(
                            "{k} is out of range {}..={}",
                            CHUNK_BITS_RANGE.start(),
                            CHUNK_BITS_RANGE.end()
                        ),
                    )
                })?,
        ),
    };
    let max_attempts = match ipam.u64("maxAttempts")? {
        None => Options::default().max_attempts,
        Some(n) => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            CniError::config(
                ipam.field("maxAttempts"),
                format!("{n} is out of range 1.."),
            )
        })?,
    };
    let sticky_ttl = match ipam.u64("stickyTtlSeconds")? {
        None => None,
        Some(secs) if (1..=MAX_STICKY_TTL_SECONDS).contains(&secs) => {
            Some(Duration::from_secs(secs))
        }
        Some(secs) => {
            return Err(CniError::config(
                ipam.field("stickyTtlSeconds"),
                format!(
                    "{secs} is out of range 1..={MAX_STICKY_TTL_SECONDS} (omit the field to turn sticky addresses off)"
                ),
            ))
        }
    };
    let gc_grace = match ipam.u64("gcGraceSeconds")? {
        None => Duration::from_secs(DEFAULT_GC_GRACE_SECONDS),
        Some(secs) if secs <= MAX_GC_GRACE_SECONDS => Duration::from_secs(secs),
        Some(secs) => {
            return Err(CniError::config(
                ipam.field("gcGraceSeconds"),
                format!("{secs} is out of range 0..={MAX_GC_GRACE_SECONDS}"),
            ))
        }
    };
    let prefix = match ipam.str("prefix")? {
        None => DEFAULT_PREFIX.to_string(),
        Some(p) => {
            let trimmed = p.trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(CniError::config(
                    ipam.field("prefix"),
                    format!("{p:?} is empty"),
                ));
            }
            trimmed.to_string()
        }
    };

    let store = parse_store(ipam, name, budget)?;
    let node_dir = match &store {
        StoreConf::Local { data_dir, .. } => data_dir.clone(),
        StoreConf::Etcd(_) => ipam
            .str("dataDir")?
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR).join(name), PathBuf::from),
    };
    Ok(IpamConf {
        range_sets,
        routes,
        resolv_conf: ipam
            .str("resolvConf")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        store: store.clone(),
        prefix,
        chunk_bits,
        budget,
        max_attempts,
        sticky_ttl,
        gc_grace,
        node_dir,
        status: StatusPolicy::parse(ipam)?,
        log: LogSettings::parse(ipam)?,
        agent: parse_agent_mode(ipam)?,
        agent_socket: ipam
            .str("agentSocket")?
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET), PathBuf::from),
        agent_ack: parse_agent_ack(ipam, budget)?,
    })
}

/// `ipam.agentAckMs`: 1..=`budgetMs` (default
/// [`DEFAULT_ACK_TIMEOUT`](super::agent_client::protocol::DEFAULT_ACK_TIMEOUT), at
/// most `budgetMs`).
fn parse_agent_ack(ipam: &Obj<'_>, budget: Duration) -> Result<Duration, CniError> {
    let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    match ipam.u64("agentAckMs")? {
        None => Ok(super::agent_client::protocol::DEFAULT_ACK_TIMEOUT.min(budget)),
        Some(ms) if (1..=budget_ms).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(CniError::config(
            ipam.field("agentAckMs"),
            format!("{ms} is out of range 1..={budget_ms} (budgetMs)"),
        )),
    }
}

/// `ipam.agent`: `"auto"` (default), `"off"` or `"required"`.
fn parse_agent_mode(ipam: &Obj<'_>) -> Result<AgentMode, CniError> {
    match ipam.str("agent")? {
        None | Some("auto") => Ok(AgentMode::Auto),
        Some("off") => Ok(AgentMode::Off),
        Some("required") => Ok(AgentMode::Required),
        Some(other) => Err(CniError::config(
            ipam.field("agent"),
            format!("{other:?}: expected \"auto\", \"off\" or \"required\""),
        )),
    }
}

fn parse_range(r: &Obj<'_>) -> Result<RangeConf, CniError> {
    let subnet = r
        .str("subnet")?
        .ok_or_else(|| CniError::config(r.field("subnet"), "missing"))?;
    let mut spec = RangeSpec {
        subnet: subnet.to_string(),
        range_start: r.str("rangeStart")?.map(str::to_string),
        range_end: r.str("rangeEnd")?.map(str::to_string),
        gateway: r.str("gateway")?.map(str::to_string),
        exclude: r.strs("exclude")?.unwrap_or_default(),
        ..RangeSpec::default()
    };
    for stage in STAGES {
        if let Some(list) = r.strs(stage)? {
            spec.stages.insert(stage.to_string(), list);
        }
    }
    Ok(RangeConf {
        path: r.path().to_string(),
        spec,
    })
}

/// whereabouts' ranges: the top-level `range` (with `range_start`,
/// `range_end`, `exclude`) first, then one set per `ipRanges` entry; the
/// top-level `gateway` goes to the range whose subnet holds it.
fn parse_whereabouts(ipam: &Obj<'_>) -> Result<Vec<Vec<RangeConf>>, CniError> {
    let mut ranges = Vec::new();
    if ipam.get("range").is_some() {
        ranges.push(parse_whereabouts_range(ipam)?);
    }
    let ip_ranges = ipam.items("ipRanges")?.unwrap_or_default();
    limit_sets(&ipam.field("ipRanges"), ip_ranges.len())?;
    for (p, v) in ip_ranges {
        ranges.push(parse_whereabouts_range(&as_obj(&p, v)?)?);
    }
    if let Some(gw_s) = ipam.str("gateway")? {
        let field = ipam.field("gateway");
        let gw = gw_s.parse::<IpAddr>().map_err(|_| {
            CniError::config(field.as_str(), format!("{gw_s:?} is not an IP address"))
        })?;
        let holder = ranges.iter_mut().find(|r| {
            r.spec
                .subnet
                .parse::<IpNet>()
                .is_ok_and(|n| n.contains(&gw))
        });
        match holder {
            Some(r) => r.spec.gateway = Some(gw_s.to_string()),
            None => {
                return Err(CniError::config(
                    field.as_str(),
                    format!("{gw} is not inside the subnet of any range (range, ipRanges); the gateway must be inside its range's subnet"),
                ))
            }
        }
    }
    Ok(ranges.into_iter().map(|r| vec![r]).collect())
}

/// One whereabouts range object (`ipam` itself or an `ipRanges` entry):
/// `range` is a CIDR (host bits ignored, as whereabouts does) or
/// `start-end/prefix` (the subnet is `end/prefix`; `start` and `end` are
/// the inclusive bounds); `range_start` / `range_end` narrow a CIDR form.
fn parse_whereabouts_range(o: &Obj<'_>) -> Result<RangeConf, CniError> {
    let field = o.field("range");
    let raw = o
        .str("range")?
        .ok_or_else(|| CniError::config(field.as_str(), "missing"))?;
    let bad = |why: String| CniError::config(field.as_str(), format!("{raw:?}: {why}"));
    let cidr = |s: &str| {
        s.trim().parse::<IpNet>().map_err(|_| {
            bad(format!(
                "{s:?} is not a CIDR such as 192.168.2.0/24 or fd00::/64"
            ))
        })
    };
    let (subnet, mut start, mut end) = match raw.split_once('-') {
        Some((a, b)) => {
            let first = a.trim().parse::<IpAddr>().map_err(|_| {
                bad(format!(
                    "start {a:?} is not an IP address (want start-end/prefix)"
                ))
            })?;
            let written = cidr(b)?;
            let (subnet, last) = (written.trunc(), written.addr());
            if Family::of(first) != Family::of(last) {
                return Err(bad(format!(
                    "start {first} and end {last} are of different address families"
                )));
            }
            if !subnet.contains(&first) {
                return Err(bad(format!("start {first} is not in subnet {subnet}")));
            }
            if first > last {
                return Err(bad(format!("start {first} is after end {last}")));
            }
            for key in ["range_start", "range_end"] {
                if o.get(key).is_some() {
                    return Err(CniError::config(
                        o.field(key),
                        "cannot be combined with the start-end/prefix form of range",
                    ));
                }
            }
            (subnet, Some(first), Some(last))
        }
        None => (cidr(raw)?.trunc(), None, None),
    };
    if subnet.prefix_len() > subnet.max_prefix_len().saturating_sub(2) {
        return Err(bad(format!(
            "subnet {subnet} is too small to allocate from (IPv4 needs a /30 or shorter prefix, IPv6 a /126 or shorter)"
        )));
    }
    let bound = |key: &str| -> Result<Option<IpAddr>, CniError> {
        let Some(v) = o.str(key)? else {
            return Ok(None);
        };
        let ip = v
            .parse::<IpAddr>()
            .map_err(|_| CniError::config(o.field(key), format!("{v:?} is not an IP address")))?;
        if Family::of(ip) != Family::of(subnet.network()) {
            return Err(CniError::config(
                o.field(key),
                format!("{ip} is not of the address family of range {subnet}"),
            ));
        }
        if !subnet.contains(&ip) {
            return Err(CniError::config(
                o.field(key),
                format!("{ip} is not in range {subnet}"),
            ));
        }
        Ok(Some(ip))
    };
    if start.is_none() {
        start = bound("range_start")?;
        end = bound("range_end")?;
        if let (Some(a), Some(b)) = (start, end) {
            if a > b {
                return Err(CniError::config(
                    o.field("range_end"),
                    format!("{b} is before range_start {a}"),
                ));
            }
        }
    }
    Ok(RangeConf {
        path: o.path().to_string(),
        spec: RangeSpec {
            subnet: subnet.to_string(),
            range_start: start.map(|a| a.to_string()),
            range_end: end.map(|a| a.to_string()),
            exclude: o.strs("exclude")?.unwrap_or_default(),
            ..RangeSpec::default()
        },
    })
}

fn parse_route(r: &Obj<'_>) -> Result<Route, CniError> {
    let dst_s = r
        .str("dst")?
        .ok_or_else(|| CniError::config(r.field("dst"), "missing"))?;
    let dst = dst_s
        .parse::<IpNet>()
        .map_err(|_| CniError::config(r.field("dst"), format!("{dst_s:?} is not a CIDR")))?;
    let gw =
        match r.str("gw")? {
            None => None,
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                CniError::config(r.field("gw"), format!("{g:?} is not an IP address"))
            })?),
        };
    Ok(Route { dst, gw })
}

fn parse_store(ipam: &Obj<'_>, name: &str, budget: Duration) -> Result<StoreConf, CniError> {
    let endpoints: Vec<String> = match ipam.get("endpoints") {
        None => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(_) => ipam.strs("endpoints")?.unwrap_or_default(),
    };
    if let Some(e) = endpoints.iter().find(|e| e.trim().is_empty()) {
        return Err(CniError::config(
            ipam.field("endpoints"),
            format!("empty endpoint {e:?}"),
        ));
    }
    let ms = |key: &str, default: u64| -> Result<Duration, CniError> {
        Ok(Duration::from_millis(ipam.u64(key)?.unwrap_or(default)))
    };
    if endpoints.is_empty() {
        let data_dir = match ipam.str("dataDir")?.filter(|s| !s.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(DEFAULT_DATA_DIR).join(name),
        };
        let lock_wait = ms(
            "lockWaitMs",
            u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        )?;
        return Ok(StoreConf::Local {
            data_dir,
            lock_wait,
        });
    }
    let path = |key: &str| -> Result<Option<PathBuf>, CniError> {
        Ok(ipam.str(key)?.filter(|s| !s.is_empty()).map(PathBuf::from))
    };
    let text = |key: &str| -> Result<Option<String>, CniError> {
        Ok(ipam.str(key)?.filter(|s| !s.is_empty()).map(str::to_string))
    };
    let defaults = EtcdConfig::default();
    Ok(StoreConf::Etcd(EtcdConfig {
        endpoints,
        cert_file: path("certfile")?,
        key_file: path("keyfile")?,
        trusted_ca_file: path("trustedcafile")?,
        username: text("username")?,
        password: text("password")?,
        dial_timeout: ms("dialTimeoutMs", millis(defaults.dial_timeout))?,
        request_timeout: ms("requestTimeoutMs", millis(defaults.request_timeout))?,
    }))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `args.cni.ips` then `runtimeConfig.ips`. Unknown content of `args` is
/// ignored, as the spec asks.
fn parse_requested(root: &Obj<'_>) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    let mut add = |list: Vec<(String, &Value)>| -> Result<(), CniError> {
        for (p, v) in list {
            let s = as_str(&p, v)?;
            let ip = parse_ip_or_cidr(s).ok_or_else(|| {
                CniError::config(p.as_str(), format!("{s:?} is not an IP address"))
            })?;
            if let Some(kind) = embedded_ipv4(ip) {
                return Err(CniError::config(
                    p.as_str(),
                    format!("{s:?} is one of the {kind}, an IPv4 host in IPv6 form; request the IPv4 address"),
                ));
            }
            out.push(ip);
        }
        Ok(())
    };
    if let Some(Value::Object(args)) = root.get("args") {
        if let Some(Value::Object(cni)) = args.get("cni") {
            if let Some(ips) = cni.get("ips").filter(|v| !v.is_null()) {
                add(as_items("args.cni.ips", ips)?)?;
            }
        }
    }
    if let Some(rc_v) = root.get("runtimeConfig") {
        let rc = as_obj("runtimeConfig", rc_v)?;
        if let Some(ips) = rc.items("ips")? {
            add(ips)?;
        }
    }
    dedup_in_order(&mut out);
    Ok(out)
}

fn parse_prev_result(root: &Obj<'_>) -> Result<Option<Vec<IpAddr>>, CniError> {
    let Some(prev_v) = root.get("prevResult") else {
        return Ok(None);
    };
    let prev = as_obj("prevResult", prev_v)?;
    let mut out = Vec::new();
    for (p, v) in prev.items("ips")?.unwrap_or_default() {
        let ip = as_obj(&p, v)?;
        let field = ip.field("address");
        let addr = ip
            .str("address")?
            .ok_or_else(|| CniError::config(field.as_str(), "missing"))?;
        let net = addr
            .parse::<IpNet>()
            .map_err(|_| CniError::config(field.as_str(), format!("{addr:?} is not ip/prefix")))?;
        out.push(net.addr());
    }
    dedup_in_order(&mut out);
    Ok(Some(out))
}

fn parse_attachments(root: &Obj<'_>) -> Result<Option<Vec<OwnerId>>, CniError> {
    let key = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .into_iter()
        .find(|k| root.get(k).is_some());
    let Some(key) = key else {
        return Ok(None);
    };
    let items = root.items(key)?.unwrap_or_default();
    items
        .iter()
        .map(|(p, v)| {
            let a = as_obj(p, v)?;
            let get = |k: &str| -> Result<String, CniError> {
                a.str(k)?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| CniError::config(join(p, k), "missing"))
            };
            Ok(OwnerId {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
