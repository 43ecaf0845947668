# syntax=docker/dockerfile:1
#
# oneinbox-operator image: a fully static (musl) binary on distroless/static, running as the
# distroless "nonroot" user (65532). Build: docker build -t ghcr.io/oneinbox/oneinbox-operator:0.1.0 .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (each platform builds natively).
#
# Two build arguments exist for the test world (tests/node/images.sh), which has no registry:
#   BINARY=prebuilt  takes the static musl binary from the build context (file oneinbox-operator,
#                    as tests/static-build.sh makes it) instead of compiling it in the builder stage;
#   BASE_IMAGE       the final stage's base; the default is the pinned distroless image below.
# The final stage is the same either way: same files, user, entrypoint and labels.

ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:b7bb25d9f7c31d2bdd1982feb4dafcaf137703c7075dbe2febb41c24212b946f
ARG BINARY=builder

# Base images are pinned by digest (the multi-arch index of each tag), so a rebuild uses exactly
# these bytes; the tag stays for readers. Move the rust tag with rust-toolchain.toml. To refresh a
# digest: docker buildx imagetools inspect rust:1.95.0-bookworm (or crane digest ...).
FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
ARG TARGETARCH
# musl-gcc compiles ring's C and assembly for the musl target.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
# Only what the build needs (.dockerignore keeps the rest out of the context).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the test mock): only its manifest and sources, never built here.
COPY tests/oneinbox-mock ./tests/oneinbox-mock
# Release build of the operator only (the mock is another crate); --locked: exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(cat /rust-target)" --bin oneinbox-operator \
 && install -D -m 0755 "target/$(cat /rust-target)/release/oneinbox-operator" /out/oneinbox-operator

# A binary built outside (BINARY=prebuilt): only ever used when asked for; BuildKit and buildah
# skip the stages the target does not need.
FROM scratch AS prebuilt
COPY --chmod=0755 oneinbox-operator /out/oneinbox-operator

# hadolint ignore=DL3006
FROM ${BINARY} AS binary

# No shell, no package manager, no libc: CA certificates and /etc/passwd for nonroot only.
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="oneinbox-operator" \
      org.opencontainers.image.description="Kubernetes operator that manages OneInbox phone numbers as PhoneNumber custom resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/oneinbox-operator /usr/local/bin/oneinbox-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/oneinbox-operator"]
CMD ["run"]
