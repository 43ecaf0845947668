#!/usr/bin/env bash
# Build the image's binary as the Dockerfile does (static musl, release, thin LTO, stripped)
# and report its size. Docker cannot run on our machines; this builds the same target.
# If the musl target cannot be installed here, it says so and exits 0: the gate is the build
# itself when the target is available.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! rustup target add "$target" >&2; then
    echo "static build SKIPPED: the $target target could not be installed on this machine" >&2
    exit 0
  fi
fi
cc=$(command -v musl-gcc || command -v gcc)
# Thin LTO and one codegen unit come from Cargo.toml's release profile.
export "CC_x86_64_unknown_linux_musl=$cc" CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --quiet --release --locked --target "$target" --target-dir target/static-image --bin oneinbox-operator
bin=target/static-image/$target/release/oneinbox-operator
file "$bin" 2>/dev/null | grep -q "static" || ldd "$bin" 2>&1 | grep -q "statically linked\|not a dynamic" \
  || { echo "$bin is not statically linked" >&2; exit 1; }
"$bin" --version >/dev/null
echo "static operator binary: $bin, $(stat -c %s "$bin") bytes"
