#!/usr/bin/env bash
# Pulls at the machine's limit (issue 18, target 5): 64 MiB blobs pulled by 4 clients at
# once from one node, against nginx serving the very same files (the node's blob
# directory, by the same URL paths) with sendfile, in the same run. RUNS consecutive
# rounds, each measuring nginx and Meridian (in turn first) for BENCH_SECS; the table shows every round,
# so a slow mode shows as a round apart. Target ≥ 1.0× nginx, in every round. Writes the
# section between <!-- pulls:begin/end --> of benches/RESULTS.md.
#
# nginx comes from Debian (installed with apt-get when missing, as the README's commands
# install what they need). With COMPARE_BIN (a `meridian` binary of another build), each
# round also measures a node of that build (same data filesystem), shown beside.
#
#   benches/pulls.sh                    # 5 rounds of 10 s
#   RUNS=3 BENCH_SECS=5 benches/pulls.sh
#   COMPARE_BIN=/tmp/meridian-before COMPARE_LABEL="git abc123" benches/pulls.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_SECS="${BENCH_SECS:-10}"
RUNS="${RUNS:-5}"
CONCURRENCY=4
SIZE=64MiB
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/pulls.sh"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$RUNS" != 5 ]] && CMDLINE="RUNS=$RUNS $CMDLINE"

TMP="$(mktemp -d /tmp/meridian-pulls.XXXXXX)"
BENCH_NAME=pulls
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

if [[ "$(dpkg-query -W -f='${Status}' nginx 2>/dev/null)" != "install ok installed" ]]; then
  log "apt-get install nginx"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

build_node
PORT=5541
NGINX_PORT=5542
COMPARE_PORT=5543
COMPARE_BIN="${COMPARE_BIN:-}"
COMPARE_LABEL="${COMPARE_LABEL:-$COMPARE_BIN}"
require_free_ports "$PORT" 6541 "$NGINX_PORT" "$COMPARE_PORT" 6543

start_single_node "$MERIDIAN" node "$PORT" 6541
NODE=$NODE_PID
if [[ -n "$COMPARE_BIN" ]]; then
  start_single_node "$COMPARE_BIN" compare "$COMPARE_PORT" 6543
  COMPARE_PID=$NODE_PID
fi

# nginx serves GET /v2/<repo>/blobs/sha256:<hex> from the node's own blob files, so both
# read the same bytes from the same page cache. `user root`: its workers must open files
# under this script's mktemp directory, which only its owner may enter (run as another
# user, nginx keeps that user and warns).
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  sendfile_max_chunk 0;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    # reuseport: one listening socket per worker, so the kernel spreads the clients'
    # connections over both workers (without it one worker may take all four).
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location ~ "^/v2/.+/blobs/sha256:(?<p>[0-9a-f]{2})(?<r>[0-9a-f]{62})\$" {
      default_type application/octet-stream;
      alias $TMP/node/data/blobs/sha256/\$p/\$p\$r;
    }
  }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
STARTED+=("$NGINX_PID")
for _ in $(seq 1 50); do port_in_use "$NGINX_PORT" && break; sleep 0.1; done
port_in_use "$NGINX_PORT" || { log "nginx did not start"; cat "$TMP/nginx/error.log" >&2; exit 1; }
nginx_version="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
pull() { # label round flags… : one measured run (its setup pushes CONCURRENCY blobs)
  local label=$1 round=$2
  shift 2
  "$BENCH" blob-pull --concurrency "$CONCURRENCY" --size "$SIZE" --duration "${BENCH_SECS}s" --warmup 1s \
    --label "$label" --json "$@" | jq -c --argjson round "$round" '. + {round: $round}' >>"$RESULTS"
  tail -1 "$RESULTS" | jq -r '"  round \(.round) \(.label): \(.ops_per_sec) ops/s, \(.mb_per_sec) MB/s, p50 \(.p50_ms) ms, server CPU \(.server_cpu_pct // "-")%, errors \(.errors)"' >&2
}
cpu_ticks() { # pid… : user + system clock ticks used so far by these processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}
pull_nginx() { # round : blobs pushed to the node, pulled from nginx; its workers' CPU added
  local workers before after
  mapfile -t workers < <(pgrep -P "$NGINX_PID")
  before=$(cpu_ticks "${workers[@]}")
  pull nginx "$1" --url "http://127.0.0.1:$PORT" --pull-urls "http://127.0.0.1:$NGINX_PORT"
  after=$(cpu_ticks "${workers[@]}")
  # Over the warm-up (1 s) and the measured seconds: nginx does nothing in the setup.
  local secs pct
  secs=$(tail -1 "$RESULTS" | jq '.duration_s + 1')
  pct=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v s="$secs" 'BEGIN { printf "%.1f", 100 * t / hz / s }')
  jq -c --argjson pct "$pct" '. + {server_cpu_pct: $pct}' <<<"$(tail -1 "$RESULTS")" >"$TMP/last.json"
  sed -i '$ d' "$RESULTS" && cat "$TMP/last.json" >>"$RESULTS"
}
for round in $(seq 1 "$RUNS"); do
  log "round $round/$RUNS"
  # Who goes first alternates, so a drift within rounds favours neither.
  ((round % 2)) && pull_nginx "$round"
  pull meridian "$round" --url "http://127.0.0.1:$PORT" --server-pid "$NODE"
  ((round % 2)) || pull_nginx "$round"
  if [[ -n "$COMPARE_BIN" ]]; then
    pull compare "$round" --url "http://127.0.0.1:$COMPARE_PORT" --server-pid "$COMPARE_PID"
  fi
  # Each run pushed its own blobs; they stay (a few GB over the rounds, on /tmp).
done
if jq -e 'select(.errors > 0)' "$RESULTS" >/dev/null; then log "errors:"; jq -c 'select(.errors > 0)' "$RESULTS" >&2; exit 1; fi

of() { jq -r --arg l "$1" --argjson r "$2" "select(.label == \$l and .round == \$r) | .$3" "$RESULTS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
SECTION="$TMP/section.md"
{
  echo "<!-- pulls:begin -->"
  echo "## Pulls at the machine's limit: 64 MiB × 4 clients against nginx (sendfile)"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); server and client share it"
  echo "- Meridian: git $(git_rev); one node, auth off, blobs on the local disk"
  [[ -n "$COMPARE_BIN" ]] && echo "- Compared build: $COMPARE_LABEL"
  echo "- nginx: $nginx_version, \`sendfile on; sendfile_max_chunk 0; tcp_nopush on;\`, two workers (\`reuseport\`), serving the node's blob files by the same paths"
  echo "- Command: \`$CMDLINE\`; $RUNS consecutive rounds of ${BENCH_SECS} s (1 s warm-up), each: nginx and Meridian, in turn first; every run pulls $CONCURRENCY blobs it pushed itself"
  echo
  head="| round | nginx ops/s (MB/s) | nginx CPU | Meridian ops/s (MB/s) | Meridian CPU | ÷ nginx |"
  rule="|---:|---:|---:|---:|---:|---:|"
  [[ -n "$COMPARE_BIN" ]] && head="$head compared build ops/s | its CPU | ÷ nginx |" && rule="$rule---:|---:|---:|"
  echo "$head"
  echo "$rule"
  for round in $(seq 1 "$RUNS"); do
    n=$(of nginx "$round" ops_per_sec); m=$(of meridian "$round" ops_per_sec)
    line="| $round | $n ($(of nginx "$round" mb_per_sec)) | $(of nginx "$round" server_cpu_pct)% | $m ($(of meridian "$round" mb_per_sec)) | $(of meridian "$round" server_cpu_pct)% | $(ratio "$m" "$n") |"
    if [[ -n "$COMPARE_BIN" ]]; then
      c=$(of compare "$round" ops_per_sec)
      line="$line $c | $(of compare "$round" server_cpu_pct)% | $(ratio "$c" "$n") |"
    fi
    echo "$line"
  done
  mean() { jq -s --arg l "$1" 'map(select(.label == $l) | .ops_per_sec) | add / length' "$RESULTS"; }
  spread() { jq -s -r --arg l "$1" 'map(select(.label == $l) | .ops_per_sec) | "\(min | floor)–\(max | floor)"' "$RESULTS"; }
  echo
  echo "Mean Meridian ÷ nginx: **$(ratio "$(mean meridian)" "$(mean nginx)")** (Meridian $(spread meridian) ops/s over the rounds, nginx $(spread nginx)); target ≥ 1.0."
  echo
  raw_json_details "$RESULTS"
  echo "<!-- pulls:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" pulls "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
