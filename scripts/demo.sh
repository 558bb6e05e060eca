#!/usr/bin/env bash
# The README's first command: one CNI ADD on the embedded store (no etcd),
# with the shipped example config and a temporary dataDir.
set -euo pipefail
cd "$(dirname "$0")/.."
# Building needs protoc (etcd-client's build script); nothing else is needed
# to run the demo, so only that is installed when missing.
if ! command -v protoc >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi
cargo build --quiet --bin host-etcd
data=$(mktemp -d /tmp/host-etcd-demo.XXXXXX)
sed "s#/tmp/host-etcd-demo#$data#" examples/embedded.json |
  CNI_COMMAND=ADD CNI_CONTAINERID=demo-container CNI_NETNS=/var/run/netns/demo \
  CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni ./target/debug/host-etcd
echo
echo "(state kept in $data)" >&2
