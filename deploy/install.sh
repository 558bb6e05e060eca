#!/bin/sh
# Installs the host-etcd binary (CNI plugin and node agent) into a CNI bin
# directory, atomically: copied to a temporary file in that directory,
# checked to run, then renamed over the old one. A plugin process starting
# meanwhile runs either the old binary or the new one, never half a file,
# and a running agent keeps its old binary until it restarts.
#
# usage: install.sh CNI_BIN_DIR [BINARY]
#   CNI_BIN_DIR  e.g. /opt/cni/bin (created if missing)
#   BINARY       the host-etcd binary (default: host-etcd next to this
#                script, else target/release/host-etcd of this repository)
set -eu

usage() {
    echo "usage: $0 CNI_BIN_DIR [BINARY]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
dest_dir=$1
[ -n "$dest_dir" ] || usage
here=$(dirname "$0")
if [ $# -eq 2 ]; then
    src=$2
elif [ -f "$here/host-etcd" ]; then
    src=$here/host-etcd
else
    src=$here/../target/release/host-etcd
fi
if [ ! -f "$src" ]; then
    echo "install.sh: $src: no such file (build it: cargo build --release --bin host-etcd)" >&2
    exit 1
fi

mkdir -p "$dest_dir"
tmp=$(mktemp "$dest_dir/.host-etcd.XXXXXX")
trap 'rm -f "$tmp"' EXIT INT TERM
cp "$src" "$tmp"
chmod 0755 "$tmp"
# Run by hand, the plugin names itself on stderr: proof the copy is whole.
if ! "$tmp" 2>&1 </dev/null | grep -q '^CNI host-etcd plugin version'; then
    echo "install.sh: $src does not run as the host-etcd plugin; nothing installed" >&2
    exit 1
fi
mv -f "$tmp" "$dest_dir/host-etcd"
trap - EXIT INT TERM
echo "installed $dest_dir/host-etcd"
