#!/usr/bin/env bash
# Load-aware choice benchmark (issue 15): steady load through a proxy in front of three demo
# MCP sites of equal weight; at SLOW_AFTER one site (a) starts answering 50 ms late (its
# /control `slow` mode) and stays slow. Figures per proxy (medians of ROUNDS, interleaved):
#   slow_share  the share of the requests sent after the slow-down that site a served
#               (weight share 1/3; by the x-demo-site header, see benches/src/loadgen.rs)
#   p50 / p99   latency of all requests of the run
#   failed      requests without a 2xx answer
# Proxies: sitesteer (its defaults: power of two choices over peak-EWMA cost, 100 ms
# probes, one thread), HAProxy `balance leastconn` (nbthread 1, 100 ms checks) and nginx
# `least_conn` (worker_processes 1, upstream keepalive).
#
#   bash benches/p2c.sh
#
# Knobs (environment): ROUNDS (3), CONNECTIONS (16), RATE (1000 requests/s in total),
# DURATION (6 s), SLOW_AFTER (2 s), DELAY_MS (50), PROXIES ("sitesteer haproxy nginx"),
# SKIP_BUILD=1 to use the binaries already in target/release.
# Everything listens on 127.0.0.1 only. Results: target/bench/p2c-*.json; the Markdown
# table goes to stdout, progress to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
RATE=${RATE:-1000}
DURATION=${DURATION:-6}
SLOW_AFTER=${SLOW_AFTER:-2}
DELAY_MS=${DELAY_MS:-50}
PROXIES=${PROXIES:-"sitesteer haproxy nginx"}
OUT="$ROOT/target/bench"
BIN="$ROOT/target/release/sitesteer"
LOADGEN="$ROOT/target/release/loadgen"
HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}

log() { echo "[p2c] $*" >&2; }

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
bench_start p2c haproxy nginx jq curl

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

haproxy_config() { # dir proxy_port p1 p2 p3
    cat >"$1/haproxy.cfg" <<EOF
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

frontend fe
    bind 127.0.0.1:$2
    default_backend be

backend be
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2
    server a 127.0.0.1:$3 check
    server b 127.0.0.1:$4 check
    server c 127.0.0.1:$5 check
EOF
}

nginx_config() { # dir proxy_port p1 p2 p3
    local dir=$1
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
master_process on;
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
        least_conn;
        server 127.0.0.1:$3;
        server 127.0.0.1:$4;
        server 127.0.0.1:$5;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# One run: fresh sites and proxy, load, site a slowed at SLOW_AFTER, results to JSON.
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
        ;;
    haproxy)
        haproxy_config "$dir" "$pp" "$p1" "$p2" "$p3"
        "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >&2
        "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/proxy.log" 2>&1 &
        ;;
    nginx)
        nginx_config "$dir" "$pp" "$p1" "$p2" "$p3"
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/proxy.log" 2>&1 &
        ;;
    *) log "unknown proxy $proxy"; exit 1 ;;
    esac
    proxy_pid=$!
    PIDS+=("$proxy_pid")
    if ! wait_sites "http://127.0.0.1:$pp/" 10 3; then
        tail -n 20 "$dir"/*.log >&2 || true
        exit 1
    fi

    local control="http://127.0.0.1:$p1/control"
    local slow_cmd="curl -fs -o /dev/null -X POST -H 'content-type: application/json' -d '{\"mode\":\"slow\",\"delay_ms\":$DELAY_MS}' $control"
    local out="$OUT/p2c-$proxy-$round.json"
    "$LOADGEN" --url "http://127.0.0.1:$pp/" --connections "$CONNECTIONS" --rate "$RATE" \
        --duration "$DURATION" --timeout 5 --killed-site a \
        --kill-after "$SLOW_AFTER" --fault-cmd "$slow_cmd" \
        --label "$proxy" --out "$out" >/dev/null
    [ -s "$out" ] || { log "loadgen wrote no results"; exit 1; }
    log "$proxy round $round: $(jq -c '{failed, total, p50_ms, p99_ms, by_site}' "$out")"

    stop_child "$proxy_pid"
    for i in 0 1 2; do stop_child "${site_pids[$i]}"; done
}

log "rounds=$ROUNDS connections=$CONNECTIONS rate=$RATE/s duration=${DURATION}s; site a slowed by ${DELAY_MS}ms at ${SLOW_AFTER}s; proxies: $PROXIES"
read -r -a proxy_list <<<"$PROXIES"
for ((round = 1; round <= ROUNDS; round++)); do
    # Interleaved, the order reversed every other round so no proxy always goes first.
    order=("${proxy_list[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#proxy_list[@]} - 1; i >= 0; i--)); do order+=("${proxy_list[$i]}"); done
    fi
    for proxy in "${order[@]}"; do scenario "$proxy" "$round"; done
done

# --- the table ---------------------------------------------------------------------------
jq -rs --arg proxies "$PROXIES" --argjson rate "$RATE" --argjson conns "$CONNECTIONS" \
    --argjson delay "$DELAY_MS" '
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def fmt: if . == null then "n/a" elif type == "number" then (. * 1000 | round / 1000 | tostring) else tostring end;
  def share: (.by_site.a.after_kill // 0) as $a
      | ([.by_site[] | .after_kill] | add) as $all
      | if $all > 0 then $a / $all else null end;
  (group_by(.label) | map({key: .[0].label, value: .}) | from_entries) as $by
  | ($proxies | split(" ") | map(select(. != "" and $by[.] != null))) as $names
  | "| proxy | slowed site share after the slow-down (weight 0.333) | p50 ms | p99 ms | failed | per round: share / p50 / p99 |",
    "|---|---|---|---|---|---|",
    ($names[] as $n
      | "| \($n) | \($by[$n] | map(share) | median | fmt) | \($by[$n] | map(.p50_ms) | median | fmt) | \($by[$n] | map(.p99_ms) | median | fmt) | \($by[$n] | map(.failed) | median | fmt) | "
        + ([$by[$n][] | "\(share | fmt) / \(.p50_ms | fmt) / \(.p99_ms | fmt)"] | join(", "))
        + " |"),
    "",
    "\($conns) keep-alive connections, \($rate) GET / per second in total, three sites of equal weight, one slowed by \($delay) ms mid-run; \($by[$names[0]] | length) rounds."
' "$OUT"/p2c-*-[0-9]*.json
