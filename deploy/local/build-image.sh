#!/usr/bin/env bash
# Build the CPU bento (bentofile-cpu.yaml) and containerize it with podman,
# from the locally built base image; nothing is pulled from a registry.
#
#   VISIONTUNE_MODEL  model to pack, NAME:VERSION or NAME@STAGE (default
#                     visiontune-classifier@production), from the store at
#                     BENTOML_HOME (default ~/bentoml)
#   IMAGE             image to tag (default localhost/visiontune-cpu:local,
#                     what deploy/k8s/overlays/local runs)
#   TORCH_WHEEL       the torch 2.13.0 CPU wheel (deploy/local/stage-torch-wheel.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."

BENTOML=${BENTOML:-.venv/bin/bentoml}
IMAGE=${IMAGE:-localhost/visiontune-cpu:local}
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=${VISIONTUNE_MODEL:-visiontune-classifier@production}
# The build trusts the CAs this host trusts (a site's TLS proxy included):
# uv in the build container reads the host's bundle (UV_SYSTEM_CERTS).
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# One line saying what is missing (no such model, no production model: how to promote one).
check_model() {
    "$PYTHON" -c 'import sys; from contract.stages import StageError, resolve
try: resolve(sys.argv[1])
except StageError as err: sys.exit(f"build-image: {err}")' "$MODEL"
}

build_bento() {
    VISIONTUNE_MODEL=$MODEL "$BENTOML" build -f bentofile-cpu.yaml --output tag | tail -1 \
        | sed 's/^__tag__://'
}

packed_model() {
    "$BENTOML" get "$1" -o json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"][0]["models"][0]["tag"])'
}

# The image's VISIONTUNE_MODEL names the exact model packed, whatever its name,
# so the container serves it without further settings.
containerize() {
    local bento=$1
    local mounts=()
    [ -f "$CA_BUNDLE" ] && mounts=(--opt "volume=$CA_BUNDLE:$CA_BUNDLE:ro")
    "$BENTOML" containerize "$bento" --backend podman --opt network=host "${mounts[@]}" \
        --opt "env=VISIONTUNE_MODEL=$(packed_model "$bento")" --image-tag "$IMAGE"
}

deploy/local/build-base-image.sh
deploy/local/stage-torch-wheel.sh
check_model
BENTO=$(build_bento)
echo "build-image: built bento $BENTO"
containerize "$BENTO"
echo "build-image: $IMAGE serves bento $BENTO"
