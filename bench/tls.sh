#!/usr/bin/env bash
# TLS (issue 26 item 9), on its own or as phase `tls` of `make bench`
# (bench/run.sh calls it): Switchyard's `--tls-listen` (the default
# certificate from `--tls-cert`/`--tls-key`) against nginx (one worker,
# `ssl` + `http2`), both serving the same ECDSA P-256 certificate made now
# by openssl, TLS 1.3, in front of the same backend. Three scenarios, the
# targets interleaved in every repetition (nginx, sy-1t, sy-nt):
#
#   handshakes  a new connection and a full TLS 1.3 handshake per request
#               (bench/tls_handshakes.rs: no resumption, checked)
#   keepalive   HTTPS keep-alive, HTTP/1.1 (wrk -t1 -c50 --latency)
#   h2          HTTP/2 over TLS by ALPN (h2load; p50/p99 from its log file)
#
# Prints a markdown section (tables, ratios, targets) on stdout; method and
# reading in bench/README.md, "TLS".
#
#   bash bench/tls.sh                        # standalone (~6 min)
#   BENCH_QUICK=1 bash bench/tls.sh          # smoke run (~1 min)
#   TLSBENCH_TARGETS=file bash bench/tls.sh  # also appends target rows
#
# Knobs: BENCH_DURATION (s per run, 5), TLSBENCH_REPS (5), BENCH_CONNS (50:
# wrk connections and handshake clients), TLSBENCH_H2_CONNS / _STREAMS
# (h2load -c / -m: 10 / 10), BENCH_STEAL_MAX / BENCH_STEAL_ATTEMPTS (0.5 %,
# 4: a run the host disturbed is repeated, as in run.sh), BENCH_PERF=1
# (perf profiles of sy-1t and the nginx worker, bench/results/perf-tls-*.txt),
# TLSBENCH_BIN / TLSBENCH_HANDSHAKES (prebuilt binaries: run.sh passes its
# own). Everything listens on 127.0.0.1 on free ports, runs in this
# session (no daemons: see bench/README.md, "Reading the numbers"), and is
# stopped on exit; the machine's Redis is never touched.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    DURATION=${BENCH_DURATION:-2}
    REPS=${TLSBENCH_REPS:-1}
else
    DURATION=${BENCH_DURATION:-5}
    REPS=${TLSBENCH_REPS:-5}
fi
CONNS=${BENCH_CONNS:-50}
H2_CONNS=${TLSBENCH_H2_CONNS:-10}
H2_STREAMS=${TLSBENCH_H2_STREAMS:-10}
STEAL_MAX=${BENCH_STEAL_MAX:-0.5}
STEAL_ATTEMPTS=${BENCH_STEAL_ATTEMPTS:-4}
HOST=tls.bench.test
TARGET_LIST=(nginx sy-1t sy-nt)
SCENARIOS=(handshakes keepalive h2)
RESULTS_DIR=$ROOT/bench/results

RUN=$(mktemp -d /tmp/switchyard-tlsbench.XXXXXX)
chmod 755 "$RUN"
PIDS=()
LOG_TAG=tls
. "$ROOT/bench/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
nginx_has() { nginx -V 2>&1 | grep -q -- "--with-$1"; }
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
command -v curl >/dev/null || need_pkgs+=(curl)
if ! command -v nginx >/dev/null || ! nginx_has http_ssl_module || ! nginx_has http_v2_module; then
    # nginx-light has both on Debian 12; older or trimmed builds may not.
    need_pkgs+=(nginx-full)
fi
if [ "${BENCH_PERF:-0}" = 1 ] && ! command -v perf >/dev/null; then need_pkgs+=(linux-perf); fi
install_missing "${need_pkgs[@]}"
NGINX=$(command -v nginx)
nginx_has http_ssl_module && nginx_has http_v2_module || { log "$NGINX lacks ssl or http2"; exit 1; }

if [ -n "${TLSBENCH_BIN:-}" ] && [ -n "${TLSBENCH_HANDSHAKES:-}" ]; then
    BIN=$TLSBENCH_BIN
    HS=$TLSBENCH_HANDSHAKES
else
    log "building (release)"
    cargo build --release --locked --bin switchyard --example tls_handshakes >&2
    BIN=$ROOT/target/release/switchyard
    HS=$ROOT/target/release/examples/tls_handshakes
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- certificate
# A CA and a leaf for $HOST, both ECDSA P-256; both proxies serve the leaf
# (and its key, PKCS#8) from the same files; the handshake client trusts
# the CA.
C=$RUN/certs
mkdir -p "$C"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$C/ca.key" 2>/dev/null
openssl req -x509 -new -key "$C/ca.key" -sha256 -days 2 -subj "/CN=Switchyard bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$C/ca.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$C/key.pem" 2>/dev/null
openssl req -new -key "$C/key.pem" -subj "/CN=$HOST" -out "$C/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$HOST" >"$C/leaf.ext"
openssl x509 -req -in "$C/leaf.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 2 -sha256 \
    -extfile "$C/leaf.ext" -out "$C/cert.pem" 2>/dev/null

# ---------------------------------------------------------------- processes
# The backend: nginx answering `200 ok`, a worker per core, cleartext.
BACKEND_PORT=$(free_port)
d=$RUN/backend
mkdir -p "$d/tmp"
{
    nginx_head "$d"
    cat <<EOF
worker_processes ${BENCH_BACKEND_WORKERS:-$(nproc)};
events { worker_connections 8192; }
http {
$(nginx_http_head "$d")
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
} >"$d/nginx.conf"
start_nginx "$d"
wait_for 10 curl -sf "http://127.0.0.1:$BACKEND_PORT/" || { log "backend did not start"; cat "$d/error.log" >&2; exit 1; }

# nginx as the TLS proxy: one worker, the headers Switchyard adds, upstream
# keep-alive; TLS 1.2 and 1.3 offered (as Switchyard does), session tickets
# and cache left at nginx's defaults (the handshake client never resumes).
NG_PORT=$(free_port)
d=$RUN/nginx-tls
mkdir -p "$d/tmp"
if printf '%s\n%s\n' "1.25.1" "$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')" | sort -V -C; then
    h2_listen=""; h2_directive="        http2 on;"
else
    h2_listen=" http2"; h2_directive=""
fi
{
    nginx_head "$d"
    cat <<EOF
worker_processes 1;
events { worker_connections 8192; }
http {
$(nginx_http_head "$d")
    upstream be { server 127.0.0.1:$BACKEND_PORT; keepalive 256; keepalive_requests 1000000; keepalive_timeout 120s; }
    server {
        listen 127.0.0.1:$NG_PORT ssl$h2_listen backlog=4096;
$h2_directive
        ssl_certificate $C/cert.pem;
        ssl_certificate_key $C/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://be;
$(nginx_proxy_headers)
        }
    }
}
EOF
} >"$d/nginx.conf"
start_nginx "$d"
NG_PID=$NGINX_PID

REDIS_PORT=$(free_port)
start_redis_on "$REDIS_PORT"
redis-cli -p "$REDIS_PORT" HSET routes "$HOST" "127.0.0.1:$BACKEND_PORT" >/dev/null

start_switchyard() { # name [args...] -> SY_PID SY_TLS
    local name=$1 port admin; shift
    port=$(free_port); admin=$(free_port); SY_TLS=$(free_port)
    "$BIN" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --tls-listen "127.0.0.1:$SY_TLS" --tls-cert "$C/cert.pem" --tls-key "$C/key.pem" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --replica-id "bench-tls-$name" \
        --access-log false "$@" >"$RUN/sy-$name.log" 2>&1 &
    SY_PID=$!
    PIDS+=("$SY_PID")
    wait_for 60 curl -sf "http://127.0.0.1:$admin/readyz" || { log "switchyard $name not ready"; tail "$RUN/sy-$name.log" >&2; exit 1; }
}
start_switchyard 1t --worker-threads 1
SY1_PID=$SY_PID; SY1_PORT=$SY_TLS
start_switchyard nt
SYN_PID=$SY_PID; SYN_PORT=$SY_TLS

declare -A PORT_OF=([nginx]=$NG_PORT [sy-1t]=$SY1_PORT [sy-nt]=$SYN_PORT)
declare -A PID_OF=([nginx]=$NG_PID [sy-1t]=$SY1_PID [sy-nt]=$SYN_PID)

# Every target answers over TLS 1.3 with the bench certificate, h2 by ALPN;
# what each negotiates (protocol, cipher, key exchange) goes in the report.
NEGOTIATED=$RUN/negotiated.txt
: >"$NEGOTIATED"
for t in "${TARGET_LIST[@]}"; do
    p=${PORT_OF[$t]}
    wait_for 30 curl -sf --cacert "$C/ca.pem" --resolve "$HOST:$p:127.0.0.1" "https://$HOST:$p/" ||
        { log "$t does not answer https://$HOST:$p/"; cat "$RUN"/nginx-tls/error.log "$RUN"/sy-*.log >&2; exit 1; }
    code=$(curl -s --http2 --cacert "$C/ca.pem" --resolve "$HOST:$p:127.0.0.1" -o /dev/null -w '%{http_code} %{http_version}' "https://$HOST:$p/")
    [ "$code" = "200 2" ] || { log "$t: h2 over TLS answered '$code'"; exit 1; }
    s=$(openssl s_client -connect "127.0.0.1:$p" -servername "$HOST" -CAfile "$C/ca.pem" -alpn h2,http/1.1 </dev/null 2>&1 | tr -d '\000' || true)
    proto=$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is \(.*\)/\1 \2/p' <<<"$s" | head -1)
    kx=$(sed -n 's/^Server Temp Key: //p' <<<"$s" | head -1)
    subject=$(sed -n 's/^subject=//p' <<<"$s" | head -1)
    grep -q "Verify return code: 0 (ok)" <<<"$s" || { log "$t: certificate not verified: $s"; exit 1; }
    case $proto in TLSv1.3*) ;; *) log "$t negotiated '$proto', not TLS 1.3"; exit 1 ;; esac
    echo "$t: $proto, key exchange $kx, certificate $subject" >>"$NEGOTIATED"
done

# ---------------------------------------------------------------- runs
wrk_done_lua >"$RUN/done.lua"

# One measured run of a scenario against a target; prints
# "requests duration_us p50_us p99_us errors" (errors: failed requests,
# socket errors, non-2xx; for handshakes also resumed sessions).
measure() { # scenario target seconds
    local scenario=$1 target=$2 secs=$3 p=${PORT_OF[$2]} out line
    case $scenario in
        handshakes)
            out=$("$HS" --addr "127.0.0.1:$p" --host "$HOST" --ca "$C/ca.pem" --conns "$CONNS" --seconds "$secs" 2>&1) || true
            line=$(grep '^HANDSHAKES' <<<"$out" || true)
            [ -n "$line" ] || { log "tls_handshakes failed: $(tail -3 <<<"$out")"; echo "0 1 0 0 1"; return; }
            eval "local ${line#HANDSHAKES }"
            # shellcheck disable=SC2154
            echo "$requests $duration_us $p50_us $p99_us $((errors + resumed))"
            ;;
        keepalive)
            out=$(wrk -t1 -c"$CONNS" -d"${secs}s" --latency -s "$RUN/done.lua" -H "Host: $HOST" "https://127.0.0.1:$p/" 2>&1) || true
            line=$(grep '^WRKRESULT' <<<"$out" || true)
            [ -n "$line" ] || { log "wrk failed: $(tail -3 <<<"$out")"; echo "0 1 0 0 1"; return; }
            eval "local ${line#WRKRESULT }"
            # shellcheck disable=SC2154
            echo "$requests $duration_us $p50_us $p99_us $((non2xx + sockerr))"
            ;;
        h2)
            rm -f "$RUN/h2.log"
            out=$(h2load -c "$H2_CONNS" -m "$H2_STREAMS" -D "$secs" -H ":authority: $HOST" \
                --log-file="$RUN/h2.log" "https://127.0.0.1:$p/" 2>&1) || true
            # "requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout"
            line=$(grep '^requests:' <<<"$out" || true)
            proto=$(sed -n 's/^Application protocol: //p' <<<"$out")
            [ -n "$line" ] && [ "$proto" = h2 ] || { log "h2load failed ($proto): $(tail -5 <<<"$out")"; echo "0 1 0 0 1"; return; }
            local ok failed errored
            ok=$(sed -n 's/.* \([0-9]*\) succeeded.*/\1/p' <<<"$line")
            failed=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
            errored=$(sed -n 's/.* \([0-9]*\) errored.*/\1/p' <<<"$line")
            # The log: start (µs since the epoch), status, µs to the end of
            # the answer; the span from the first start to the last end is
            # the duration (h2load's own covers its connects too).
            local span bad pct
            span=$(awk -F'\t' '{ e = $1 + $3; if (NR == 1 || $1 < s0) s0 = $1; if (e > e1) e1 = e; if ($2 !~ /^2/) nb++ }
                END { printf "%d %d\n", NR ? e1 - s0 : 1, nb }' "$RUN/h2.log")
            read -r span bad <<<"$span"
            # nearest-rank percentiles of the answer times
            pct=$(cut -f3 "$RUN/h2.log" | sort -n | awk '{ v[NR] = $1 } END {
                if (NR == 0) { print "0 0"; exit }
                i = int(NR * 0.50); if (i < NR * 0.50) i++; j = int(NR * 0.99); if (j < NR * 0.99) j++
                print v[i < 1 ? 1 : i], v[j < 1 ? 1 : j] }')
            echo "${ok:-0} $span $pct $((failed + errored + bad))"
            ;;
    esac
}

RAW=$RUN/raw.tsv
ATTEMPTS=$RUN/attempts.tsv
: >"$RAW"
: >"$ATTEMPTS"
# run scenario target rep seconds record: the host-disturbance rule of
# run.sh (a run during which steal reached STEAL_MAX % is repeated, up to
# STEAL_ATTEMPTS; the clean attempt or the least disturbed one is kept).
run() {
    local scenario=$1 target=$2 rep=$3 secs=$4 record=$5 attempt best="" best_steal=""
    for attempt in $(seq "$STEAL_ATTEMPTS"); do
        local before after host_before steal idle req dur p50 p99 bad row
        before=$(cpu_ticks "${PID_OF[$target]}")
        host_before=$(cpu_stat)
        read -r req dur p50 p99 bad <<<"$(measure "$scenario" "$target" "$secs")"
        after=$(cpu_ticks "${PID_OF[$target]}")
        read -r steal idle _ <<<"$(steal_since "$host_before")"
        [ "$record" = 1 ] || return 0
        row=$(awk -v s="$scenario" -v t="$target" -v r="$rep" -v req="$req" -v d="$dur" -v p50="$p50" -v p99="$p99" \
            -v ticks=$((after - before)) -v hz="$CLK_TCK" -v bad="$bad" -v steal="$steal" -v idle="$idle" 'BEGIN {
                n = req > 0 ? req : 1
                printf "%s\t%s\t%s\t%.0f\t%.3f\t%.3f\t%.2f\t%d\t%s\t%s\n", s, t, r, req / (d > 0 ? d / 1e6 : 1), p50 / 1000, p99 / 1000, ticks / hz * 1e6 / n, bad, steal, idle
            }')
        printf '%s\t%s\n' "$row" "$attempt" >>"$ATTEMPTS"
        if [ -z "$best" ] || ! le "$best_steal" "$steal"; then best=$row; best_steal=$steal; fi
        le "$STEAL_MAX" "$steal" || { best=$row; break; }
        [ "$attempt" -lt "$STEAL_ATTEMPTS" ] && log "  $scenario/$target rep $rep: the host took $steal % (steal): again"
    done
    printf '%s\n' "$best" >>"$RAW"
    log "  $scenario/$target rep $rep: $(tail -1 "$RAW" | cut -f4-10 | tr '\t' ' ')"
}

HOST_START=$(cpu_stat)
for scenario in "${SCENARIOS[@]}"; do
    log "scenario $scenario"
    for target in "${TARGET_LIST[@]}"; do # warm-up: pools, caches
        run "$scenario" "$target" 0 1 0
    done
    for rep in $(seq "$REPS"); do
        for target in "${TARGET_LIST[@]}"; do
            run "$scenario" "$target" "$rep" "$DURATION" 1
        done
    done
    if [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null && [ "$scenario" != h2 ]; then
        pf=$RESULTS_DIR/perf-tls-$scenario.txt
        : >"$pf"
        for target in sy-1t nginx; do
            pid=${PID_OF[$target]}
            [ "$target" = nginx ] && pid=$(ps -o pid= --ppid "$NG_PID" | head -1 | tr -d ' ')
            log "  perf profile of $target ($scenario)"
            perf record -F 999 -g -p "$pid" -o "$RUN/perf-$scenario-$target.data" -- sleep "$DURATION" >/dev/null 2>&1 &
            perf_pid=$!
            sleep 0.2
            measure "$scenario" "$target" "$DURATION" >/dev/null
            wait "$perf_pid" || true
            {
                echo "== $target ($scenario): share of samples by object"
                perf report -i "$RUN/perf-$scenario-$target.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
                echo "== $target ($scenario): top symbols (self)"
                perf report -i "$RUN/perf-$scenario-$target.data" --no-children -g none --sort dso,sym --percent-limit 0.7 --stdio 2>/dev/null |
                    grep -E '^ +[0-9]' | head -40 | cut -c1-160
                echo
            } >>"$pf" || true
        done
    fi
done
read -r RUN_STEAL RUN_IDLE _ <<<"$(steal_since "$HOST_START")"

# ---------------------------------------------------------------- report
median() { # scenario target column
    awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
total() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { x += $c } END { print x + 0 }' "$RAW"; }
# The median over repetitions of target / reference within one repetition.
ratio() { # scenario target column reference
    awk -F'\t' -v s="$1" -v t="$2" -v c="$3" -v b="$4" '$1 == s && $2 == t { v[$3] = $c } $1 == s && $2 == b { n[$3] = $c }
        END { for (r in v) if ((r in n) && n[r] + 0 != 0) print v[r] / n[r] }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m }'
}
label() {
    case $1 in
        handshakes) echo "full handshakes (new connection per request, $CONNS clients)" ;;
        keepalive) echo "keep-alive HTTPS, HTTP/1.1 (wrk -t1 -c$CONNS)" ;;
        h2) echo "h2 over TLS (h2load -c$H2_CONNS -m$H2_STREAMS)" ;;
    esac
}
repeated=$(awk -F'\t' '$11 > 1' "$ATTEMPTS" | wc -l)

echo "## TLS: Switchyard --tls-listen vs nginx (same ECDSA P-256 certificate, TLS 1.3; ${DURATION}s runs, median of $REPS interleaved repetitions)"
echo
echo "nginx: 1 worker, \`ssl\` + \`http2\`, upstream keepalive, the headers Switchyard adds ($("$NGINX" -v 2>&1 | sed 's/.*: //'), $(openssl version | awk '{ print $1, $2 }')). sy-1t: Switchyard \`--worker-threads 1\` (the issue's \"one worker each\", graded); sy-nt: a worker thread per core ($(nproc)), as it ships (shown). Certificate and key from files (\`--tls-cert\`/\`--tls-key\`; nginx \`ssl_certificate\`), the same files for both. Handshakes: \`bench/tls_handshakes.rs\`, rustls client on one thread, a new TCP connection and a full TLS 1.3 handshake (resumption off, every handshake checked to be full) per \`GET\` with \`Connection: close\`, the chain verified against the bench CA; latency from connect to the whole answer. h2: p50/p99 from h2load's per-request log. CPU: utime+stime of the proxy's processes per request (per handshake in the first scenario). Errors: failed requests, socket errors, non-2xx, resumed handshakes."
echo
echo "Negotiated (openssl s_client, ALPN h2,http/1.1):"
echo
sed 's/^/- /' "$NEGOTIATED"
echo
echo "Host during this phase: $RUN_STEAL % of the VM's CPU taken by other guests (steal), $RUN_IDLE % idle; $repeated runs repeated because the host took at least $STEAL_MAX % (steal) during them."
echo
echo "| scenario | target | req/s | p50 ms | p99 ms | CPU µs/req | errors | host steal % |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for scenario in "${SCENARIOS[@]}"; do
    for target in "${TARGET_LIST[@]}"; do
        printf '| %s | %s | %.0f | %.3f | %.3f | %.1f | %d | %s |\n' "$(label "$scenario")" "$target" \
            "$(median "$scenario" "$target" 4)" "$(median "$scenario" "$target" 5)" "$(median "$scenario" "$target" 6)" \
            "$(median "$scenario" "$target" 7)" "$(total "$scenario" "$target" 8)" "$(median "$scenario" "$target" 9)"
    done
done
echo
echo "Ratios to nginx, each the median over the repetitions of the ratio within one repetition:"
echo
echo "| scenario | Switchyard / nginx | req/s | p50 | p99 | CPU/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for scenario in "${SCENARIOS[@]}"; do
    for t in sy-1t sy-nt; do
        printf '| %s | %s / nginx | %s | %s | %s | %s |\n' "$scenario" "$t" \
            "$(ratio "$scenario" "$t" 4 nginx)" "$(ratio "$scenario" "$t" 5 nginx)" \
            "$(ratio "$scenario" "$t" 6 nginx)" "$(ratio "$scenario" "$t" 7 nginx)"
    done
done

# Targets (issue 26 item 9): handshakes/s ≥ nginx, keep-alive req/s ≥ 1.10 ×
# nginx with p99 ≤ nginx; h2 is reported. Graded on sy-1t (one worker each).
TROWS=$RUN/targets.md
: >"$TROWS"
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >>"$TROWS"; }
errs=0
for s in "${SCENARIOS[@]}"; do for t in "${TARGET_LIST[@]}"; do errs=$((errs + $(total "$s" "$t" 8))); done; done
r=$(ratio handshakes sy-1t 4 nginx); row "TLS full handshakes/s sy-1t / nginx" "$r" "≥ 1.00" "$(verdict 1.00 "$r")"
r=$(ratio keepalive sy-1t 4 nginx); row "TLS keep-alive req/s sy-1t / nginx" "$r" "≥ 1.10" "$(verdict 1.10 "$r")"
r=$(ratio keepalive sy-1t 6 nginx); row "TLS keep-alive p99 sy-1t / nginx" "$r" "≤ 1.00" "$(verdict "$r" 1.00)"
row "TLS errors (failed requests, resumed handshakes), every target" "$errs" "0" "$(verdict "$errs" 0)"
for t in sy-1t sy-nt; do
    row "(shown) TLS h2 req/s, p99, CPU/req $t / nginx" \
        "$(ratio h2 "$t" 4 nginx), $(ratio h2 "$t" 6 nginx), $(ratio h2 "$t" 7 nginx)" "-" "not graded"
done
row "(shown) TLS handshakes/s, keep-alive req/s, keep-alive p99 sy-nt / nginx" \
    "$(ratio handshakes sy-nt 4 nginx), $(ratio keepalive sy-nt 4 nginx), $(ratio keepalive sy-nt 6 nginx)" "≥ 1.00, ≥ 1.10, ≤ 1.00" "not graded"
row "(shown) TLS CPU/req sy-1t / nginx (handshakes, keep-alive, h2)" \
    "$(ratio handshakes sy-1t 7 nginx), $(ratio keepalive sy-1t 7 nginx), $(ratio h2 sy-1t 7 nginx)" "-" "not graded"
echo
echo "Targets (issue 26: graded sy-1t / nginx, one worker each):"
echo
echo "| target | figure | threshold | verdict |"
echo "| --- | --- | --- | --- |"
cat "$TROWS"
[ -n "${TLSBENCH_TARGETS:-}" ] && cat "$TROWS" >>"$TLSBENCH_TARGETS"
cp "$RAW" "$RESULTS_DIR/tls-raw.tsv"
exit 0
