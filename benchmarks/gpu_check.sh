#!/usr/bin/env bash
# Every GPU check of the serving path in one go, for a machine with CUDA:
#   1. the GPU tests (nvJPEG decoding, which skip on CPU);
#   2. the serving benchmark: ViT-B/16 at 224 in bf16 and DeiT-tiny in bf16, at
#      concurrency 1-256, CPU decoding and nvJPEG decoding (VISIONTUNE_GPU_DECODE);
#      EfficientNet-Lite0 (ImageNet weights, a real CNN) in bf16 with CPU decoding;
#   3. BENCHMARKS.md rebuilt with the GPU sections.
# Needs a venv with torch's CUDA build and the matching torchvision (for nvJPEG):
#   make install && .venv/bin/pip install -e '.[bench]' 'torchvision==0.28.0'
# QUICK=1 runs each benchmark in its --quick form (about a minute each) to check the
# setup; the full run takes about 10 minutes per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
QUICK=${QUICK:-0}

"$PY" -c 'import torch, torchvision; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())'
"$PY" -m pytest -q tests/unit/test_gpu_decode.py tests/unit/test_precision.py

run() {
    local extra=()
    if [ "$QUICK" = 1 ]; then extra+=(--quick); fi
    "$PY" -m benchmarks.serve_throughput --device cuda "$@" "${extra[@]}" \
        --concurrency 1,8,32,64,128,256 --batch-sizes 1,8,32,64,128
}
run --preset vit-base --dtype bf16
run --preset vit-base --dtype bf16 --gpu-decode
run --preset deit-tiny --dtype bf16
run --preset deit-tiny --dtype bf16 --gpu-decode
run --preset efficientnet-lite0 --dtype bf16
"$PY" -m benchmarks.report
