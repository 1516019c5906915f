#!/usr/bin/env bash
# Packs a directory as a single-layer OCI image with umoci (no daemon, no registry) and writes it as one tar in
# OCI image layout (an "oci-archive"), tagged TAG inside the layout.
#   hack/oci-pack.sh ROOTFS TAG OUT.tar [umoci config options...]
# Files are owned by root; the config options set the user, entrypoint, labels and so on.
set -euo pipefail
rootfs=${1:?usage: oci-pack.sh ROOTFS TAG OUT.tar [umoci config options...]}
tag=${2:?tag}
out=${3:?output tar}
shift 3
command -v umoci >/dev/null || { echo "error: umoci is not installed (Debian: apt-get install umoci)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
cp -R "$rootfs/." "$work/bundle/rootfs/"
chown -R 0:0 "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" "$work/bundle"
if [ $# -gt 0 ]; then umoci config --image "$layout:$tag" "$@"; fi
umoci gc --layout "$layout"
mkdir -p "$(dirname "$out")"
tar -C "$layout" -cf "$out.tmp" . && mv "$out.tmp" "$out"
