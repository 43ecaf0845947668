#!/usr/bin/env bash
# Install the node's runtime and image tools from Debian's packages when the machine lacks them:
# containerd 1.6 (CRI v1), runc, the CNI plugins (in /usr/lib/cni), buildah (daemonless image
# builds), iptables (kubelet's own chains and the stand-in for the kubernetes Service), and gcc
# with static glibc for the pause program. Nothing here is enabled as a system service: the node
# scripts start containerd themselves, with their own config and sockets.
set -euo pipefail
missing=()
for t in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  buildah:buildah iptables:iptables gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev \
  /etc/ssl/certs/ca-certificates.crt:ca-certificates ctr:containerd; do
  cmd=${t%%:*} pkg=${t#*:}
  case $cmd in
    /*) [ -e "$cmd" ] || missing+=("$pkg") ;;
    *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "ensure-node-tools.sh: installing ${missing[*]}" >&2
  [ "$(id -u)" = 0 ] || { echo "missing: ${missing[*]} (install them with apt-get as root)" >&2; exit 1; }
  apt-get update -qq
  # --no-install-recommends: buildah recommends podman-free extras we do not use; Debian's
  # containerd package ships a systemd unit, which this machine (no systemd) never starts.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
