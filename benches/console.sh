#!/usr/bin/env bash
# The web console at a registry's size: how long the server takes to render its pages
# with 10,000 repositories, and with one repository of 10,000 tags. Two stopped one-node
# regions are filled with `meridian-load` (the same Raft commands pushes propose), then
# served with auth on; a logged-in client (curl with the session cookie) requests each
# page REQUESTS times, and the server's own figure (`Server-Timing: app;dur=`) is
# reported as p50/p99, at `console.page_size` 100 and 500. Target: p99 < 200 ms.
# Then the hot paths: manifest GET and a 1 MiB blob pull with the console enabled and disabled, alternating.
# Writes the section between <!-- console:begin/end --> of benches/RESULTS.md.
#
#   benches/console.sh                 # 200 requests per page
#   REQUESTS=50 benches/console.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REQUESTS="${REQUESTS:-200}"
BENCH_SECS="${BENCH_SECS:-10}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/console.sh"
[[ "$REQUESTS" != 200 ]] && CMDLINE="REQUESTS=$REQUESTS $CMDLINE"
ADMIN_PW="bench-admin-password"
COUNT=10000

TMP="$(mktemp -d /tmp/meridian-console-bench.XXXXXX)"
BENCH_NAME=console
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_node
PORT=5401
GRPC=6401
require_free_ports "$PORT" "$GRPC" 5402 6402

serve() { # data_dir page_size console_enabled [port grpc] : starts a node, sets NODE_PID
  local port="${4:-$PORT}" grpc="${5:-$GRPC}"
  MERIDIAN_AUTH_ENABLED=true MERIDIAN_ADMIN_PASSWORD="$ADMIN_PW" MERIDIAN_CONSOLE_PAGE_SIZE="$2" \
    MERIDIAN_CONSOLE_ENABLED="$3" MERIDIAN_LOG_LEVEL=warn \
    "$MERIDIAN" serve --listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$grpc" --data-dir "$1" >>"$1.log" 2>&1 &
  NODE_PID=$!
  STARTED+=("$NODE_PID")
  wait_http "http://127.0.0.1:$port/readyz" 120 || { log "node not ready"; tail -20 "$1.log" >&2; exit 1; }
}

stop() { stop_pids "$NODE_PID"; forget_pids "$NODE_PID"; }

# Two data sets: 10,000 repositories of one image each; one repository of 10,000 tags.
for set in repos tags; do
  dir="$TMP/$set"
  serve "$dir" 100 true
  stop
  if [[ $set == repos ]]; then repos=$COUNT; else repos=1; fi
  log "meridian-load: $COUNT manifests over $repos repositories"
  "$LOAD" --data-dir "$dir" --region local --manifests "$COUNT" --repos "$repos" --layers 100 >&2
done

login() { # jar : logs admin in, the session in the cookie jar
  local base="http://127.0.0.1:$PORT" page="$TMP/login.html"
  curl -s -c "$1" "$base/ui/login" >"$page"
  local csrf
  csrf="$(grep -o 'name="_csrf" value="[^"]*"' "$page" | head -1 | sed 's/.*value="//; s/"$//')"
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' -b "$1" -c "$1" -H "Origin: $base" \
    --data-urlencode "_csrf=$csrf" --data-urlencode "user=admin" --data-urlencode "password=$ADMIN_PW" "$base/ui/login")"
  [[ "$code" == 303 ]] || { log "login answered $code"; exit 1; }
}

measure() { # jar label path : REQUESTS requests; appends "label p50 p99 wall_p50" to $OUT
  local jar="$1" label="$2" path="$3" durs="$TMP/durs" walls="$TMP/walls" status
  : >"$durs"; : >"$walls"
  status="$(curl -s -o /dev/null -w '%{http_code}' -b "$jar" "http://127.0.0.1:$PORT$path")"
  [[ "$status" == 200 ]] || { log "$path answered $status"; exit 1; }
  for _ in $(seq 1 "$REQUESTS"); do
    curl -s -o /dev/null -D "$TMP/headers" -w '%{time_total}\n' -b "$jar" "http://127.0.0.1:$PORT$path" >>"$walls"
    grep -i '^server-timing:' "$TMP/headers" | sed 's/.*dur=//' | tr -d '\r' >>"$durs"
  done
  python3 - "$durs" "$walls" "$label" >>"$OUT" <<'EOF'
import sys
durs = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
walls = sorted(float(x) * 1000 for x in open(sys.argv[2]) if x.strip())
pct = lambda xs, p: xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
print(f"{sys.argv[3]}\t{pct(durs, 50):.2f}\t{pct(durs, 99):.2f}\t{pct(walls, 50):.2f}\t{len(durs)}")
EOF
  tail -1 "$OUT" | awk -F'\t' '{ printf "  %s: p50 %s ms, p99 %s ms at the server\n", $1, $2, $3 }' >&2
}

OUT="$TMP/pages.tsv"
: >"$OUT"
for size in 100 500; do
  serve "$TMP/repos" "$size" true
  login "$TMP/jar"
  measure "$TMP/jar" "repositories, first page|$size" "/ui/repos"
  measure "$TMP/jar" "repositories, page after load/r5|$size" "/ui/repos?after=load%2Fr5"
  measure "$TMP/jar" "repositories, filter matching nothing (reads all 10,000 names)|$size" "/ui/repos?q=nomatch"
  digest="$(curl -s -u "admin:$ADMIN_PW" -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$PORT/v2/load/r0/manifests/v0" | grep -i '^docker-content-digest:' | awk '{print $2}' | tr -d '\r')"
  measure "$TMP/jar" "manifest page (config read from disk)|$size" "/ui/r/load/r0/-/m/$digest"
  stop
  serve "$TMP/tags" "$size" true
  login "$TMP/jar"
  measure "$TMP/jar" "tags, first page of 10,000|$size" "/ui/r/load/r0/-/tags"
  measure "$TMP/jar" "tags, page after v5|$size" "/ui/r/load/r0/-/tags?after=v5"
  stop
done

# The hot paths: manifest GET by tag and a 1 MiB blob pull, with the console on and off, alternating.
HOT="$TMP/hot.jsonl"
: >"$HOT"
TOKEN_FOR() { curl -s -u "admin:$ADMIN_PW" "http://127.0.0.1:$1/token?service=meridian&scope=repository:bench/manifest-get:pull,push&scope=repository:bench/blob-pull:pull,push" | jq -r .token; }
HOT_SCENARIOS=("manifest-get --concurrency 16" "blob-pull --size 1MiB --concurrency 4")
for round in 1 2; do
  for mode in true false; do
    serve "$TMP/hot-$mode" 100 "$mode"
    token="$(TOKEN_FOR "$PORT")"
    for scenario in "${HOT_SCENARIOS[@]}"; do
      name="${scenario%% *}"
      log "$name, console.enabled=$mode, round $round"
      # shellcheck disable=SC2086 # the scenario carries its own flags
      "$BENCH" $scenario --url "http://127.0.0.1:$PORT" --duration "${BENCH_SECS}s" --warmup 1s \
        --server-pid "$NODE_PID" --label "$name|$mode" --json --authorization "Bearer $token" >>"$HOT"
      tail -1 "$HOT" | jq -r '"  \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms"' >&2
    done
    stop
  done
done
mean() { jq -s "map(select(.label == \"$1\") | .ops_per_sec) | add / length" "$HOT"; }
hot_line() { # scenario name, description
  local on off
  on=$(mean "$1|true"); off=$(mean "$1|false")
  echo "- $2: console enabled $(printf '%.0f' "$on") ops/s, disabled $(printf '%.0f' "$off") ops/s: ratio $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')"
}

SECTION="$TMP/section.md"
{
  echo "<!-- console:begin -->"
  echo "## Web console at 10,000 repositories and 10,000 tags"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); the node and the client share it"
  echo "- Meridian: git $(git_rev); one-node regions loaded with \`meridian-load\` ($COUNT manifests over $COUNT repositories; $COUNT tags in one repository), auth on, a logged-in session"
  echo "- Command: \`$CMDLINE\`; $REQUESTS sequential requests per page; times are the server's \`Server-Timing: app;dur\` (rendering included), the client's wall time beside"
  echo
  echo "| page | page size | p50 ms | p99 ms | client wall p50 ms | target |"
  echo "|---|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r label p50 p99 wall _; do
    echo "| ${label%|*} | ${label#*|} | $p50 | $p99 | $wall | p99 < 200 |"
  done <"$OUT"
  echo
  echo "Hot paths with a bearer token (2 rounds of ${BENCH_SECS} s each, console on and off alternating):"
  echo
  hot_line manifest-get "manifest GET by tag × 16 clients"
  hot_line blob-pull "blob pull 1 MiB × 4 clients"
  echo
  raw_json_details "$HOT"
  echo "<!-- console:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" console "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
