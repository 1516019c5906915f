#!/usr/bin/env bash
# Builds a pinned helm from Go modules into the cache (no download site is reachable here); prints its path.
set -euo pipefail
HELM_VERSION=v3.22.0
CACHE_ROOT=${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}
OUT="$CACHE_ROOT/tools/helm-$HELM_VERSION"
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "error: Go is needed to build helm" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
go mod init doo.local/helm >/dev/null 2>&1
go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null 2>&1 || go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mkdir -p "$(dirname "$OUT")"
echo "building helm $HELM_VERSION (a few minutes on first run)" >&2
go build -trimpath -ldflags "-s -w" -o "$OUT.tmp" helm.sh/helm/v3/cmd/helm
mv "$OUT.tmp" "$OUT"
echo "$OUT"
