//! The networks the allocator model runs on: a few small shapes, each
//! reaching exhaustion within a short operation sequence, between them
//! covering stage reservations, dual stack, multi-range sets and unusual
//! gateways.

use std::collections::BTreeMap;

use crate::allocator::{Network, DEFAULT_PREFIX};
use crate::range::{Range, RangeSet, RangeSpec};

fn spec(subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> RangeSpec {
    RangeSpec {
        subnet: subnet.into(),
        range_start: start.map(Into::into),
        range_end: end.map(Into::into),
        gateway: gw.map(Into::into),
        stages: BTreeMap::new(),
        exclude: Vec::new(),
    }
}

fn staged(mut s: RangeSpec, stage: &str, ips: &[&str]) -> RangeSpec {
    s.stages
        .insert(stage.into(), ips.iter().map(|s| (*s).to_string()).collect());
    s
}

/// The number of network shapes [`shape`] knows.
pub const SHAPES: u8 = 4;

/// Network shape `n % SHAPES`: small ranges (a handful of addresses each, so
/// exhaustion is reached), stage reservations, dual stack, a set of two
/// ranges in different chunks, a range starting at its network address,
/// explicit gateways inside the range. Every range's gateway, network and
/// broadcast lie outside the other ranges of its set. Shape 0 is also the
/// network of the multi-node proptest in `tests/allocator_model.rs`, which
/// pins its pools. One literal table of specs, so it stays one function.
pub fn shape(n: u8) -> Vec<Vec<RangeSpec>> {
    match n % SHAPES {
        0 => vec![
            vec![staged(
                staged(
                    spec("10.0.0.0/28", None, None, None),
                    "sandbox",
                    &["10.0.0.3"],
                ),
                "smallflow",
                &["10.0.0.4", "10.0.0.5"],
            )],
            vec![spec("fd00::/124", None, None, None)],
        ],
        1 => vec![vec![
            spec("10.0.0.0/28", Some("10.0.0.8"), None, None),
            staged(
                spec("10.0.1.0/29", None, None, None),
                "sandbox",
                &["10.0.1.3"],
            ),
        ]],
        2 => vec![
            vec![
                staged(
                    spec("fd00::/125", Some("fd00::"), None, Some("fd00::5")),
                    "smallflow",
                    &["fd00::7"],
                ),
                spec("fd00:1::/126", None, None, None),
            ],
            vec![spec(
                "10.2.0.0/29",
                Some("10.2.0.0"),
                Some("10.2.0.7"),
                Some("10.2.0.5"),
            )],
        ],
        _ => vec![vec![staged(
            staged(
                spec(
                    "10.3.0.0/29",
                    Some("10.3.0.1"),
                    Some("10.3.0.6"),
                    Some("10.3.0.6"),
                ),
                "sandbox",
                &["10.3.0.2"],
            ),
            "smallflow",
            &["10.3.0.3"],
        )]],
    }
}

/// The [`Network`] of [`shape`] `n`; an error only if a shape fails to
/// parse (a bug in the range module, reported by the caller).
pub fn shape_network(n: u8, chunk_bits: u8) -> Result<Network, String> {
    let mut sets = Vec::new();
    for set in shape(n) {
        let ranges = set
            .iter()
            .map(Range::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        sets.push(RangeSet::new(ranges).map_err(|e| e.to_string())?);
    }
    Ok(Network {
        name: "fuzz".into(),
        prefix: DEFAULT_PREFIX.into(),
        sets,
        chunk_bits,
    })
}
