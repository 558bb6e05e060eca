//! Target `range`: a structured [`RangeInput`] written out as a
//! [`RangeSpec`], parsed with [`Range::parse`], and checked against a small
//! model of what the parser must accept and what the parsed range holds.

use arbitrary::Arbitrary;

use super::config::check_range;
use crate::range::{from_u128, to_u128, Family, Range, RangeSet, RangeSpec};

/// How one address field of a [`RangeInput`] is written.
#[derive(Arbitrary, Clone, Debug)]
pub enum AddrInput {
    /// `network + offset` (wrapping within the family), printed normally.
    Offset(u128),
    /// `network + offset` counted back from the subnet's last address.
    FromEnd(u16),
    /// An address of the other family.
    OtherFamily(u128),
    /// Any string.
    Raw(String),
}

/// How the subnet of a [`RangeInput`] is written.
#[derive(Arbitrary, Clone, Debug)]
pub enum SubnetInput {
    /// `address/prefix`: `v6` picks the family, the address comes from
    /// `bits` (host bits cleared unless `keep_host_bits`), the prefix is
    /// `prefix % (width + 1)`.
    Cidr {
        /// IPv6 if true.
        v6: bool,
        /// Address bits (IPv4 uses the low 32).
        bits: u128,
        /// Prefix length before reduction.
        prefix: u8,
        /// Leave host bits set (the parser must refuse).
        keep_host_bits: bool,
    },
    /// Any string.
    Raw(String),
}

/// Structured input of the [`range()`] target.
#[derive(Arbitrary, Clone, Debug)]
pub struct RangeInput {
    /// The subnet.
    pub subnet: SubnetInput,
    /// `rangeStart`, if given.
    pub start: Option<AddrInput>,
    /// `rangeEnd`, if given.
    pub end: Option<AddrInput>,
    /// `gateway`, if given.
    pub gateway: Option<AddrInput>,
    /// Stage lists: (name selector, addresses). Selector 0 `sandbox`,
    /// 1 `smallflow`, 2 the empty name, else `stage<n>`.
    pub stages: Vec<(u8, Vec<AddrInput>)>,
    /// Addresses (offsets from the network) to probe `is_allocatable` at.
    pub probes: Vec<u128>,
}

struct Geometry {
    family: Family,
    network: u128,
    last: u128,
}

impl Geometry {
    fn width_mask(&self) -> u128 {
        match self.family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    fn at(&self, offset: u128) -> u128 {
        self.network.wrapping_add(offset) & self.width_mask()
    }

    fn text(&self, a: &AddrInput) -> (String, Option<u128>) {
        match a {
            AddrInput::Offset(o) => {
                let v = self.at(*o);
                (ip_text(self.family, v), Some(v))
            }
            AddrInput::FromEnd(o) => {
                let v = self.last.wrapping_sub(u128::from(*o)) & self.width_mask();
                (ip_text(self.family, v), Some(v))
            }
            AddrInput::OtherFamily(v) => {
                let other = match self.family {
                    Family::V4 => Family::V6,
                    Family::V6 => Family::V4,
                };
                let v = match other {
                    Family::V4 => v & u128::from(u32::MAX),
                    Family::V6 => *v,
                };
                (ip_text(other, v), None)
            }
            AddrInput::Raw(s) => (s.clone(), None),
        }
    }
}

fn ip_text(family: Family, v: u128) -> String {
    from_u128(family, v).map_or_else(String::new, |ip| ip.to_string())
}

fn stage_name(sel: u8) -> String {
    match sel {
        0 => "sandbox".into(),
        1 => "smallflow".into(),
        2 => String::new(),
        n => format!("stage{}", n % 8),
    }
}

/// The model's view of a well-formed CIDR subnet.
struct Cidr {
    geo: Geometry,
    prefix: u8,
    /// The written address had host bits set.
    host_bits: bool,
}

/// The [`RangeSpec`] an input describes, plus the model's view of it.
struct SpecModel {
    spec: RangeSpec,
    /// `Some` when the subnet is a well-formed CIDR.
    cidr: Option<Cidr>,
    /// The numeric value of `start`, `end`, `gateway`: `None` if not given,
    /// `Some(None)` if given but not a same-family address.
    values: [Option<Option<u128>>; 3],
}

/// The subnet text of `input`, and the model's view of it if it is a CIDR.
fn subnet_text(input: &SubnetInput) -> (String, Option<Cidr>) {
    match input {
        SubnetInput::Cidr {
            v6,
            bits,
            prefix,
            keep_host_bits,
        } => {
            let (family, width) = if *v6 {
                (Family::V6, 128u32)
            } else {
                (Family::V4, 32)
            };
            let prefix = u32::from(*prefix) % (width + 1);
            let mask = if width == 32 {
                u128::from(u32::MAX)
            } else {
                u128::MAX
            };
            let value = bits & mask;
            let host = if prefix == width { 0 } else { mask >> prefix };
            let network = value & !host & mask;
            let written = if *keep_host_bits { value } else { network };
            let geo = Geometry {
                family,
                network,
                last: network | host,
            };
            let cidr = Cidr {
                geo,
                prefix: prefix as u8,
                host_bits: written != network,
            };
            (format!("{}/{prefix}", ip_text(family, written)), Some(cidr))
        }
        SubnetInput::Raw(s) => (s.clone(), None),
    }
}

fn build_spec(input: &RangeInput) -> SpecModel {
    let (subnet, cidr) = subnet_text(&input.subnet);
    let mut spec = RangeSpec {
        subnet,
        ..RangeSpec::default()
    };
    let mut values = [None, None, None];
    // Without a well-formed subnet the addresses are written against
    // 10.0.0.0/24 (the parse fails on the subnet anyway).
    let fallback = Geometry {
        family: Family::V4,
        network: 0x0a00_0000,
        last: 0x0a00_00ff,
    };
    let g = cidr.as_ref().map_or(&fallback, |c| &c.geo);
    for (i, field) in [&input.start, &input.end, &input.gateway]
        .into_iter()
        .enumerate()
    {
        if let Some(a) = field {
            let (text, v) = g.text(a);
            values[i] = Some(v);
            match i {
                0 => spec.range_start = Some(text),
                1 => spec.range_end = Some(text),
                _ => spec.gateway = Some(text),
            }
        }
    }
    for (sel, addrs) in input.stages.iter().take(4) {
        let list = spec.stages.entry(stage_name(*sel)).or_default();
        list.extend(addrs.iter().take(16).map(|a| g.text(a).0));
    }
    SpecModel { spec, cidr, values }
}

/// What the model expects of a spec with a well-formed CIDR subnet.
struct Expected {
    /// The subnet is acceptable: no host bits, at least 4 addresses, and
    /// (IPv6) no address of `::/96` above `::1` or of `::ffff:0:0/96`.
    subnet_ok: bool,
    /// `start`, `end`, `gateway` as the parser must set them (host-local's
    /// defaults when not given); `None` if the field must be refused.
    start: Option<u128>,
    end: Option<u128>,
    gateway: Option<u128>,
    /// Some field is an arbitrary string: the model does not predict it.
    raw_field: bool,
    /// Every field is acceptable and `start <= end`.
    fields_ok: bool,
}

impl Expected {
    fn new(input: &RangeInput, cidr: &Cidr, values: [Option<Option<u128>>; 3]) -> Expected {
        let g = &cidr.geo;
        let width = g.family.bits();
        // The IPv4-embedding blocks, as inclusive integer intervals.
        let embeds = g.family == Family::V6
            && [
                (2u128, 0xffff_ffffu128),
                (0xffff_0000_0000, 0xffff_ffff_ffff),
            ]
            .iter()
            .any(|&(lo, hi)| g.network <= hi && lo <= g.last);
        let subnet_ok = !cidr.host_bits && u32::from(cidr.prefix) + 2 <= width && !embeds;
        let inside = |v: u128| g.network <= v && v <= g.last;
        // Model of each field: Some(value) if acceptable, None if refused.
        let field = |given: Option<Option<u128>>, default: u128| -> Option<u128> {
            match given {
                None => Some(default),
                Some(Some(v)) if inside(v) => Some(v),
                Some(_) => None,
            }
        };
        let default_end = match g.family {
            Family::V4 => g.last.wrapping_sub(1),
            Family::V6 => g.last,
        };
        let start = field(values[0], g.network.wrapping_add(2));
        let end = field(values[1], default_end);
        let gateway = field(values[2], g.network.wrapping_add(1));
        let raw_field = [&input.start, &input.end, &input.gateway]
            .iter()
            .any(|f| matches!(f, Some(AddrInput::Raw(_))));
        let fields_ok = matches!((start, end, gateway), (Some(s), Some(e), Some(_)) if s <= e);
        Expected {
            subnet_ok,
            start,
            end,
            gateway,
            raw_field,
            fields_ok,
        }
    }
}

/// Target `range`: builds a [`RangeSpec`] from `input`, parses it, and
/// checks the result against a model: acceptance for the structural rules
/// (subnet size, host bits, fields inside the subnet, `start <= end`),
/// host-local's defaults, `to_u128` / `from_u128` round trips, and
/// `is_allocatable` at probe addresses.
pub fn range(input: &RangeInput) {
    let SpecModel { spec, cidr, values } = build_spec(input);
    let parsed = Range::parse(&spec);
    let Some(cidr) = cidr else {
        if let Ok(r) = &parsed {
            check_range(r);
        }
        return;
    };
    let want = Expected::new(input, &cidr, values);
    match &parsed {
        Ok(r) => check_accepted(r, &spec, &cidr.geo, &want, &input.probes),
        Err(e) => {
            let _ = e.to_string();
            let stages_empty = spec.stages.values().all(Vec::is_empty);
            let stage_names_ok = !spec.stages.contains_key("");
            if want.subnet_ok && !want.raw_field && want.fields_ok && stages_empty && stage_names_ok
            {
                panic!("refused {spec:?}: {e}");
            }
        }
    }
}

/// An accepted range agrees with the model: the subnet was acceptable, the
/// range invariants hold, fields are where the model puts them, addresses
/// round-trip, and `is_allocatable` / `contains` answer as the model does.
fn check_accepted(r: &Range, spec: &RangeSpec, g: &Geometry, want: &Expected, probes: &[u128]) {
    assert!(want.subnet_ok, "accepted bad subnet {:?}: {r}", spec.subnet);
    check_range(r);
    assert_eq!(r.family(), g.family);
    assert_eq!(r.network(), g.network);
    for (what, ip) in [("start", r.start), ("end", r.end), ("gateway", r.gateway)] {
        assert_eq!(
            from_u128(g.family, to_u128(ip)),
            Some(ip),
            "{what} round trip"
        );
    }
    if !want.raw_field {
        assert!(want.fields_ok, "accepted {spec:?} as {r}");
        assert_eq!(Some(r.first()), want.start, "start of {spec:?}");
        assert_eq!(Some(r.last()), want.end, "end of {spec:?}");
        assert_eq!(
            Some(to_u128(r.gateway)),
            want.gateway,
            "gateway of {spec:?}"
        );
    }
    check_probes(r, g, probes);
    if let Ok(set) = RangeSet::new(vec![r.clone()]) {
        assert_eq!(set.family(), g.family);
    } else {
        panic!("a single valid range makes an invalid set: {r}");
    }
}

/// `is_allocatable`, `is_allocatable_u128` and `contains` at the first 32
/// probes and next to every edge (first, last, gateway, network, last
/// address of the subnet).
fn check_probes(r: &Range, g: &Geometry, probes: &[u128]) {
    let broadcast = (g.family == Family::V4).then_some(g.last);
    let gw = to_u128(r.gateway);
    let probes = probes.iter().take(32).map(|o| g.at(*o));
    let edges = [r.first(), r.last(), gw, g.network, g.last];
    let near = edges
        .iter()
        .flat_map(|v| [v.wrapping_sub(1), *v, v.wrapping_add(1)])
        .map(|v| v & g.width_mask());
    for v in probes.chain(near) {
        let model =
            r.first() <= v && v <= r.last() && v != gw && v != g.network && Some(v) != broadcast;
        assert_eq!(
            r.is_allocatable_u128(v),
            model,
            "is_allocatable_u128({v:#x}) in {r}"
        );
        if let Some(ip) = from_u128(g.family, v) {
            assert_eq!(to_u128(ip), v);
            assert_eq!(r.is_allocatable(ip), model, "is_allocatable({ip}) in {r}");
            assert_eq!(
                r.contains(ip),
                r.first() <= v && v <= r.last(),
                "contains({ip})"
            );
        }
    }
}
