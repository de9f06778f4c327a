#!/usr/bin/env bash
# `make run`: a working demo on one machine. Builds in release mode, uses the
# Redis at $REDIS_URL (or 127.0.0.1:6379) when one answers, otherwise starts a
# private redis-server; starts two demo backends, writes demo routes, starts
# the proxy and prints what to try. Ctrl-C stops everything this script
# started (never a Redis it did not start).
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9090}
ROUTES_KEY=${ROUTES_KEY:-routes}
RUN_DIR=$(mktemp -d -t switchyard-demo.XXXXXX)
PIDS=()

cleanup() {
    trap - INT TERM EXIT
    echo
    echo "stopping demo..."
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN_DIR"
}
trap cleanup INT TERM EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until a command succeeds, at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}

if ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-cli / redis-server not found. Install Redis first:"
    echo "    sudo apt-get install -y redis-server      # Debian/Ubuntu"
    echo "    brew install redis                        # macOS"
    exit 1
fi

echo "building (release)..."
cargo build --release --bin switchyard --example demo_backend

# 1. Redis: the one at REDIS_URL / 127.0.0.1:6379 if it answers, else a private one.
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
if redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
    echo "using Redis at $REDIS_URL"
else
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "no Redis answers at $REDIS_URL and redis-server is not installed:"
        echo "    sudo apt-get install -y redis-server      # Debian/Ubuntu"
        echo "    brew install redis                        # macOS"
        exit 1
    fi
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" &
    PIDS+=($!)
    REDIS_URL="redis://127.0.0.1:$port/0"
    wait_for 10 redis-cli -u "$REDIS_URL" ping || { echo "private redis-server did not start"; exit 1; }
    echo "started a private redis-server at $REDIS_URL"
fi

# 2. Two demo backends.
BLUE_PORT=3001; port_busy "$BLUE_PORT" && BLUE_PORT=$(free_port)
GREEN_PORT=3002; port_busy "$GREEN_PORT" && GREEN_PORT=$(free_port)
target/release/examples/demo_backend --listen "127.0.0.1:$BLUE_PORT" --name blue &
PIDS+=($!)
target/release/examples/demo_backend --listen "127.0.0.1:$GREEN_PORT" --name green &
PIDS+=($!)
BLUE="127.0.0.1:$BLUE_PORT"
GREEN="127.0.0.1:$GREEN_PORT"

# 3. Demo routes.
redis-cli -u "$REDIS_URL" HSET "$ROUTES_KEY" \
    blue.localhost "$BLUE" green.localhost "$GREEN" both.localhost "$BLUE,$GREEN" >/dev/null

# 4. The proxy.
port_busy "$PROXY_PORT" && { echo "port $PROXY_PORT is busy: set PROXY_PORT"; exit 1; }
port_busy "$ADMIN_PORT" && { echo "port $ADMIN_PORT is busy: set ADMIN_PORT"; exit 1; }
target/release/switchyard --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --redis-url "$REDIS_URL" --routes-key "$ROUTES_KEY" --replica-id demo &
PIDS+=($!)
wait_for 15 curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" || { echo "proxy did not become ready"; exit 1; }

REDIS_CLI="redis-cli -u $REDIS_URL"
cat <<TXT

Switchyard is running: proxy on 127.0.0.1:$PROXY_PORT, admin on 127.0.0.1:$ADMIN_PORT, Redis at $REDIS_URL.

Try:
  curl -H 'Host: blue.localhost'  http://127.0.0.1:$PROXY_PORT/
  curl -H 'Host: green.localhost' http://127.0.0.1:$PROXY_PORT/
  curl -H 'Host: both.localhost'  http://127.0.0.1:$PROXY_PORT/     # round-robin
  curl -H 'Host: nobody.localhost' http://127.0.0.1:$PROXY_PORT/    # 404
  curl http://127.0.0.1:$ADMIN_PORT/routes
  curl http://127.0.0.1:$ADMIN_PORT/readyz
  curl http://127.0.0.1:$ADMIN_PORT/metrics

Move a route (live at once):
  $REDIS_CLI HSET $ROUTES_KEY blue.localhost $GREEN
  target/release/switchyard route set blue.localhost $BLUE --redis-url $REDIS_URL --routes-key $ROUTES_KEY --wait
  target/release/switchyard route list --redis-url $REDIS_URL --routes-key $ROUTES_KEY

Ctrl-C stops everything this demo started.
TXT
wait
