#!/usr/bin/env bash
# `make demo`: control plane + mock OneInbox API + operator + the sample PhoneNumbers, ending
# with them Ready. `make demo-down` stops all of it.
#
# Everything runs as local processes; state, logs and PIDs live in $TESTENV_STATE
# (default target/testenv): mock.log, operator.log, mock.pid, operator.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
export TESTENV_STATE=${TESTENV_STATE:-$PWD/target/testenv}
state=$TESTENV_STATE
mock_port=${DEMO_MOCK_PORT:-18080}
admin_port=${DEMO_ADMIN_PORT:-18081}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

stop_pid() { # file
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

if [ "${1:-up}" = down ]; then
  stop_pid "$state/operator.pid"
  stop_pid "$state/mock.pid"
  tests/cluster/down.sh
  exit 0
fi

tests/ensure-tools.sh --no-cargo-deny
say "building the operator and the mock OneInbox API"
# The features `make test` builds the binaries with: after it, this build has nothing to do.
cargo build --quiet --all-features -p oneinbox-operator --bin oneinbox-operator
cargo build --quiet -p oneinbox-mock --bin oneinbox-mock

say "starting the control plane (first run builds kube-apiserver, etcd, kubectl from Go modules)"
kubeconfig=$(TESTENV_CRDS=$PWD/crds TESTENV_TOOLS="k8s etcd" tests/cluster/up.sh | tail -n1)
kubectl() { "$state/bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

say "installing the CRDs and the operator's RBAC"
kubectl apply --server-side -f crds/ >/dev/null
# kubectl wait fails at once (not after its timeout) on a CRD whose status has no conditions
# yet, a race right after the apply: try again until the API server has written them.
established="crd/phonenumbers.oneinbox.ai crd/oneinboxaccounts.oneinbox.ai crd/clusteroneinboxaccounts.oneinbox.ai"
for _ in 1 2 3 4 5 6 7 8 9; do
  # shellcheck disable=SC2086
  kubectl wait --for=condition=Established $established --timeout=60s >/dev/null 2>&1 && break
  sleep 1
done
# shellcheck disable=SC2086
kubectl wait --for=condition=Established $established --timeout=60s >/dev/null
kubectl apply --server-side -f deploy/namespace.yaml -f deploy/rbac.yaml >/dev/null

api_key="oi_sk_demo_$(openssl rand -hex 12)"
say "starting the mock OneInbox API on http://127.0.0.1:$mock_port"
stop_pid "$state/mock.pid"
# A second workspace for the support team's account (deploy/samples/30-account.yaml).
setsid target/debug/oneinbox-mock --listen "127.0.0.1:$mock_port" --latency-ms 150 \
  --workspace support=oi_sk_demo_support_workspace \
  >"$state/mock.out" 2>"$state/mock.log" </dev/null &
echo $! > "$state/mock.pid"
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$mock_port/_mock/config" >/dev/null 2>&1 && break; sleep 0.2; done

# The demo operator watches only the samples' namespace, so that `make test` can run beside it.
say "starting the operator (namespace oneinbox-demo) as system:serviceaccount:oneinbox-system:oneinbox-operator (RBAC from deploy/rbac.yaml)"
stop_pid "$state/operator.pid"
KUBECONFIG="$state/kubeconfig-operator" ONEINBOX_API_KEY="$api_key" \
  setsid target/debug/oneinbox-operator run --api-url "http://127.0.0.1:$mock_port" --allow-insecure-http \
  --admin-addr "127.0.0.1:$admin_port" --secret-grace-period 30s --watch-namespace oneinbox-demo \
  >/dev/null 2>"$state/operator.log" </dev/null &
echo $! > "$state/operator.pid"
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

say "applying deploy/samples/"
kubectl apply -f deploy/samples/
if [ -d deploy/samples/invalid ]; then
  say "applying deploy/samples/invalid/ — the API server refuses it, naming the field:"
  kubectl apply -f deploy/samples/invalid/ || true
fi

say "waiting for the samples to be Ready"
kubectl wait --for=condition=Ready phonenumbers --all -n oneinbox-demo --timeout=120s >/dev/null
kubectl get pn -n oneinbox-demo -o wide
kubectl wait --for=condition=Ready oneinboxaccounts --all -n oneinbox-demo --timeout=60s >/dev/null
echo
kubectl get oneinboxaccounts -n oneinbox-demo

cat >&2 <<MSG

Demo running. Try:
  export KUBECONFIG=$kubeconfig
  alias kubectl=$state/bin/kubectl
  kubectl get pn -n oneinbox-demo -o wide                     # Ready, with the OneInbox ids
  kubectl -n oneinbox-demo describe pn                        # conditions and events
  curl -s http://127.0.0.1:$mock_port/_mock/phone-numbers     # what the mock OneInbox holds
  curl -s http://127.0.0.1:$mock_port/_mock/workspaces/support/phone-numbers   # the support account's workspace
  kubectl get oia -n oneinbox-demo                            # the account: Ready, PhoneNumbers
  curl -s http://127.0.0.1:$mock_port/_mock/calls             # API calls by endpoint
  curl -s http://127.0.0.1:$admin_port/metrics                 # operator metrics
  tail -f $state/operator.log
Stop everything with: make demo-down
MSG
