#!/usr/bin/env bash
# `make release`: the release artifacts, in one directory, target/release-artifacts/<version>/
# (RELEASE_OUT overrides it; it is emptied first):
#
#   oneinbox-operator-<chart version>.tgz        the chart (`helm package`)
#   oneinbox-operator-<version>.oci.tar          the image as an OCI archive (linux/amd64), named
#                                                ghcr.io/oneinbox/oneinbox-operator:<version>
#   oneinbox-operator-<version>-crds.yaml        crds/ as one file (kubectl apply --server-side -f)
#   oneinbox-operator-<version>.cdx.json         the CycloneDX SBOM of the image's binary (make sbom)
#   SHA256SUMS                                   of all of the above
#   <each of the above>.sig                      with a key: ECDSA P-256 / SHA-256 signatures,
#                                                cosign's blob format (tests/release-sign.sh)
#
#   release.sh [--key KEY]    KEY: a PEM EC P-256 private key (passphrase, if any, in
#                             $RELEASE_KEY_PASSWORD); without it the artifacts and SHA256SUMS
#                             are made but not signed, and the script says so.
#
# The image is built as tests/node/images.sh builds it for the test node, daemonless (buildah):
# the repository's Dockerfile, final stage, with the static musl binary of tests/static-build.sh,
# the same files, user (65532), entrypoint and labels. Its base is the local stand-in for
# distroless/static (CA certificates and /etc/passwd from Debian's packages): no registry is
# reachable here. A release from a machine with a registry builds the same Dockerfile with
# `docker buildx` on the pinned distroless digest (docs/release.md).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
log() { echo "release.sh: $*" >&2; }

key=""
while [ $# -gt 0 ]; do
  case $1 in
    --key) key=${2:?--key KEY}; shift 2 ;;
    --key=*) key=${1#--key=}; shift ;;
    *) echo "usage: release.sh [--key KEY]" >&2; exit 2 ;;
  esac
done
[ -z "$key" ] || [ -f "$key" ] || { log "no key at $key"; exit 1; }
[ -z "$key" ] || key=$(cd "$(dirname "$key")" && pwd)/$(basename "$key")

version=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "oneinbox-operator"))')
chart_version=$(sed -n 's/^version: *//p' charts/oneinbox-operator/Chart.yaml)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/oneinbox-operator/Chart.yaml)
[ "$app_version" = "$version" ] || { log "Chart.yaml appVersion $app_version is not the crate version $version"; exit 1; }
image=ghcr.io/oneinbox/oneinbox-operator:$version
out=${RELEASE_OUT:-$repo/target/release-artifacts/$version}
rm -rf "$out"; mkdir -p "$out"
log "oneinbox-operator $version (chart $chart_version) into $out"

# The chart: helm from the test world's tools (tests/cluster/build.sh).
bin=$(tests/cluster/build.sh helm | tail -n1)
"$bin/helm" lint --strict charts/oneinbox-operator >&2
"$bin/helm" package charts/oneinbox-operator -d "$out" >&2
[ -f "$out/oneinbox-operator-$chart_version.tgz" ] || { log "helm package made no oneinbox-operator-$chart_version.tgz"; exit 1; }

# The CRDs, as kubectl users apply them (crds/, the deletion-protection policy included).
crd_files=(crds/*.yaml)
for f in "${crd_files[@]}"; do
  echo "---"
  echo "# Source: $f"
  cat "$f"
done > "$out/oneinbox-operator-$version-crds.yaml"

# The image: the static binary, then the Dockerfile's final stage (tests/node/images.sh), the
# archive re-tagged with the name users pull.
tests/static-build.sh >&2
read -r archive built < <(tests/node/images.sh operator "$repo/target/static-image/x86_64-unknown-linux-musl/release/oneinbox-operator" | tail -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bh() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
bh pull --quiet "oci-archive:$archive" >/dev/null
bh tag "$built" "$image"
bh push --quiet "$image" "oci-archive:$out/oneinbox-operator-$version.oci.tar:$image" >&2
bh inspect --type image "$image" > "$work/inspect.json"
python3 - "$work/inspect.json" <<'PY'
import json, sys
oci = json.load(open(sys.argv[1]))["OCIv1"]
# Chart.yaml's artifacthub.io/images lists linux/amd64 only: the platform built here.
if (oci.get("os"), oci.get("architecture")) != ("linux", "amd64"):
    sys.exit(f"the image is {oci.get('os')}/{oci.get('architecture')}, not linux/amd64")
c = oci["config"]
want = {"User": "65532:65532", "Entrypoint": ["/usr/local/bin/oneinbox-operator"], "Cmd": ["run"]}
bad = {k: c.get(k) for k, v in want.items() if c.get(k) != v}
if bad or c.get("Labels", {}).get("org.opencontainers.image.title") != "oneinbox-operator":
    sys.exit(f"the image's config is not the Dockerfile's: {bad or c.get('Labels')}")
PY

# The SBOM of the image's binary.
tests/sbom.sh >&2
cp target/sbom/oneinbox-operator.cdx.json "$out/oneinbox-operator-$version.cdx.json"

if [ -n "$key" ]; then
  tests/release-sign.sh sign "$key" "$out"
else
  (cd "$out" && find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort | xargs sha256sum --) > "$work/SHA256SUMS"
  mv "$work/SHA256SUMS" "$out/SHA256SUMS"
  log "no --key: the artifacts are NOT signed (make release RELEASE_KEY=<PEM EC P-256 key>)"
fi
ls -l "$out" >&2
echo "$out"
