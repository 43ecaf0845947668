#!/usr/bin/env bash
# Install what the tests need from Debian's packages when a fresh machine lacks it.
set -euo pipefail
missing=()
for t in curl:curl openssl:openssl ss:iproute2 flock:util-linux make:make go:golang git:git; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "missing tools: ${missing[*]} (install them with apt-get)" >&2; exit 1
  fi
fi
# `--no-cargo-deny` (make demo): the demo runs no licence gate.
[ "${1:-}" = --no-cargo-deny ] && exit 0
# cargo-deny for the licence/bans/sources gate, built from crates.io (about 6 minutes on two busy
# cores, once per machine). The version is pinned so that every machine checks with the same rules.
cargo_deny_version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $cargo_deny_version"; then
  echo "installing cargo-deny $cargo_deny_version from crates.io" >&2
  cargo install --locked --quiet "cargo-deny@$cargo_deny_version" >&2
fi
