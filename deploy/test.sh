#!/usr/bin/env bash
# The test command: installs what the tests need, checks the deployment files
# (deploy/checks/run.sh: docker-compose, hadolint, kustomize + kubernetes-validate,
# systemd-analyze, and their consistency), then runs every test of the workspace
# (unit tests, HTTP tests against real `meridian` processes, skopeo, crash safety), then the
# blob and upload HTTP suites, the big-blob memory test and garbage collection across three
# regions a second time with every node's blobs in an S3-compatible object store (a real
# Garage, started per test).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh --test
# The deployment files, checked statically with real tools (seconds; no build needed).
if [[ $# -eq 0 ]]; then
  deploy/checks/run.sh
fi
# Release mode: the blob tests move gigabytes, and one RocksDB build serves both
# `deploy/run.sh` and the tests.
cargo test --release --workspace "$@"
if [[ $# -eq 0 ]]; then
  MERIDIAN_TEST_STORE=s3 cargo test --release -p meridian-node --test api_blobs --test api_uploads --test big_blob_memory --test gc
fi
