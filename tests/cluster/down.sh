#!/usr/bin/env bash
# Stop the test control plane started by up.sh, by PID (never by name), and remove its state dir
# unless TESTENV_KEEP=1. Running it twice is harmless.
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

[ -d "$state" ] || exit 0
stop kube-controller-manager
stop kube-apiserver
stop etcd
if [ "${TESTENV_KEEP:-0}" != 1 ]; then rm -rf "$state"; fi
exit 0
