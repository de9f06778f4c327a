# Switchyard: the two commands are `make run` (demo) and `make test` (all tests).
.PHONY: run test lint bench soak build clean

run:
	bash scripts/run-demo.sh

# Unit, property and integration tests. Integration tests start their own
# redis-server processes on free ports, so redis-server must be installed.
test:
	@command -v redis-server >/dev/null || { echo "redis-server is missing: sudo apt-get install -y redis-server"; exit 1; }
	cargo test --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

bench:
	bash bench/run.sh

# 60-120 s under load and route churn; not part of `make test`.
soak:
	cargo test --release --locked --test soak

build:
	cargo build --release --locked --bin switchyard --examples

clean:
	cargo clean
