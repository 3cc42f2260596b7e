# syntax=docker/dockerfile:1
#
# Sentinel container image.
#
#   docker build -t sentinel:local .
#   docker run --rm -p 8000:8000 -e SENTINEL_DEMO_KEY=sk-sntl-... sentinel:local
#
# The image ships config/sentinel.toml as /etc/sentinel/sentinel.toml (embedded store, the
# bundled mock behind the `demo` model); mount your own file over it, or a directory over
# /etc/sentinel, for anything else. Every key can also be overridden with
# SENTINEL_<SECTION>__<KEY> environment variables.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# 1. Dependencies only. Cargo.toml and Cargo.lock are copied before any source so this layer
#    (the slow part: ~300 crates, aws-lc, SQLite) is rebuilt only when they change. The
#    dummy targets mirror the manifest's lib, bin and [[test]] paths so cargo accepts it.
#    A dummy build.rs makes cargo compile the build script's dependency (tiktoken-rs) here too.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/e2e \
 && echo 'fn main() {}' > build.rs \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > tests/e2e/main.rs \
 && cargo build --release --locked \
 && rm -rf src \
           target/release/sentinel* \
           target/release/deps/sentinel-* target/release/deps/libsentinel-* \
           target/release/.fingerprint/sentinel-*

# 2. The real sources. COPY keeps the files' original mtimes, which can be older than the
#    dummy build; the fingerprints were removed above and the files are touched so cargo can
#    never mistake the dummy binary for an up-to-date one.
COPY build.rs ./
COPY src ./src
COPY config ./config
RUN touch build.rs src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && ./target/release/sentinel --version

# A later feature needs model files fetched by scripts/fetch-model (not in this build yet).
# When it lands, fetch them in their own stage so the download is cached apart from the code,
# and copy the result into the runtime stage:
# FROM builder AS models
# COPY scripts/fetch-model ./scripts/fetch-model
# RUN ./scripts/fetch-model --dest /models
# (runtime stage) COPY --from=models --chown=root:root /models /usr/share/sentinel/models

# ---------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to the providers. curl: the HEALTHCHECK below (and debugging).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid (10001) so Kubernetes' runAsNonRoot and volume ownership are
# predictable across rebuilds.
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid sentinel --home-dir /var/lib/sentinel \
            --no-create-home --shell /usr/sbin/nologin sentinel \
 && mkdir -p /etc/sentinel /var/lib/sentinel \
 && chown sentinel:sentinel /var/lib/sentinel

COPY --from=builder /src/target/release/sentinel /usr/local/bin/sentinel
COPY --chown=root:root config/sentinel.toml /etc/sentinel/sentinel.toml

# Listen on every interface inside the container (the file says 127.0.0.1), and keep the
# embedded store on the data volume. Both are ordinary config overrides.
ENV SENTINEL_SERVER__LISTEN=0.0.0.0:8000 \
    SENTINEL_STORE__PATH=/var/lib/sentinel/sentinel.db

# /etc/sentinel: configuration (read-only is fine). /var/lib/sentinel: embedded store and
# other local state; the working directory, so relative paths land on the volume too.
VOLUME ["/etc/sentinel", "/var/lib/sentinel"]
WORKDIR /var/lib/sentinel

USER sentinel:sentinel
EXPOSE 8000

# Liveness only: /health/ready also depends on the store and upstreams, and a container
# should not be reported unhealthy because Redis or a provider is briefly away.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/health/live"]

# SIGTERM (Docker's default stop signal) starts a graceful drain of up to
# server.shutdown_grace (30 s by default): give `docker stop` a longer timeout (-t 35).
ENTRYPOINT ["sentinel"]
CMD ["serve", "--config", "/etc/sentinel/sentinel.toml"]
