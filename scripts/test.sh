#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every check
# and the whole test suite (unit, property, real-etcd, subprocess, fuzz
# corpora). Tests start their own throwaway etcd servers on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One full build, not a loop of small edits: incremental caches would only
# double target/ (~6 GB of a clean run).
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
# No two files under src/ import each other, directly or around a loop.
python3 scripts/import_cycles.py >/dev/null
cargo clippy --all-targets -- -D warnings
# An embedder's build: the library alone, without the binaries' and the
# fuzzers' dependencies.
cargo clippy --no-default-features --lib -- -D warnings
extra=$(cargo tree --no-default-features -e normal --prefix none | grep -E '^(clap|indicatif|arbitrary) ' || true)
if [ -n "$extra" ]; then
  echo "test.sh: the library without default features still depends on:" >&2
  echo "$extra" >&2
  exit 1
fi
# tests/examples.rs runs the examples from target/debug/examples/ (cargo
# test builds them only under hashed names).
cargo build --examples --quiet
cargo test --all-targets
cargo test --doc
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --features fuzz
# The fuzz targets (their own workspace, their own lock file) still build
# against the crate: a dependency added here must reach fuzz/Cargo.lock too.
(cd fuzz && cargo check --locked --quiet)
