#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace
# (unit tests, HTTP tests against real `meridian` processes, skopeo, crash safety).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh --test
# Release mode: the blob tests move gigabytes, and one RocksDB build serves both
# `deploy/run.sh` and the tests.
exec cargo test --release --workspace "$@"
