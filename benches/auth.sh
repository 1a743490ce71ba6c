#!/usr/bin/env bash
# The cost of auth on the hot path: manifest GET and 1 MiB blob pull with a bearer token
# against the same with auth disabled, in one run on this machine. Two single-region
# nodes run side by side (127.0.0.1:5201 auth off, 127.0.0.1:5202 auth on); each
# scenario alternates off, on, off, on (ROUNDS pairs) so drift hits both equally, and the
# ratio is mean(on) ÷ mean(off) ops/s. Target ≥ 0.95 (≤ 5 % slower). Writes the section
# between <!-- auth:begin/end --> of benches/RESULTS.md.
#
#   benches/auth.sh                  # 10 s per run, 2 rounds
#   BENCH_SECS=5 ROUNDS=3 benches/auth.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
ROUNDS="${ROUNDS:-2}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/auth.sh"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$ROUNDS" != 2 ]] && CMDLINE="ROUNDS=$ROUNDS $CMDLINE"
ADMIN_PW="bench-admin-password"

TMP="$(mktemp -d /tmp/meridian-auth-bench.XXXXXX)"
BENCH_NAME=auth
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
MERIDIAN="$ROOT/target/release/meridian"
BENCH="$ROOT/target/release/meridian-bench"
require_free_ports 5201 5202 6201 6202

declare -A PID
start() { # name port grpc_port auth_enabled
  mkdir -p "$TMP/$1"
  MERIDIAN_AUTH_ENABLED=$4 MERIDIAN_ADMIN_PASSWORD="$ADMIN_PW" MERIDIAN_AUTH_TOKEN_TTL_SECS=3600 MERIDIAN_LOG_LEVEL=warn \
    "$MERIDIAN" serve --listen "127.0.0.1:$2" --grpc-listen "127.0.0.1:$3" --data-dir "$TMP/$1/data" >"$TMP/$1/log" 2>&1 &
  PID[$1]=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:$2/readyz" 60 || { log "$1 not ready"; tail -20 "$TMP/$1/log" >&2; exit 1; }
}
start off 5201 6201 false
start on 5202 6202 true
deadline=$((SECONDS + 30))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$ADMIN_PW" 'http://127.0.0.1:5202/token?service=meridian')" == 200 ]]; do
  ((SECONDS < deadline)) || { log "admin cannot log in"; exit 1; }
  sleep 0.2
done
TOKEN="$(curl -s -u "admin:$ADMIN_PW" 'http://127.0.0.1:5202/token?service=meridian&scope=repository:bench/manifest-get:pull,push&scope=repository:bench/blob-pull:pull,push' | jq -r .token)"
[[ -n "$TOKEN" && "$TOKEN" != null ]] || { log "no token"; exit 1; }

OUT="$TMP/results.jsonl"
: >"$OUT"
SCENARIOS=("manifest-get --concurrency 16" "blob-pull --size 1MiB --concurrency 4")
for s in "${SCENARIOS[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
      port=5201; auth=()
      [[ "$mode" == on ]] && { port=5202; auth=(--authorization "Bearer $TOKEN"); }
      log "$s, auth $mode, round $round"
      # shellcheck disable=SC2086
      "$BENCH" $s --url "http://127.0.0.1:$port" --duration "${BENCH_SECS}s" --warmup "${BENCH_WARMUP}s" \
        --server-pid "${PID[$mode]}" --label "$mode" --json "${auth[@]}" >>"$OUT"
      tail -1 "$OUT" | jq -r '"  \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms  errors \(.errors)"' >&2
    done
  done
done

mean() { jq -s "map(select(.scenario == \"$1\" and .label == \"$2\") | .ops_per_sec) | add / length" "$OUT"; }
SECTION="$TMP/section.md"
{
  echo "<!-- auth:begin -->"
  echo "## The cost of auth (bearer token vs. auth disabled)"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); both nodes and the client share it"
  echo "- Meridian: git $(git_rev); two single-region nodes, one with \`auth.enabled = false\`, one with auth on; the client sends \`Authorization: Bearer <token>\` (one token from \`/token\`, reused, as docker does) to the second"
  echo "- Command: \`$CMDLINE\`; each run ${BENCH_WARMUP} s warm-up + ${BENCH_SECS} s, alternating off/on, $ROUNDS rounds"
  echo
  echo "| scenario | auth off ops/s | bearer token ops/s | token ÷ off | target |"
  echo "|---|---:|---:|---:|---:|"
  for row in "manifest-get:manifest GET by tag × 16 clients" "blob-pull:blob pull 1 MiB × 4 clients"; do
    sc=${row%%:*}; name=${row#*:}
    off=$(mean "$sc" off); on=$(mean "$sc" on)
    echo "| $name | $(printf '%.0f' "$off") | $(printf '%.0f' "$on") | $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }') | ≥ 0.95 |"
  done
  echo
  echo "A verified token is cached (per token, until it expires or any identity or key change is applied), so a request pays a cache lookup, not a signature check."
  echo
  raw_json_details "$OUT"
  echo "<!-- auth:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" auth "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
