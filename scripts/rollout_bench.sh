#!/usr/bin/env bash
# Rollout benchmark at cluster scale: N simulated nodes (UTS namespaces, see
# scripts/cluster_bench.sh) start at once on a fresh network and each does
# COUNT ADDs (one plugin process at a time per node, as a Deployment scaled
# across the cluster does), dual-stack, first directly against etcd and then
# through one node agent per node, for every node count and IPv4 range set
# given. Every run gets its own etcd, and every node its own empty dataDir
# (no node cache from an earlier run). Counts etcd calls from etcd's
# /metrics; prints one table of etcd calls per ADD, failed ADDs, duplicate
# addresses and p50 / p99 per run.
#
# Usage: scripts/rollout_bench.sh [--nodes "64 256 512"] [--v4 "10.64.0.0/12 10.77.0.0/16"]
#                                 [--v6 fd00:77::/64] [--count 6] [--label L]
#                                 [--bin-dir DIR] [--out DIR] [--no-agent]
# Options:
#   --nodes LIST   node counts (default "64 256 512")
#   --v4 LIST      IPv4 range sets (default "10.64.0.0/12 10.77.0.0/16")
#   --v6 CIDR      the IPv6 range set (default fd00:77::/64)
#   --count N      ADDs per node (default 6)
#   --label L      tag of the JSON files and table rows (default "current")
#   --bin-dir DIR  host-etcd and ipamctl from DIR (e.g. an older build kept
#                  for a before/after comparison); default: cargo build --release
#   --out DIR      JSON directory (default benchmarks/results/rollout)
#   --no-agent     direct runs only
# Needs what scripts/cluster_bench.sh needs (root, etcd, python3); about
# 10 minutes for the default lists on the project's 2-core VM.
set -euo pipefail
main() {
self=$(realpath "$0")
cd "$(dirname "$self")/.."
nodes_list="64 256 512" v4_list="10.64.0.0/12 10.77.0.0/16" v6=fd00:77::/64
count=6 label=current bin=() out=benchmarks/results/rollout agent=(--agent)
usage() { sed -n "2,/^set -euo/p" "$self" | sed "\$d; s/^# \{0,1\}//" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes_list=$2; shift 2 ;;
        --v4) v4_list=$2; shift 2 ;;
        --v6) v6=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --label) label=$2; shift 2 ;;
        --bin-dir) bin=(--bin-dir "$2"); shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-agent) agent=(); shift ;;
        -h|--help) usage ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
# Two pipes per node helper, a socket per agent: more than the default 1,024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
status=0 files=()
for v4 in $v4_list; do
    prefix=${v4##*/}
    for n in $nodes_list; do
        dir="$out/v4-$prefix"
        scripts/cluster_bench.sh --nodes "$n" --procs 1 --count "$count" \
            --v4-range "$v4" --v6-range "$v6" --node-data-dir --no-del \
            --no-host-local --no-raw --plot "" --label "$label" --out "$dir" \
            ${agent[@]+"${agent[@]}"} ${bin[@]+"${bin[@]}"} || status=$?
        name="n$n-p1"
        [ "$label" = current ] || name="$name.$label"
        [ -f "$dir/$name.json" ] && files+=("$dir/$name.json")
        # The first run built the binaries; later runs reuse them.
        [ ${#bin[@]} -gt 0 ] || bin=(--no-build)
    done
done
[ ${#files[@]} -gt 0 ] && python3 scripts/cluster_bench.py rollout "${files[@]}"
exit $status
}
main "$@"
