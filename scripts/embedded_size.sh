#!/usr/bin/env bash
# Embedded store size: cost of one plugin ADD (a host-etcd process invoked
# the way a container runtime invokes it, dataDir store) on an empty store
# and on one prefilled with 50,000 owners. For each state: ADDS sequential
# ADDs (new owners) timed together, and the peak RSS of each ADD process
# (GNU time's %M).
#
# Usage: scripts/embedded_size.sh                  (ADDS=200, OWNERS=50000)
#        SIZE_DIR=/var/tmp scripts/embedded_size.sh  (stores on disk; the
#        default is tmpfs /dev/shm when present, so fsync is cheap and the
#        store's own work shows)
#        PLUGIN=/path/host-etcd IPAMCTL=/path/ipamctl scripts/embedded_size.sh
#        (another build, e.g. an older one; both must be of the same build)
# Needs: GNU time (/usr/bin/time, apt-get install time), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ADDS=${ADDS:-200}
OWNERS=${OWNERS:-50000}
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time: apt-get install time" >&2; exit 1; }

if [ -z "${PLUGIN:-}" ]; then
    cargo build --release --quiet --bins
    bin="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release"
    PLUGIN="$bin/host-etcd"
    IPAMCTL="$bin/ipamctl"
fi
[ -x "$PLUGIN" ] && [ -x "$IPAMCTL" ] || { echo "no binaries: $PLUGIN $IPAMCTL" >&2; exit 1; }

base=${SIZE_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp )}
work=$(mktemp -d "$base/embedded-size.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One /15 (131070 addresses) so that 50,000 owners fill 38% of it.
conf() {
    cat <<EOF
{"cniVersion": "1.0.0", "name": "size-net", "type": "bridge",
 "ipam": {"type": "host-etcd", "ranges": [[{"subnet": "10.64.0.0/15"}]],
          "dataDir": "$1"}}
EOF
}

for state in empty full; do
    dir="$work/$state"
    conf "$dir" >"$work/$state.json"
    if [ "$state" = full ]; then
        # ipamctl bench prefills exactly floor(ratio * 131070) owners (in
        # transactions of 50), then allocates one more.
        ratio=$(python3 -c "print(($OWNERS + 0.5) / 131070)")
        "$IPAMCTL" --config "$work/$state.json" bench --prefill "$ratio" -n 1 \
            --no-raw --no-naive --json >"$work/prefill.json"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'prefilled {r[\"prefilled\"]} owners in {r[\"prefill_secs\"]:.1f} s')" "$work/prefill.json"
    else
        # Create the store with one ADD, so both states measure opens of an
        # existing store.
        CNI_COMMAND=ADD CNI_CONTAINERID=create CNI_NETNS=/dev/null CNI_IFNAME=eth0 \
            CNI_PATH=/opt/cni/bin "$PLUGIN" <"$work/$state.json" >/dev/null
    fi
    size=$(stat -c %s "$dir/store.redb")
    start=$(date +%s.%N)
    for i in $(seq "$ADDS"); do
        CNI_COMMAND=ADD CNI_CONTAINERID="add-$i" CNI_NETNS=/dev/null CNI_IFNAME=eth0 \
            CNI_PATH=/opt/cni/bin /usr/bin/time -a -o "$work/$state.rss" -f %M \
            "$PLUGIN" <"$work/$state.json" >/dev/null
    done
    end=$(date +%s.%N)
    python3 - "$state" "$size" "$start" "$end" "$ADDS" "$work/$state.rss" <<'EOF'
import statistics, sys
state, size, start, end, n, rss = sys.argv[1:]
kib = [int(x) for x in open(rss).read().split()]
ms = (float(end) - float(start)) * 1000 / int(n)
print(f"{state}: store.redb {int(size) // 1024} KiB, {n} ADDs, {ms:.2f} ms per ADD, "
      f"RSS median {statistics.median(kib) / 1024:.1f} MiB, max {max(kib) / 1024:.1f} MiB")
EOF
done
