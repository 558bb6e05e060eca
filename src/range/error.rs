//! [`RangeError`]: why a range, a range set or a config's list of range sets
//! was refused. Every variant names the config field (or stage) at fault and
//! the offending value, quoting raw strings exactly as the user wrote them.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// An address field of a range object, displayed as its config key.
///
/// ```
/// use host_etcd::range::Field;
/// assert_eq!(Field::RangeStart.to_string(), "rangeStart");
/// assert_eq!(Field::Gateway.as_str(), "gateway");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `subnet`.
    Subnet,
    /// `rangeStart`.
    RangeStart,
    /// `rangeEnd`.
    RangeEnd,
    /// `gateway`.
    Gateway,
}

impl Field {
    /// The config key, as written in a CNI network config.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Subnet => "subnet",
            Field::RangeStart => "rangeStart",
            Field::RangeEnd => "rangeEnd",
            Field::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a range or range set was refused. Every variant names the field and
/// the value at fault.
///
/// ```
/// use host_etcd::range::{Range, RangeError, RangeSpec};
///
/// let spec = RangeSpec { subnet: "10.0.0.0/31".into(), ..RangeSpec::default() };
/// let err = Range::parse(&spec).unwrap_err();
/// assert!(matches!(err, RangeError::SubnetTooSmall { .. }));
/// assert_eq!(err.to_string(), "subnet 10.0.0.0/31: network too small to allocate from \
///     (IPv4 needs a /30 or shorter prefix, IPv6 a /126 or shorter)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `subnet` is empty or absent.
    #[error("subnet: required (a CIDR such as 10.1.0.0/16 or fd00::/64)")]
    MissingSubnet,

    /// `subnet` is not a CIDR.
    #[error("subnet {value:?}: not a CIDR such as 10.1.0.0/16 or fd00::/64")]
    InvalidSubnet {
        /// What the config says.
        value: String,
    },

    /// `subnet` has bits set below its prefix (host-local refuses these).
    #[error(
        "subnet {value:?}: network has host bits set; for a subnet mask of length \
         {prefix_len} the network address is {network}"
    )]
    SubnetHostBits {
        /// What the config says.
        value: String,
        /// The prefix length written.
        prefix_len: u8,
        /// The network address the subnet should have been written with.
        network: IpAddr,
    },

    /// `subnet` is an IPv4 /31 or /32, or an IPv6 /127 or /128.
    #[error(
        "subnet {subnet}: network too small to allocate from (IPv4 needs a /30 or \
         shorter prefix, IPv6 a /126 or shorter)"
    )]
    SubnetTooSmall {
        /// The subnet.
        subnet: IpNet,
    },

    /// `subnet` shares addresses with `::ffff:0:0/96` (IPv4-mapped) or
    /// `::/96` (IPv4-compatible): IPv4 hosts written in IPv6 form.
    #[error(
        "subnet {subnet}: overlaps the {kind}, IPv4 hosts in IPv6 form; use an IPv4 \
         subnet for IPv4, and for IPv6 a subnet outside ::ffff:0:0/96 and ::/96"
    )]
    SubnetEmbedsIpv4 {
        /// The subnet.
        subnet: IpNet,
        /// Which block: IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible
        /// (`::/96`).
        kind: &'static str,
    },

    /// `rangeStart`, `rangeEnd` or `gateway` is an IPv6 address that embeds
    /// an IPv4 address.
    #[error("{field} {value:?}: is one of the {kind}, an IPv4 host in IPv6 form; write the IPv4 address")]
    AddressEmbedsIpv4 {
        /// The field.
        field: Field,
        /// What the config says.
        value: String,
        /// Which block: IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible
        /// (`::/96`).
        kind: &'static str,
    },

    /// `rangeStart`, `rangeEnd` or `gateway` is not an IP address.
    #[error("{field} {value:?}: not an IP address")]
    InvalidAddress {
        /// The field.
        field: Field,
        /// What the config says.
        value: String,
    },

    /// `rangeStart`, `rangeEnd` or `gateway` is not of the subnet's family.
    #[error("{field} {value:?}: not of the address family of subnet {subnet}")]
    WrongFamily {
        /// The field.
        field: Field,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// `rangeStart`, `rangeEnd` or `gateway` lies outside the subnet.
    #[error("{field} {value:?}: not in subnet {subnet}")]
    OutsideSubnet {
        /// The field.
        field: Field,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// `rangeStart` is above `rangeEnd` (after defaults are filled).
    #[error("rangeStart {start} is after rangeEnd {end} (subnet {subnet})")]
    StartAfterEnd {
        /// The first address.
        start: IpAddr,
        /// The last address.
        end: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },

    /// A stage reservation list has an empty name.
    #[error("stage name \"\": must not be empty (subnet {subnet})")]
    EmptyStageName {
        /// The subnet of the range holding the list.
        subnet: IpNet,
    },

    /// A stage reservation is not an IP address.
    #[error("stage {stage:?} address {value:?}: not an IP address (subnet {subnet})")]
    InvalidStageAddress {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// A stage reservation is not of the range's family.
    #[error("stage {stage:?} address {value:?}: not of the address family of subnet {subnet}")]
    StageWrongFamily {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// A stage reservation lies outside `rangeStart..=rangeEnd`.
    #[error(
        "stage {stage:?} address {value:?}: outside the range {start}-{end} (subnet {subnet})"
    )]
    StageOutsideRange {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// The first address of the range.
        start: IpAddr,
        /// The last address of the range.
        end: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },

    /// A stage reservation is an address never handed out: the gateway, the
    /// subnet's network address or the IPv4 broadcast address.
    #[error(
        "stage {stage:?} address {value:?}: is the {what} of subnet {subnet}, never handed out"
    )]
    StageNotAllocatable {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// `"gateway"`, `"network address"` or `"broadcast address"`.
        what: &'static str,
        /// The subnet.
        subnet: IpNet,
    },

    /// One address is reserved by two stages of the same range.
    #[error(
        "address {value} is listed in both stage {first:?} and stage {second:?} (subnet {subnet})"
    )]
    StageConflict {
        /// The address.
        value: IpAddr,
        /// The first stage (by name order).
        first: String,
        /// The second stage.
        second: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// An `exclude` entry is neither a CIDR nor an IP address.
    #[error("exclude entry {value:?}: not a CIDR or an IP address")]
    InvalidExclude {
        /// Position in the `exclude` list.
        index: usize,
        /// What the config says.
        value: String,
    },

    /// An `exclude` entry is (or overlaps) IPv6 addresses that embed IPv4
    /// addresses.
    #[error("exclude entry {value:?}: overlaps the {kind}, IPv4 hosts in IPv6 form; write the IPv4 form")]
    ExcludeEmbedsIpv4 {
        /// Position in the `exclude` list.
        index: usize,
        /// What the config says.
        value: String,
        /// Which block: IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible
        /// (`::/96`).
        kind: &'static str,
    },

    /// A stage reservation is an IPv6 address that embeds an IPv4 address.
    #[error("stage {stage:?} address {value:?}: is one of the {kind}, an IPv4 host in IPv6 form")]
    StageEmbedsIpv4 {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// Which block: IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible
        /// (`::/96`).
        kind: &'static str,
    },

    /// An `exclude` entry is not of the subnet's family.
    #[error("exclude entry {value:?}: not of the address family of subnet {subnet}")]
    ExcludeWrongFamily {
        /// Position in the `exclude` list.
        index: usize,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// An `exclude` entry is not entirely inside the subnet.
    #[error("exclude entry {value:?}: not inside subnet {subnet}")]
    ExcludeOutsideSubnet {
        /// Position in the `exclude` list.
        index: usize,
        /// What the config says.
        value: String,
        /// The subnet.
        subnet: IpNet,
    },

    /// The exclusions leave nothing to hand out in `rangeStart..=rangeEnd`
    /// (the gateway, network and broadcast addresses aside).
    #[error(
        "exclude: covers every allocatable address of the range {start}-{end} (subnet {subnet})"
    )]
    ExcludesWholeRange {
        /// The first address of the range.
        start: IpAddr,
        /// The last address of the range.
        end: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },

    /// A stage reservation is also excluded.
    #[error(
        "stage {stage:?} address {value:?}: is excluded (exclude entry {entry}), never handed out"
    )]
    StageExcluded {
        /// The stage name.
        stage: String,
        /// What the config says.
        value: String,
        /// The `exclude` entry covering it (canonical).
        entry: IpNet,
        /// The subnet.
        subnet: IpNet,
    },

    /// A range set has more ranges than [`crate::range::MAX_RANGES_PER_SET`].
    #[error("range set: {count} ranges, at most {max} are accepted in one set")]
    TooManyRanges {
        /// How many the set has.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// A config has more range sets than [`crate::range::MAX_RANGE_SETS`].
    #[error("ranges: {count} range sets, at most {max} are accepted in one config")]
    TooManySets {
        /// How many the config has.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// A range set has no ranges.
    #[error("range set: no ranges specified")]
    EmptySet,

    /// A range set mixes IPv4 and IPv6 ranges.
    #[error("range set mixes address families: subnet {first} and subnet {second}")]
    MixedFamilies {
        /// The first range's subnet.
        first: IpNet,
        /// The subnet of a range of the other family.
        second: IpNet,
    },

    /// Two ranges of one set share an address.
    #[error(
        "range set: range {first_start}-{first_end} of subnet {first} overlaps \
         range {second_start}-{second_end} of subnet {second}"
    )]
    Overlap {
        /// The earlier range's subnet.
        first: IpNet,
        /// The earlier range's first address.
        first_start: IpAddr,
        /// The earlier range's last address.
        first_end: IpAddr,
        /// The later range's subnet.
        second: IpNet,
        /// The later range's first address.
        second_start: IpAddr,
        /// The later range's last address.
        second_end: IpAddr,
    },

    /// The config has no range sets.
    #[error("ranges: no range sets specified")]
    NoSets,

    /// A range of one set shares an address with a range of another set.
    #[error(
        "range set {first_set}: range {first_start}-{first_end} of subnet {first} overlaps \
         range {second_start}-{second_end} of subnet {second} in range set {second_set}"
    )]
    OverlapAcrossSets {
        /// Index of the earlier set.
        first_set: usize,
        /// The earlier range's subnet.
        first: IpNet,
        /// The earlier range's first address.
        first_start: IpAddr,
        /// The earlier range's last address.
        first_end: IpAddr,
        /// Index of the later set.
        second_set: usize,
        /// The later range's subnet.
        second: IpNet,
        /// The later range's first address.
        second_start: IpAddr,
        /// The later range's last address.
        second_end: IpAddr,
    },
}

impl RangeError {
    /// The position in the `exclude` list of the entry at fault, for errors
    /// about one entry (so a caller can name `….exclude[2]`).
    ///
    /// ```
    /// use host_etcd::range::{Range, RangeSpec};
    /// let err = Range::parse(&RangeSpec {
    ///     subnet: "10.0.0.0/24".into(),
    ///     exclude: vec!["10.0.0.5".into(), "10.0.1.0/28".into()],
    ///     ..Default::default()
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.exclude_index(), Some(1));
    /// assert_eq!(err.to_string(), "exclude entry \"10.0.1.0/28\": not inside subnet 10.0.0.0/24");
    /// ```
    pub fn exclude_index(&self) -> Option<usize> {
        match self {
            RangeError::InvalidExclude { index, .. }
            | RangeError::ExcludeWrongFamily { index, .. }
            | RangeError::ExcludeEmbedsIpv4 { index, .. }
            | RangeError::ExcludeOutsideSubnet { index, .. } => Some(*index),
            _ => None,
        }
    }
}
