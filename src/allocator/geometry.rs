//! Which chunks a range set covers, in which order allocation visits them,
//! and which addresses of a chunk a request may take (the *allowed mask*).
//!
//! Pure: everything is computed from the validated ranges and k. A range
//! set's chunks are kept as merged intervals of chunk indices
//! (`address >> k`), so an IPv6 /64 costs two integers, not 2^56 entries at
//! k = 8. How the search walks them (search position, start window, node
//! seed): `ARCHITECTURE.md`, "The planner".

use std::net::IpAddr;

use crate::bitmap::Bitmap;
use crate::range::{to_u128, RangeSet};

/// The chunks a request may allocate from, in visiting order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// Sorted, disjoint, non-adjacent inclusive intervals of chunk indices.
    Intervals(Vec<(u128, u128)>),
    /// Sorted distinct chunk indices (staged requests: the chunks holding
    /// the stage's reserved addresses).
    List(Vec<u128>),
}

impl Candidates {
    /// Number of chunks.
    pub fn count(&self) -> u128 {
        match self {
            Candidates::Intervals(iv) => iv.iter().map(|(lo, hi)| hi - lo + 1).sum(),
            Candidates::List(l) => l.len() as u128,
        }
    }

    /// The chunk index at ordinal `ord` (`ord < count()`).
    pub fn nth(&self, mut ord: u128) -> Option<u128> {
        match self {
            Candidates::Intervals(iv) => {
                for (lo, hi) in iv {
                    let n = hi - lo + 1;
                    if ord < n {
                        return Some(lo + ord);
                    }
                    ord -= n;
                }
                None
            }
            Candidates::List(l) => usize::try_from(ord).ok().and_then(|i| l.get(i).copied()),
        }
    }

    /// The ordinal of chunk `index`, if it is a candidate.
    pub fn ordinal_of(&self, index: u128) -> Option<u128> {
        match self {
            Candidates::Intervals(iv) => {
                let mut before = 0u128;
                for (lo, hi) in iv {
                    if *lo <= index && index <= *hi {
                        return Some(before + (index - lo));
                    }
                    before += hi - lo + 1;
                }
                None
            }
            Candidates::List(l) => l.binary_search(&index).ok().map(|i| i as u128),
        }
    }

    /// The ordinal of the first candidate chunk above `index`, if any.
    pub fn ordinal_after(&self, index: u128) -> Option<u128> {
        match self {
            Candidates::Intervals(iv) => {
                let mut before = 0u128;
                for (lo, hi) in iv {
                    if index < *lo {
                        return Some(before);
                    }
                    if index < *hi {
                        return Some(before + (index + 1 - lo));
                    }
                    before += hi - lo + 1;
                }
                None
            }
            Candidates::List(l) => {
                let i = l.partition_point(|x| *x <= index);
                (i < l.len()).then_some(i as u128)
            }
        }
    }

    /// The last chunk index of the run that holds `index` (for a bounded
    /// range read that stays inside the set's chunks).
    pub fn run_end(&self, index: u128) -> u128 {
        match self {
            Candidates::Intervals(iv) => iv
                .iter()
                .find(|(lo, hi)| *lo <= index && index <= *hi)
                .map_or(index, |(_, hi)| *hi),
            Candidates::List(_) => index,
        }
    }
}

/// Chunk index of an address.
pub fn chunk_of(ip: IpAddr, k: u8) -> u128 {
    to_u128(ip) >> k
}

/// Bit of an address inside its chunk.
pub fn bit_of(ip: IpAddr, k: u8) -> usize {
    (to_u128(ip) & ((1u128 << k) - 1)) as usize
}

/// Chunks of a set for ordinary (unstaged) requests: those holding an
/// address of some range's `start..=end` that no `exclude` entry covers
/// (so an excluded /65 of a /64 is never walked). O(ranges + entries).
pub fn normal_candidates(set: &RangeSet, k: u8) -> Candidates {
    let iv: Vec<(u128, u128)> = set
        .ranges()
        .iter()
        .flat_map(|r| r.unexcluded_runs(r.first(), r.last()))
        .map(|(lo, hi)| (lo >> k, hi >> k))
        .collect();
    Candidates::Intervals(crate::range::merge_intervals(iv))
}

/// Chunks holding the reserved addresses of `stage` in a set.
pub fn staged_candidates(set: &RangeSet, stage: &str, k: u8) -> Candidates {
    let mut l: Vec<u128> = set
        .ranges()
        .iter()
        .filter_map(|r| r.stages.get(stage))
        .flatten()
        .map(|ip| chunk_of(*ip, k))
        .collect();
    l.sort_unstable();
    l.dedup();
    Candidates::List(l)
}

fn in_chunk(ip: IpAddr, index: u128, k: u8) -> Option<usize> {
    (chunk_of(ip, k) == index).then(|| bit_of(ip, k))
}

/// Allowed mask of chunk `index` for ordinary requests on `set`: every
/// address inside some range's `start..=end`, minus its `exclude` entries,
/// minus gateways, network and broadcast addresses, minus every
/// stage-reserved address of the set.
pub fn normal_mask(set: &RangeSet, k: u8, index: u128) -> Bitmap {
    let size = 1usize << k;
    let (base, top) = chunk_bounds(k, index);
    let mut mask = Bitmap::new(size);
    // Only the ranges touching this chunk, and of those only the exclusion
    // entries touching it, are visited; the withheld addresses are one
    // sorted list of the set. So the cost is O(log n + chunk) however many
    // ranges the set has and however large the excluded CIDRs are.
    for r in set.touching(base, top) {
        for (lo, hi) in r.unexcluded_runs(base, top) {
            mask.set_range((lo - base) as usize, (hi - base) as usize);
        }
    }
    for v in set.withheld_in(base, top) {
        mask.clear((v - base) as usize);
    }
    mask
}

/// Whether some range of `set` has an address in chunk `index` (else its
/// [`normal_mask`] there is empty). O(log n).
pub fn touches(set: &RangeSet, k: u8, index: u128) -> bool {
    let (base, top) = chunk_bounds(k, index);
    set.touching(base, top).next().is_some()
}

/// The first and last address (integers) of chunk `index`.
fn chunk_bounds(k: u8, index: u128) -> (u128, u128) {
    let base = index << k;
    (base, base + ((1u128 << k) - 1))
}

/// Allowed mask of chunk `index` for a request of `stage` on `set`: only
/// that stage's reserved addresses (never excluded ones: parsing refuses a
/// reservation that is excluded, and `is_allocatable` checks again).
pub fn staged_mask(set: &RangeSet, stage: &str, k: u8, index: u128) -> Bitmap {
    let mut mask = Bitmap::new(1usize << k);
    for r in set.ranges() {
        for ip in r.stages.get(stage).into_iter().flatten() {
            if let Some(b) = in_chunk(*ip, index, k) {
                if r.is_allocatable(*ip) {
                    mask.set(b);
                }
            }
        }
    }
    mask
}

/// A stable starting ordinal in `0..count` for a node, so nodes start in
/// different chunks and rarely collide.
///
/// One draw serves every range set of the node (the ordinal is the same
/// 128-bit number modulo each set's count): when the counts are powers of
/// two, two nodes whose IPv6 start chunks meet also meet in IPv4, so a
/// dual-stack node collides as often as in its most crowded family, not in
/// both families independently (ARCHITECTURE.md, "Decisions changed by
/// measurement").
pub fn spread(seed: u64, count: u128) -> u128 {
    if count <= 1 {
        return 0;
    }
    let hi = mix(seed);
    let lo = mix(hi ^ 0xd1b5_4a32_d192_ed03);
    ((u128::from(hi) << 64) | u128::from(lo)) % count
}

/// splitmix64's finalizer: a cheap, well-distributed 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable per-node seed: a hash of the host name (FNV-1a), or 0.
pub fn node_seed_from(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Range;

    #[test]
    fn node_seed_hash_is_stable_fnv1a() {
        assert_eq!(node_seed_from(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_seed_from("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(node_seed_from("node-1"), node_seed_from("node-2"));
    }

    fn excluded_set(subnet: &str, exclude: &[&str]) -> RangeSet {
        let spec = crate::range::RangeSpec {
            subnet: subnet.into(),
            exclude: exclude.iter().map(|s| (*s).to_string()).collect(),
            ..Default::default()
        };
        RangeSet::new(vec![Range::parse(&spec).unwrap()]).unwrap()
    }

    #[test]
    fn exclusions_leave_the_mask() {
        let set = excluded_set(
            "10.0.0.0/24",
            &["10.0.0.16/28", "10.0.0.100", "10.0.0.64/27"],
        );
        let k = 6; // chunks of 64: .0-.63, .64-.127, ...
        let c0 = normal_mask(&set, k, 0x0a00_0000 >> k);
        let ones: Vec<usize> = c0.iter_ones().collect();
        let want: Vec<usize> = (2..16).chain(32..64).collect();
        assert_eq!(ones, want);
        let c1 = normal_mask(&set, k, (0x0a00_0040) >> k);
        let ones: Vec<usize> = c1.iter_ones().collect();
        let want: Vec<usize> = (32..64).filter(|b| *b != 36).collect();
        assert_eq!(ones, want);
        // An excluded address is never a free allowed bit; a chunk whose
        // free addresses are all excluded counts as full (what `is_full`
        // checks: no free bit under the mask).
        let set = excluded_set("10.0.0.0/24", &["10.0.0.64/26"]);
        let mask = normal_mask(&set, k, 0x0a00_0040 >> k);
        assert_eq!(mask.count_ones(), 0);
        assert_eq!(Bitmap::new(64).count_free(&mask), 0);
    }

    /// An IPv6 /64 with a /65 and a /66 excluded: masks are built from the
    /// few intervals touching the chunk (O(chunk) by construction; a walk
    /// over the range would not end).
    #[test]
    fn huge_v6_exclusions_cost_a_chunk() {
        let set = excluded_set("fd00::/64", &["fd00::/65", "fd00::8000:0:0:0/66"]);
        let k = 8;
        let boundary = to_u128("fd00::c000:0:0:0".parse().unwrap());
        let inside = normal_mask(&set, k, (boundary >> k) - 1);
        assert_eq!(inside.count_ones(), 0);
        let first_free = normal_mask(&set, k, boundary >> k);
        assert_eq!(first_free.count_ones(), 256);
        let last = normal_mask(&set, k, (boundary >> k) + (1u128 << 54) - 1);
        assert_eq!(last.count_ones(), 256);
        // Candidates skip the excluded quarter-plus-half: one interval.
        let c = normal_candidates(&set, k);
        assert_eq!(
            c,
            Candidates::Intervals(vec![(boundary >> k, ((boundary >> k) + (1u128 << 54) - 1))])
        );
        assert_eq!(c.count(), 1u128 << 54);
        let set = excluded_set("10.0.0.0/24", &["10.0.0.64/26"]);
        assert_eq!(
            normal_candidates(&set, 6),
            Candidates::Intervals(vec![
                (0x0a00_0000 >> 6, 0x0a00_0000 >> 6),
                (0x0a00_0080 >> 6, 0x0a00_00c0 >> 6)
            ])
        );
    }

    #[test]
    fn ordinals_round_trip() {
        let c = Candidates::Intervals(vec![(3, 5), (10, 10), (20, 29)]);
        assert_eq!(c.count(), 14);
        for ord in 0..14 {
            let idx = c.nth(ord).unwrap();
            assert_eq!(c.ordinal_of(idx), Some(ord));
        }
        assert_eq!(c.ordinal_of(6), None);
        assert_eq!(c.ordinal_after(0), Some(0));
        assert_eq!(c.ordinal_after(4), Some(2));
        assert_eq!(c.ordinal_after(6), Some(3));
        assert_eq!(c.ordinal_after(10), Some(4));
        assert_eq!(c.ordinal_after(29), None);
        assert_eq!(Candidates::List(vec![2, 5]).ordinal_after(2), Some(1));
        assert_eq!(Candidates::List(vec![2, 5]).ordinal_after(5), None);
        assert_eq!(c.run_end(21), 29);
    }
}
