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
#   benches/big_push.sh                 # 5 rounds of 10 s
#   RUNS=3 BENCH_SECS=5 benches/big_push.sh
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

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
MERIDIAN="$ROOT/target/release/meridian"
BENCH="$ROOT/target/release/meridian-bench"
PORT=5211
require_free_ports "$PORT" 6211

mkdir -p "$TMP/node"
MERIDIAN_AUTH_ENABLED=false MERIDIAN_LOG_LEVEL=warn \
  "$MERIDIAN" serve --listen "127.0.0.1:$PORT" --grpc-listen 127.0.0.1:6211 --data-dir "$TMP/node/data" >"$TMP/node/log" 2>&1 &
NODE_PID=$!
STARTED+=("$NODE_PID")
wait_http "http://127.0.0.1:$PORT/readyz" 60 || { log "node not ready"; tail -20 "$TMP/node/log" >&2; exit 1; }

MACHINE="$TMP/machine.jsonl"
PUSH="$TMP/push.jsonl"
: >"$MACHINE"
: >"$PUSH"
for run in $(seq 1 "$RUNS"); do
  log "round $run: machine (SHA-256 one core, direct-I/O writes + fdatasync in the data directory)"
  "$BENCH" machine --dir "$TMP/node/data/machine-baseline" --size "$SIZE" --rounds 3 --label "$run" >>"$MACHINE"
  tail -1 "$MACHINE" | jq -r '"  sha256 \(.sha256_mb_per_sec) MB/s  write \(.write_mb_per_sec) MB/s"' >&2
  log "round $run: blob-push $SIZE × 1 client"
  "$BENCH" blob-push --size "$SIZE" --concurrency 1 --url "http://127.0.0.1:$PORT" --duration "${BENCH_SECS}s" --warmup 1s \
    --server-pid "$NODE_PID" --label "$run" --json >>"$PUSH"
  tail -1 "$PUSH" | jq -r '"  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  server CPU \(.server_cpu_pct) %"' >&2
done

SECTION="$TMP/section.md"
{
  echo "<!-- big-push:begin -->"
  echo "## One big push against the machine's limit"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); the node and the client share it; data directory on $(df -T "$TMP" | awk 'NR==2 {print $2}')"
  echo "- Meridian: git $(git_rev); \`meridian serve\` single node, auth off"
  echo "- Command: \`$CMDLINE\`; per round: \`meridian-bench machine --size $SIZE --rounds 3\` (medians), then \`meridian-bench blob-push --size $SIZE --concurrency 1\` for ${BENCH_SECS} s"
  echo
  echo "| round | SHA-256, one core | direct-I/O write + fdatasync | limit (slower) | push, 1 client | push ÷ limit | server CPU | target |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  jq -s -r --slurpfile push "$PUSH" '
    .[] as $m
    | ($push[] | select(.label == $m.label)) as $p
    | ([$m.sha256_mb_per_sec, $m.write_mb_per_sec] | min) as $limit
    | "| \($m.label) | \($m.sha256_mb_per_sec) MB/s | \($m.write_mb_per_sec) MB/s | \($limit) MB/s | \($p.mb_per_sec) MB/s | \(($p.mb_per_sec / $limit * 100 | round) / 100) | \($p.server_cpu_pct) % | ≥ 0.75 |"
  ' "$MACHINE"
  echo
  raw_json_details "$MACHINE" "$PUSH"
  echo "<!-- big-push:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" big-push "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
