//! Unit tests: one or more per rule of [`Range::parse`], [`RangeSet::new`]
//! and [`check_sets`], plus the exact wording of the errors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn spec(subnet: &str) -> RangeSpec {
    RangeSpec {
        subnet: subnet.to_owned(),
        ..RangeSpec::default()
    }
}

fn spec_with(
    subnet: &str,
    start: Option<&str>,
    end: Option<&str>,
    gateway: Option<&str>,
) -> RangeSpec {
    RangeSpec {
        subnet: subnet.to_owned(),
        range_start: start.map(str::to_owned),
        range_end: end.map(str::to_owned),
        gateway: gateway.map(str::to_owned),
        stages: BTreeMap::new(),
        exclude: Vec::new(),
    }
}

fn with_stages(mut s: RangeSpec, stages: &[(&str, &[&str])]) -> RangeSpec {
    for (name, ips) in stages {
        s.stages.insert(
            (*name).to_owned(),
            ips.iter().map(|v| (*v).to_owned()).collect(),
        );
    }
    s
}

fn parse(s: &RangeSpec) -> Range {
    Range::parse(s).unwrap()
}

fn range(subnet: &str) -> Range {
    parse(&spec(subnet))
}

fn err(s: &RangeSpec) -> RangeError {
    Range::parse(s).unwrap_err()
}

/// (gateway, start, end) of a parsed range, as strings.
fn bounds(r: &Range) -> (String, String, String) {
    (
        r.gateway.to_string(),
        r.start.to_string(),
        r.end.to_string(),
    )
}

fn b(g: &str, s: &str, e: &str) -> (String, String, String) {
    (g.to_owned(), s.to_owned(), e.to_owned())
}

// ---- defaults -------------------------------------------------------------

#[test]
fn defaults_v4_24() {
    let r = range("10.1.2.0/24");
    assert_eq!(bounds(&r), b("10.1.2.1", "10.1.2.2", "10.1.2.254"));
    assert_eq!(r.subnet, net("10.1.2.0/24"));
    assert_eq!(r.family(), Family::V4);
    assert_eq!(r.len(), 253);
    assert!(r.stages.is_empty());
}

#[test]
fn defaults_v4_16() {
    let r = range("172.16.0.0/16");
    assert_eq!(bounds(&r), b("172.16.0.1", "172.16.0.2", "172.16.255.254"));
    assert_eq!(r.len(), 65_533);
}

#[test]
fn defaults_v4_30() {
    let r = range("192.168.0.4/30");
    assert_eq!(bounds(&r), b("192.168.0.5", "192.168.0.6", "192.168.0.6"));
    assert_eq!(r.len(), 1);
    assert!(r.is_allocatable(ip("192.168.0.6")));
    assert!(!r.is_empty());
}

#[test]
fn defaults_v6_64() {
    let r = range("fd00:1:2:3::/64");
    assert_eq!(
        bounds(&r),
        b(
            "fd00:1:2:3::1",
            "fd00:1:2:3::2",
            "fd00:1:2:3:ffff:ffff:ffff:ffff"
        )
    );
    assert_eq!(r.len(), (1u128 << 64) - 2);
    // IPv6 has no broadcast: the last address is allocatable.
    assert!(r.is_allocatable(ip("fd00:1:2:3:ffff:ffff:ffff:ffff")));
    assert_eq!(r.broadcast(), None);
}

#[test]
fn defaults_v6_126() {
    let r = range("fd00::4/126");
    assert_eq!(bounds(&r), b("fd00::5", "fd00::6", "fd00::7"));
    assert_eq!(r.len(), 2);
}

#[test]
fn defaults_v6_top_half() {
    // ::/0 embeds IPv4 (refused below); the top half of the space keeps the
    // u128 arithmetic's upper edge covered.
    let r = range("8000::/1");
    assert_eq!(
        bounds(&r),
        b(
            "8000::1",
            "8000::2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        )
    );
    assert_eq!(r.first(), (1 << 127) + 2);
    assert_eq!(r.last(), u128::MAX);
    assert_eq!(r.len(), (1 << 127) - 2);
    assert!(r.is_allocatable(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!r.is_allocatable(ip("8000::")));
    assert!(!r.is_allocatable(ip("8000::1")));
    assert!(r.is_allocatable(ip("8000::2")));
}

#[test]
fn defaults_v4_slash0() {
    let r = range("0.0.0.0/0");
    assert_eq!(bounds(&r), b("0.0.0.1", "0.0.0.2", "255.255.255.254"));
    assert_eq!(r.len(), (1u128 << 32) - 3);
    assert_eq!(r.broadcast(), Some(u128::from(u32::MAX)));
    assert!(!r.is_allocatable(ip("255.255.255.255")));
    assert!(r.is_allocatable(ip("255.255.255.254")));
}

#[test]
fn full_v6_slash0_len_saturates() {
    // Unreachable through parsing since ::/0 is refused (it embeds IPv4);
    // a hand-built range still keeps `len` from overflowing.
    let r = Range {
        subnet: net("::/0"),
        start: ip("::"),
        end: ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        gateway: ip("::1"),
        stages: BTreeMap::new(),
        exclude: Vec::new(),
        excluded: Vec::new(),
    };
    assert_eq!(r.len(), u128::MAX);
    assert!(!r.is_allocatable(ip("::")));
}

#[test]
fn explicit_fields_are_kept() {
    let r = parse(&spec_with(
        "10.0.0.0/16",
        Some("10.0.1.0"),
        Some("10.0.1.255"),
        Some("10.0.255.254"),
    ));
    assert_eq!(bounds(&r), b("10.0.255.254", "10.0.1.0", "10.0.1.255"));
    assert!(r.is_allocatable(ip("10.0.1.0")));
    assert!(r.is_allocatable(ip("10.0.1.255")));
    // The default gateway address is an ordinary address once the gateway moved.
    let r = parse(&spec_with(
        "10.0.0.0/24",
        Some("10.0.0.1"),
        None,
        Some("10.0.0.254"),
    ));
    assert!(r.is_allocatable(ip("10.0.0.1")));
    assert_eq!(r.end, ip("10.0.0.254"));
    assert!(!r.is_allocatable(ip("10.0.0.254")));
    assert!(r.is_allocatable(ip("10.0.0.253")));
}

#[test]
fn start_equal_end_is_one_address() {
    let r = parse(&spec_with(
        "10.0.0.0/24",
        Some("10.0.0.7"),
        Some("10.0.0.7"),
        None,
    ));
    assert_eq!(r.len(), 1);
    assert!(r.is_allocatable(ip("10.0.0.7")));
}

// ---- subnet errors --------------------------------------------------------

#[test]
fn missing_subnet() {
    assert_eq!(err(&spec("")), RangeError::MissingSubnet);
    assert!(err(&spec("")).to_string().starts_with("subnet: required"));
}

#[test]
fn unparsable_subnet() {
    for v in [
        "10.0.0.0",
        "10.0.0.0/33",
        "fd00::/129",
        "banana",
        "10.0.0.0/",
        " 10.0.0.0/24",
        "10.0.0.0/24 ",
        "/24",
    ] {
        let e = err(&spec(v));
        assert_eq!(
            e,
            RangeError::InvalidSubnet {
                value: v.to_owned()
            }
        );
        let msg = e.to_string();
        assert!(msg.starts_with("subnet "), "{msg}");
        assert!(msg.contains(&format!("{v:?}")), "{msg}");
    }
}

#[test]
fn subnet_host_bits() {
    let e = err(&spec("10.0.0.5/24"));
    assert_eq!(
        e,
        RangeError::SubnetHostBits {
            value: "10.0.0.5/24".into(),
            prefix_len: 24,
            network: ip("10.0.0.0"),
        }
    );
    assert_eq!(
        e.to_string(),
        "subnet \"10.0.0.5/24\": network has host bits set; for a subnet mask of length 24 \
         the network address is 10.0.0.0"
    );
    let e = err(&spec("fd00::1/64"));
    assert!(matches!(e, RangeError::SubnetHostBits { network, .. } if network == ip("fd00::")));
    assert!(matches!(
        err(&spec("1.2.3.4/0")),
        RangeError::SubnetHostBits { .. }
    ));
}

#[test]
fn subnet_too_small() {
    for v in ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::1/128"] {
        let e = err(&spec(v));
        assert_eq!(e, RangeError::SubnetTooSmall { subnet: net(v) }, "{v}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("subnet {v}:")), "{msg}");
        assert!(msg.contains("too small to allocate from"), "{msg}");
    }
    // One bit more and it is fine.
    range("10.0.0.0/30");
    range("fd00::/126");
}

// ---- rangeStart / rangeEnd / gateway errors --------------------------------

#[test]
fn unparsable_addresses() {
    let cases = [
        (
            spec_with("10.0.0.0/24", Some("x"), None, None),
            Field::RangeStart,
        ),
        (
            spec_with("10.0.0.0/24", None, Some("10.0.0"), None),
            Field::RangeEnd,
        ),
        (
            spec_with("10.0.0.0/24", None, None, Some("")),
            Field::Gateway,
        ),
        (
            spec_with("10.0.0.0/24", Some("10.0.0.9/32"), None, None),
            Field::RangeStart,
        ),
    ];
    for (s, field) in cases {
        let e = err(&s);
        let value = match field {
            Field::RangeStart => s.range_start.clone(),
            Field::RangeEnd => s.range_end.clone(),
            _ => s.gateway.clone(),
        }
        .unwrap();
        assert_eq!(
            e,
            RangeError::InvalidAddress {
                field,
                value: value.clone()
            }
        );
        assert_eq!(
            e.to_string(),
            format!("{field} {value:?}: not an IP address")
        );
    }
}

#[test]
fn wrong_family() {
    let e = err(&spec_with("10.0.0.0/24", Some("fd00::5"), None, None));
    assert_eq!(
        e,
        RangeError::WrongFamily {
            field: Field::RangeStart,
            value: "fd00::5".into(),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert_eq!(
        e.to_string(),
        "rangeStart \"fd00::5\": not of the address family of subnet 10.0.0.0/24"
    );
    let e = err(&spec_with("fd00::/64", None, Some("10.0.0.9"), None));
    assert!(matches!(
        e,
        RangeError::WrongFamily {
            field: Field::RangeEnd,
            ..
        }
    ));
    let e = err(&spec_with("fd00::/64", None, None, Some("10.0.0.1")));
    assert!(matches!(
        e,
        RangeError::WrongFamily {
            field: Field::Gateway,
            ..
        }
    ));
    // IPv4-mapped IPv6 is refused as such, naming the field.
    let e = err(&spec_with(
        "10.0.0.0/24",
        None,
        None,
        Some("::ffff:10.0.0.1"),
    ));
    assert!(matches!(
        e,
        RangeError::AddressEmbedsIpv4 {
            field: Field::Gateway,
            ..
        }
    ));
}

#[test]
fn subnets_embedding_ipv4_are_refused() {
    // The mapped and compatible blocks, anything inside them, anything
    // holding them.
    for s in [
        "::ffff:10.7.0.0/120",
        "::ffff:0:0/96",
        "::10.7.0.0/120",
        "::/96",
        "::/64",
        "::/0",
        "::/80",
    ] {
        let e = err(&spec(s));
        assert!(
            matches!(e, RangeError::SubnetEmbedsIpv4 { .. }),
            "{s}: {e:?}"
        );
        assert!(e.to_string().contains("IPv4"), "{s}: {e}");
    }
    assert_eq!(
        err(&spec("::ffff:10.7.0.0/120")).to_string(),
        "subnet ::ffff:10.7.0.0/120: overlaps the IPv4-mapped IPv6 addresses (::ffff:0:0/96), \
         IPv4 hosts in IPv6 form; use an IPv4 subnet for IPv4, and for IPv6 a subnet outside \
         ::ffff:0:0/96 and ::/96"
    );
    // Just outside the blocks: accepted.
    for s in [
        "::1:0:0/96",
        "::fffe:0:0/96",
        "0:0:0:1::/64",
        "8000::/1",
        "fd00::/64",
    ] {
        parse(&spec(s));
    }
    // ::/127 is too small before it is anything else (and holds only :: and
    // ::1, IPv6's own).
    assert!(matches!(
        err(&spec("::/127")),
        RangeError::SubnetTooSmall { .. }
    ));
}

#[test]
fn addresses_embedding_ipv4_are_refused_naming_the_field() {
    let cases = [
        (
            spec_with("fd00::/64", Some("::ffff:1.2.3.4"), None, None),
            Field::RangeStart,
        ),
        (
            spec_with("fd00::/64", None, Some("::1.2.3.4"), None),
            Field::RangeEnd,
        ),
        (
            spec_with("10.0.0.0/24", None, None, Some("::ffff:10.0.0.1")),
            Field::Gateway,
        ),
    ];
    for (s, want) in cases {
        match err(&s) {
            RangeError::AddressEmbedsIpv4 { field, .. } => assert_eq!(field, want),
            other => panic!("{want}: {other:?}"),
        }
    }
    let e = err(&with_exclude(
        spec("10.0.0.0/24"),
        &["10.0.0.9", "::ffff:10.0.0.9"],
    ));
    assert_eq!(e.exclude_index(), Some(1));
    assert!(matches!(e, RangeError::ExcludeEmbedsIpv4 { .. }));
    let e = err(&with_exclude(spec("fd00::/64"), &["::/64"]));
    assert!(matches!(e, RangeError::ExcludeEmbedsIpv4 { index: 0, .. }));
    let e = err(&with_stages(
        spec("10.0.0.0/24"),
        &[("sandbox", &["::ffff:10.0.0.7"])],
    ));
    assert!(matches!(e, RangeError::StageEmbedsIpv4 { .. }));
}

#[test]
fn embedded_ipv4_blocks() {
    for (s, want) in [
        ("::", None),
        ("::1", None),
        ("::2", Some("IPv4-compatible")),
        ("::255.255.255.255", Some("IPv4-compatible")),
        ("::1:0:0", None),
        ("::fffe:ffff:ffff", None),
        ("::ffff:0:0", Some("IPv4-mapped")),
        ("::ffff:255.255.255.255", Some("IPv4-mapped")),
        ("::1:0:0:0", None),
        ("fd00::ffff:a07:9", None),
        ("10.7.0.9", None),
    ] {
        let got = embedded_ipv4(ip(s));
        match want {
            None => assert_eq!(got, None, "{s}"),
            Some(w) => assert!(got.is_some_and(|g| g.contains(w)), "{s}: {got:?}"),
        }
    }
}

#[test]
fn limits_on_sets_and_ranges() {
    // One range per /24 inside 10.0.0.0/8: disjoint.
    let r = |i: usize| range(&format!("10.{}.{}.0/24", i / 256, i % 256));
    let ranges: Vec<Range> = (0..MAX_RANGES_PER_SET).map(r).collect();
    assert_eq!(
        RangeSet::new(ranges.clone()).map(|s| s.ranges().len()),
        Ok(MAX_RANGES_PER_SET)
    );
    let mut over = ranges;
    over.push(r(MAX_RANGES_PER_SET));
    assert_eq!(
        RangeSet::new(over),
        Err(RangeError::TooManyRanges {
            count: MAX_RANGES_PER_SET + 1,
            max: MAX_RANGES_PER_SET
        })
    );
    let sets: Vec<RangeSet> = (0..=MAX_RANGE_SETS)
        .map(|i| RangeSet::new(vec![r(i)]).unwrap())
        .collect();
    check_sets(&sets[..MAX_RANGE_SETS]).unwrap();
    assert_eq!(
        check_sets(&sets),
        Err(RangeError::TooManySets {
            count: MAX_RANGE_SETS + 1,
            max: MAX_RANGE_SETS
        })
    );
}

/// The sweep finds an overlap wherever it sits among many disjoint ranges,
/// and agrees with the pairwise definition on whether there is one.
#[test]
fn sweep_finds_overlaps_among_many() {
    let r = |i: usize| range(&format!("10.{}.{}.0/24", i / 256, i % 256));
    let big = range("10.1.0.0/16"); // holds r(256..512)
    for at in [0, 1, 500, 1000] {
        let mut sets: Vec<RangeSet> = (0..1000)
            .filter(|i| !(256..512).contains(i))
            .map(|i| RangeSet::new(vec![r(i)]).unwrap())
            .collect();
        check_sets(&sets).unwrap();
        sets.insert(at.min(sets.len()), RangeSet::new(vec![r(300)]).unwrap());
        check_sets(&sets).unwrap();
        sets.push(RangeSet::new(vec![big.clone()]).unwrap());
        match check_sets(&sets) {
            Err(RangeError::OverlapAcrossSets {
                first_set,
                second_set,
                first,
                second,
                ..
            }) => {
                assert!(first_set < second_set);
                assert_eq!(second_set, sets.len() - 1);
                assert_eq!(first, net("10.1.44.0/24"));
                assert_eq!(second, net("10.1.0.0/16"));
            }
            other => panic!("{other:?}"),
        }
    }
    // Within one set, config order decides which is "first".
    let e = RangeSet::new(vec![r(5), big.clone(), r(300), r(9)]).unwrap_err();
    assert!(
        matches!(e, RangeError::Overlap { first, second, .. } if first == net("10.1.0.0/16") && second == net("10.1.44.0/24"))
    );
}

#[test]
fn touching_and_withheld_and_find() {
    let mut st = spec("10.0.1.0/24");
    st.stages.insert("sandbox".into(), vec!["10.0.1.9".into()]);
    let set = RangeSet::new(vec![range("10.0.3.0/24"), parse(&st), range("10.0.2.0/24")]).unwrap();
    let v = |s: &str| to_u128(ip(s));
    let hit: Vec<IpNet> = set
        .touching(v("10.0.1.200"), v("10.0.2.3"))
        .map(|r| r.subnet)
        .collect();
    assert_eq!(hit, vec![net("10.0.1.0/24"), net("10.0.2.0/24")]);
    assert_eq!(set.touching(v("10.0.4.0"), v("10.0.9.0")).count(), 0);
    assert_eq!(
        set.withheld_in(v("10.0.1.0"), v("10.0.2.1")),
        &[
            v("10.0.1.0"),
            v("10.0.1.1"),
            v("10.0.1.9"),
            v("10.0.1.255"),
            v("10.0.2.0"),
            v("10.0.2.1")
        ]
    );
    assert_eq!(set.find(ip("10.0.2.7")).map(|(i, _)| i), Some(2));
    assert_eq!(set.find(ip("10.0.3.254")).map(|(i, _)| i), Some(0));
    assert_eq!(set.find(ip("10.0.3.255")), None);
    assert_eq!(set.find(ip("fd00::1")), None);
}

#[test]
fn outside_subnet() {
    for (s, field, value) in [
        (
            spec_with("10.0.0.0/24", Some("10.0.1.2"), None, None),
            Field::RangeStart,
            "10.0.1.2",
        ),
        (
            spec_with("10.0.0.0/24", None, Some("9.255.255.255"), None),
            Field::RangeEnd,
            "9.255.255.255",
        ),
        (
            spec_with("10.0.0.0/24", None, None, Some("10.0.1.1")),
            Field::Gateway,
            "10.0.1.1",
        ),
        (
            spec_with("fd00::/64", None, Some("fd00:0:0:1::"), None),
            Field::RangeEnd,
            "fd00:0:0:1::",
        ),
    ] {
        let e = err(&s);
        assert_eq!(
            e,
            RangeError::OutsideSubnet {
                field,
                value: value.into(),
                subnet: net(&s.subnet),
            }
        );
        assert_eq!(
            e.to_string(),
            format!("{field} {value:?}: not in subnet {}", s.subnet)
        );
    }
}

#[test]
fn start_after_end() {
    let e = err(&spec_with(
        "10.0.0.0/24",
        Some("10.0.0.100"),
        Some("10.0.0.50"),
        None,
    ));
    assert_eq!(
        e,
        RangeError::StartAfterEnd {
            start: ip("10.0.0.100"),
            end: ip("10.0.0.50"),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert_eq!(
        e.to_string(),
        "rangeStart 10.0.0.100 is after rangeEnd 10.0.0.50 (subnet 10.0.0.0/24)"
    );
    // Against a default: rangeEnd below the default rangeStart (network + 2).
    let e = err(&spec_with("10.0.0.0/24", None, Some("10.0.0.1"), None));
    assert!(matches!(e, RangeError::StartAfterEnd { start, .. } if start == ip("10.0.0.2")));
    // rangeStart on the IPv4 broadcast address is above the default rangeEnd.
    let e = err(&spec_with("10.0.0.0/24", Some("10.0.0.255"), None, None));
    assert!(matches!(e, RangeError::StartAfterEnd { end, .. } if end == ip("10.0.0.254")));
}

#[test]
fn explicit_network_and_broadcast_never_allocatable() {
    let r = parse(&spec_with(
        "10.0.0.0/30",
        Some("10.0.0.0"),
        Some("10.0.0.3"),
        None,
    ));
    let ok: Vec<_> = ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .into_iter()
        .filter(|s| r.is_allocatable(ip(s)))
        .collect();
    assert_eq!(ok, vec!["10.0.0.2"]);
}

#[test]
fn is_allocatable_rules() {
    let r = range("10.0.0.0/24");
    assert!(r.is_allocatable(ip("10.0.0.2")));
    assert!(r.is_allocatable(ip("10.0.0.254")));
    assert!(!r.is_allocatable(ip("10.0.0.0")));
    assert!(!r.is_allocatable(ip("10.0.0.1")));
    assert!(!r.is_allocatable(ip("10.0.0.255")));
    assert!(!r.is_allocatable(ip("10.0.1.2")));
    assert!(
        !r.is_allocatable(ip("::a00:2")),
        "other family, same integer"
    );
    let r = range("fd00::/120");
    assert!(!r.is_allocatable(ip("10.0.0.2")));
    assert!(r.is_allocatable(ip("fd00::ff")));
    assert!(!r.is_allocatable(ip("fd00::100")));
}

#[test]
fn contains_network_broadcast() {
    let r = range("10.0.0.0/24");
    assert!(r.contains(ip("10.0.0.254")));
    assert!(!r.contains(ip("10.0.0.255")));
    assert_eq!(r.network(), 0x0a00_0000);
    assert_eq!(r.broadcast(), Some(0x0a00_00ff));
    assert_eq!(r.to_string(), "10.0.0.2-10.0.0.254 (10.0.0.0/24)");
}

// ---- stages ---------------------------------------------------------------

#[test]
fn stages_sorted_deduped() {
    let s = with_stages(
        spec("10.0.0.0/24"),
        &[
            ("sandbox", &["10.0.0.9", "10.0.0.3", "10.0.0.9"]),
            ("smallflow", &["10.0.0.200"]),
            ("empty", &[]),
        ],
    );
    let r = parse(&s);
    assert_eq!(r.stages["sandbox"], vec![ip("10.0.0.3"), ip("10.0.0.9")]);
    assert_eq!(r.stages["smallflow"], vec![ip("10.0.0.200")]);
    assert!(r.stages["empty"].is_empty());
    assert_eq!(r.stage_of(ip("10.0.0.3")), Some("sandbox"));
    assert_eq!(r.stage_of(ip("10.0.0.200")), Some("smallflow"));
    assert_eq!(r.stage_of(ip("10.0.0.4")), None);
    // Reserved addresses stay allocatable (to their stage).
    assert!(r.is_allocatable(ip("10.0.0.3")));
}

#[test]
fn stage_empty_name() {
    let e = err(&with_stages(spec("10.0.0.0/24"), &[("", &["10.0.0.5"])]));
    assert_eq!(
        e,
        RangeError::EmptyStageName {
            subnet: net("10.0.0.0/24")
        }
    );
    assert!(e.to_string().contains("stage name \"\""));
}

#[test]
fn stage_unparsable() {
    let e = err(&with_stages(
        spec("10.0.0.0/24"),
        &[("sandbox", &["10.0.0.x"])],
    ));
    assert_eq!(
        e,
        RangeError::InvalidStageAddress {
            stage: "sandbox".into(),
            value: "10.0.0.x".into(),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert_eq!(
        e.to_string(),
        "stage \"sandbox\" address \"10.0.0.x\": not an IP address (subnet 10.0.0.0/24)"
    );
}

#[test]
fn stage_wrong_family() {
    let e = err(&with_stages(
        spec("10.0.0.0/24"),
        &[("smallflow", &["fd00::5"])],
    ));
    assert_eq!(
        e,
        RangeError::StageWrongFamily {
            stage: "smallflow".into(),
            value: "fd00::5".into(),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert!(e.to_string().contains("\"smallflow\""));
    assert!(e.to_string().contains("\"fd00::5\""));
}

#[test]
fn stage_outside_range() {
    let s = with_stages(
        spec_with("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.20"), None),
        &[("sandbox", &["10.0.0.21"])],
    );
    let e = err(&s);
    assert_eq!(
        e,
        RangeError::StageOutsideRange {
            stage: "sandbox".into(),
            value: "10.0.0.21".into(),
            start: ip("10.0.0.10"),
            end: ip("10.0.0.20"),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert_eq!(
        e.to_string(),
        "stage \"sandbox\" address \"10.0.0.21\": outside the range 10.0.0.10-10.0.0.20 \
         (subnet 10.0.0.0/24)"
    );
    // The default gateway (.1) is below the default rangeStart: outside.
    let e = err(&with_stages(
        spec("10.0.0.0/24"),
        &[("sandbox", &["10.0.0.1"])],
    ));
    assert!(matches!(e, RangeError::StageOutsideRange { .. }));
}

#[test]
fn stage_not_allocatable() {
    let base = spec_with(
        "10.0.0.0/24",
        Some("10.0.0.0"),
        Some("10.0.0.255"),
        Some("10.0.0.100"),
    );
    for (value, what) in [
        ("10.0.0.100", "gateway"),
        ("10.0.0.0", "network address"),
        ("10.0.0.255", "broadcast address"),
    ] {
        let e = err(&with_stages(base.clone(), &[("sandbox", &[value])]));
        assert_eq!(
            e,
            RangeError::StageNotAllocatable {
                stage: "sandbox".into(),
                value: value.into(),
                what,
                subnet: net("10.0.0.0/24"),
            }
        );
        assert!(e.to_string().contains(&format!("is the {what}")), "{e}");
    }
}

#[test]
fn stage_conflict() {
    let e = err(&with_stages(
        spec("10.0.0.0/24"),
        &[
            ("smallflow", &["10.0.0.8", "10.0.0.7"]),
            ("sandbox", &["10.0.0.7"]),
        ],
    ));
    assert_eq!(
        e,
        RangeError::StageConflict {
            value: ip("10.0.0.7"),
            first: "sandbox".into(),
            second: "smallflow".into(),
            subnet: net("10.0.0.0/24"),
        }
    );
    assert_eq!(
        e.to_string(),
        "address 10.0.0.7 is listed in both stage \"sandbox\" and stage \"smallflow\" \
         (subnet 10.0.0.0/24)"
    );
}

#[test]
fn stages_v6() {
    let r = parse(&with_stages(
        spec("fd00::/64"),
        &[("sandbox", &["fd00::ffff:ffff:ffff:ffff", "fd00::2"])],
    ));
    assert_eq!(
        r.stages["sandbox"],
        vec![ip("fd00::2"), ip("fd00::ffff:ffff:ffff:ffff")]
    );
}

// ---- range sets -----------------------------------------------------------

#[test]
fn set_ok() {
    let set = RangeSet::new(vec![range("10.0.0.0/24"), range("10.0.2.0/24")]).unwrap();
    assert_eq!(set.family(), Family::V4);
    assert_eq!(set.ranges().len(), 2);
    assert_eq!(set.find(ip("10.0.2.9")).map(|(i, _)| i), Some(1));
    assert_eq!(set.find(ip("10.0.0.9")).map(|(i, _)| i), Some(0));
    assert!(set.find(ip("10.0.1.9")).is_none());
    assert!(
        set.find(ip("10.0.0.1")).is_none(),
        "gateway is outside start..=end"
    );
    assert!(set.find(ip("::a00:9")).is_none());
    assert!(!set.has_stage("sandbox"));
}

#[test]
fn set_same_subnet_disjoint_ranges_ok() {
    let a = parse(&spec_with(
        "10.0.0.0/24",
        Some("10.0.0.2"),
        Some("10.0.0.99"),
        None,
    ));
    let b = parse(&spec_with("10.0.0.0/24", Some("10.0.0.100"), None, None));
    let set = RangeSet::new(vec![a, b]).unwrap();
    assert_eq!(set.find(ip("10.0.0.100")).map(|(i, _)| i), Some(1));
}

#[test]
fn set_empty() {
    assert_eq!(RangeSet::new(vec![]), Err(RangeError::EmptySet));
    assert_eq!(
        RangeError::EmptySet.to_string(),
        "range set: no ranges specified"
    );
}

#[test]
fn set_mixed_families() {
    let e = RangeSet::new(vec![
        range("10.0.0.0/24"),
        range("10.0.1.0/24"),
        range("fd00::/64"),
    ])
    .unwrap_err();
    assert_eq!(
        e,
        RangeError::MixedFamilies {
            first: net("10.0.0.0/24"),
            second: net("fd00::/64"),
        }
    );
    assert_eq!(
        e.to_string(),
        "range set mixes address families: subnet 10.0.0.0/24 and subnet fd00::/64"
    );
}

#[test]
fn set_overlap() {
    let e = RangeSet::new(vec![
        range("10.0.0.0/24"),
        range("10.1.0.0/16"),
        range("10.1.7.0/24"),
    ])
    .unwrap_err();
    assert_eq!(
        e,
        RangeError::Overlap {
            first: net("10.1.0.0/16"),
            first_start: ip("10.1.0.2"),
            first_end: ip("10.1.255.254"),
            second: net("10.1.7.0/24"),
            second_start: ip("10.1.7.2"),
            second_end: ip("10.1.7.254"),
        }
    );
    assert_eq!(
        e.to_string(),
        "range set: range 10.1.0.2-10.1.255.254 of subnet 10.1.0.0/16 overlaps range \
         10.1.7.2-10.1.7.254 of subnet 10.1.7.0/24"
    );
    // Touching at one address within one subnet.
    let a = parse(&spec_with("10.0.0.0/24", None, Some("10.0.0.50"), None));
    let b = parse(&spec_with("10.0.0.0/24", Some("10.0.0.50"), None, None));
    assert!(matches!(
        RangeSet::new(vec![a, b]),
        Err(RangeError::Overlap { .. })
    ));
    // The same range twice.
    assert!(matches!(
        RangeSet::new(vec![range("fd00::/64"), range("fd00::/64")]),
        Err(RangeError::Overlap { .. })
    ));
}

#[test]
fn sets_check() {
    let v4 = RangeSet::new(vec![range("10.0.0.0/24")]).unwrap();
    let v6 = RangeSet::new(vec![range("fd00::/64")]).unwrap();
    let v4b = RangeSet::new(vec![range("10.0.1.0/24")]).unwrap();
    check_sets(&[v4.clone(), v6.clone()]).unwrap();
    check_sets(&[v4.clone(), v4b.clone(), v6.clone()]).unwrap();
    assert_eq!(check_sets(&[]), Err(RangeError::NoSets));
    assert_eq!(
        RangeError::NoSets.to_string(),
        "ranges: no range sets specified"
    );
}

#[test]
fn sets_overlap_across() {
    let a = RangeSet::new(vec![range("10.0.0.0/24"), range("10.2.0.0/16")]).unwrap();
    let v6 = RangeSet::new(vec![range("fd00::/64")]).unwrap();
    let b = RangeSet::new(vec![range("10.5.0.0/24"), range("10.2.3.0/24")]).unwrap();
    let e = check_sets(&[a, v6, b]).unwrap_err();
    assert_eq!(
        e,
        RangeError::OverlapAcrossSets {
            first_set: 0,
            first: net("10.2.0.0/16"),
            first_start: ip("10.2.0.2"),
            first_end: ip("10.2.255.254"),
            second_set: 2,
            second: net("10.2.3.0/24"),
            second_start: ip("10.2.3.2"),
            second_end: ip("10.2.3.254"),
        }
    );
    assert_eq!(
        e.to_string(),
        "range set 0: range 10.2.0.2-10.2.255.254 of subnet 10.2.0.0/16 overlaps range \
         10.2.3.2-10.2.3.254 of subnet 10.2.3.0/24 in range set 2"
    );
}

// ---- conversions ----------------------------------------------------------

#[test]
fn u128_conversions_edges() {
    assert_eq!(to_u128(ip("0.0.0.0")), 0);
    assert_eq!(to_u128(ip("255.255.255.255")), u128::from(u32::MAX));
    assert_eq!(
        from_u128(Family::V4, u128::from(u32::MAX)),
        Some(ip("255.255.255.255"))
    );
    assert_eq!(from_u128(Family::V4, u128::from(u32::MAX) + 1), None);
    assert_eq!(from_u128(Family::V4, u128::MAX), None);
    assert_eq!(from_u128(Family::V6, 0), Some(ip("::")));
    assert_eq!(Family::V4.as_str(), "4");
    assert_eq!(Field::Subnet.to_string(), "subnet");
    assert_eq!(Field::RangeEnd.to_string(), "rangeEnd");
}

fn with_exclude(mut s: RangeSpec, entries: &[&str]) -> RangeSpec {
    s.exclude = entries.iter().map(|v| (*v).to_owned()).collect();
    s
}

#[test]
fn exclude_entries_canonical_and_merged() {
    let r = parse(&with_exclude(
        spec("10.0.0.0/24"),
        &["10.0.0.17/28", "10.0.0.99", "10.0.0.32/28", "10.0.0.20"],
    ));
    assert_eq!(
        r.exclude,
        vec![
            net("10.0.0.16/28"),
            net("10.0.0.99/32"),
            net("10.0.0.32/28"),
            net("10.0.0.20/32")
        ]
    );
    // .16/28 and .32/28 are adjacent: one interval; .20 is inside it.
    assert_eq!(
        r.excluded_intervals(),
        &[(0x0a00_0010, 0x0a00_002f), (0x0a00_0063, 0x0a00_0063)]
    );
    assert_eq!(r.excluded_len(), 33);
    assert!(r.is_excluded(ip("10.0.0.47")) && !r.is_excluded(ip("10.0.0.48")));
    assert!(!r.is_excluded(ip("fd00::10")));
    assert_eq!(r.excluded_by(ip("10.0.0.20")), Some(net("10.0.0.16/28")));
    assert_eq!(r.excluded_by(ip("10.0.0.21")), Some(net("10.0.0.16/28")));
    assert_eq!(r.excluded_by(ip("10.0.0.50")), None);
}

#[test]
fn exclude_errors_name_the_entry() {
    let e = err(&with_exclude(spec("10.0.0.0/24"), &["10.0.0.1", "x/8"]));
    assert_eq!(e.exclude_index(), Some(1));
    assert_eq!(
        e.to_string(),
        "exclude entry \"x/8\": not a CIDR or an IP address"
    );
    let e = err(&with_exclude(spec("10.0.0.0/24"), &["fd00::1"]));
    assert!(matches!(e, RangeError::ExcludeWrongFamily { index: 0, .. }));
    let e = err(&with_exclude(spec("10.0.0.0/24"), &["10.0.0.0/16"]));
    assert!(matches!(
        e,
        RangeError::ExcludeOutsideSubnet { index: 0, .. }
    ));
    let e = err(&with_exclude(spec("fd00::/64"), &["fd00:0:0:1::/64"]));
    assert!(matches!(e, RangeError::ExcludeOutsideSubnet { .. }));
    // The whole range, but not the gateway/network/broadcast, is enough.
    let e = err(&with_exclude(
        spec("10.0.0.0/24"),
        &[
            "10.0.0.2/31",
            "10.0.0.4/30",
            "10.0.0.8/29",
            "10.0.0.16/28",
            "10.0.0.32/27",
            "10.0.0.64/26",
            "10.0.0.128/25",
        ],
    ));
    assert_eq!(
        e.to_string(),
        "exclude: covers every allocatable address of the range 10.0.0.2-10.0.0.254 (subnet 10.0.0.0/24)"
    );
    assert_eq!(e.exclude_index(), None);
    // One address left: accepted.
    let r = parse(&with_exclude(
        spec("10.0.0.0/24"),
        &[
            "10.0.0.0/25",
            "10.0.0.129/32",
            "10.0.0.130/31",
            "10.0.0.132/30",
            "10.0.0.136/29",
            "10.0.0.144/28",
            "10.0.0.160/27",
            "10.0.0.192/26",
        ],
    ));
    let left: Vec<u128> = (r.first()..=r.last())
        .filter(|v| r.is_allocatable_u128(*v))
        .collect();
    assert_eq!(left, vec![0x0a00_0080]);
    // Excluding the whole subnet of a range already empty of allocatable
    // addresses is no new error (the range itself is accepted, as before).
    let s = with_exclude(
        spec_with("10.0.0.0/30", Some("10.0.0.1"), Some("10.0.0.1"), None),
        &["10.0.0.0/30"],
    );
    assert!(Range::parse(&s).is_ok());
    // A stage reservation may not be excluded.
    let s = with_exclude(
        with_stages(spec("10.0.0.0/24"), &[("sandbox", &["10.0.0.9"])]),
        &["10.0.0.8/29"],
    );
    assert_eq!(
        err(&s).to_string(),
        "stage \"sandbox\" address \"10.0.0.9\": is excluded (exclude entry 10.0.0.8/29), never handed out"
    );
}

/// An IPv6 /64 with CIDRs excluding almost all of it: every query is
/// answered from the few merged intervals (a walk over the addresses would
/// never finish, so this is O(entries) by construction).
#[test]
fn huge_v6_exclusions_are_intervals() {
    let r = parse(&with_exclude(
        spec("fd00::/64"),
        &[
            "fd00::/65",
            "fd00::8000:0:0:0/66",
            "fd00::c000:0:0:0/67",
            "fd00::ffff:ffff:ffff:ff00/120",
        ],
    ));
    let base = to_u128(ip("fd00::"));
    assert_eq!(
        r.excluded_intervals(),
        &[
            (base, base + (7u128 << 61) - 1),
            (base + 0xffff_ffff_ffff_ff00, base + 0xffff_ffff_ffff_ffff)
        ]
    );
    // start..=end is fd00::2 ..= the last address.
    assert_eq!(r.excluded_len(), (7u128 << 61) - 2 + 256);
    assert_eq!(
        r.unexcluded_runs(r.first(), r.last()),
        vec![(base + (7u128 << 61), base + 0xffff_ffff_ffff_feff)]
    );
    // A window straddling the first boundary, and one entirely excluded.
    let b = base + (7u128 << 61);
    assert_eq!(r.unexcluded_runs(b - 16, b + 15), vec![(b, b + 15)]);
    assert_eq!(r.unexcluded_runs(base + 1000, base + 2000), vec![]);
    assert!(r.is_excluded_u128(b - 1) && !r.is_excluded_u128(b));
    assert!(r.is_allocatable_u128(b));
}

#[test]
fn unexcluded_runs_edges() {
    // Exclusions at the very ends of the integer space (the overflow
    // edges): the bottom through IPv4 0.0.0.0/0, the top through IPv6.
    let s = with_exclude(
        spec_with("0.0.0.0/0", Some("0.0.0.0"), Some("255.255.255.255"), None),
        &["0.0.0.0/30", "255.255.255.240/28"],
    );
    let r = parse(&s);
    assert_eq!(r.unexcluded_runs(0, u128::MAX), vec![(4, (1 << 32) - 17)]);
    assert_eq!(r.unexcluded_runs(0, 3), vec![]);
    let s = with_exclude(
        spec_with(
            "ff00::/8",
            Some("ff00::"),
            Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            None,
        ),
        &["ff00::/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"],
    );
    let r = parse(&s);
    let base = 0xff00u128 << 112;
    assert_eq!(
        r.unexcluded_runs(0, u128::MAX),
        vec![(base + 4, u128::MAX - 16)]
    );
    assert_eq!(r.unexcluded_runs(u128::MAX - 3, u128::MAX), vec![]);
    // Windows outside start..=end are empty.
    let r = parse(&with_exclude(spec("10.0.0.0/24"), &["10.0.0.100"]));
    assert_eq!(r.unexcluded_runs(0, 0x0a00_0001), vec![]);
    assert_eq!(
        r.unexcluded_runs(0x0a00_0060, 0x0a00_0070),
        vec![(0x0a00_0060, 0x0a00_0063), (0x0a00_0065, 0x0a00_0070)]
    );
}
