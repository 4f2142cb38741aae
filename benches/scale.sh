#!/usr/bin/env bash
# Scale benchmarks (issue 6, part 3), one sitesteer process each:
#   probes   PROBE_SITES sites x 4 probes every 100 ms (1,000 probed endpoints by default),
#            all against bench-backend listeners; the CPU share of one core that the
#            sitesteer process uses (utime+stime over MEASURE seconds), and the probe rate
#            reached (from sitesteer_probe_latency_seconds_count).
#   idle     IDLE_COUNT idle WebSocket connections, then as many idle SSE streams, held
#            through sitesteer to two demo sites; memory per connection = (RSS with them -
#            RSS before) / count, and the connections sitesteer counted open.
#   reload   a 200-site config: POST /api/v1/reload, RELOADS times (each with one weight
#            changed), median and max wall time of the call.
#
#   bash benches/scale.sh        (or: make bench-scale)
#
# Knobs: PROBE_SITES (250), PROBE_KIND (http; or tcp), MEASURE (20 s), IDLE_COUNT (9500:
# each proxied connection holds two descriptors, and the hard descriptor limit of these
# machines is 20000, see BENCHMARKS.md), RELOADS (10), PARTS ("probes idle reload"),
# SKIP_BUILD=1. Results: target/bench/scale-*.json and a Markdown summary on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROBE_SITES=${PROBE_SITES:-250}
PROBE_KIND=${PROBE_KIND:-http}
MEASURE=${MEASURE:-20}
IDLE_COUNT=${IDLE_COUNT:-9500}
RELOADS=${RELOADS:-10}
PARTS=${PARTS:-"probes idle reload"}
OUT="$ROOT/target/bench"
REL=${REL:-"$ROOT/target/release"}
BIN=${SITESTEER:-"$REL/sitesteer"}

log() { echo "[scale] $*" >&2; }

TMP=$(mktemp -d -t sitesteer-scale.XXXXXX)
PIDS=()
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
trap cleanup_children EXIT
trap 'exit 130' INT TERM

install_missing curl jq
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p sitesteer -p sitesteer-benches) >&2
fi
mkdir -p "$OUT"
rm -f "$OUT"/scale-*.json
ulimit -n "$(ulimit -Hn)"
HZ=$(getconf CLK_TCK)

NEXT_PORT=$((12000 + RANDOM % 12000))
FREE_PORT_TRIES=500
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
metric_sum() { # admin-port metric-regex
    curl -fs --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v re="$2" '$0 !~ /^#/ && $1 ~ re {n += $2} END {print n + 0}'
}

# --- 1,000 probed endpoints ---------------------------------------------------------------
part_probes() {
    local dir="$TMP/probes" i ports=() pp pa
    mkdir -p "$dir"
    free_port; pp=$PORT
    free_port; pa=$PORT
    local listen=()
    for ((i = 0; i < PROBE_SITES; i++)); do
        free_port
        ports+=("$PORT")
        listen+=(--listen "127.0.0.1:$PORT")
    done
    (exec "$REL/bench-backend" "${listen[@]}") >"$dir/backend.log" 2>&1 &
    PIDS+=($!)
    local backend=$!
    {
        echo "state_file = \"$dir/state.json\""
        echo "[listen]"
        echo "http = \"127.0.0.1:$pp\""
        echo "admin = \"127.0.0.1:$pa\""
        echo "[proxy]"
        echo "threads = 1"
        echo "session_key_file = \"$dir/session.key\""
        local path
        for path in /health /ready /live /status; do
            echo "[[probe]]"
            echo "kind = \"$PROBE_KIND\""
            [ "$PROBE_KIND" = http ] && echo "path = \"$path\""
            echo 'interval = "100ms"'
            echo 'timeout = "80ms"'
        done
        for ((i = 0; i < PROBE_SITES; i++)); do
            echo "[[site]]"
            echo "name = \"s$i\""
            echo "[site.endpoints]"
            echo "http = \"127.0.0.1:${ports[$i]}\""
        done
    } >"$dir/sitesteer.toml"
    wait_http "http://127.0.0.1:${ports[0]}/" 30
    (exec "$BIN" run -c "$dir/sitesteer.toml") >"$dir/proxy.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$pa/healthz" 60
    sleep 5
    local c0 c1 n0 n1 f0 f1 b0 b1
    n0=$(metric_sum "$pa" '^sitesteer_probe_latency_seconds_count')
    f0=$(metric_sum "$pa" '^sitesteer_probe_failures_total')
    c0=$(cpu_ticks "$pid")
    b0=$(cpu_ticks "$backend")
    sleep "$MEASURE"
    c1=$(cpu_ticks "$pid")
    b1=$(cpu_ticks "$backend")
    n1=$(metric_sum "$pa" '^sitesteer_probe_latency_seconds_count')
    f1=$(metric_sum "$pa" '^sitesteer_probe_failures_total')
    local up
    up=$(curl -fs "http://127.0.0.1:$pa/api/v1/sites" | jq '[.. | objects | select(has("state")) | select(.state == "up")] | length' 2>/dev/null || echo null)
    stop_pid "$pid" 60
    stop_pid "$backend" 60
    jq -nc --argjson sites "$PROBE_SITES" --arg kind "$PROBE_KIND" --argjson m "$MEASURE" \
        --argjson cpu "$(((c1 - c0)))" --argjson bcpu "$(((b1 - b0)))" --argjson hz "$HZ" \
        --argjson ok "$(awk -v a="$n0" -v b="$n1" 'BEGIN {print b - a}')" \
        --argjson fail "$(awk -v a="$f0" -v b="$f1" 'BEGIN {print b - a}')" --argjson up "$up" \
        '{part: "probes", sites: $sites, probes_per_site: 4, kind: $kind, endpoints: ($sites * 4),
          seconds: $m, cpu_share: ($cpu / $hz / $m), backend_cpu_share: ($bcpu / $hz / $m),
          probes_ok_per_s: ($ok / $m), probe_failures_per_s: ($fail / $m), sites_up: $up,
          cpu_us_per_probe: (if $ok + $fail > 0 then $cpu / $hz * 1e6 / ($ok + $fail) else null end)}' \
        >"$OUT/scale-probes.json"
    log "probes: $(cat "$OUT/scale-probes.json")"
}

# --- idle WebSocket and SSE connections ---------------------------------------------------
part_idle() {
    local dir="$TMP/idle" pp pa s1 s2
    mkdir -p "$dir"
    free_port; pp=$PORT
    free_port; pa=$PORT
    free_port; s1=$PORT
    free_port; s2=$PORT
    (exec "$BIN" demo-site --name a --http "127.0.0.1:$s1") >"$dir/site-a.log" 2>&1 &
    PIDS+=($!)
    (exec "$BIN" demo-site --name b --http "127.0.0.1:$s2") >"$dir/site-b.log" 2>&1 &
    PIDS+=($!)
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
http = "127.0.0.1:$s1"
ws = "127.0.0.1:$s1"
sse = "127.0.0.1:$s1"
[[site]]
name = "b"
[site.endpoints]
http = "127.0.0.1:$s2"
ws = "127.0.0.1:$s2"
sse = "127.0.0.1:$s2"
EOF
    wait_http "http://127.0.0.1:$s1/health" 30
    wait_http "http://127.0.0.1:$s2/health" 30
    local kind pid
    for kind in ws sse; do
        # A fresh sitesteer per transport, so memory freed by the other is not counted.
        (exec "$BIN" run -c "$dir/sitesteer.toml") >"$dir/proxy-$kind.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        wait_http "http://127.0.0.1:$pp/health" 60
        # Warm up: the allocator's and runtime's first-use growth is not per connection.
        "$REL/loadgen" --url "http://127.0.0.1:$pp/health" --connections 64 --duration 2 >/dev/null
        sleep 2
        local before after open line client
        before=$(rss_kib "$pid")
        coproc CLIENT { exec "$REL/idle-conns" --addr "127.0.0.1:$pp" --kind "$kind" --count "$IDLE_COUNT" --hold 600; }
        client=$CLIENT_PID
        PIDS+=("$client")
        read -r line <&"${CLIENT[0]}" || line="open 0 failed ?"
        sleep 10
        after=$(rss_kib "$pid")
        open=$(metric_sum "$pa" "^sitesteer_open_connections\\{.*transport=\"$kind\"")
        local held
        held=$(awk '{print $2}' <<<"$line")
        jq -nc --arg kind "$kind" --argjson n "$IDLE_COUNT" --argjson held "$held" \
            --argjson open "$open" --argjson b "$before" --argjson a "$after" \
            '{part: "idle", kind: $kind, requested: $n, held_by_client: $held,
              open_in_sitesteer: $open, rss_before_kib: $b, rss_after_kib: $a,
              kib_per_connection: (if $held > 0 then ($a - $b) / $held else null end)}' \
            >"$OUT/scale-idle-$kind.json"
        log "idle $kind: $(cat "$OUT/scale-idle-$kind.json")"
        exec {CLIENT[1]}>&-
        kill "$client" 2>/dev/null || true
        wait "$client" 2>/dev/null || true
        stop_pid "$pid" 60
        sleep 2
    done
}

# --- reload of a 200-site config ----------------------------------------------------------
part_reload() {
    local dir="$TMP/reload" pp pa port i
    mkdir -p "$dir"
    free_port; pp=$PORT
    free_port; pa=$PORT
    free_port; port=$PORT
    (exec "$REL/bench-backend" --listen "127.0.0.1:$port") >"$dir/backend.log" 2>&1 &
    PIDS+=($!)
    local backend=$!
    write_config() { # weight of site 0
        local i
        {
            echo "state_file = \"$dir/state.json\""
            echo "[listen]"
            echo "http = \"127.0.0.1:$pp\""
            echo "admin = \"127.0.0.1:$pa\""
            echo "[proxy]"
            echo "threads = 1"
            echo "session_key_file = \"$dir/session.key\""
            for ((i = 0; i < 200; i++)); do
                echo "[[site]]"
                echo "name = \"site-$i\""
                echo "region = \"r$((i % 4))\""
                echo "tier = $((i % 2))"
                if ((i == 0)); then echo "weight = $1"; else echo "weight = 100"; fi
                echo "[site.endpoints]"
                echo "http = \"127.0.0.1:$port\""
            done
        } >"$dir/sitesteer.toml.new"
        mv "$dir/sitesteer.toml.new" "$dir/sitesteer.toml"
    }
    write_config 100
    wait_http "http://127.0.0.1:$port/" 30
    (exec "$BIN" run -c "$dir/sitesteer.toml") >"$dir/proxy.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$pa/healthz" 60
    sleep 2
    local times=() t
    for ((i = 1; i <= RELOADS; i++)); do
        write_config $((100 + i))
        t=$(curl -fs -o "$dir/reload-$i.json" -w '%{time_total}' -X POST "http://127.0.0.1:$pa/api/v1/reload")
        jq -e '.ok == true' "$dir/reload-$i.json" >/dev/null || log "reload $i: $(cat "$dir/reload-$i.json")"
        times+=("$t")
        sleep 0.5
    done
    stop_pid "$pid" 60
    stop_pid "$backend" 60
    printf '%s\n' "${times[@]}" | jq -sc '{part: "reload", sites: 200, reloads: length,
        median_ms: (sort | .[length / 2 | floor] * 1000), max_ms: (max * 1000),
        all_ms: map(. * 1000 | . * 10 | round / 10)}' >"$OUT/scale-reload.json"
    log "reload: $(cat "$OUT/scale-reload.json")"
}

for part in $PARTS; do "part_$part"; done

{
    echo "**Machine:** $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "**Command:** \`PROBE_SITES=$PROBE_SITES PROBE_KIND=$PROBE_KIND IDLE_COUNT=$IDLE_COUNT bash benches/scale.sh\`"
    echo
    if [ -s "$OUT/scale-probes.json" ]; then
        jq -r '"- **\(.endpoints) probed endpoints** (\(.sites) sites x 4 \(.kind) probes every 100 ms): sitesteer used **\(.cpu_share * 1000 | round / 10)% of one core** (\(.cpu_us_per_probe // 0 | round) µs of CPU per probe) at \(.probes_ok_per_s | round) successful probes/s (\(.probe_failures_per_s | round) failed/s); \(.sites_up) sites up; the backend used \(.backend_cpu_share * 1000 | round / 10)%."' "$OUT/scale-probes.json"
    fi
    for kind in ws sse; do
        [ -s "$OUT/scale-idle-$kind.json" ] || continue
        jq -r '"- **\(.held_by_client) idle \(.kind | ascii_upcase) connections** held (sitesteer counted \(.open_in_sitesteer) open): RSS \(.rss_before_kib) → \(.rss_after_kib) KiB, **\(.kib_per_connection * 100 | round / 100) KiB per connection**."' "$OUT/scale-idle-$kind.json"
    done
    if [ -s "$OUT/scale-reload.json" ]; then
        jq -r '"- **200-site config reload** (`POST /api/v1/reload`, \(.reloads) times): median **\(.median_ms | round) ms**, max \(.max_ms | round) ms."' "$OUT/scale-reload.json"
    fi
} | tee "$OUT/scale-summary.md"
