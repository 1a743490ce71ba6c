# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run): the processes a script
# started and their cleanup, readiness checks, a description of the machine, and
# replacing one marked section of benches/RESULTS.md so each script owns its part.
#
# Before sourcing, set BENCH_NAME (log prefix) and TMP (scratch dir, removed on exit
# unless KEEP_TMP=1). Add every background pid to STARTED.

STARTED=()   # every pid this script started and has not stopped yet

log() { echo "[$BENCH_NAME] $*" >&2; }

# Builds the node and the load generators; sets MERIDIAN, BENCH and LOAD.
build_node() {
  log "cargo build --release -p meridian-node -p meridian-benches"
  cargo build --release -p meridian-node -p meridian-benches
  MERIDIAN="$ROOT/target/release/meridian"
  BENCH="$ROOT/target/release/meridian-bench"
  LOAD="$ROOT/target/release/meridian-load"
}

# build_node, and the fault proxy; also sets PROXY.
build_with_proxy() {
  build_node
  # Separately: built together, cargo would unify chaos-tests' `failpoints` feature into the
  # benchmarked `meridian` binary.
  log "cargo build --release -p chaos-tests --bin fault-proxy"
  cargo build --release -p chaos-tests --bin fault-proxy
  PROXY="$ROOT/target/release/fault-proxy"
}

# Round trip in ms between regions i and j of us (1), eu (2), ap (3), from RTT_US_EU,
# RTT_EU_AP and RTT_US_AP.
rtt_between() { # i j
  case "$(( $1 < $2 ? $1$2 : $2$1 ))" in
    12) echo "$RTT_US_EU" ;; 23) echo "$RTT_EU_AP" ;; 13) echo "$RTT_US_AP" ;;
  esac
}

stop_pids() { # pid… : TERM, wait up to 10 s, then KILL; only the given pids
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
}

forget_pids() { # pid… : drop them from STARTED (after stop_pids)
  local keep=() pid x
  for pid in "${STARTED[@]+"${STARTED[@]}"}"; do
    for x in "$@"; do [[ "$pid" == "$x" ]] && continue 2; done
    keep+=("$pid")
  done
  STARTED=("${keep[@]+"${keep[@]}"}")
}

bench_cleanup() {
  local rc=$?
  if ((${#STARTED[@]})); then stop_pids "${STARTED[@]}"; fi
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then
    echo "kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

port_in_use() { [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]; }

require_free_ports() { # port… : exit when any is taken
  local p
  for p in "$@"; do
    if port_in_use "$p"; then
      log "port 127.0.0.1:$p is already in use (deploy/local-cluster.sh running?); not starting"
      exit 1
    fi
  done
}

wait_http() { # url timeout_secs : until GET url answers 200
  local url=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    [[ "$(http_code "$url")" == 200 ]] && return 0
    sleep 0.2
  done
  return 1
}

# A one-node region of `binary` (auth off, data in $TMP/name/data, log in $TMP/name/log),
# on 127.0.0.1:port and grpc_port; waits until it is ready. Sets NODE_PID.
start_single_node() { # binary name port grpc_port
  mkdir -p "$TMP/$2"
  MERIDIAN_AUTH_ENABLED=false MERIDIAN_LOG_LEVEL=warn \
    "$1" serve --listen "127.0.0.1:$3" --grpc-listen "127.0.0.1:$4" --data-dir "$TMP/$2/data" >"$TMP/$2/log" 2>&1 &
  NODE_PID=$!
  STARTED+=("$NODE_PID")
  wait_http "http://127.0.0.1:$3/readyz" 60 || { log "$2 not ready"; tail -20 "$TMP/$2/log" >&2; exit 1; }
}

wait_voters() { # count timeout_secs : until the caller's `admin` lists that many voters
  local deadline=$((SECONDS + $2))
  until [[ "$(admin --json region list 2>/dev/null | jq '[.regions[]? | select(.role == "leader" or .role == "voter")] | length' 2>/dev/null)" == "$1" ]]; do
    ((SECONDS < deadline)) || { log "$1 voters not reached after $2 s"; admin region list >&2 || true; exit 1; }
    sleep 0.5
  done
}

machine_line() {
  local cpu
  cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "$(nproc) CPUs ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
}

git_rev() {
  local rev
  rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]]; then rev="$rev (dirty tree)"; fi
  echo "$rev"
}

# A collapsed "Raw JSON" block with the contents of the given files, for a results section.
raw_json_details() { # file…
  echo "<details><summary>Raw JSON</summary>"
  echo
  echo '```'
  cat "$@"
  echo '```'
  echo
  echo "</details>"
}

# Replaces the block between <!-- NAME:begin --> and <!-- NAME:end --> in FILE with the
# contents of SECTION (which carries the markers itself), or appends it.
write_section() { # file name section_file
  local file=$1 name=$2 section=$3
  if [[ -f "$file" ]] && grep -q "^<!-- $name:begin -->" "$file"; then
    awk -v sec="$section" -v b="<!-- $name:begin -->" -v e="<!-- $name:end -->" '
      $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
      $0 == e { skip = 0; next }
      !skip { print }
    ' "$file" >"$file.tmp"
  else
    { if [[ -f "$file" ]]; then cat "$file"; echo; else echo "# Meridian benchmark results"; echo; fi
      cat "$section"; } >"$file.tmp"
  fi
  mv "$file.tmp" "$file"
}

start_garage() { # a single-node Garage on $GARAGE_S3/$GARAGE_RPC/$GARAGE_ADMIN with bucket
  # `meridian`, data under $TMP/garage; sets KEY_ID, SECRET, GARAGE_PID and garage_version
  KEY_ID="GK$(openssl rand -hex 12)"
  SECRET="$(openssl rand -hex 32)"
  mkdir -p "$TMP/garage"
  cat >"$TMP/garage/garage.toml" <<EOF
metadata_dir = "$TMP/garage/meta"
data_dir = "$TMP/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "$GARAGE_RPC"
rpc_public_addr = "$GARAGE_RPC"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "$GARAGE_S3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "$GARAGE_ADMIN"
EOF
  log "starting Garage on $GARAGE_S3"
  GARAGE_DEFAULT_ACCESS_KEY="$KEY_ID" GARAGE_DEFAULT_SECRET_KEY="$SECRET" GARAGE_DEFAULT_BUCKET=meridian RUST_LOG=garage=warn \
    "$GARAGE_BIN" -c "$TMP/garage/garage.toml" server --single-node --default-bucket >"$TMP/garage/log" 2>&1 &
  GARAGE_PID=$!
  STARTED+=("$GARAGE_PID")
  for _ in $(seq 1 300); do
    "$GARAGE_BIN" -c "$TMP/garage/garage.toml" bucket info meridian >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$GARAGE_BIN" -c "$TMP/garage/garage.toml" bucket info meridian >/dev/null || { log "Garage did not come up"; tail "$TMP/garage/log" >&2; exit 1; }
  garage_version="$("$GARAGE_BIN" --version 2>/dev/null | head -1)"
}
