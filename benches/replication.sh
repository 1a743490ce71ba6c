#!/usr/bin/env bash
# Geo-replication benchmark: three `meridian serve` processes (regions us, eu, ap) on
# this machine, every directed inter-region link through its own `fault-proxy` with a
# round-trip delay and a bandwidth cap (each node dials the others through its proxies,
# `dial_via`). Measures, for images pushed in us (region A):
#   1. visibility lag: manifest PUT acknowledged in us → first successful GET in eu and
#      in ap (p50/p99);
#   2. cold pull in eu of a just-pushed image (LAYERS × LAYER_SIZE) against the same pull
#      served directly by us over an identical link (delay and cap) — target ≤ 1.1×;
#   3. time until the image is complete in every region (`meridian admin replication
#      image`) against bytes ÷ link bandwidth — target within 20 %.
# Then writes the section between <!-- replication:begin/end --> of benches/RESULTS.md.
#
#   benches/replication.sh                       # defaults below
#   BANDWIDTH=50000000 RUNS=5 benches/replication.sh
#
# Environment:
#   RTT_US_EU, RTT_EU_AP, RTT_US_AP   round trips in ms (default 80, 150, 180)
#   BANDWIDTH     cap per link and direction, bytes/s (default 25000000)
#   LAYERS        layers per image (default 3); LAYER_SIZE (default 64MiB)
#   RUNS          cold-pull/complete runs, each with a new image (default 3)
#   VIS_OPS       manifests for the visibility lag (default 50)
#   RESULTS_FILE  markdown file to update (default benches/RESULTS.md)
#   LOG_LEVEL     the nodes' log filter (default warn)
#   KEEP_TMP=1    keep the temp dir (node data, logs, configs, raw JSON)
#
# Ports (127.0.0.1 only): HTTP 5101-5103, gRPC 6101-6103, link proxies 71ij (node i
# dialling node j), 7150 (a client in eu reaching us's HTTP directly).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The command as run: the settings given in the environment, then the script.
CMDLINE="benches/replication.sh"
for v in VIS_OPS RUNS LAYER_SIZE LAYERS BANDWIDTH RTT_US_AP RTT_EU_AP RTT_US_EU; do
  if [[ -n "${!v:-}" ]]; then CMDLINE="$v=${!v} $CMDLINE"; fi
done
RTT_US_EU="${RTT_US_EU:-80}"
RTT_EU_AP="${RTT_EU_AP:-150}"
RTT_US_AP="${RTT_US_AP:-180}"
BANDWIDTH="${BANDWIDTH:-25000000}"
LAYERS="${LAYERS:-3}"
LAYER_SIZE="${LAYER_SIZE:-64MiB}"
RUNS="${RUNS:-3}"
VIS_OPS="${VIS_OPS:-50}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
TOKEN=bench
REGIONS=(us eu ap)   # node ids 1, 2, 3

TMP="$(mktemp -d /tmp/meridian-replication-bench.XXXXXX)"
BENCH_NAME=replication
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_with_proxy
admin() { "$MERIDIAN" admin --addr 127.0.0.1:6101 --token "$TOKEN" "$@"; }

require_free_ports 5101 5102 5103 6101 6102 6103 7112 7113 7121 7123 7131 7132 7150

# ---------------------------------------------------------------- links
proxy() { # listen_port upstream_port rtt_ms
  "$PROXY" --listen "127.0.0.1:$1" --upstream "127.0.0.1:$2" --delay-ms "$(($3 / 2))" \
    --bandwidth "$BANDWIDTH" >"$TMP/proxy$1.log" 2>&1 &
  STARTED+=($!)
}
for i in 1 2 3; do
  for j in 1 2 3; do
    ((i == j)) && continue
    proxy "71$i$j" "610$j" "$(rtt_between "$i" "$j")"
  done
done
proxy 7150 5101 "$RTT_US_EU"   # a client in eu pulling straight from us

# ---------------------------------------------------------------- nodes
NODE_PIDS=()
for i in 1 2 3; do
  r=${REGIONS[$((i - 1))]}
  mkdir -p "$TMP/$r"
  {
    echo "region = \"$r\""
    echo "node_id = $i"
    echo "listen = \"127.0.0.1:510$i\""
    echo "grpc_listen = \"127.0.0.1:610$i\""
    echo "data_dir = \"$TMP/$r\""
    if ((i == 1)); then echo "join = []"; else echo "join = [\"127.0.0.1:6101\"]"; fi
    echo "admin_token = \"$TOKEN\""
    echo "log_level = \"${LOG_LEVEL:-warn}\""
    echo "# every link to another region goes through its own proxy"
    echo "[dial_via]"
    for j in 1 2 3; do ((i == j)) || echo "\"127.0.0.1:610$j\" = \"127.0.0.1:71$i$j\""; done
  } >"$TMP/$r.toml"
  MERIDIAN_AUTH_ENABLED=false "$MERIDIAN" serve --config "$TMP/$r.toml" >"$TMP/$r.log" 2>&1 &
  NODE_PIDS+=($!)
  STARTED+=($!)
  if ! wait_http "http://127.0.0.1:510$i/readyz" "$READY_TIMEOUT"; then
    log "$r not ready; log tail:"; tail -20 "$TMP/$r.log" >&2; exit 1
  fi
  log "$r ready (http://127.0.0.1:510$i)"
done
wait_voters 3 "$READY_TIMEOUT"
LEADER="$(admin --json region list | jq -r '.regions[] | select(.role == "leader") | .name')"
log "three voters, leader $LEADER; waiting for RTT probes"
sleep 5

OUT="$TMP/results.jsonl"
: >"$OUT"

# ---------------------------------------------------------------- 1. visibility lag
for j in 2 3; do
  peer=${REGIONS[$((j - 1))]}
  log "visibility: $VIS_OPS manifests PUT in us, polled in $peer"
  "$BENCH" geo visibility --url http://127.0.0.1:5101 --peer-url "http://127.0.0.1:510$j" \
    --repo bench/visibility --ops "$VIS_OPS" --label "$peer" --json >>"$OUT"
  tail -1 "$OUT" | jq -r '"  lag p50 \(.lag_p50_ms) ms  p99 \(.lag_p99_ms) ms  (PUT p50 \(.put_p50_ms) ms, 404s \(.misses), errors \(.errors))"' >&2
done

# ---------------------------------------------------------------- 2 + 3. images
complete_regions() { # tag → names of the regions holding every blob of the image
  admin --json replication image "bench/geo:$1" 2>/dev/null | jq -r '.regions[]? | select(.complete) | .name' 2>/dev/null || true
}
for k in $(seq 1 "$RUNS"); do
  tag="run$k-$(date +%s)"
  log "run $k: push $LAYERS × $LAYER_SIZE to us as bench/geo:$tag"
  "$BENCH" geo push-image --url http://127.0.0.1:5101 --repo bench/geo --tag "$tag" \
    --layers "$LAYERS" --size "$LAYER_SIZE" --label "us" --json >>"$OUT"
  acked=$(date +%s.%N)
  "$BENCH" geo pull-image --url http://127.0.0.1:5102 --repo bench/geo --tag "$tag" \
    --label "cold-eu" --json >"$TMP/cold$k.json" &
  pull=$!
  declare -A landed=()
  while ((${#landed[@]} < 3)); do
    if (($(date +%s) - ${acked%.*} > 300)); then log "run $k: not complete after 300 s"; exit 1; fi
    for r in $(complete_regions "$tag"); do
      [[ -n "${landed[$r]:-}" ]] || landed[$r]=$(awk -v a="$acked" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    done
    sleep 0.1
  done
  done_at=$(date +%s.%N)
  log "  complete in eu after ${landed[eu]} s, in ap after ${landed[ap]} s"
  wait "$pull"
  cat "$TMP/cold$k.json" >>"$OUT"
  bytes=$(jq -r .bytes "$TMP/cold$k.json")
  jq -cn --arg tag "$tag" --argjson s "$(awk -v a="$acked" -v b="$done_at" 'BEGIN { printf "%.3f", b - a }')" \
    --argjson bytes "$bytes" --argjson bw "$BANDWIDTH" \
    --argjson eu "${landed[eu]}" --argjson ap "${landed[ap]}" \
    '{scenario: "complete-everywhere", tag: $tag, seconds: $s, eu_seconds: $eu, ap_seconds: $ap, bytes: $bytes, ideal_seconds: ($bytes / $bw)}' >>"$OUT"
  unset landed
  log "  cold pull in eu $(jq -r .seconds "$TMP/cold$k.json") s; complete everywhere $(tail -1 "$OUT" | jq -r .seconds) s"
  "$BENCH" geo pull-image --url http://127.0.0.1:7150 --repo bench/geo --tag "$tag" \
    --label "direct-us-from-eu" --json >>"$OUT"
  log "  direct pull from us over the us–eu link $(tail -1 "$OUT" | jq -r .seconds) s"
done

for i in 1 2 3; do
  kill -0 "${NODE_PIDS[$((i - 1))]}" 2>/dev/null || { log "${REGIONS[$((i - 1))]} died"; exit 1; }
done

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
sel() { jq -r "select($1) | $2" "$OUT"; }
cold_med="$(sel '.scenario == "pull-image" and .label == "cold-eu"' .seconds | median)"
direct_med="$(sel '.scenario == "pull-image" and .label == "direct-us-from-eu"' .seconds | median)"
done_med="$(sel '.scenario == "complete-everywhere"' .seconds | median)"
ideal="$(sel '.scenario == "complete-everywhere"' .ideal_seconds | median)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

SECTION="$TMP/section.md"
{
  echo "<!-- replication:begin -->"
  echo "## Geo-replication of blobs (three regions, WAN-like links)"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); the three nodes, seven proxies and the clients share it"
  echo "- Meridian: git $(git_rev); regions us (node 1, bootstraps), eu, ap; leader during the run: $LEADER"
  echo "- Links: one \`fault-proxy\` per directed inter-region link (each node reaches the others through \`dial_via\`): round trip us–eu $RTT_US_EU ms, eu–ap $RTT_EU_AP ms, us–ap $RTT_US_AP ms; bandwidth cap $BANDWIDTH B/s per link and direction, shared by all connections on it. Clients talk to their own region directly; the direct pull goes through a proxy with the us–eu delay and cap"
  echo "- Image: $LAYERS layers × $LAYER_SIZE (random), a config, an OCI manifest; pulls fetch the manifest, then all blobs at once, hashing each"
  echo "- Command: \`$CMDLINE\`"
  echo
  echo "| measurement | result | target |"
  echo "|---|---:|---:|"
  for peer in eu ap; do
    echo "| visibility lag, PUT \`201\` in us → GET by digest answered \`200\` in $peer, p50 / p99 ($VIS_OPS manifests) | $(sel ".scenario == \"visibility\" and .label == \"$peer\"" '"\(.lag_p50_ms) / \(.lag_p99_ms) ms"') | — |"
    echo "| \`404\` answers in $peer for manifests already acknowledged in us | $(sel ".scenario == \"visibility\" and .label == \"$peer\"" '.misses') | 0 |"
  done
  echo "| cold pull in eu right after the push, median of $RUNS | $cold_med s | |"
  echo "| the same pull served directly by us over the us–eu link, median of $RUNS | $direct_med s | |"
  echo "| **cold pull ÷ direct pull** | **$(ratio "$cold_med" "$direct_med")×** | ≤ 1.1× |"
  echo "| complete in every region after the push's \`201\`, median of $RUNS | $done_med s | |"
  echo "| image bytes ÷ link bandwidth | $(printf '%.2f' "$ideal") s | |"
  echo "| **complete everywhere ÷ (bytes ÷ bandwidth)** | **$(ratio "$done_med" "$ideal")×** | ≤ 1.2× |"
  echo
  echo "Visibility lag is how long after the pushing client got its \`201\` a client in another region, asking right away by digest (and again every 1 ms after a \`404\`), gets the manifest. A region that does not have a manifest or blob yet does not answer \`404\` at once: it first catches up with the leader's commit index (one round trip to the leader) and looks again (and, if it still misses, once more with a leader that confirms it still leads), so a pull never sees \`MANIFEST_UNKNOWN\` for something acknowledged — the \`404\` row counts any that got through. The cold pull starts the moment the push is acknowledged; eu streams each layer to the client as it arrives from us (fetch-through, shared with the background replication of the same blob). \"Complete\" is when \`meridian admin replication image\` reports every blob present in all three regions, i.e. the replicas are landed, verified and recorded in Raft."
  echo
  raw_json_details "$OUT"
  echo "<!-- replication:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" replication "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
