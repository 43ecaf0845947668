# The two commands of the README: `make demo` and `make test`. Everything else is a building block.
SHELL := /usr/bin/env bash
CARGO ?= cargo
export TESTENV_STATE ?= $(CURDIR)/target/testenv

.PHONY: test demo demo-down cluster-up cluster-down tools lint fmt crds verify-crds unit e2e mock operator deny audit sbom node-e2e

## make test: fmt check, clippy -D warnings, unit + contract tests, e2e against the real control plane.
test:
	tests/run-tests.sh

## make demo: control plane + mock API + operator + sample PhoneNumbers, ending with them Ready.
demo:
	tests/demo.sh up

demo-down:
	tests/demo.sh down

## Build what is missing, start etcd + kube-apiserver + kube-controller-manager; print the kubeconfig.
cluster-up:
	@tests/cluster/up.sh

## Stops the plane, and the node if one runs (tests/cluster/node-up.sh).
cluster-down:
	@tests/cluster/down.sh

## make node-e2e: the image (Dockerfile) installed by the Helm chart on a real node: kubelet,
## containerd, runc; needs root. Starts and stops what it needs; see tests/node/run.sh.
node-e2e:
	tests/node/run.sh

## Build (or reuse from the cache) the Go-built tools and print their directory.
tools:
	@tests/cluster/build.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) clippy --all-features --test bench --test soak --test model --test node -- -D warnings

## Regenerate the CRDs from the Rust types, and the chart's CRD template from them.
CRD_PLURALS := phonenumbers oneinboxaccounts clusteroneinboxaccounts

crds:
	for p in $(CRD_PLURALS); do \
	  $(CARGO) run --quiet --bin crdgen $$p > crds/$$p.oneinbox.ai.yaml || exit 1; \
	done
	tests/chart-crds.sh > charts/oneinbox-operator/templates/crds.yaml

unit:
	$(CARGO) test --workspace --all-features --lib --bins

## Licences, banned crates and sources of every dependency (.deny.toml); offline, part of make test.
deny:
	@tests/ensure-tools.sh
	$(CARGO) fetch --locked --quiet
	$(CARGO) deny --frozen check --hide-inclusion-graph licenses bans sources

## make audit: make deny plus the RustSec advisories; needs the network (fetches the advisory database).
audit:
	@tests/ensure-tools.sh
	$(CARGO) deny --locked check --hide-inclusion-graph advisories licenses bans sources

## make sbom: CycloneDX SBOM of the image's binary (static musl oneinbox-operator, no mock-server)
## into target/sbom/; see tests/sbom.sh.
sbom:
	tests/sbom.sh

## make release [RELEASE_KEY=key.pem]: the chart (helm package), the image as an OCI archive,
## the CRDs, the CycloneDX SBOM and SHA256SUMS in target/release-artifacts/<version>/, each
## signed with RELEASE_KEY (ECDSA P-256, cosign's blob-signature format); see docs/release.md.
.PHONY: release
release:
	tests/release.sh $(if $(RELEASE_KEY),--key $(RELEASE_KEY))

## Regenerate charts/oneinbox-operator/files/argocd/argocd-cm.yaml from resource_customizations/.
.PHONY: argocd-cm
argocd-cm:
	cd tests/argocd && GOTOOLCHAIN=local GOWORK=off go test ./... -run TestConfigMap -update

.PHONY: chaos bench bench-side model mutants profile

## make model: long model-based campaign (docs/model-test.md); prints the count of cases run.
## MODEL_CASES=1000000 MODEL_SEED MODEL_STEPS MODEL_KEEP_GOING=1.
model:
	MODEL_CASES=$${MODEL_CASES:-1000000} $(CARGO) test --profile model --all-features --test model -- --nocapture

## make mutants: the mutation table (docs/model-test.md): realistic defects applied one at a time
## to a scratch copy under target/mutants/, the model gate run on each; fails if one is missed.
## MUTANTS_ONLY=name,name (names in tests/mutants.sh).
mutants:
	tests/mutants.sh

## make chaos: chaos soak against the real control plane and the faulty mock (release build).
## CHAOS_OBJECTS=200 CHAOS_MINUTES=5 CHAOS_HA=0|1 CHAOS_KILLS CHAOS_SEED (see tests/soak/main.rs).
chaos:
	@TESTENV_CRDS=$(CURDIR)/crds tests/cluster/up.sh >/dev/null
	$(CARGO) test --release --features e2e --test soak

## make bench: benchmarks; figures go to docs/benchmarks.md (BENCH_N=1000 BENCH_REPEATS=3
## BENCH_STEADY_SECS=600 BENCH_FOOTPRINT_N=10000 BENCH_ONLY=burst,nolimit,latency,fairness,footprint;
## also sidebyside, see bench-side).
bench:
	@TESTENV_CRDS=$(CURDIR)/crds tests/cluster/up.sh >/dev/null
	$(CARGO) test --release --features e2e --test bench

## make bench-side: ours and crbase (../shared/peers/crbase, built into the tool cache by
## tests/cluster/build.sh crbase) alternating on one control plane and mock, no rate limit;
## writes target/bench/sidebyside-<N>[-hog].md for docs/benchmarks.md. BENCH_SIDE_N=3000
## BENCH_SIDE_PAIRS=2 BENCH_SIDE_HOG=0|1 BENCH_SIDE_CONCURRENCY=16 BENCH_SIDE_LATENCY_MS=0.
bench-side:
	@TESTENV_CRDS=$(CURDIR)/crds tests/cluster/up.sh >/dev/null
	BENCH_ONLY=sidebyside $(CARGO) test --release --features e2e --test bench

## make bench-node: the chart's pod on the node under its default memory limit with
## NODE_SCALE_N (10,000) PhoneNumbers and Secrets, then a restart; needs root; writes
## target/bench/node-scale.md for docs/benchmarks.md (tests/node/scale.rs).
.PHONY: bench-node
bench-node:
	tests/node/run.sh --ignored scale:: --nocapture

## make profile: the footprint benchmark (10,000 creates, no rate limit) with perf sampling the
## release operator from the first apply to all Ready; writes target/bench/flamegraph.svg and
## the top functions to target/bench/profile-top.txt. Needs perf, and inferno (installed here).
profile:
	@command -v inferno-flamegraph >/dev/null || $(CARGO) install inferno --locked
	@TESTENV_CRDS=$(CURDIR)/crds tests/cluster/up.sh >/dev/null
	BENCH_ONLY=footprint BENCH_IDLE_SECS=0 BENCH_PROFILE=$(CURDIR)/target/bench/perf.data \
	  $(CARGO) test --release --features e2e --test bench
	perf script -i target/bench/perf.data 2>/dev/null | inferno-collapse-perf > target/bench/stacks.folded
	inferno-flamegraph --title "oneinbox-operator: 10,000 creates" < target/bench/stacks.folded > target/bench/flamegraph.svg
	perf report -i target/bench/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40 > target/bench/profile-top.txt
	@cat target/bench/profile-top.txt
