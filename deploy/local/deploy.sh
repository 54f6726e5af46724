#!/usr/bin/env bash
# Run deploy/k8s/overlays/local with `podman kube play`: build the image first
# if it does not exist, wait until /readyz answers, print the URL.
#
#   LOCAL_PORT     loopback port to publish (default 3300)
#   IMAGE          image to run (default localhost/visiontune-cpu:local)
#   READY_TIMEOUT  seconds to wait for /readyz (default 300)
set -euo pipefail
cd "$(dirname "$0")/../.."

LOCAL_PORT=${LOCAL_PORT:-3300}
IMAGE=${IMAGE:-localhost/visiontune-cpu:local}
READY_TIMEOUT=${READY_TIMEOUT:-300}
OVERLAY_IMAGE=localhost/visiontune-cpu:local
OVERLAY_PORT=3300
MANIFEST=build/deploy-local.yaml
URL=http://127.0.0.1:$LOCAL_PORT

render() {
    mkdir -p build
    kubectl kustomize deploy/k8s/overlays/local \
        | sed -e "s|image: $OVERLAY_IMAGE\$|image: $IMAGE|" \
              -e "s|hostPort: $OVERLAY_PORT\$|hostPort: $LOCAL_PORT|" > "$MANIFEST"
    grep -q "image: $IMAGE\$" "$MANIFEST" && grep -q "hostPort: $LOCAL_PORT\$" "$MANIFEST"
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fs -o /dev/null "$URL/readyz"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "deploy-local: $URL/readyz not ready after ${READY_TIMEOUT}s; container log:" >&2
            podman logs --tail 50 visiontune-pod-0-classifier >&2 || true
            return 1
        fi
        sleep 2
    done
}

podman image exists "$IMAGE" || IMAGE=$IMAGE deploy/local/build-image.sh
render
# Without systemd, podman cannot schedule the probes as healthcheck timers and
# says so for every start; readiness is polled below instead.
podman kube play --replace "$MANIFEST" 2> >(grep -v "systemd connection" >&2) >/dev/null
wait_ready
echo "deploy-local: ready at $URL (make undeploy-local removes it)"
