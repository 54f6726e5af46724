#!/usr/bin/env bash
# Every GPU check of the serving path in one go, for a machine with CUDA:
#   1. the GPU tests (nvJPEG decoding, which skip on CPU);
#   2. the serving benchmark: ViT-B/16 at 224 in bf16 and DeiT-tiny in bf16, at
#      concurrency 1-256, CPU decoding and nvJPEG decoding (VISIONTUNE_GPU_DECODE);
#      EfficientNet-Lite0 (ImageNet weights, a real CNN) in bf16 with CPU decoding;
#      the service on ONNX Runtime's CUDA and TensorRT execution providers (fp32 and,
#      on TensorRT, fp16) for EfficientNet-Lite0 and DeiT-tiny;
#   3. BENCHMARKS.md rebuilt with the GPU sections.
# Needs a venv with torch's CUDA build and the matching torchvision (for nvJPEG), and
# onnxruntime-gpu in place of onnxruntime (with CUDA, cuDNN and TensorRT libraries):
#   make install && .venv/bin/pip install -e '.[bench]' 'torchvision==0.28.0'
#   .venv/bin/pip uninstall -y onnxruntime && .venv/bin/pip install onnxruntime-gpu
# QUICK=1 runs each benchmark in its --quick form (about a minute each) to check the
# setup; the full run takes about 10 minutes per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
QUICK=${QUICK:-0}

"$PY" -c 'import torch, torchvision; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())'
"$PY" -c 'import onnxruntime as o; p = o.get_available_providers(); print(p); assert "CUDAExecutionProvider" in p, "onnxruntime-gpu is not installed"'
# the GPU decoder's pixels per backbone family, and the GPU providers (they skip without)
"$PY" -m pytest -q tests/unit/test_gpu_decode.py tests/unit/test_precision.py tests/unit/test_runtime.py

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
run --preset efficientnet-lite0 --dtype fp32 --onnx-provider cuda
run --preset efficientnet-lite0 --dtype fp16 --onnx-provider tensorrt
run --preset deit-tiny --dtype fp32 --onnx-provider cuda
run --preset deit-tiny --dtype fp16 --onnx-provider tensorrt
"$PY" -m benchmarks.report
