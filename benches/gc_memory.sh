#!/usr/bin/env bash
# Peak memory of one garbage collection over a large registry, measured on this machine
# (writes the section between <!-- gc-memory:begin/end --> of benches/RESULTS.md):
#
# 1. A one-node region is started once (to create its Raft state) and stopped.
# 2. `meridian-load` fills it with MANIFESTS image manifests over REPOS repositories,
#    each with its own small config blob and one 1 KiB layer of a shared pool of 1,000,
#    through the state machine's own PutManifest commands, then deletes every
#    DELETE_EVERY-th manifest, so their configs (and the layers only they used) are
#    garbage. Blob files and repository links are written as uploads would.
# 3. The node is started, builds its first Raft snapshot and is stopped; then started
#    again as a region that has been running would be. Once it is idle, its peak RSS
#    counter is reset
#    (/proc/PID/clear_refs) and `meridian admin gc run` collects and sweeps. The figure
#    is the node's peak RSS (VmHWM) over that run, and its RSS at rest before it.
#
# Raft snapshots are streamed to and from files (never whole in memory); the section
# reports the peak while the region starts and builds its first one apart.
#
#   benches/gc_memory.sh                               # 1,000,000 manifests, 1,000 repos
#   MANIFESTS=100000 benches/gc_memory.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MANIFESTS="${MANIFESTS:-1000000}"
REPOS="${REPOS:-1000}"
DELETE_EVERY="${DELETE_EVERY:-10}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/gc_memory.sh"
[[ "$MANIFESTS" != 1000000 ]] && CMDLINE="MANIFESTS=$MANIFESTS $CMDLINE"
[[ "$REPOS" != 1000 ]] && CMDLINE="REPOS=$REPOS $CMDLINE"
[[ "$DELETE_EVERY" != 10 ]] && CMDLINE="DELETE_EVERY=$DELETE_EVERY $CMDLINE"
ADMIN_TOKEN=bench-admin-token

TMP="$(mktemp -d /tmp/meridian-gc-memory.XXXXXX)"
BENCH_NAME=gc-memory
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
MERIDIAN="$ROOT/target/release/meridian"
LOAD="$ROOT/target/release/meridian-load"
require_free_ports 5311 6311
DATA="$TMP/data"
PID=""
start() {
  MERIDIAN_AUTH_ENABLED=false MERIDIAN_LOG_LEVEL=warn MERIDIAN_ADMIN_TOKEN=$ADMIN_TOKEN MERIDIAN_REGION=bench \
    MERIDIAN_GC_INTERVAL_SECS=0 MERIDIAN_GC_UPLOAD_GRACE_SECS=1 \
    "$MERIDIAN" serve --listen 127.0.0.1:5311 --grpc-listen 127.0.0.1:6311 --data-dir "$DATA" >>"$TMP/log" 2>&1 &
  PID=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:5311/readyz" 300 || { log "node not ready"; tail -20 "$TMP/log" >&2; exit 1; }
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

start
stop_pids "$PID"
forget_pids "$PID"

log "meridian-load: $MANIFESTS manifests over $REPOS repositories, deleting every ${DELETE_EVERY}th"
"$LOAD" --data-dir "$DATA" --region bench --manifests "$MANIFESTS" --repos "$REPOS" --delete-every "$DELETE_EVERY" >"$TMP/load.json"
cat "$TMP/load.json" >&2
files_before=$(find "$DATA/blobs" -type f | wc -l)
db_mb=$(du -sm "$DATA/db" | cut -f1)

# The first start after loading finds the state machine ahead of its log and builds a
# Raft snapshot; a node that has been running has one. Let it, then start again as a
# running region would.
start
log "waiting for the first Raft snapshot"
for _ in $(seq 1 600); do [[ -f "$DATA/snapshots/current.json" ]] && break; sleep 1; done
[[ -f "$DATA/snapshots/current.json" ]] || { log "no snapshot after 600 s"; exit 1; }
sleep 5
snapshot_peak=$(kib "$PID" VmHWM)
stop_pids "$PID"
forget_pids "$PID"
snapshot_mb=$(( $(du -b "$DATA"/snapshots/*.data | awk '{s += $1} END {print s}') / 1048576 ))

start
# Idle first: startup work (RocksDB opening its files, the first election, loading the
# snapshot) is not the collection's.
sleep 10
startup_peak=$(kib "$PID" VmHWM)
rss_rest=$(kib "$PID" VmRSS)
echo 5 >"/proc/$PID/clear_refs"
log "meridian admin gc run ($files_before blob files on disk, RSS at rest $((rss_rest / 1024)) MiB)"
started=$(date +%s.%N)
"$MERIDIAN" admin --addr http://127.0.0.1:6311 --token "$ADMIN_TOKEN" --json gc run >"$TMP/gc-run.json"
ended=$(date +%s.%N)
# A region also sweeps when it applies a collection; wait for that to end too.
sleep 5
peak=$(kib "$PID" VmHWM)
rss_after=$(kib "$PID" VmRSS)
files_after=$(find "$DATA/blobs" -type f | wc -l)
"$MERIDIAN" admin --addr http://127.0.0.1:6311 --token "$ADMIN_TOKEN" --json gc status >"$TMP/gc-status.json"
# The first thousand candidates are listed by name: the figures are enough here.
jq -c 'del(.candidates)' "$TMP/gc-run.json" >"$TMP/gc-run-figures.json"
cat "$TMP/gc-run-figures.json" >&2
stop_pids "$PID"
forget_pids "$PID"

collected=$(jq '.collected_blobs' "$TMP/gc-run.json")
wall=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
SECTION="$TMP/section.md"
{
  echo "<!-- gc-memory:begin -->"
  echo "## Garbage collection: peak memory over a large registry"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line)"
  echo "- Meridian: git $(git_rev); one-node region, auth off, \`gc.upload_grace_secs = 1\`, defaults otherwise"
  echo "- Command: \`$CMDLINE\`"
  echo "- State: $(jq -r '"\(.manifests) manifests in \(.repos) repositories (1,000 shared 1 KiB layers, a config blob each), \(.deleted) deleted; loaded in \(.seconds) s"' "$TMP/load.json"); $files_before blob files, RocksDB ${db_mb} MB"
  echo
  echo "| figure | measured | target |"
  echo "|---|---:|---:|"
  echo "| peak RSS of the node during one \`gc run\` (decision over every blob, $collected blobs collected, sweep of $files_before files; $wall s) | $((peak / 1024)) MiB | < 300 MiB |"
  echo "| RSS at rest before → after | $((rss_rest / 1024)) → $((rss_after / 1024)) MiB | — |"
  echo "| peak RSS of the first start after loading, which streams the state into a ${snapshot_mb} MiB Raft snapshot file | $((snapshot_peak / 1024)) MiB | — |"
  echo "| peak RSS of the next start, idle 10 s | $((startup_peak / 1024)) MiB | — |"
  echo "| blob files before → after | $files_before → $files_after | — |"
  echo
  echo "The decision reads \`sm_blobs\` a page of 1,000 candidates at a time and proposes each page before reading the next; the sweep walks \`blobs/\` one directory at a time and removes candidates in rounds of 20,000, reading the repositories' links once per round; these scans bypass RocksDB's block cache. Neither holds the store in memory, and neither do Raft snapshots: they are streamed to a file and from it, and restored in batches."
  echo
  raw_json_details "$TMP/load.json" "$TMP/gc-run-figures.json" "$TMP/gc-status.json"
  echo "<!-- gc-memory:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" gc-memory "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
