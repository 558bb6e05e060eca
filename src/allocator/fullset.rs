//! The full-chunk set (`{p}/{net}/full/{family}/{region}`): a roaring
//! treemap of the low 64 bits of indices of chunks that have no free address
//! for ordinary (unstaged) pods. Written only when a chunk turns full or
//! stops being full. It is *advisory*: allocation skips listed chunks on its
//! first pass and reads them on a second pass before reporting exhaustion,
//! so a stale entry (e.g. after a range was widened) costs time, never an
//! address; one that does not decode is read as empty. Why it exists and
//! what it saves: `ARCHITECTURE.md`, "Keyspace".

use roaring::RoaringTreemap;

/// Encodes a full-chunk set (roaring portable treemap serialization).
pub fn encode(set: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(set.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = set.serialize_into(&mut out);
    out
}

/// Decodes a full-chunk set; `Err` describes the corruption.
pub fn decode(bytes: &[u8]) -> Result<RoaringTreemap, String> {
    RoaringTreemap::deserialize_from(bytes).map_err(|e| e.to_string())
}

/// The first index in `lo..=hi` that `set` does not hold, if any. Costs
/// O(log(hi - lo)) rank queries, so skipping a long run of full chunks does
/// not cost one step per chunk.
pub fn first_absent(set: &RoaringTreemap, lo: u64, hi: u64) -> Option<u64> {
    if lo > hi {
        return None;
    }
    if !set.contains(lo) {
        return Some(lo);
    }
    let before = if lo == 0 { 0 } else { set.rank(lo - 1) };
    // Whether every index of lo..=x is in the set.
    let full_through = |x: u64| set.rank(x) - before == x - lo + 1;
    if full_through(hi) {
        return None;
    }
    // Invariant: full_through(a) and !full_through(b).
    let (mut a, mut b) = (lo, hi);
    while b - a > 1 {
        let m = a + (b - a) / 2;
        if full_through(m) {
            a = m;
        } else {
            b = m;
        }
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_absent_matches_a_scan() {
        let mut s = RoaringTreemap::new();
        s.insert_range(10..500);
        s.insert(501);
        s.insert(u64::MAX);
        for (lo, hi) in [
            (0, 5),
            (10, 600),
            (10, 499),
            (10, 500),
            (501, 501),
            (502, 9),
            (u64::MAX - 1, u64::MAX),
            (u64::MAX, u64::MAX),
        ] {
            let want = (lo..=hi).find(|x| !s.contains(*x));
            assert_eq!(first_absent(&s, lo, hi), want, "{lo}..={hi}");
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let mut s = RoaringTreemap::new();
        s.insert(3);
        s.insert(u64::MAX);
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert!(decode(b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage").is_err());
    }
}
