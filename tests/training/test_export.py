"""`visiontune export TAG --format onnx`: ONNX Runtime gives the PyTorch model's logits on
the digits test set, at any batch size, and the file carries labels and temperature."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from tests.support import REPO
from tests.support.builders import digits_config
from tests.support.cli import assert_one_line_error
from training.data import ImageSet, load_data
from training.store import load_predictor
from training.train import train

pytestmark = pytest.mark.slow


def visiontune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visiontune", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("family", ["resnet", "swin"])  # torch.export; TorchScript fallback
def test_onnx_runtime_matches_pytorch_on_the_digits_test_set(make_backbone, tmp_path, family):
    config = digits_config(
        make_backbone(family, 16), tmp_path / "run", epochs=1, test_fraction=0.3, strategy="full"
    )
    result = train(config)
    output = tmp_path / "exported" / "model.onnx"

    run = visiontune("export", result.tag, "--format", "onnx", "--output", output)
    assert run.returncode == 0, run.stderr
    assert f"exported {result.tag} to {output}" in run.stdout

    predictor, metadata, _ = load_predictor(str(result.tag))
    preprocessing = predictor.preprocessing
    test = load_data(config).test
    assert test and len(test) >= 20
    images = ImageSet(test, preprocessing)
    uint8 = torch.stack([images[i][0] for i in range(len(images))])
    pixels = preprocessing.normalize(uint8)
    expected = predictor.logits(uint8).numpy()
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    whole = session.run(["logits"], {"pixel_values": pixels.numpy()})[0]
    one_by_one = np.concatenate(
        [session.run(["logits"], {"pixel_values": pixels[i : i + 1].numpy()})[0] for i in range(5)]
    )
    np.testing.assert_allclose(whole, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(one_by_one, expected[:5], atol=1e-4, rtol=1e-4)
    assert (whole.argmax(1) == expected.argmax(1)).all()

    properties = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    assert json.loads(properties["visiontune.labels"]) == metadata.labels
    assert float(properties["visiontune.temperature"]) == metadata.temperature
    assert properties["visiontune.tag"] == str(result.tag)
    assert json.loads(properties["preprocessor_config"])["image_processor_type"]


def test_efficientnet_export_runs_in_openvino(make_backbone, tmp_path):
    """transformers' EfficientNet pools with a window OpenVINO refuses; the stored model
    exports with an equal global mean, which OpenVINO runs (at fp32) like PyTorch."""
    import openvino

    config = digits_config(make_backbone("efficientnet", 16), tmp_path / "run", epochs=1)
    result = train(config)
    output = tmp_path / "model.onnx"
    run = visiontune("export", result.tag, "--format", "onnx", "--output", output)
    assert run.returncode == 0, run.stderr

    predictor, _, _ = load_predictor(str(result.tag))
    val = ImageSet(load_data(config).val, predictor.preprocessing)
    uint8 = torch.stack([val[i][0] for i in range(len(val))])
    compiled = openvino.Core().compile_model(
        str(output), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    logits = compiled(predictor.preprocessing.normalize(uint8).numpy())[0]
    expected = predictor.logits(uint8).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_unknown_tag_is_one_line_exit_2(tmp_path):
    result = visiontune(
        "export", "no-such-model:v1", "--format", "onnx", "--output", tmp_path / "m"
    )
    assert_one_line_error(result, "no-such-model")
    assert not (tmp_path / "m").exists()


def test_unknown_format_is_one_line_exit_2():
    assert_one_line_error(visiontune("export", "x:y", "--format", "tflite"), "--format")
