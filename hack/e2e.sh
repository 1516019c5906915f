#!/usr/bin/env bash
# make e2e: the operator's image and chart on a real cluster on this machine (containerd + runc + kubelets built
# like the test apiserver), with workloads consuming what it makes. Needs root. Installs the Debian packages a
# fresh machine lacks, builds (or reuses from the cache) the node binaries and the images, runs tests/e2e.rs, and
# sweeps the machine afterwards even if the test process died (containers, mounts, cgroups, routes, addresses).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "== e2e: $* ($(( $(date +%s) - start ))s)" >&2; }

[ "$(id -u)" = 0 ] || { echo "error: make e2e needs root (mounts, cgroups, routes for a real node)" >&2; exit 1; }
missing=()
for pair in containerd:containerd runc:runc umoci:umoci musl-gcc:musl-tools gcc:gcc; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cache=${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}
# The clusters' state (containerd, kubelets, logs): private to root, never a world-writable path.
state=${DOO_E2E_STATE:-$cache/e2e}
images=${DOO_E2E_IMAGES:-target/e2e/images}
mkdir -p -m 0700 "$state" "$images"
if [ -L "$state" ] || [ ! -O "$state" ]; then
  echo "error: $state must be a directory owned by root, not a link" >&2
  exit 1
fi
chmod 0700 "$state"
# One e2e at a time on a machine: the routes and loopback addresses are machine-wide.
mkdir -p /run/lock
exec 9>/run/lock/doo-e2e-run.lock
flock 9
# What a cluster left when its test process died before its teardown (the repository's sweep, not a copy).
sweep() { for dir in "$state"/doo-e2e-*; do [ -d "$dir" ] && bash crates/test-control-plane/src/sweep.sh "$dir"; done; true; }
sweep
trap sweep EXIT

step "node binaries (kubelet, kube-controller-manager, kube-scheduler)"
WITH_NODE=1 hack/build-control-plane.sh >/dev/null
step "helm"
hack/build-helm.sh >/dev/null

step "images"
IMAGE_OUT="$images" hack/build-image.sh operator >/dev/null
IMAGE_OUT="$images" hack/build-image.sh emulator >/dev/null
work=$(mktemp -d)
trap 'sweep; rm -rf "$work"' EXIT
mkdir -p "$work/pause" "$work/consumer"
gcc -static -Os -s -o "$work/pause/pause" hack/e2e/pause.c
hack/oci-pack.sh "$work/pause" 3.10 "$images/pause.oci.tar" \
  --config.entrypoint /pause --config.user 65535:65535
cp "$(hack/build-go-clients.sh sdk)/consumer" "$work/consumer/consumer"
hack/oci-pack.sh "$work/consumer" e2e "$images/consumer.oci.tar" \
  --config.entrypoint /consumer --config.user 65532:65532
ls -la "$images" >&2

step "tests/e2e.rs"
export DOO_E2E_IMAGES="$images" DOO_E2E_STATE="$state"
# E2E_TESTS narrows the run to tests whose names contain it (e.g. E2E_TESTS=chaos make e2e).
cargo test --locked --test e2e -- --test-threads=1 --nocapture ${E2E_TESTS:-}
step "done"
