//! Fuzz target bodies, as plain functions over [`arbitrary`]-derived inputs,
//! so that libFuzzer (`fuzz/fuzz_targets/*.rs`, run with `cargo fuzz`) and
//! ordinary tests (`tests/fuzz_corpora.rs`, which replays the checked-in
//! seed corpora and a few thousand generated inputs) run the same checks.
//!
//! Each body panics, with a message naming the broken property, only when
//! the code under test misbehaves; any input, valid or not, is fair.
//!
//! | target | input | property |
//! |---|---|---|
//! | [`config`] | bytes: a network config | parse + validate never panics; accepted ranges obey the range invariants |
//! | [`range`] | [`RangeInput`] | `Range::parse` never panics and agrees with a small model |
//! | [`codec`] | bytes | `decode` never panics; what decodes re-encodes canonically; structured chunks round-trip in every encoding |
//! | [`allocator`] | [`AllocatorInput`] | op sequences with injected store faults match a model; `check()` stays clean |
//!
//! Not part of the supported API (hidden from the docs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use arbitrary::{Arbitrary, Unstructured};

use crate::allocator::{
    AllocError, AllocRequest, Allocator, Network, Options, OwnerId, DEFAULT_PREFIX,
};
use crate::bitmap::Bitmap;
use crate::cni::config::NetConf;
use crate::codec::{self, Chunk, Encoding, HEADER_LEN, MAGIC};
use crate::range::{from_u128, to_u128, Family, Range, RangeSet, RangeSpec};
use crate::store::memory::{Fault, MemoryStore};

/// Builds `T` from raw fuzzer bytes exactly as `libfuzzer-sys`'s typed
/// `fuzz_target!` does (`arbitrary_take_rest`); `None` if the bytes do not
/// make a `T`.
pub fn from_bytes<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

// ---------------------------------------------------------------------------
// config

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

// ---------------------------------------------------------------------------
// range

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

/// Structured input of the [`range`] target.
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

/// The [`RangeSpec`] an input describes, plus the model's view of it when
/// the subnet is a well-formed CIDR: geometry and the numeric value of each
/// address field (`Some(None)`: given but not a same-family address).
type SpecModel = (
    RangeSpec,
    Option<(Geometry, u8, bool)>,
    [Option<Option<u128>>; 3],
);

fn build_spec(input: &RangeInput) -> SpecModel {
    let (subnet, geo) = match &input.subnet {
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
            let host_bits = written != network;
            (
                format!("{}/{prefix}", ip_text(family, written)),
                Some((geo, prefix as u8, host_bits)),
            )
        }
        SubnetInput::Raw(s) => (s.clone(), None),
    };
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
    let g = geo.as_ref().map_or(&fallback, |(g, _, _)| g);
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
    (spec, geo, values)
}

/// Target `range`: builds a [`RangeSpec`] from `input`, parses it, and
/// checks the result against a model: acceptance for the structural rules
/// (subnet size, host bits, fields inside the subnet, `start <= end`),
/// host-local's defaults, `to_u128` / `from_u128` round trips, and
/// `is_allocatable` at probe addresses.
pub fn range(input: &RangeInput) {
    let (spec, geo, values) = build_spec(input);
    let parsed = Range::parse(&spec);
    let Some((g, prefix, host_bits)) = geo else {
        if let Ok(r) = &parsed {
            check_range(r);
        }
        return;
    };
    let width = g.family.bits();
    let subnet_ok = !host_bits && u32::from(prefix) + 2 <= width;
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

    match &parsed {
        Ok(r) => {
            assert!(subnet_ok, "accepted bad subnet {:?}: {r}", spec.subnet);
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
            if !raw_field {
                assert!(fields_ok, "accepted {spec:?} as {r}");
                assert_eq!(Some(r.first()), start, "start of {spec:?}");
                assert_eq!(Some(r.last()), end, "end of {spec:?}");
                assert_eq!(Some(to_u128(r.gateway)), gateway, "gateway of {spec:?}");
            }
            let broadcast = (g.family == Family::V4).then_some(g.last);
            let gw = to_u128(r.gateway);
            let probes = input.probes.iter().take(32).map(|o| g.at(*o));
            let edges = [r.first(), r.last(), gw, g.network, g.last];
            let near = edges
                .iter()
                .flat_map(|v| [v.wrapping_sub(1), *v, v.wrapping_add(1)])
                .map(|v| v & g.width_mask());
            for v in probes.chain(near) {
                let model = r.first() <= v
                    && v <= r.last()
                    && v != gw
                    && v != g.network
                    && Some(v) != broadcast;
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
            if let Ok(set) = RangeSet::new(vec![r.clone()]) {
                assert_eq!(set.family(), g.family);
            } else {
                panic!("a single valid range makes an invalid set: {r}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
            let stages_empty = spec.stages.values().all(Vec::is_empty);
            let stage_names_ok = !spec.stages.contains_key("");
            if subnet_ok && !raw_field && fields_ok && stages_empty && stage_names_ok {
                panic!("refused {spec:?}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// codec

/// How a structured chunk's bits are filled.
#[derive(Arbitrary, Clone, Debug)]
pub enum Fill {
    /// No bit set.
    Empty,
    /// Every bit set.
    Full,
    /// These positions (modulo 2^k).
    Sparse(Vec<u32>),
    /// Runs `(start, len)` (modulo 2^k, clipped).
    Runs(Vec<(u32, u16)>),
    /// These words, repeated over the whole chunk.
    Words(Vec<u64>),
}

/// A structured chunk for the round-trip half of the [`codec`] target.
#[derive(Arbitrary, Clone, Debug)]
pub struct ChunkInput {
    /// k is `1 + k % 16`.
    pub k: u8,
    /// The bits.
    pub fill: Fill,
    /// Cursor, reduced modulo 2^k.
    pub cursor: u32,
    /// Positions cleared after filling (modulo 2^k).
    pub holes: Vec<u32>,
}

impl ChunkInput {
    /// The chunk this input describes.
    pub fn chunk(&self) -> Chunk {
        let k = 1 + self.k % 16;
        let n = 1usize << k;
        // Whole-word fills are built as words: cheap even for k = 16.
        let word_fill = |f: &dyn Fn(usize) -> u64| {
            let words: Vec<u64> = (0..n.div_ceil(64))
                .map(|w| f(w) & if n < 64 { (1u64 << n) - 1 } else { u64::MAX })
                .collect();
            Bitmap::from_words(n, &words).unwrap_or_else(|| Bitmap::new(n))
        };
        let mut bits = match &self.fill {
            Fill::Full => word_fill(&|_| u64::MAX),
            Fill::Words(words) if !words.is_empty() => word_fill(&|w| words[w % words.len()]),
            _ => Bitmap::new(n),
        };
        match &self.fill {
            Fill::Sparse(v) => v.iter().take(256).for_each(|&i| {
                bits.set(i as usize % n);
            }),
            Fill::Runs(runs) => {
                for &(start, len) in runs.iter().take(64) {
                    let lo = start as usize % n;
                    let hi = (lo + usize::from(len)).min(n - 1);
                    bits.set_range(lo, hi);
                }
            }
            Fill::Empty | Fill::Full | Fill::Words(_) => {}
        }
        for &h in self.holes.iter().take(256) {
            bits.clear(h as usize % n);
        }
        Chunk {
            bits,
            cursor: self.cursor % (1u32 << k),
        }
    }
}

/// `bytes` with a correct magic, version, encoding tag (modulo 4), k (into
/// 1..=24), zero flags, cursor (modulo 2^k), payload length and checksum,
/// so that arbitrary payloads reach the payload decoders. `None` if too
/// short for a header.
pub fn frame(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let mut out = bytes.to_vec();
    out[..4].copy_from_slice(&MAGIC);
    out[4] = codec::FORMAT_VERSION;
    out[5] %= 4;
    out[6] = 1 + out[6] % codec::MAX_CHUNK_BITS;
    out[7] = 0;
    let cap = 1u32 << out[6];
    let cursor = u32::from_le_bytes([out[12], out[13], out[14], out[15]]) % cap;
    out[12..16].copy_from_slice(&cursor.to_le_bytes());
    let len = u32::try_from(out.len() - HEADER_LEN).ok()?;
    out[16..20].copy_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..20]);
    h.update(&out[HEADER_LEN..]);
    out[20..24].copy_from_slice(&h.finalize().to_le_bytes());
    Some(out)
}

/// Decodes `bytes`; if they decode, checks the chunk re-encodes to bytes
/// that decode back to it, canonically.
pub fn check_decode(bytes: &[u8]) {
    let Ok(chunk) = codec::decode(bytes) else {
        return;
    };
    let k = chunk
        .validate()
        .unwrap_or_else(|e| panic!("decoded an invalid chunk: {e}"));
    let header = codec::header_only(bytes).unwrap_or_else(|e| panic!("header_only: {e}"));
    assert_eq!(header.chunk_bits, k);
    assert_eq!(header.population, chunk.population());
    assert_eq!(header.cursor, chunk.cursor);
    check_roundtrip(&chunk);
}

/// `decode(encode_as(c, e)) == c` for every encoding, `decode(encode(c)) ==
/// c`, and `encode` is canonical.
pub fn check_roundtrip(chunk: &Chunk) {
    let k = chunk
        .validate()
        .unwrap_or_else(|e| panic!("invalid test chunk: {e}"));
    for e in Encoding::ALL {
        let bytes = codec::encode_as(chunk, e);
        match codec::decode_expecting(&bytes, k) {
            Ok(back) => assert_eq!(&back, chunk, "round trip through {e}"),
            Err(err) => panic!("encode_as({e}) does not decode: {err}"),
        }
    }
    let once = codec::encode(chunk);
    let back = codec::decode(&once).unwrap_or_else(|e| panic!("encode does not decode: {e}"));
    assert_eq!(&back, chunk, "round trip through encode");
    assert_eq!(codec::encode(&back), once, "encode is not canonical");
}

/// Target `codec`: `bytes` as chunk bytes (as is, and re-framed with
/// [`frame`] so the payload decoders see them), then the same bytes as a
/// [`ChunkInput`] round-tripped through every encoding.
pub fn codec(bytes: &[u8]) {
    check_decode(bytes);
    if let Some(framed) = frame(bytes) {
        check_decode(&framed);
    }
    if let Some(input) = from_bytes::<ChunkInput>(bytes) {
        check_roundtrip(&input.chunk());
    }
}

// ---------------------------------------------------------------------------
// allocator

/// A store fault to inject before an operation.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum FaultInput {
    /// [`Fault::FailBeforeCommit`].
    BeforeCommit,
    /// [`Fault::FailAfterCommit`].
    AfterCommit,
    /// [`Fault::SpuriousConflict`].
    Conflict,
    /// [`Fault::FailRead`].
    Read,
}

impl From<FaultInput> for Fault {
    fn from(f: FaultInput) -> Fault {
        match f {
            FaultInput::BeforeCommit => Fault::FailBeforeCommit,
            FaultInput::AfterCommit => Fault::FailAfterCommit,
            FaultInput::Conflict => Fault::SpuriousConflict,
            FaultInput::Read => Fault::FailRead,
        }
    }
}

/// One allocator operation. Owners are `owner % 16`; stages index
/// `sandbox`, `smallflow`, `other`; static addresses index the network's
/// probe list (see [`AllocatorInput`]).
#[derive(Arbitrary, Clone, Debug)]
pub enum OpInput {
    /// ADD, optionally with a stage and a static address.
    Alloc {
        /// Owner.
        owner: u8,
        /// Deploy stage.
        stage: Option<u8>,
        /// Static address (index into the probe list).
        ip: Option<u8>,
    },
    /// DEL.
    Release {
        /// Owner.
        owner: u8,
    },
    /// Release by address (index into the probe list).
    ReleaseIp {
        /// Address.
        ip: u8,
    },
    /// GC keeping these owners.
    Gc {
        /// Owners to keep.
        keep: Vec<u8>,
    },
}

/// One step: faults queued, then an operation.
#[derive(Arbitrary, Clone, Debug)]
pub struct StepInput {
    /// Faults (at most 3 are used).
    pub faults: Vec<FaultInput>,
    /// The operation.
    pub op: OpInput,
}

/// Structured input of the [`allocator`] target.
#[derive(Arbitrary, Clone, Debug)]
pub struct AllocatorInput {
    /// Network shape, modulo the number of shapes (see [`shape`]).
    pub shape: u8,
    /// k = 6 if true, else 10.
    pub small_chunks: bool,
    /// The operations (at most 48 are run).
    pub steps: Vec<StepInput>,
}

const OWNERS: u8 = 16;
const STAGES: [&str; 3] = ["sandbox", "smallflow", "other"];

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
/// broadcast lie outside the other ranges of its set.
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

/// The [`Network`] of [`shape`] `n`; `None` only if a shape fails to parse
/// (a bug in the range module, reported by the caller).
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

fn owner_id(n: u8) -> OwnerId {
    OwnerId {
        container_id: format!("c{n}"),
        ifname: "eth0".into(),
    }
}

/// The model: who holds which addresses (one per set, in set order).
struct Model<'n> {
    net: &'n Network,
    held: BTreeMap<u8, Vec<IpAddr>>,
}

impl Model<'_> {
    fn taken(&self) -> BTreeSet<IpAddr> {
        self.held.values().flatten().copied().collect()
    }

    fn holder(&self, ip: IpAddr) -> Option<u8> {
        self.held
            .iter()
            .find(|(_, ips)| ips.contains(&ip))
            .map(|(o, _)| *o)
    }

    /// Free addresses of set `i` a pod of `stage` may get dynamically.
    fn pool(&self, i: usize, stage: Option<&str>) -> Vec<IpAddr> {
        let set = &self.net.sets[i];
        let staged = stage.filter(|s| set.has_stage(s));
        let taken = self.taken();
        let mut out = Vec::new();
        for r in set.ranges() {
            for v in r.first()..=r.last() {
                let Some(ip) = from_u128(r.family(), v) else {
                    continue;
                };
                let ok = r.is_allocatable(ip)
                    && !taken.contains(&ip)
                    && match staged {
                        Some(s) => r.stage_of(ip) == Some(s),
                        None => r.stage_of(ip).is_none(),
                    };
                if ok {
                    out.push(ip);
                }
            }
        }
        out
    }

    /// Whether set `i` may grant a static request for `ip` by a pod of
    /// `stage`.
    fn static_ok(&self, i: usize, ip: IpAddr, stage: Option<&str>) -> bool {
        self.net.sets[i].find(ip).is_some_and(|(_, r)| {
            r.is_allocatable(ip)
                && r.stage_of(ip).is_none_or(|s| Some(s) == stage)
                && !self.taken().contains(&ip)
        })
    }
}

/// Addresses static requests and release-by-address pick from: every
/// address of every subnet of the network (in range or not).
fn probe_list(net: &Network) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for set in &net.sets {
        for r in set.ranges() {
            let lo = to_u128(r.subnet.network());
            let hi = to_u128(r.subnet.broadcast()).min(lo + 63);
            out.extend((lo..=hi).filter_map(|v| from_u128(r.family(), v)));
        }
    }
    out
}

/// Target `allocator`: runs `input`'s steps on a fresh [`MemoryStore`]
/// with the given faults injected before each step, against a model. After
/// every step: the owner records equal the model's holdings, no address is
/// held twice, and [`Allocator::check`] is clean with exactly the model's
/// number of allocated addresses. Dynamic ADDs get a free address of the
/// right pool, exhaustion is reported exactly when the pool is empty, static
/// ADDs are granted exactly when the model allows, releases free exactly
/// what was held.
///
/// With the `fuzz-paused-time` feature (enabled by `fuzz/` and this crate's
/// tests) the body runs on tokio's paused clock: the allocator's retry
/// back-off sleeps advance virtual time at once instead of sleeping, so
/// injected faults cost no real time. Nothing else changes: the allocator's
/// budget is measured with `std::time::Instant`, which keeps running.
pub fn allocator(input: &AllocatorInput) {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    #[cfg(feature = "fuzz-paused-time")]
    builder.start_paused(true);
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    rt.block_on(run_allocator(input));
}

async fn run_allocator(input: &AllocatorInput) {
    let k = if input.small_chunks { 6 } else { 10 };
    let net = shape_network(input.shape, k).unwrap_or_else(|e| panic!("shape: {e}"));
    let probes = probe_list(&net);
    let store = MemoryStore::new();
    let options = Options {
        node_seed: u64::from(input.shape),
        ..Options::default()
    };
    let a = Allocator::new(&store, net.clone(), options)
        .unwrap_or_else(|e| panic!("Allocator::new: {e}"));
    let mut m = Model {
        net: &net,
        held: BTreeMap::new(),
    };
    for step in input.steps.iter().take(48) {
        store.inject(step.faults.iter().take(3).map(|f| Fault::from(*f)));
        match &step.op {
            OpInput::Alloc { owner, stage, ip } => {
                let o = owner % OWNERS;
                let stage = stage.map(|s| STAGES[usize::from(s) % STAGES.len()]);
                let ip = ip.map(|i| probes[usize::from(i) % probes.len()]);
                alloc_step(&a, &mut m, o, stage, ip).await;
            }
            OpInput::Release { owner } => {
                let o = owner % OWNERS;
                let rel = a
                    .release(&owner_id(o))
                    .await
                    .unwrap_or_else(|e| panic!("release c{o}: {e}"));
                let had = m.held.remove(&o);
                // A lost reply makes the retry find the owner already gone.
                if let Some(rec) = rel {
                    assert_eq!(Some(rec.ips), had, "release c{o} returned another record");
                }
            }
            OpInput::ReleaseIp { ip } => {
                let ip = probes[usize::from(*ip) % probes.len()];
                let rel = match a.release_ip(ip).await {
                    Ok(r) => r,
                    // The holder lookup is one read, not retried.
                    Err(e) if e.is_transient() => {
                        store.clear_faults();
                        a.release_ip(ip)
                            .await
                            .unwrap_or_else(|e| panic!("release_ip {ip}: {e}"))
                    }
                    Err(e) => panic!("release_ip {ip}: {e}"),
                };
                let holder = m.holder(ip);
                if let Some(o) = holder {
                    let had = m.held.remove(&o);
                    if let Some(rec) = rel {
                        assert_eq!(rec.container_id, format!("c{o}"));
                        assert_eq!(Some(rec.ips), had);
                    }
                } else {
                    assert!(
                        rel.is_none(),
                        "release_ip {ip} freed {rel:?}, held by nobody"
                    );
                }
            }
            OpInput::Gc { keep } => {
                let keep: Vec<u8> = keep.iter().take(16).map(|o| o % OWNERS).collect();
                let valid: Vec<OwnerId> = keep.iter().map(|o| owner_id(*o)).collect();
                if let Err(e) = a.gc(&valid).await {
                    // Listing owners is one read, not retried.
                    assert!(e.is_transient(), "gc: {e}");
                    store.clear_faults();
                    a.gc(&valid)
                        .await
                        .unwrap_or_else(|e| panic!("gc retry: {e}"));
                }
                m.held.retain(|o, _| keep.contains(o));
            }
        }
        store.clear_faults();
        check_state(&a, &m).await;
    }
}

/// Why the model expects an ADD to fail.
#[derive(Debug, PartialEq, Eq)]
enum Failing {
    /// The requested address cannot be given.
    Static,
    /// Set `i` has no free address for the pod.
    Set(usize),
}

async fn alloc_step(
    a: &Allocator<&MemoryStore>,
    m: &mut Model<'_>,
    o: u8,
    stage: Option<&str>,
    ip: Option<IpAddr>,
) {
    let req = AllocRequest {
        owner: owner_id(o),
        stage: stage.map(str::to_string),
        requested: ip.into_iter().collect(),
        ..AllocRequest::default()
    };
    // The model's prediction: a requested address outside every range is
    // refused up front; otherwise it goes to the first set holding it, and
    // the first set that cannot give an address decides the error.
    let sets = m.net.sets.len();
    let static_set = ip.and_then(|ip| m.net.sets.iter().position(|s| s.find(ip).is_some()));
    let mut failing = None;
    if ip.is_some() && static_set.is_none() {
        failing = Some(Failing::Static);
    }
    for i in 0..sets {
        if failing.is_some() {
            break;
        }
        let ok = match ip.filter(|_| static_set == Some(i)) {
            Some(ip) => m.static_ok(i, ip, stage),
            None => !m.pool(i, stage).is_empty(),
        };
        if !ok {
            failing = Some(if static_set == Some(i) {
                Failing::Static
            } else {
                Failing::Set(i)
            });
        }
    }
    let result = a.allocate(&req).await;
    if let Some(prev) = m.held.get(&o) {
        match result {
            Ok(got) => {
                let ips: Vec<IpAddr> = got.assigned.iter().map(|x| x.ip).collect();
                assert_eq!(&ips, prev, "idempotent ADD of c{o}");
            }
            Err(e) => panic!("ADD of existing c{o} failed: {e}"),
        }
        return;
    }
    match result {
        Ok(got) => {
            assert_eq!(
                failing, None,
                "ADD c{o} {stage:?} {ip:?} granted, model says no: {got:?}"
            );
            assert_eq!(got.assigned.len(), sets);
            let mut ips = Vec::new();
            for (i, x) in got.assigned.iter().enumerate() {
                assert_eq!(x.set, i);
                match ip.filter(|_| static_set == Some(i)) {
                    Some(want) => assert_eq!(x.ip, want, "static ADD c{o}"),
                    None => {
                        let pool = m.pool(i, stage);
                        assert!(
                            pool.contains(&x.ip),
                            "{} not free for {stage:?} in set {i}",
                            x.ip
                        );
                    }
                }
                ips.push(x.ip);
            }
            m.held.insert(o, ips);
        }
        Err(AllocError::Exhausted { set, .. } | AllocError::StageExhausted { set, .. }) => {
            assert_eq!(
                failing,
                Some(Failing::Set(set)),
                "ADD c{o} {stage:?}: exhausted set {set}"
            );
        }
        Err(AllocError::RequestedUnavailable { ip: bad, reason }) => {
            assert_eq!(Some(bad), ip, "refused an address not asked for");
            assert_eq!(
                failing,
                Some(Failing::Static),
                "static {bad} refused ({reason}) but model grants"
            );
        }
        Err(e) => panic!("ADD c{o} {stage:?} {ip:?}: unexpected error {e}"),
    }
}

async fn check_state(a: &Allocator<&MemoryStore>, m: &Model<'_>) {
    let recs = a.owners().await.unwrap_or_else(|e| panic!("owners: {e}"));
    let mut seen: HashMap<IpAddr, String> = HashMap::new();
    assert_eq!(recs.len(), m.held.len(), "owner records vs model");
    for r in &recs {
        let o: Option<u8> = r
            .container_id
            .strip_prefix('c')
            .and_then(|s| s.parse().ok());
        assert_eq!(
            o.and_then(|o| m.held.get(&o)),
            Some(&r.ips),
            "record {}",
            r.container_id
        );
        for ip in &r.ips {
            if let Some(other) = seen.insert(*ip, r.container_id.clone()) {
                panic!("{ip} held by {other} and {}", r.container_id);
            }
        }
    }
    let report = a.check().await.unwrap_or_else(|e| panic!("check: {e}"));
    assert!(report.is_clean(), "check: {report:?}");
    let held: usize = m.held.values().map(Vec::len).sum();
    assert_eq!(report.allocated, held as u64, "allocated bits vs model");
}
