//! The full-set (`{p}/{net}/full/{family}/{region}`): a roaring treemap of the
//! low 64 bits of indices of chunks that have no free address for ordinary
//! (unstaged) pods. Written only when a chunk turns full or stops being full.
//! It is a *hint*: allocation skips listed chunks on its first pass and reads
//! them on a second pass before reporting exhaustion, so a stale entry (e.g.
//! after a range was widened) costs time, never an address.

use roaring::RoaringTreemap;

/// Encodes a full-set (roaring portable treemap serialization).
pub fn encode(set: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(set.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = set.serialize_into(&mut out);
    out
}

/// Decodes a full-set; `Err` describes the corruption.
pub fn decode(bytes: &[u8]) -> Result<RoaringTreemap, String> {
    RoaringTreemap::deserialize_from(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut s = RoaringTreemap::new();
        s.insert(3);
        s.insert(u64::MAX);
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert!(decode(b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage").is_err());
    }
}
