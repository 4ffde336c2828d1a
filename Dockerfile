# roomsync container images.
#
#   docker build -t roomsync .                          # runtime image (last stage, the default)
#   docker build --target migrate -t roomsync-migrate .   # one-shot `sqlx migrate run` image
#
# Stages: builder -> runtime, and sqlx-cli -> migrate.
# The builder keeps cargo's registry and build directory in BuildKit cache mounts, so editing
# src/ recompiles roomsync alone. (cargo-chef, used before, stubs every local crate in its
# recipe, the patched vendor/sqlx-core included, and the dependencies would then not build.)
# Validate changes with scripts/validate-containers (hadolint).

# ---- builder: roomsync, release ---------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /app
# The query macros read the committed .sqlx/ data; the build never talks to a database.
# No debug info in the image: Cargo.toml's `debug = "line-tables-only"` (kept for local
# profiling and benchmarks) makes the binary about 70 MB, nearly all of it DWARF. Stripping
# only the debug info keeps the symbol table, so a backtrace (RUST_BACKTRACE=1) still names
# every function, and a panic message still carries its file:line; only per-frame line numbers
# go.
ENV SQLX_OFFLINE=true \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
COPY Cargo.toml Cargo.lock ./
# sqlx-core with TCP_NODELAY until the next sqlx release (vendor/README.md).
COPY vendor ./vendor
COPY .sqlx ./.sqlx
# Embedded into the binary at compile time by sqlx::migrate!("./migrations").
COPY migrations ./migrations
COPY src ./src
# The build directory is a cache mount: the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked --bin roomsync \
    && cp target/release/roomsync /usr/local/bin/roomsync

# ---- sqlx-cli: the migration tool, same minor version as the sqlx crate ------------------------
FROM rust:1.95-bookworm AS sqlx-cli
ARG SQLX_CLI_VERSION=0.9.0
RUN cargo install sqlx-cli --locked --version "${SQLX_CLI_VERSION}" \
        --no-default-features --features postgres,native-tls

# ---- migrate: one-shot `sqlx migrate run` (docker-compose service `migrate`) ------------------
FROM debian:bookworm-slim AS migrate
# Versions are not pinned: bookworm-slim tracks Debian security updates, and a pinned
# ca-certificates version disappears from the archive when the next update lands.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 roomsync \
    && useradd --system --no-log-init --uid 10001 --gid roomsync \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin roomsync
COPY --from=sqlx-cli /usr/local/cargo/bin/sqlx /usr/local/bin/sqlx
COPY migrations /migrations
USER 10001:10001
# Needs DATABASE_URL in the environment.
ENTRYPOINT ["/usr/local/bin/sqlx", "migrate", "run", "--source", "/migrations"]

# ---- runtime: the service -------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
LABEL org.opencontainers.image.title="roomsync" \
      org.opencontainers.image.description="Receiver for Tencent Cloud Room callbacks that keeps a synchronized membership view in PostgreSQL" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# roomsync links glibc, libm, libgcc_s and OpenSSL's libssl3 (the database connection's TLS, as
# libpq's: it accepts the self-signed v1 certificates stock Citus nodes present). ca-certificates
# is for drift repair (rustls against the system's roots) and for sslmode=verify-full. The
# image is a little over 100 MB: the base (about 75 MB), ca-certificates (about 10 MB) and the
# binary (about 22 MB). Versions are not pinned, as in the migrate stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 roomsync \
    && useradd --system --no-log-init --uid 10001 --gid roomsync \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin roomsync \
    && install -d -o roomsync -g roomsync -m 0750 /var/lib/roomsync
COPY --from=builder /usr/local/bin/roomsync /usr/local/bin/roomsync
# Numeric ids so that runtimes enforcing runAsNonRoot can verify them.
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
# `roomsync healthcheck` GETs http://127.0.0.1:<port of LISTEN_ADDR>/healthz and exits 0 or 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/roomsync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/roomsync"]
CMD ["serve"]
