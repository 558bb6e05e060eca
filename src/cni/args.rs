//! `CNI_ARGS` (`K=V;K=V`), the deploy stage, and requested static addresses.
//!
//! Known keys: `IP` (also `ip`; a comma-separated list of `ip` or
//! `ip/prefix`), `IPAM_STAGE`, `K8S_POD_NAME`, `K8S_POD_NAMESPACE`,
//! `K8S_POD_INFRA_CONTAINER_ID`, `K8S_POD_UID`, `IgnoreUnknown`. Any other
//! key is an error (code 4) unless `IgnoreUnknown` is `1` or `true`, as in the
//! reference plugins.
//!
//! The stage is `IPAM_STAGE` when given, else parsed from the pod name
//! `<service>-<number>-<stage>-<rest>` ([`stage_from_pod_name`]).

use std::net::IpAddr;

use ipnet::IpNet;

use super::error::CniError;
use crate::range::embedded_ipv4;

/// Parsed `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// Addresses from `IP=` (in order, deduplicated).
    pub ips: Vec<IpAddr>,
    /// `IPAM_STAGE`.
    pub ipam_stage: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
}

impl CniArgs {
    /// Parses a `CNI_ARGS` value. Empty `;`-separated segments are skipped.
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        let mut unknown: Option<String> = None;
        let mut ignore_unknown = false;
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad(pair, "expected KEY=VALUE"));
            };
            match key {
                "IP" | "ip" => {
                    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let ip = parse_ip_or_cidr(item)
                            .ok_or_else(|| bad(pair, &format!("{item:?} is not an IP address")))?;
                        if let Some(kind) = embedded_ipv4(ip) {
                            return Err(bad(
                                pair,
                                &format!("{item:?} is one of the {kind}, an IPv4 host in IPv6 form; request the IPv4 address"),
                            ));
                        }
                        out.ips.push(ip);
                    }
                }
                "IPAM_STAGE" => out.ipam_stage = non_empty(value),
                "K8S_POD_NAME" => out.pod_name = non_empty(value),
                "K8S_POD_NAMESPACE" => out.pod_namespace = non_empty(value),
                "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {}
                "IgnoreUnknown" => {
                    ignore_unknown = value == "1" || value.eq_ignore_ascii_case("true");
                }
                _ => {
                    unknown.get_or_insert_with(|| pair.to_string());
                }
            }
        }
        match unknown {
            Some(pair) if !ignore_unknown => Err(bad(
                &pair,
                "unknown key (set IgnoreUnknown=1 to ignore unknown keys)",
            )),
            _ => {
                dedup_in_order(&mut out.ips);
                Ok(out)
            }
        }
    }

    /// The deploy stage: `IPAM_STAGE`, else the one in the pod name.
    pub fn stage(&self) -> Option<String> {
        self.ipam_stage
            .clone()
            .or_else(|| self.pod_name.as_deref().and_then(stage_from_pod_name))
    }
}

fn bad(pair: &str, reason: &str) -> CniError {
    CniError::InvalidEnv {
        var: "CNI_ARGS".into(),
        value: pair.into(),
        reason: reason.into(),
    }
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// Removes repeated addresses, keeping each first occurrence in place.
/// O(n log n): the lists come from the runtime, unbounded.
pub fn dedup_in_order(ips: &mut Vec<IpAddr>) {
    let mut seen = std::collections::BTreeSet::new();
    ips.retain(|ip| seen.insert(*ip));
}

/// Parses `"10.0.0.5"` or `"10.0.0.5/24"` (the prefix is ignored, as the
/// range decides it), `None` otherwise.
pub fn parse_ip_or_cidr(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<IpNet>().ok().map(|n| n.addr()))
}

/// The stage in a pod name `<service>-<number>-<stage>-<rest>`: the first
/// all-digit segment after a non-empty service, followed by a stage segment
/// that is not all digits and at least one more segment. `None` when the
/// name does not match.
pub fn stage_from_pod_name(name: &str) -> Option<String> {
    let segs: Vec<&str> = name.split('-').collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (1..segs.len()).find_map(|i| {
        let stage = *segs.get(i + 1)?;
        let rest = segs.get(i + 2..)?;
        let service_ok = segs[..i].iter().all(|s| !s.is_empty());
        let ok = service_ok
            && all_digits(segs[i])
            && !stage.is_empty()
            && !all_digits(stage)
            && !rest.is_empty()
            && rest.iter().all(|s| !s.is_empty());
        ok.then(|| stage.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn empty_args() {
        assert_eq!(CniArgs::parse("").ok(), Some(CniArgs::default()));
        assert_eq!(CniArgs::parse(";;").ok(), Some(CniArgs::default()));
    }

    #[test]
    fn kubernetes_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=pay;K8S_POD_NAME=pay-10-sandbox-84f8cc5d4b-8v4fw;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .expect("valid");
        assert_eq!(a.pod_namespace.as_deref(), Some("pay"));
        assert_eq!(
            a.pod_name.as_deref(),
            Some("pay-10-sandbox-84f8cc5d4b-8v4fw")
        );
        assert_eq!(a.stage().as_deref(), Some("sandbox"));
        assert!(a.ips.is_empty());
    }

    #[test]
    fn ip_list_with_prefixes_deduplicated() {
        let a = CniArgs::parse("IP=10.0.0.5,2001:db8::7/64, 10.0.0.5/24").expect("valid");
        assert_eq!(a.ips, vec![ip("10.0.0.5"), ip("2001:db8::7")]);
        let b = CniArgs::parse("ip=10.0.0.9").expect("valid");
        assert_eq!(b.ips, vec![ip("10.0.0.9")]);
    }

    #[test]
    fn bad_ip_names_the_pair() {
        match CniArgs::parse("IP=10.0.0.300") {
            Err(CniError::InvalidEnv { var, value, .. }) => {
                assert_eq!(var, "CNI_ARGS");
                assert_eq!(value, "IP=10.0.0.300");
            }
            other => panic!("expected InvalidEnv, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        assert_eq!(
            CniArgs::parse("FOO=bar").map_err(|e| e.code()).err(),
            Some(4)
        );
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=true").is_ok());
        assert!(CniArgs::parse("IgnoreUnknown=1;FOO=bar").is_ok());
        assert!(CniArgs::parse("IgnoreUnknown=0;FOO=bar").is_err());
        assert!(CniArgs::parse("novalue").is_err());
    }

    #[test]
    fn ipam_stage_wins_over_pod_name() {
        let a =
            CniArgs::parse("IPAM_STAGE=smallflow;K8S_POD_NAME=pay-10-sandbox-x-y").expect("valid");
        assert_eq!(a.stage().as_deref(), Some("smallflow"));
    }

    #[test]
    fn stage_extraction() {
        let cases = [
            ("pay-10-sandbox-84f8cc5d4b-8v4fw", Some("sandbox")),
            ("pay-10-smallflow-84f8cc5d4b-8v4fw", Some("smallflow")),
            ("pay-api-3-canary-5d4b-8v4fw", Some("canary")),
            ("pay-10-sandbox-x", Some("sandbox")),
            ("pay-10-sandbox", None),
            ("pay-sandbox-84f8cc5d4b-8v4fw", None),
            ("pay-1a-sandbox-x", None),
            ("10-sandbox-x-y", None),
            ("web-0", None),
            ("pay-10--x", None),
            ("pay-10-sandbox-", None),
            ("", None),
            ("nginx", None),
        ];
        for (name, want) in cases {
            assert_eq!(stage_from_pod_name(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn ip_or_cidr() {
        assert_eq!(parse_ip_or_cidr("10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip_or_cidr("10.1.2.3/16"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip_or_cidr("fd00::1/64"), Some(ip("fd00::1")));
        assert_eq!(parse_ip_or_cidr("10.1.2"), None);
        assert_eq!(parse_ip_or_cidr("10.1.2.3/33"), None);
    }
}

/// The examples these items documented while they were public API, kept as
/// tests (the items are private to the crate now).
#[cfg(test)]
mod examples {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn doc_example_parse() -> Result<(), crate::cni::CniError> {
        use crate::cni::args::CniArgs;
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=pay-10-sandbox-84f8cc5d4b-8v4fw;X=y")?;
        assert_eq!(a.stage().as_deref(), Some("sandbox"));
        Ok(())
    }

    #[test]
    fn doc_example_dedup_in_order() -> Result<(), std::net::AddrParseError> {
        use crate::cni::args::dedup_in_order;
        let mut ips = vec![
            "10.0.0.2".parse()?,
            "10.0.0.1".parse()?,
            "10.0.0.2".parse()?,
        ];
        dedup_in_order(&mut ips);
        assert_eq!(
            ips,
            vec!["10.0.0.2".parse::<std::net::IpAddr>()?, "10.0.0.1".parse()?]
        );
        Ok(())
    }

    #[test]
    fn doc_example_stage_from_pod_name() {
        use crate::cni::args::stage_from_pod_name;
        assert_eq!(
            stage_from_pod_name("pay-10-sandbox-84f8cc5d4b-8v4fw").as_deref(),
            Some("sandbox")
        );
        assert_eq!(stage_from_pod_name("web-0"), None);
    }
}
