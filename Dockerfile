# syntax=docker/dockerfile:1
#
# keygate's image for the kind and cluster profiles. `cargo xtask up
# --profile kind` builds and loads it as:
#
#   docker build --provenance=false --sbom=false --load --iidfile <run>/keygate-image.id -t keyrig/keygate:dev .
#   docker tag keyrig/keygate:dev keyrig/keygate:dev-<12 hex of the image id>
#   docker save -o keygate-image.tar keyrig/keygate:dev-<...>
#   kind load image-archive keygate-image.tar --name keyrig
#
# and points the keygate Deployment at that per-build tag, so a reused
# cluster runs the new build. The base tag is env/k8s.toml [images].keygate;
# the Deployment in scenarios/k8s/base never pulls it (imagePullPolicy:
# Never). No attestations: with Docker's containerd image store, `docker
# save` would name them without their content, and kind's import fails.

# Debian 12 on both sides, so the binary links against the glibc it runs with.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds on one machine
# (BuildKit); --locked builds exactly what Cargo.lock says. keygate speaks
# plain HTTP to Vault and gRPC to Envoy inside the cluster: no TLS library.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package keygate \
    && install -D target/release/keygate /out/keygate

# distroless/cc: glibc and libgcc, no shell, no package manager; `nonroot` is
# UID 65532, the user the Deployment's securityContext runs as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keygate /usr/local/bin/keygate
USER 65532:65532
# 9001: Envoy ext_authz (gRPC). 9002: forward-auth, /healthz, /readyz, /metrics.
EXPOSE 9001 9002
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["--config", "/etc/keygate/keygate.yaml"]
