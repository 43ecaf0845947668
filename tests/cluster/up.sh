#!/usr/bin/env bash
# Start the test control plane: etcd, kube-apiserver and a kube-controller-manager limited to the
# namespace, garbage-collector and clusterrole-aggregation controllers, all on 127.0.0.1, built from Go modules (build.sh).
# Prints the admin kubeconfig's absolute path as the last stdout line; logs go to stderr.
#
# Idempotent: if the plane recorded in the state dir is running and ready, it is reused.
#
# Environment:
#   TESTENV_STATE      state dir (default: <repo>/target/testenv): etcd data, pki, tokens, kubeconfigs,
#                      pids, logs/
#   TESTENV_ETCD_PORT / TESTENV_ETCD_PEER_PORT / TESTENV_APISERVER_PORT  (12379 / 12380 / 16443;
#                      a default that is taken is replaced by a free port, recorded in ports.env)
#   TESTENV_OPERATOR_NS / TESTENV_OPERATOR_SA  identity of the operator token
#                      (oneinbox-system / oneinbox-operator)
#   TESTENV_CRDS       optional: a file or dir of CRDs applied before KCM starts (GC discovery)
#   TESTENV_APISERVER_ARGS  optional: more kube-apiserver flags, split on spaces (e.g.
#                      --feature-gates=WatchList=false: a server without streaming lists)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${TESTENV_STATE:-$repo/target/testenv}
# A running plane's ports are recorded in its state dir.
if [ -f "$state/ports.env" ]; then . "$state/ports.env"; fi
etcd_port=${TESTENV_ETCD_PORT:-${saved_etcd_port:-12379}}
etcd_peer_port=${TESTENV_ETCD_PEER_PORT:-${saved_etcd_peer_port:-12380}}
api_port=${TESTENV_APISERVER_PORT:-${saved_api_port:-16443}}
op_ns=${TESTENV_OPERATOR_NS:-oneinbox-system}
op_sa=${TESTENV_OPERATOR_SA:-oneinbox-operator}
server=https://127.0.0.1:$api_port

log() { echo "up.sh: $*" >&2; }

tails() {
  for f in "$state"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "----- tail of $f" >&2; tail -n 40 "$f" >&2
  done
}

fail() { log "FAILED: $*"; tails; exit 1; }

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

admin_get() { # path
  curl -fsS --max-time 5 --cacert "$state/pki/apiserver.crt" \
    -H "Authorization: Bearer $(cut -d, -f1 "$state/tokens.csv" | head -n1)" "$server$1"
}

# poll DEADLINE_SECONDS WHAT CMD...
poll() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.5
  done
}

# The Go-built tools: all that the tests use unless TESTENV_TOOLS names fewer (make demo:
# "k8s etcd"). Built before a running plane is reused, so that a plane the demo started serves
# the tests too (a cached tool costs nothing).
read -r -a tools <<<"${TESTENV_TOOLS:-k8s etcd kstatus helm promtool prometheus-operator source-controller kustomize-controller gittestserver}"
bin=$("$here/build.sh" "${tools[@]}" | tail -n1)

# Reuse a running plane.
if alive etcd && alive kube-apiserver && alive kube-controller-manager \
   && [ -f "$state/kubeconfig" ] && admin_get /readyz >/dev/null 2>&1; then
  log "reusing the running control plane in $state"
  echo "$state/kubeconfig"
  exit 0
fi


# A half-started plane from an earlier run is stopped first.
TESTENV_STATE=$state "$here/down.sh" >&2 || true

# A default port that is taken is replaced by a free one; a port set explicitly must be free.
in_use() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    in_use "$p" || { echo "$p"; return 0; }
  done
  fail "no free port found"
}
for var in etcd_port:TESTENV_ETCD_PORT etcd_peer_port:TESTENV_ETCD_PEER_PORT api_port:TESTENV_APISERVER_PORT; do
  name=${var%%:*} env=${var#*:}
  if in_use "${!name}"; then
    [ -z "${!env:-}" ] || fail "port ${!name} ($env) is in use"
    printf -v "$name" '%s' "$(free_port)"
    log "default port taken; using ${!name} for $name"
  fi
done
server=https://127.0.0.1:$api_port

rm -rf "$state"; mkdir -p "$state/logs" "$state/pki" "$state/etcd"
chmod 700 "$state"
printf 'saved_etcd_port=%s\nsaved_etcd_peer_port=%s\nsaved_api_port=%s\n' "$etcd_port" "$etcd_peer_port" "$api_port" > "$state/ports.env"
ln -sfn "$bin" "$state/bin"
openssl genrsa -out "$state/sa.key" 2048 2>/dev/null
admin_token=$(openssl rand -hex 24)
operator_token=$(openssl rand -hex 24)
nobody_token=$(openssl rand -hex 24)
kcm_token=$(openssl rand -hex 24)
cat > "$state/tokens.csv" <<CSV
$admin_token,admin,admin-uid,"system:masters"
$operator_token,system:serviceaccount:$op_ns:$op_sa,operator-uid,"system:serviceaccounts,system:serviceaccounts:$op_ns"
$nobody_token,nobody,nobody-uid,"testenv:nobody"
$kcm_token,testenv:kube-controller-manager,kcm-uid,"system:masters"
CSV
chmod 600 "$state/tokens.csv"

log "starting etcd on 127.0.0.1:$etcd_port"
setsid "$bin/etcd" --data-dir="$state/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="default=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync=true --log-level=warn \
  >"$state/logs/etcd.log" 2>&1 </dev/null &
echo $! > "$state/etcd.pid"
t0=$(date +%s)
poll 30 "etcd /health" curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"
# Another plane started at the same moment may have taken a port between the check above and
# etcd's bind: then /health answered for that plane's etcd, and ours exited at once.
sleep 1
alive etcd || fail "etcd exited (a port was taken by another process after the check)"
log "etcd healthy after $(( $(date +%s) - t0 ))s"

log "starting kube-apiserver on $server"
setsid "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --secure-port="$api_port" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none --cert-dir="$state/pki" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$state/sa.key" --service-account-signing-key-file="$state/sa.key" \
  --authorization-mode=RBAC --token-auth-file="$state/tokens.csv" \
  --allow-privileged=true \
  ${TESTENV_APISERVER_ARGS:-} \
  >"$state/logs/kube-apiserver.log" 2>&1 </dev/null &
echo $! > "$state/kube-apiserver.pid"
t0=$(date +%s)
# An API server that exits (its port taken by another plane started at the same moment) fails
# the start at once, rather than after the whole wait.
apiserver_ready_or_gone() {
  alive kube-apiserver || return 0
  [ -s "$state/pki/apiserver.crt" ] && curl -fsS --max-time 5 --cacert "$state/pki/apiserver.crt" "$server/readyz"
}
poll 90 "kube-apiserver /readyz" apiserver_ready_or_gone
alive kube-apiserver || fail "kube-apiserver exited (a port was taken by another process after the check?)"
log "kube-apiserver ready after $(( $(date +%s) - t0 ))s"

ca_data=$(base64 -w0 < "$state/pki/apiserver.crt")
write_kubeconfig() { # file current-context
  cat > "$1" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority-data: $ca_data
users:
- name: admin
  user: {token: $admin_token}
- name: operator
  user: {token: $operator_token}
- name: nobody
  user: {token: $nobody_token}
- name: kcm
  user: {token: $kcm_token}
contexts:
- name: admin
  context: {cluster: local, user: admin}
- name: operator
  context: {cluster: local, user: operator}
- name: nobody
  context: {cluster: local, user: nobody}
- name: kcm
  context: {cluster: local, user: kcm}
current-context: $2
YAML
  chmod 600 "$1"
}
write_kubeconfig "$state/kubeconfig" admin
write_kubeconfig "$state/kubeconfig-operator" operator
write_kubeconfig "$state/kubeconfig-kcm" kcm
poll 30 "namespace default" admin_get /api/v1/namespaces/default

if [ -n "${TESTENV_CRDS:-}" ]; then
  log "applying CRDs from $TESTENV_CRDS"
  "$bin/kubectl" --kubeconfig "$state/kubeconfig" apply --server-side -f "$TESTENV_CRDS" >&2
  # kubectl wait fails at once (not after its timeout) on a CRD whose status has no conditions
  # yet, a race right after the apply: try again until the API server has written them.
  for _ in 1 2 3 4 5 6 7 8 9; do
    "$bin/kubectl" --kubeconfig "$state/kubeconfig" wait --for=condition=Established crd --all --timeout=60s >/dev/null 2>&1 && break
    sleep 1
  done
  "$bin/kubectl" --kubeconfig "$state/kubeconfig" wait --for=condition=Established crd --all --timeout=60s >&2
fi

# clusterrole-aggregation fills the default roles (view, edit, admin) from aggregated
# ClusterRoles, such as the chart's PhoneNumber view/edit roles.
log "starting kube-controller-manager (namespace, garbage-collector, clusterrole-aggregation controllers)"
setsid "$bin/kube-controller-manager" --kubeconfig="$state/kubeconfig-kcm" \
  --controllers=namespace-controller,garbage-collector-controller,clusterrole-aggregation-controller \
  --leader-elect=false --secure-port=0 \
  >"$state/logs/kube-controller-manager.log" 2>&1 </dev/null &
echo $! > "$state/kube-controller-manager.pid"

# Smoke check: a namespace is created and fully deleted, which only the namespace controller does.
t0=$(date +%s)
kc() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }
kc create namespace testenv-probe >/dev/null || fail "create namespace testenv-probe"
kc delete namespace testenv-probe --wait=false >/dev/null || fail "delete namespace testenv-probe"
poll 60 "namespace testenv-probe to be deleted (kube-controller-manager)" \
  bash -c "alive_pid=\$(cat '$state/kube-controller-manager.pid') && kill -0 \$alive_pid && ! '$bin/kubectl' --kubeconfig '$state/kubeconfig' get namespace testenv-probe"
log "kube-controller-manager deleted a namespace after $(( $(date +%s) - t0 ))s"
log "control plane up; state in $state; binaries in $bin"
echo "$state/kubeconfig"
