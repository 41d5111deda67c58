# Tributary: a small image with the one binary.
#
#   docker build -t tributary .
#   docker run --rm -p 9092:9092 -p 9464:9464 -v tributary-data:/data \
#     -e TRIBUTARY_MQTT__URL=mqtt://broker.example:1883 tributary
#
# The config is /etc/tributary/bridge.yaml (the repository's bridge.yaml; mount yours over it),
# then TRIBUTARY_* variables. tests/deploy/ checks this file outside Docker: the stages, the
# files each COPY takes, the cargo command, the runtime user, volume, ports and health check.

ARG RUST_VERSION=1.95

# --- build ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
# rdkafka builds its bundled librdkafka from source with make and gcc (in this image) and links
# the system OpenSSL (the `ssl` feature) and zlib, found through pkg-config.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# 1. The dependencies alone, in a layer that is rebuilt only when Cargo.toml or Cargo.lock
#    change: the real manifest over a stub crate (an empty lib, `fn main() {}`, and a stub for
#    each [[bench]], which cargo wants present to read the manifest).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml \
       | while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin tributary

# 2. The real sources. COPY keeps the files' modification times, which may be older than the
#    stub build: touch them, or cargo would take the stub's build for up to date.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tributary \
    && strip target/release/tributary

# --- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# The binary links the system OpenSSL (librdkafka's TLS and SASL to a Kafka cluster) and zlib;
# ca-certificates for mqtts:// and TLS to Kafka. (distroless/cc lacks zlib.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 tributary \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home tributary \
    && mkdir -p /data /etc/tributary \
    && chown tributary:tributary /data
COPY --from=build /src/target/release/tributary /usr/local/bin/tributary
COPY bridge.yaml /etc/tributary/bridge.yaml

# In a container the listeners bind every interface (the defaults are loopback only), and the
# embedded log lives on the /data volume. Any key can be overridden the same way
# (TRIBUTARY_MQTT__URL, TRIBUTARY_MQTT__PASSWORD, ...); these override bridge.yaml.
ENV TRIBUTARY_LOG__EMBEDDED__DIR=/data \
    TRIBUTARY_LOG__EMBEDDED__KAFKA_LISTENER=0.0.0.0:9092 \
    TRIBUTARY_HTTP__LISTEN=0.0.0.0:9464 \
    RUST_LOG=info

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# 1883: the MQTT listener face (devices connect to Tributary directly). The image's
#       bridge.yaml binds it to loopback, so set TRIBUTARY_LISTENER__LISTEN=0.0.0.0:1883 (and
#       listener.auth) to reach it from outside; it is not set here because a broker-client
#       config mounted over bridge.yaml must not get a listener it did not ask for.
# 9092: the Kafka API over the embedded log (log.embedded.kafka_listener)
# 9464: HTTP: /metrics, /healthz, /readyz (http.listen)
EXPOSE 1883 9092 9464

# Liveness through /healthz, with what the base image has (no curl): bash's /dev/tcp speaks
# HTTP/1.0 to the port of TRIBUTARY_HTTP__LISTEN and the check passes on a 200 status line.
# Kubernetes ignores HEALTHCHECK: there the liveness and readiness probes are the checks
# (deploy/kubernetes/sidecar.yaml, deploy/helm/tributary).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${TRIBUTARY_HTTP__LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200'"]

ENTRYPOINT ["tributary"]
CMD ["run", "-c", "/etc/tributary/bridge.yaml"]
