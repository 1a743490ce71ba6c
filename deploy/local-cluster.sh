#!/usr/bin/env bash
# A three-region Meridian cluster on this machine, one process per region:
#
#   deploy/local-cluster.sh up       build, start us (bootstraps the cluster), then eu and ap
#                                    (they join us), wait until all three serve
#   deploy/local-cluster.sh status   which regions run, and `meridian admin region list`
#   deploy/local-cluster.sh down     stop exactly the processes `up` started
#
# `up` on a cluster that ran before restarts it on its data (all regions at once, since
# a region is ready only once a quorum elected a leader). SKIP_BUILD=1 skips the build.
#
# Region configs: deploy/regions/{us,eu,ap}.toml. State, logs and pids live in
# .local-cluster/ (ignored by git): <region>/ (data), <region>.log, <region>.pid.
# `rm -rf .local-cluster` after `down` starts the next `up` from an empty cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

REGIONS=(us eu ap)
STATE=.local-cluster
BIN="${CARGO_TARGET_DIR:-target}/release/meridian"
TOKEN=local-dev-token
ADMIN_ADDR=http://127.0.0.1:6001
READY_TIMEOUT=${READY_TIMEOUT:-60}

# Settings of one region, read from its config file (the single source of truth).
conf() { # region key
    sed -n "s/^$2 *= *\"\(.*\)\"/\1/p" "deploy/regions/$1.toml" | head -n1
}

pid_of() { # region → recorded pid, if its process still runs the meridian binary
    local file="$STATE/$1.pid" pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_meridian "$pid" || return 1
    echo "$pid"
}

is_meridian() { # pid → true while that process runs the meridian binary (not a zombie)
    local stat comm
    read -r stat comm < <(ps -p "$1" -o stat=,comm= 2>/dev/null) || return 1
    [[ $stat != Z* && $comm == meridian* ]]
}

http_status() { # host:port path → HTTP status code, 000 when nothing answers
    local addr=$1 path=$2
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr$path" || true
        return
    fi
    local line
    if exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" 2>/dev/null; then
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&3
        read -r -t 2 line <&3 || true
        exec 3<&- 3>&-
        set -- $line
        echo "${2:-000}"
    else
        echo 000
    fi
}

admin() { # meridian admin … against $ADMIN_ADDR (us unless the caller says otherwise)
    "$BIN" admin --addr "$ADMIN_ADDR" --token "$TOKEN" "$@"
}

start_region() { # region
    local r=$1 pid
    if pid=$(pid_of "$r"); then
        echo "$r: already running (pid $pid)"
        return
    fi
    mkdir -p "$STATE"
    echo "$r: starting (config deploy/regions/$r.toml, log $STATE/$r.log)"
    {
        echo
        echo "=== $(date -u +%FT%TZ) local-cluster.sh: starting region $r"
    } >>"$STATE/$r.log"
    nohup "$BIN" serve --config "deploy/regions/$r.toml" >>"$STATE/$r.log" 2>&1 </dev/null &
    echo $! >"$STATE/$r.pid"
}

wait_ready() { # region
    local r=$1 http deadline pid
    http=$(conf "$r" listen)
    deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(http_status "$http" /readyz) == 200 ]]; do
        if ! pid=$(pid_of "$r"); then
            echo "$r: the process exited; last lines of $STATE/$r.log:" >&2
            tail -n 30 "$STATE/$r.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "$r: /readyz on $http not 200 after ${READY_TIMEOUT}s; last lines of $STATE/$r.log:" >&2
            tail -n 30 "$STATE/$r.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "$r: ready on http://$http"
}

region_count() { # number of regions `admin region list --json` reports (0 on error)
    local out
    out=$(admin --json region list 2>/dev/null) || { echo 0; return; }
    if command -v jq >/dev/null 2>&1; then
        jq '.regions | length' <<<"$out" 2>/dev/null || echo 0
    else
        grep -o '"node_id"' <<<"$out" | wc -l
    fi
}

cmd_up() {
    local running=0 r
    for r in "${REGIONS[@]}"; do
        if pid_of "$r" >/dev/null; then running=$((running + 1)); fi
    done
    if ((running == ${#REGIONS[@]})); then
        echo "The local cluster is already up."
        cmd_status
        return
    fi
    if [[ ${SKIP_BUILD:-0} == 1 && -x $BIN ]]; then
        echo "SKIP_BUILD=1: using the existing $BIN"
    else
        deploy/install-deps.sh
        echo "Building meridian (release)…"
        cargo build --release -p meridian-node
    fi
    if [[ -d $STATE/us/db ]]; then
        # A restart: every region has its Raft state, and none is ready before a quorum
        # is up to elect a leader, so all start together.
        for r in "${REGIONS[@]}"; do start_region "$r"; done
    else
        # A new cluster: us (empty data dir, `join = []`) bootstraps it; eu and ap join
        # it, so it must answer before they start.
        start_region us
        wait_ready us
        for r in eu ap; do start_region "$r"; done
    fi
    for r in "${REGIONS[@]}"; do wait_ready "$r"; done
    echo "Waiting for all ${#REGIONS[@]} regions in the membership…"
    local deadline=$((SECONDS + READY_TIMEOUT)) n=0
    while n=$(region_count); ((n < ${#REGIONS[@]})); do
        if ((SECONDS > deadline)); then
            echo "only $n regions in \`meridian admin region list\` after ${READY_TIMEOUT}s:" >&2
            admin region list >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    admin region list || true
    print_endpoints
}

print_endpoints() {
    local r
    echo
    echo "Meridian local cluster:"
    printf '  %-4s %-28s %s\n' region "OCI registry (HTTP)" "gRPC (raft, admin)"
    for r in "${REGIONS[@]}"; do
        printf '  %-4s %-28s %s\n' "$r" "http://$(conf "$r" listen)" "http://$(conf "$r" grpc_listen)"
    done
    echo
    echo "Admin CLI (any region's gRPC address works):"
    echo "  $BIN admin --addr $ADMIN_ADDR --token $TOKEN region list"
    # The first leader (us) created the admin user with a generated password.
    local pwfile="$STATE/us/admin-password" i
    for i in $(seq 1 50); do [[ -s "$pwfile" ]] && break; sleep 0.2; done
    echo "Registry login: user admin, password in $pwfile (created on first start; mode 0600)"
    echo "  more users: $BIN admin --addr $ADMIN_ADDR --token $TOKEN user add NAME --role reader|writer|admin"
    echo "Push/pull, e.g.: skopeo copy --dest-tls-verify=false --dest-creds \"admin:\$(cat $pwfile)\" … docker://127.0.0.1:$(conf us listen | sed 's/.*://')/demo:latest"
    echo "Logs: $STATE/<region>.log   Stop: deploy/local-cluster.sh down"
}

cmd_down() {
    local r pid file stopped=0
    for r in "${REGIONS[@]}"; do
        file="$STATE/$r.pid"
        [[ -f $file ]] || continue
        pid=$(<"$file")
        if [[ $pid =~ ^[0-9]+$ ]] && is_meridian "$pid"; then
            echo "$r: stopping pid $pid"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                is_meridian "$pid" || break
                sleep 0.2
            done
            if is_meridian "$pid"; then
                echo "$r: pid $pid still running after 10s, sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            stopped=$((stopped + 1))
        else
            echo "$r: pid $pid from $file is not a running meridian process; not touching it"
        fi
        rm -f "$file"
    done
    ((stopped > 0)) || echo "Nothing was running."
}

cmd_status() {
    local r pid http
    for r in "${REGIONS[@]}"; do
        http=$(conf "$r" listen)
        if pid=$(pid_of "$r"); then
            echo "$r: running (pid $pid), http://$http /readyz → $(http_status "$http" /readyz), gRPC http://$(conf "$r" grpc_listen)"
        else
            echo "$r: not running"
        fi
    done
    # Ask the first running region (any member answers for the whole cluster).
    for r in "${REGIONS[@]}"; do
        if pid_of "$r" >/dev/null && [[ -x $BIN ]]; then
            echo
            echo "\$ meridian admin --addr http://$(conf "$r" grpc_listen) region list"
            ADMIN_ADDR="http://$(conf "$r" grpc_listen)" admin region list ||
                echo "(\`meridian admin region list\` via $r failed)"
            return
        fi
    done
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
