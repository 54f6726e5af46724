"""VISIONTUNE_GPU_DECODE on a machine without CUDA or torchvision stops the server with the fix."""

from __future__ import annotations

import pytest
import torch

from service.gpu_decode import torchvision_available
from tests.support.servers import START_TIMEOUT_S, Server


@pytest.mark.skipif(
    torch.cuda.is_available() and torchvision_available(),
    reason="refused only without a CUDA GPU or torchvision",
)
def test_gpu_decode_without_a_gpu_stops_the_server(digits_model, tmp_path):
    refused = Server(tmp_path, {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_GPU_DECODE": "1"})
    try:
        refused.process.wait(timeout=START_TIMEOUT_S)
        assert refused.process.returncode != 0
        assert "VISIONTUNE_GPU_DECODE=1 needs " in refused.tail()
        assert "unset it to decode on CPU" in refused.tail()
    finally:
        refused.stop()
