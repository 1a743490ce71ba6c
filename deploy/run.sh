#!/usr/bin/env bash
# Runs a Meridian node: 127.0.0.1:5000, data in ./data, unless flags say otherwise
# (`deploy/run.sh --listen 0.0.0.0:5000 --data-dir /var/lib/meridian --config FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
exec cargo run --release -p meridian-node --bin meridian -- serve "$@"
