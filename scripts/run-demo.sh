#!/usr/bin/env bash
# `make run`: a working demo on one machine. Checks its ports first, builds
# in release mode, uses the Redis at $REDIS_URL (or 127.0.0.1:6379) when one
# answers, otherwise starts a private redis-server; starts two demo
# backends, writes demo routes under a key of its own, starts the proxy and
# prints what to try. Ctrl-C stops everything this script started and
# removes what it wrote, and only that: a Redis it found running keeps
# everything else, real routes included.
#
# Environment: REDIS_URL; PROXY_PORT (8080) and ADMIN_PORT (9090), which
# must be free; BLUE_PORT (3001) and GREEN_PORT (3002), moved when busy;
# ROUTES_KEY (default: a key of this run's own, `switchyard-demo-<pid>`;
# an existing key is used only if it has none of the demo hosts, and only
# the demo hosts are removed from it at exit);
# SWITCHYARD_DEMO_BIN_DIR: use the binaries there (`switchyard`,
# `demo_backend`) instead of building (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY_PORT=${PROXY_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9090}
BLUE_PORT=${BLUE_PORT:-3001}
GREEN_PORT=${GREEN_PORT:-3002}
DEMO_HOSTS=(blue.localhost green.localhost both.localhost)
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
PIDS=()        # processes this script started, in start order (Redis aside)
REDIS_PID=""   # the private redis-server, if this script started one
WROTE=""       # "key" (our own key) or "fields" (demo hosts in the user's key)

install_hint() {
    echo "    sudo apt-get install -y redis-server      # Debian/Ubuntu"
    echo "    brew install redis                        # macOS"
}

# Stops what we started, newest first (the proxy before the backends),
# politely, then by force after a deadline so Ctrl-C never hangs; then
# removes the demo routes from a Redis that outlives the demo; then stops a
# private Redis. The length check keeps `set -u` happy on bash 3.2 (macOS)
# when the array is empty. (Called from the EXIT trap, hence the
# shellcheck note.)
# shellcheck disable=SC2317
stop_pids() {
    local deadline=$((SECONDS + 12)) pid i
    for ((i = $# ; i >= 1; i--)); do
        kill -TERM "${!i}" 2>/dev/null || true
    done
    # The proxy drains in-flight requests for up to its shutdown timeout.
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# shellcheck disable=SC2317
cleanup() {
    local status=$?
    trap - INT TERM EXIT
    if [ ${#PIDS[@]} -gt 0 ] || [ -n "$REDIS_PID" ] || [ -n "$WROTE" ]; then
        echo
        echo "stopping the demo..."
    fi
    if [ ${#PIDS[@]} -gt 0 ]; then
        stop_pids "${PIDS[@]}"
    fi
    if [ -n "$WROTE" ] && [ -z "$REDIS_PID" ]; then
        if [ "$WROTE" = key ]; then
            # The hash, and what the tools keep beside it (the replica
            # registry, a change log, a removal confirmation).
            redis-cli -u "$REDIS_URL" DEL "$ROUTES_KEY" "$ROUTES_KEY:replicas" \
                "$ROUTES_KEY:log" "$ROUTES_KEY:accept-removal" >/dev/null 2>&1 || true
        else
            redis-cli -u "$REDIS_URL" HDEL "$ROUTES_KEY" "${DEMO_HOSTS[@]}" >/dev/null 2>&1 || true
        fi
        echo "removed the demo routes ($ROUTES_KEY) from $REDIS_URL"
    fi
    if [ -n "$REDIS_PID" ]; then
        stop_pids "$REDIS_PID"
    fi
    wait 2>/dev/null || true
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

# 1. What can be checked without touching anything: tools and the proxy's
#    ports (printed below, so a busy one is an error, not a silent switch).
for tool in redis-cli curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is not installed."
        [ "$tool" = redis-cli ] && install_hint
        exit 1
    fi
done
for p in "$PROXY_PORT" "$ADMIN_PORT"; do
    if port_busy "$p"; then
        echo "port $p is busy: set PROXY_PORT / ADMIN_PORT to free ones (nothing was started or written)"
        exit 1
    fi
done

# 2. Decide on Redis before the (long) build, so a missing redis-server is
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

# 3. Where the demo routes go: a key of this run's own, so they can never
#    clash with real routes; or the user's ROUTES_KEY if it has none of them.
if [ -n "${ROUTES_KEY:-}" ]; then
    OWN_KEY=0
    if [ "$PRIVATE_REDIS" = 0 ]; then
        for host in "${DEMO_HOSTS[@]}"; do
            if [ "$(redis-cli -u "$REDIS_URL" HEXISTS "$ROUTES_KEY" "$host")" != 0 ]; then
                echo "$ROUTES_KEY already has a route for $host: not overwriting it (unset ROUTES_KEY to use a demo key)"
                exit 1
            fi
        done
    fi
else
    OWN_KEY=1
    ROUTES_KEY="switchyard-demo-$$"
fi

if [ -n "${SWITCHYARD_DEMO_BIN_DIR:-}" ]; then
    BIN_DIR=$SWITCHYARD_DEMO_BIN_DIR
else
    echo "building (release)..."
    cargo build --release --bin switchyard --bin demo_backend
    BIN_DIR=target/release
fi

if [ "$PRIVATE_REDIS" = 1 ]; then
    port=$(free_port)
    # No persistence: the private Redis lives and dies with the demo.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" &
    REDIS_PID=$!
    REDIS_URL="redis://127.0.0.1:$port/0"
    if ! wait_for 10 "$REDIS_PID" redis_answers "$REDIS_URL"; then
        echo "the private redis-server did not start; its log:"
        cat "$RUN_DIR/redis.log" || true
        exit 1
    fi
    echo "started a private redis-server at $REDIS_URL"
fi

# 4. Two demo backends, on their usual ports unless those are taken.
port_busy "$BLUE_PORT" && BLUE_PORT=$(free_port)
port_busy "$GREEN_PORT" && GREEN_PORT=$(free_port)
"$BIN_DIR/demo_backend" --listen "127.0.0.1:$BLUE_PORT" --name blue &
PIDS+=($!)
wait_for 10 "$!" port_busy "$BLUE_PORT" || { echo "the blue backend did not start"; exit 1; }
"$BIN_DIR/demo_backend" --listen "127.0.0.1:$GREEN_PORT" --name green &
PIDS+=($!)
wait_for 10 "$!" port_busy "$GREEN_PORT" || { echo "the green backend did not start"; exit 1; }
BLUE="127.0.0.1:$BLUE_PORT"
GREEN="127.0.0.1:$GREEN_PORT"

# 5. Demo routes (written before the proxy starts: it loads them at boot).
if [ "$OWN_KEY" = 1 ]; then WROTE=key; else WROTE=fields; fi
redis-cli -u "$REDIS_URL" HSET "$ROUTES_KEY" \
    blue.localhost "$BLUE" green.localhost "$GREEN" both.localhost "$BLUE,$GREEN" >/dev/null

# 6. The proxy (its ports were checked first; a race for them fails here).
"$BIN_DIR/switchyard" serve --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --redis-url "$REDIS_URL" --routes-key "$ROUTES_KEY" --replica-id demo &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
if ! wait_for 30 "$PROXY_PID" curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"; then
    echo "the proxy did not become ready; /readyz says:"
    curl -s "http://127.0.0.1:$ADMIN_PORT/readyz" || true
    exit 1
fi

REDIS_CLI="redis-cli -u $REDIS_URL"
SWITCHYARD="$BIN_DIR/switchyard --redis-url $REDIS_URL --routes-key $ROUTES_KEY"
cat <<TXT

Switchyard is running: proxy on 127.0.0.1:$PROXY_PORT, admin on 127.0.0.1:$ADMIN_PORT,
Redis at $REDIS_URL, demo routes in the hash $ROUTES_KEY.

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
  $SWITCHYARD route set --wait blue.localhost $BLUE
  $SWITCHYARD route list
  $SWITCHYARD status

Ctrl-C stops everything this demo started and removes the demo routes.

TXT

# Runs until Ctrl-C (the trap cleans up) or until the proxy exits by itself.
set +e
wait "$PROXY_PID"
status=$?
set -e
echo "the proxy exited with status $status"
exit "$status"
