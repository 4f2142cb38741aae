# Shell helpers shared by the benchmark scripts (benches/run.sh, scale.sh, failover.sh, p2c.sh).
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

# Installs, with apt, those of the given commands that are missing (each command is its
# Debian package's name: haproxy, nginx, wrk, jq, curl).
install_missing() { # command...
    local missing=() c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# The EXIT trap of a benchmark: kills every process in PIDS, removes what a killed
# sitesteer leaves in /tmp, and the run's scratch folder TMP.
cleanup_children() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
        rm -f "/tmp/sitesteer-$p.pid" "/tmp/sitesteer-$p.upgrade.sock"
    done
    rm -rf "$TMP"
}

# The common start of the benchmark named $1, after `log` and ROOT and OUT are set: a
# scratch folder TMP and the PIDS killed on exit (`cleanup_children`), the commands $2...
# installed when missing, release binaries built (unless SKIP_BUILD=1), the run's old
# results removed from OUT, and NEXT_PORT picked for `free_port`.
bench_start() { # name command...
    local name=$1
    shift
    TMP=$(mktemp -d -t "sitesteer-$name.XXXXXX")
    PIDS=()
    trap cleanup_children EXIT
    trap 'exit 130' INT TERM
    install_missing "$@"
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building release binaries"
        (cd "$ROOT" && cargo build --release -q -p sitesteer -p sitesteer-benches) >&2
    fi
    mkdir -p "$OUT"
    rm -f "$OUT"/"$name"-*
    NEXT_PORT=$((20000 + RANDOM % 30000))
}
