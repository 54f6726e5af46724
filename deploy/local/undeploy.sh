#!/usr/bin/env bash
# Remove what deploy/local/deploy.sh started (the pod of the local overlay).
set -euo pipefail
cd "$(dirname "$0")/../.."

MANIFEST=build/deploy-local.yaml
if [ ! -f "$MANIFEST" ]; then
    mkdir -p build
    kubectl kustomize deploy/k8s/overlays/local > "$MANIFEST"
fi
# podman has no systemd here to remove healthcheck timers from; it says so
# on stderr and removes the pod all the same.
podman kube down "$MANIFEST" 2>/dev/null >/dev/null || true
if podman pod exists visiontune-pod-0; then
    echo "undeploy-local: pod visiontune-pod-0 is still there" >&2
    exit 1
fi
echo "undeploy-local: removed"
