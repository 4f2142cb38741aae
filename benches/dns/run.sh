#!/usr/bin/env bash
# DNS benchmark: sitesteer's authoritative DNS against gdnsd (multifo + http_status) and
# PowerDNS Authoritative (bind backend, one LUA `ifportup` record), all serving the same
# health-checked name (api.mcp.test. -> the up addresses of three demo sites on
# 127.0.0.1-3) on loopback ports, measured with dnsperf in interleaved rounds.
#
#   bash benches/dns/run.sh            # ROUNDS=3 DURATION=8 RATE=5000 by default
#   SITESTEER_BIN=target/release/sitesteer bash benches/dns/run.sh   # skip the cargo build
#
# Each server is pinned to CPU 1 and dnsperf to CPU 0 (equal budgets on a 2-core box); each
# server runs with one UDP listener thread (sitesteer: dns.udp_threads = 1). Per round and
# server: a throughput run (dnsperf unthrottled, 100 queries outstanding), during which the
# server process's CPU time is read from /proc (CPU per query: what the server spends, even
# when dnsperf's core is the limit), and a latency run (throttled to RATE qps). Reported: the
# median of the rounds and sitesteer's ratio to each competitor.
# Missing tools are installed with apt-get (dnsperf, gdnsd, pdns-server, pdns-backend-bind).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
RATE=${RATE:-5000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/sitesteer-dnsbench.XXXXXX)
SITE_PORT=${SITE_PORT:-18181}
HTTP_PORT=18180 ADMIN_PORT=18190
SITESTEER_PORT=15301 GDNSD_PORT=15302 PDNS_PORT=15303
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { # command package
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >&2
}
need dnsperf dnsperf
need dig dnsutils
need gdnsd gdnsd
need pdns_server pdns-server
[ -e /usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so ] || ls /usr/lib/*/pdns/libbindbackend.so >/dev/null 2>&1 || need /nonexistent pdns-backend-bind

for port in $SITE_PORT $HTTP_PORT $ADMIN_PORT $SITESTEER_PORT $GDNSD_PORT $PDNS_PORT; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
done

# SITESTEER_BIN skips the build (any release binary of this tree).
BIN=${SITESTEER_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -q -p sitesteer)
  BIN=$ROOT/target/release/sitesteer
fi

fill() { # template -> output
  sed -e "s|@WORK@|$WORK|g" -e "s|@SITE_PORT@|$SITE_PORT|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
      -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@SITESTEER_PORT@|$SITESTEER_PORT|g" \
      -e "s|@GDNSD_PORT@|$GDNSD_PORT|g" -e "s|@PDNS_PORT@|$PDNS_PORT|g" "$1" > "$2"
}
mkdir -p "$WORK/gdnsd/zones"
fill "$HERE/sitesteer.toml" "$WORK/sitesteer.toml"
fill "$HERE/gdnsd/config" "$WORK/gdnsd/config"
cp "$HERE/gdnsd/zones/mcp.test" "$WORK/gdnsd/zones/mcp.test"
fill "$HERE/pdns/pdns.conf" "$WORK/pdns.conf"
fill "$HERE/pdns/named.conf" "$WORK/named.conf"
fill "$HERE/pdns/mcp.test.zone" "$WORK/mcp.test.zone"

# Three demo sites, on 127.0.0.1-3 (the addresses every server hands out and health-checks).
for i in 1 2 3; do
  "$BIN" demo-site --name "s$i" --http "127.0.0.$i:$SITE_PORT" >"$WORK/site$i.log" 2>&1 &
  PIDS+=($!)
done

# hickory logs two info lines per DNS-over-TCP query; the benchmark runs at warn.
declare -A SPID
RUST_LOG=warn taskset -c 1 "$BIN" run -c "$WORK/sitesteer.toml" >"$WORK/sitesteer.log" 2>&1 &
PIDS+=($!); SPID[sitesteer]=$!
taskset -c 1 gdnsd -c "$WORK/gdnsd" start >"$WORK/gdnsd.log" 2>&1 &
PIDS+=($!); SPID[gdnsd]=$!
taskset -c 1 pdns_server --config-dir="$WORK" >"$WORK/pdns.log" 2>&1 &
PIDS+=($!); SPID[powerdns]=$!

answers() { dig @127.0.0.1 -p "$1" +short +tries=1 +time=1 api.mcp.test A 2>/dev/null | sort | tr '\n' ' '; }
declare -A PORT=([sitesteer]=$SITESTEER_PORT [gdnsd]=$GDNSD_PORT [powerdns]=$PDNS_PORT)
SERVERS=(sitesteer gdnsd powerdns)
want="127.0.0.1 127.0.0.2 127.0.0.3 "
for s in "${SERVERS[@]}"; do
  ok=""
  for _ in $(seq 1 60); do
    if [ "$(answers "${PORT[$s]}")" = "$want" ]; then ok=1; break; fi
    sleep 0.5
  done
  if [ -z "$ok" ]; then
    echo "$s does not answer api.mcp.test A with all three sites: '$(answers "${PORT[$s]}")'" >&2
    declare -A LOG=([sitesteer]=sitesteer.log [gdnsd]=gdnsd.log [powerdns]=pdns.log)
    tail -20 "$WORK/${LOG[$s]}" >&2 2>/dev/null || true
    exit 1
  fi
  echo "$s answers: $want" >&2
done

perf() { # port extra-args... -> "qps avg_latency_ms lost completed"
  local port=$1; shift
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$HERE/queries.txt" -c 8 -t 1 "$@" 2>/dev/null |
    awk '/Queries lost:/ {lost=$3}
         /Queries completed:/ {done=$3}
         /Queries per second:/ {qps=$4}
         /Average Latency \(s\):/ {lat=$4*1000}
         END {printf "%.0f %.3f %s %s\n", qps, lat, lost, done}'
}
TICK=$(getconf CLK_TCK)
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, whole process

declare -A QPS LAT CPU
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order every round so that no server always goes first.
  order=("${SERVERS[@]:$((round % 3))}" "${SERVERS[@]:0:$((round % 3))}")
  for s in "${order[@]}"; do
    t0=$(cputicks "${SPID[$s]}")
    read -r qps _ lost completed < <(perf "${PORT[$s]}" -l "$DURATION" -q 100)
    t1=$(cputicks "${SPID[$s]}")
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$TICK" -v n="$completed" 'BEGIN {printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0)}')
    read -r _ lat lost2 _ < <(perf "${PORT[$s]}" -l 5 -Q "$RATE")
    echo "round $round $s: $qps qps (lost $lost), server CPU $cpu us/query; at $RATE qps: avg latency $lat ms (lost $lost2)" >&2
    QPS[$s]+="$qps "
    LAT[$s]+="$lat "
    CPU[$s]+="$cpu "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "| server | queries/s (median of $ROUNDS) | avg latency at $RATE qps, ms | server CPU per query, us | sitesteer qps ratio | sitesteer latency ratio | sitesteer CPU ratio |"
echo "|---|---|---|---|---|---|---|"
sq=$(echo "${QPS[sitesteer]}" | median); sl=$(echo "${LAT[sitesteer]}" | median); sc=$(echo "${CPU[sitesteer]}" | median)
for s in "${SERVERS[@]}"; do
  q=$(echo "${QPS[$s]}" | median); l=$(echo "${LAT[$s]}" | median); c=$(echo "${CPU[$s]}" | median)
  awk -v s="$s" -v q="$q" -v l="$l" -v c="$c" -v sq="$sq" -v sl="$sl" -v sc="$sc" \
    'BEGIN {printf "| %s | %.0f | %.3f | %.2f | %.2f | %.2f | %.2f |\n", s, q, l, c, sq/q, sl/l, (c > 0 ? sc/c : 0)}'
done
echo
echo "rounds: qps sitesteer=[${QPS[sitesteer]}] gdnsd=[${QPS[gdnsd]}] powerdns=[${QPS[powerdns]}]"
echo "rounds: latency ms sitesteer=[${LAT[sitesteer]}] gdnsd=[${LAT[gdnsd]}] powerdns=[${LAT[powerdns]}]"
echo "rounds: server CPU us/query sitesteer=[${CPU[sitesteer]}] gdnsd=[${CPU[gdnsd]}] powerdns=[${CPU[powerdns]}]"
