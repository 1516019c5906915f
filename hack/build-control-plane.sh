#!/usr/bin/env bash
# Builds the pinned test control plane (kube-apiserver + etcd, kubectl with WITH_KUBECTL=1, and the node's
# kubelet, kube-controller-manager and kube-scheduler with WITH_NODE=1) from Go modules and caches the binaries
# outside the clone, so later runs (and CI on the same machine) reuse them. Prints the directory holding the
# binaries as its last line.
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 and only replaces them inside its own repository,
# so a consumer needs a wrapper module that replaces each staging module with the matching v0.Y.Z release.
# etcd gets its own wrapper module so the two dependency graphs never mix.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=control-plane.versions
. "$here/control-plane.versions"
CACHE_ROOT=${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}
OUT="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
WITH_KUBECTL=${WITH_KUBECTL:-0}
WITH_NODE=${WITH_NODE:-0}
NODE_COMMANDS="kubelet kube-controller-manager kube-scheduler"

need_apiserver=1; need_etcd=1; need_kubectl=0; need_node=""
[ -x "$OUT/kube-apiserver" ] && need_apiserver=0
[ -x "$OUT/etcd" ] && need_etcd=0
[ "$WITH_KUBECTL" = 1 ] && [ ! -x "$OUT/kubectl" ] && need_kubectl=1
if [ "$WITH_NODE" = 1 ]; then
  for cmd in $NODE_COMMANDS; do [ -x "$OUT/$cmd" ] || need_node="$need_node $cmd"; done
fi
if [ $need_apiserver = 0 ] && [ $need_etcd = 0 ] && [ $need_kubectl = 0 ] && [ -z "$need_node" ]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is needed to build the test control plane" >&2; exit 1; }
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
log() { echo "control-plane: $*" >&2; }

build_kubernetes() { # $1 = command name under k8s.io/kubernetes/cmd
  local cmd=$1 dir="$work/kubernetes"
  if [ ! -f "$dir/go.sum" ]; then
    mkdir -p "$dir" && cd "$dir"
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    local gomod minor staging
    gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
    minor=${K8S_VERSION#v1.}
    # Every module the kubernetes go.mod replaces with ./staging/... is published as v0.<minor>.
    staging=$(awk '/=> \.\/staging\// {print $1}' "$gomod" | sort -u)
    {
      echo "module doo.local/kubernetes"
      echo
      echo "go $(awk '/^go / {print $2; exit}' "$gomod")"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      for m in $staging; do echo "	$m => $m v0.$minor"; done
      echo ")"
    } > go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go mod tidy >/dev/null 2>&1 || go mod tidy
  fi
  cd "$dir"
  local minor=${K8S_VERSION#v1.}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$OUT/$cmd.tmp" "$OUT/$cmd"
}

if [ $need_apiserver = 1 ]; then
  log "building kube-apiserver $K8S_VERSION (about 6 minutes on a cold machine)"
  build_kubernetes kube-apiserver
fi
if [ $need_kubectl = 1 ]; then
  log "building kubectl $K8S_VERSION"
  build_kubernetes kubectl
fi
for cmd in $need_node; do
  log "building $cmd $K8S_VERSION (the kubelet takes about 20 minutes on a cold machine)"
  build_kubernetes "$cmd"
done

if [ $need_etcd = 1 ]; then
  log "building etcd $ETCD_VERSION"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  cat > go.mod <<GOMOD
module doo.local/etcd

go 1.24
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy >/dev/null 2>&1 || go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .
  mv "$OUT/etcd.tmp" "$OUT/etcd"
fi

"$OUT/kube-apiserver" --version >&2
# sed, not head: head exits after one line and etcd may still be writing (SIGPIPE, exit 141 under pipefail).
"$OUT/etcd" --version 2>&1 | sed -n 1p >&2
echo "$OUT"
