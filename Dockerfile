# syntax=docker/dockerfile:1
# The orderflow image: one binary for every role (`orderflow run --role <role>`, or `orderflow up`).
#
#   docker build -t orderflow .
#   docker run -p 8080:8080 orderflow                       # the embedded default, as `orderflow up`
#   docker run -e ORDERFLOW_DATABASE__URL=postgres://... orderflow run --role payments
#
# Every setting is an `ORDERFLOW_*` environment variable (`ORDERFLOW_KAFKA__BOOTSTRAP_SERVERS`, ...; see the
# README's settings table). Secrets are best mounted as files and named by the `*_file` settings.

# Build: librdkafka is compiled from source by rdkafka-sys, against OpenSSL and zlib.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p orderflow --bin orderflow \
 && strip target/release/orderflow

# Runtime: the binary, the shared libraries it links (OpenSSL 3, zlib) and CA certificates; curl for the
# health check. Runs as an unprivileged user.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/orderflow --create-home orderflow
COPY --from=build /src/target/release/orderflow /usr/local/bin/orderflow
USER 10001:10001
WORKDIR /var/lib/orderflow
ENV ORDERFLOW_LOG_FORMAT=json \
    ORDERFLOW_HTTP__LISTEN=0.0.0.0:8080 \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
EXPOSE 8080
# Roles without an HTTP API answer on their ops listener: set ORDERFLOW_OPS__LISTEN=0.0.0.0:9090 and
# HEALTHCHECK_URL=http://127.0.0.1:9090/healthz for them.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS "$HEALTHCHECK_URL" >/dev/null || exit 1
ENTRYPOINT ["orderflow"]
CMD ["up", "--data-dir", "/var/lib/orderflow/data"]
