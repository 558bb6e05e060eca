#!/usr/bin/env bash
# Cluster-style benchmark of the plugin path: simulated nodes (each its own
# UTS namespace with hostname nodeN, so each gets its own node seed), each
# running P concurrent processes of the real release binary
# target/release/host-etcd exactly as a runtime calls it (CNI_* variables,
# dual-stack network config on stdin, cniVersion 1.0.0), N ADDs then N DELs
# per node, against a throwaway single-member etcd on loopback that this
# script starts (and kills on exit). Same run, same shape: host-local
# (/usr/lib/cni/host-local, a dataDir per node) and the raw single-key CAS
# baseline of `ipamctl bench`. Counts etcd calls from etcd's /metrics and
# etcd CPU from /proc/PID/stat around each phase. The work is done by
# scripts/cluster_bench.py (Python 3, standard library only).
#
# Usage: scripts/cluster_bench.sh [--nodes N] [--procs P] [--count N]
#        scripts/cluster_bench.sh --scenario seq|one-node|cluster
#        scripts/cluster_bench.sh --all            (the three scenarios below)
# Options:
#   --nodes N        simulated nodes (default 2)
#   --procs P        concurrent plugin processes per node (default 4)
#   --count N        ADDs (then as many DELs) per node (default 100)
#   --scenario S     seq      = 1 node x 1 process,   N = 300 (sequential ADDs)
#                    one-node = 1 node x 16 processes, N = 480
#                    cluster  = 8 nodes x 8 processes, N = 100 per node
#                    (--count after --scenario overrides its N)
#   --all            the three scenarios in turn (a fresh etcd for each;
#                    --nodes/--procs/--count are ignored), then the plot;
#                    about a minute on the project's 2-core VM
#   --label L        tag stored in the JSON and shown in the plot (default
#                    "current"; use e.g. "after-fastpath" for a re-run)
#   --out DIR        JSON directory (default benchmarks/results/cluster)
#   --plot FILE      SVG written from every JSON in DIR after the run
#                    (default benchmarks/cluster.svg; "" for none)
#   --node-data-dir  give each node's host-etcd config its own dataDir
#                    (node-local state such as search positions); default: none,
#                    like the README's example configuration
#   --agent          also run every node's plugin processes through a node
#                    agent (`host-etcd agent`, one per node in the node's UTS
#                    namespace; configs with "agent": "required"), in the
#                    same run against the same etcd, after the direct run
#                    (which uses "agent": "off")
#   --v4-range CIDR  the IPv4 range set (default 10.77.0.0/16)
#   --v6-range CIDR  the IPv6 range set (default fd00:77::/64)
#   --no-del         ADD phase only (no DEL phase); each mode (direct, agent)
#                    then runs on a network of its own (cbench-host-etcd,
#                    cbench-host-etcd-agent), so each starts on a fresh one
#   --bin-dir DIR    take host-etcd and ipamctl from DIR (e.g. a copy of an
#                    older build); implies --no-build
#   --no-host-local  skip the host-local baseline
#   --no-raw         skip the raw CAS baseline
#   --no-build       do not run cargo build --release --bins
# Files: DIR/n<nodes>-p<procs>[.<label>].json (label part omitted for
# "current"). Exit status 3 when a host-etcd process failed or two ADDs got
# the same address.
#
# Needs root (unshare --uts), etcd (apt-get install etcd-server), host-local
# (apt-get install containernetworking-plugins), python3, util-linux.
# Only loopback traffic; everything lives in one temp dir (BENCH_DIR to
# choose its parent; default /tmp, i.e. etcd's data on disk).
set -euo pipefail
# Everything runs from main(), read whole before it starts: editing this file
# during a run cannot change the running script.
main() {
self=$(realpath "$0")
cd "$(dirname "$self")/.."
repo=$(pwd)

nodes=2 procs=4 count=100 label=current out=benchmarks/results/cluster
plot=benchmarks/cluster.svg build=1 host_local=/usr/lib/cni/host-local
extra=() scenarios=() bin_dir=
usage() { sed -n "2,/^set -euo/p" "$self" | sed "\$d; s/^# \{0,1\}//" >&2; exit 2; }
preset() {
    case "$1" in
        seq) echo "1 1 300" ;;
        one-node) echo "1 16 480" ;;
        cluster) echo "8 8 100" ;;
        *) echo "unknown scenario $1 (seq, one-node, cluster)" >&2; exit 2 ;;
    esac
}
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=$2; shift 2 ;;
        --procs) procs=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --scenario) read -r nodes procs count < <(preset "$2"); shift 2 ;;
        --all) scenarios=(seq one-node cluster); shift ;;
        --label) label=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --plot) plot=$2; shift 2 ;;
        --node-data-dir) extra+=(--node-data-dir); shift ;;
        --agent) extra+=(--agent); shift ;;
        --v4-range) extra+=(--v4-range "$2"); shift 2 ;;
        --v6-range) extra+=(--v6-range "$2"); shift 2 ;;
        --no-del) extra+=(--no-del); shift ;;
        --bin-dir) bin_dir=$(realpath "$2"); build=; shift 2 ;;
        --no-host-local) host_local=; shift ;;
        --no-raw) extra+=(--no-raw); shift ;;
        --no-build) build=; shift ;;
        -h|--help) usage ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
for v in "$nodes" "$procs" "$count"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "--nodes/--procs/--count must be positive integers" >&2; exit 2; }
done
[[ "$label" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "--label: letters, digits, . _ - only" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "needs root (unshare --uts)" >&2; exit 1; }
for c in etcd unshare hostname python3 getconf; do
    command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }
done
if [ -n "$host_local" ] && [ ! -x "$host_local" ]; then
    echo "missing $host_local (apt-get install containernetworking-plugins, or --no-host-local)" >&2
    exit 1
fi

if [ -n "$build" ]; then cargo build --release --quiet --bins; fi
bin=$bin_dir
[ -n "$bin" ] || bin="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release"
for b in host-etcd ipamctl; do
    [ -x "$bin/$b" ] || { echo "no release binary $bin/$b (drop --no-build)" >&2; exit 1; }
done

work=$(mktemp -d "${BENCH_DIR:-/tmp}/cluster-bench.XXXXXX")
etcd_pid=
stop_etcd() {
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
        etcd_pid=
    fi
}
cleanup() { stop_etcd; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_etcd() { # $1 = directory; sets etcd_pid and url
    local client_port peer_port
    read -r client_port peer_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
    url="http://127.0.0.1:$client_port"
    etcd --name=cbench --data-dir="$1/etcd" \
        --listen-client-urls="$url" --advertise-client-urls="$url" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="cbench=http://127.0.0.1:$peer_port" \
        --log-level=error >"$1/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 100); do
        python3 -c 'import sys, urllib.request as u; sys.exit(0 if b"true" in u.urlopen(sys.argv[1] + "/health", timeout=1).read() else 1)' \
            "$url" 2>/dev/null && return 0
        kill -0 "$etcd_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "etcd did not come up; its log:" >&2
    cat "$1/etcd.log" >&2
    exit 1
}

run_one() { # nodes procs count
    local name dir
    name="n$1-p$2"
    [ "$label" = current ] || name="$name.$label"
    dir="$work/$name"
    mkdir -p "$dir" "$out"
    rm -f "$out/$name.json"
    start_etcd "$dir"
    local rc=0
    python3 scripts/cluster_bench.py scenario --nodes "$1" --procs "$2" --count "$3" \
        --endpoint "$url" --etcd-pid "$etcd_pid" --etcd-bin "$(command -v etcd)" \
        --etcd-fs "$(stat -f -c %T "$dir")" --plugin "$bin/host-etcd" --ipamctl "$bin/ipamctl" \
        --host-local "$host_local" --cni-path "$bin:/usr/lib/cni" --label "$label" \
        --repo "$repo" --work "$dir" --out "$out/$name.json" ${extra[@]+"${extra[@]}"} || rc=$?
    stop_etcd
    if [ -f "$out/$name.json" ]; then echo "wrote $out/$name.json"; fi
    return $rc
}

status=0
if [ ${#scenarios[@]} -gt 0 ]; then
    for s in "${scenarios[@]}"; do
        read -r n p c < <(preset "$s")
        run_one "$n" "$p" "$c" || status=$?
    done
else
    run_one "$nodes" "$procs" "$count" || status=$?
fi
if [ -n "$plot" ]; then
    shopt -s nullglob
    files=("$out"/*.json)
    if [ ${#files[@]} -gt 0 ]; then
        python3 scripts/cluster_bench.py plot "$plot" "${files[@]}" && echo "wrote $plot"
    fi
fi
exit $status
}
main "$@"
