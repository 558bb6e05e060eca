#!/usr/bin/env bash
# The README's first command: one CNI ADD on the embedded store (no etcd),
# with the shipped example config and a temporary dataDir.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null 2>&1 || bash scripts/setup.sh
cargo build --quiet --bin host-etcd
data=$(mktemp -d /tmp/host-etcd-demo.XXXXXX)
sed "s#/tmp/host-etcd-demo#$data#" examples/embedded.json |
  CNI_COMMAND=ADD CNI_CONTAINERID=demo-container CNI_NETNS=/var/run/netns/demo \
  CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni ./target/debug/host-etcd
echo
echo "(state kept in $data)" >&2
