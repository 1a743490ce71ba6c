#!/usr/bin/env bash
# A waiting client comes first on the wire (issue 18, target 6), measured on this machine
# (writes the section between <!-- waiting-client:begin/end --> of benches/RESULTS.md).
#
# Three regions (us, eu, ap) as in benches/replication.sh: every directed inter-region link
# through its own `fault-proxy` with its round trip and a bandwidth cap shared by every
# connection on it. Each run:
#
#   quiet  one image (LAYERS × LAYER_SIZE) pushed in us; the moment it is acknowledged a
#          client in ap pulls it (manifest, then every blob at once; ap fetches them
#          through from us);
#   busy   IMAGES such images pushed in us at once (a CI pipeline), then, as soon as all
#          are acknowledged, the client in ap pulls the first — while ap's background
#          queue copies the other images over the same link.
#
# Each pull is set against the same image pulled straight from us by a client in ap (a
# proxy with the us–ap round trip and cap in front of us's registry port), once the links
# are idle again. Target: fetch-through ÷ direct ≤ 1.1 in both cases.
#
# With COMPARE_BIN (a `meridian` binary of another build, e.g. before a change), the same
# runs are made with it too, in the same run of this script, on fresh data directories.
#
#   benches/waiting_client.sh
#   COMPARE_BIN=/tmp/meridian-before COMPARE_LABEL="git abc123" benches/waiting_client.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CMDLINE="benches/waiting_client.sh"
for v in RUNS IMAGES LAYER_SIZE LAYERS BANDWIDTH RTT_US_AP RTT_EU_AP RTT_US_EU; do
  if [[ -n "${!v:-}" ]]; then CMDLINE="$v=${!v} $CMDLINE"; fi
done
RTT_US_EU="${RTT_US_EU:-80}"
RTT_EU_AP="${RTT_EU_AP:-150}"
RTT_US_AP="${RTT_US_AP:-180}"
BANDWIDTH="${BANDWIDTH:-25000000}"
LAYERS="${LAYERS:-3}"
LAYER_SIZE="${LAYER_SIZE:-16MiB}"
IMAGES="${IMAGES:-10}"
RUNS="${RUNS:-3}"
COMPARE_BIN="${COMPARE_BIN:-}"
COMPARE_LABEL="${COMPARE_LABEL:-$COMPARE_BIN}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
TOKEN=bench
REGIONS=(us eu ap)   # node ids 1, 2, 3

TMP="$(mktemp -d /tmp/meridian-waiting-client.XXXXXX)"
BENCH_NAME=waiting-client
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_with_proxy
admin() { "$MERIDIAN" admin --addr 127.0.0.1:6141 --token "$TOKEN" "$@"; }
require_free_ports 5141 5142 5143 6141 6142 6143 7412 7413 7421 7423 7431 7432 7450

proxy() { # listen_port upstream_port rtt_ms
  "$PROXY" --listen "127.0.0.1:$1" --upstream "127.0.0.1:$2" --delay-ms "$(($3 / 2))" \
    --bandwidth "$BANDWIDTH" >"$TMP/proxy$1.log" 2>&1 &
  STARTED+=($!)
}
for i in 1 2 3; do
  for j in 1 2 3; do
    ((i == j)) || proxy "74$i$j" "614$j" "$(rtt_between "$i" "$j")"
  done
done
proxy 7450 5141 "$RTT_US_AP"   # a client in ap pulling straight from us

NODE_PIDS=()
start_cluster() { # binary name
  local i r
  NODE_PIDS=()
  for i in 1 2 3; do
    r=${REGIONS[$((i - 1))]}
    rm -rf "${TMP:?}/$r"
    mkdir -p "$TMP/$r"
    {
      echo "region = \"$r\""
      echo "node_id = $i"
      echo "listen = \"127.0.0.1:514$i\""
      echo "grpc_listen = \"127.0.0.1:614$i\""
      echo "data_dir = \"$TMP/$r\""
      if ((i == 1)); then echo "join = []"; else echo "join = [\"127.0.0.1:6141\"]"; fi
      echo "admin_token = \"$TOKEN\""
      echo "log_level = \"${LOG_LEVEL:-warn}\""
      echo "[dial_via]"
      for j in 1 2 3; do ((i == j)) || echo "\"127.0.0.1:614$j\" = \"127.0.0.1:74$i$j\""; done
    } >"$TMP/$r.toml"
    MERIDIAN_AUTH_ENABLED=false "$1" serve --config "$TMP/$r.toml" >"$TMP/$r-$2.log" 2>&1 &
    NODE_PIDS+=($!)
    STARTED+=($!)
    wait_http "http://127.0.0.1:514$i/readyz" "$READY_TIMEOUT" || { log "$r not ready"; tail -20 "$TMP/$r-$2.log" >&2; exit 1; }
  done
  wait_voters 3 "$READY_TIMEOUT"
  log "$2: three voters, leader $(admin --json region list | jq -r '.regions[] | select(.role == "leader") | .name'); waiting for RTT probes"
  sleep 5
}
stop_cluster() {
  stop_pids "${NODE_PIDS[@]}"
  forget_pids "${NODE_PIDS[@]}"
}

OUT="$TMP/results.jsonl"
: >"$OUT"
push() { # tag
  "$BENCH" geo push-image --url http://127.0.0.1:5141 --repo bench/waiting --tag "$1" \
    --layers "$LAYERS" --size "$LAYER_SIZE" --json >/dev/null
}
pull() { # url tag label
  "$BENCH" geo pull-image --url "$1" --repo bench/waiting --tag "$2" --label "$3" --json >>"$OUT"
  log "  $3: $(tail -1 "$OUT" | jq -r .seconds) s"
}
complete_everywhere() { # tag… : until every region holds every blob of each image
  local tag deadline=$((SECONDS + 600))
  for tag in "$@"; do
    until [[ "$(admin --json replication image "bench/waiting:$tag" 2>/dev/null | jq '[.regions[]? | select(.complete)] | length' 2>/dev/null)" == 3 ]]; do
      ((SECONDS < deadline)) || { log "bench/waiting:$tag not complete everywhere after 600 s"; exit 1; }
      sleep 0.2
    done
  done
}

runs() { # binary name tag-prefix
  local k n tags pushes t="$3"
  start_cluster "$1" "$2"
  for k in $(seq 1 "$RUNS"); do
    log "$2, run $k: quiet"
    push "$t-quiet$k"
    pull http://127.0.0.1:5143 "$t-quiet$k" "$2|quiet|fetch-through"
    complete_everywhere "$t-quiet$k"
    pull http://127.0.0.1:7450 "$t-quiet$k" "$2|quiet|direct"
    log "$2, run $k: busy ($IMAGES images pushed at once)"
    tags=()
    pushes=()
    for n in $(seq 1 "$IMAGES"); do
      tags+=("$t-busy$k-$n")
      push "$t-busy$k-$n" &
      pushes+=($!)
    done
    for n in "${pushes[@]}"; do wait "$n"; done
    pull http://127.0.0.1:5143 "$t-busy$k-1" "$2|busy|fetch-through"
    complete_everywhere "${tags[@]}"
    pull http://127.0.0.1:7450 "$t-busy$k-1" "$2|busy|direct"
  done
  for i in 1 2 3; do
    kill -0 "${NODE_PIDS[$((i - 1))]}" 2>/dev/null || { log "${REGIONS[$((i - 1))]} died"; exit 1; }
  done
  stop_cluster
}

BUILDS=("$MERIDIAN|this build")
[[ -n "$COMPARE_BIN" ]] && BUILDS+=("$COMPARE_BIN|$COMPARE_LABEL")
for idx in "${!BUILDS[@]}"; do   # tags name the build by its index: labels have spaces
  b=${BUILDS[$idx]}
  runs "${b%%|*}" "${b#*|}" "build$idx"
done

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { jq -r "select(.label == \"$1\") | .seconds" "$OUT" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
SECTION="$TMP/section.md"
{
  echo "<!-- waiting-client:begin -->"
  echo "## A waiting client comes first on the wire"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); the three nodes, eight proxies and the clients share it"
  echo "- Meridian: git $(git_rev)${COMPARE_BIN:+; compared with $COMPARE_LABEL, on fresh data directories in the same run}"
  echo "- Links: one \`fault-proxy\` per directed inter-region link: round trip us–eu $RTT_US_EU ms, eu–ap $RTT_EU_AP ms, us–ap $RTT_US_AP ms; cap $BANDWIDTH B/s per link and direction, shared by every connection on it. The direct pull goes through a proxy with the us–ap round trip and cap"
  echo "- Images: $LAYERS layers × $LAYER_SIZE (random), a config, an OCI manifest; a pull fetches the manifest, then every blob at once, hashing each"
  echo "- Command: \`$CMDLINE\`; medians of $RUNS runs"
  echo
  echo "| build | case | pull in ap right after the push (s) | the same pull straight from us (s) | ÷ | target |"
  echo "|---|---|---:|---:|---:|---:|"
  for b in "${BUILDS[@]}"; do
    name="${b#*|}"
    for case in quiet busy; do
      f=$(med "$name|$case|fetch-through"); d=$(med "$name|$case|direct")
      what=$([[ $case == quiet ]] && echo "one image, nothing else in flight" || echo "the first of $IMAGES images pushed at once")
      echo "| $name | $what | $f | $d | **$(ratio "$f" "$d")×** | ≤ 1.1× |"
    done
  done
  echo
  echo "While a node has a fetch in flight at a source that a client waits for, the source holds that node's background streams back (they send an empty keep-alive chunk every 5 s instead) until the node says the client's bytes all arrived; fetches a client waits for travel on their own connection, so they do not queue behind background bytes already in the bulk connection's buffers; a background fetch a client joins is promoted (the source stops holding it back and holds the node's others). The receiving node also steps aside: when a fetch a client waits for begins at a source, its background streams from that source are dropped, with the background connection and the bytes queued in it (up to \`replication_window_mib\`, 16 MiB), and ask again from the byte they reached once the client's fetch ends (a background fetch a client joins goes on where it is). Before that, what the background had handed to HTTP/2 before the hold went first."
  echo
  raw_json_details "$OUT"
  echo "<!-- waiting-client:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" waiting-client "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
