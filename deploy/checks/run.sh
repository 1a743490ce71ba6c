#!/usr/bin/env bash
# Static checks of the deployment files, with the real tools (this kind of machine has no
# container engine that can run containers, so the container and Kubernetes artefacts are
# checked, not run): docker-compose's own parser on the compose file, hadolint on the
# Dockerfile, kubectl's kustomize rendering every overlay and kubernetes-validate checking
# what it renders against the Kubernetes schemas, systemd-analyze on the unit, and
# deploy/checks/consistency.py for what no tool knows: that ports, files and commands
# agree between the compose file, the region files, the overlays, the Dockerfile and the
# README. Run by deploy/test.sh; the tools come from deploy/install-deps.sh --test.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/test-tools/deploy-venv/bin
failed=0
check() { # description, command…
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $what"
    else
        echo "FAIL  $what"
        sed 's/^/      /' <<<"$out"
        failed=1
    fi
}

check "docker-compose config (deploy/docker-compose.yml)" \
    docker-compose -f deploy/docker-compose.yml config -q
check "docker-compose config with the prometheus and otel profiles" \
    docker-compose -f deploy/docker-compose.yml --profile prometheus --profile otel config -q
check "hadolint deploy/Dockerfile" "$VENV/hadolint" deploy/Dockerfile

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in deploy/kubernetes/overlays/*/; do
    region=$(basename "$overlay")
    check "kubectl kustomize $overlay" bash -c "kubectl kustomize '$overlay' > '$rendered/$region.yaml'"
    check "kubernetes-validate --strict ($region overlay, rendered)" \
        "$VENV/kubernetes-validate" --strict --quiet "$rendered/$region.yaml"
done
check "systemd-analyze verify deploy/vm/meridian.service" deploy/vm/verify-unit.sh
check "consistency of ports, files and commands" /usr/bin/python3 deploy/checks/consistency.py "$rendered"

exit "$failed"
