//! Target `config`: arbitrary bytes as a network config, and the
//! invariants every accepted network and range must satisfy
//! ([`check_network`], [`check_range`]), which the `range` target reuses.

use std::collections::BTreeSet;

use crate::allocator::Network;
use crate::cni::config::NetConf;
use crate::range::{Family, Range};

/// Target `config`: `bytes` as a network config on stdin. Parsing and
/// validation must never panic; a config whose ranges are accepted must
/// satisfy the range invariants (see [`check_network`]).
pub fn config(bytes: &[u8]) {
    let Ok(conf) = NetConf::parse(bytes) else {
        return;
    };
    let _ = conf.options();
    if let Ok(net) = conf.network() {
        check_network(&net);
    }
}

/// The invariants of an accepted network: every range has `start <= end`,
/// `start` / `end` / `gateway` inside its subnet, never hands out its
/// gateway, network or (IPv4) broadcast address, its stage lists are sorted,
/// deduplicated, allocatable and disjoint; ranges of one set share a family;
/// no two ranges anywhere overlap.
pub fn check_network(net: &Network) {
    assert!(
        !net.sets.is_empty(),
        "accepted a network without range sets"
    );
    let mut all: Vec<&Range> = Vec::new();
    for set in &net.sets {
        assert!(!set.ranges().is_empty(), "accepted an empty range set");
        for r in set.ranges() {
            assert_eq!(r.family(), set.family(), "mixed families in a set: {r}");
            check_range(r);
            all.push(r);
        }
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let disjoint = a.family() != b.family() || a.last() < b.first() || b.last() < a.first();
            assert!(disjoint, "accepted overlapping ranges {a} and {b}");
        }
    }
}

/// The invariants of one validated range (see [`check_network`]).
pub fn check_range(r: &Range) {
    let net = &r.subnet;
    assert!(r.first() <= r.last(), "start after end: {r}");
    for (what, ip) in [("start", r.start), ("end", r.end), ("gateway", r.gateway)] {
        assert!(net.contains(&ip), "{what} {ip} outside subnet {net}");
    }
    assert_eq!(*net, net.trunc(), "subnet {net} has host bits");
    for (what, ip) in [("start", r.start), ("end", r.end), ("gateway", r.gateway)] {
        assert!(
            crate::range::embedded_ipv4(ip).is_none(),
            "{what} {ip} embeds an IPv4 address: {r}"
        );
    }
    assert!(!r.is_allocatable(r.gateway), "gateway allocatable: {r}");
    assert!(
        !r.is_allocatable(net.network()),
        "network address allocatable: {r}"
    );
    if r.family() == Family::V4 {
        assert!(
            !r.is_allocatable(net.broadcast()),
            "broadcast allocatable: {r}"
        );
    }
    let mut seen = BTreeSet::new();
    for (stage, ips) in &r.stages {
        assert!(!stage.is_empty(), "empty stage name accepted: {r}");
        assert!(
            ips.windows(2).all(|w| w[0] < w[1]),
            "stage {stage} list not sorted/dedup"
        );
        for ip in ips {
            assert!(
                r.is_allocatable(*ip),
                "stage {stage} address {ip} not allocatable in {r}"
            );
            assert!(seen.insert(*ip), "{ip} reserved by two stages in {r}");
            assert_eq!(r.stage_of(*ip), Some(stage.as_str()), "stage_of({ip})");
        }
    }
}
