#!/usr/bin/env bash
# Stop the test control plane started by up.sh, by PID (never by name), and remove its state dir
# unless TESTENV_KEEP=1. Running it twice is harmless.
#
# A node started by node-up.sh is stopped first, with every piece of host state it made: its pods'
# processes and containerd shims, mounts, the bridge, iptables rules and chains, cgroups, and the
# fixed paths kubelet and the CNI plugins write to. `down.sh --node-only` stops just the node.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${TESTENV_STATE:-$repo/target/testenv}

stop() { # name
  local f="$state/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "down.sh: $1 ($pid) ignored SIGTERM for 10s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# Processes of the node's pods and shims are found by its cgroup root and its containerd socket
# (both unique to this node), never by a program's name.
node_down() {
  [ -f "$state/node.env" ] || return 0
  local bridge net cgroup_root node=$state/node sock pid t left
  . "$state/node.env"
  sock=$node/containerd.sock
  echo "down.sh: stopping the node" >&2
  stop node-kubelet
  stop node-kube-scheduler
  stop node-kube-controller-manager
  if [ -f "$state/node-containerd.pid" ] && kill -0 "$(cat "$state/node-containerd.pid")" 2>/dev/null; then
    # Killing and deleting every task through containerd ends its shim and unmounts its rootfs.
    for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
    done
    for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 20 ctr --address "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1
    done
    for t in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$sock" -n k8s.io containers delete "$t" >/dev/null 2>&1
    done
  fi
  stop node-containerd
  # Anything left: pod processes in the node's cgroups, shims of this node's socket.
  for _ in 1 2 3; do
    left=$( { cat /sys/fs/cgroup/*"$cgroup_root"/cgroup.procs /sys/fs/cgroup/*"$cgroup_root"/*/cgroup.procs \
      /sys/fs/cgroup/*"$cgroup_root"/*/*/cgroup.procs /sys/fs/cgroup/*"$cgroup_root"/*/*/*/cgroup.procs 2>/dev/null
      for pid in /proc/[0-9]*; do
        { tr '\0' ' ' < "$pid/cmdline"; } 2>/dev/null | grep -q -- "-address $sock " && echo "${pid#/proc/}"
      done; } | sort -u)
    [ -n "$left" ] || break
    echo "down.sh: killing the node's leftover processes: $(echo $left)" >&2
    kill -KILL $left 2>/dev/null
    sleep 0.5
  done
  # Mounts under the node's dir (container rootfs, pod network namespaces, secret volumes),
  # deepest first.
  for _ in 1 2 3; do
    left=$(awk -v p="$node/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
    [ -n "$left" ] || break
    for m in $left; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  done
  if awk -v p="$node/" 'index($2, p) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    echo "down.sh: mounts left under $node; not removing it:" >&2
    awk -v p="$node/" 'index($2, p) == 1 {print "  " $2}' /proc/self/mounts >&2
    node_mounts_left=1
  fi
  # Network: our rules by their comment, kubelet's own chains, the bridge.
  for table in nat filter; do
    iptables -t "$table" -S 2>/dev/null | grep -- '--comment oneinbox-testenv-node' | sed 's/^-A/-D/' |
      while read -r rule; do eval "iptables -t $table $rule"; done
  done
  for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -t "$table" -S 2>/dev/null | grep -- "-j $chain\( \|\$\)" | sed 's/^-A/-D/' |
          while read -r rule; do eval "$ipt -t $table $rule"; done
        "$ipt" -t "$table" -F "$chain" 2>/dev/null && "$ipt" -t "$table" -X "$chain" 2>/dev/null
      done
    done
  done
  ip link del "$bridge" 2>/dev/null
  # Pods' host-side veths went with their network namespaces; cgroups, deepest first.
  for d in $(find /sys/fs/cgroup/*"$cgroup_root" -depth -type d 2>/dev/null); do rmdir "$d" 2>/dev/null; done
  # Fixed paths kubelet and libcni write to, whatever --root-dir says.
  rm -rf --one-file-system /var/lib/kubelet /var/log/containers /usr/libexec/kubernetes /var/lib/cni
  if [ "${node_mounts_left:-0}" = 0 ]; then rm -rf --one-file-system "$node"; fi
  rm -f "$state/node.env"
  [ "$(cat /run/oneinbox-testenv-node.owner 2>/dev/null)" = "$state" ] && rm -f /run/oneinbox-testenv-node.owner
  return 0
}

[ -d "$state" ] || exit 0
node_down
[ "${1:-}" = --node-only ] && exit 0
stop kube-controller-manager
stop kube-apiserver
stop etcd
if [ "${TESTENV_KEEP:-0}" != 1 ]; then
  # Never follow a mount out of the state dir (--one-file-system); a mount left means a failed
  # node stop, reported above.
  if [ "${node_mounts_left:-0}" = 1 ]; then echo "down.sh: keeping $state (mounts left)" >&2; exit 1; fi
  rm -rf "$state"
fi
exit 0
