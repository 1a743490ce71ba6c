#!/usr/bin/env bash
# Many pushers across regions: how image pushes scale with concurrency when every write
# is a Raft commit over wide-area round trips. Three `meridian serve` processes (regions
# us = the leader, eu, ap) with every inter-region link through its own `fault-proxy`
# (round trips us–eu 80 ms, eu–ap 150 ms, us–ap 180 ms, as in benches/replication.sh),
# the default (wide-area) Raft timings, auth off. Each row runs `meridian-bench
# image-push` (3 layers of LAYER_SIZE, a config, a manifest by tag) for BENCH_SECS:
# sequential manifest PUTs (one client) at the leader and at a follower, one pusher at
# the leader, one at a follower, then PUSHERS spread evenly over the three regions (one
# bench process per region). Everything runs twice, on a fresh cluster
# each: with the leader batching concurrent writes into one entry (`raft.batch_writes`,
# the default) and without. Writes the section between <!-- geo-writes:begin/end --> of
# benches/RESULTS.md.
#
#   benches/geo_writes.sh                       # 1, 8, 64, 256 pushers, 10 s each
#   PUSHERS="8 64" BENCH_SECS=5 benches/geo_writes.sh
#   MODES=true benches/geo_writes.sh           # batched writes only (default: "true false")
#   VIS_OPS=0 benches/geo_writes.sh            # without the visibility rows (default 200 manifests)
#
# Ports (127.0.0.1 only): HTTP 5121-5123, gRPC 6121-6123, link proxies 72ij (node i
# dialling node j).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CMDLINE="benches/geo_writes.sh"
for v in PUSHERS MODES VIS_OPS BENCH_SECS LAYER_SIZE RTT_US_AP RTT_EU_AP RTT_US_EU; do
  if [[ -n "${!v:-}" ]]; then CMDLINE="$v=${!v} $CMDLINE"; fi
done
RTT_US_EU="${RTT_US_EU:-80}"
RTT_EU_AP="${RTT_EU_AP:-150}"
RTT_US_AP="${RTT_US_AP:-180}"
PUSHERS="${PUSHERS:-8 64 256}"
MODES="${MODES:-true false}"
VIS_OPS="${VIS_OPS:-200}"
BENCH_SECS="${BENCH_SECS:-10}"
LAYER_SIZE="${LAYER_SIZE:-16KiB}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
TOKEN=bench
REGIONS=(us eu ap)   # node ids 1, 2, 3

TMP="$(mktemp -d /tmp/meridian-geo-writes.XXXXXX)"
BENCH_NAME=geo-writes
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_with_proxy
admin() { "$MERIDIAN" admin --addr 127.0.0.1:6121 --token "$TOKEN" "$@"; }

require_free_ports 5121 5122 5123 6121 6122 6123 7212 7213 7221 7223 7231 7232

for i in 1 2 3; do
  for j in 1 2 3; do
    ((i == j)) && continue
    "$PROXY" --listen "127.0.0.1:72$i$j" --upstream "127.0.0.1:612$j" --delay-ms "$(($(rtt_between "$i" "$j") / 2))" \
      >"$TMP/proxy72$i$j.log" 2>&1 &
    STARTED+=($!)
  done
done

NODE_PIDS=()
start_cluster() { # batch_writes (true|false)
  local i r
  NODE_PIDS=()
  for i in 1 2 3; do
    r=${REGIONS[$((i - 1))]}
    rm -rf "$TMP/$r"
    mkdir -p "$TMP/$r"
    {
      echo "region = \"$r\""
      echo "node_id = $i"
      echo "listen = \"127.0.0.1:512$i\""
      echo "grpc_listen = \"127.0.0.1:612$i\""
      echo "data_dir = \"$TMP/$r\""
      if ((i == 1)); then echo "join = []"; else echo "join = [\"127.0.0.1:6121\"]"; fi
      echo "admin_token = \"$TOKEN\""
      echo "log_level = \"${LOG_LEVEL:-warn}\""
      echo "[raft]"
      echo "batch_writes = $1"
      echo "[dial_via]"
      for j in 1 2 3; do ((i == j)) || echo "\"127.0.0.1:612$j\" = \"127.0.0.1:72$i$j\""; done
    } >"$TMP/$r.toml"
    MERIDIAN_AUTH_ENABLED=false "$MERIDIAN" serve --config "$TMP/$r.toml" >"$TMP/$r-$1.log" 2>&1 &
    NODE_PIDS+=($!)
    STARTED+=($!)
    wait_http "http://127.0.0.1:512$i/readyz" "$READY_TIMEOUT" || { log "$r not ready"; tail -20 "$TMP/$r-$1.log" >&2; exit 1; }
  done
  wait_voters 3 "$READY_TIMEOUT"
  if [[ "$1" == true ]]; then
    # The leader batches once its probes found every member able to apply batches.
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -s http://127.0.0.1:5121/metrics | grep -q '^meridian_raft_batching 1'; do
      ((SECONDS < deadline)) || { log "batching never enabled"; exit 1; }
      sleep 0.5
    done
  fi
  log "three voters, leader $(admin --json region list | jq -r '.regions[] | select(.role == "leader") | .name'), batch_writes = $1"
}
stop_cluster() {
  stop_pids "${NODE_PIDS[@]}"
  forget_pids "${NODE_PIDS[@]}"
}

OUT="$TMP/results.jsonl"
: >"$OUT"
VIS_OUT="$TMP/visibility.jsonl"
: >"$VIS_OUT"
# Visibility lag (issue 18, target 1): VIS_OPS manifests PUT one after another in us, each
# polled by digest in eu and in ap until `200` (geo visibility), with nothing else running
# and again while 8 pushers (3 us, 3 eu, 2 ap) push images continuously.
visibility_rows() {
  local load=$1 r i
  for r in eu ap; do
    i=$([[ $r == eu ]] && echo 2 || echo 3)
    log "visibility in $r of manifests PUT in us ($load)"
    "$BENCH" geo visibility --url http://127.0.0.1:5121 --peer-url "http://127.0.0.1:512$i" --repo bench/geo-writes-vis \
      --ops "$VIS_OPS" --label "$load|$r" --json >>"$VIS_OUT"
  done
}
visibility_all() {
  local k pids=()
  visibility_rows quiet
  for k in 1 2 3; do
    "$BENCH" image-push --url "http://127.0.0.1:512$k" --concurrency $((k == 3 ? 2 : 3)) --size "$LAYER_SIZE" --layers 3 \
      --repo "bench/geo-writes-vis-load-$k" --duration 3600s --json >/dev/null 2>"$TMP/vis-load-$k.err" &
    pids+=($!)
    STARTED+=($!)
  done
  sleep 3
  visibility_rows "8 pushers"
  stop_pids "${pids[@]}"
  forget_pids "${pids[@]}"
}
push() { # mode row region concurrency → one JSON line (a run where every push failed too)
  local i
  for i in 1 2 3; do [[ "${REGIONS[$((i - 1))]}" == "$3" ]] && break; done
  local out
  if ! out="$("$BENCH" image-push --url "http://127.0.0.1:512$i" --concurrency "$4" --size "$LAYER_SIZE" --layers 3 \
    --repo "bench/geo-writes-${2/@/-at-}-$3" --duration "${BENCH_SECS}s" --warmup 2s --label "$1|$2|$3" --json \
    2>"$TMP/push-$3.err")"; then
    log "every push failed at $3: $(grep -m1 'HTTP\|error' "$TMP/push-$3.err" | cut -c1-200)"
    jq -cn --arg l "$1|$2|$3" '{"scenario": "image-push", "label": $l, "ops_per_sec": 0, "p50_ms": null, "p99_ms": null, "errors": -1}'
  else
    echo "$out"
  fi
}
for mode in $MODES; do
  start_cluster "$mode"
  for r in us eu; do
    log "sequential manifest PUTs at $r, batch_writes = $mode"
    i=$([[ $r == us ]] && echo 1 || echo 2)
    "$BENCH" manifest-put --url "http://127.0.0.1:512$i" --concurrency 1 --tags 0 --repo "bench/geo-writes-put-$r" \
      --duration "${BENCH_SECS}s" --warmup 2s --label "$mode|manifest PUT, 1 client@$r|$r" --json >>"$OUT"
  done
  if [[ "$mode" == true && "$VIS_OPS" != 0 ]]; then visibility_all; fi
  log "1 pusher at the leader (us), batch_writes = $mode"
  push "$mode" "1@us" us 1 >>"$OUT"
  log "1 pusher at a follower (eu), batch_writes = $mode"
  push "$mode" "1@eu" eu 1 >>"$OUT"
  for n in $PUSHERS; do
    log "$n pushers over us, eu, ap, batch_writes = $mode"
    pids=()
    for k in 0 1 2; do
      share=$(( n / 3 + (k < n % 3 ? 1 : 0) ))
      ((share > 0)) || continue
      push "$mode" "$n" "${REGIONS[$k]}" "$share" >"$TMP/part-$k.json" &
      pids+=($!)
    done
    wait "${pids[@]}"
    cat "$TMP"/part-*.json >>"$OUT"
    rm -f "$TMP"/part-*.json
  done
  stop_cluster
done

# One row per (mode, pushers): images/s summed over the regions, p50/p99 per region.
ROWS="$TMP/rows.tsv"
jq -s -r '
  group_by(.label | split("|")[0:2])
  | .[]
  | (.[0].label | split("|")) as $l
  | [ (if $l[0] == "true" then "batched" else "one entry per write" end),
      $l[1],
      (map(.ops_per_sec) | add * 10 | round / 10),
      (map("\(.label | split("|")[2]) " + (if .p50_ms == null then "all failed" else "\(.p50_ms | round)/\(.p99_ms | round)" end)) | join(", ")),
      (if any(.errors < 0) then "all in a region" else (map(.errors) | add) end) ]
  | @tsv' "$OUT" >"$ROWS"

SECTION="$TMP/section.md"
{
  echo "<!-- geo-writes:begin -->"
  echo "## Image pushes across regions: concurrency"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); three nodes, the proxies and every client share it"
  echo "- Meridian: git $(git_rev); regions us (leader), eu, ap; round trips us–eu ${RTT_US_EU} ms, eu–ap ${RTT_EU_AP} ms, us–ap ${RTT_US_AP} ms (\`fault-proxy\` on every link); default Raft timings; auth off"
  echo "- Command: \`$CMDLINE\`; \`meridian-bench image-push\` (3 × $LAYER_SIZE layers, a config, a manifest by tag) for ${BENCH_SECS} s per row after 2 s of warm-up; pushers spread evenly over the regions, one bench process per region"
  echo "- One pusher's ideal p50: 1 round trip to the nearest quorum peer at the leader (${RTT_US_EU} ms), plus the forwarding round trip at a follower (eu ${RTT_US_EU} + ${RTT_US_EU} ms, ap ${RTT_US_AP} + ${RTT_US_EU} ms)"
  echo
  echo "| writes | pushers | images (or manifests)/s | p50/p99 ms per region | errors |"
  echo "|---|---:|---:|---|---:|"
  while IFS=$'\t' read -r mode n rate lat errs; do
    echo "| $mode | $n | $rate | $lat | $errs |"
  done <"$ROWS"
  if [[ -s "$VIS_OUT" ]]; then
    echo
    echo "Visibility lag with batched writes: $VIS_OPS manifests PUT one after another in us; after each \`201\` a client in eu and one in ap GET it by digest (again every 1 ms after a \`404\`) until \`200\`. Target: p99 ≤ 1 RTT to us + 50 ms."
    echo
    echo "| load | region | RTT to us | lag p50 / p99 ms | target p99 | \`404\`s | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    jq -r --argjson eu "$RTT_US_EU" --argjson ap "$RTT_US_AP" '
      (.label | split("|")) as $l
      | (if $l[1] == "eu" then $eu else $ap end) as $rtt
      | "| \($l[0]) | \($l[1]) | \($rtt) ms | \(.lag_p50_ms | round) / \(.lag_p99_ms | round) | \($rtt + 50) | \(.misses) | \(.errors) |"' "$VIS_OUT"
  fi
  echo
  raw_json_details "$OUT" "$VIS_OUT"
  echo "<!-- geo-writes:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" geo-writes "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
