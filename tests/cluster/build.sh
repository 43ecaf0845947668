#!/usr/bin/env bash
# Build the test control plane's binaries from Go modules into a per-version cache outside the
# checkout, and print the directory that holds them (last stdout line).
#
#   build.sh [k8s] [etcd] [helm] [kstatus] [promtool] [prometheus-operator]
#            [source-controller] [kustomize-controller] [gittestserver]   (default: all of these)
#   build.sh node     kubelet and kube-scheduler, for the tests that run pods (tests/node/);
#                     never built by default, so the node-less tests do not pay for it
#   build.sh crbase   the controller-runtime peer operator that `make bench` compares with
#                     (BENCH_ONLY=sidebyside), built from its source outside the repository:
#                     CRBASE_SRC, default <repo>/../shared/peers/crbase (read-only there; its
#                     modules come from the Go module proxy). Never built by default.
#
# prometheus-operator is not built: its module holds the monitoring.coreos.com CRDs
# (ServiceMonitor, PodMonitor, PrometheusRule) that the chart's monitors are validated against.
# source-controller and kustomize-controller are Flux's controllers; each also brings its CRDs
# (GitRepository, Kustomization, ...) out of its module zip. gittestserver is our small git
# server over smart HTTP, on Flux's gittestserver package.
#
# Each component gets its own directory named after its version and a hash of its go.mod, go.sum,
# this script and the Go version, so any bump builds anew and a hit costs nothing. Builds go to a
# temporary directory and are moved into place whole, under a lock.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
HELM_VERSION=v4.3.1
PROMETHEUS_VERSION=v0.315.1            # promtool; go.mod pins the same version
PROMETHEUS_OPERATOR_VERSION=v0.85.0    # its CRDs; go.mod pins the same version
# Flux: the newest releases whose go.mod builds with Go 1.26 (1.10.x needs Go 1.27); go.mod pins
# the same versions.
SOURCE_CONTROLLER_VERSION=v1.9.6
KUSTOMIZE_CONTROLLER_VERSION=v1.9.6
BUILD_DATE=2026-11-01T00:00:00Z   # fixed, so builds are reproducible

repo=$(cd "$here/../.." && pwd)
CRBASE_SRC=${CRBASE_SRC:-$repo/../shared/peers/crbase}

cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oneinbox-operator/testenv}
bin=$cache/bin
mkdir -p "$cache" "$bin"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(k8s etcd helm kstatus promtool prometheus-operator
  source-controller kustomize-controller gittestserver)

log() { echo "build.sh: $*" >&2; }

hash_of() { # module dir: go.mod, go.sum, our own Go sources (kstatus, gittestserver), this script,
  # the Go version
  { cat "$here/$1/go.mod" "$here/$1/go.sum" "$here/build.sh"; cat "$here/$1"/*.go 2>/dev/null; go env GOVERSION; } |
    sha256sum | cut -c1-12
}

crbase_hash() { # its go.mod, go.sum and Go sources (it is not ours: not in the repository), this
  # script, the Go version
  [ -f "$CRBASE_SRC/go.mod" ] || { log "no crbase source at $CRBASE_SRC (set CRBASE_SRC)"; exit 2; }
  { cat "$CRBASE_SRC/go.mod" "$CRBASE_SRC/go.sum" "$here/build.sh" "$CRBASE_SRC"/*.go; go env GOVERSION; } |
    sha256sum | cut -c1-12
}

dir_for() {
  case $1 in
    crbase) echo "$cache/crbase-$(crbase_hash)" ;;
    k8s) echo "$cache/k8s-$K8S_VERSION-$(hash_of k8s)" ;;
    node) echo "$cache/node-$K8S_VERSION-$(hash_of k8s)" ;;
    etcd) echo "$cache/etcd-$ETCD_VERSION-$(hash_of etcd)" ;;
    helm) echo "$cache/helm-$HELM_VERSION-$(hash_of helm)" ;;
    kstatus) echo "$cache/kstatus-$(hash_of kstatus)" ;;
    promtool) echo "$cache/promtool-$PROMETHEUS_VERSION-$(hash_of promtool)" ;;
    prometheus-operator) echo "$cache/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-$(hash_of prometheus-operator)" ;;
    source-controller) echo "$cache/source-controller-$SOURCE_CONTROLLER_VERSION-$(hash_of source-controller)" ;;
    kustomize-controller) echo "$cache/kustomize-controller-$KUSTOMIZE_CONTROLLER_VERSION-$(hash_of kustomize-controller)" ;;
    gittestserver) echo "$cache/gittestserver-$(hash_of gittestserver)" ;;
    *) log "unknown component $1"; exit 2 ;;
  esac
}

k8s_build() { # out-dir main-packages...: the k8s wrapper module, stamped with the version
  local out=$1 ld="-s -w" minor=${K8S_VERSION#v1.}; shift
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  (cd "$here/k8s" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$out/" "$@")
}

build_one() { # component out-dir
  local c=$1 out=$2
  case $c in
    k8s)
      k8s_build "$out" k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl ;;
    node)
      # Same module and pins as kube-apiserver, so the node's version is the plane's.
      k8s_build "$out" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler ;;
    etcd)
      (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) ;;
    helm)
      (cd "$here/helm" && go build -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        -o "$out/helm" helm.sh/helm/v4/cmd/helm) ;;
    kstatus)
      (cd "$here/kstatus" && go build -trimpath -ldflags "-s -w" -o "$out/kstatus" .) ;;
    promtool)
      # Only cmd/promtool; the version stamp is what `promtool --version` prints.
      (cd "$here/promtool" && go build -trimpath \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" \
        -o "$out/promtool" github.com/prometheus/prometheus/cmd/promtool) ;;
    prometheus-operator)
      # The module zip (checked against go.sum) ships the CRDs as plain YAML.
      local src
      src=$(cd "$here/prometheus-operator" &&
        go mod download -json github.com/prometheus-operator/prometheus-operator |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
      [ -d "$src/example/prometheus-operator-crd" ] || { log "no CRDs in $src"; exit 1; }
      mkdir -p "$out/prometheus-operator-crds"
      for k in servicemonitors podmonitors prometheusrules; do
        cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" "$out/prometheus-operator-crds/"
      done ;;
    source-controller | kustomize-controller)
      # The controller, and its CRDs from the module zip (checked against go.sum). The
      # source-controller runs a reconciler for each of its kinds, so it needs all of them.
      (cd "$here/$c" && go build -trimpath -ldflags "-s -w" -o "$out/$c" "github.com/fluxcd/$c")
      local src
      src=$(cd "$here/$c" && go mod download -json "github.com/fluxcd/$c" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
      [ -d "$src/config/crd/bases" ] || { log "no CRDs in $src"; exit 1; }
      mkdir -p "$out/$c-crds"
      cp "$src"/config/crd/bases/*.yaml "$out/$c-crds/" ;;
    crbase)
      # Its directory is read-only: -mod=mod resolves what its go.sum does not pin without
      # writing there (the build needs nothing else from it).
      (cd "$CRBASE_SRC" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go build -trimpath \
        -ldflags "-s -w" -o "$out/crbase" .) ;;
    gittestserver)
      (cd "$here/gittestserver" && go build -trimpath -ldflags "-s -w" -o "$out/gittestserver" .) ;;
  esac
}

exec 9>"$cache/.lock"
if ! flock -n 9; then
  log "waiting for another build of the test tools to finish (lock $cache/.lock)"
  flock 9
fi
for c in "${components[@]}"; do
  d=$(dir_for "$c")
  if [ ! -d "$d" ]; then
    log "building $c into $d"
    start=$(date +%s)
    rm -rf "$d.tmp.$$"; mkdir -p "$d.tmp.$$"
    build_one "$c" "$d.tmp.$$"
    mv "$d.tmp.$$" "$d"
    log "built $c in $(( $(date +%s) - start ))s"
  fi
  # bin/ holds links to the current version of every component.
  for f in "$d"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
done
echo "$bin"
