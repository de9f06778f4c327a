# Multi-stage build of the proxy (and the demo backend used by docker-compose).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY bench ./bench
COPY tests ./tests
RUN cargo build --release --locked --bin switchyard --example demo_backend

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY --from=build /src/target/release/examples/demo_backend /usr/local/bin/demo_backend
USER switchyard
EXPOSE 8080 9090
ENTRYPOINT ["switchyard"]
