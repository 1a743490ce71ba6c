#!/usr/bin/env bash
# One big push at the machine's limit: a single client pushing 256 MiB blobs (POST, then
# one monolithic PUT ?digest=, until the registry answers 201) against what this machine
# can do for such a push, measured in the same run through the node's own code: SHA-256
# on one core, and sequential writes with the store's direct-I/O + fdatasync path, into
# the node's data directory (`meridian-bench machine`). Each of RUNS rounds measures the
# machine, then pushes for BENCH_SECS; the ratio is the push's MB/s ÷ the slower of the
# two figures of its round. Target ≥ 0.75. Writes the section between
# <!-- big-push:begin/end --> of benches/RESULTS.md.
#
# With COMPARE_BIN (a `meridian` binary of another build, e.g. before a change), each
# round also pushes to a node of that build (same data filesystem), shown beside.
#
#   benches/big_push.sh                 # 5 rounds of 10 s
#   RUNS=3 BENCH_SECS=5 benches/big_push.sh
#   COMPARE_BIN=/tmp/meridian-before COMPARE_LABEL="git abc123" benches/big_push.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_SECS="${BENCH_SECS:-10}"
RUNS="${RUNS:-5}"
SIZE="${SIZE:-256MiB}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/big_push.sh"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$RUNS" != 5 ]] && CMDLINE="RUNS=$RUNS $CMDLINE"

TMP="$(mktemp -d /tmp/meridian-big-push.XXXXXX)"
BENCH_NAME=big-push
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_node
PORT=5211
COMPARE_PORT=5212
COMPARE_BIN="${COMPARE_BIN:-}"
COMPARE_LABEL="${COMPARE_LABEL:-$COMPARE_BIN}"
require_free_ports "$PORT" 6211 "$COMPARE_PORT" 6212

# Every pushed blob is unique and stays: each round starts on empty data directories and
# removes them after (8 s at 1 GB/s is 8 GB).
start_nodes() {
  if [[ -n "$COMPARE_BIN" ]]; then
    start_single_node "$COMPARE_BIN" compare "$COMPARE_PORT" 6212
    COMPARE_PID=$NODE_PID
  fi
  start_single_node "$MERIDIAN" node "$PORT" 6211
  PUSH_PID=$NODE_PID
}
stop_nodes() {
  local pids=("$PUSH_PID")
  [[ -n "$COMPARE_BIN" ]] && pids+=("$COMPARE_PID")
  stop_pids "${pids[@]}"
  forget_pids "${pids[@]}"
  rm -rf "$TMP/node/data" "$TMP/compare/data"
}

MACHINE="$TMP/machine.jsonl"
PUSH="$TMP/push.jsonl"
COMPARE="$TMP/compare.jsonl"
: >"$MACHINE"
: >"$PUSH"
: >"$COMPARE"
for run in $(seq 1 "$RUNS"); do
  start_nodes
  log "round $run: machine (SHA-256 one core, direct-I/O writes + fdatasync in the data directory)"
  "$BENCH" machine --dir "$TMP/node/data/machine-baseline" --size "$SIZE" --rounds 5 --label "$run" >>"$MACHINE"
  tail -1 "$MACHINE" | jq -r '"  sha256 \(.sha256_mb_per_sec) MB/s  write \(.write_mb_per_sec) MB/s"' >&2
  log "round $run: blob-push $SIZE × 1 client"
  "$BENCH" blob-push --size "$SIZE" --concurrency 1 --url "http://127.0.0.1:$PORT" --duration "${BENCH_SECS}s" --warmup 1s \
    --server-pid "$PUSH_PID" --label "$run" --json >>"$PUSH"
  tail -1 "$PUSH" | jq -r '"  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  server CPU \(.server_cpu_pct) %"' >&2
  if [[ -n "$COMPARE_BIN" ]]; then
    log "round $run: blob-push $SIZE × 1 client to $COMPARE_LABEL"
    "$BENCH" blob-push --size "$SIZE" --concurrency 1 --url "http://127.0.0.1:$COMPARE_PORT" --duration "${BENCH_SECS}s" --warmup 1s \
      --server-pid "$COMPARE_PID" --label "$run" --json >>"$COMPARE"
    tail -1 "$COMPARE" | jq -r '"  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  server CPU \(.server_cpu_pct) %"' >&2
  fi
  stop_nodes
done

SECTION="$TMP/section.md"
{
  echo "<!-- big-push:begin -->"
  echo "## One big push against the machine's limit"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); the node and the client share it; data directory on $(df -T "$TMP" | awk 'NR==2 {print $2}')"
  echo "- Meridian: git $(git_rev); \`meridian serve\` single node, auth off"
  echo "- Command: \`$CMDLINE\`; per round: \`meridian-bench machine --size $SIZE --rounds 5\` (medians), then \`meridian-bench blob-push --size $SIZE --concurrency 1\` for ${BENCH_SECS} s"
  echo
  if [[ -n "$COMPARE_BIN" ]]; then
    echo "- Beside: the same push to \`meridian serve\` of $COMPARE_LABEL, in the same round"
    echo
  fi
  echo "| round | SHA-256, one core | direct-I/O write + fdatasync | limit (slower) | push, 1 client | push ÷ limit | server CPU | target |${COMPARE_BIN:+ $COMPARE_LABEL ÷ limit |}"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|${COMPARE_BIN:+---:|}"
  jq -s -r --slurpfile push "$PUSH" --slurpfile compare "$COMPARE" '
    .[] as $m
    | ($push[] | select(.label == $m.label)) as $p
    | ([$m.sha256_mb_per_sec, $m.write_mb_per_sec] | min) as $limit
    | ([$compare[] | select(.label == $m.label)] | first) as $c
    | "| \($m.label) | \($m.sha256_mb_per_sec) MB/s | \($m.write_mb_per_sec) MB/s | \($limit) MB/s | \($p.mb_per_sec) MB/s | \(($p.mb_per_sec / $limit * 100 | round) / 100) | \($p.server_cpu_pct) % | ≥ 0.75 |"
      + (if $c then " \($c.mb_per_sec) MB/s: \(($c.mb_per_sec / $limit * 100 | round) / 100) |" else "" end)
  ' "$MACHINE"
  echo
  raw_json_details "$MACHINE" "$PUSH" "$COMPARE"
  echo "<!-- big-push:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" big-push "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
