//! Property tests: round trips for every encoding, canonical re-encoding,
//! the smallest-encoding choice, and decoding of random and mutated bytes
//! never panicking (with and without a repaired checksum, so mutations reach
//! the payload decoders).

use super::header::checksum;
use super::*;
use proptest::prelude::*;

/// Deterministic xorshift fill of 2^k bits at `permille`/1000 density.
fn chunk_from(k: u8, permille: u32, seed: u64, cursor: u32) -> Chunk {
    let len = 1usize << k;
    let mut bits = Bitmap::new(len);
    let mut s = seed | 1;
    for i in 0..len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if (s % 1000) < u64::from(permille) {
            bits.set(i);
        }
    }
    Chunk {
        bits,
        cursor: cursor % (1u32 << k),
    }
}

fn chunk_strategy() -> impl Strategy<Value = Chunk> {
    let fill = prop_oneof![
        Just(0u32),
        Just(10),
        Just(500),
        Just(990),
        Just(1000),
        0u32..=1000
    ];
    (1u8..=16, fill, any::<u64>(), any::<u32>())
        .prop_map(|(k, permille, seed, cursor)| chunk_from(k, permille, seed, cursor))
}

fn encoding_strategy() -> impl Strategy<Value = Encoding> {
    prop::sample::select(Encoding::ALL.to_vec())
}

/// Rewrites the crc field so a mutated chunk gets past the checksum.
fn repair_crc(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_LEN {
        let crc = checksum(&bytes[..20], &bytes[HEADER_LEN..]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What a successful decode must satisfy.
fn assert_valid(chunk: &Chunk) -> Result<(), TestCaseError> {
    let k = chunk.validate();
    prop_assert!(k.is_ok(), "decoded an invalid chunk: {:?}", k);
    let again = decode(&encode(chunk));
    prop_assert_eq!(again.as_ref(), Ok(chunk));
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { to: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::Flip { at, mask } if n > 0 => bytes[at % n] ^= mask,
        Mutation::Truncate { to } => bytes.truncate(to % (n + 1)),
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Mutation::Remove { at } if n > 0 => {
            bytes.remove(at % n);
        }
        _ => {}
    }
}

proptest! {
    // Each case encodes chunks of up to 2^16 bits several times with zstd.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_encoding_round_trips(chunk in chunk_strategy()) {
        for e in Encoding::ALL {
            let bytes = encode_as(&chunk, e);
            prop_assert_eq!(bytes[5], e.tag());
            let decoded = decode(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(&chunk), "{}", e);
            let h = header_only(&bytes);
            prop_assert_eq!(h.map(|h| h.population), Ok(chunk.population()));
        }
    }

    #[test]
    fn encode_is_canonical_and_smallest(chunk in chunk_strategy()) {
        let bytes = encode(&chunk);
        let decoded = decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&chunk));
        if let Ok(decoded) = decoded {
            prop_assert_eq!(encode(&decoded), bytes.clone());
        }
        // Smallest, and the first of the smallest in tie-break order.
        let sizes: Vec<usize> = Encoding::ALL.iter().map(|&e| encode_as(&chunk, e).len()).collect();
        let best = sizes.iter().copied().min().unwrap_or(0);
        let first = sizes.iter().position(|&s| s == best).unwrap_or(0);
        prop_assert_eq!(bytes.len(), best);
        prop_assert_eq!(bytes[5], Encoding::ALL[first].tag());
        // Any encoding re-encodes to the canonical bytes.
        for e in Encoding::ALL {
            let via = decode(&encode_as(&chunk, e)).map(|c| encode(&c));
            prop_assert_eq!(via, Ok(bytes.clone()));
        }
    }

    #[test]
    fn mutated_chunks_never_panic(
        chunk in chunk_strategy(),
        e in encoding_strategy(),
        mutations in prop::collection::vec(mutation_strategy(), 1..4),
        fix_crc in any::<bool>(),
    ) {
        let mut bytes = encode_as(&chunk, e);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if fix_crc {
            // Keep the length field consistent too, to reach the payload decoders.
            if bytes.len() >= HEADER_LEN {
                let len = (bytes.len() - HEADER_LEN) as u32;
                bytes[16..20].copy_from_slice(&len.to_le_bytes());
            }
            repair_crc(&mut bytes);
        }
        match decode(&bytes) {
            Ok(c) => assert_valid(&c)?,
            Err(_) => {
                // header_only must not panic on it either.
                let _ = header_only(&bytes);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(c) = decode(&bytes) {
            assert_valid(&c)?;
        }
    }

    #[test]
    fn random_payload_under_a_valid_header_never_panics(
        tag in 0u8..4,
        k in 1u8..=12,
        population in 0u32..64,
        cursor in any::<u32>(),
        payload in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = b"HEch".to_vec();
        bytes.extend_from_slice(&[1, tag, k, 0]);
        bytes.extend_from_slice(&population.to_le_bytes());
        bytes.extend_from_slice(&(cursor % (1 << k)).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&payload);
        repair_crc(&mut bytes);
        if let Ok(c) = decode(&bytes) {
            assert_valid(&c)?;
        }
    }
}
