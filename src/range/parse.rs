//! [`RangeSpec`] → [`Range`]: parsing, host-local's defaults, validation of
//! `rangeStart` / `rangeEnd` / `gateway`, of the `exclude` list and of the
//! stage reservation lists.
//!
//! All arithmetic is on `u128` with checked operations, so a `::/0` or an
//! IPv4 `0.0.0.0/0` is as safe as a /24; nothing here can panic.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::{from_u128, to_u128, Family, Range, RangeError, RangeSpec};
use crate::range::error::Field;

/// Parses and validates `spec` (see [`Range::parse`]).
pub(super) fn parse(spec: &RangeSpec) -> Result<Range, RangeError> {
    let subnet = parse_subnet(&spec.subnet)?;
    let family = Family::of(subnet.network());
    let network = to_u128(subnet.network());
    // ipnet's broadcast() is the all-ones host part for both families.
    let last = to_u128(subnet.broadcast());

    let gateway = match &spec.gateway {
        Some(v) => parse_addr(Field::Gateway, v, subnet)?,
        None => addr(family, network.checked_add(1), subnet)?,
    };
    let start = match &spec.range_start {
        Some(v) => parse_addr(Field::RangeStart, v, subnet)?,
        None => addr(family, network.checked_add(2), subnet)?,
    };
    let end = match &spec.range_end {
        Some(v) => parse_addr(Field::RangeEnd, v, subnet)?,
        None => match family {
            Family::V4 => addr(family, last.checked_sub(1), subnet)?,
            Family::V6 => addr(family, Some(last), subnet)?,
        },
    };
    if to_u128(start) > to_u128(end) {
        return Err(RangeError::StartAfterEnd { start, end, subnet });
    }

    let mut range = Range {
        subnet,
        start,
        end,
        gateway,
        stages: BTreeMap::new(),
        exclude: Vec::new(),
        excluded: Vec::new(),
    };
    (range.exclude, range.excluded) = parse_exclude(subnet, &spec.exclude)?;
    check_not_all_excluded(&range)?;
    range.stages = parse_stages(&range, &spec.stages)?;
    Ok(range)
}

/// Exclusions as written (canonical) and as merged integer intervals.
type Exclusions = (Vec<IpNet>, Vec<(u128, u128)>);

/// The `exclude` list: each entry a CIDR (host bits cleared) or an address,
/// of the subnet's family, entirely inside the subnet. Returns the entries
/// (canonical, config order) and their union as sorted, merged intervals.
fn parse_exclude(subnet: IpNet, values: &[String]) -> Result<Exclusions, RangeError> {
    let family = Family::of(subnet.network());
    let mut nets = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let net = match IpNet::from_str(value) {
            Ok(n) => n.trunc(),
            Err(_) => IpAddr::from_str(value).map(IpNet::from).map_err(|_| {
                RangeError::InvalidExclude {
                    index,
                    value: value.clone(),
                }
            })?,
        };
        if let Some(kind) = super::embeds_ipv4(net) {
            return Err(RangeError::ExcludeEmbedsIpv4 {
                index,
                value: value.clone(),
                kind,
            });
        }
        if Family::of(net.network()) != family {
            return Err(RangeError::ExcludeWrongFamily {
                index,
                value: value.clone(),
                subnet,
            });
        }
        if !subnet.contains(&net) {
            return Err(RangeError::ExcludeOutsideSubnet {
                index,
                value: value.clone(),
                subnet,
            });
        }
        nets.push(net);
    }
    let iv: Vec<(u128, u128)> = nets
        .iter()
        .map(|n| (to_u128(n.network()), to_u128(n.broadcast())))
        .collect();
    Ok((nets, super::merge_intervals(iv)))
}

/// Refuses exclusions that leave no address of `start..=end` to hand out
/// (the gateway, network and broadcast addresses never are). O(entries):
/// a run of more than three unexcluded addresses always holds one that is
/// none of those three.
fn check_not_all_excluded(range: &Range) -> Result<(), RangeError> {
    let usable = |(lo, hi): (u128, u128)| {
        hi - lo >= 3 || (lo..=hi).any(|v| range.reserved_kind_u128(v).is_none())
    };
    // A range with nothing to hand out even without exclusions (say
    // rangeStart = rangeEnd = the gateway) is accepted, as host-local does;
    // only exclusions that take the last addresses are refused.
    if range.excluded.is_empty() || !usable((range.first(), range.last())) {
        return Ok(());
    }
    if range
        .unexcluded_runs(range.first(), range.last())
        .into_iter()
        .any(usable)
    {
        return Ok(());
    }
    Err(RangeError::ExcludesWholeRange {
        start: range.start,
        end: range.end,
        subnet: range.subnet,
    })
}

/// `subnet`: a CIDR, canonical, large enough to allocate from.
fn parse_subnet(value: &str) -> Result<IpNet, RangeError> {
    if value.is_empty() {
        return Err(RangeError::MissingSubnet);
    }
    let written = IpNet::from_str(value).map_err(|_| RangeError::InvalidSubnet {
        value: value.to_owned(),
    })?;
    let subnet = written.trunc();
    if subnet != written {
        return Err(RangeError::SubnetHostBits {
            value: value.to_owned(),
            prefix_len: written.prefix_len(),
            network: subnet.network(),
        });
    }
    // A /31 or /32 (IPv4), /127 or /128 (IPv6) leaves nothing to hand out
    // once the network address and the gateway are set aside.
    if subnet.prefix_len() > subnet.max_prefix_len().saturating_sub(2) {
        return Err(RangeError::SubnetTooSmall { subnet });
    }
    // IPv4 hosts in IPv6 form would be handed out twice: once from an
    // IPv4 set, once from this one (see `embedded_ipv4`).
    if let Some(kind) = super::embeds_ipv4(subnet) {
        return Err(RangeError::SubnetEmbedsIpv4 { subnet, kind });
    }
    Ok(subnet)
}

/// An explicit `rangeStart` / `rangeEnd` / `gateway`: an address of the
/// subnet's family, inside the subnet.
fn parse_addr(field: Field, value: &str, subnet: IpNet) -> Result<IpAddr, RangeError> {
    let ip = IpAddr::from_str(value).map_err(|_| RangeError::InvalidAddress {
        field,
        value: value.to_owned(),
    })?;
    if let Some(kind) = super::embedded_ipv4(ip) {
        return Err(RangeError::AddressEmbedsIpv4 {
            field,
            value: value.to_owned(),
            kind,
        });
    }
    if Family::of(ip) != Family::of(subnet.network()) {
        return Err(RangeError::WrongFamily {
            field,
            value: value.to_owned(),
            subnet,
        });
    }
    if !subnet.contains(&ip) {
        return Err(RangeError::OutsideSubnet {
            field,
            value: value.to_owned(),
            subnet,
        });
    }
    Ok(ip)
}

/// A default address. The subnet-size check makes every default fit, so the
/// error path is unreachable in practice; it still returns an error rather
/// than panicking.
fn addr(family: Family, value: Option<u128>, subnet: IpNet) -> Result<IpAddr, RangeError> {
    value
        .and_then(|v| from_u128(family, v))
        .ok_or(RangeError::SubnetTooSmall { subnet })
}

/// Validates the stage lists of `range`: sorted, deduplicated, every address
/// inside `start..=end` and allocatable, no address in two stages.
fn parse_stages(
    range: &Range,
    stages: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<IpAddr>>, RangeError> {
    let subnet = range.subnet;
    let family = range.family();
    let mut out = BTreeMap::new();
    // Address → the first stage (in name order) that lists it.
    let mut owner: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (stage, values) in stages {
        if stage.is_empty() {
            return Err(RangeError::EmptyStageName { subnet });
        }
        let mut ips = Vec::with_capacity(values.len());
        for value in values {
            let ip = IpAddr::from_str(value).map_err(|_| RangeError::InvalidStageAddress {
                stage: stage.clone(),
                value: value.clone(),
                subnet,
            })?;
            if let Some(kind) = super::embedded_ipv4(ip) {
                return Err(RangeError::StageEmbedsIpv4 {
                    stage: stage.clone(),
                    value: value.clone(),
                    kind,
                });
            }
            if Family::of(ip) != family {
                return Err(RangeError::StageWrongFamily {
                    stage: stage.clone(),
                    value: value.clone(),
                    subnet,
                });
            }
            if !range.contains(ip) {
                return Err(RangeError::StageOutsideRange {
                    stage: stage.clone(),
                    value: value.clone(),
                    start: range.start,
                    end: range.end,
                    subnet,
                });
            }
            if let Some(what) = range.reserved_kind(ip) {
                return Err(RangeError::StageNotAllocatable {
                    stage: stage.clone(),
                    value: value.clone(),
                    what,
                    subnet,
                });
            }
            // O(log n) test first: the linear search for the entry's name
            // runs on the error path only.
            if let Some(entry) = range
                .is_excluded(ip)
                .then(|| range.excluded_by(ip))
                .flatten()
            {
                return Err(RangeError::StageExcluded {
                    stage: stage.clone(),
                    value: value.clone(),
                    entry,
                    subnet,
                });
            }
            ips.push(ip);
        }
        ips.sort_unstable();
        ips.dedup();
        for ip in &ips {
            if let Some(first) = owner.insert(*ip, stage) {
                return Err(RangeError::StageConflict {
                    value: *ip,
                    first: first.to_owned(),
                    second: stage.clone(),
                    subnet,
                });
            }
        }
        out.insert(stage.clone(), ips);
    }
    Ok(out)
}
