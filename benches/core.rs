//! Microbenchmarks of the pure core: `Bitmap::find_free` by chunk size and
//! fill, chunk encode/decode per encoding and fill, and (printed before the
//! timings) a table of encoded sizes per encoding, fill and k, so the chunk
//! size k and the encodings can be chosen by measurement.
//!
//! Run: `cargo bench --bench core -- --warm-up-time 1 --measurement-time 2`
//! (results are recorded in `src/codec/FORMAT.md`, "Measurements" and
//! "Performance"; `'_k16/'` selects the k = 16 encode/decode cases).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use host_etcd::bitmap::Bitmap;
use host_etcd::codec::{decode, encode, encode_as, Chunk, Encoding, HEADER_LEN};

/// Fills in percent used by the codec benches and the size table.
const FILLS: [u32; 5] = [0, 1, 50, 99, 100];

/// Deterministic uniformly random fill: each bit set with probability
/// `pct`/100 (xorshift64, fixed seed).
fn random_fill(k: u8, pct: u32) -> Bitmap {
    let len = 1usize << k;
    let mut b = Bitmap::new(len);
    let mut s: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(k) << 32 ^ u64::from(pct);
    for i in 0..len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if s % 10_000 < u64::from(pct) * 100 {
            b.set(i);
        }
    }
    b
}

/// The first `pct`% of the chunk set: what round-robin allocation without
/// releases produces.
fn prefix_fill(k: u8, pct: u32) -> Bitmap {
    let len = 1usize << k;
    let mut b = Bitmap::new(len);
    let n = len * pct as usize / 100;
    if n > 0 {
        b.set_range(0, n - 1);
    }
    b
}

fn chunk(bits: Bitmap) -> Chunk {
    let cursor = u32::try_from(bits.len() / 3).unwrap_or(0);
    Chunk { bits, cursor }
}

/// Prints markdown tables of total encoded bytes (header included).
fn print_size_tables() {
    for (pattern, fill_fn) in [
        ("random", random_fill as fn(u8, u32) -> Bitmap),
        ("prefix", prefix_fill as fn(u8, u32) -> Bitmap),
    ] {
        println!(
            "\nEncoded chunk size in bytes ({HEADER_LEN}-byte header included), {pattern} fill:\n"
        );
        println!("| k | fill | raw | roaring | raw+zstd | roaring+zstd | encode() picks |");
        println!("|---|---|---|---|---|---|---|");
        for k in [8u8, 10, 12, 14, 16] {
            for pct in FILLS {
                let c = chunk(fill_fn(k, pct));
                let sizes: Vec<String> = Encoding::ALL
                    .iter()
                    .map(|&e| encode_as(&c, e).len().to_string())
                    .collect();
                let best = encode(&c);
                let picked = Encoding::from_tag(best[5]).map_or("?", |e| e.name());
                println!(
                    "| {k} | {pct}% | {} | {picked} ({}) |",
                    sizes.join(" | "),
                    best.len()
                );
            }
        }
    }
    println!();
}

fn bench_find_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("find_free");
    for k in [10u8, 12, 16] {
        let allowed = Bitmap::full(1 << k);
        for pct in [0u32, 50, 99, 100] {
            let taken = random_fill(k, pct);
            let from = (1usize << k) / 3;
            g.bench_with_input(
                BenchmarkId::new(format!("k{k}"), format!("{pct}%")),
                &taken,
                |b, taken| b.iter(|| black_box(taken).find_free(black_box(from), &allowed)),
            );
        }
    }
    g.finish();
}

/// The chunks the codec benches run on at chunk size `k`: random fills at
/// [`FILLS`], plus at k = 16 the adversarial "alt" pattern (every other bit
/// set: 32,768 one-bit runs, the worst case for run counting).
fn codec_cases(k: u8) -> Vec<(String, Chunk)> {
    let mut cases: Vec<(String, Chunk)> = FILLS
        .iter()
        .map(|&pct| (format!("{pct}%"), chunk(random_fill(k, pct))))
        .collect();
    if k == 16 {
        let len = 1usize << k;
        let words = vec![0x5555_5555_5555_5555u64; len / 64];
        if let Some(bits) = Bitmap::from_words(len, &words) {
            cases.push(("alt".to_string(), chunk(bits)));
        }
    }
    cases
}

fn bench_codec(c: &mut Criterion) {
    for k in [10u8, 12, 16] {
        let cases = codec_cases(k);
        let mut enc = c.benchmark_group(format!("encode_k{k}"));
        enc.throughput(Throughput::Elements(1));
        for (name, ch) in &cases {
            enc.bench_with_input(BenchmarkId::new("smallest", name), ch, |b, ch| {
                b.iter(|| encode(black_box(ch)))
            });
            for e in Encoding::ALL {
                enc.bench_with_input(BenchmarkId::new(e.name(), name), ch, |b, ch| {
                    b.iter(|| encode_as(black_box(ch), e))
                });
            }
        }
        enc.finish();

        let mut dec = c.benchmark_group(format!("decode_k{k}"));
        dec.throughput(Throughput::Elements(1));
        for (name, ch) in &cases {
            for e in Encoding::ALL {
                let bytes = encode_as(ch, e);
                dec.bench_with_input(BenchmarkId::new(e.name(), name), &bytes, |b, bytes| {
                    b.iter(|| decode(black_box(bytes)))
                });
            }
        }
        dec.finish();
    }
}

fn main() {
    print_size_tables();
    let mut c = Criterion::default().configure_from_args();
    bench_find_free(&mut c);
    bench_codec(&mut c);
    c.final_summary();
}
