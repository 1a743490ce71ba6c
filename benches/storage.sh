#!/usr/bin/env bash
# Blob stores side by side: one Meridian node with its blobs on the filesystem, one with
# them in Garage (S3-compatible, single node, on the same machine) served through the
# node, and one on Garage answering pulls with 307 to a presigned URL (`storage.redirect`).
# Writes the section between <!-- storage:begin/end --> of benches/RESULTS.md.
#
#   benches/storage.sh                 # 10 s per scenario
#   BENCH_SECS=5 benches/storage.sh    # shorter runs
#
# Environment: BENCH_SECS (default 10), BENCH_WARMUP (default 1), RESULTS_FILE,
# KEEP_TMP=1 (keep data and logs), GARAGE_BIN (default target/test-tools/bin/garage, which
# `deploy/install-deps.sh --test` builds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
GARAGE_BIN="${GARAGE_BIN:-$ROOT/target/test-tools/bin/garage}"
CMDLINE="$(printf '%q ' "$0" "$@")"
[[ "${BENCH_SECS}" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"

GARAGE_S3=127.0.0.1:3910
GARAGE_RPC=127.0.0.1:3911
GARAGE_ADMIN=127.0.0.1:3912
declare -A ADDR=([fs]=127.0.0.1:5521 [s3]=127.0.0.1:5522 [s3-redirect]=127.0.0.1:5523)
declare -A NAME=([fs]="filesystem" [s3]="Garage (through the node)" [s3-redirect]="Garage (redirect)")
TARGETS=(fs s3 s3-redirect)

TMP="$(mktemp -d /tmp/meridian-storage.XXXXXX)"
BENCH_NAME=storage
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

require_free_ports 3910 3911 3912 5521 5522 5523
if [[ ! -x "$GARAGE_BIN" ]]; then
  log "no Garage at $GARAGE_BIN: run deploy/install-deps.sh --test (builds it) or set GARAGE_BIN"
  exit 1
fi

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
BENCH="$ROOT/target/release/meridian-bench"

# ---------------------------------------------------------------- garage
start_garage

# ---------------------------------------------------------------- meridian nodes
declare -A PID
for t in "${TARGETS[@]}"; do
  mkdir -p "$TMP/$t/data"
  env_args=(MERIDIAN_AUTH_ENABLED=false)
  if [[ "$t" != fs ]]; then
    env_args+=(MERIDIAN_STORAGE_KIND=s3 MERIDIAN_STORAGE_BUCKET=meridian "MERIDIAN_STORAGE_PREFIX=$t"
      "MERIDIAN_STORAGE_ENDPOINT=http://$GARAGE_S3" MERIDIAN_STORAGE_REGION=garage MERIDIAN_STORAGE_PATH_STYLE=true
      "MERIDIAN_STORAGE_ACCESS_KEY_ID=$KEY_ID" "MERIDIAN_STORAGE_SECRET_ACCESS_KEY=$SECRET")
  fi
  [[ "$t" == s3-redirect ]] && env_args+=(MERIDIAN_STORAGE_REDIRECT=true)
  log "starting Meridian ($t) on ${ADDR[$t]}"
  env "${env_args[@]}" "$ROOT/target/release/meridian" serve --listen "${ADDR[$t]}" --grpc-listen "127.0.0.1:$((${ADDR[$t]##*:} + 100))" \
    --data-dir "$TMP/$t/data" >"$TMP/$t/log" 2>&1 &
  PID[$t]=$!
  STARTED+=("${PID[$t]}")
  if ! wait_http "http://${ADDR[$t]}/readyz" 60; then
    log "Meridian ($t) did not become ready; log:"; tail -20 "$TMP/$t/log" >&2; exit 1
  fi
done

# ---------------------------------------------------------------- scenarios
SCENARIOS=(
  "blob-push --size 256MiB --concurrency 1"
  "blob-push --size 1MiB --concurrency 8"
  "blob-pull --size 64MiB --concurrency 4"
)
# Garage's CPU over each run (it is not the benchmark's server process, so the report's
# CPU columns leave it out): utime + stime ticks before and after, over the wall time.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS_PER_SEC="$(getconf CLK_TCK)"
GARAGE_CPU="$TMP/garage-cpu.md"
: >"$GARAGE_CPU"

FAILED=()
REPORT_ARGS=()
for t in "${TARGETS[@]}"; do
  out="$TMP/$t.jsonl"
  : >"$out"
  for s in "${SCENARIOS[@]}"; do
    # The pushes are the same with and without redirect: measured once.
    [[ "$t" == s3-redirect && "$s" == blob-push* ]] && continue
    log "${NAME[$t]}: $s"
    ticks_before="$(cpu_ticks "$GARAGE_PID")"
    started="$(date +%s.%N)"
    # shellcheck disable=SC2086
    if ! "$BENCH" $s --url "http://${ADDR[$t]}" --duration "${BENCH_SECS}s" --warmup "${BENCH_WARMUP}s" \
        --server-pid "${PID[$t]}" --label "$t" --json >>"$out" 2>>"$TMP/$t.stderr"; then
      FAILED+=("${NAME[$t]}: $s")
      log "  FAILED: $(tail -1 "$TMP/$t.stderr")"
    fi
    if [[ "$t" != fs ]]; then
      pct="$(awk -v a="$ticks_before" -v b="$(cpu_ticks "$GARAGE_PID")" -v t0="$started" -v t1="$(date +%s.%N)" -v hz="$TICKS_PER_SEC" \
        'BEGIN { printf "%.0f", 100 * (b - a) / hz / (t1 - t0) }')"
      label="${s%% --concurrency*}"
      echo "| ${label/--size /} × ${s##*--concurrency } | ${NAME[$t]} | ${pct}% |" >>"$GARAGE_CPU"
    fi
    tail -1 "$out" | jq -r '"  \(.ops_per_sec) ops/s  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2 2>/dev/null || true
  done
  REPORT_ARGS+=(--target "${NAME[$t]}=$out")
done

# ---------------------------------------------------------------- report
SECTION="$TMP/section.md"
{
  echo "<!-- storage:begin -->"
  echo "## Blob stores: filesystem vs. S3 (Garage)"
  echo
  (( ${#FAILED[@]} )) && { echo "> **Failed runs: $(IFS=';'; echo "${FAILED[*]}").**"; echo; }
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); client, nodes and Garage share the machine"
  echo "- Meridian: \`meridian serve\` single node per store, auth off, git $(git_rev)"
  echo "- Garage: ${garage_version:-?}, single node, sqlite metadata, data on the same disk, S3 API on loopback"
  echo "- Command: \`${CMDLINE% }\`"
  echo "- Each scenario: ${BENCH_WARMUP} s warm-up, then ${BENCH_SECS} s measured; MB = 10^6 bytes of payload"
  echo
  "$BENCH" report "${REPORT_ARGS[@]}"
  echo
  echo "Server CPU above is the Meridian node's alone. Garage's, over each whole run (warm-up included):"
  echo
  echo "| scenario | through | Garage CPU |"
  echo "|---|---|---:|"
  cat "$GARAGE_CPU"
  echo
  echo "What bounds the Garage figures: the two cores. Garage hashes every 1 MiB block it"
  echo "stores or serves, writes it and records it in its metadata database; with the node it"
  echo "fills the machine, and takes most of it. A push also pays its commit before the 201:"
  echo "the blob is received and hashed into the node's staging area as on the filesystem,"
  echo "then uploaded (8 MiB parts, four in flight). A redirected pull takes the node out of the"
  echo "byte path (its CPU near zero), so Garage gets the cores the node was using."
  echo
  files=(); for t in "${TARGETS[@]}"; do files+=("$TMP/$t.jsonl"); done
  raw_json_details "${files[@]}"
  echo "<!-- storage:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" storage "$SECTION"
log "wrote $RESULTS_FILE"
(( ${#FAILED[@]} == 0 ))
