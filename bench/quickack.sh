#!/usr/bin/env bash
# The delayed-ACK scenario (issue 25 item 14), on its own or as a phase of
# `make bench` (bench/run.sh calls it): a Python http.server backend that
# writes its head and its body in two writes without TCP_NODELAY, and
# QUICKACK_N (default 300) sequential keep-alive requests on one connection
# straight to it (direct), through nginx (one worker, the proxy config of
# bench/run.sh's write_nginx_proxy) and through Switchyard as it ships.
# Prints a markdown table (p50/p99 side by side, ratios to nginx); target:
# Switchyard p99 <= 5 ms.
#
#   bash bench/quickack.sh                       # standalone, prints the table
#   QUICKACK_TARGETS=file bash bench/quickack.sh # also appends a target row
#
# Knobs: QUICKACK_N, QUICKACK_ROUNDS (default 3; the table shows the median
# round), QUICKACK_BIN (a switchyard binary; default: release build).
# Everything listens on 127.0.0.1 only, on free ports, and is stopped on exit.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${QUICKACK_N:-300}
ROUNDS=${QUICKACK_ROUNDS:-3}
RUN=$(mktemp -d /tmp/switchyard-quickack.XXXXXX)
PIDS=()
LOG_TAG=quickack
. "$ROOT/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${QUICKACK_BIN:-}" ]; then
    BIN=$QUICKACK_BIN
else
    cargo build --release --locked --bin switchyard >&2
    BIN=$ROOT/target/release/switchyard
fi
NGINX=$(command -v nginx || true)
HOST=quickack.bench.test

BACKEND_PORT=$(free_port)
python3 bench/quickack.py serve "$BACKEND_PORT" &
PIDS+=($!)
wait_for 10 curl -sf "http://127.0.0.1:$BACKEND_PORT/" || { log "backend did not start"; exit 1; }

REDIS_PORT=$(free_port)
start_redis_on "$REDIS_PORT"
redis-cli -p "$REDIS_PORT" HSET routes "$HOST" "127.0.0.1:$BACKEND_PORT" >/dev/null

SY_PORT=$(free_port)
SY_ADMIN=$(free_port)
"$BIN" --listen "127.0.0.1:$SY_PORT" --admin-listen "127.0.0.1:$SY_ADMIN" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --replica-id bench-quickack \
    --access-log false >"$RUN/sy.log" 2>&1 &
PIDS+=($!)
wait_for 60 curl -sf "http://127.0.0.1:$SY_ADMIN/readyz" || { log "switchyard not ready"; tail "$RUN/sy.log" >&2; exit 1; }
wait_for 10 curl -sf -H "Host: $HOST" "http://127.0.0.1:$SY_PORT/" || { log "switchyard does not route"; exit 1; }

TARGETS=(direct sy-nt)
declare -A URL=([direct]="http://127.0.0.1:$BACKEND_PORT/" [sy-nt]="http://127.0.0.1:$SY_PORT/")
if [ -n "$NGINX" ]; then
    NG_PORT=$(free_port)
    d=$RUN/nginx
    # Before the block: its output file is opened before nginx_head runs.
    mkdir -p "$d/tmp"
    {
        nginx_head "$d"
        cat <<EOF
worker_processes 1;
events { worker_connections 1024; }
http {
$(nginx_http_head "$d")
    upstream be0 { server 127.0.0.1:$BACKEND_PORT; keepalive 256; keepalive_requests 1000000; keepalive_timeout 120s; }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / {
            proxy_pass http://be0;
$(nginx_proxy_headers)
        }
    }
}
EOF
    } >"$d/nginx.conf"
    start_nginx "$d"
    wait_for 10 curl -sf -H "Host: $HOST" "http://127.0.0.1:$NG_PORT/" || { log "nginx did not start"; cat "$RUN/nginx/error.log" >&2; exit 1; }
    TARGETS=(direct nginx sy-nt)
    URL[nginx]="http://127.0.0.1:$NG_PORT/"
else
    log "nginx not installed: measuring direct and Switchyard only"
fi

# Rounds interleave the targets; each round is N requests on a fresh
# connection (a warm-up of 20 first, so pools are filled).
: >"$RUN/raw.tsv"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        python3 bench/quickack.py measure "${URL[$t]}" "$HOST" 20 >/dev/null
        read -r p50 p99 slow <<<"$(python3 bench/quickack.py measure "${URL[$t]}" "$HOST" "$N")"
        printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$round" "$p50" "$p99" "$slow" >>"$RUN/raw.tsv"
        log "round $round $t: p50 $p50 ms, p99 $p99 ms, $slow of $N over 20 ms"
    done
done

# The median round per target (by p99), then ratios within the table.
median_row() { # target -> "p50 p99 slow"
    awk -F'\t' -v t="$1" '$1 == t { print $4, $3, $5 }' "$RUN/raw.tsv" | sort -n |
        awk '{ r[NR] = $2 " " $1 " " $3 } END { print r[int((NR + 1) / 2)] }'
}
declare -A P50 P99 SLOW
for t in "${TARGETS[@]}"; do
    read -r P50[$t] P99[$t] SLOW[$t] <<<"$(median_row "$t")"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "## Backend writing head and body apart without TCP_NODELAY (delayed ACK, issue 25 item 14)"
echo
echo "Python http.server backend (head and body in two writes, no TCP_NODELAY), $N sequential keep-alive GETs on one connection per round, $ROUNDS rounds interleaved, the median round (by p99) shown; slow: requests over 20 ms."
echo
if [ -n "$NGINX" ]; then
    echo "| target | p50 ms | p99 ms | slow | p50 / nginx | p99 / nginx |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for t in "${TARGETS[@]}"; do
        echo "| $t | ${P50[$t]} | ${P99[$t]} | ${SLOW[$t]} of $N | $(ratio "${P50[$t]}" "${P50[nginx]}") | $(ratio "${P99[$t]}" "${P99[nginx]}") |"
    done
else
    echo "| target | p50 ms | p99 ms | slow |"
    echo "| --- | ---: | ---: | ---: |"
    for t in "${TARGETS[@]}"; do
        echo "| $t | ${P50[$t]} | ${P99[$t]} | ${SLOW[$t]} of $N |"
    done
fi
verdict=$(awk -v v="${P99[sy-nt]}" 'BEGIN { print (v <= 5 ? "holds" : "**misses**") }')
echo
echo "Target: Switchyard p99 ≤ 5 ms on this backend: ${P99[sy-nt]} ms, $verdict."
if [ -n "${QUICKACK_TARGETS:-}" ]; then
    echo "| p99, head/body-split backend (delayed ACK) | ${P99[sy-nt]} ms | ≤ 5 ms | $verdict |" >>"$QUICKACK_TARGETS"
fi
