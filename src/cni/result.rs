//! The ADD result: built from an [`Allocation`] and encoded per requested
//! CNI version.
//!
//! Shapes (IPAM plugins omit `interfaces` and `ips[].interface`):
//!
//! * 0.3.0, 0.3.1, 0.4.0: `ips[]` = `{"version": "4"|"6", "address", "gateway"}`;
//! * 1.0.0, 1.1.0: `ips[]` = `{"address", "gateway"}`;
//! * all: `routes` (omitted when empty) = `[{"dst", "gw"?}]`, copied as
//!   configured (like host-local, a route without `gw` stays without one);
//!   `dns` always present, `{}` when no `resolvConf` is configured.
//!
//! `address` is the assigned IP with the prefix length of its range's subnet;
//! `gateway` is the range's gateway.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::error::CniError;
use super::resolv::Dns;
use super::version::CniVersion;
use crate::allocator::{Allocation, Network};
use crate::range::Family;

/// One configured route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination, as configured (host bits kept, like host-local).
    pub dst: IpNet,
    /// Next hop; absent means "the interface's gateway" to the consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// One address of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its subnet's prefix length.
    pub address: IpNet,
    /// The range's gateway.
    pub gateway: Option<IpAddr>,
}

/// The IPAM result, version-independent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    /// One per range set, in set order.
    pub ips: Vec<IpConfig>,
    /// Configured routes.
    pub routes: Vec<Route>,
    /// DNS from `resolvConf`.
    pub dns: Dns,
}

#[derive(Serialize)]
struct IpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct ResultOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    ips: Vec<IpOut>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Dns,
}

#[derive(Serialize)]
struct VersionOut {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    supported_versions: &'static [&'static str],
}

impl CniResult {
    /// Builds the result of an allocation on `network`.
    pub fn from_allocation(
        allocation: &Allocation,
        network: &Network,
        routes: &[Route],
        dns: Dns,
    ) -> Result<CniResult, CniError> {
        let ips = allocation
            .assigned
            .iter()
            .map(|a| {
                let range = network
                    .sets
                    .get(a.set)
                    .and_then(|s| s.ranges().get(a.range))
                    .ok_or_else(|| {
                        CniError::Internal(format!(
                            "allocator returned {} for range {} of set {}, which does not exist",
                            a.ip, a.range, a.set
                        ))
                    })?;
                let address = IpNet::new(a.ip, range.subnet.prefix_len()).map_err(|_| {
                    CniError::Internal(format!(
                        "allocator returned {} outside the family of {}",
                        a.ip, range.subnet
                    ))
                })?;
                Ok(IpConfig {
                    address,
                    gateway: Some(range.gateway),
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        Ok(CniResult {
            ips,
            routes: routes.to_vec(),
            dns,
        })
    }

    /// The result JSON for `version` (pretty-printed).
    pub fn encode(&self, version: CniVersion) -> Result<String, CniError> {
        let out = ResultOut {
            cni_version: version.as_str(),
            ips: self
                .ips
                .iter()
                .map(|ip| IpOut {
                    version: version
                        .ip_version_field()
                        .then(|| Family::of(ip.address.addr()).as_str()),
                    address: ip.address.to_string(),
                    gateway: ip.gateway,
                })
                .collect(),
            routes: &self.routes,
            dns: &self.dns,
        };
        to_json(&out)
    }
}

/// The `VERSION` answer.
pub fn version_json(version: CniVersion) -> Result<String, CniError> {
    to_json(&VersionOut {
        cni_version: version.as_str(),
        supported_versions: &super::version::SUPPORTED,
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, CniError> {
    // Our output types hold only strings, numbers and addresses, so this
    // does not fail; if it ever did, the runtime gets an error, never an
    // invented result.
    serde_json::to_string_pretty(value)
        .map_err(|e| CniError::Internal(format!("encoding the result JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn sample() -> CniResult {
        CniResult {
            ips: vec![
                IpConfig {
                    address: "203.0.113.2/24".parse().expect("net"),
                    gateway: "203.0.113.1".parse().ok(),
                },
                IpConfig {
                    address: "2001:db8:1::2/64".parse().expect("net"),
                    gateway: "2001:db8:1::1".parse().ok(),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().expect("net"),
                    gw: None,
                },
                Route {
                    dst: "192.168.0.0/16".parse().expect("net"),
                    gw: "10.10.5.1".parse().ok(),
                },
                Route {
                    dst: "3ffe:ffff:0:01ff::1/64".parse().expect("net"),
                    gw: None,
                },
            ],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: None,
                search: vec!["svc.cluster.local".into()],
                options: vec![],
            },
        }
    }

    fn encode(r: &CniResult, v: CniVersion) -> Value {
        serde_json::from_str(&r.encode(v).expect("encodes")).expect("result JSON parses")
    }

    #[test]
    fn pre_1_0_results_carry_ip_version() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let out = encode(&sample(), v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(
                out["ips"],
                json!([
                    {"version": "4", "address": "203.0.113.2/24", "gateway": "203.0.113.1"},
                    {"version": "6", "address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}
                ])
            );
        }
    }

    #[test]
    fn results_from_1_0_have_no_ip_version() {
        for v in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let out = encode(&sample(), v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(
                out["ips"],
                json!([
                    {"address": "203.0.113.2/24", "gateway": "203.0.113.1"},
                    {"address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}
                ])
            );
        }
    }

    #[test]
    fn routes_and_dns_as_host_local_writes_them() {
        let out = encode(&sample(), CniVersion::V1_0_0);
        assert_eq!(
            out["routes"],
            json!([
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.0.0/16", "gw": "10.10.5.1"},
                {"dst": "3ffe:ffff:0:1ff::1/64"}
            ])
        );
        assert_eq!(
            out["dns"],
            json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]})
        );
        let keys: Vec<&str> = out
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for k in &keys {
            assert!(["cniVersion", "ips", "routes", "dns"].contains(k), "{k}");
        }
    }

    #[test]
    fn empty_routes_omitted_dns_always_present() {
        let r = CniResult {
            ips: sample().ips,
            routes: vec![],
            dns: Dns::default(),
        };
        let out = encode(&r, CniVersion::V0_3_1);
        assert!(out.get("routes").is_none());
        assert_eq!(out["dns"], json!({}));
    }

    #[test]
    fn version_answer() {
        let out: Value = serde_json::from_str(&version_json(CniVersion::V0_4_0).expect("encodes"))
            .expect("parses");
        assert_eq!(
            out,
            json!({"cniVersion": "0.4.0",
                   "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
