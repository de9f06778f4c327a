# Shell helpers shared by the bench scripts (run.sh, tls.sh, quickack.sh):
# the process bookkeeping (every process a script starts goes into PIDS and
# is stopped on exit), package installation, waits and free ports, CPU
# accounting, verdicts, and the nginx configuration every script shares.
#
# Sourced, not run. The script sets LOG_TAG (its log prefix), RUN (its temp
# directory) and PIDS=() first, then `trap bench_cleanup EXIT`.

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }

# Stops every process in PIDS (TERM, then KILL after 5 s) and removes RUN,
# unless the script failed or BENCH_KEEP=1 (then RUN is kept and named).
bench_cleanup() {
    local rc=$? p
    trap - INT TERM EXIT
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        log "run directory kept: $RUN"
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}

# Stops one process this script started (and forgets it).
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Installs the Debian packages named (nothing when none is), without
# letting them start services of their own (nginx would grab :80).
install_missing() { # package...
    [ $# -gt 0 ] || return 0
    log "installing $*"
    local sudo="" policy_created=0
    [ "$(id -u)" = 0 ] || sudo=sudo
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
    if [ "$policy_created" = 1 ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
}

wait_for() { # seconds command...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A private redis-server on `port`, no persistence, in RUN; its pid in
# REDIS_PID (and PIDS).
start_redis_on() { # port [redis-server args...] -> REDIS_PID
    local port=$1; shift
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$RUN" --logfile "$RUN/redis-$port.log" "$@" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for 10 redis-cli -p "$port" ping || { log "redis-server did not start"; exit 1; }
}

# CPU ticks (utime+stime, every thread) of processes and their children.
cpu_ticks() { # pid...
    local total=0 p t
    for p in "$@"; do
        for t in $p $(ps -o pid= --ppid "$p" 2>/dev/null); do
            [ -r "/proc/$t/stat" ] || continue
            total=$((total + $(sed 's/.*) //' "/proc/$t/stat" | awk '{ print $12 + $13 }')))
        done
    done
    echo "$total"
}

# The VM's CPU time since a `cpu_stat` sample: the share other guests took
# (steal) and the share left idle. A shared host's bad minute shows here, so
# a slow figure can be told from a slow proxy.
cpu_stat() { sed -n 's/^cpu  *//p' /proc/stat | head -1; }
steal_since() { # cpu_stat sample -> "steal idle" in percent, then busy ticks
    awk -v a="$1" -v b="$(cpu_stat)" 'BEGIN {
        split(a, x); split(b, y); t = 0
        for (i = 1; i <= 8; i++) t += y[i] - x[i]
        if (t <= 0) { print "nan nan 0"; exit }
        # busy: user, nice, system, irq, softirq (not idle, iowait, steal)
        busy = (y[1] - x[1]) + (y[2] - x[2]) + (y[3] - x[3]) + (y[6] - x[6]) + (y[7] - x[7])
        printf "%.1f %.1f %d\n", 100 * (y[8] - x[8]) / t, 100 * (y[4] - x[4]) / t, busy
    }'
}

le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && b != "nan" && a + 0 <= b + 0) }'; }
verdict() { if le "$@"; then echo PASS; else echo FAIL; fi; }

# wrk's `done` hook: one line, `WRKRESULT requests=… duration_us=… p50_us=…
# p99_us=… non2xx=… sockerr=…`, for the scripts to parse.
wrk_done_lua() {
    cat <<'EOF'
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("WRKRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
}

# ---------------------------------------------------------------- nginx
# The top of an nginx.conf of ours: everything in `dir`, no daemon user
# switch unless root.
nginx_head() { # dir
    local d=$1
    mkdir -p "$d/tmp"
    [ "$(id -u)" = 0 ] && echo "user root;"
    cat <<EOF
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
EOF
}

# The start of its http block: no access log, temp paths in `dir`, long
# keep-alive.
nginx_http_head() { # dir
    local d=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
EOF
}

# nginx as a proxy does what Switchyard does: HTTP/1.1 keep-alive upstream,
# the same forwarding headers, a request id both ways. Lines of a
# `location` block.
nginx_proxy_headers() {
    cat <<'EOF'
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id;
EOF
}

start_nginx() { # dir -> NGINX_PID (the master, in this session)
    local d=$1
    "$NGINX" -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}
