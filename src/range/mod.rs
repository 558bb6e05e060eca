//! Range math, host-local compatible: `subnet` / `rangeStart` / `rangeEnd` /
//! `gateway` over [`ipnet`], addresses as `u128` offsets so an IPv6 /64 (or
//! /0) works, validation with errors that name the field and the value,
//! staged-rollout reservations (`sandbox` / `smallflow` lists) and
//! exclusions (`exclude`: CIDRs and addresses never handed out), kept as
//! merged intervals so a huge excluded CIDR costs two integers.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

mod error;
mod parse;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::{Field, RangeError};

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
    ///
    /// ```
    /// use host_etcd::range::Family;
    /// assert_eq!(Family::of("10.0.0.1".parse()?), Family::V4);
    /// assert_eq!(Family::of("fd00::1".parse()?), Family::V6);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits: 32 or 128.
    ///
    /// ```
    /// use host_etcd::range::Family;
    /// assert_eq!(Family::V4.bits(), 32);
    /// assert_eq!(Family::V6.bits(), 128);
    /// ```
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `"4"` or `"6"`, as used in keys and CNI results.
    ///
    /// ```
    /// use host_etcd::range::Family;
    /// assert_eq!(Family::V6.as_str(), "6");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

/// An address as an unsigned integer (IPv4 in the low 32 bits).
///
/// ```
/// use host_etcd::range::to_u128;
/// assert_eq!(to_u128("10.0.0.1".parse()?), 0x0a00_0001);
/// assert_eq!(to_u128("::1:0".parse()?), 0x1_0000);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `value` in `family`; `None` if it does not fit (IPv4 above
/// `u32::MAX`).
///
/// ```
/// use host_etcd::range::{from_u128, Family};
/// assert_eq!(from_u128(Family::V4, 0x0a00_0001), Some("10.0.0.1".parse()?));
/// assert_eq!(from_u128(Family::V4, 1 << 32), None);
/// assert_eq!(from_u128(Family::V6, u128::MAX), Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse()?));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn from_u128(family: Family, value: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(value).ok().map(|v| IpAddr::V4(v.into())),
        Family::V6 => Some(IpAddr::V6(value.into())),
    }
}

/// One range object as written in a config, before validation. Strings are
/// kept raw so errors can quote exactly what the user wrote.
///
/// ```
/// use host_etcd::range::{Range, RangeSpec};
/// let mut spec = RangeSpec {
///     subnet: "10.22.0.0/16".into(),
///     range_start: Some("10.22.1.0".into()),
///     range_end: Some("10.22.9.255".into()),
///     gateway: Some("10.22.0.254".into()),
///     ..RangeSpec::default()
/// };
/// spec.stages.insert("sandbox".into(), vec!["10.22.1.10".into(), "10.22.1.11".into()]);
/// let range = Range::parse(&spec)?;
/// assert_eq!(range.stages["sandbox"].len(), 2);
/// # Ok::<(), host_etcd::range::RangeError>(())
/// ```
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
    /// Exclusions: CIDRs (host bits ignored, as whereabouts does) or single
    /// addresses inside the subnet, never handed out.
    pub exclude: Vec<String>,
}

/// A validated range: built only by [`Range::parse`] in normal use (the
/// fields are public for reading; a hand-built `Range` skips validation).
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
    /// `start..=end`, none the gateway, none excluded, no address in two
    /// stages).
    pub stages: BTreeMap<String, Vec<IpAddr>>,
    /// The exclusions as written (canonical: host bits cleared; a single
    /// address is a /32 or /128), in config order, each inside `subnet`.
    pub exclude: Vec<IpNet>,
    /// The exclusions as sorted, disjoint, non-adjacent inclusive intervals
    /// of addresses (integers), for O(log n) lookups and O(chunk) masks.
    excluded: Vec<(u128, u128)>,
}

/// A validated, non-empty list of ranges of one family that do not overlap:
/// one address is returned per set. Built by [`RangeSet::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
    /// `(first, last, position in ranges)` sorted by `first`: the ranges
    /// are disjoint, so those touching an interval are one run of it.
    by_address: Vec<(u128, u128, usize)>,
    /// Sorted, deduplicated: every gateway, network address, IPv4
    /// broadcast address and stage reservation of the set (the addresses
    /// an ordinary request never gets), for O(log n) chunk masks.
    withheld: Vec<u128>,
}

/// At most this many range sets in one config (`ranges`, `runtimeConfig.ipRanges`
/// and the shorthand together): above it a config is refused, so validation
/// and planning stay bounded whatever a runtime sends.
pub const MAX_RANGE_SETS: usize = 1024;

/// At most this many ranges in one range set.
pub const MAX_RANGES_PER_SET: usize = 1024;

/// The two IPv6 blocks that embed IPv4 addresses, with their names.
const EMBEDDED_V4: [(u128, &str); 2] = [
    (
        0xffff_0000_0000,
        "IPv4-mapped IPv6 addresses (::ffff:0:0/96)",
    ),
    (0, "IPv4-compatible IPv6 addresses (::/96, deprecated)"),
];

/// Whether `ip` is an IPv6 address that embeds an IPv4 address, and which
/// kind: IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible (`::/96`, except
/// the unspecified address `::` and the loopback `::1`, which are IPv6's
/// own). Such an address names an IPv4 host: handing one out would give
/// one address to two containers (`10.7.0.9` from an IPv4 set and
/// `::ffff:10.7.0.9` from an IPv6 one), so configs refuse them.
/// (Cases: `embedded_ipv4_blocks` in the unit tests.)
pub(crate) fn embedded_ipv4(ip: IpAddr) -> Option<&'static str> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let v = u128::from(v6);
    EMBEDDED_V4
        .iter()
        .find(|(block, _)| v >> 32 == block >> 32)
        .filter(|_| v > 1)
        .map(|(_, kind)| *kind)
}

/// Whether IPv6 `net` shares an address with a block of [`embedded_ipv4`]
/// (other than `::` and `::1`), and which.
fn embeds_ipv4(net: IpNet) -> Option<&'static str> {
    let IpNet::V6(n) = net else {
        return None;
    };
    let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
    EMBEDDED_V4
        .iter()
        .find(|(block, _)| {
            // `::` and `::1` are IPv6's own, not embedded IPv4.
            let b_lo = if *block == 0 { 2 } else { *block };
            let b_hi = block | 0xffff_ffff;
            lo <= b_hi && b_lo <= hi
        })
        .map(|(_, kind)| *kind)
}

/// The first pair, in address order, of intervals that share an address
/// (same family): sort, then sweep keeping the interval reaching furthest.
/// O(n log n). The tags of the pair, the earlier-starting one first.
fn first_overlap<T: Ord + Copy>(mut items: Vec<(Family, u128, u128, T)>) -> Option<(T, T)> {
    items.sort_unstable();
    let mut reach: Option<(Family, u128, T)> = None;
    for (family, first, last, tag) in items {
        if let Some((f, furthest, t)) = reach {
            if f == family && first <= furthest {
                // Anything this interval overlaps, it overlaps the one
                // reaching furthest (which starts no later).
                return Some((t, tag));
            }
        }
        // No overlap: this one ends after every earlier one.
        reach = Some((family, last, tag));
    }
    None
}

impl Range {
    /// Validates a range spec and fills host-local's defaults: `gateway` =
    /// network + 1, `rangeStart` = network + 2, `rangeEnd` = broadcast − 1
    /// (IPv4) or the subnet's last address (IPv6).
    ///
    /// Refuses, with an error naming the field and the value: a missing or
    /// unparsable `subnet`, a subnet with host bits set, an IPv4 /31 or /32
    /// or IPv6 /127 or /128, an explicit address that does not parse, is of
    /// the other family or lies outside the subnet, `rangeStart` after
    /// `rangeEnd`, and bad stage lists (see [`Range::stages`]). Never panics.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    ///
    /// let r = Range::parse(&RangeSpec { subnet: "10.1.2.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.gateway.to_string(), "10.1.2.1");
    /// assert_eq!(r.start.to_string(), "10.1.2.2");
    /// assert_eq!(r.end.to_string(), "10.1.2.254");
    ///
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "fd00::/64".into(),
    ///     range_start: Some("fd00::100".into()),
    ///     ..Default::default()
    /// })?;
    /// assert_eq!(r.end.to_string(), "fd00::ffff:ffff:ffff:ffff");
    ///
    /// let err = Range::parse(&RangeSpec {
    ///     subnet: "10.1.2.0/24".into(),
    ///     range_end: Some("10.1.3.9".into()),
    ///     ..Default::default()
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "rangeEnd \"10.1.3.9\": not in subnet 10.1.2.0/24");
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn parse(spec: &RangeSpec) -> Result<Range, RangeError> {
        parse::parse(spec)
    }

    /// The address family.
    ///
    /// ```
    /// use host_etcd::range::{Family, Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "fd00::/120".into(), ..Default::default() })?;
    /// assert_eq!(r.family(), Family::V6);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn family(&self) -> Family {
        Family::of(self.start)
    }

    /// `start` as an integer.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "0.0.1.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.first(), 0x102);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn first(&self) -> u128 {
        to_u128(self.start)
    }

    /// `end` as an integer.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "0.0.1.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.last(), 0x1fe);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn last(&self) -> u128 {
        to_u128(self.end)
    }

    /// Number of addresses in `start..=end` (gateway, exclusions etc.
    /// included; see [`Range::excluded_len`]).
    /// Saturates at `u128::MAX` for the one range that would hold 2^128
    /// addresses (`::/0` with `rangeStart` `::` and `rangeEnd` the last
    /// address).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "10.0.0.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.len(), 253); // .2 ..= .254
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn len(&self) -> u128 {
        (self.last() - self.first()).saturating_add(1)
    }

    /// Always false: a validated range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` lies in `start..=end` (and is of the range's family),
    /// allocatable or not.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "10.0.0.0/24".into(), ..Default::default() })?;
    /// assert!(r.contains("10.0.0.2".parse()?));
    /// assert!(!r.contains("10.0.0.1".parse()?));
    /// assert!(!r.contains("::2".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && {
            let v = to_u128(ip);
            self.first() <= v && v <= self.last()
        }
    }

    /// The subnet's network address, as an integer.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "0.0.1.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.network(), 0x100);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn network(&self) -> u128 {
        to_u128(self.subnet.network())
    }

    /// The subnet's IPv4 broadcast address as an integer; `None` for IPv6,
    /// which has no broadcast address (its last address is allocatable).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "0.0.1.0/24".into(), ..Default::default() })?;
    /// assert_eq!(r.broadcast(), Some(0x1ff));
    /// let r = Range::parse(&RangeSpec { subnet: "fd00::/64".into(), ..Default::default() })?;
    /// assert_eq!(r.broadcast(), None);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn broadcast(&self) -> Option<u128> {
        match self.family() {
            Family::V4 => Some(to_u128(self.subnet.broadcast())),
            Family::V6 => None,
        }
    }

    /// Whether `ip` may be handed out by this range to *some* pod: same
    /// family, inside `start..=end`, not the gateway, not the subnet's
    /// network address, not the IPv4 broadcast address. (Stage reservations
    /// are allocatable: to pods of their stage; see [`Range::stage_of`].)
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "10.0.0.0/24".into(),
    ///     range_start: Some("10.0.0.0".into()),
    ///     range_end: Some("10.0.0.255".into()),
    ///     ..Default::default()
    /// })?;
    /// assert!(!r.is_allocatable("10.0.0.0".parse()?)); // network
    /// assert!(!r.is_allocatable("10.0.0.1".parse()?)); // gateway
    /// assert!(r.is_allocatable("10.0.0.2".parse()?));
    /// assert!(!r.is_allocatable("10.0.0.255".parse()?)); // broadcast
    /// assert!(!r.is_allocatable("10.0.1.2".parse()?)); // outside
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && self.is_allocatable_u128(to_u128(ip))
    }

    /// [`Range::is_allocatable`] for an address already in integer form (of
    /// the range's family), for scanning bitmaps without building
    /// `IpAddr`s.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "0.0.1.0/30".into(), ..Default::default() })?;
    /// let ok: Vec<u128> = (0x100..0x104).filter(|&v| r.is_allocatable_u128(v)).collect();
    /// assert_eq!(ok, vec![0x102]);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn is_allocatable_u128(&self, value: u128) -> bool {
        self.first() <= value
            && value <= self.last()
            && self.reserved_kind_u128(value).is_none()
            && !self.is_excluded_u128(value)
    }

    /// Whether `ip` is covered by an `exclude` entry (of the range's
    /// family). O(log n) in the number of entries.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "10.0.0.0/24".into(),
    ///     exclude: vec!["10.0.0.16/28".into(), "10.0.0.99".into()],
    ///     ..Default::default()
    /// })?;
    /// assert!(r.is_excluded("10.0.0.31".parse()?));
    /// assert!(r.is_excluded("10.0.0.99".parse()?));
    /// assert!(!r.is_excluded("10.0.0.32".parse()?));
    /// assert!(!r.is_allocatable("10.0.0.20".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_excluded(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && self.is_excluded_u128(to_u128(ip))
    }

    /// [`Range::is_excluded`] for an address in integer form.
    pub fn is_excluded_u128(&self, value: u128) -> bool {
        let i = self.excluded.partition_point(|&(_, hi)| hi < value);
        self.excluded.get(i).is_some_and(|&(lo, _)| lo <= value)
    }

    /// The first `exclude` entry (as written, canonical) that covers `ip`,
    /// for messages.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "10.0.0.0/24".into(),
    ///     exclude: vec!["10.0.0.17/28".into()],
    ///     ..Default::default()
    /// })?;
    /// assert_eq!(r.excluded_by("10.0.0.20".parse()?).map(|n| n.to_string()), Some("10.0.0.16/28".into()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn excluded_by(&self, ip: IpAddr) -> Option<IpNet> {
        self.exclude.iter().find(|n| n.contains(&ip)).copied()
    }

    /// The excluded addresses as sorted, disjoint, non-adjacent inclusive
    /// intervals of integers (possibly reaching outside `start..=end`, never
    /// outside the subnet).
    pub fn excluded_intervals(&self) -> &[(u128, u128)] {
        &self.excluded
    }

    /// How many addresses of `start..=end` are excluded. O(entries).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "10.0.0.0/24".into(),
    ///     exclude: vec!["10.0.0.0/28".into(), "10.0.0.8".into(), "10.0.0.200".into()],
    ///     ..Default::default()
    /// })?;
    /// assert_eq!(r.excluded_len(), 14 + 1); // .2..=.15 and .200
    /// assert_eq!(r.len() - r.excluded_len(), 238);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn excluded_len(&self) -> u128 {
        self.excluded
            .iter()
            .filter_map(|&(lo, hi)| {
                let (lo, hi) = (lo.max(self.first()), hi.min(self.last()));
                (lo <= hi).then(|| (hi - lo).saturating_add(1))
            })
            .fold(0u128, u128::saturating_add)
    }

    /// The runs of `start..=end` inside `lo..=hi` that no `exclude` entry
    /// covers, in order, as inclusive integer intervals. Costs
    /// O(log n + runs): only the entries touching `lo..=hi` are visited, so
    /// a chunk's mask is O(chunk) however large the excluded CIDRs are.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let r = Range::parse(&RangeSpec {
    ///     subnet: "0.0.1.0/24".into(),
    ///     exclude: vec!["0.0.1.16/28".into(), "0.0.1.40".into()],
    ///     ..Default::default()
    /// })?;
    /// let runs = r.unexcluded_runs(0x100, 0x13f);
    /// assert_eq!(runs, vec![(0x102, 0x10f), (0x120, 0x127), (0x129, 0x13f)]);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn unexcluded_runs(&self, lo: u128, hi: u128) -> Vec<(u128, u128)> {
        let (mut from, to) = (lo.max(self.first()), hi.min(self.last()));
        let mut out = Vec::new();
        if from > to {
            return out;
        }
        let first = self.excluded.partition_point(|&(_, e_hi)| e_hi < from);
        for &(e_lo, e_hi) in &self.excluded[first..] {
            if e_lo > to {
                break;
            }
            if e_lo > from {
                out.push((from, e_lo - 1));
            }
            match e_hi.checked_add(1) {
                Some(next) if e_hi < to => from = next,
                _ => return out,
            }
        }
        out.push((from, to));
        out
    }

    /// Which never-handed-out address `ip` is, if any: `"gateway"`,
    /// `"network address"` or `"broadcast address"` (IPv4).
    fn reserved_kind(&self, ip: IpAddr) -> Option<&'static str> {
        if Family::of(ip) != self.family() {
            return None;
        }
        self.reserved_kind_u128(to_u128(ip))
    }

    fn reserved_kind_u128(&self, value: u128) -> Option<&'static str> {
        if value == to_u128(self.gateway) {
            Some("gateway")
        } else if value == self.network() {
            Some("network address")
        } else if self.broadcast() == Some(value) {
            Some("broadcast address")
        } else {
            None
        }
    }

    /// The stage whose reservation list holds `ip`, if any.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let mut spec = RangeSpec { subnet: "10.0.0.0/24".into(), ..Default::default() };
    /// spec.stages.insert("sandbox".into(), vec!["10.0.0.9".into(), "10.0.0.7".into()]);
    /// let r = Range::parse(&spec)?;
    /// assert_eq!(r.stage_of("10.0.0.7".parse()?), Some("sandbox"));
    /// assert_eq!(r.stage_of("10.0.0.8".parse()?), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stage_of(&self, ip: IpAddr) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, ips)| ips.binary_search(&ip).is_ok())
            .map(|(s, _)| s.as_str())
    }

    /// Whether the `start..=end` intervals of two ranges share an address.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let a = Range::parse(&RangeSpec { subnet: "10.0.0.0/16".into(), ..Default::default() })?;
    /// let b = Range::parse(&RangeSpec { subnet: "10.0.5.0/24".into(), ..Default::default() })?;
    /// let c = Range::parse(&RangeSpec { subnet: "10.1.0.0/16".into(), ..Default::default() })?;
    /// assert!(a.overlaps(&b) && b.overlaps(&a));
    /// assert!(!a.overlaps(&c));
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn overlaps(&self, other: &Range) -> bool {
        self.family() == other.family()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }
}

/// `start-end (subnet)`, e.g. `10.0.0.2-10.0.0.254 (10.0.0.0/24)`.
///
/// ```
/// use host_etcd::range::{Range, RangeSpec};
/// let r = Range::parse(&RangeSpec { subnet: "10.0.0.0/24".into(), ..Default::default() })?;
/// assert_eq!(r.to_string(), "10.0.0.2-10.0.0.254 (10.0.0.0/24)");
/// # Ok::<(), host_etcd::range::RangeError>(())
/// ```
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} ({})", self.start, self.end, self.subnet)
    }
}

impl RangeSet {
    /// Validates a set: non-empty, at most [`MAX_RANGES_PER_SET`] ranges,
    /// one family, no two ranges overlapping (errors name both subnets; of
    /// several overlaps, the one at the lowest address). O(n log n).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeError, RangeSet, RangeSpec};
    /// let r = |s: &str| Range::parse(&RangeSpec { subnet: s.into(), ..Default::default() });
    ///
    /// let set = RangeSet::new(vec![r("10.0.0.0/24")?, r("10.0.1.0/24")?])?;
    /// assert_eq!(set.ranges().len(), 2);
    ///
    /// assert_eq!(RangeSet::new(vec![]), Err(RangeError::EmptySet));
    /// let err = RangeSet::new(vec![r("10.0.0.0/24")?, r("fd00::/64")?]).unwrap_err();
    /// assert!(matches!(err, RangeError::MixedFamilies { .. }));
    /// let err = RangeSet::new(vec![r("10.0.0.0/16")?, r("10.0.3.0/24")?]).unwrap_err();
    /// assert!(matches!(err, RangeError::Overlap { .. }));
    /// # Ok::<(), RangeError>(())
    /// ```
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, RangeError> {
        let Some(head) = ranges.first() else {
            return Err(RangeError::EmptySet);
        };
        if ranges.len() > MAX_RANGES_PER_SET {
            return Err(RangeError::TooManyRanges {
                count: ranges.len(),
                max: MAX_RANGES_PER_SET,
            });
        }
        if let Some(other) = ranges.iter().find(|r| r.family() != head.family()) {
            return Err(RangeError::MixedFamilies {
                first: head.subnet,
                second: other.subnet,
            });
        }
        let items = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.family(), r.first(), r.last(), i))
            .collect();
        if let Some((x, y)) = first_overlap(items) {
            let (a, b) = (&ranges[x.min(y)], &ranges[x.max(y)]);
            return Err(RangeError::Overlap {
                first: a.subnet,
                first_start: a.start,
                first_end: a.end,
                second: b.subnet,
                second_start: b.start,
                second_end: b.end,
            });
        }
        let mut by_address: Vec<(u128, u128, usize)> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.first(), r.last(), i))
            .collect();
        by_address.sort_unstable();
        let mut withheld: Vec<u128> = ranges
            .iter()
            .flat_map(|r| {
                [Some(r.gateway), Some(r.subnet.network())]
                    .into_iter()
                    .flatten()
                    .map(to_u128)
                    .chain(r.broadcast())
                    .chain(r.stages.values().flatten().map(|ip| to_u128(*ip)))
            })
            .collect();
        withheld.sort_unstable();
        withheld.dedup();
        Ok(RangeSet {
            ranges,
            by_address,
            withheld,
        })
    }

    /// The ranges whose `start..=end` shares an address with `lo..=hi`, in
    /// address order. O(log n + hits).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSet, RangeSpec};
    /// let r = |s: &str| Range::parse(&RangeSpec { subnet: s.into(), ..Default::default() });
    /// let set = RangeSet::new(vec![r("0.0.3.0/24")?, r("0.0.1.0/24")?, r("0.0.2.0/24")?])?;
    /// let hit: Vec<String> = set.touching(0x1ff, 0x280).map(|r| r.subnet.to_string()).collect();
    /// assert_eq!(hit, ["0.0.2.0/24"]); // 0.0.1.255 is the broadcast address, outside 0.0.1.2-0.0.1.254
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn touching(&self, lo: u128, hi: u128) -> impl Iterator<Item = &Range> {
        let from = self.by_address.partition_point(|&(_, last, _)| last < lo);
        self.by_address[from..]
            .iter()
            .take_while(move |&&(first, _, _)| first <= hi)
            .filter_map(|&(_, _, i)| self.ranges.get(i))
    }

    /// The withheld addresses in `lo..=hi` (gateways, network and IPv4
    /// broadcast addresses, stage reservations of every range of the set),
    /// sorted. O(log n + hits).
    pub fn withheld_in(&self, lo: u128, hi: u128) -> &[u128] {
        let from = self.withheld.partition_point(|&v| v < lo);
        let to = self.withheld.partition_point(|&v| v <= hi);
        &self.withheld[from..to.max(from)]
    }

    /// A set of one range covering `cidr` with host-local's defaults: first
    /// address network + 2, last broadcast − 1 (IPv4) or the last address
    /// (IPv6), gateway network + 1, no stages, no exclusions.
    ///
    /// ```
    /// use host_etcd::range::RangeSet;
    /// let set = RangeSet::from_cidr("10.22.0.0/24")?;
    /// let range = &set.ranges()[0];
    /// assert_eq!(range.start.to_string(), "10.22.0.2");
    /// assert_eq!(range.end.to_string(), "10.22.0.254");
    /// assert_eq!(range.gateway.to_string(), "10.22.0.1");
    /// assert!(RangeSet::from_cidr("10.22.0.0/33").is_err());
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn from_cidr(cidr: &str) -> Result<RangeSet, RangeError> {
        let range = Range::parse(&RangeSpec {
            subnet: cidr.to_string(),
            ..RangeSpec::default()
        })?;
        RangeSet::new(vec![range])
    }

    /// The ranges, in config order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The family of every range in the set.
    ///
    /// ```
    /// use host_etcd::range::{Family, Range, RangeSet, RangeSpec};
    /// let r = Range::parse(&RangeSpec { subnet: "fd00::/64".into(), ..Default::default() })?;
    /// assert_eq!(RangeSet::new(vec![r])?.family(), Family::V6);
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn family(&self) -> Family {
        // Non-empty by construction; V4 is never reached.
        self.ranges.first().map_or(Family::V4, Range::family)
    }

    /// The index and range whose `start..=end` holds `ip`.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSet, RangeSpec};
    /// let r = |s: &str| Range::parse(&RangeSpec { subnet: s.into(), ..Default::default() });
    /// let set = RangeSet::new(vec![r("10.0.0.0/24")?, r("10.0.1.0/24")?])?;
    /// assert_eq!(set.find("10.0.1.7".parse()?).map(|(i, _)| i), Some(1));
    /// assert!(set.find("10.0.2.7".parse()?).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        if Family::of(ip) != self.family() {
            return None;
        }
        let v = to_u128(ip);
        let i = self.by_address.partition_point(|&(_, last, _)| last < v);
        let &(first, _, at) = self.by_address.get(i)?;
        (first <= v).then(|| self.ranges.get(at).map(|r| (at, r)))?
    }

    /// Whether any range of the set lists reservations for `stage`.
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSet, RangeSpec};
    /// let mut spec = RangeSpec { subnet: "10.0.0.0/24".into(), ..Default::default() };
    /// spec.stages.insert("smallflow".into(), vec!["10.0.0.50".into()]);
    /// let set = RangeSet::new(vec![Range::parse(&spec)?])?;
    /// assert!(set.has_stage("smallflow"));
    /// assert!(!set.has_stage("sandbox"));
    /// # Ok::<(), host_etcd::range::RangeError>(())
    /// ```
    pub fn has_stage(&self, stage: &str) -> bool {
        self.ranges.iter().any(|r| r.stages.contains_key(stage))
    }
}

/// Inclusive intervals sorted and merged: overlapping or adjacent ones
/// become one, so the result is sorted, disjoint and non-adjacent.
pub(crate) fn merge_intervals(mut iv: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    iv.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(iv.len());
    for (lo, hi) in iv {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// Validates a whole config's range sets: at least one, at most
/// [`MAX_RANGE_SETS`], and no range of one set overlapping a range of
/// another (as host-local checks). O(n log n) in the number of ranges (sort
/// and sweep); of several overlaps, the one at the lowest address is
/// reported.
///
/// ```
/// use host_etcd::range::{check_sets, Range, RangeError, RangeSet, RangeSpec};
/// let set = |s: &str| -> Result<RangeSet, RangeError> {
///     RangeSet::new(vec![Range::parse(&RangeSpec { subnet: s.into(), ..Default::default() })?])
/// };
/// check_sets(&[set("10.0.0.0/24")?, set("fd00::/64")?])?;
/// assert_eq!(check_sets(&[]), Err(RangeError::NoSets));
/// let err = check_sets(&[set("10.0.0.0/16")?, set("10.0.9.0/24")?]).unwrap_err();
/// assert!(matches!(err, RangeError::OverlapAcrossSets { first_set: 0, second_set: 1, .. }));
/// # Ok::<(), RangeError>(())
/// ```
pub fn check_sets(sets: &[RangeSet]) -> Result<(), RangeError> {
    if sets.is_empty() {
        return Err(RangeError::NoSets);
    }
    if sets.len() > MAX_RANGE_SETS {
        return Err(RangeError::TooManySets {
            count: sets.len(),
            max: MAX_RANGE_SETS,
        });
    }
    let items = sets
        .iter()
        .enumerate()
        .flat_map(|(i, set)| {
            set.ranges()
                .iter()
                .enumerate()
                .map(move |(j, r)| (r.family(), r.first(), r.last(), (i, j)))
        })
        .collect();
    // Ranges of one set never overlap (RangeSet::new), so a pair found is
    // from two sets.
    let Some((x, y)) = first_overlap(items) else {
        return Ok(());
    };
    let ((i, a), (j, b)) = (x.min(y), x.max(y));
    let (a, b) = (&sets[i].ranges()[a], &sets[j].ranges()[b]);
    Err(RangeError::OverlapAcrossSets {
        first_set: i,
        first: a.subnet,
        first_start: a.start,
        first_end: a.end,
        second_set: j,
        second: b.subnet,
        second_start: b.start,
        second_end: b.end,
    })
}
