# Tributary: a small image with the one binary.
#   docker build -t tributary .
#   docker run -v $PWD/bridge.yaml:/etc/tributary/bridge.yaml -v tributary-data:/data tributary
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tributary && strip target/release/tributary

FROM debian:bookworm-slim
# librdkafka links the system OpenSSL (TLS and SASL to a Kafka cluster).
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 tributary && mkdir -p /data /etc/tributary && chown tributary /data
COPY --from=build /src/target/release/tributary /usr/local/bin/tributary
COPY bridge.yaml /etc/tributary/bridge.yaml
USER tributary
WORKDIR /data
# The log lives on the /data volume; override any key with TRIBUTARY_* variables.
ENV TRIBUTARY_LOG__EMBEDDED__DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["tributary"]
CMD ["run", "-c", "/etc/tributary/bridge.yaml"]
