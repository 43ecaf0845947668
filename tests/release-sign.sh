#!/usr/bin/env bash
# Sign and verify a release directory (tests/release.sh) with an ECDSA P-256 key over SHA-256:
# the signature format of `cosign sign-blob` (base64 of the DER signature, one `<file>.sig` per
# artifact), made with openssl, which every machine here has (building cosign from its module
# costs about 10 minutes cold: docs/release.md).
#
#   release-sign.sh sign KEY DIR       write DIR/SHA256SUMS (every artifact in DIR), then
#                                      DIR/<artifact>.sig for each artifact and SHA256SUMS.sig.
#                                      KEY: a PEM EC P-256 private key; if it is encrypted, its
#                                      passphrase comes from $RELEASE_KEY_PASSWORD (never an
#                                      argument, never printed).
#   release-sign.sh verify PUB DIR     check SHA256SUMS.sig, then every checksum, then every
#                                      artifact's .sig, and that every file in DIR is listed:
#                                      exits non-zero naming the first file that fails.
#
# PUB is the PEM public key (`openssl pkey -in KEY -pubout`); cosign verifies the same files
# with `cosign verify-blob --key PUB --signature <artifact>.sig --insecure-ignore-tlog <artifact>`.
set -euo pipefail
log() { echo "release-sign.sh: $*" >&2; }
die() { log "$*"; exit 1; }

is_p256() { # key-file private|public
  local text
  if [ "$2" = private ]; then
    text=$(openssl pkey -in "$1" -noout -text ${RELEASE_KEY_PASSWORD:+-passin env:RELEASE_KEY_PASSWORD} 2>/dev/null) || return 1
  else
    text=$(openssl pkey -pubin -in "$1" -noout -text 2>/dev/null) || return 1
  fi
  grep -q "NIST CURVE: P-256" <<<"$text"
}

# The artifacts of DIR: every regular file but the checksums and signatures, sorted.
artifacts() {
  (cd "$1" && find . -maxdepth 1 -type f ! -name SHA256SUMS ! -name '*.sig' -printf '%f\n' | LC_ALL=C sort)
}

sign_one() { # key file
  openssl dgst -sha256 -sign "$1" ${RELEASE_KEY_PASSWORD:+-passin env:RELEASE_KEY_PASSWORD} "$2" |
    base64 -w0 > "$2.sig"
}

verify_one() { # pub file
  local der
  der=$(mktemp)
  # A .sig that is not base64 fails like a wrong signature.
  if ! base64 -d < "$2.sig" > "$der" 2>/dev/null ||
     ! openssl dgst -sha256 -verify "$1" -signature "$der" "$2" >/dev/null 2>&1; then
    rm -f "$der"
    return 1
  fi
  rm -f "$der"
}

sign() { # key dir
  local key=$1 dir=$2 f
  [ -f "$key" ] || die "no key at $key"
  is_p256 "$key" private || die "$key is not a PEM ECDSA P-256 private key (or its passphrase, RELEASE_KEY_PASSWORD, is wrong)"
  mapfile -t files < <(artifacts "$dir")
  [ ${#files[@]} -gt 0 ] || die "$dir holds no artifact"
  (cd "$dir" && sha256sum -- "${files[@]}") > "$dir/SHA256SUMS"
  for f in "${files[@]}" SHA256SUMS; do
    sign_one "$key" "$dir/$f"
  done
  log "signed ${#files[@]} artifacts and SHA256SUMS in $dir"
}

verify() { # pub dir
  local pub=$1 dir=$2 f listed
  [ -f "$pub" ] || die "no public key at $pub"
  is_p256 "$pub" public || die "$pub is not a PEM ECDSA P-256 public key"
  [ -f "$dir/SHA256SUMS" ] && [ -f "$dir/SHA256SUMS.sig" ] || die "$dir: no SHA256SUMS or SHA256SUMS.sig"
  verify_one "$pub" "$dir/SHA256SUMS" || die "SHA256SUMS: bad signature"
  (cd "$dir" && sha256sum --check --strict --quiet SHA256SUMS >&2) || die "SHA256SUMS: a checksum does not match"
  listed=$(awk '{print $2}' "$dir/SHA256SUMS" | sed 's/^\*//' | LC_ALL=C sort)
  [ "$listed" = "$(artifacts "$dir")" ] || die "SHA256SUMS does not list exactly the files of $dir"
  while read -r f; do
    [ -f "$dir/$f.sig" ] || die "$f: no signature"
    verify_one "$pub" "$dir/$f" || die "$f: bad signature"
  done <<<"$listed"
  log "verified SHA256SUMS and $(wc -l <<<"$listed") artifacts in $dir"
}

case ${1:-} in
  sign) sign "${2:?release-sign.sh sign KEY DIR}" "${3:?release-sign.sh sign KEY DIR}" ;;
  verify) verify "${2:?release-sign.sh verify PUB DIR}" "${3:?release-sign.sh verify PUB DIR}" ;;
  *) echo "usage: release-sign.sh sign KEY DIR | verify PUB DIR" >&2; exit 2 ;;
esac
