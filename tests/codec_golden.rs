//! Golden chunk fixtures: the checked-in `tests/fixtures/chunk_*.bin` files
//! are version-1 chunks. Each must decode to the chunk the generator below
//! builds (and to the hand-stated facts about it), and encoding that chunk
//! must reproduce the file byte for byte.
//!
//! A failure here means the on-disk format changed: bump `FORMAT_VERSION`
//! and keep reading version 1, do not regenerate. The one legitimate reason
//! to regenerate is a zstd library upgrade that changes compressed bytes
//! (decoding must still pass; only the `encode` comparison of the zstd
//! fixtures fails): then run `UPDATE_FIXTURES=1 cargo test --test codec_golden`
//! and commit the files.

use std::path::PathBuf;

use host_etcd::bitmap::Bitmap;
use host_etcd::codec::{decode, encode, encode_as, header_only, Chunk, Encoding};

/// One fixture: file name, the chunk, how it is encoded, and stated facts.
struct Fixture {
    name: &'static str,
    chunk: Chunk,
    /// `None`: [`encode`] (smallest); `Some(e)`: [`encode_as`].
    forced: Option<Encoding>,
    /// The encoding the file must carry.
    encoding: Encoding,
    population: u32,
}

/// Deterministic xorshift64 bits: bit `i` set with probability 1/2.
fn half_full(len: usize) -> Bitmap {
    let mut b = Bitmap::new(len);
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if s & 1 == 1 {
            b.set(i);
        }
    }
    b
}

fn chunk(bits: Bitmap, cursor: u32) -> Chunk {
    Chunk { bits, cursor }
}

fn fixtures() -> Vec<Fixture> {
    const LEN: usize = 1 << 10;
    let mut sparse = Bitmap::new(LEN);
    for i in [0, 1, 2, 3, 100, 511, 512, 1023] {
        sparse.set(i);
    }
    let half = half_full(LEN);
    let half_pop = u32::try_from(half.count_ones()).expect("fits");
    let mut v = vec![
        Fixture {
            name: "chunk_k10_empty.bin",
            chunk: chunk(Bitmap::new(LEN), 0),
            forced: None,
            encoding: Encoding::Roaring,
            population: 0,
        },
        Fixture {
            name: "chunk_k10_sparse.bin",
            chunk: chunk(sparse, 513),
            forced: None,
            encoding: Encoding::RawZstd,
            population: 8,
        },
        Fixture {
            name: "chunk_k10_half.bin",
            chunk: chunk(half.clone(), 700),
            forced: None,
            encoding: Encoding::Raw,
            population: half_pop,
        },
        Fixture {
            name: "chunk_k10_full.bin",
            chunk: chunk(Bitmap::full(LEN), 1023),
            forced: None,
            encoding: Encoding::Roaring,
            population: 1024,
        },
    ];
    for (e, name) in [
        (Encoding::Raw, "chunk_k10_half_raw.bin"),
        (Encoding::Roaring, "chunk_k10_half_roaring.bin"),
        (Encoding::RawZstd, "chunk_k10_half_rawzstd.bin"),
        (Encoding::RoaringZstd, "chunk_k10_half_roaringzstd.bin"),
    ] {
        v.push(Fixture {
            name,
            chunk: chunk(half.clone(), 42),
            forced: Some(e),
            encoding: e,
            population: half_pop,
        });
    }
    v
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn encoded(f: &Fixture) -> Vec<u8> {
    match f.forced {
        None => encode(&f.chunk),
        Some(e) => encode_as(&f.chunk, e),
    }
}

#[test]
fn golden_fixtures_decode_and_reencode_byte_for_byte() {
    if std::env::var_os("UPDATE_FIXTURES").is_some_and(|v| v == "1") {
        for f in fixtures() {
            let path = fixture_path(f.name);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, encoded(&f)).expect("write fixture");
        }
    }
    for f in fixtures() {
        let path = fixture_path(f.name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; generate with UPDATE_FIXTURES=1", path.display()));

        // Header facts, stated independently of the encoder.
        assert_eq!(&bytes[..4], b"HEch", "{}", f.name);
        assert_eq!(bytes[4], 1, "{}: version", f.name);
        assert_eq!(bytes[5], f.encoding.tag(), "{}: encoding", f.name);
        assert_eq!(bytes[6], 10, "{}: chunk_bits", f.name);
        let h = header_only(&bytes).expect("header verifies");
        assert_eq!(h.population, f.population, "{}", f.name);
        assert_eq!(h.cursor, f.chunk.cursor, "{}", f.name);
        assert_eq!(h.payload_len as usize, bytes.len() - 24, "{}", f.name);

        // Contents.
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(decoded, f.chunk, "{}: decoded contents", f.name);
        assert_eq!(decoded.population(), f.population, "{}", f.name);

        // Encoding reproduces the file.
        assert_eq!(
            encoded(&f),
            bytes,
            "{}: encoder output differs from the fixture",
            f.name
        );
    }
}

#[test]
fn golden_sparse_and_full_contents_are_as_stated() {
    let sparse = decode(&std::fs::read(fixture_path("chunk_k10_sparse.bin")).expect("read"))
        .expect("decodes");
    assert_eq!(
        sparse.bits.iter_ones().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 100, 511, 512, 1023]
    );
    assert_eq!(sparse.cursor, 513);
    let full =
        decode(&std::fs::read(fixture_path("chunk_k10_full.bin")).expect("read")).expect("decodes");
    assert_eq!(full.bits.count_ones(), 1024);
    assert_eq!(full.bits.find_free(0, &Bitmap::full(1024)), None);
    let empty = decode(&std::fs::read(fixture_path("chunk_k10_empty.bin")).expect("read"))
        .expect("decodes");
    assert_eq!(empty.bits.find_free(0, &Bitmap::full(1024)), Some(0));
}
