#!/usr/bin/env bash
# Add a real node to the running test control plane (up.sh): containerd + runc (Debian's), kubelet
# and kube-scheduler (build.sh node, the plane's own version), and a second
# kube-controller-manager with the controllers pods need (Deployment, ReplicaSet, node lifecycle,
# pod GC, the kube-root-ca.crt publisher). Pods get a private /24 on a bridge this script creates;
# nothing is forwarded or masqueraded out of the machine (ipMasq false, ip_forward untouched, and a
# FORWARD rule drops anything from the bridge to another interface). The `kubernetes` Service
# (10.0.0.1:443) is a DNAT from the bridge to the API server on 127.0.0.1, as there is no kube-proxy.
#
# Idempotent: a node recorded in the state dir that is running and Ready is reused. down.sh stops
# it and removes every piece of host state it made. Needs root; one node per machine at a time
# (kubelet hard-codes /var/lib/kubelet/device-plugins).
#
# Environment:
#   TESTENV_STATE        the plane's state dir (default <repo>/target/testenv); the node's state
#                        is in node/ under it, its logs in logs/node-*.log, pids in node-*.pid
#   TESTENV_NODE_BRIDGE  bridge name (oitestnode0)
#   TESTENV_NODE_NET     the pod network's first three octets (10.213.7): bridge .1, pods .2-.254
#   TESTENV_NODE_IMAGES  OCI archives to import besides the pause image (space-separated)
# Prints the node's name as the last stdout line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${TESTENV_STATE:-$repo/target/testenv}
node=$state/node
log() { echo "node-up.sh: $*" >&2; }
tails() {
  for f in "$state"/logs/node-*.log; do
    [ -f "$f" ] || continue
    echo "----- tail of $f" >&2; tail -n 30 "$f" >&2
  done
}
fail() { log "FAILED: $*"; tails; exit 1; }
alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
poll() { # deadline-seconds what cmd...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.5
  done
}

[ "$(id -u)" = 0 ] || fail "the node needs root (kubelet, containerd, runc, bridge, iptables)"
[ -f "$state/kubeconfig" ] && alive kube-apiserver || fail "no control plane in $state: run tests/cluster/up.sh first"
. "$state/ports.env"
kc() { "$state/bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }
name=$(hostname)
node_ready() {
  [ "$(kc get node "$name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    ! kc get node "$name" -o 'jsonpath={.spec.taints}' | grep -q not-ready
}

if [ -f "$state/node.env" ] && alive node-containerd && alive node-kubelet && alive node-kube-scheduler \
   && alive node-kube-controller-manager && node_ready; then
  . "$state/node.env"
  for a in ${TESTENV_NODE_IMAGES:-}; do
    ctr --address "$node/containerd.sock" -n k8s.io images import "$a" >&2 || fail "import $a"
  done
  log "reusing the running node $name"
  echo "$name"
  exit 0
fi

# One node per machine: kubelet's fixed paths (/var/lib/kubelet) would be shared.
owner=/run/oneinbox-testenv-node.owner
if [ -f "$owner" ] && [ "$(cat "$owner")" != "$state" ] && [ -d "$(cat "$owner")/node" ]; then
  fail "another test node runs from $(cat "$owner"); stop it with its down.sh first"
fi

"$repo/tests/node/ensure-node-tools.sh"
bin=$("$here/build.sh" node | tail -n1)
read -r pause_archive pause_image < <("$repo/tests/node/images.sh" pause | tail -n1)

# A half-started node from an earlier run is removed first.
TESTENV_STATE=$state "$here/down.sh" --node-only >&2 || true

bridge=${TESTENV_NODE_BRIDGE:-oitestnode0}
net=${TESTENV_NODE_NET:-10.213.7}
node_ip=$net.1
cgroup_root=/oneinbox-testenv-node
in_use() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    in_use "$p" || { echo "$p"; return 0; }
  done
  fail "no free port found"
}
kubelet_port=$(free_port); healthz_port=$(free_port)
ip link show "$bridge" >/dev/null 2>&1 && fail "bridge $bridge exists and is not this node's: set TESTENV_NODE_BRIDGE"
ip -4 route show | grep -q "^$net\." && fail "$net.0/24 is routed already: set TESTENV_NODE_NET"

echo "$state" > "$owner"
mkdir -p "$node"/{containerd/root,containerd/state,cni,cni-ipam,kubelet,kubelet-pki,pod-logs,volume-plugins,opt}
# Written first: down.sh removes exactly what this records.
cat > "$state/node.env" <<ENV
bridge=$bridge
net=$net
node_ip=$node_ip
cgroup_root=$cgroup_root
kubelet_port=$kubelet_port
healthz_port=$healthz_port
node_name=$name
ENV

log "bridge $bridge at $node_ip/24"
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
# Pods reach the API server as the `kubernetes` Service (no kube-proxy): DNAT to loopback, which
# route_localnet allows for packets arriving on the bridge.
sysctl -qw "net.ipv4.conf.$bridge.route_localnet=1"
iptables -t nat -A PREROUTING -i "$bridge" -d 10.0.0.1/32 -p tcp --dport 443 \
  -m comment --comment oneinbox-testenv-node -j DNAT --to-destination "127.0.0.1:$saved_api_port"
# Nothing from the pod network leaves through another interface, even if forwarding is on.
iptables -I FORWARD -i "$bridge" ! -o "$bridge" -m comment --comment oneinbox-testenv-node -j DROP

# The CNI config is written before containerd starts (containerd 1.6 may miss a later one).
# No isGateway: that would switch on ip_forward. The bridge already holds the gateway address.
cat > "$node/cni/10-oitestnode.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "oitestnode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node/cni-ipam",
        "ranges": [[{"subnet": "$net.0/24", "rangeStart": "$net.2", "rangeEnd": "$net.254"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$node_ip"}]
      }
    }
  ]
}
JSON

cat > "$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$node/containerd.sock"
[ttrpc]
  address = "$node/containerd.sock.ttrpc"
[debug]
  address = "$node/containerd-debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Without CAP_SYS_RESOURCE runc cannot set the negative oom_score_adj kubelet asks for.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
TOML

log "starting containerd"
setsid containerd --config "$node/containerd.toml" >"$state/logs/node-containerd.log" 2>&1 </dev/null &
echo $! > "$state/node-containerd.pid"
ctr_() { ctr --address "$node/containerd.sock" -n k8s.io "$@"; }
poll 30 "containerd" ctr_ version
for a in "$pause_archive" ${TESTENV_NODE_IMAGES:-}; do
  ctr_ images import "$a" >&2 || fail "ctr images import $a"
done

# kubelet's cgroupRoot must exist in every cgroup v1 hierarchy, cpuset filled in.
while read -r _ mnt fstype _; do
  [ "$fstype" = cgroup ] || continue
  mkdir -p "$mnt$cgroup_root"
  if [ -f "$mnt/cpuset.cpus" ]; then
    cat "$mnt/cpuset.cpus" > "$mnt$cgroup_root/cpuset.cpus"
    cat "$mnt/cpuset.mems" > "$mnt$cgroup_root/cpuset.mems"
  fi
done < /proc/mounts

cat > "$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
# The test API server has no client CA: kubelet's API is open on loopback only.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$node/containerd.sock
imageServiceEndpoint: unix://$node/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
# This machine mounts cgroup v1 hierarchies (plus cgroup2 at /sys/fs/cgroup/unified).
failCgroupV1: false
failSwapOn: false
# Local-only images can never be pulled again: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
podLogsDir: $node/pod-logs
volumePluginDir: $node/volume-plugins
resolvConf: ""
maxPods: 20
YAML

log "starting kubelet (node $name, node IP $node_ip, port $kubelet_port)"
# --hostname-override: the API server reaches kubelet (logs, exec) by this name, which /etc/hosts
# resolves to 127.0.0.1. --node-ip: kubelet refuses a loopback node IP.
setsid "$bin/kubelet" --config="$node/kubelet.yaml" --kubeconfig="$state/kubeconfig-kcm" \
  --hostname-override="$name" --node-ip="$node_ip" --root-dir="$node/kubelet" \
  --cert-dir="$node/kubelet-pki" \
  >"$state/logs/node-kubelet.log" 2>&1 </dev/null &
echo $! > "$state/node-kubelet.pid"

log "starting kube-scheduler"
setsid "$bin/kube-scheduler" --kubeconfig="$state/kubeconfig-kcm" --leader-elect=false --secure-port=0 \
  >"$state/logs/node-kube-scheduler.log" 2>&1 </dev/null &
echo $! > "$state/node-kube-scheduler.pid"

log "starting kube-controller-manager for pods (deployment, replicaset, node-lifecycle, podgc, root CA)"
setsid "$state/bin/kube-controller-manager" --kubeconfig="$state/kubeconfig-kcm" \
  --controllers=deployment-controller,replicaset-controller,node-lifecycle-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller \
  --root-ca-file="$state/pki/apiserver.crt" --leader-elect=false --secure-port=0 \
  >"$state/logs/node-kube-controller-manager.log" 2>&1 </dev/null &
echo $! > "$state/node-kube-controller-manager.pid"

t0=$(date +%s)
check_ready() {
  for p in node-containerd node-kubelet node-kube-scheduler node-kube-controller-manager; do
    alive "$p" || { log "$p exited"; return 2; }
  done
  node_ready
}
deadline=$(( t0 + 120 ))
until check_ready 2>/dev/null; do
  for p in node-containerd node-kubelet node-kube-scheduler node-kube-controller-manager; do
    alive "$p" || fail "$p exited"
  done
  [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for node $name to be Ready and untainted"
  sleep 0.5
done
log "node $name Ready after $(( $(date +%s) - t0 ))s"
echo "$name"
