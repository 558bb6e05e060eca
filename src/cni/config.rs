//! The network configuration on stdin: decoding (code 6 with line and
//! column), field-by-field reading (code 7 naming the field path), and
//! conversion into the allocator's [`Network`] and a store choice.
//!
//! Fields read (all others are ignored):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `cniVersion` | string | required, one of [`SUPPORTED`](super::version::SUPPORTED) (else code 1) |
//! | `name` | string | required; alphanumeric first, then alphanumerics, `_`, `.`, `-` |
//! | `ipam.ranges` | `[[range]]` | range sets; one address per set |
//! | `ipam.subnet`, `ipam.rangeStart`, `ipam.rangeEnd`, `ipam.gateway` (+ stage lists) | | old single-range shorthand, prepended as the first set (as host-local does) |
//! | range `subnet`, `rangeStart`, `rangeEnd`, `gateway` | strings | see [`RangeSpec`] |
//! | range `sandbox`, `smallflow` | `[string]` | addresses reserved for pods of that stage |
//! | `ipam.routes` | `[{dst, gw?}]` | copied to the result |
//! | `ipam.resolvConf` | string | path of a `resolv.conf` for the result's `dns` |
//! | `ipam.endpoints` | `[string]` or comma-separated string | etcd endpoints; absent or empty: embedded store |
//! | `ipam.dataDir` | string | embedded store directory (default `/var/lib/cni/host-etcd/<name>`) |
//! | `ipam.certfile`, `ipam.keyfile`, `ipam.trustedcafile` | strings | etcd TLS files |
//! | `ipam.username`, `ipam.password` | strings | etcd auth |
//! | `ipam.prefix` | string | key prefix (default `/host-etcd`) |
//! | `ipam.chunkBits` | integer 1..=24 | chunk size exponent k |
//! | `ipam.dialTimeoutMs`, `ipam.requestTimeoutMs` | integers | etcd deadlines (default 2000) |
//! | `ipam.budgetMs` | integer | whole-operation budget (default 10000) |
//! | `ipam.lockWaitMs` | integer | embedded store lock wait (default: the budget) |
//! | `ipam.maxAttempts` | integer | CAS attempts per operation (default 64) |
//! | `args.cni.ips`, `runtimeConfig.ips` | `[string]` | requested addresses, `ip` or `ip/prefix` |
//! | `prevResult.ips[].address` | string | CHECK: what ADD returned |
//! | `cni.dev/valid-attachments` (or `cni.dev/attachments`) | `[{containerID, ifname}]` | GC |

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::args::{parse_ip_or_cidr, push_unique};
use super::error::CniError;
use super::json::{as_items, as_obj, as_str, join, Obj};
use super::result::Route;
use super::version::CniVersion;
use crate::allocator::{
    Network, Options, OwnerId, CHUNK_BITS_RANGE, DEFAULT_CHUNK_BITS, DEFAULT_PREFIX,
};
use crate::range::{check_sets, Range, RangeSet, RangeSpec};
use crate::store::etcd::EtcdConfig;

/// Stage names whose lists a range object may carry.
pub const STAGES: [&str; 2] = ["sandbox", "smallflow"];

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
    /// Chunk size exponent.
    pub chunk_bits: u8,
    /// Whole-operation budget.
    pub budget: Duration,
    /// CAS attempts per operation.
    pub max_attempts: u32,
    /// Where the node-local state (node cache, node lock) is kept: the
    /// embedded store's directory, or with etcd `dataDir` if given, else
    /// `/var/lib/cni/host-etcd/<name>`.
    pub node_dir: PathBuf,
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
    /// for `runtimeConfig.ipRanges`). Ranges are not validated here; see
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
        let ipam = parse_ipam(&as_obj("ipam", ipam_v)?, name)?;
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
                        field: r.path.clone(),
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
        Ok(Network {
            name: self.name.clone(),
            prefix: self.ipam.prefix.clone(),
            sets,
            chunk_bits: self.ipam.chunk_bits,
        })
    }

    /// Allocator options from the config (`node_seed`: the host name's hash).
    pub fn options(&self) -> Options {
        Options {
            max_attempts: self.ipam.max_attempts,
            budget: self.ipam.budget,
            ..Options::default()
        }
    }
}

/// `ipam.ranges[0]` for `ipam.ranges[0][1]`; `ipam` for the shorthand.
fn set_path(range_path: &str) -> String {
    match range_path.rfind('[') {
        Some(i) if range_path.starts_with("ipam.ranges") => range_path[..i].to_string(),
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

fn parse_ipam(ipam: &Obj<'_>, name: &str) -> Result<IpamConf, CniError> {
    let mut range_sets = Vec::new();
    if ipam.get("subnet").is_some() {
        range_sets.push(vec![parse_range(ipam)?]);
    }
    if let Some(sets) = ipam.items("ranges")? {
        for (set_path, set_v) in &sets {
            let items = as_items(set_path, set_v)?;
            if items.is_empty() {
                return Err(CniError::config(set_path.as_str(), "empty range set"));
            }
            let set = items
                .iter()
                .map(|(p, v)| parse_range(&as_obj(p, v)?))
                .collect::<Result<Vec<_>, _>>()?;
            range_sets.push(set);
        }
    }
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
        None => DEFAULT_CHUNK_BITS,
        Some(k) => u8::try_from(k)
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
        node_dir,
    })
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
/// ignored, as the spec asks; `runtimeConfig.ipRanges` is refused (code 2).
fn parse_requested(root: &Obj<'_>) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    let mut add = |list: Vec<(String, &Value)>| -> Result<(), CniError> {
        for (p, v) in list {
            let s = as_str(&p, v)?;
            let ip = parse_ip_or_cidr(s).ok_or_else(|| {
                CniError::config(p.as_str(), format!("{s:?} is not an IP address"))
            })?;
            push_unique(&mut out, ip);
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
        if rc.items("ipRanges")?.is_some_and(|r| !r.is_empty()) {
            return Err(CniError::UnsupportedField {
                field: rc.field("ipRanges"),
                reason: "the ipRanges capability is not implemented; configure ipam.ranges".into(),
            });
        }
    }
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
        push_unique(&mut out, net.addr());
    }
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
