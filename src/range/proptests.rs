//! Property tests: integer conversions round-trip, defaults of every valid
//! subnet lie inside it, `is_allocatable` agrees with a model written over
//! `IpAddr` and `ipnet` (not over the `u128` offsets the code uses), and
//! [`Range::parse`] never panics on arbitrary strings.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// A valid subnet: any family, any address, any prefix that leaves room to
/// allocate (IPv4 /0../30, IPv6 /0../126), host bits cleared, not sharing
/// addresses with the IPv4-embedding IPv6 blocks (refused).
fn subnet() -> impl Strategy<Value = IpNet> {
    let any = prop_oneof![
        (any::<u32>(), 0u8..=30).prop_map(|(a, p)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), p)
                .unwrap()
                .trunc()
        }),
        (any::<u128>(), 0u8..=126).prop_map(|(a, p)| {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p)
                .unwrap()
                .trunc()
        }),
    ];
    any.prop_filter("embeds IPv4", |n| embeds_ipv4(*n).is_none())
}

/// Mask of the host part of `net`, as an offset from its network address.
fn host_mask(net: IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// The address at `offset & host_mask` inside `net`.
fn inside(net: IpNet, offset: u128) -> IpAddr {
    let v = to_u128(net.network()) + (offset & host_mask(net));
    from_u128(Family::of(net.network()), v).unwrap()
}

fn other_family(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        IpAddr::V6(a) => IpAddr::V4(Ipv4Addr::from(u128::from(a) as u32)),
    }
}

/// The model of "may be handed out", over `IpAddr` ordering and `ipnet`.
fn model_allocatable(r: &Range, ip: IpAddr) -> bool {
    let same_family = ip.is_ipv4() == r.subnet.network().is_ipv4();
    let is_v4_broadcast = ip.is_ipv4() && ip == r.subnet.broadcast();
    same_family
        && r.start <= ip
        && ip <= r.end
        && ip != r.gateway
        && ip != r.subnet.network()
        && !is_v4_broadcast
}

fn neighbours(ip: IpAddr) -> Vec<IpAddr> {
    let fam = Family::of(ip);
    let v = to_u128(ip);
    [v.checked_sub(1), Some(v), v.checked_add(1)]
        .into_iter()
        .flatten()
        .filter_map(|v| from_u128(fam, v))
        .collect()
}

proptest! {
    #[test]
    fn v4_round_trip(a in any::<u32>()) {
        let ip = IpAddr::V4(Ipv4Addr::from(a));
        let v = to_u128(ip);
        prop_assert_eq!(v, u128::from(a));
        prop_assert_eq!(from_u128(Family::V4, v), Some(ip));
    }

    #[test]
    fn v6_round_trip(a in any::<u128>()) {
        let ip = IpAddr::V6(Ipv6Addr::from(a));
        prop_assert_eq!(to_u128(ip), a);
        prop_assert_eq!(from_u128(Family::V6, a), Some(ip));
        let back = from_u128(Family::V6, a).map(to_u128);
        prop_assert_eq!(back, Some(a));
    }

    #[test]
    fn v4_from_u128_refuses_wide_values(a in (1u128 << 32)..=u128::MAX) {
        prop_assert_eq!(from_u128(Family::V4, a), None);
    }

    #[test]
    fn defaults_inside_subnet(net in subnet()) {
        let r = Range::parse(&RangeSpec { subnet: net.to_string(), ..RangeSpec::default() })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r.subnet, net);
        prop_assert!(net.contains(&r.start));
        prop_assert!(net.contains(&r.end));
        prop_assert!(net.contains(&r.gateway));
        prop_assert!(r.start <= r.end);
        prop_assert_eq!(r.len(), r.last() - r.first() + 1);
        let network = to_u128(net.network());
        prop_assert_eq!(to_u128(r.gateway), network + 1);
        prop_assert_eq!(r.first(), network + 2);
        let last = to_u128(net.broadcast());
        match r.family() {
            Family::V4 => prop_assert_eq!(r.last(), last - 1),
            Family::V6 => prop_assert_eq!(r.last(), last),
        }
        // Every default range has at least one allocatable address: its start.
        prop_assert!(r.is_allocatable(r.start));
    }

    #[test]
    fn host_bits_refused(net in subnet(), junk in any::<u128>()) {
        prop_assume!(host_mask(net) != 0);
        let addr = inside(net, junk | 1);
        let written = format!("{}/{}", addr, net.prefix_len());
        let e = Range::parse(&RangeSpec { subnet: written.clone(), ..RangeSpec::default() });
        prop_assert_eq!(
            e,
            Err(RangeError::SubnetHostBits {
                value: written,
                prefix_len: net.prefix_len(),
                network: net.network(),
            })
        );
    }

    #[test]
    fn is_allocatable_matches_model(
        net in subnet(),
        a in any::<u128>(),
        b in any::<u128>(),
        g in proptest::option::of(any::<u128>()),
        probes in proptest::collection::vec(any::<u128>(), 4),
    ) {
        let (start, end) = (inside(net, a), inside(net, b));
        let spec = RangeSpec {
            subnet: net.to_string(),
            range_start: Some(start.to_string()),
            range_end: Some(end.to_string()),
            gateway: g.map(|g| inside(net, g).to_string()),
            ..RangeSpec::default()
        };
        let parsed = Range::parse(&spec);
        if start > end {
            prop_assert_eq!(
                parsed,
                Err(RangeError::StartAfterEnd { start, end, subnet: net })
            );
            return Ok(());
        }
        let r = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r.len(), (to_u128(end) - to_u128(start)).saturating_add(1));

        let mut ips = vec![net.network(), net.broadcast(), r.gateway];
        ips.extend(neighbours(r.start));
        ips.extend(neighbours(r.end));
        ips.extend(neighbours(r.gateway));
        for p in &probes {
            ips.push(inside(net, *p));
            ips.push(from_u128(r.family(), *p & host_mask(net)).unwrap());
        }
        let others: Vec<IpAddr> = ips.iter().map(|ip| other_family(*ip)).collect();
        ips.extend(others);
        for ip in ips {
            prop_assert_eq!(r.is_allocatable(ip), model_allocatable(&r, ip), "ip {}", ip);
            let in_range = ip.is_ipv4() == r.start.is_ipv4() && r.start <= ip && ip <= r.end;
            prop_assert_eq!(r.contains(ip), in_range, "ip {}", ip);
            if Family::of(ip) == r.family() {
                prop_assert_eq!(r.is_allocatable_u128(to_u128(ip)), r.is_allocatable(ip));
            }
        }
    }

    #[test]
    fn overlaps_matches_model(
        n1 in subnet(), n2 in subnet(), same in any::<bool>(), a in any::<u128>(), b in any::<u128>(),
    ) {
        // Half the time both ranges share a subnet, so overlaps are common.
        let n2 = if same { n1 } else { n2 };
        let ra = Range::parse(&RangeSpec { subnet: n1.to_string(), ..RangeSpec::default() });
        let rb = Range::parse(&RangeSpec {
            subnet: n2.to_string(),
            range_start: Some(inside(n2, a.min(b)).to_string()),
            range_end: Some(inside(n2, a.max(b)).to_string()),
            ..RangeSpec::default()
        });
        let (Ok(ra), Ok(rb)) = (ra, rb) else {
            // Masking can reorder start/end; only the valid cases matter here.
            return Ok(());
        };
        let model = ra.family() == rb.family()
            && ra.start.max(rb.start) <= ra.end.min(rb.end);
        prop_assert_eq!(ra.overlaps(&rb), model);
        prop_assert_eq!(rb.overlaps(&ra), model);
        prop_assert_eq!(RangeSet::new(vec![ra.clone(), rb.clone()]).is_ok(), !model && ra.family() == rb.family());
    }

    #[test]
    fn parse_never_panics(
        subnet in "\\PC{0,40}",
        start in proptest::option::of("\\PC{0,40}"),
        end in proptest::option::of("[0-9a-f:.]{0,40}"),
        gateway in proptest::option::of("[0-9a-f:./]{0,40}"),
        stage in "\\PC{0,8}",
        stage_ips in proptest::collection::vec("[0-9a-f:.]{0,40}", 0..4),
    ) {
        let mut spec = RangeSpec { subnet, range_start: start, range_end: end, gateway, ..RangeSpec::default() };
        spec.stages.insert(stage, stage_ips);
        if let Ok(r) = Range::parse(&spec) {
            prop_assert!(r.start <= r.end);
            prop_assert!(r.subnet.contains(&r.start) && r.subnet.contains(&r.end));
            prop_assert!(r.subnet.contains(&r.gateway));
        }
    }

    #[test]
    fn parse_never_panics_near_valid(
        a in any::<u32>(), p in 0u8..=40,
        s in any::<u32>(), e in any::<u32>(),
        stage_ips in proptest::collection::vec(any::<u32>(), 0..4),
    ) {
        let v4 = |x: u32| Ipv4Addr::from(x).to_string();
        let mut spec = RangeSpec {
            subnet: format!("{}/{}", v4(a), p),
            range_start: Some(v4(s)),
            range_end: Some(v4(e)),
            ..RangeSpec::default()
        };
        spec.stages.insert("sandbox".into(), stage_ips.into_iter().map(v4).collect());
        if let Ok(r) = Range::parse(&spec) {
            prop_assert!(r.start <= r.end);
            for ips in r.stages.values() {
                for ip in ips {
                    prop_assert!(r.is_allocatable(*ip));
                }
            }
        }
    }
}
