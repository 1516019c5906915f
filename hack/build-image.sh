#!/usr/bin/env bash
# Builds an OCI image with no Docker daemon and no registry: a static (musl) release binary in a minimal root
# filesystem (the binary plus /etc/passwd and /etc/group naming the non-root user 65532), packed by umoci as an OCI
# image layout and written as one tar (an "oci-archive"). The Dockerfile builds the operator's the same way.
#   hack/build-image.sh [operator|emulator]
#     operator  databricks-oauth-operator (make image), entrypoint `/databricks-oauth-operator run`
#     emulator  databricks-emulator (make emulator-image), configured by DATABRICKS_EMULATOR_* variables, listening
#               on 0.0.0.0:8089
#
# Output: $IMAGE_OUT/<name>-<version>.oci.tar (default IMAGE_OUT=target/image), tagged <version> inside the
# layout. Prints the tar's path as its last line.
#   import:  ctr -n k8s.io images import --base-name localhost/<name> <tar>
#   push:    skopeo copy oci-archive:<tar> docker://REGISTRY/<name>:<version>
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-operator}" in
  operator)
    NAME=databricks-oauth-operator
    DESCRIPTION="Kubernetes operator for Databricks OAuth connections"
    RUN=(--config.entrypoint /databricks-oauth-operator --config.cmd run) ;;
  emulator)
    NAME=databricks-emulator
    DESCRIPTION="A local Databricks account API for tests and CI (configure with DATABRICKS_EMULATOR_* variables)"
    RUN=(--config.entrypoint /databricks-emulator --config.env DATABRICKS_EMULATOR_LISTEN=0.0.0.0:8089
         --config.exposedports 8089/tcp) ;;
  *) echo "usage: $0 [operator|emulator]" >&2; exit 2 ;;
esac
TARGET=x86_64-unknown-linux-musl
IMAGE_OUT=${IMAGE_OUT:-target/image}
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The source label names the repository the image was built from (the git remote, or IMAGE_SOURCE).
source_url=${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
log() { echo "image: $*" >&2; }

# What a fresh Debian machine lacks: umoci (packs the image), the musl target and musl-gcc (ring compiles C).
missing=()
command -v umoci >/dev/null || missing+=(umoci)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "error: make image needs ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
installed=$(rustup target list --installed)
case "$installed" in *"$TARGET"*) ;; *) log "adding the Rust target $TARGET"; rustup target add "$TARGET" >&2 ;; esac

log "building $NAME $version (release, $TARGET)"
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --release --locked --target "$TARGET" --package "$NAME" --bin "$NAME" >&2
target_dir=${CARGO_TARGET_DIR:-target}
binary="$target_dir/$TARGET/release/$NAME"
# A static binary: no loader, no shared library to ship.
if readelf -d "$binary" | grep NEEDED >/dev/null; then
  echo "error: $binary is dynamically linked" >&2
  exit 1
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
cp -R hack/image/rootfs/. "$rootfs/"
install -m 0755 "$binary" "$rootfs/$NAME"
labels=(
  --config.label "org.opencontainers.image.title=$NAME"
  --config.label "org.opencontainers.image.description=$DESCRIPTION"
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
  --config.label "org.opencontainers.image.version=$version"
  --config.label "org.opencontainers.image.revision=$revision"
)
[ -n "$source_url" ] && labels+=(--config.label "org.opencontainers.image.source=$source_url")
out="$IMAGE_OUT/$NAME-$version.oci.tar"
hack/oci-pack.sh "$rootfs" "$version" "$out" \
  --config.user 65532:65532 "${RUN[@]}" --config.workingdir / "${labels[@]}"
log "wrote $out ($(du -h "$out" | cut -f1)): $NAME:$version, user 65532, revision $revision"
echo "$out"
