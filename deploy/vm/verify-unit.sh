#!/usr/bin/env bash
# Checks a Meridian systemd unit with `systemd-analyze verify` on a machine where the
# meridian binary is not installed (verify refuses a unit whose ExecStart= binary does
# not exist). The unit is copied, under its own name, into a temporary directory with
# /usr/local/bin/meridian replaced by a stub executable there; nothing is installed and
# no unit is loaded into the running systemd.
#
#   deploy/vm/verify-unit.sh                      # checks deploy/vm/meridian.service
#   deploy/vm/verify-unit.sh path/to/meridian.service
#
# Exit status 0 when systemd-analyze has nothing to say about the unit; 1 when it
# reports any problem (unknown keys, values it cannot parse, commands that are not
# executable, missing dependencies …: every line naming meridian.service counts,
# warnings included); 2 when it cannot run. Lines about other units of this machine are
# shown but do not fail the check.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit=${1:-$here/meridian.service}
[[ -f $unit ]] || { echo "no such unit file: $unit" >&2; exit 2; }
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze not found (apt-get install systemd)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/meridian"
chmod 0755 "$tmp/meridian"
# Same line numbers as the original, so messages point at the right line.
sed "s|/usr/local/bin/meridian|$tmp/meridian|g" "$unit" >"$tmp/meridian.service"
if ! grep -q "^ExecStart=$tmp/meridian " "$tmp/meridian.service"; then
    echo "$unit: expected ExecStart=/usr/local/bin/meridian …; not checked" >&2
    exit 1
fi

status=0
out=$(SYSTEMD_COLORS=0 systemd-analyze verify --man=no "$tmp/meridian.service" 2>&1) || status=$?
out=${out//"$tmp/meridian.service"/$unit}
installed=/usr/local/bin/meridian
out=${out//"$tmp/meridian"/$installed}

problems=$(grep -F 'meridian.service' <<<"$out" || true)
others=$(grep -vF 'meridian.service' <<<"$out" | sed '/^$/d' || true)
if [[ -n $others ]]; then
    echo "systemd-analyze, about other units (not counted):"
    sed 's/^/  /' <<<"$others"
fi
if [[ -n $problems || $status -ne 0 ]]; then
    echo "FAIL: $unit (systemd-analyze verify exit status $status)" >&2
    [[ -n $problems ]] && sed 's/^/  /' <<<"$problems" >&2
    exit 1
fi
echo "OK: $unit passes systemd-analyze verify ($(systemd-analyze --version | head -n1))"
