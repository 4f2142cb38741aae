#!/usr/bin/env bash
# Silent-failure benchmark (issue 13): steady load of safe requests through a proxy in front
# of two demo MCP sites; one site fails silently for FAULT_SECS, then heals:
#   stop   `kill -STOP` (a hang: the kernel still accepts connections, nothing answers),
#          healed by `kill -CONT`;
#   drop   an iptables rule drops every packet to the site's port (connects time out,
#          open connections go quiet), healed by deleting it;
#   slow   the site answers 200 ms late (its /control `slow` mode), healed by `ok`.
# Figures per fault and proxy (medians of ROUNDS, interleaved): failed requests, the slowest
# request, the time until no new request reached the faulty site (shift_ms), and the time
# from the heal until it served again (back_ms). See benches/src/loadgen.rs for the
# definitions. sitesteer runs its defaults plus 100 ms probes; HAProxy runs its best config
# for silent failures (observe layer7, on-marked-down shutdown-sessions, timeout connect and
# server tuned, retries with redispatch, 100 ms checks).
#
#   bash benches/silent.sh        (or: make silent-bench)
#
# Knobs (environment): ROUNDS (3), CONNECTIONS (8), RATE (1000 requests/s in total),
# DURATION (8 s), FAULT_AFTER (2 s), FAULT_SECS (3), FAULTS ("stop drop slow"),
# PROXIES ("sitesteer haproxy-best"), SKIP_BUILD=1. The drop fault needs root and iptables
# (installed when missing) and is skipped, saying why, where they do not work.
# Everything listens on 127.0.0.1 only. Results: target/bench/silent-*.json; the Markdown
# table goes to stdout, progress to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8}
RATE=${RATE:-1000}
DURATION=${DURATION:-8}
FAULT_AFTER=${FAULT_AFTER:-2}
FAULT_SECS=${FAULT_SECS:-3}
FAULTS=${FAULTS:-"stop drop slow"}
PROXIES=${PROXIES:-"sitesteer haproxy-best"}
OUT="$ROOT/target/bench"
BIN="$ROOT/target/release/sitesteer"
LOADGEN="$ROOT/target/release/loadgen"
HAPROXY=${HAPROXY:-haproxy}

log() { echo "[silent] $*" >&2; }

TMP=$(mktemp -d -t sitesteer-silent.XXXXXX)
PIDS=()
RULES=()
cleanup() {
    local p r
    for r in "${RULES[@]}"; do iptables -D INPUT $r 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
        rm -f "/tmp/sitesteer-$p.pid" "/tmp/sitesteer-$p.upgrade.sock"
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------------
missing=()
command -v "$HAPROXY" >/dev/null 2>&1 || missing+=(haproxy)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[[ " $FAULTS " == *" drop "* ]] && ! command -v iptables >/dev/null 2>&1 && missing+=(iptables)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
if [[ " $FAULTS " == *" drop "* ]] && ! iptables -L INPUT -n >/dev/null 2>&1; then
    log "SKIPPED the drop fault: iptables does not work here (needs root and CAP_NET_ADMIN)"
    FAULTS=${FAULTS//drop/}
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p sitesteer -p sitesteer-benches) >&2
fi
mkdir -p "$OUT"
rm -f "$OUT"/silent-*

NEXT_PORT=$((20000 + RANDOM % 30000))
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

sitesteer_config() { # dir proxy_port admin_port p1 p2
    cat >"$1/sitesteer.toml" <<EOF
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
EOF
}

haproxy_config() { # dir proxy_port p1 p2 stats_port
    cat >"$1/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    log stderr format short local0 warning

defaults
    mode http
    log global
    # Tuned for silent failures: a connect that takes more than 100 ms, or an answer more
    # than 1 s, is a failure, retried on the other server at once.
    timeout connect 100ms
    timeout client 30s
    timeout server 1s
    timeout check 80ms
    option http-keep-alive
    option redispatch 1
    retries 3
    retry-on all-retryable-errors

frontend fe
    bind 127.0.0.1:$2
    default_backend be

frontend stats
    bind 127.0.0.1:$5
    stats enable
    stats uri /stats

backend be
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2 observe layer7 error-limit 1 on-error mark-down on-marked-down shutdown-sessions
    server a 127.0.0.1:$3 check
    server b 127.0.0.1:$4 check
EOF
}


# One run: fresh sites and proxy, load, fault on site a at FAULT_AFTER, heal FAULT_SECS later.
scenario() { # fault proxy round
    local fault=$1 proxy=$2 round=$3 dir="$TMP/$1-$2-$3"
    mkdir -p "$dir"
    local p1 p2 pp pa
    free_port; p1=$PORT
    free_port; p2=$PORT
    free_port; pp=$PORT
    free_port; pa=$PORT
    "$BIN" demo-site --name a --http "127.0.0.1:$p1" >"$dir/site-a.log" 2>&1 &
    local site_a=$!
    PIDS+=("$site_a")
    "$BIN" demo-site --name b --http "127.0.0.1:$p2" >"$dir/site-b.log" 2>&1 &
    local site_b=$!
    PIDS+=("$site_b")
    if ! wait_http "http://127.0.0.1:$p1/health" 5 || ! wait_http "http://127.0.0.1:$p2/health" 5; then
        # A port taken between the check and the bind: try again on new ports.
        tail -n 5 "$dir"/site-*.log >&2 || true
        stop_child "$site_a"
        stop_child "$site_b"
        return 1
    fi

    local proxy_pid
    case $proxy in
    sitesteer)
        sitesteer_config "$dir" "$pp" "$pa" "$p1" "$p2"
        "$BIN" run -c "$dir/sitesteer.toml" >"$dir/proxy.log" 2>&1 &
        proxy_pid=$!
        ;;
    haproxy-best)
        haproxy_config "$dir" "$pp" "$p1" "$p2" "$pa"
        "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >&2
        "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/proxy.log" 2>&1 &
        proxy_pid=$!
        ;;
    *) log "unknown proxy $proxy"; exit 1 ;;
    esac
    PIDS+=("$proxy_pid")
    if ! wait_sites "http://127.0.0.1:$pp/" 10 2; then
        tail -n 20 "$dir"/*.log >&2 || true
        exit 1
    fi

    local rule="-p tcp -i lo --dport $p1 -j DROP" fault_cmd heal_cmd
    case $fault in
    stop) fault_cmd="kill -STOP $site_a"; heal_cmd="kill -CONT $site_a" ;;
    drop)
        RULES+=("$rule")
        fault_cmd="iptables -I INPUT $rule"
        heal_cmd="iptables -D INPUT $rule"
        ;;
    slow)
        local control="http://127.0.0.1:$p1/control"
        fault_cmd="curl -fs -o /dev/null -X POST -H 'content-type: application/json' -d '{\"mode\":\"slow\",\"delay_ms\":200}' $control"
        heal_cmd="curl -fs -o /dev/null -X POST -H 'content-type: application/json' -d '{\"mode\":\"ok\"}' $control"
        ;;
    *) log "unknown fault $fault"; exit 1 ;;
    esac
    local out="$OUT/silent-$fault-$proxy-$round.json"
    "$LOADGEN" --url "http://127.0.0.1:$pp/" --connections "$CONNECTIONS" --rate "$RATE" \
        --duration "$DURATION" --timeout 5 --killed-site a \
        --kill-after "$FAULT_AFTER" --fault-cmd "$fault_cmd" \
        --heal-after "$((FAULT_AFTER + FAULT_SECS))" --heal-cmd "$heal_cmd" \
        --label "$fault $proxy" --out "$out" >/dev/null
    [ "$fault" = drop ] && iptables -D INPUT $rule 2>/dev/null || true
    [ -s "$out" ] || { log "loadgen wrote no results"; exit 1; }
    log "$fault $proxy round $round: $(jq -c '{failed, total, max_ms, shift_ms, back_ms, kill_result, heal_result}' "$out")"

    stop_child "$proxy_pid"
    stop_child "$site_a"
    stop_child "$site_b"
    cp "$dir/proxy.log" "$OUT/silent-$fault-$proxy-$round.proxy.log" 2>/dev/null || true
}

log "rounds=$ROUNDS connections=$CONNECTIONS rate=$RATE/s duration=${DURATION}s fault at ${FAULT_AFTER}s for ${FAULT_SECS}s; faults: $FAULTS; proxies: $PROXIES"
read -r -a proxy_list <<<"$PROXIES"
for ((round = 1; round <= ROUNDS; round++)); do
    for fault in $FAULTS; do
        order=("${proxy_list[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#proxy_list[@]} - 1; i >= 0; i--)); do order+=("${proxy_list[$i]}"); done
        fi
        for proxy in "${order[@]}"; do
            tries=0
            until scenario "$fault" "$proxy" "$round"; do
                tries=$((tries + 1))
                ((tries < 3)) || { log "the sites of $fault $proxy round $round did not start"; exit 1; }
            done
        done
    done
done

# --- the table ---------------------------------------------------------------------------
jq -rs --arg faults "$FAULTS" --arg proxies "$PROXIES" --argjson rate "$RATE" \
    --argjson conns "$CONNECTIONS" --argjson secs "$FAULT_SECS" '
  def median: map(select(. != null)) | sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def fmt: if . == null then "n/a" elif type == "number" then (. * 10 | round / 10 | tostring) else tostring end;
  (group_by(.label) | map({key: .[0].label, value: .}) | from_entries) as $by
  | "| fault | proxy | failed requests | slowest request, ms | no new request on the site after, ms | serves again after the heal, ms | per round: failed / slowest / shift / back |",
    "|---|---|---|---|---|---|---|",
    ($faults | split(" ") | map(select(. != ""))[] as $f
      | $proxies | split(" ") | map(select(. != ""))[] as $p
      | ("\($f) \($p)") as $k
      | select($by[$k] != null)
      | "| \($f) | \($p) | \($by[$k] | map(.failed) | median | fmt) | \($by[$k] | map(.max_ms) | median | fmt) | \($by[$k] | map(.shift_ms) | median | fmt) | \($by[$k] | map(.back_ms) | median | fmt) | "
        + ([$by[$k][] | "\(.failed) / \(.max_ms | fmt) / \(.shift_ms | fmt) / \(.back_ms | fmt)"] | join(", ")) + " |"),
    "",
    "\($conns) keep-alive connections, \($rate) GET / per second in total, two sites; site a fails for \($secs) s, then heals."
' "$OUT"/silent-*-[0-9]*.json
