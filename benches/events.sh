#!/usr/bin/env bash
# The cost of webhooks on pushes: image push × 8 clients against a node with ten webhooks
# (nine healthy receivers and one that hangs, each wanting push and delete events) and
# against a node with none, side by side in one run on this machine. Each round runs
# none, then webhooks (ROUNDS rounds), so drift hits both equally; the ratio is
# mean(webhooks) ÷ mean(none) ops/s, target ≥ 0.95 (≤ 5 % slower). Delivery latency
# (event timestamp → arrival at a healthy receiver) is recorded by the receivers
# (`meridian-bench receiver`), p50/p99 over every event of every healthy receiver.
# Writes the section between <!-- events:begin/end --> of benches/RESULTS.md.
#
#   benches/events.sh                  # 10 s per run, 4 rounds
#   BENCH_SECS=5 ROUNDS=6 benches/events.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
ROUNDS="${ROUNDS:-4}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/events.sh"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$ROUNDS" != 4 ]] && CMDLINE="ROUNDS=$ROUNDS $CMDLINE"
ADMIN_TOKEN=bench-admin-token

TMP="$(mktemp -d /tmp/meridian-events-bench.XXXXXX)"
BENCH_NAME=events
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
MERIDIAN="$ROOT/target/release/meridian"
BENCH="$ROOT/target/release/meridian-bench"
RECEIVER_PORTS=(7101 7102 7103 7104 7105 7106 7107 7108 7109)
HANGING_PORT=7110
require_free_ports 5211 5212 6211 6212 "${RECEIVER_PORTS[@]}" "$HANGING_PORT"

declare -A PID
start() { # name port grpc_port
  mkdir -p "$TMP/$1"
  MERIDIAN_AUTH_ENABLED=false MERIDIAN_LOG_LEVEL=warn MERIDIAN_ADMIN_TOKEN=$ADMIN_TOKEN \
    "$MERIDIAN" serve --listen "127.0.0.1:$2" --grpc-listen "127.0.0.1:$3" --data-dir "$TMP/$1/data" >"$TMP/$1/log" 2>&1 &
  PID[$1]=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:$2/readyz" 60 || { log "$1 not ready"; tail -20 "$TMP/$1/log" >&2; exit 1; }
}
start none 5211 6211
start webhooks 5212 6212

LATENCIES="$TMP/latencies"
: >"$LATENCIES"
for port in "${RECEIVER_PORTS[@]}"; do
  "$BENCH" receiver --listen "127.0.0.1:$port" --record "$LATENCIES" &
  STARTED+=($!)
done
"$BENCH" receiver --listen "127.0.0.1:$HANGING_PORT" --hang &
STARTED+=($!)
admin() { "$MERIDIAN" admin --addr http://127.0.0.1:6212 --token "$ADMIN_TOKEN" "$@"; }
for i in "${!RECEIVER_PORTS[@]}"; do
  admin webhook add "healthy-$i" --url "http://127.0.0.1:${RECEIVER_PORTS[$i]}/hook" --actions push,delete >/dev/null
done
admin webhook add hanging --url "http://127.0.0.1:$HANGING_PORT/hook" --actions push,delete --timeout 5s >/dev/null
admin webhook list >&2

# One unrecorded run on each node first: a fresh node's first seconds are slower (files
# created, caches cold), which would count against whichever node ran first.
for port in 5211 5212; do
  "$BENCH" image-push --concurrency 8 --url "http://127.0.0.1:$port" --duration 5s --warmup 1s --label warm-up --json >/dev/null
done
OUT="$TMP/results.jsonl"
: >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for mode in none webhooks; do
    port=5211
    [[ "$mode" == webhooks ]] && port=5212
    log "image push × 8, $mode, round $round"
    "$BENCH" image-push --concurrency 8 --url "http://127.0.0.1:$port" --duration "${BENCH_SECS}s" --warmup "${BENCH_WARMUP}s" \
      --server-pid "${PID[$mode]}" --label "$mode" --json >>"$OUT"
    tail -1 "$OUT" | jq -r '"  \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2
  done
done
# Let the healthy receivers catch up with the last pushes before reading their records.
sleep 3
admin --json webhook list >"$TMP/webhooks.json"

mean() { jq -s "map(select(.label == \"$1\") | .$2) | add / length" "$OUT"; }
percentile() { # p : of the recorded latencies (ms)
  sort -n "$LATENCIES" | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int((NR - 1) * p / 100) + 1; print v[i] }'
}
events_received=$(wc -l <"$LATENCIES")
hanging_state=$(jq -r '.webhooks[] | select(.name == "hanging") | "\(.pending) pending, \(.parked) parked"' "$TMP/webhooks.json")
none_ops=$(mean none ops_per_sec); hooks_ops=$(mean webhooks ops_per_sec)
SECTION="$TMP/section.md"
{
  echo "<!-- events:begin -->"
  echo "## Webhooks: the cost on pushes, and delivery latency"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); both nodes, the ten receivers and the client share it"
  echo "- Meridian: git $(git_rev); two single-region nodes, one with no webhook, one with ten (\`push,delete\`): nine answer 200 at once, one reads the request and never answers (timeout 5 s)"
  echo "- Command: \`$CMDLINE\`; each run ${BENCH_WARMUP} s warm-up + ${BENCH_SECS} s, alternating none/webhooks, $ROUNDS rounds after one unrecorded run on each node"
  echo
  echo "| image push (3 × 64 KiB) × 8 clients | no webhooks | ten webhooks, one hanging | webhooks ÷ none | target |"
  echo "|---|---:|---:|---:|---:|"
  echo "| throughput (ops/s) | $(printf '%.1f' "$none_ops") | $(printf '%.1f' "$hooks_ops") | $(awk -v a="$hooks_ops" -v b="$none_ops" 'BEGIN { printf "%.3f", a / b }') | ≥ 0.95 |"
  echo "| push p50 / p99 (ms) | $(printf '%.2f' "$(mean none p50_ms)") / $(printf '%.2f' "$(mean none p99_ms)") | $(printf '%.2f' "$(mean webhooks p50_ms)") / $(printf '%.2f' "$(mean webhooks p99_ms)") | | |"
  echo
  echo "Delivery latency to a healthy receiver (the event's \`timestamp\`, taken when the push arrived, to its arrival at the receiver; $events_received events over nine receivers): p50 $(percentile 50) ms, p99 $(percentile 99) ms. The hanging webhook after the run: $hanging_state."
  echo
  raw_json_details "$OUT"
  echo "<!-- events:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" events "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
