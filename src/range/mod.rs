//! Range math, host-local compatible: `subnet` / `rangeStart` / `rangeEnd` /
//! `gateway` over [`ipnet`], addresses as `u128` offsets so an IPv6 /64 (or
//! /0) works, validation with errors that name the field and the value, and
//! staged-rollout reservations (`sandbox` / `smallflow` lists).
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (32-bit addresses).
    V4,
    /// IPv6 (128-bit addresses).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits: 32 or 128.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `"4"` or `"6"`, as used in keys and CNI results.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

/// An address as an unsigned integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `value` in `family`; `None` if it does not fit (IPv4 above
/// `u32::MAX`).
pub fn from_u128(family: Family, value: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(value)
            .ok()
            .map(|v| IpAddr::V4(v.into())),
        Family::V6 => Some(IpAddr::V6(value.into())),
    }
}

/// One range object as written in a config, before validation. Strings are
/// kept raw so errors can quote exactly what the user wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSpec {
    /// CIDR, required.
    pub subnet: String,
    /// First allocatable address; default: network + 2.
    pub range_start: Option<String>,
    /// Last allocatable address; default: broadcast − 1 (IPv4), last address (IPv6).
    pub range_end: Option<String>,
    /// Gateway; default: network + 1.
    pub gateway: Option<String>,
    /// Staged-rollout reservations: stage name (`sandbox`, `smallflow`) →
    /// addresses reserved for pods of that stage.
    pub stages: BTreeMap<String, Vec<String>>,
}

/// A validated range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet, canonical (no host bits).
    pub subnet: IpNet,
    /// First allocatable address (inclusive).
    pub start: IpAddr,
    /// Last allocatable address (inclusive).
    pub end: IpAddr,
    /// The gateway, never handed out.
    pub gateway: IpAddr,
    /// Stage name → reserved addresses (sorted, deduplicated, each inside
    /// `start..=end`, none the gateway, no address in two stages).
    pub stages: BTreeMap<String, Vec<IpAddr>>,
}

/// A validated, non-empty list of ranges of one family that do not overlap:
/// one address is returned per set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

/// Why a range or range set was refused. Every variant names the field and
/// the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Placeholder until the range module is implemented.
    #[error("{0}")]
    Invalid(String),
}

impl Range {
    /// Validates a range spec and fills host-local's defaults.
    pub fn parse(spec: &RangeSpec) -> Result<Range, RangeError> {
        let _ = spec;
        todo!("range::Range::parse")
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(self.start)
    }

    /// `start` as an integer.
    pub fn first(&self) -> u128 {
        to_u128(self.start)
    }

    /// `end` as an integer.
    pub fn last(&self) -> u128 {
        to_u128(self.end)
    }

    /// Number of addresses in `start..=end` (gateway etc. included).
    pub fn len(&self) -> u128 {
        self.last() - self.first() + 1
    }

    /// Always false: a validated range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` may be handed out by this range to *some* pod: same
    /// family, inside `start..=end`, not the gateway, not the subnet's
    /// network address, not the IPv4 broadcast address.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        let _ = ip;
        todo!("range::Range::is_allocatable")
    }

    /// The stage whose reservation list holds `ip`, if any.
    pub fn stage_of(&self, ip: IpAddr) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, ips)| ips.binary_search(&ip).is_ok())
            .map(|(s, _)| s.as_str())
    }

    /// Whether the `start..=end` intervals of two ranges share an address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.family() == other.family()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }
}

impl RangeSet {
    /// Validates a set: non-empty, one family, no two ranges overlapping.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, RangeError> {
        let _ = ranges;
        todo!("range::RangeSet::new")
    }

    /// The ranges, in config order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The family of every range in the set.
    pub fn family(&self) -> Family {
        self.ranges[0].family()
    }

    /// The index and range whose `start..=end` holds `ip`.
    pub fn find(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.ranges
            .iter()
            .enumerate()
            .find(|(_, r)| r.family() == Family::of(ip) && {
                let v = to_u128(ip);
                r.first() <= v && v <= r.last()
            })
    }

    /// Whether any range of the set lists reservations for `stage`.
    pub fn has_stage(&self, stage: &str) -> bool {
        self.ranges.iter().any(|r| r.stages.contains_key(stage))
    }
}

/// Validates a whole config's range sets: at least one, and no range of one
/// set overlapping a range of another.
pub fn check_sets(sets: &[RangeSet]) -> Result<(), RangeError> {
    let _ = sets;
    todo!("range::check_sets")
}
