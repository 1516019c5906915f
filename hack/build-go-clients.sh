#!/usr/bin/env bash
# Builds the official Databricks clients (versions pinned in hack/clients.env) into the cache beside the control
# plane, once per version, and prints where they are as its last line:
#   sdk        the programs on the Databricks SDK for Go in hack/go (`conformance`, `consumer`), keyed by a hash of
#              their sources: the directory holding them
#   cli        the `databricks` CLI: the binary
#   terraform  Terraform: the directory holding `terraform`
#   provider   the Databricks Terraform provider: the directory holding `terraform-provider-databricks` (for a
#              `dev_overrides` CLI configuration)
#   all        all of the above (prints nothing useful; for `make clients`)
# The CLI, the provider and Terraform are built in their own module directories, with their own go.sum, as their
# releases are: `go install MODULE@VERSION` is refused here (the proxy's version list is), so the module is fetched
# with `go mod download -json MODULE@VERSION` and built where it lands.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=clients.env
. "$HERE/clients.env"
CACHE_ROOT=${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}
TOOLS="$CACHE_ROOT/tools"
mkdir -p "$TOOLS"
what=${1:-sdk}

need_go() { command -v go >/dev/null || { echo "error: Go is needed to build the official Databricks clients" >&2; exit 1; }; }
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# One build at a time (tests ask for their client concurrently); the second caller finds the first one's result.
exec 9>"$TOOLS/.build-go-clients.lock"
flock 9

module_dir() { # MODULE VERSION -> the module's source directory in the Go module cache
  local tmp dir
  tmp=$(mktemp -d)
  # -json reports a failure in its Error field (and exits non-zero): print it.
  (cd "$tmp" && go mod download -json "$1@$2" >"$tmp.json") || true
  dir=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
if d.get("Error"): sys.exit("error: cannot download %s: %s" % (sys.argv[2], d["Error"]))
print(d["Dir"])' "$tmp.json" "$1@$2") || { rm -rf "$tmp" "$tmp.json"; exit 1; }
  rm -rf "$tmp" "$tmp.json"
  [ -d "$dir" ] || { echo "error: $1@$2 was downloaded, but $dir is missing" >&2; exit 1; }
  echo "$dir"
}

# build NAME MODULE VERSION OUT [ldflags...]: go build the module's main package into OUT (atomically)
build() {
  local name=$1 module=$2 version=$3 out=$4 ldflags=${5:-} dir started
  need_go
  echo "building $name $version from $module (once; cached in $(dirname "$out"))" >&2
  started=$(date +%s)
  dir=$(module_dir "$module" "$version")
  mkdir -p "$(dirname "$out")"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "built $name in $(( $(date +%s) - started )) s" >&2
}

sdk() {
  cd "$HERE/go"
  local pinned key out
  pinned=$(awk '$1 == "require" && $2 == "github.com/databricks/databricks-sdk-go" {print $3}' go.mod)
  [ "$pinned" = "$DATABRICKS_SDK_GO" ] || {
    echo "error: hack/go/go.mod requires databricks-sdk-go $pinned, hack/clients.env pins $DATABRICKS_SDK_GO" >&2
    exit 1
  }
  key=$(cat go.mod go.sum $(find . -name '*.go' | sort) | sha256sum | cut -c1-16)
  out="$TOOLS/databricks-clients-$key"
  if ! { [ -x "$out/conformance" ] && [ -x "$out/consumer" ]; }; then
    need_go
    echo "building the Databricks SDK for Go programs ($DATABRICKS_SDK_GO)" >&2
    mkdir -p "$out"
    for program in conformance consumer; do
      go build -trimpath -ldflags "-s -w" -o "$out/$program.tmp" "./$program"
      mv "$out/$program.tmp" "$out/$program"
    done
  fi
  cd - >/dev/null
  echo "$out"
}

cli() {
  local out="$TOOLS/databricks-cli-$DATABRICKS_CLI/databricks"
  [ -x "$out" ] || build "the databricks CLI" github.com/databricks/cli "$DATABRICKS_CLI" "$out" \
    "-X github.com/databricks/cli/internal/build.buildVersion=${DATABRICKS_CLI#v}"
  echo "$out"
}

terraform() {
  local out="$TOOLS/terraform-$TERRAFORM"
  [ -x "$out/terraform" ] || build terraform github.com/hashicorp/terraform "$TERRAFORM" "$out/terraform" \
    "-X github.com/hashicorp/terraform/version.dev=no"
  echo "$out"
}

provider() {
  local out="$TOOLS/terraform-provider-databricks-$TERRAFORM_PROVIDER_DATABRICKS"
  [ -x "$out/terraform-provider-databricks" ] || build "the Databricks Terraform provider" \
    github.com/databricks/terraform-provider-databricks "$TERRAFORM_PROVIDER_DATABRICKS" \
    "$out/terraform-provider-databricks"
  echo "$out"
}

case "$what" in
  sdk) sdk ;;
  cli) cli ;;
  terraform) terraform ;;
  provider) provider ;;
  all) sdk >/dev/null; cli >/dev/null; terraform >/dev/null; provider >/dev/null; echo "$TOOLS" ;;
  *) echo "usage: $0 sdk|cli|terraform|provider|all" >&2; exit 2 ;;
esac
