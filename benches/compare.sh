#!/usr/bin/env bash
# Compare Meridian against CNCF Distribution (docker-registry) on this machine
# with meridian-bench, and write the section between <!-- single:begin/end --> of
# benches/RESULTS.md (the other sections belong to cluster.sh and replication.sh).
#
#   benches/compare.sh                              # both targets, 10 s per scenario
#   BENCH_SECS=5 benches/compare.sh                 # shorter runs
#   TARGETS=distribution benches/compare.sh         # just one target
#
# Environment:
#   BENCH_SECS    measured seconds per scenario (default 10)
#   BENCH_WARMUP  warm-up seconds per scenario, not measured (default 1)
#   TARGETS       space-separated subset of "distribution meridian" (default both)
#   RESULTS_FILE  where to write the markdown (default benches/RESULTS.md)
#   RESULTS_NOTE  extra note put at the top of the results file
#   KEEP_TMP=1    keep the temp dir (server data, logs, raw JSON)
#
# Everything listens on 127.0.0.1 only; both servers are killed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
TARGETS="${TARGETS:-distribution meridian}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
DIST_ADDR=127.0.0.1:5501
MERIDIAN_ADDR=127.0.0.1:5502
CMDLINE="$(printf '%q ' "$0" "$@")"
[[ "${BENCH_SECS}" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "${TARGETS}" != "distribution meridian" ]] && CMDLINE="TARGETS=\"$TARGETS\" $CMDLINE"

for t in $TARGETS; do
  case "$t" in distribution|meridian) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
want() { [[ " $TARGETS " == *" $1 "* ]]; }

TMP="$(mktemp -d /tmp/meridian-compare.XXXXXX)"
BENCH_NAME=compare
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
DIST_PID=""
MERIDIAN_PID=""

# ---------------------------------------------------------------- build
PKGS=(-p meridian-benches)
want meridian && PKGS+=(-p meridian-node)
log "cargo build --release ${PKGS[*]}"
cargo build --release "${PKGS[@]}"
BENCH="$ROOT/target/release/meridian-bench"

# ---------------------------------------------------------------- distribution
if want distribution; then
  if [[ ! -x /usr/bin/docker-registry ]]; then
    log "installing docker-registry (CNCF Distribution) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker-registry >/dev/null
  fi
  mkdir -p "$TMP/distribution/data"
  cat >"$TMP/distribution/config.yml" <<EOF
version: 0.1
log:
  level: error
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/distribution/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $DIST_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
EOF
  log "starting Distribution on $DIST_ADDR"
  /usr/bin/docker-registry serve "$TMP/distribution/config.yml" >"$TMP/distribution/log" 2>&1 &
  DIST_PID=$!
  STARTED+=("$DIST_PID")
  if ! wait_http "http://$DIST_ADDR/v2/" 30; then
    log "Distribution did not come up; log:"; tail -20 "$TMP/distribution/log" >&2; exit 1
  fi
fi

# ---------------------------------------------------------------- meridian
if want meridian; then
  mkdir -p "$TMP/meridian/data"
  log "starting Meridian on $MERIDIAN_ADDR"
  # Auth off: this compares the storage and API paths with Distribution, which runs
  # without auth here too.
  MERIDIAN_AUTH_ENABLED=false "$ROOT/target/release/meridian" serve --listen "$MERIDIAN_ADDR" --data-dir "$TMP/meridian/data" \
    >"$TMP/meridian/log" 2>&1 &
  MERIDIAN_PID=$!
  STARTED+=("$MERIDIAN_PID")
  if ! wait_http "http://$MERIDIAN_ADDR/readyz" 60; then
    log "Meridian did not become ready (GET /readyz); log:"; tail -20 "$TMP/meridian/log" >&2; exit 1
  fi
fi

# ---------------------------------------------------------------- scenarios
SCENARIOS=(
  "blob-pull --size 64MiB --concurrency 4"
  "blob-pull --size 16KiB --concurrency 1"
  "blob-push --size 256MiB --concurrency 1"
  "blob-push --size 1MiB --concurrency 8"
  "image-push --size 64KiB --layers 3 --concurrency 8"
  "manifest-get --concurrency 16"
)

FAILED=()
REPORT_ARGS=()
for t in $TARGETS; do
  case "$t" in
    distribution) url="http://$DIST_ADDR"; pid=$DIST_PID; name=Distribution ;;
    meridian) url="http://$MERIDIAN_ADDR"; pid=$MERIDIAN_PID; name=Meridian ;;
  esac
  out="$TMP/$t.jsonl"
  : >"$out"
  for s in "${SCENARIOS[@]}"; do
    log "$name: $s (${BENCH_SECS}s + ${BENCH_WARMUP}s warm-up)"
    # shellcheck disable=SC2086
    if ! "$BENCH" $s --url "$url" --duration "${BENCH_SECS}s" --warmup "${BENCH_WARMUP}s" \
        --server-pid "$pid" --label "$t" --json >>"$out" 2>>"$TMP/$t.stderr"; then
      FAILED+=("$name: $s")
      log "  FAILED: $(tail -1 "$TMP/$t.stderr")"
    fi
    tail -1 "$out" | jq -r '"  \(.ops_per_sec) ops/s  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2 2>/dev/null || true
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name died; log tail:"; tail -20 "$TMP/$t/log" >&2
      FAILED+=("$name: server died")
      break
    fi
  done
  REPORT_ARGS+=(--target "$name=$out")
done

# ---------------------------------------------------------------- report
dist_version="$(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}' || true)"
notes=()
[[ -n "${RESULTS_NOTE:-}" ]] && notes+=("$RESULTS_NOTE")
if (( BENCH_SECS < 10 )); then notes+=("Preliminary: short runs (${BENCH_SECS} s per scenario).") ; fi
[[ "$TARGETS" != "distribution meridian" ]] && notes+=("Only these targets ran: $TARGETS.")
(( ${#FAILED[@]} )) && notes+=("Failed runs: $(IFS=';'; echo "${FAILED[*]}").")

SECTION="$TMP/section.md"
{
  echo "<!-- single:begin -->"
  echo "## One node: Meridian vs. CNCF Distribution"
  echo
  for n in "${notes[@]}"; do echo "> **$n**"; echo ">"; done
  (( ${#notes[@]} )) && echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); client and servers share the machine"
  echo "- Distribution: docker-registry ${dist_version:-?}, filesystem storage, in-memory blob descriptor cache, access log off"
  echo "- Meridian: \`meridian serve\` single node, git $(git_rev)"
  echo "- Command: \`${CMDLINE% }\`"
  echo "- Each scenario: ${BENCH_WARMUP} s warm-up, then ${BENCH_SECS} s measured; HTTP/1.1 over 127.0.0.1; MB = 10^6 bytes of payload"
  echo
  "$BENCH" report "${REPORT_ARGS[@]}"
  echo
  echo "Throughput ratio = Meridian ops/s ÷ Distribution ops/s (> 1 means Meridian is faster)."
  echo "Latencies are per op: one blob upload (POST + PUT), one blob download (whole body),"
  echo "one image push (3 layers + config + manifest, sequential), or one manifest GET."
  echo "When a client CPU figure approaches the server's, that row is partly client-bound: client and server share the same 2 cores."
  echo
  files=(); for t in $TARGETS; do files+=("$TMP/$t.jsonl"); done
  raw_json_details "${files[@]}"
  echo "<!-- single:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" single "$SECTION"
log "wrote $RESULTS_FILE"
cat "$RESULTS_FILE" >&2
(( ${#FAILED[@]} == 0 ))
