#!/usr/bin/env bash
# `make test`: every gate, in order of cost. Brings the test control plane up for the tests that
# need it and stops it again (unless it was already running, e.g. for `make demo`, or
# TESTENV_KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export TESTENV_STATE=${TESTENV_STATE:-$PWD/target/testenv}
export GOTOOLCHAIN=local GOWORK=off

step() { printf '\n==> %s\n' "$*" >&2; }

tests/ensure-tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
# --all-targets leaves out the harness targets (test = false); name them.
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo clippy --all-features --test bench --test soak --test model --test cost --test node --locked -- -D warnings

step "CRDs are generated from the Rust types (verify twin)"
for plural in phonenumbers oneinboxaccounts clusteroneinboxaccounts; do
  cargo run --quiet --locked --bin crdgen "$plural" | diff -u "crds/$plural.oneinbox.ai.yaml" - \
    || { echo "crds/ is stale: run 'make crds'" >&2; exit 1; }
done
tests/chart-crds.sh | diff -u charts/oneinbox-operator/templates/crds.yaml - \
  || { echo "the chart's CRD template is stale: run 'make crds'" >&2; exit 1; }

step "supply chain: licences, banned crates, sources (cargo-deny, offline; advisories: make audit)"
# cargo-deny reads the crates of every target in Cargo.lock (Windows, wasm), which a build on
# this machine never downloads: fetch them first (from the registry, pinned by the lock file).
cargo fetch --locked --quiet
cargo deny --frozen check --hide-inclusion-graph licenses bans sources

step "control plane"
started_here=0
if ! [ -f "$TESTENV_STATE/kube-apiserver.pid" ] || ! kill -0 "$(cat "$TESTENV_STATE/kube-apiserver.pid")" 2>/dev/null; then
  started_here=1
fi
cleanup() {
  # A node is never left running, even on a plane this run did not start.
  if [ "$started_here" = 0 ] || [ "${TESTENV_KEEP:-0}" = 1 ]; then
    tests/cluster/down.sh --node-only
  fi
  if [ "$started_here" = 1 ] && [ "${TESTENV_KEEP:-0}" != 1 ]; then
    step "stopping the control plane"
    pids=$(cat "$TESTENV_STATE"/*.pid 2>/dev/null || true)
    tests/cluster/down.sh
    for pid in $pids; do
      if kill -0 "$pid" 2>/dev/null; then echo "cluster-down left process $pid behind" >&2; exit 1; fi
    done
  fi
}
trap cleanup EXIT
TESTENV_CRDS=$PWD/crds tests/cluster/up.sh >/dev/null

if [ -d tests/argocd ]; then
  step "Argo CD health and actions (gopher-lua)"
  # -count=1: the test reads src/, which Go's test cache does not track.
  (cd tests/argocd && go test -count=1 ./...)
fi

step "static binary of the image (musl), as the Dockerfile builds it"
tests/static-build.sh

step "model-based lifecycle test (10,000 seeded cases; the long campaign is make model)"
# A fixed first seed: the gate replays the same 10,000 cases on every machine; a failure names
# its seed and the shrunk sequence. make model explores new seeds.
MODEL_SEED=${MODEL_SEED:-1} MODEL_CASES=${MODEL_CASES:-10000} \
  cargo test --quiet --locked --all-features --test model

step "cargo test (unit, mocked apiserver, mock contract, e2e on the real control plane, chart)"
log=$(mktemp)
set +e
cargo build --quiet --locked -p oneinbox-mock
cargo test --workspace --all-features --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
step "the chart and the image on a real node (tests/node: kubelet, containerd, runc; needs root)"
# Starts the node once (tests/cluster/node-up.sh); the cleanup below stops it with the plane.
cargo test --locked --all-features --test node -- --test-threads=1 2>&1 | tee -a "$log"
node_status=${PIPESTATUS[0]}
[ "$node_status" = 0 ] || status=$node_status
set -e
read -r passed failed < <(awk '/^test result:/ {p += $4; f += $6} END {print p + 0, f + 0}' "$log")
rm -f "$log"
# Stop the control plane now, so that the summary is the last line.
trap - EXIT
cleanup
echo
echo "cargo: $passed passed, $failed failed"
exit "$status"
