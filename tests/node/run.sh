#!/usr/bin/env bash
# `make node-e2e`: the chart and the image on a real node (tests/node/main.rs). Starts the control
# plane if it is not running, and the node once; afterwards stops what it started (the whole plane,
# or only the node if the plane was already up) and checks that no host state is left behind.
# Arguments go to the test binary, e.g. `tests/node/run.sh probes::` runs the probe tests only.
set -euo pipefail
cd "$(dirname "$0")/../.."
export TESTENV_STATE=${TESTENV_STATE:-$PWD/target/testenv}
export GOTOOLCHAIN=local GOWORK=off
[ "$(id -u)" = 0 ] || { echo "make node-e2e needs root (kubelet, containerd, bridge, iptables)" >&2; exit 1; }

started_here=0
if ! [ -f "$TESTENV_STATE/kube-apiserver.pid" ] || ! kill -0 "$(cat "$TESTENV_STATE/kube-apiserver.pid")" 2>/dev/null; then
  started_here=1
fi
leftovers() { # what a stopped node must not leave: prints each, fails if any
  local bad=0 bridge=$1
  if ip link show "$bridge" >/dev/null 2>&1; then echo "left behind: bridge $bridge" >&2; bad=1; fi
  if grep -q " $TESTENV_STATE/node" /proc/self/mounts; then echo "left behind: mounts under $TESTENV_STATE/node" >&2; bad=1; fi
  for p in /var/lib/kubelet /var/lib/cni /var/log/containers /usr/libexec/kubernetes; do
    if [ -e "$p" ]; then echo "left behind: $p" >&2; bad=1; fi
  done
  if iptables-save 2>/dev/null | grep -q 'KUBE-FIREWALL\|KUBE-KUBELET-CANARY\|oneinbox-testenv-node'; then
    echo "left behind: iptables rules" >&2; bad=1
  fi
  if ls -d /sys/fs/cgroup/*/oneinbox-testenv-node >/dev/null 2>&1; then echo "left behind: cgroups" >&2; bad=1; fi
  return $bad
}
cleanup() {
  local status=$? bridge pids
  bridge=$( (. "$TESTENV_STATE/node.env" 2>/dev/null && echo "$bridge") || echo oitestnode0)
  pids=$(cat "$TESTENV_STATE"/node-*.pid 2>/dev/null || true)
  if [ "$started_here" = 1 ] && [ "${TESTENV_KEEP:-0}" != 1 ]; then
    pids="$pids $(cat "$TESTENV_STATE"/*.pid 2>/dev/null || true)"
    tests/cluster/down.sh
  else
    tests/cluster/down.sh --node-only
  fi
  for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then echo "left behind: process $pid" >&2; status=1; fi
  done
  leftovers "$bridge" || status=1
  exit $status
}
trap cleanup EXIT
TESTENV_CRDS=$PWD/crds tests/cluster/up.sh >/dev/null
cargo test --locked --features e2e --test node -- --test-threads=1 "$@"
