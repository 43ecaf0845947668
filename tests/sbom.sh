#!/usr/bin/env bash
# `make sbom`: a CycloneDX 1.5 SBOM (JSON) of what the image ships, the oneinbox-operator binary
# as tests/static-build.sh and the Dockerfile build it: target x86_64-unknown-linux-musl,
# default features (no mock server), without build-time and dev dependencies. Written to
# target/sbom/oneinbox-operator.cdx.json, then checked.
#
# cargo-cyclonedx comes from crates.io when missing (about 3 minutes on two busy cores, once).
# It reads Cargo.lock through `cargo metadata` and needs no network once the crates are cached.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.5.9
target=${SBOM_TARGET:-x86_64-unknown-linux-musl}
if ! cargo cyclonedx --version 2>/dev/null | grep -q " $version\$"; then
  echo "installing cargo-cyclonedx $version from crates.io" >&2
  cargo install --locked --quiet "cargo-cyclonedx@$version" >&2
fi
out=target/sbom
mkdir -p "$out"
# Reproducible: the timestamp is the last commit's.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
cargo cyclonedx --quiet --format json --spec-version 1.5 --describe binaries \
  --target "$target" --no-build-deps
# cargo-cyclonedx writes <bin>_bin.cdx.json beside each package's Cargo.toml (the mock is a
# package of its own, in tests/oneinbox-mock/): keep the operator's, drop the rest.
mv oneinbox-operator_bin.cdx.json "$out/oneinbox-operator.cdx.json"
rm -f crdgen_bin.cdx.json oneinbox-mock_bin.cdx.json tests/oneinbox-mock/oneinbox-mock_bin.cdx.json
python3 - "$out/oneinbox-operator.cdx.json" <<'PY'
import json, sys
bom = json.load(open(sys.argv[1]))
names = {c["name"] for c in bom.get("components", [])}
problems = []
if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
    problems.append(f"not a CycloneDX 1.5 BOM: {bom.get('bomFormat')} {bom.get('specVersion')}")
if bom["metadata"]["component"]["name"] != "oneinbox-operator":
    problems.append("the BOM does not describe oneinbox-operator")
for wanted in ["kube", "tokio", "rustls", "ring", "reqwest", "mimalloc"]:
    if wanted not in names:
        problems.append(f"{wanted} missing")
# Dev-only and build-only crates are not in the binary.
for unwanted in ["tower-test", "tempfile", "cc"]:
    if unwanted in names:
        problems.append(f"{unwanted} listed, but it is not part of the binary")
missing_licences = sorted(c["name"] for c in bom["components"] if not c.get("licenses"))
if missing_licences:
    problems.append(f"components without a licence: {missing_licences}")
if problems:
    sys.exit("SBOM check failed: " + "; ".join(problems))
print(f"{sys.argv[1]}: CycloneDX {bom['specVersion']}, {len(names)} components")
PY
