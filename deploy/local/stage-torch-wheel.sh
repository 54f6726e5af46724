#!/usr/bin/env bash
# Put the torch 2.13.0 CPU wheel where bentofile-cpu.yaml expects it
# (build/wheels/). TORCH_WHEEL names the source (default: this machine's copy;
# elsewhere download it from PyTorch's CPU index, see bentofile-cpu.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."

WHEEL_NAME=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_WHEEL=${TORCH_WHEEL:-/opt/wheels/$WHEEL_NAME}

mkdir -p build/wheels
[ -f "build/wheels/$WHEEL_NAME" ] || cp "$TORCH_WHEEL" "build/wheels/$WHEEL_NAME"
