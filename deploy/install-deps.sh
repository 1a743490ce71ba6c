#!/usr/bin/env bash
# Installs the system packages Meridian needs on a fresh Debian machine with only Rust:
# clang/libclang for RocksDB's bindings; with --test also skopeo, openssl, curl and
# Python (venv) for the real-client and TLS tests, and the Python `oras` client in target/test-tools/oras-venv.
# Packages already present are not touched; apt-get update runs only when something is
# missing.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [[ "${1:-}" == "--test" ]]; then
  command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
fi
if [[ "${1:-}" == "--bench" ]]; then
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
fi

if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  # The Python oras client for the auth tests, in a venv under target/ (reused).
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  VENV="$ROOT/target/test-tools/oras-venv"
  if ! "$VENV/bin/python" -c 'import oras.client' >/dev/null 2>&1; then
    echo "installing the Python oras client into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'oras==0.2.43'
  fi
fi
