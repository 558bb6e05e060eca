#!/usr/bin/env bash
# Scale benchmark of the node-scoped operations: what one node's work costs
# etcd when the cluster is big. Starts a throwaway single-member etcd on
# loopback (killed on exit), fills one dual-stack network with N owner
# records over N/30 simulated nodes (examples/scale_fill: the library's
# ordinary ADD path, allocate_batch of 30 per node under that node's name,
# so every record has its per-node index entry), then, for ONE node that
# owns 30 records, counts the etcd calls (grpc_server_handled_total) and
# the bytes etcd sent (etcd_network_client_grpc_sent_bytes_total), from
# etcd's own /metrics, of: a warm plugin ADD and a DEL, a plugin GC with the
# node's 30 attachments valid, `ipamctl reconcile --node --dry-run`,
# `release --node --dry-run`, `list --container`, `list --node`, one agent
# scrape, one `ipamctl metrics` scrape and `ipamctl check`. The plugin, the
# agent and ipamctl are the release binaries, run in a UTS namespace whose
# host name is that node's, as a runtime on that node would run them. The
# owner counts are filled in ascending order in the same etcd, so every
# row is measured on the same node at each N. The work is done by
# scripts/scale_bench.py (Python 3, standard library only).
#
# Usage: scripts/scale_bench.sh [--owners 10000,50000] [--node NAME]
#        [--concurrency 16] [--out DIR] [--no-build]
# Options:
#   --owners LIST    owner counts to measure at, ascending (default
#                    10000,50000); N/30 nodes each
#   --node NAME      the measured node (default scale-node-00100; it must
#                    exist at the smallest N)
#   --concurrency C  nodes the fill writes at once (default 16)
#   --out DIR        JSON directory (default benchmarks/results/scale):
#                    DIR/n<owners>.json
#   --no-build       do not build (target/release/{host-etcd,ipamctl} and
#                    target/debug/examples/scale_fill must exist)
# Exit status 3 when a row misses its target (the table says which).
#
# Needs root (unshare --uts), etcd (apt-get install etcd-server), python3,
# util-linux. Only loopback traffic; everything lives in one temp dir
# (BENCH_DIR to choose its parent; default /tmp). About a minute on the
# project's 2-core VM at the default sizes, once built.
set -euo pipefail
# Everything runs from main(), read whole before it starts: editing this file
# during a run cannot change the running script.
main() {
self=$(realpath "$0")
cd "$(dirname "$self")/.."
repo=$(pwd)

owners=10000,50000 node=scale-node-00100 concurrency=16 out=benchmarks/results/scale build=1
usage() { sed -n "2,/^set -euo/p" "$self" | sed "\$d; s/^# \{0,1\}//" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --owners) owners=$2; shift 2 ;;
        --node) node=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=; shift ;;
        -h|--help) usage ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
[[ "$owners" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "--owners: comma-separated positive integers" >&2; exit 2; }
[[ "$node" =~ ^scale-node-[0-9]{5}$ ]] || { echo "--node: scale-node-NNNNN (the fill's names)" >&2; exit 2; }
[[ "$concurrency" =~ ^[1-9][0-9]*$ ]] || { echo "--concurrency: a positive integer" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "needs root (unshare --uts)" >&2; exit 1; }
for c in etcd unshare hostname python3; do
    command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }
done

if [ -n "$build" ]; then
    cargo build --release --quiet --bins
    # The fill is an example (it links the dev-dependencies): a debug
    # build, which `cargo test` has mostly built already; its speed is not
    # measured.
    cargo build --quiet --example scale_fill
fi
target="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin=$target/release fill=$target/debug/examples/scale_fill
for b in "$bin/host-etcd" "$bin/ipamctl" "$fill"; do
    [ -x "$b" ] || { echo "no binary $b (drop --no-build)" >&2; exit 1; }
done

work=$(mktemp -d "${BENCH_DIR:-/tmp}/scale-bench.XXXXXX")
etcd_pid=
cleanup() {
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r client_port peer_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
url="http://127.0.0.1:$client_port"
etcd --name=sbench --data-dir="$work/etcd" \
    --listen-client-urls="$url" --advertise-client-urls="$url" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="sbench=http://127.0.0.1:$peer_port" \
    --log-level=error >"$work/etcd.log" 2>&1 &
etcd_pid=$!
up=
for _ in $(seq 100); do
    if python3 -c 'import sys, urllib.request as u; sys.exit(0 if b"true" in u.urlopen(sys.argv[1] + "/health", timeout=1).read() else 1)' \
        "$url" 2>/dev/null; then up=1; break; fi
    kill -0 "$etcd_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$up" ]; then
    echo "etcd did not come up; its log:" >&2
    cat "$work/etcd.log" >&2
    exit 1
fi

mkdir -p "$out"
# The whole measurement runs in one UTS namespace named after the node.
unshare --uts -- python3 scripts/scale_bench.py run --owners "$owners" --node "$node" \
    --endpoint "$url" --plugin "$bin/host-etcd" --ipamctl "$bin/ipamctl" \
    --fill "$fill" --concurrency "$concurrency" \
    --etcd-bin "$(command -v etcd)" --etcd-pid "$etcd_pid" --repo "$repo" --work "$work" --out "$out"
}
main "$@"
