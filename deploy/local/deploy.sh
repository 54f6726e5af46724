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
CONTAINER=visiontune-pod-0-classifier
URL=http://127.0.0.1:$LOCAL_PORT

render() {
    mkdir -p build
    kubectl kustomize deploy/k8s/overlays/local \
        | sed -e "s|image: $OVERLAY_IMAGE\$|image: $IMAGE|" \
              -e "s|hostPort: $OVERLAY_PORT\$|hostPort: $LOCAL_PORT|" > "$MANIFEST"
    grep -q "image: $IMAGE\$" "$MANIFEST" && grep -q "hostPort: $LOCAL_PORT\$" "$MANIFEST"
}

play() {
    local errors
    errors=$(mktemp)
    podman kube play --replace "$MANIFEST" >/dev/null 2>"$errors" || {
        cat "$errors" >&2
        rm -f "$errors"
        return 1
    }
    # Without systemd podman cannot run the probes as healthcheck timers and
    # says so; readiness is polled below instead.
    grep -v "systemd connection" "$errors" >&2 || true
    rm -f "$errors"
}

fail() {
    echo "deploy-local: $1; container log:" >&2
    podman logs --tail 60 "$CONTAINER" >&2 || true
    exit 1
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fs --max-time 5 -o /dev/null "$URL/readyz"; do
        [ "$(podman inspect --format '{{.RestartCount}}' "$CONTAINER")" = 0 ] \
            || fail "the server exited during start-up"
        [ $SECONDS -lt $deadline ] || fail "$URL/readyz not ready after ${READY_TIMEOUT}s"
        sleep 2
    done
}

podman image exists "$IMAGE" || IMAGE=$IMAGE deploy/local/build-image.sh
render
play
wait_ready
echo "deploy-local: ready at $URL (make undeploy-local removes it)"
