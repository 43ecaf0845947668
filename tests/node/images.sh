#!/usr/bin/env bash
# Images for the test node, built without a daemon or a registry (buildah, chroot isolation, vfs
# storage in a throwaway root) into OCI archives cached beside the Go-built tools:
#
#   images.sh pause              the sandbox image: a static pause program FROM scratch
#   images.sh operator BINARY    the repository's own Dockerfile, final stage, with BINARY (the
#                                static musl binary from tests/static-build.sh) and, as its base,
#                                a local stand-in for distroless/static built from Debian's
#                                packages: CA certificates, root/nobody/nonroot (65532) in
#                                /etc/passwd and /etc/group, /tmp (1777), /home/nonroot
#
# Prints "<archive> <image name>" as the last stdout line. An archive is rebuilt only when its
# inputs change (sha256 over them is in its file name).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oneinbox-operator/testenv}/images
mkdir -p "$cache"
log() { echo "images.sh: $*" >&2; }

"$here/ensure-node-tools.sh"

work=$(mktemp -d)
# buildah's vfs storage holds no mounts, so removing the directory is the whole cleanup.
trap 'rm -rf "$work"' EXIT
bh() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

build_pause() {
  local h name archive
  h=$( { cat "$here/pause.c"; gcc --version | head -n1; echo v1; } | sha256sum | cut -c1-12)
  name=localhost/oneinbox-testenv/pause:$h
  archive=$cache/pause-$h.tar
  if [ ! -f "$archive" ]; then
    log "building the pause image"
    mkdir -p "$work/pause"
    gcc -Os -static -s -o "$work/pause/pause" "$here/pause.c"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$work/pause/Containerfile"
    bh bud --quiet --isolation chroot --layers=false -f "$work/pause/Containerfile" -t "$name" "$work/pause" >&2
    bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
    mv "$archive.tmp" "$archive"
  fi
  echo "$archive $name"
}

base_rootfs() { # dir: what distroless/static-debian12:nonroot holds that the operator uses
  local r=$1
  mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/home/nonroot" "$r/root"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
  cat > "$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
  cat > "$r/etc/group" <<'G'
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
G
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root" "$r/home/nonroot"
  chown 65532:65532 "$r/home/nonroot"
}

build_operator() { # binary
  local bin=$1 h name archive
  [ -x "$bin" ] || { log "no operator binary at $bin (run tests/static-build.sh)"; exit 1; }
  h=$( { sha256sum < "$bin"; cat "$repo/Dockerfile" "$here/images.sh";
         dpkg-query -W ca-certificates; } | sha256sum | cut -c1-12)
  name=localhost/oneinbox-operator:$h
  archive=$cache/operator-$h.tar
  if [ ! -f "$archive" ]; then
    log "building the local base image"
    base_rootfs "$work/base/rootfs"
    # ADD of a tar keeps owners and modes (/tmp 1777, /home/nonroot 65532).
    tar -C "$work/base/rootfs" --numeric-owner -cf "$work/base/rootfs.tar" .
    printf 'FROM scratch\nADD rootfs.tar /\n' > "$work/base/Containerfile"
    bh bud --quiet --isolation chroot --layers=false -f "$work/base/Containerfile" \
      -t localhost/oneinbox-testenv/static-base:local "$work/base" >&2
    log "building the operator image from the Dockerfile (BINARY=prebuilt)"
    mkdir -p "$work/ctx"
    cp "$bin" "$work/ctx/oneinbox-operator"
    bh bud --quiet --isolation chroot --layers=false --pull-never \
      --build-arg BINARY=prebuilt --build-arg TARGETARCH=amd64 \
      --build-arg BASE_IMAGE=localhost/oneinbox-testenv/static-base:local \
      -f "$repo/Dockerfile" -t "$name" "$work/ctx" >&2
    bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
    mv "$archive.tmp" "$archive"
    log "operator image: $(stat -c %s "$archive") bytes as an OCI archive"
  fi
  echo "$archive $name"
}

case ${1:-} in
  pause) build_pause ;;
  operator) build_operator "${2:?images.sh operator BINARY}" ;;
  *) echo "usage: images.sh pause | operator BINARY" >&2; exit 2 ;;
esac
