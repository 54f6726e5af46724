#!/usr/bin/env bash
# Build the trainer image that deploy/k8s/retrain runs, from the local base
# image and torch's CPU wheel; Python packages come from the package index.
#
#   IMAGE  image to tag (default localhost/visiontune-train:local)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-localhost/visiontune-train:local}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

deploy/local/build-base-image.sh
deploy/local/stage-torch-wheel.sh
CONTEXT=$(mktemp -d /var/tmp/visiontune-train.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT
cp -r pyproject.toml README.md contract training service visiontune "$CONTEXT"/
find "$CONTEXT" -name __pycache__ -prune -exec rm -rf {} +
mkdir "$CONTEXT/wheels"
cp build/wheels/torch-*.whl "$CONTEXT/wheels/"
mounts=()
[ -f "$CA_BUNDLE" ] && mounts=(--volume "$CA_BUNDLE:$CA_BUNDLE:ro")
podman build --network host "${mounts[@]}" -f deploy/k8s/retrain/Dockerfile -t "$IMAGE" "$CONTEXT"
podman run --rm "$IMAGE" retrain --help >/dev/null
echo "build-train-image: built $IMAGE"
