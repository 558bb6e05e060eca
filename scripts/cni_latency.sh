#!/usr/bin/env bash
# CNI latency: one ADD + one DEL, each a separate plugin process invoked the
# way a container runtime invokes it (CNI_* variables, config on stdin), for
#   * host-etcd (release build) on a local single-member etcd, and
#   * host-local (Debian's containernetworking-plugins) on a dataDir,
# with the same dual-stack ranges, measured with hyperfine. A third entry
# runs the same wrapper around /bin/true: the shell and process-spawn floor.
#
# Both stores live in the same directory (tmpfs /dev/shm when present, so
# fsync is cheap for both; set LATENCY_DIR=/var/tmp to measure on disk).
#
# Usage: scripts/cni_latency.sh            (RUNS=200 WARMUP=10 by default)
#        RUNS=50 scripts/cni_latency.sh
# Needs: hyperfine (apt-get install hyperfine), etcd + etcdctl
# (apt-get install etcd-server etcd-client), host-local
# (apt-get install containernetworking-plugins).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-10}
HOST_LOCAL=/usr/lib/cni/host-local

need() {
    command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || {
        echo "missing $1: $2" >&2
        exit 1
    }
}
need hyperfine "apt-get install hyperfine"
need etcd "apt-get install etcd-server"
need etcdctl "apt-get install etcd-client"
need "$HOST_LOCAL" "apt-get install containernetworking-plugins"

cargo build --release --quiet --bin host-etcd
PLUGIN="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/host-etcd"
[ -x "$PLUGIN" ] || { echo "no release binary at $PLUGIN" >&2; exit 1; }

base=${LATENCY_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp )}
work=$(mktemp -d "$base/cni-latency.XXXXXX")
etcd_pid=
cleanup() {
    if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Two free loopback ports (bound to port 0, then released).
read -r client_port peer_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
url="http://127.0.0.1:$client_port"
etcd --name=bench --data-dir="$work/etcd" \
    --listen-client-urls="$url" --advertise-client-urls="$url" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="bench=http://127.0.0.1:$peer_port" \
    --log-level=error >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$url" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
ETCDCTL_API=3 etcdctl --endpoints="$url" endpoint health >/dev/null

ipam='"ranges": [[{"subnet": "10.200.0.0/16"}], [{"subnet": "fd00:200::/64"}]],
      "routes": [{"dst": "0.0.0.0/0"}]'
cat >"$work/host-etcd.json" <<EOF
{"cniVersion": "1.0.0", "name": "latency",
 "ipam": {"type": "host-etcd", $ipam, "endpoints": ["$url"]}}
EOF
cat >"$work/host-local.json" <<EOF
{"cniVersion": "1.0.0", "name": "latency",
 "ipam": {"type": "host-local", $ipam, "dataDir": "$work/host-local"}}
EOF
cat >"$work/add_del.sh" <<'EOF'
# $1 = plugin, $2 = config: ADD then DEL of the same attachment.
export CNI_CONTAINERID=latency CNI_NETNS=/dev/null CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin
CNI_COMMAND=ADD "$1" <"$2" >/dev/null || exit 1
CNI_COMMAND=DEL "$1" <"$2" >/dev/null || exit 1
EOF
# Fail early (not inside hyperfine) if either plugin does not work.
for p in "$PLUGIN:$work/host-etcd.json" "$HOST_LOCAL:$work/host-local.json"; do
    sh "$work/add_del.sh" "${p%%:*}" "${p#*:}" || { echo "ADD/DEL failed: ${p%%:*}" >&2; exit 1; }
done

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/result.json" \
    -n "host-local ADD+DEL" "sh $work/add_del.sh $HOST_LOCAL $work/host-local.json" \
    -n "host-etcd ADD+DEL (etcd)" "sh $work/add_del.sh $PLUGIN $work/host-etcd.json" \
    -n "floor: sh + 2 x /bin/true" "sh $work/add_del.sh /bin/true /dev/null"

# Medians (and minima): the machine may be shared, and means follow outliers.
python3 - "$work/result.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
names = ("host-local ADD+DEL", "host-etcd ADD+DEL (etcd)", "floor: sh + 2 x /bin/true")
for stat in ("median", "min"):
    hl, he, fl = (r[k][stat] * 1000 for k in names)
    print(f"{stat} ms: host-local {hl:.2f}, host-etcd {he:.2f}, floor {fl:.2f}; "
          f"ratio host-etcd/host-local {he / hl:.2f} (above the floor {(he - fl) / (hl - fl):.2f})")
EOF
