# syntax=docker/dockerfile:1
# The proxy image, built from this repository (also carries the demo backend
# that docker-compose.yml runs as the blue and green apps).
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -e SWITCHYARD_REDIS_URL=redis://my-redis:6379/0 switchyard

# --- build stage: the full Rust toolchain, thrown away afterwards.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole tree (minus .dockerignore): Cargo.toml names targets under
# src/, tests/ and bench/, and cargo refuses a manifest whose target files
# are missing, so copying only src/ would not build. Only the two binaries
# are compiled, with no dev-dependency (demo_backend is a [[bin]], not an
# example, for that reason).
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit), so
# a source change recompiles only this crate. target/ is a cache, not a
# layer, hence the copy to /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard --bin demo_backend \
    && mkdir -p /out \
    && cp target/release/switchyard target/release/demo_backend /out/

# --- runtime stage: Debian slim, CA roots for rediss://, no compiler.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard
COPY --from=build /out/switchyard /usr/local/bin/switchyard
COPY --from=build /out/demo_backend /usr/local/bin/demo_backend
# Never root: the proxy needs no privilege (its ports are above 1024).
USER switchyard
# 8080 proxied traffic; 8443 HTTPS when --tls-listen is set; 9090 admin. The admin endpoint listens on loopback
# unless SWITCHYARD_ADMIN_LISTEN says otherwise (docker-compose sets
# 0.0.0.0:9090), because /routes shows the whole table.
EXPOSE 8080 8443 9090
# SIGTERM (docker stop) drains in-flight requests; give the container a stop
# timeout above --shutdown-timeout (10s by default).
ENTRYPOINT ["switchyard"]
