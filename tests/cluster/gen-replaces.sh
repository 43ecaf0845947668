#!/usr/bin/env bash
# Derive the staging-module replaces for the k8s wrapper from k8s.io/kubernetes' own go.mod.
# Usage (inside tests/cluster/k8s): ../gen-replaces.sh v1.36.3
set -euo pipefail
export GOTOOLCHAIN=local GOWORK=off
kv=$1; sv=v0.${kv#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$kv" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
mods=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod")
[ -n "$mods" ] || { echo "no staging modules found in $gomod" >&2; exit 1; }
for m in $mods; do go mod edit -replace="$m=$m@$sv"; done
echo "$mods" | wc -l
