# databricks-oauth-operator — `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE_DIR ?= $(HOME)/.cache/databricks-oauth-operator
export DOO_CACHE_DIR := $(CACHE_DIR)
CARGO ?= cargo
BIN := databricks-oauth-operator
# Where `make bench` writes bench.json, bench.md and ready.png (the bench reads the same variable).
export BENCH_OUT ?= target/bench

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: control-plane ## Local sandbox: control plane + Databricks emulator + operator + the examples, until Ctrl-C
	$(CARGO) run --quiet --locked --package sandbox

.PHONY: test
test: fmt-check lint control-plane clients ## Everything CI runs: fmt, clippy, unit and cluster tests, the official clients against the emulator
	$(CARGO) test --all-targets --locked

.PHONY: build
build: ## Build the debug binaries
	$(CARGO) build --locked

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: fmt-check
fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

.PHONY: lint
lint: ## Clippy with warnings as errors (the e2e tests too, which `cargo test` does not build); the layers of src/ (docs/architecture.md)
	python3 hack/check-layers.py --self-test .
	python3 hack/check-layers.py .
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) clippy --test e2e --locked -- -D warnings

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	$(CARGO) run --quiet --locked --bin $(BIN) -- crds --out-dir crds
	$(CARGO) run --quiet --locked --bin $(BIN) -- crds --out-dir deploy/helm/databricks-oauth-operator/files/crds

.PHONY: image
image: ## The operator's OCI image, no Docker needed: target/image/databricks-oauth-operator-<version>.oci.tar
	@hack/build-image.sh

.PHONY: emulator-image
emulator-image: ## The Databricks emulator's OCI image, for your own CI: target/image/databricks-emulator-<version>.oci.tar
	@hack/build-image.sh emulator

.PHONY: e2e
e2e: control-plane ## Real cluster on this machine (root): containerd + kubelets, the image via Helm and kustomize, workloads on the official SDK
	hack/e2e.sh

.PHONY: control-plane
control-plane: ## Build (or reuse from the cache) the pinned kube-apiserver and etcd used by the tests
	@hack/build-control-plane.sh >/dev/null

.PHONY: clients
clients: ## Build (or reuse from the cache) the official Databricks clients checked against the emulator (hack/clients.env)
	@hack/build-go-clients.sh all >/dev/null

.PHONY: deploy
deploy: ## Render the kustomize base (apply with: kubectl apply --server-side -f crds/ && kubectl apply -k deploy/base)
	kubectl kustomize deploy/base

.PHONY: bench
bench: control-plane clients ## Scale benchmark (release): 100/1,000/10,000 principals + mixed + rate-limited, vs floors; table, JSON, Markdown and PNG in target/bench/
	$(CARGO) bench --locked --bench scale
	@hack/bench/plot.sh "$(BENCH_OUT)/bench.json" "$(BENCH_OUT)/ready.png"

.PHONY: bench-emulator
bench-emulator: ## Throughput of the Databricks emulator under a wrk load on loopback (release build)
	hack/bench-emulator.sh
