#!/usr/bin/env bash
# A million images (issue 18, target 4), measured on this machine (writes the section
# between <!-- scale:begin/end --> of benches/RESULTS.md):
#
# 1. Region us (one node) is started once, stopped, and filled by `meridian-load` with
#    MANIFESTS manifests over REPOS repositories (`load/r<i>:v<j>`), then TAGS_ONE more
#    manifests as tags of one repository (`load/r0`, for tag pages at large offsets) —
#    through the state machine's own PutManifest commands, with their blob files and links.
# 2. us is started: it finds its state machine ahead of its log and streams its first Raft
#    snapshot to a file. Its peak RSS over that start, its RSS at rest, and its peak over
#    one more snapshot (`meridian admin snapshot`) are recorded.
# 3. `_catalog` and tag-list pages (n=100) at several offsets, REQUESTS sequential GETs
#    each, timed by curl (p50/p99).
# 4. Manifest GET × 16 clients: one hot image, against the same hot GET on an empty
#    registry (the target: a registry's size costs a GET nothing); then random images of
#    the loaded registry (`--loaded`), of all of them and of the first 1,000 (the first
#    100 repositories' first 10 tags), which shows what the working set's size costs once
#    it outgrows RocksDB's block cache; rounds alternate.
# 5. A new region (eu) joins: snapshot install plus the log, from its start until it has
#    applied what us had committed. Both nodes' RSS is sampled every second; eu's blob
#    backfill (a config blob per image) goes on after, and eu's RSS is followed for
#    BACKFILL_SECS more.
#
#   benches/scale.sh                                    # 1,000,000 manifests, 100,000 repos
#   MANIFESTS=100000 REPOS=10000 benches/scale.sh       # a quicker look
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MANIFESTS="${MANIFESTS:-1000000}"
REPOS="${REPOS:-100000}"
TAGS_ONE="${TAGS_ONE:-100000}"
REQUESTS="${REQUESTS:-200}"
BENCH_SECS="${BENCH_SECS:-10}"
ROUNDS="${ROUNDS:-2}"
BACKFILL_SECS="${BACKFILL_SECS:-60}"
RESULTS_FILE="${RESULTS_FILE:-$ROOT/benches/RESULTS.md}"
CMDLINE="benches/scale.sh"
for v in MANIFESTS REPOS TAGS_ONE; do
  case "$v" in MANIFESTS) d=1000000 ;; REPOS) d=100000 ;; TAGS_ONE) d=100000 ;; esac
  [[ "${!v}" != "$d" ]] && CMDLINE="$v=${!v} $CMDLINE"
done
TOKEN=bench-admin-token

TMP="$(mktemp -d /tmp/meridian-scale.XXXXXX)"
BENCH_NAME=scale
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

build_node
require_free_ports 5331 5332 5333 6331 6332 6333

config() { # name node_id port_suffix join : a node's config file
  local dir="$TMP/$1"
  mkdir -p "$dir"
  {
    echo "region = \"$1\""
    echo "node_id = $2"
    echo "listen = \"127.0.0.1:533$3\""
    echo "grpc_listen = \"127.0.0.1:633$3\""
    echo "data_dir = \"$dir\""
    echo "join = [$4]"
    echo "admin_token = \"$TOKEN\""
    echo "log_level = \"warn\""
  } >"$TMP/$1.toml"
}
declare -A PID
serve() { # name port_suffix : starts the node, waits until it answers /readyz
  MERIDIAN_AUTH_ENABLED=false "$MERIDIAN" serve --config "$TMP/$1.toml" >>"$TMP/$1.log" 2>&1 &
  PID[$1]=$!
  STARTED+=($!)
  wait_http "http://127.0.0.1:533$2/readyz" 900 || { log "$1 not ready"; tail -20 "$TMP/$1.log" >&2; exit 1; }
}
stop() { stop_pids "${PID[$1]}"; forget_pids "${PID[$1]}"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mib() { echo $(( $1 / 1024 )); }
admin() { "$MERIDIAN" admin --addr http://127.0.0.1:6331 --token "$TOKEN" --json "$@"; }

# ---- 1. load
config us 1 1 ""
config eu 2 2 '"http://127.0.0.1:6331"'
config empty 3 3 ""
serve us 1
stop us
log "meridian-load: $MANIFESTS manifests over $REPOS repositories"
"$LOAD" --data-dir "$TMP/us" --region us --manifests "$MANIFESTS" --repos "$REPOS" >"$TMP/load.json"
log "meridian-load: $TAGS_ONE tags in load/r0"
"$LOAD" --data-dir "$TMP/us" --region us --manifests "$TAGS_ONE" --repos 1 >"$TMP/load-one.json"
cat "$TMP/load.json" "$TMP/load-one.json" >&2
db_mb=$(du -sm "$TMP/us/db" | cut -f1)

# ---- 2. the first start builds a snapshot; rest; one more snapshot
started=$SECONDS
serve us 1
for _ in $(seq 1 900); do [[ -f "$TMP/us/snapshots/current.json" ]] && break; sleep 1; done
[[ -f "$TMP/us/snapshots/current.json" ]] || { log "no snapshot after 900 s"; exit 1; }
first_snapshot_secs=$((SECONDS - started))
sleep 5
first_start_peak=$(kib "${PID[us]}" VmHWM)
snapshot_mb=$(du -b "$TMP"/us/snapshots/*.data | awk '{s += $1} END {printf "%d", s / 1048576}')
sleep 10
rest_us=$(kib "${PID[us]}" VmRSS)
echo 5 >"/proc/${PID[us]}/clear_refs"
log "meridian admin snapshot (RSS at rest $(mib "$rest_us") MiB)"
# One more write, so the snapshot has something new to cover (one already covering the
# applied index is not built again).
"$BENCH" geo push-image --url http://127.0.0.1:5331 --repo bench/after-load --tag v1 --layers 1 --size 1KiB --json >/dev/null
started=$SECONDS
before=$(stat -c %y "$TMP/us/snapshots/current.json")
# The call waits a minute at most; the snapshot goes on without it.
admin snapshot >"$TMP/snapshot.json" 2>&1 || log "admin snapshot: $(tr '\n' ' ' <"$TMP/snapshot.json")"
for _ in $(seq 1 900); do [[ "$(stat -c %y "$TMP/us/snapshots/current.json")" != "$before" ]] && break; sleep 1; done
[[ "$(stat -c %y "$TMP/us/snapshots/current.json")" != "$before" ]] || { log "no new snapshot after 900 s"; exit 1; }
snapshot_secs=$((SECONDS - started))
snapshot_peak=$(kib "${PID[us]}" VmHWM)
log "snapshot in $snapshot_secs s, peak $(mib "$snapshot_peak") MiB"

# ---- 3. listing pages
PAGES="$TMP/pages.tsv"
: >"$PAGES"
page() { # label path : REQUESTS GETs, p50/p99 of curl's time_total
  local label=$1 path=$2 times="$TMP/times" status
  status="$(curl -s -o "$TMP/page.json" -w '%{http_code}' "http://127.0.0.1:5331$path")"
  [[ "$status" == 200 ]] || { log "$path answered $status"; exit 1; }
  [[ "$(jq '(.repositories // .tags) | length' "$TMP/page.json")" -gt 0 ]] || { log "$path listed nothing"; exit 1; }
  : >"$times"
  for _ in $(seq 1 "$REQUESTS"); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:5331$path" >>"$times"
  done
  python3 - "$times" "$label" "$path" >>"$PAGES" <<'EOF'
import sys
t = sorted(float(x) * 1000 for x in open(sys.argv[1]) if x.strip())
pct = lambda p: t[min(len(t) - 1, int(round(p / 100 * (len(t) - 1))))]
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{pct(50):.2f}\t{pct(99):.2f}")
EOF
  tail -1 "$PAGES" | awk -F'\t' '{ printf "  %s: p50 %s ms, p99 %s ms\n", $1, $3, $4 }' >&2
}
mid=$((REPOS / 2)); end=$((REPOS - 200)); tmid=$((TAGS_ONE / 2)); tend=$((TAGS_ONE - 200))
page "catalog, first page" "/v2/_catalog?n=100"
page "catalog, after load/r$mid" "/v2/_catalog?n=100&last=load/r$mid"
page "catalog, after load/r$end" "/v2/_catalog?n=100&last=load/r$end"
page "tags of load/r$mid (10 tags)" "/v2/load/r$mid/tags/list?n=100"
page "tags of load/r0, first page" "/v2/load/r0/tags/list?n=100"
page "tags of load/r0, after v$tmid" "/v2/load/r0/tags/list?n=100&last=v$tmid"
page "tags of load/r0, after v$tend" "/v2/load/r0/tags/list?n=100&last=v$tend"

# ---- 4. manifest GET, loaded vs empty
serve empty 3
GETS="$TMP/gets.jsonl"
: >"$GETS"
get() { # label port [flags…]
  local label=$1 port=$2
  shift 2
  "$BENCH" manifest-get --url "http://127.0.0.1:$port" --concurrency 16 --duration "${BENCH_SECS}s" --warmup 1s \
    --label "$label" --json "$@" >>"$GETS"
  tail -1 "$GETS" | jq -r '"  \(.label): \(.ops_per_sec) ops/s  p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  errors \(.errors)"' >&2
}
for round in $(seq 1 "$ROUNDS"); do
  log "manifest GET, round $round"
  get empty 5333
  get loaded-hot 5331
  get loaded-random 5331 --loaded "$REPOS,$((MANIFESTS / REPOS))"
  get loaded-random-1000 5331 --loaded "100,10"
done
stop empty

# ---- 5. a new region joins
target_index=$(admin status | jq '.last_log_index')
echo 5 >"/proc/${PID[us]}/clear_refs"
log "eu joins (us has committed up to $target_index)"
started=$(date +%s.%N)
MERIDIAN_AUTH_ENABLED=false "$MERIDIAN" serve --config "$TMP/eu.toml" >>"$TMP/eu.log" 2>&1 &
PID[eu]=$!
STARTED+=($!)
RSS_SAMPLES="$TMP/rss.tsv"
: >"$RSS_SAMPLES"
joined=""
for _ in $(seq 1 1800); do
  kill -0 "${PID[eu]}" 2>/dev/null || { log "eu exited"; tail -20 "$TMP/eu.log" >&2; exit 1; }
  now=$(date +%s.%N)
  echo "$(awk -v a="$started" -v b="$now" 'BEGIN { printf "%.1f", b - a }')	$(kib "${PID[us]}" VmRSS)	$(kib "${PID[eu]}" VmRSS)" >>"$RSS_SAMPLES"
  applied=$(admin region list 2>/dev/null | jq '[.regions[] | select(.name == "eu") | .last_applied] | max // 0' 2>/dev/null || echo 0)
  if [[ -z "$joined" && "$applied" -ge "$target_index" ]]; then
    joined=$(awk -v a="$started" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    log "eu applied $applied after $joined s; following its RSS for $BACKFILL_SECS s of blob backfill"
    backfill_until=$((SECONDS + BACKFILL_SECS))
  fi
  if [[ -n "$joined" && $SECONDS -ge $backfill_until ]]; then break; fi
  sleep 1
done
[[ -n "$joined" ]] || { log "eu did not catch up in 30 min"; exit 1; }
join_peak_us=$(kib "${PID[us]}" VmHWM)
peak_eu=$(kib "${PID[eu]}" VmHWM)
rest_eu=$(kib "${PID[eu]}" VmRSS)
max_rss_eu_join=$(awk -F'\t' -v j="$joined" '$1 <= j + 1 && $3 > m { m = $3 } END { print m + 0 }' "$RSS_SAMPLES")
"$MERIDIAN" admin --addr http://127.0.0.1:6331 --token "$TOKEN" --json replication status >"$TMP/replication.json" || true
installs=$(grep -c -i "install.*snapshot\|snapshot.*install" "$TMP/eu.log" || true)
eu_catalog=$(curl -s "http://127.0.0.1:5332/v2/_catalog?n=1&last=load/r$end" | jq -r '.repositories[0] // "none"')

# ---- the section
mean() { jq -s "map(select(.label == \"$1\") | .ops_per_sec) | add / length" "$GETS"; }
empty=$(mean empty); random=$(mean loaded-random); hot=$(mean loaded-hot); random_small=$(mean loaded-random-1000)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
SECTION="$TMP/section.md"
{
  echo "<!-- scale:begin -->"
  echo "## A million images: memory, snapshots, a region joining, listings, GETs"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(machine_line); every process shares it"
  echo "- Meridian: git $(git_rev); one-node regions, auth off, defaults otherwise (\`raft.snapshot_every\` 10000)"
  echo "- Command: \`$CMDLINE\`"
  echo "- State: $(jq -r '"\(.manifests) manifests in \(.repos) repositories (loaded in \(.seconds) s)"' "$TMP/load.json") + $(jq -r '"\(.manifests) tags of one repository (\(.seconds) s)"' "$TMP/load-one.json"), through the state machine's PutManifest commands; RocksDB ${db_mb} MB, Raft snapshot file ${snapshot_mb} MiB"
  echo
  echo "| figure | measured | target |"
  echo "|---|---:|---:|"
  echo "| us: peak RSS over the first start, which streams the whole state into a snapshot ($first_snapshot_secs s) | $(mib "$first_start_peak") MiB | < 1024 MiB |"
  echo "| us: RSS at rest | $(mib "$rest_us") MiB | < 1024 MiB |"
  echo "| us: peak RSS over \`meridian admin snapshot\` ($snapshot_secs s) | $(mib "$snapshot_peak") MiB | < 1024 MiB |"
  echo "| eu joins: start → applied everything us had committed (index $target_index; snapshot install + log) | $joined s | < 600 s |"
  echo "| eu: highest RSS sample until joined / peak RSS including $BACKFILL_SECS s of blob backfill after | $(mib "$max_rss_eu_join") / $(mib "$peak_eu") MiB | < 1024 MiB |"
  echo "| eu: RSS at the end | $(mib "$rest_eu") MiB | < 1024 MiB |"
  echo "| us: peak RSS while eu joined (sending the snapshot) | $(mib "$join_peak_us") MiB | < 1024 MiB |"
  echo
  echo "eu's catalog after \`load/r$end\` begins with \`$eu_catalog\` (the same state as us)."
  echo
  echo "Listing pages, $REQUESTS sequential GETs each (client wall time, curl \`time_total\`):"
  echo
  echo "| page | request | p50 ms | p99 ms | target |"
  echo "|---|---|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | `%s` | %s | %s | p99 < 20 |\n", $1, $2, $3, $4 }' "$PAGES"
  echo
  echo "Manifest GET × 16 clients, ${BENCH_SECS} s rounds, alternating (mean of $ROUNDS rounds):"
  echo
  echo "| registry | ops/s | ÷ empty | target |"
  echo "|---|---:|---:|---:|"
  echo "| empty, one image | $(printf '%.0f' "$empty") | 1.000 | |"
  echo "| loaded, one image (the same GET as the empty registry's) | $(printf '%.0f' "$hot") | $(ratio "$hot" "$empty") | 0.90–1.10 |"
  echo "| loaded, a random image of the first 1,000 per GET | $(printf '%.0f' "$random_small") | $(ratio "$random_small" "$empty") | |"
  echo "| loaded, a random image of all $MANIFESTS per GET (RocksDB ${db_mb} MB, block cache 128 MiB) | $(printf '%.0f' "$random") | $(ratio "$random" "$empty") | |"
  echo
  echo "RSS samples while eu joined (seconds since eu started, us KiB, eu KiB), every 30th:"
  echo
  echo '```'
  awk 'NR % 30 == 1' "$RSS_SAMPLES"
  echo '```'
  echo
  raw_json_details "$TMP/load.json" "$TMP/load-one.json" "$GETS"
  echo "<!-- scale:end -->"
} >"$SECTION"
write_section "$RESULTS_FILE" scale "$SECTION"
log "updated $RESULTS_FILE"
cat "$SECTION" >&2
