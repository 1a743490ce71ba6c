#!/usr/bin/env bash
# Installs the system packages Meridian needs on a fresh Debian machine with only Rust:
# clang/libclang for RocksDB's bindings, skopeo for the real-client tests. Packages
# already present are not touched; apt-get update runs only when something is missing.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [[ "${1:-}" == "--test" ]]; then
  command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
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
