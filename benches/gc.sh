#!/usr/bin/env bash
# Garbage collection, measured on this machine (writes the section between
# <!-- gc:begin/end --> of benches/RESULTS.md):
#
# 1. What it costs pushes: image push (3 × 64 KiB + config + manifest) × 8 clients against
#    a node running retention and collection every 10 s (gc.interval_secs = 10; a policy
#    on bench/* keeps the last 100 tags and deletes untagged images after 5 s, so there
#    is something to delete and collect) and one that runs neither, side by side,
#    alternating off/on ROUNDS times; ratio mean(on) ÷ mean(off) ops/s, target ≥ 0.95.
# 2. Sweep rate: SWEEP_BLOBS unreferenced blobs (1 KiB uploads no manifest references)
#    in one region, then `meridian admin gc run` once they are past the grace; blobs/s
#    and bytes/s of the region's sweep (its own report). Target ≥ 1,000 blobs/s.
#
#   benches/gc.sh                          # 10 s per run, 2 rounds, 100,000 blobs
#   BENCH_SECS=5 SWEEP_BLOBS=20000 benches/gc.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
ROUNDS="${ROUNDS:-2}"
SWEEP_BLOBS="${SWEEP_BLOBS:-100000}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/gc.sh"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$ROUNDS" != 2 ]] && CMDLINE="ROUNDS=$ROUNDS $CMDLINE"
[[ "$SWEEP_BLOBS" != 100000 ]] && CMDLINE="SWEEP_BLOBS=$SWEEP_BLOBS $CMDLINE"
ADMIN_TOKEN=bench-admin-token

TMP="$(mktemp -d /tmp/meridian-gc-bench.XXXXXX)"
BENCH_NAME=gc
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
MERIDIAN="$ROOT/target/release/meridian"
BENCH="$ROOT/target/release/meridian-bench"
require_free_ports 5301 5302 5303 6301 6302 6303

declare -A PID
start() { # name port grpc_port gc_interval_secs
  mkdir -p "$TMP/$1"
  MERIDIAN_AUTH_ENABLED=false MERIDIAN_LOG_LEVEL=warn MERIDIAN_ADMIN_TOKEN=$ADMIN_TOKEN \
    MERIDIAN_GC_INTERVAL_SECS=$4 MERIDIAN_GC_UPLOAD_GRACE_SECS=1 \
    "$MERIDIAN" serve --listen "127.0.0.1:$2" --grpc-listen "127.0.0.1:$3" --data-dir "$TMP/$1/data" >"$TMP/$1/log" 2>&1 &
  PID[$1]=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:$2/readyz" 60 || { log "$1 not ready"; tail -20 "$TMP/$1/log" >&2; exit 1; }
}

# ---------------------------------------------------------------- 1. push overhead
start off 5301 6301 0
start on 5302 6302 10
"$MERIDIAN" admin --addr http://127.0.0.1:6302 --token "$ADMIN_TOKEN" retention set bench --repos 'bench/*' \
  --keep-last 100 --untagged-after 5s >&2
OUT="$TMP/results.jsonl"
: >"$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    port=5301
    [[ "$mode" == on ]] && port=5302
    log "image-push × 8, gc $mode, round $round"
    "$BENCH" image-push --size 64KiB --layers 3 --concurrency 8 --url "http://127.0.0.1:$port" \
      --duration "${BENCH_SECS}s" --warmup "${BENCH_WARMUP}s" --server-pid "${PID[$mode]}" --label "$mode" --json >>"$OUT"
    tail -1 "$OUT" | jq -r '"  \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms  errors \(.errors)"' >&2
  done
done
# What retention and collection did meanwhile on the busy node: tags left of all pushed,
# and blob files left on its disk.
on_pushed=$(jq -s 'map(select(.label == "on") | .ops) | add' "$OUT")
on_tags=$(curl -fsS "http://127.0.0.1:5302/v2/bench/image-push/tags/list?n=100000" | jq '.tags | length')
on_files=$(find "$TMP/on/data/blobs" -type f | wc -l)
stop_pids "${PID[off]}" "${PID[on]}"
forget_pids "${PID[off]}" "${PID[on]}"

# ---------------------------------------------------------------- 2. sweep rate
start sweep 5303 6303 0
log "uploading $SWEEP_BLOBS unreferenced 1 KiB blobs"
"$BENCH" blob-push --size 1KiB --concurrency 8 --ops "$SWEEP_BLOBS" --url "http://127.0.0.1:5303" --label upload --json >"$TMP/upload.json"
jq -r '"  \(.ops) uploads, \(.ops_per_sec) ops/s, errors \(.errors)"' "$TMP/upload.json" >&2
on_disk=$(find "$TMP/sweep/data/blobs" -type f | wc -l)
sleep 2.5
log "meridian admin gc run ($on_disk blob files on disk)"
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/${PID[sweep]}/status")
"$MERIDIAN" admin --addr http://127.0.0.1:6303 --token "$ADMIN_TOKEN" --json gc run >"$TMP/gc-run.json"
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/${PID[sweep]}/status")
left=$(find "$TMP/sweep/data/blobs" -type f | wc -l)
jq '.sweep' "$TMP/gc-run.json" >&2

mean() { jq -s "map(select(.label == \"$1\") | .ops_per_sec) | add / length" "$OUT"; }
removed=$(jq '.sweep.blobs_removed' "$TMP/gc-run.json")
freed=$(jq '.sweep.bytes_freed' "$TMP/gc-run.json")
ms=$(jq '.sweep.duration_ms' "$TMP/gc-run.json")
SECTION="$TMP/section.md"
{
  echo "<!-- gc:begin -->"
  echo "## Garbage collection"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); nodes and the client share it"
  echo "- Meridian: git $(git_rev); single-region nodes, auth off, \`gc.upload_grace_secs = 1\`"
  echo "- Command: \`$CMDLINE\`"
  echo
  echo "| figure | measured | target |"
  echo "|---|---:|---:|"
  off=$(mean off); on=$(mean on)
  echo "| image push (3 × 64 KiB + config + manifest) × 8 clients, with retention and collection every 10 s ÷ neither ($(printf '%.0f' "$on") vs $(printf '%.0f' "$off") ops/s, ${BENCH_SECS} s runs alternating, $ROUNDS rounds; on the busy node $on_tags of $on_pushed pushed tags and $on_files blob files were left at the end) | $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }') | ≥ 0.95 |"
  echo "| sweep: unreferenced blobs removed per second ($removed of $on_disk files, $(awk -v b="$freed" 'BEGIN { printf "%.1f MB", b / 1e6 }') in $ms ms; $left files left) | $(awk -v n="$removed" -v m="$ms" 'BEGIN { printf "%.0f", n * 1000 / (m > 0 ? m : 1) }') blobs/s ($(awk -v b="$freed" -v m="$ms" 'BEGIN { printf "%.1f", b / 1e3 / (m > 0 ? m : 1) }') MB/s) | ≥ 1,000 blobs/s |"
  echo "| node RSS before → after the sweep | $((rss_before / 1024)) → $((rss_after / 1024)) MiB | — |"
  echo
  echo "The sweep walks \`blobs/\` once, checks each file against the cluster state (one RocksDB point read) and its time, and unlinks it under the pin lock together with its repository links (one unsynced RocksDB batch per blob). Uploads of 1 KiB blobs are fsync-bound (\`$(jq -r .ops_per_sec "$TMP/upload.json")\` ops/s here)."
  echo
  raw_json_details "$OUT" "$TMP/gc-run.json"
  echo "<!-- gc:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" gc "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
