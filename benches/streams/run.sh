#!/usr/bin/env bash
# Streams through the front door (issue 3): SSE time-to-first-event and WebSocket and raw TCP
# round trips, direct to a demo site, through sitesteer and through nginx (proxy_buffering
# off; TCP through nginx's stream module when Debian's module is installed), interleaved.
# Usage: bash benches/streams/run.sh [ROUNDS]   (needs `make venv` for Python websockets)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-stream
fi
make -s venv >/dev/null
cargo build --release -q -p sitesteer
BIN=target/release/sitesteer
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SITE_HTTP=$(port); SITE_TCP=$(port); SS_HTTP=$(port); SS_TCP=$(port); SS_ADMIN=$(port); NG_HTTP=$(port); NG_TCP=$(port)
$BIN demo-site --name a --http 127.0.0.1:$SITE_HTTP --tcp 127.0.0.1:$SITE_TCP >/dev/null 2>&1 & PIDS+=($!)
cat > "$WORK/s.toml" <<TOML
state_file = "$WORK/state.json"
[listen]
http = "127.0.0.1:$SS_HTTP"
tcp = "127.0.0.1:$SS_TCP"
admin = "127.0.0.1:$SS_ADMIN"
[proxy]
threads = 1
session_key_file = "$WORK/key"
[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:$SITE_HTTP"
ws = "127.0.0.1:$SITE_HTTP"
sse = "127.0.0.1:$SITE_HTTP"
tcp = "127.0.0.1:$SITE_TCP"
TOML
RUST_LOG=warn $BIN run -c "$WORK/s.toml" >/dev/null 2>&1 & PIDS+=($!)
STREAM=""
if [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  STREAM="stream { server { listen 127.0.0.1:$NG_TCP; proxy_pass 127.0.0.1:$SITE_TCP; } }"
  LOAD="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
else
  LOAD=""; NG_TCP=""
fi
cat > "$WORK/nginx.conf" <<NGINX
$LOAD
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
$STREAM
http {
  access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$NG_HTTP;
    location / {
      proxy_pass http://127.0.0.1:$SITE_HTTP;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 60s;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" & PIDS+=($!)
sleep 1.5
build/venv/bin/python benches/streams/measure.py "$ROUNDS" \
  "direct=127.0.0.1:$SITE_HTTP,127.0.0.1:$SITE_TCP" \
  "sitesteer=127.0.0.1:$SS_HTTP,127.0.0.1:$SS_TCP" \
  "nginx=127.0.0.1:$NG_HTTP,${NG_TCP:+127.0.0.1:$NG_TCP}"
