#!/usr/bin/env bash
# Throughput and latency benchmark (issue 6): the same tiny JSON backend, the same load,
# through five scenarios, interleaved, ROUNDS rounds:
#   direct        wrk straight to the backend (the floor every proxy adds to)
#   sitesteer     target/release/sitesteer run, [proxy] threads = 1, two sites
#   bare-pingora  target/release/bare-pingora: pingora 0.9 round-robin, 1 thread, defaults
#   bare-pingora-mimalloc  the same with mimalloc, the allocator sitesteer links
#   haproxy       HAProxy, nbthread 1, roundrobin, keep-alive to the backend
#   nginx         nginx, worker_processes 1, upstream keepalive
# Phase 1 (peak): `wrk -t1 -c$CONNECTIONS -d$DURATION --latency`: requests/s, p50/p99, and the
#   proxy's CPU time per request (utime+stime of the proxy's processes from /proc, before and
#   after the run).
# Phase 2 (half peak): `loadgen --rate R` with R = HALF_LOAD x the median peak of sitesteer, the
#   same R for every scenario: p50/p99, and the added latency (proxy - direct, same round).
# Phase 3 (callgrind): every proxy under `valgrind --tool=callgrind`; after a
#   warm-up the counters are zeroed, CALLGRIND_REQUESTS requests are sent, and the
#   instructions (user space, every thread) are dumped; then the same wall time with no load
#   gives the idle instructions (probes, timers), which are reported apart.
#
#   bash benches/run.sh            (or: make bench)
#
# Knobs (environment): ROUNDS (5), DURATION (8 s), WARMUP (2 s), CONNECTIONS (64),
# HALF_LOAD (0.5), PACED_DURATION (6 s), CALLGRIND_REQUESTS (20000; 0 skips phase 3),
# SCENARIOS ("direct sitesteer bare-pingora bare-pingora-mimalloc haproxy nginx"; also
# sitesteer-VARIANT for a saved build target/bench/bin/sitesteer-VARIANT), PIN (unset: no CPU pinning;
# "1": proxies on CPU 1, wrk/loadgen and the backend on CPU 0), SKIP_BUILD=1.
# Only 127.0.0.1. Results: target/bench/run-*.json (one line per run) and a Markdown summary
# on stdout; progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
HALF_LOAD=${HALF_LOAD:-0.5}
PACED_DURATION=${PACED_DURATION:-6}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-20000}
SCENARIOS=${SCENARIOS:-"direct sitesteer bare-pingora bare-pingora-mimalloc haproxy nginx"}
PIN=${PIN:-}
OUT="$ROOT/target/bench"
REL=${REL:-"$ROOT/target/release"}
HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}

log() { echo "[bench] $*" >&2; }

TMP=$(mktemp -d -t sitesteer-bench.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
        rm -f "/tmp/sitesteer-$p.pid" "/tmp/sitesteer-$p.upgrade.sock" \
            "/tmp/bare-pingora-$p.pid" "/tmp/bare-pingora-$p.upgrade.sock"
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools (installed only when missing) ---------------------------------------------------
declare -A pkg_of=([wrk]=wrk [$HAPROXY]=haproxy [$NGINX]=nginx [jq]=jq [curl]=curl
    [valgrind]=valgrind [callgrind_control]=valgrind [taskset]=util-linux)
missing=()
for tool in "${!pkg_of[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg_of[$tool]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p sitesteer -p sitesteer-benches) >&2
fi
mkdir -p "$OUT"
rm -f "$OUT"/run-*.json
touch "$OUT"/run-peak.json "$OUT"/run-paced.json "$OUT"/run-callgrind.json
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- helpers -------------------------------------------------------------------------------
# Below the ephemeral range (32768-), so no outgoing connection holds a port we listen on.
NEXT_PORT=$((12000 + RANDOM % 15000))
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
HZ=$(getconf CLK_TCK)

run_on() { # cpu-set command...: in the foreground, pinned when PIN=1
    if [ "$PIN" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi
}
# Starts `command...` in the background as itself (so $! is its pid), pinned when PIN=1.
spawn_on() { # cpu-set command...
    if [ "$PIN" = 1 ]; then
        (exec taskset -c "$1" "${@:2}") &
    else
        (exec "${@:2}") &
    fi
}

# wrk's duration string to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.4f", n }'
}

# --- the backend: one process, two listeners (two "sites") ---------------------------------
free_port; B1=$PORT
free_port; B2=$PORT
spawn_on 0 "$REL/bench-backend" --listen "127.0.0.1:$B1" --listen "127.0.0.1:$B2" \
    >"$TMP/backend.log" 2>&1
BACKEND=$!
PIDS+=("$BACKEND")
wait_http "http://127.0.0.1:$B1/" 30
wait_http "http://127.0.0.1:$B2/" 30

# --- proxies -------------------------------------------------------------------------------
PROXY_PID=""
PROXY_URL=""
start_scenario() { # name dir [valgrind prefix...]
    local name=$1 dir=$2
    shift 2
    local pp pa
    free_port; pp=$PORT
    free_port; pa=$PORT
    mkdir -p "$dir"
    case $name in
    direct)
        PROXY_PID=""
        PROXY_URL="http://127.0.0.1:$B1/"
        return 0
        ;;
    sitesteer | sitesteer-*)
        # sitesteer-VARIANT runs target/bench/bin/sitesteer-VARIANT (a saved build, for
        # before/after comparisons in one run).
        local bin="$REL/sitesteer"
        [ "$name" != sitesteer ] && bin="$OUT/bin/$name"
        cat >"$dir/sitesteer.toml" <<EOF
state_file = "$dir/state.json"

[listen]
http = "127.0.0.1:$pp"
admin = "127.0.0.1:$pa"

[proxy]
threads = 1
session_key_file = "$dir/session.key"

[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:$B1"

[[site]]
name = "b"
[site.endpoints]
http = "127.0.0.1:$B2"
EOF
        spawn_on 1 "$@" "$bin" run -c "$dir/sitesteer.toml" \
            >"$dir/proxy.log" 2>&1
        ;;
    bare-pingora | bare-pingora-mimalloc)
        spawn_on 1 "$@" "$REL/$name" --listen "127.0.0.1:$pp" --threads 1 \
            --upstream "127.0.0.1:$B1" --upstream "127.0.0.1:$B2" >"$dir/proxy.log" 2>&1
        ;;
    haproxy)
        cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive

frontend fe
    bind 127.0.0.1:$pp
    default_backend be

backend be
    balance roundrobin
    option httpchk GET /health
    default-server inter 100ms fall 2 rise 2
    server a 127.0.0.1:$B1 check
    server b 127.0.0.1:$B2 check
EOF
        "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >&2
        spawn_on 1 "$@" "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/proxy.log" 2>&1
        ;;
    nginx)
        mkdir -p "$dir/tmp"
        # Under valgrind the one worker must be the process itself.
        local master=on
        [ $# -gt 0 ] && master=off
        cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
master_process $master;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    upstream be {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$pp;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
        spawn_on 1 "$@" "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/proxy.log" 2>&1
        ;;
    *) log "unknown scenario $name"; exit 1 ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    PROXY_URL="http://127.0.0.1:$pp/"
    if ! wait_http "$PROXY_URL" 60; then
        tail -n 20 "$dir"/*.log >&2 || true
        exit 1
    fi
}

stop_scenario() {
    [ -n "$PROXY_PID" ] && stop_pid "$PROXY_PID"
    PROXY_PID=""
}

# Rotates the scenario list by ROUND so no scenario always runs first.
order_for() { # round
    local -a list
    read -r -a list <<<"$SCENARIOS"
    local n=${#list[@]} i out=()
    for ((i = 0; i < n; i++)); do out+=("${list[$(((i + $1) % n))]}"); done
    echo "${out[@]}"
}

# --- phase 1: peak -------------------------------------------------------------------------
peak_run() { # name round
    local name=$1 round=$2 dir="$TMP/$1-peak-$2"
    start_scenario "$name" "$dir"
    run_on 0 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$PROXY_URL" >/dev/null
    local before=0 after=0
    [ -n "$PROXY_PID" ] && before=$(cpu_ticks "$PROXY_PID")
    run_on 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$PROXY_URL" >"$dir/wrk.txt"
    [ -n "$PROXY_PID" ] && after=$(cpu_ticks "$PROXY_PID")
    local rps requests p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$dir/wrk.txt")
    requests=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' "$dir/wrk.txt" | tr '\n' ' ')
    [ -n "$errors" ] && log "$name: $errors"
    stop_scenario
    local cpu_s
    cpu_s=$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN {printf "%.3f", t / hz}')
    jq -nc --arg p "$name" --argjson r "$round" --argjson rps "$rps" --argjson n "$requests" \
        --argjson p50 "$p50" --argjson p99 "$p99" --argjson cpu "$cpu_s" --arg err "$errors" \
        --argjson d "$DURATION" \
        '{phase: "peak", proxy: $p, round: $r, rps: $rps, requests: $n, p50_ms: $p50,
          p99_ms: $p99, cpu_s: $cpu, cpu_share: (if $p == "direct" then null else $cpu / $d end),
          cpu_us_per_req: (if $n > 0 and $p != "direct" then $cpu * 1e6 / $n else null end),
          errors: $err}' \
        >>"$OUT/run-peak.json"
    log "peak $name round $round: $rps req/s, p50 $p50 ms, p99 $p99 ms, cpu ${cpu_s}s"
}

# --- phase 2: half of sitesteer's peak, paced ----------------------------------------------
paced_run() { # name round rate
    local name=$1 round=$2 rate=$3 dir="$TMP/$1-paced-$2"
    start_scenario "$name" "$dir"
    run_on 0 wrk -t1 -c"$CONNECTIONS" -d1s "$PROXY_URL" >/dev/null
    run_on 0 "$REL/loadgen" --url "$PROXY_URL" --connections "$CONNECTIONS" --rate "$rate" \
        --duration "$PACED_DURATION" --label "$name" --out "$dir/loadgen.json" >/dev/null
    stop_scenario
    jq -c --arg p "$name" --argjson r "$round" \
        '{phase: "paced", proxy: $p, round: $r, rate: .rate, total: .total, failed: .failed,
          p50_ms: .p50_ms, p99_ms: .p99_ms}' "$dir/loadgen.json" >>"$OUT/run-paced.json"
    log "paced $name round $round: $(jq -c '{total, failed, p50_ms, p99_ms}' "$dir/loadgen.json")"
}

# --- phase 3: callgrind ----------------------------------------------------------------------
callgrind_run() { # name
    local name=$1 dir="$TMP/$1-callgrind"
    mkdir -p "$dir"
    start_scenario "$name" "$dir" valgrind --tool=callgrind --collect-atstart=yes --trace-children=yes \
        --callgrind-out-file="$dir/callgrind.out.%p"
    "$REL/loadgen" --url "$PROXY_URL" --connections "$CONNECTIONS" --duration 120 \
        --requests 2000 >/dev/null
    sleep 0.5
    timeout 60 callgrind_control -z "$PROXY_PID" >/dev/null || true
    local t0 t1 loaded idle
    t0=$(date +%s.%N)
    "$REL/loadgen" --url "$PROXY_URL" --connections "$CONNECTIONS" --duration 600 \
        --requests "$CALLGRIND_REQUESTS" >"$dir/load.json"
    t1=$(date +%s.%N)
    timeout 60 callgrind_control -d load "$PROXY_PID" >/dev/null || true
    sleep "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
    timeout 60 callgrind_control -d idle "$PROXY_PID" >/dev/null || true
    sleep 0.5
    loaded=$(grep -h '^summary:' "$dir"/callgrind.out.*.1 2>/dev/null | awk '{print $2}' | head -1)
    idle=$(grep -h '^summary:' "$dir"/callgrind.out.*.2 2>/dev/null | awk '{print $2}' | head -1)
    if [ -z "$loaded" ] || [ -z "$idle" ]; then
        log "callgrind $name: no dump found"
        stop_scenario
        return 0
    fi
    cp "$dir"/callgrind.out.*.1 "$OUT/run-callgrind-$name.out" 2>/dev/null || true
    local ok
    ok=$(jq '.ok' "$dir/load.json")
    stop_scenario
    jq -nc --arg p "$name" --argjson n "$ok" --argjson l "$loaded" --argjson i "$idle" \
        --argjson w "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')" \
        '{phase: "callgrind", proxy: $p, requests: $n, instructions: $l, idle_instructions: $i,
          wall_s: $w, per_request: ($l / $n), per_request_less_idle: (($l - $i) / $n)}' \
        >>"$OUT/run-callgrind.json"
    log "callgrind $name: $(tail -n 1 "$OUT/run-callgrind.json")"
}

log "rounds=$ROUNDS duration=${DURATION}s connections=$CONNECTIONS pin=${PIN:-no}; scenarios: $SCENARIOS"
for ((round = 1; round <= ROUNDS; round++)); do
    for name in $(order_for "$round"); do peak_run "$name" "$round"; done
done

RATE=""
if [[ " $SCENARIOS " == *" sitesteer "* ]]; then
    RATE=$(jq -s --argjson h "$HALF_LOAD" '[.[] | select(.proxy == "sitesteer") | .rps] | sort
        | .[length / 2 | floor] * $h | floor' "$OUT/run-peak.json")
    log "paced phase at $RATE req/s ($HALF_LOAD x sitesteer's median peak)"
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in $(order_for "$round"); do paced_run "$name" "$round" "$RATE"; done
    done
fi

if [ "$CALLGRIND_REQUESTS" -gt 0 ]; then
    for name in $SCENARIOS; do
        [ "$name" != direct ] && callgrind_run "$name"
    done
fi

# --- the summary ---------------------------------------------------------------------------
{
    echo "**Machine:** $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'),"
    echo "Linux $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "**Versions:** $("$HAPROXY" -v 2>/dev/null | head -1 | awk '{print "HAProxy", $3}'),"
    echo "$("$NGINX" -v 2>&1 | sed 's/.*version: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'),"
    echo "sitesteer built from $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') (+ working tree)."
    echo "**Command:** \`ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS PIN=${PIN:-} bash benches/run.sh\`"
    echo
} >"$OUT/run-summary.md"
jq -rs --arg scen "$SCENARIOS" --argjson conns "$CONNECTIONS" '
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def f(d): if . == null then "n/a" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
  def ratio(a; b): if a == null or b == null or b == 0 then "n/a" else (a / b | f(2)) + "x" end;
  (map(select(.phase == "peak")) | group_by(.proxy)
      | map({key: .[0].proxy, value: .}) | from_entries) as $peak
  | (map(select(.phase == "paced")) | group_by(.proxy)
      | map({key: .[0].proxy, value: .}) | from_entries) as $paced
  | (map(select(.phase == "callgrind")) | map({key: .proxy, value: .}) | from_entries) as $cg
  | ($scen | split(" ") | map(select(. != "" and $peak[.] != null))) as $names
  # Added latency per round: proxy minus direct of the same round, then the median.
  | def added($set; $p; $q): [ $set[$p][]? as $r
        | ($set["direct"][]? | select(.round == $r.round)) as $d | $r[$q] - $d[$q] ] | median;
    def m($set; $p; $q): [$set[$p][]?[$q]] | median;
  ($names | map({key: ., value: {
        rps: m($peak; .; "rps"), cpu: m($peak; .; "cpu_us_per_req"),
        share: m($peak; .; "cpu_share"),
        p50: m($peak; .; "p50_ms"), p99: m($peak; .; "p99_ms"),
        a50: added($peak; .; "p50_ms"), a99: added($peak; .; "p99_ms"),
        h50: m($paced; .; "p50_ms"), h99: m($paced; .; "p99_ms"),
        ha50: added($paced; .; "p50_ms"), ha99: added($paced; .; "p99_ms") }})
    | from_entries) as $m
  | $m["sitesteer"] as $s
  | "### Peak: wrk -t1 -c\($conns), medians of \($peak[$names[0]] | length) rounds",
    "",
    "| scenario | req/s | ratio to sitesteer | proxy CPU µs/request | ratio | proxy CPU share of one core | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s per round |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ($names[] as $n | $m[$n] as $x
      | "| \($n) | \($x.rps | f(0)) | \(ratio($x.rps; $s.rps)) | \($x.cpu | f(2)) | \(ratio($x.cpu; $s.cpu)) | \($x.share | f(2)) | \($x.p50 | f(3)) | \($x.p99 | f(3)) | \($x.a50 | f(3)) | \($x.a99 | f(3)) | \([$peak[$n][] | .rps | f(0)] | join(", ")) |"),
    "",
    (if ($paced | length) > 0 then
      "### Half of sitesteer'"'"'s peak: loadgen --rate \($paced["sitesteer"][0].rate) (paced), \($conns) connections, medians",
      "",
      "| scenario | p50 ms | p99 ms | added p50 ms | added p99 ms | added p99 ratio to sitesteer | p99 ms per round |",
      "|---|---|---|---|---|---|---|",
      ($names[] as $n | $m[$n] as $x
        | "| \($n) | \($x.h50 | f(3)) | \($x.h99 | f(3)) | \($x.ha50 | f(3)) | \($x.ha99 | f(3)) | \(ratio($x.ha99; $s.ha99)) | \([$paced[$n][]? | .p99_ms | f(3)] | join(", ")) |"),
      ""
     else empty end),
    (if ($cg | length) > 0 then
      "### Instructions per request (callgrind, user space, every thread)",
      "",
      "| proxy | requests | instructions/request | idle instructions over the same wall time, per request | instructions/request less idle | ratio to sitesteer |",
      "|---|---|---|---|---|---|",
      ($cg | to_entries[] | .value as $c
        | "| \(.key) | \($c.requests) | \($c.per_request | f(0)) | \($c.idle_instructions / $c.requests | f(0)) | \($c.per_request_less_idle | f(0)) | \(ratio($c.per_request_less_idle; $cg["sitesteer"].per_request_less_idle)) |"),
      ""
     else empty end)
' "$OUT"/run-peak.json "$OUT"/run-paced.json "$OUT"/run-callgrind.json 2>/dev/null \
    >>"$OUT/run-summary.md" || true
cat "$OUT/run-summary.md"
