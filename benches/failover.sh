#!/usr/bin/env bash
# Failover benchmark (issue 2): steady load through a proxy in front of three demo MCP sites,
# one site killed with `kill -9`, then
#   shift_ms: time from the kill until >= 99% of the requests sent in every following 50 ms
#             bucket land on another site (see benches/src/loadgen.rs for the exact definition)
#   failed:   requests that got a transport error or a non-2xx status.
# The same scenario runs through sitesteer and through HAProxy, interleaved, ROUNDS times.
#
#   bash benches/failover.sh
#
# Knobs (environment): ROUNDS (3), CONNECTIONS (16), RATE (2000 requests/s in total),
# DURATION (4 s), KILL_AFTER (2 s), PROXIES ("sitesteer haproxy haproxy-tuned"),
# SKIP_BUILD=1 to use the binaries already in target/release.
# Everything listens on 127.0.0.1 only. Results: target/bench/failover-*.json; the Markdown
# table goes to stdout, progress to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
RATE=${RATE:-2000}
DURATION=${DURATION:-4}
KILL_AFTER=${KILL_AFTER:-2}
PROXIES=${PROXIES:-"sitesteer haproxy haproxy-tuned"}
OUT="$ROOT/target/bench"
BIN="$ROOT/target/release/sitesteer"
LOADGEN="$ROOT/target/release/loadgen"
HAPROXY=${HAPROXY:-haproxy}

log() { echo "[failover] $*" >&2; }

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
bench_start failover haproxy wrk jq curl

sitesteer_config() { # dir proxy_port admin_port p1 p2 p3
    local dir=$1
    cat >"$dir/sitesteer.toml" <<EOF
[listen]
http = "127.0.0.1:$2"
admin = "127.0.0.1:$3"

[proxy]
threads = 1

[[probe]]
kind = "http"
path = "/health"
interval = "100ms"
timeout = "80ms"

[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:$4"

[[site]]
name = "b"
[site.endpoints]
http = "127.0.0.1:$5"

[[site]]
name = "c"
[site.endpoints]
http = "127.0.0.1:$6"
EOF
}

haproxy_config() { # dir variant proxy_port p1 p2 p3 stats_port
    local dir=$1 variant=$2 redispatch="option redispatch" extra=""
    if [ "$variant" = haproxy-tuned ]; then
        # Beyond the requested config: redispatch on every retry (not only the last), and
        # passive health: one layer-4 error on live traffic marks the server down.
        redispatch="option redispatch 1"
        extra=" observe layer4 error-limit 1 on-error mark-down"
    fi
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    log stderr format short local0 warning

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    $redispatch
    retries 3
    retry-on all-retryable-errors

frontend fe
    bind 127.0.0.1:$3
    default_backend be

frontend stats
    bind 127.0.0.1:$7
    stats enable
    stats uri /stats

backend be
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2$extra
    server a 127.0.0.1:$4 check
    server b 127.0.0.1:$5 check
    server c 127.0.0.1:$6 check
EOF
}

# One scenario: fresh sites and proxy, load, kill site a at KILL_AFTER, results to JSON.
scenario() { # proxy round
    local proxy=$1 round=$2 dir="$TMP/$1-$2"
    mkdir -p "$dir"
    local p1 p2 p3 pp pa
    free_port; p1=$PORT
    free_port; p2=$PORT
    free_port; p3=$PORT
    free_port; pp=$PORT
    free_port; pa=$PORT
    local site_pids=() ports=("$p1" "$p2" "$p3") names=(a b c) i
    for i in 0 1 2; do
        "$BIN" demo-site --name "${names[$i]}" --http "127.0.0.1:${ports[$i]}" \
            >"$dir/site-${names[$i]}.log" 2>&1 &
        site_pids+=($!)
        PIDS+=($!)
    done
    for i in 0 1 2; do wait_http "http://127.0.0.1:${ports[$i]}/health" 5; done

    local proxy_pid
    case $proxy in
    sitesteer)
        sitesteer_config "$dir" "$pp" "$pa" "$p1" "$p2" "$p3"
        "$BIN" run -c "$dir/sitesteer.toml" >"$dir/proxy.log" 2>&1 &
        proxy_pid=$!
        ;;
    haproxy | haproxy-tuned)
        haproxy_config "$dir" "$proxy" "$pp" "$p1" "$p2" "$p3" "$pa"
        "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >&2
        "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/proxy.log" 2>&1 &
        proxy_pid=$!
        ;;
    *) log "unknown proxy $proxy"; exit 1 ;;
    esac
    PIDS+=("$proxy_pid")
    if ! wait_sites "http://127.0.0.1:$pp/" 10 3; then
        tail -n 20 "$dir"/*.log >&2 || true
        exit 1
    fi

    local out="$OUT/failover-$proxy-$round.json"
    # (stderr to a file: it also catches bash's "Killed" notice for the site loadgen kills.)
    {
        "$LOADGEN" --url "http://127.0.0.1:$pp/" --connections "$CONNECTIONS" --rate "$RATE" \
            --duration "$DURATION" --kill-after "$KILL_AFTER" --kill-pid "${site_pids[0]}" \
            --killed-site a --label "$proxy" --out "$out" >/dev/null
        wait "${site_pids[0]}" || true
    } 2>"$dir/loadgen.err"
    grep -v 'Killed' "$dir/loadgen.err" >&2 || true
    [ -s "$out" ] || { log "loadgen wrote no results"; exit 1; }
    # Upstream attempts that failed on the dead site and were retried elsewhere:
    # sitesteer_retries_total{site="a"}; HAProxy's wretr + wredis (retries, redispatches) of
    # server a (its econ stays 0 when the attempt is redispatched).
    local stats dead=null
    case $proxy in
    sitesteer)
        if stats=$(curl -fs --max-time 2 "http://127.0.0.1:$pa/metrics"); then
            dead=$(awk '/^sitesteer_retries_total\{site="a"\}/ {n += $2} END {print n + 0}' <<<"$stats")
        fi
        ;;
    *)
        if stats=$(curl -fs --max-time 2 "http://127.0.0.1:$pa/stats;csv"); then
            dead=$(awk -F, '$1 == "be" && $2 == "a" {print $16 + $17}' <<<"$stats")
            echo "$stats" >"$OUT/failover-$proxy-$round.stats.csv"
        fi
        ;;
    esac
    jq --argjson d "${dead:-null}" '. + {dead_site_failed_attempts: $d}' "$out" >"$out.tmp" &&
        mv "$out.tmp" "$out"
    log "$proxy round $round: $(jq -c '{shift_ms, failed, failed_after_kill, total, dead_site_failed_attempts, p99_ms, max_first_second_after_kill_ms}' "$out")"

    stop_child "$proxy_pid"
    for i in 0 1 2; do stop_child "${site_pids[$i]}"; done
    cp "$dir/proxy.log" "$OUT/failover-$proxy-$round.proxy.log" 2>/dev/null || true
}

log "rounds=$ROUNDS connections=$CONNECTIONS rate=$RATE/s duration=${DURATION}s kill at ${KILL_AFTER}s; proxies: $PROXIES"
read -r -a proxy_list <<<"$PROXIES"
for ((round = 1; round <= ROUNDS; round++)); do
    # Interleave, alternating the order so no proxy always goes first.
    order=("${proxy_list[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#proxy_list[@]} - 1; i >= 0; i--)); do order+=("${proxy_list[$i]}"); done
    fi
    for proxy in "${order[@]}"; do scenario "$proxy" "$round"; done
done

# --- the table ---------------------------------------------------------------------------
jq -rs --arg proxies "$PROXIES" --argjson rate "$RATE" --argjson conns "$CONNECTIONS" '
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  # A run that never shifted counts as longer than any that did.
  def med_shift: map(if . == null then 1e9 else . end) | median
      | if . == null then null elif . >= 1e9 then "never" else . end;
  def fmt: if . == null then "n/a" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end;
  (group_by(.label) | map({key: .[0].label, value: .}) | from_entries) as $by
  | ($proxies | split(" ") | map(select(. != "" and $by[.] != null))) as $names
  | ($names | map({key: ., value: {
        shift: ($by[.] | map(.shift_ms) | med_shift),
        failed: ($by[.] | map(.failed) | median),
        rounds: ($by[.] | sort_by(.label) ) }}) | from_entries) as $m
  | "| proxy | median shift_ms | median failed requests | median attempts on the dead site, retried elsewhere | per round: shift_ms / failed / retried attempts / p99 ms in the second after the kill |",
    "|---|---|---|---|---|",
    ($names[] as $n
      | "| \($n) | \($m[$n].shift | fmt) | \($m[$n].failed | fmt) | \($by[$n] | map(.dead_site_failed_attempts) | map(select(. != null)) | median | fmt) | "
        + ([$by[$n][] | "\(.shift_ms | fmt) / \(.failed) / \(.dead_site_failed_attempts | fmt) / \(.p99_first_second_after_kill_ms | fmt)"] | join(", "))
        + " |"),
    "",
    "\($conns) keep-alive connections, \($rate) GET / per second in total, one of three sites killed (kill -9) mid-run; \($by[$names[0]] | length) rounds.",
    (if ($names | index("sitesteer")) != null then
       ($names[] | select(. != "sitesteer") as $n
        | "sitesteer vs \($n): shift \($m["sitesteer"].shift | fmt) ms vs \($m[$n].shift | fmt) ms"
          + (if ($m["sitesteer"].shift | type) == "number" and ($m[$n].shift | type) == "number" and $m["sitesteer"].shift > 0
             then " (\($m[$n].shift / $m["sitesteer"].shift | fmt)x)" else "" end)
          + "; failed \($m["sitesteer"].failed | fmt) vs \($m[$n].failed | fmt)"
          + (if ($m["sitesteer"].failed | type) == "number" and ($m[$n].failed | type) == "number" and $m["sitesteer"].failed > 0
             then " (\($m[$n].failed / $m["sitesteer"].failed | fmt)x)" else "" end)
          + "; attempts on the dead site \($by["sitesteer"] | map(.dead_site_failed_attempts) | map(select(. != null)) | median | fmt)"
          + " vs \($by[$n] | map(.dead_site_failed_attempts) | map(select(. != null)) | median | fmt).")
     else empty end)
' "$OUT"/failover-*-[0-9]*.json
