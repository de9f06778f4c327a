#!/usr/bin/env bash
# `make run`: a working demo on one machine. Builds in release mode, uses the
# Redis at $REDIS_URL (or 127.0.0.1:6379) when one answers, otherwise starts a
# private redis-server; starts two demo backends, writes demo routes, starts
# the proxy and prints what to try. Ctrl-C stops everything this script
# started, and only that: a Redis it found running is never touched.
#
# Environment: REDIS_URL, ROUTES_KEY (default routes), PROXY_PORT (8080),
# ADMIN_PORT (9090), BLUE_PORT (3001), GREEN_PORT (3002).
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9090}
BLUE_PORT=${BLUE_PORT:-3001}
GREEN_PORT=${GREEN_PORT:-3002}
ROUTES_KEY=${ROUTES_KEY:-routes}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
PIDS=() # every process this script started, in start order

install_hint() {
    echo "    sudo apt-get install -y redis-server      # Debian/Ubuntu"
    echo "    brew install redis                        # macOS"
}

# Stops what we started, newest first (the proxy before the Redis it talks
# to), politely, then by force after a deadline so Ctrl-C never hangs.
# The length check keeps `set -u` happy on bash 3.2 (macOS) when the array
# is empty. (Called from the EXIT trap, hence the shellcheck note.)
# shellcheck disable=SC2317
cleanup() {
    local status=$?
    trap - INT TERM EXIT
    if [ ${#PIDS[@]} -gt 0 ]; then
        echo
        echo "stopping the demo (pids ${PIDS[*]})..."
        local i
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
            kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        done
        # The proxy drains in-flight requests for up to its shutdown timeout.
        local deadline=$((SECONDS + 12)) pid
        for pid in "${PIDS[@]}"; do
            while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait 2>/dev/null || true
    fi
    rm -rf "$RUN_DIR"
    exit "$status"
}
trap cleanup EXIT
# Exiting from the signal traps runs the EXIT trap exactly once.
trap 'exit 130' INT
trap 'exit 143' TERM

# Is something listening on 127.0.0.1:$1? (bash's /dev/tcp: no nc needed.)
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nobody listens on, from the range above the usual ephemeral
# ranges' low end; plain bash so a fresh machine needs no python.
free_port() {
    local port tries=0
    while [ $tries -lt 200 ]; do
        port=$((20000 + RANDOM % 30000))
        if ! port_busy "$port"; then echo "$port"; return 0; fi
        tries=$((tries + 1))
    done
    echo "no free port found" >&2
    return 1
}

# wait_for SECONDS PID CMD...: polls CMD every 0.1 s until it succeeds; fails
# at the deadline, or at once if process PID (0 = none) has exited.
wait_for() {
    local deadline=$((SECONDS + $1)) pid=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$pid" != 0 ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}

redis_answers() {
    [ "$(redis-cli -u "$1" ping 2>/dev/null)" = PONG ]
}

if ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-cli is not installed. Install Redis first:"
    install_hint
    exit 1
fi

# 1. Decide on Redis before the (long) build, so a missing redis-server is
#    reported at once.
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
PRIVATE_REDIS=0
if redis_answers "$REDIS_URL"; then
    echo "using the Redis at $REDIS_URL"
else
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "no Redis answers at $REDIS_URL and redis-server is not installed:"
        install_hint
        exit 1
    fi
    PRIVATE_REDIS=1
fi

echo "building (release)..."
cargo build --release --bin switchyard --bin demo_backend

if [ "$PRIVATE_REDIS" = 1 ]; then
    port=$(free_port)
    # No persistence: the private Redis lives and dies with the demo.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" &
    PIDS+=($!)
    REDIS_URL="redis://127.0.0.1:$port/0"
    if ! wait_for 10 "$!" redis_answers "$REDIS_URL"; then
        echo "the private redis-server did not start; its log:"
        cat "$RUN_DIR/redis.log" || true
        exit 1
    fi
    echo "started a private redis-server at $REDIS_URL"
fi

# 2. Two demo backends, on their usual ports unless those are taken.
port_busy "$BLUE_PORT" && BLUE_PORT=$(free_port)
port_busy "$GREEN_PORT" && GREEN_PORT=$(free_port)
target/release/demo_backend --listen "127.0.0.1:$BLUE_PORT" --name blue &
PIDS+=($!)
wait_for 10 "$!" port_busy "$BLUE_PORT" || { echo "the blue backend did not start"; exit 1; }
target/release/demo_backend --listen "127.0.0.1:$GREEN_PORT" --name green &
PIDS+=($!)
wait_for 10 "$!" port_busy "$GREEN_PORT" || { echo "the green backend did not start"; exit 1; }
BLUE="127.0.0.1:$BLUE_PORT"
GREEN="127.0.0.1:$GREEN_PORT"

# 3. Demo routes (written before the proxy starts: it loads them at boot).
redis-cli -u "$REDIS_URL" HSET "$ROUTES_KEY" \
    blue.localhost "$BLUE" green.localhost "$GREEN" both.localhost "$BLUE,$GREEN" >/dev/null

# 4. The proxy. Its ports are the ones printed below, so a busy one is an
#    error rather than a silent switch.
for p in "$PROXY_PORT" "$ADMIN_PORT"; do
    if port_busy "$p"; then
        echo "port $p is busy: set PROXY_PORT / ADMIN_PORT to free ones"
        exit 1
    fi
done
target/release/switchyard --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --redis-url "$REDIS_URL" --routes-key "$ROUTES_KEY" --replica-id demo &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
if ! wait_for 30 "$PROXY_PID" curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"; then
    echo "the proxy did not become ready; /readyz says:"
    curl -s "http://127.0.0.1:$ADMIN_PORT/readyz" || true
    exit 1
fi

REDIS_CLI="redis-cli -u $REDIS_URL"
SWITCHYARD="target/release/switchyard --redis-url $REDIS_URL --routes-key $ROUTES_KEY"
cat <<TXT

Switchyard is running: proxy on 127.0.0.1:$PROXY_PORT, admin on 127.0.0.1:$ADMIN_PORT, Redis at $REDIS_URL.

Try:
  curl -H 'Host: blue.localhost' http://127.0.0.1:$PROXY_PORT/
  curl -H 'Host: green.localhost' http://127.0.0.1:$PROXY_PORT/
  curl -H 'Host: both.localhost' http://127.0.0.1:$PROXY_PORT/      # round-robin over both
  curl -H 'Host: nobody.localhost' http://127.0.0.1:$PROXY_PORT/    # 404
  curl http://127.0.0.1:$ADMIN_PORT/routes
  curl http://127.0.0.1:$ADMIN_PORT/metrics
  curl http://127.0.0.1:$ADMIN_PORT/readyz

Move blue.localhost to the green backend (live at once, no restart):
  $REDIS_CLI HSET $ROUTES_KEY blue.localhost $GREEN
  $SWITCHYARD route set blue.localhost $BLUE --wait
  $SWITCHYARD route list

Ctrl-C stops everything this demo started.

TXT

# Runs until Ctrl-C (the trap cleans up) or until the proxy exits by itself.
set +e
wait "$PROXY_PID"
status=$?
set -e
echo "the proxy exited with status $status"
exit "$status"
