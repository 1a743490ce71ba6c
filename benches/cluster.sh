#!/usr/bin/env bash
# Three-region Meridian benchmark on this machine: three `meridian serve` processes
# (regions us, eu, ap) form one Raft group over gRPC; every inter-node link goes
# through a `fault-proxy` that adds a one-way delay, so the regions are DELAY ms
# apart each way (2 × DELAY round trip). Measures manifest PUT (a Raft commit) at
# the leader and at a follower (forwarded to the leader) and manifest GET (local
# state) at both, then writes the section "## Three regions (Raft over gRPC)" of
# benches/RESULTS.md between <!-- cluster:begin --> and <!-- cluster:end -->
# (reruns replace it; the rest of the file is kept).
#
#   benches/cluster.sh                     # delays 0 and 25 ms one way, 10 s per scenario
#   BENCH_SECS=5 benches/cluster.sh        # shorter runs
#   DELAYS="0 25 50" benches/cluster.sh    # other one-way delays (ms)
#
# Environment:
#   BENCH_SECS    measured seconds per scenario (default 10)
#   BENCH_WARMUP  warm-up seconds per scenario, not measured (default 1)
#   DELAYS        space-separated one-way inter-region delays in ms (default "0 25")
#   RESULTS_FILE  markdown file to update (default benches/RESULTS.md)
#   RESULTS_NOTE  extra note put at the top of the section
#   KEEP_TMP=1    keep the temp dir (node data, logs, configs, raw JSON)
#
# Ports (127.0.0.1 only): HTTP 5001-5003, gRPC 6001-6003, fault proxies 7001-7003.
# The script refuses to start if any of them is taken (e.g. by deploy/local-cluster.sh).
# It kills only the processes it started (trap on exit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_SECS="${BENCH_SECS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
DELAYS="${DELAYS:-0 25}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
TOKEN=bench
REGIONS=(us eu ap)   # node ids 1, 2, 3
CMDLINE="$(printf '%q ' "benches/cluster.sh" "$@")"
[[ "$BENCH_SECS" != 10 ]] && CMDLINE="BENCH_SECS=$BENCH_SECS $CMDLINE"
[[ "$BENCH_WARMUP" != 1 ]] && CMDLINE="BENCH_WARMUP=$BENCH_WARMUP $CMDLINE"
[[ "$DELAYS" != "0 25" ]] && CMDLINE="DELAYS=\"$DELAYS\" $CMDLINE"

for d in $DELAYS; do
  [[ "$d" =~ ^[0-9]+$ ]] || { echo "DELAYS must be whole milliseconds, got: $d" >&2; exit 2; }
done

TMP="$(mktemp -d /tmp/meridian-cluster-bench.XXXXXX)"
BENCH_NAME=cluster
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# ---------------------------------------------------------------- build
build_with_proxy

admin() { "$MERIDIAN" admin --addr 127.0.0.1:6001 --token "$TOKEN" "$@"; }

# ---------------------------------------------------------------- cluster
NODE_PIDS=()
PROXY_PIDS=()

start_cluster() { # delay_ms dir
  local delay=$1 dir=$2 i r p
  require_free_ports 5001 5002 5003 6001 6002 6003 7001 7002 7003
  NODE_PIDS=()
  PROXY_PIDS=()
  for i in 1 2 3; do
    "$PROXY" --listen "127.0.0.1:700$i" --upstream "127.0.0.1:600$i" --delay-ms "$delay" \
      >"$dir/proxy$i.log" 2>&1 &
    PROXY_PIDS+=($!)
    STARTED+=($!)
  done
  for i in 1 2 3; do
    r=${REGIONS[$((i - 1))]}
    mkdir -p "$dir/$r"
    {
      echo "region = \"$r\""
      echo "node_id = $i"
      echo "listen = \"127.0.0.1:500$i\""
      echo "grpc_listen = \"127.0.0.1:600$i\""
      echo "# other nodes reach this one through its fault proxy"
      echo "advertise_grpc_addr = \"127.0.0.1:700$i\""
      echo "data_dir = \"$dir/$r\""
      if ((i == 1)); then echo "join = []"; else echo "join = [\"http://127.0.0.1:7001\"]"; fi
      echo "admin_token = \"$TOKEN\""
      echo "log_level = \"warn\""
      echo
      echo "[raft]"
      echo "heartbeat_ms = 250"
      echo "election_timeout_min_ms = 1500"
      echo "election_timeout_max_ms = 3000"
    } >"$dir/$r.toml"
  done
  # Node 1 bootstraps the cluster; the others join it, so it must be up first.
  for i in 1 2 3; do
    r=${REGIONS[$((i - 1))]}
    MERIDIAN_AUTH_ENABLED=false "$MERIDIAN" serve --config "$dir/$r.toml" >"$dir/$r.log" 2>&1 &
    NODE_PIDS+=($!)
    STARTED+=($!)
    if ((i == 1)); then wait_ready 1 "$dir"; fi
  done
  wait_ready 2 "$dir"
  wait_ready 3 "$dir"
  wait_members "$dir"
}

wait_ready() { # node_index dir
  local i=$1 dir=$2 r=${REGIONS[$(($1 - 1))]} deadline=$((SECONDS + READY_TIMEOUT))
  until [[ "$(http_code "http://127.0.0.1:500$i/readyz")" == 200 ]]; do
    if ! kill -0 "${NODE_PIDS[$((i - 1))]}" 2>/dev/null; then
      log "$r exited; log tail:"; tail -20 "$dir/$r.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
      log "$r: /readyz not 200 after ${READY_TIMEOUT}s; log tail:"; tail -20 "$dir/$r.log" >&2; exit 1
    fi
    sleep 0.2
  done
  log "$r ready (http://127.0.0.1:500$i)"
}

# Waits until all three regions are voters with one leader; sets LEADER / FOLLOWER (indexes).
LEADER=""
FOLLOWER=""
wait_members() { # dir
  local dir=$1 out deadline=$((SECONDS + READY_TIMEOUT)) leader voters name i
  while :; do
    out="$(admin --json region list 2>/dev/null || true)"
    leader="$(jq -r '[.regions[]? | select(.role == "leader") | .name] | if length == 1 then .[0] else "" end' <<<"$out" 2>/dev/null || true)"
    voters="$(jq -r '[.regions[]? | select(.role == "leader" or .role == "voter")] | length' <<<"$out" 2>/dev/null || echo 0)"
    [[ -n "$leader" && "$voters" == 3 ]] && break
    if ((SECONDS > deadline)); then
      log "no leader with 3 voters after ${READY_TIMEOUT}s; region list:"; echo "$out" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "$out" >"$dir/regions.json"
  LEADER=""
  FOLLOWER=""
  for i in 1 2 3; do
    name=${REGIONS[$((i - 1))]}
    if [[ "$name" == "$leader" ]]; then LEADER=$i; elif [[ -z "$FOLLOWER" ]]; then FOLLOWER=$i; fi
  done
  [[ -n "$LEADER" ]] || { log "leader $leader is not one of ${REGIONS[*]}"; exit 1; }
  log "membership: leader ${REGIONS[$((LEADER - 1))]}, follower under test ${REGIONS[$((FOLLOWER - 1))]}"
}

stop_cluster() {
  stop_pids "${NODE_PIDS[@]}" "${PROXY_PIDS[@]}"
  forget_pids "${NODE_PIDS[@]}" "${PROXY_PIDS[@]}"
  NODE_PIDS=()
  PROXY_PIDS=()
}

# ---------------------------------------------------------------- scenarios
FAILED=()
LEADERS=()
run_one() { # out label node_index scenario args…
  local out=$1 label=$2 i=$3 sc=$4; shift 4
  log "delay ${DELAY} ms: $sc $label $* (${BENCH_SECS}s + ${BENCH_WARMUP}s warm-up)"
  if ! "$BENCH" "$sc" --url "http://127.0.0.1:500$i" --duration "${BENCH_SECS}s" \
      --warmup "${BENCH_WARMUP}s" --server-pid "${NODE_PIDS[$((i - 1))]}" --label "$label" \
      --json "$@" >>"$out" 2>>"$out.stderr"; then
    FAILED+=("delay $DELAY: $sc $label $*")
    log "  FAILED: $(tail -1 "$out.stderr")"
    return 0
  fi
  tail -1 "$out" | jq -r '"  \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2 || true
}

for DELAY in $DELAYS; do
  dir="$TMP/delay$DELAY"
  mkdir -p "$dir"
  log "=== one-way delay $DELAY ms (round trip $((2 * DELAY)) ms): starting proxies and nodes"
  start_cluster "$DELAY" "$dir"
  LEADERS+=("$DELAY:${REGIONS[$((LEADER - 1))]}:${REGIONS[$((FOLLOWER - 1))]}")
  out="$TMP/delay$DELAY.jsonl"
  : >"$out"
  L=$LEADER F=$FOLLOWER
  # Paced: one client pausing 2 round trips + 50 ms after each PUT, so a write never
  # queues behind the replication of the previous one (isolated commit latency).
  THINK_MS=$((4 * DELAY + 50))
  run_one "$out" leader-paced   "$L" manifest-put -c 1 --think "${THINK_MS}ms" --tag-prefix "leader-paced-"
  run_one "$out" follower-paced "$F" manifest-put -c 1 --think "${THINK_MS}ms" --tag-prefix "follower-paced-"
  run_one "$out" leader   "$L" manifest-put -c 1 --tag-prefix "leader-c1-"
  run_one "$out" leader   "$L" manifest-put -c 4 --tag-prefix "leader-c4-"
  run_one "$out" follower "$F" manifest-put -c 1 --tag-prefix "follower-c1-"
  run_one "$out" follower "$F" manifest-put -c 4 --tag-prefix "follower-c4-"
  run_one "$out" leader   "$L" manifest-get -c 16 --repo bench/manifest-get-leader
  run_one "$out" follower "$F" manifest-get -c 16 --repo bench/manifest-get-follower
  # The leader must not have changed under the measurement.
  now_leader="$(admin --json region list 2>/dev/null | jq -r '.regions[] | select(.role == "leader") | .name' || true)"
  if [[ "$now_leader" != "${REGIONS[$((LEADER - 1))]}" ]]; then
    FAILED+=("delay $DELAY: leader changed during the run (now: ${now_leader:-none})")
    log "leader changed during the run (now: ${now_leader:-none})"
  fi
  for i in 1 2 3; do
    if ! kill -0 "${NODE_PIDS[$((i - 1))]}" 2>/dev/null; then
      FAILED+=("delay $DELAY: ${REGIONS[$((i - 1))]} died")
      log "${REGIONS[$((i - 1))]} died; log tail:"; tail -20 "$dir/${REGIONS[$((i - 1))]}.log" >&2
    fi
  done
  log "stopping the cluster"
  stop_cluster
done

# ---------------------------------------------------------------- report
# field FILE LABEL SCENARIO CONCURRENCY FIELD → value, or empty
field() {
  jq -r --arg l "$2" --arg s "$3" --argjson c "$4" --arg f "$5" \
    'select(.label == $l and .scenario == $s and .concurrency == $c) | .[$f]' "$1" 2>/dev/null | tail -1
}
fmt() { # number decimals → formatted, or — when empty
  if [[ -z "$1" || "$1" == null ]]; then echo "—"; else printf "%.${2}f" "$1"; fi
}
calc() { # awk expression over a b c… (empty operands → empty result)
  local expr=$1; shift
  local a
  for a in "$@"; do [[ -z "$a" || "$a" == null ]] && { echo ""; return; }; done
  awk -v a="${1:-0}" -v b="${2:-0}" -v c="${3:-0}" "BEGIN { printf \"%.6f\", $expr }"
}

notes=()
[[ -n "${RESULTS_NOTE:-}" ]] && notes+=("$RESULTS_NOTE")
if ((BENCH_SECS < 10)); then notes+=("Preliminary: short runs (${BENCH_SECS} s per scenario)."); fi
((${#FAILED[@]})) && notes+=("Failed or disturbed runs: $(IFS=';'; echo "${FAILED[*]}").")

SECTION="$TMP/section.md"
{
  echo "<!-- cluster:begin -->"
  echo "## Three regions (Raft over gRPC)"
  echo
  for n in "${notes[@]+"${notes[@]}"}"; do echo "> **$n**"; echo ">"; done
  ((${#notes[@]})) && echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); all three nodes, the proxies and the client share the machine"
  echo "- Meridian: git $(git_rev); three \`meridian serve\` processes (regions us, eu, ap; node 1 = us bootstraps, the others join), Raft heartbeat 250 ms, election timeout 1500–3000 ms"
  echo "- Links: each node advertises a \`fault-proxy\` (7001→6001, 7002→6002, 7003→6003) as its gRPC address, so every inter-node connection (Raft, write forwarding) is delayed by the one-way delay in each direction; the benchmark client talks to each node's HTTP port directly (no delay)"
  echo "- Command: \`${CMDLINE% }\`"
  echo "- Each scenario: ${BENCH_WARMUP} s warm-up, then ${BENCH_SECS} s measured; HTTP/1.1 over 127.0.0.1"
  echo "- Leader / follower under test: $(for x in "${LEADERS[@]+"${LEADERS[@]}"}"; do IFS=: read -r d l f <<<"$x"; printf '%s ms: %s / %s; ' "$d" "$l" "$f"; done | sed 's/; $//')"
  echo
  echo "\`manifest-put\`: one new OCI image manifest (~500 bytes, unique annotation, referencing a config and a layer uploaded to that region before the run) PUT by tag (4 tags in rotation) → \`201\`; at a follower the PUT is forwarded to the leader and answered after the follower has applied it. \`manifest-get\`: GET by tag of a manifest pushed before the run, served from the node's local state."
  echo
  echo "| scenario | region | clients | delay one way (RTT) | ops/s | p50 (ms) | p99 (ms) | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for DELAY in $DELAYS; do
    out="$TMP/delay$DELAY.jsonl"
    [[ -f "$out" ]] || continue
    think="$((4 * DELAY + 50)) ms pause"
    for row in "manifest-put leader-paced 1" "manifest-put follower-paced 1" \
               "manifest-put leader 1" "manifest-put leader 4" "manifest-put follower 1" \
               "manifest-put follower 4" "manifest-get leader 16" "manifest-get follower 16"; do
      read -r sc label c <<<"$row"
      ops="$(field "$out" "$label" "$sc" "$c" ops_per_sec)"
      p50="$(field "$out" "$label" "$sc" "$c" p50_ms)"
      p99="$(field "$out" "$label" "$sc" "$c" p99_ms)"
      errs="$(field "$out" "$label" "$sc" "$c" errors)"
      clients=$c
      [[ "$label" == *-paced ]] && clients="1 (paced, $think)"
      echo "| $sc | ${label%-paced} | $clients | $DELAY ms ($((2 * DELAY)) ms) | $(fmt "$ops" 1) | $(fmt "$p50" 2) | $(fmt "$p99" 2) | ${errs:-—} |"
    done
  done
  echo
  echo "Derived. *Paced* = one client pausing 2 RTT + 50 ms between PUTs, so each write is isolated; *back-to-back* = one client sending the next PUT as soon as the previous one is answered. Targets: follower p50 − leader p50 ≈ one round trip; leader commit ≈ one round trip + fsync; follower GET throughput ≥ 0.9 × the leader's."
  echo
  echo "| delay one way (RTT) | leader PUT p50, paced | paced leader p50 − RTT | follower − leader PUT p50, paced | ÷ RTT | leader PUT p50, back-to-back | follower − leader PUT p50, back-to-back | ÷ RTT | follower GET ÷ leader GET ops/s |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for DELAY in $DELAYS; do
    out="$TMP/delay$DELAY.jsonl"
    [[ -f "$out" ]] || continue
    rtt=$((2 * DELAY))
    lpp="$(field "$out" leader-paced manifest-put 1 p50_ms)"
    fpp="$(field "$out" follower-paced manifest-put 1 p50_ms)"
    lp="$(field "$out" leader manifest-put 1 p50_ms)"
    fp="$(field "$out" follower manifest-put 1 p50_ms)"
    lg="$(field "$out" leader manifest-get 16 ops_per_sec)"
    fg="$(field "$out" follower manifest-get 16 ops_per_sec)"
    extra_p="$(calc 'b - a' "$lpp" "$fpp")"
    extra="$(calc 'b - a' "$lp" "$fp")"
    rel_p="—"; rel="—"
    if ((rtt > 0)); then
      [[ -n "$extra_p" ]] && rel_p="$(fmt "$(calc 'a / b' "$extra_p" "$rtt")" 2)×"
      [[ -n "$extra" ]] && rel="$(fmt "$(calc 'a / b' "$extra" "$rtt")" 2)×"
    fi
    getr="$(calc 'a / b' "$fg" "$lg")"
    echo "| $DELAY ms ($rtt ms) | $(fmt "$lpp" 2) ms | $(fmt "$(calc 'a - b' "$lpp" "$rtt")" 2) ms | $(fmt "$extra_p" 2) ms | $rel_p | $(fmt "$lp" 2) ms | $(fmt "$extra" 2) ms | $rel | $(fmt "$getr" 2) |"
  done
  echo
  echo "Latencies are client-observed, PUT sent → \`201\` received (or GET → body read). \"paced leader p50 − RTT\" is what a commit costs beyond the network: the leader's and a follower's fsync and the processing on both sides (at 0 ms delay it is the whole commit). Back-to-back writes from one client can cost up to one more round trip than paced ones: the next entry waits while the replication stream to each follower is still busy with the previous round (which carries the new commit index); a follower's forwarded write arrives a round trip later and does not wait, so back-to-back the follower − leader difference shrinks towards 0. All processes share 2 cores, so the throughput rows (4 and 16 clients) are CPU-bound on this machine, and the GET ratio swings by ±20 % from run to run with whatever else uses the cores."
  echo
  echo "<details><summary>Raw JSON (label = node under test; -paced = with --think)</summary>"
  echo
  echo '```'
  for DELAY in $DELAYS; do
    out="$TMP/delay$DELAY.jsonl"
    [[ -f "$out" ]] || continue
    echo "# one-way delay $DELAY ms"
    cat "$out"
  done
  echo '```'
  echo
  echo "</details>"
  echo "<!-- cluster:end -->"
} >"$SECTION"

write_section "$RESULTS_FILE" cluster "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
((${#FAILED[@]} == 0))
