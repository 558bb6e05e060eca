#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every check
# and the whole test suite (unit, property, real-etcd, subprocess, fuzz
# corpora). Tests start their own throwaway etcd servers on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
cargo test --doc
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
