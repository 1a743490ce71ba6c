#!/usr/bin/env bash
# A region of two Meridian nodes on one Garage bucket prefix against one node: blob pulls
# through node A alone, then spread over A and B (client i → node i mod 2, as a load
# balancer would). Both nodes are members of one cluster (A bootstraps, B joins it as a
# second node of region eu). Writes the section between <!-- region-nodes:begin/end -->
# of benches/RESULTS.md.
#
#   benches/region_nodes.sh                 # 10 s per scenario
#   BENCH_SECS=5 benches/region_nodes.sh    # shorter runs
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
NODE_A=127.0.0.1:5531
NODE_B=127.0.0.1:5532
TOKEN="bench-admin-token"

TMP="$(mktemp -d /tmp/meridian-region-nodes.XXXXXX)"
BENCH_NAME=region-nodes
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

require_free_ports 3910 3911 3912 5531 5532 5631 5632
if [[ ! -x "$GARAGE_BIN" ]]; then
  log "no Garage at $GARAGE_BIN: run deploy/install-deps.sh --test (builds it) or set GARAGE_BIN"
  exit 1
fi

log "cargo build --release -p meridian-node -p meridian-benches"
cargo build --release -p meridian-node -p meridian-benches
BENCH="$ROOT/target/release/meridian-bench"

# ---------------------------------------------------------------- garage
start_garage

# ---------------------------------------------------------------- the region's two nodes
declare -A NODE_PID
start_node() { # name node_id http_addr join
  local name="$1" id="$2" addr="$3" join="$4"
  mkdir -p "$TMP/$name/data"
  env MERIDIAN_AUTH_ENABLED=false MERIDIAN_REGION=eu "MERIDIAN_NODE_ID=$id" "MERIDIAN_ADMIN_TOKEN=$TOKEN" \
    ${join:+"MERIDIAN_JOIN=$join"} \
    MERIDIAN_STORAGE_KIND=s3 MERIDIAN_STORAGE_BUCKET=meridian MERIDIAN_STORAGE_PREFIX=eu \
    "MERIDIAN_STORAGE_ENDPOINT=http://$GARAGE_S3" MERIDIAN_STORAGE_REGION=garage MERIDIAN_STORAGE_PATH_STYLE=true \
    "MERIDIAN_STORAGE_ACCESS_KEY_ID=$KEY_ID" "MERIDIAN_STORAGE_SECRET_ACCESS_KEY=$SECRET" \
    "$ROOT/target/release/meridian" serve --listen "$addr" --grpc-listen "127.0.0.1:$((${addr##*:} + 100))" \
    --data-dir "$TMP/$name/data" >"$TMP/$name/log" 2>&1 &
  NODE_PID[$name]=$!
  STARTED+=("$!")
  if ! wait_http "http://$addr/readyz" 60; then
    log "node $name did not become ready; log:"; tail -20 "$TMP/$name/log" >&2; exit 1
  fi
}
log "starting node A (eu, bootstraps) on $NODE_A"
start_node a 1 "$NODE_A" ""
log "starting node B (eu, joins A) on $NODE_B"
start_node b 2 "$NODE_B" "http://127.0.0.1:$((${NODE_A##*:} + 100))"
"$ROOT/target/release/meridian" admin --addr "http://127.0.0.1:$((${NODE_A##*:} + 100))" --token "$TOKEN" region list >&2

# ---------------------------------------------------------------- scenarios
SCENARIOS=(
  "--size 64MiB --concurrency 4"
  "--size 1MiB --concurrency 8"
)
declare -A URLS=([one]="http://$NODE_A" [two]="http://$NODE_A,http://$NODE_B")
declare -A NAME=([one]="one node" [two]="two nodes")
# CPU of Garage and each node over a run (warm-up included): utime + stime ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS_PER_SEC="$(getconf CLK_TCK)"
CPU_TABLE="$TMP/cpu.md"
: >"$CPU_TABLE"
FAILED=()
REPORT_ARGS=()
for t in one two; do
  out="$TMP/$t.jsonl"
  : >"$out"
  for s in "${SCENARIOS[@]}"; do
    log "${NAME[$t]}: blob-pull $s"
    before=("$(cpu_ticks "$GARAGE_PID")" "$(cpu_ticks "${NODE_PID[a]}")" "$(cpu_ticks "${NODE_PID[b]}")")
    started="$(date +%s.%N)"
    # shellcheck disable=SC2086
    if ! "$BENCH" blob-pull $s --url "http://$NODE_A" --pull-urls "${URLS[$t]}" --duration "${BENCH_SECS}s" \
        --warmup "${BENCH_WARMUP}s" --label "$t" --json >>"$out" 2>>"$TMP/$t.stderr"; then
      FAILED+=("${NAME[$t]}: $s")
      log "  FAILED: $(tail -1 "$TMP/$t.stderr")"
    fi
    after=("$(cpu_ticks "$GARAGE_PID")" "$(cpu_ticks "${NODE_PID[a]}")" "$(cpu_ticks "${NODE_PID[b]}")")
    elapsed="$(awk -v t0="$started" -v t1="$(date +%s.%N)" 'BEGIN { print t1 - t0 }')"
    pcts=()
    for k in 0 1 2; do
      pcts+=("$(awk -v a="${before[$k]}" -v b="${after[$k]}" -v s="$elapsed" -v hz="$TICKS_PER_SEC" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / s }')")
    done
    client="$(tail -1 "$out" | jq -r '.client_cpu_pct // "?"' 2>/dev/null || echo '?')"
    echo "| ${s/--size /} | ${NAME[$t]} | ${pcts[0]}% | ${pcts[1]}% | ${pcts[2]}% | ${client}% |" >>"$CPU_TABLE"
    tail -1 "$out" | jq -r '"  \(.ops_per_sec) ops/s  \(.mb_per_sec) MB/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2 2>/dev/null || true
  done
  REPORT_ARGS+=(--target "${NAME[$t]}=$out")
done

# ---------------------------------------------------------------- report
SECTION="$TMP/section.md"
{
  echo "<!-- region-nodes:begin -->"
  echo "## A region of two nodes on one bucket vs. one node (blob pulls)"
  echo
  (( ${#FAILED[@]} )) && { echo "> **Failed runs: $(IFS=';'; echo "${FAILED[*]}").**"; echo; }
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); client, both nodes and Garage share the machine"
  echo "- Meridian: two \`meridian serve\` nodes of region eu in one cluster, one Garage prefix, auth off, git $(git_rev)"
  echo "- Garage: ${garage_version:-?}, single node, sqlite metadata, S3 API on loopback"
  echo "- Command: \`${CMDLINE% }\`"
  echo "- Each scenario: ${BENCH_WARMUP} s warm-up, then ${BENCH_SECS} s measured; \"two nodes\" sends client i to node i mod 2"
  echo
  "$BENCH" report "${REPORT_ARGS[@]}"
  echo
  echo "CPU over each run (100% = one core; the machine has two):"
  echo
  echo "| scenario | region | Garage | node A | node B | client |"
  echo "|---|---|---:|---:|---:|---:|"
  cat "$CPU_TABLE"
  echo
  echo "What bounds it here: the machine, not the node. Every byte pulled is read from"
  echo "Garage (which hashes each block it serves) and passed through a node to the client,"
  echo "all on the same two cores, which the one-node runs already fill. A second node adds"
  echo "a process competing for those cores, not capacity, so this machine cannot show the"
  echo "scaling a second node gives when it runs on its own machine; the figure to expect"
  echo "there is the one-node rate per node, bounded by the store's and the network's rate."
  echo
  raw_json_details "$TMP/one.jsonl" "$TMP/two.jsonl"
  echo "<!-- region-nodes:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" region-nodes "$SECTION"
log "wrote $RESULTS_FILE"
(( ${#FAILED[@]} == 0 ))
