#!/usr/bin/env bash
# Builds the programs on the official Databricks SDK for Go (hack/go: `conformance`, `consumer`; the SDK version is
# pinned once, in hack/go/go.mod) into the cache, keyed by a hash of their sources, so they are built once per
# change. Prints the directory holding the binaries as its last line.
set -euo pipefail
cd "$(dirname "$0")/go"
CACHE_ROOT=${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}
key=$(cat go.mod go.sum $(find . -name '*.go' | sort) | sha256sum | cut -c1-16)
OUT="$CACHE_ROOT/tools/databricks-clients-$key"
if [ -x "$OUT/conformance" ] && [ -x "$OUT/consumer" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "error: Go is needed to build the Databricks SDK for Go programs" >&2; exit 1; }
echo "building the Databricks SDK for Go programs ($(awk '/databricks-sdk-go/ {print $2; exit}' go.mod))" >&2
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
for program in conformance consumer; do
  go build -trimpath -ldflags "-s -w" -o "$OUT/$program.tmp" "./$program"
  mv "$OUT/$program.tmp" "$OUT/$program"
done
echo "$OUT"
