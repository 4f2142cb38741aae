# Shell helpers shared by the benchmark scripts (benches/run.sh, scale.sh, failover.sh).
# Source it after defining `log`, and set NEXT_PORT (the first port to try) before free_port.

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets PORT to a free loopback port, never the same twice in one run (not via $(...): a
# subshell would lose the counter). Gives up after FREE_PORT_TRIES (200) ports in use.
PORT=0
free_port() {
    local tries=0
    while port_in_use "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
        tries=$((tries + 1))
        ((tries < ${FREE_PORT_TRIES:-200})) || { log "no free port"; exit 1; }
    done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# Waits (at most $2 seconds) until GET $1 answers 2xx.
wait_http() { # url seconds
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        curl -fs -o /dev/null --max-time 0.5 "$1" && return 0
        sleep 0.05
    done
    log "timed out waiting for $1"
    return 1
}

# Stops one child: SIGINT (fast shutdown for pingora, hard stop for haproxy), then SIGKILL
# after $2 checks 50 ms apart (default 40: 2 s).
stop_pid() { # pid [checks]
    local p=$1 i
    kill -INT "$p" 2>/dev/null || true
    for ((i = 0; i < ${2:-40}; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

# CPU ticks (user + system) used so far by PID and its child processes (nginx workers).
cpu_ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        [ -r "/proc/$p/stat" ] || continue
        # Fields after the ")" of comm: utime is the 12th, stime the 13th.
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# Waits (at most $2 seconds) until the proxy at $1 has served $3 different demo sites (by
# their x-demo-site header).
wait_sites() { # url seconds count
    local url=$1 limit=$2 want=$3 i seen="" site
    for ((i = 0; i < limit * 20; i++)); do
        site=$(curl -fs -o /dev/null -D - --max-time 0.5 "$url" 2>/dev/null |
            tr -d '\r' | awk -F': ' 'tolower($1)=="x-demo-site"{print $2}') || true
        if [ -n "$site" ] && [[ " $seen " != *" $site "* ]]; then seen="$seen $site"; fi
        [ "$(wc -w <<<"$seen")" -ge "$want" ] && return 0
        sleep 0.02
    done
    log "proxy $url served only:$seen"
    return 1
}

# Stops one child (continued first, should it be stopped) and removes what a killed
# sitesteer leaves in /tmp.
stop_child() {
    kill -CONT "$1" 2>/dev/null || true
    stop_pid "$1"
    rm -f "/tmp/sitesteer-$1.pid" "/tmp/sitesteer-$1.upgrade.sock"
}
