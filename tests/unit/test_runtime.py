"""Runtimes: the ONNX graphs `visiontune optimize` keeps, run by ONNX Runtime and OpenVINO, give
torch's scores; service.runtime checks each against torch fp32, times those that agree, and
falls back to torch saying why; GPU providers are refused clearly where there is none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch

from contract.precision import calibration_batch, cpu_has_native_bf16
from contract.predictor import Predictor
from contract.runtimes import PROVIDERS as PROVIDER_NAMES
from contract.runtimes import (
    OnnxRuntimePredictor,
    OpenVinoPredictor,
    RuntimeUnavailable,
    available_providers,
    graph_for,
)
from contract.samples import Samples, spread
from contract.savedmodel import ONNX_GRAPH, ModelMetadata
from service.runtime import build_runtime
from service.settings import Settings
from tests.support.builders import IMAGE_SIZE, store_random_classifier, unique_name
from tests.support.store import copy_model
from training.optimize import Int8Refused, OptimizeError, optimize
from training.store import update_metadata


def settings(**values: str) -> Settings:
    return Settings.from_env({f"VISIONTUNE_{k.upper()}": v for k, v in values.items()})


def load(tag) -> tuple[str, ModelMetadata]:
    stored = bentoml.models.get(tag)
    return stored.path, ModelMetadata.model_validate(stored.info.metadata)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> str:
    """A tiny random ResNet with held-out images whose labels are its own fp32 answers, and
    its fp32 ONNX graph."""
    tag = store_random_classifier(tmp_path_factory.mktemp("runtime-model"), unique_name("rt"))
    path, metadata = load(tag)
    images = calibration_batch(IMAGE_SIZE, IMAGE_SIZE, 64)
    reference = Predictor.from_folder(path, metadata)(images)
    Samples(images, reference.argmax(1), images[:32]).save(path)
    optimize(tag)
    return tag


def test_onnx_runtime_and_openvino_give_torch_scores(plain_model):
    path, metadata = load(plain_model)
    torch_predictor = Predictor.from_folder(path, metadata)
    images = calibration_batch(IMAGE_SIZE, IMAGE_SIZE, 16)
    expected = torch_predictor(images)
    graph = graph_for(path, "float32")
    preprocessing = torch_predictor.preprocessing
    for runtime in (
        OnnxRuntimePredictor(graph, preprocessing, metadata.temperature, threads=1),
        OpenVinoPredictor(graph, preprocessing, metadata.temperature, threads=1),
    ):
        np.testing.assert_allclose(runtime(images), expected, atol=2e-5)
        pixel_values = preprocessing.normalize(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(runtime.classify_pixel_values(pixel_values), expected, atol=2e-5)
        assert runtime.precision == "float32"


def test_optimize_keeps_the_graph_once_and_records_it(plain_model):
    path, metadata = load(plain_model)
    assert (Path(path) / ONNX_GRAPH).exists()
    assert metadata.onnx is not None and metadata.onnx.max_logit_difference < 1e-4
    again = optimize(plain_model)
    assert not again.exported  # made once


def test_explicit_runtime_serves_when_it_agrees(plain_model):
    path, metadata = load(plain_model)
    chosen = build_runtime(path, metadata, settings(runtime="onnxruntime", precision="fp32"))
    assert chosen.name == "onnxruntime" and chosen.predictor.precision == "float32"
    assert chosen.checked_on == "64 stored held-out images"
    [torch_row, onnx_row] = chosen.description()["runtimes"]
    assert torch_row["runtime"] == "torch"
    assert onnx_row["top1_agreement"] == 1.0 and onnx_row["max_score_change"] < 1e-4
    assert chosen.reason.startswith("VISIONTUNE_RUNTIME=onnxruntime: agrees with torch fp32")


def test_auto_times_every_runtime_that_agrees_and_takes_the_fastest(plain_model):
    path, metadata = load(plain_model)
    chosen = build_runtime(path, metadata, settings(runtime="auto", max_batch_size="4"))
    timed = [c for c in chosen.candidates if c.seconds]
    assert {c.runtime for c in timed} == {"torch", "onnxruntime", "openvino"}
    assert all(sorted(c.seconds) == [1, 2, 4] for c in timed)
    fastest = min(timed, key=lambda c: c.best)
    assert (chosen.name, chosen.predictor.precision) == (fastest.runtime, fastest.precision)
    assert chosen.reason.startswith("auto: the fastest that agrees with torch fp32")
    assert "ms per image at its fastest batch size: torch " in chosen.reason
    # every timed candidate, in the precision this CPU gives it (torch is bf16 on a CPU with it)
    assert all(f"{c.name} {1000 * c.best:.2f}" in chosen.reason for c in timed)
    # no int8 graph is kept: listed as refused, with the command that makes it
    int8 = [c for c in chosen.candidates if c.precision == "int8"]
    assert int8 and all("visiontune optimize TAG --int8" in c.refused for c in int8)


def test_a_graph_that_disagrees_falls_back_to_torch_saying_why(plain_model, caplog):
    import onnx
    from onnx import numpy_helper

    tag = copy_model(plain_model, unique_name("rt-off"))
    path, metadata = load(tag)
    graph = onnx.load(str(Path(path) / ONNX_GRAPH))
    bias = max(graph.graph.initializer, key=lambda t: "classifier" in t.name and t.dims == [10])
    values = numpy_helper.to_array(bias).copy()
    values[0] += 5.0  # every image's label becomes 0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(graph, str(Path(path) / ONNX_GRAPH))
    with caplog.at_level("INFO", logger="bentoml.visiontune"):
        chosen = build_runtime(path, metadata, settings(runtime="openvino", precision="fp32"))
    assert chosen.name == "torch"
    assert "VISIONTUNE_RUNTIME=openvino, but no precision of it agreed" in chosen.reason
    assert "openvino float32 refused: disagrees with torch fp32 on 64 stored" in chosen.reason
    assert "needs 99.5%" in chosen.reason
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving with")]
    assert lines == [f"serving with torch float32: {chosen.reason}"]


def test_a_model_without_a_graph_serves_torch_and_names_the_command(tmp_path):
    tag = store_random_classifier(tmp_path, unique_name("rt-none"))
    path, metadata = load(tag)
    chosen = build_runtime(path, metadata, settings(runtime="onnxruntime", max_batch_size="1"))
    assert chosen.name == "torch" and chosen.checked_on is None
    assert "has no onnx/model.onnx: run `visiontune optimize TAG`" in chosen.reason


def test_openvino_precision_is_stated_and_checked(plain_model):
    path, metadata = load(plain_model)
    chosen = build_runtime(path, metadata, settings(runtime="openvino", precision="bf16"))
    [_, bf16] = chosen.candidates
    assert bf16.precision == "bfloat16"
    if chosen.name == "openvino":
        assert chosen.predictor.precision == "bfloat16"
        assert chosen.predictor.model.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    elif not cpu_has_native_bf16():  # OpenVINO would compute in f32: never served as bf16
        assert bf16.refused == (
            "OpenVINO computes in f32 on this CPU, not bfloat16 (bf16 needs AVX512-BF16 or AMX)"
        )
    else:
        assert bf16.refused.startswith("disagrees with torch fp32")


def test_int8_is_kept_with_its_accuracy_change_or_refused_past_the_tolerance(plain_model):
    tag = str(copy_model(plain_model, unique_name("rt-int8")))
    path, _ = load(tag)
    done = optimize(tag, int8=True, max_loss=1.0)
    check = done.graphs.int8
    assert check.held_out_images == 64 and check.calibration_images == 32
    assert check.accuracy_fp32 == 1.0  # the held-out labels are fp32's own answers
    assert check.accuracy_change == pytest.approx(check.accuracy_int8 - 1.0)
    assert check.accuracy_change == pytest.approx(check.top1_agreement - 1.0)
    assert ModelMetadata.model_validate(bentoml.models.get(tag).info.metadata).onnx.int8 == check
    if check.accuracy_change < 0:  # a stricter tolerance refuses it and keeps nothing new
        strict = str(copy_model(plain_model, unique_name("rt-strict")))
        with pytest.raises(Int8Refused, match="more than the 0.00% allowed"):
            optimize(strict, int8=True, max_loss=0.0)
        assert not (Path(load(strict)[0]) / "onnx" / "model.int8.onnx").exists()


def test_int8_needs_the_stored_images(tmp_path):
    tag = store_random_classifier(tmp_path, unique_name("rt-bare"))
    with pytest.raises(OptimizeError, match="keeps no sample images"):
        optimize(tag, int8=True)


def test_metadata_updates_are_read_back_by_bentoml(plain_model):
    """A fresh process (nothing cached) reads the updated model.yaml through BentoML."""
    tag = str(copy_model(plain_model, unique_name("rt-meta")))
    with pytest.raises(ValueError, match="basic python types"):
        update_metadata(bentoml.models.get(tag), {"note": None})
    update_metadata(bentoml.models.get(tag), {"onnx": {"opset": 1}, "note": "ünïcode"})
    script = (
        "import bentoml, json, sys; m = bentoml.models.get(sys.argv[1]).info.metadata; "
        "print(json.dumps([m['onnx'], m['note'], m['labels'][:2]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tag)], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [{"opset": 1}, "ünïcode", ["0", "1"]]


def test_gpu_providers_are_refused_with_the_fix_where_absent():
    cpu_only = ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="ONNX_PROVIDER=cuda needs an NVIDIA GPU"):
        settings(runtime="onnxruntime", onnx_provider="cuda").check_runtime(False, cpu_only)
    with pytest.raises(ValueError, match="needs onnxruntime-gpu .*TensorrtExecutionProvider"):
        settings(runtime="onnxruntime", onnx_provider="tensorrt").check_runtime(True, cpu_only)
    with pytest.raises(ValueError, match="applies to ONNX Runtime"):
        settings(runtime="auto", onnx_provider="cuda").check_runtime(True, cpu_only)
    with pytest.raises(ValueError, match="fp32 or int8 on a CPU"):
        settings(runtime="onnxruntime", precision="bf16").check_runtime(False, cpu_only)
    settings(runtime="onnxruntime", onnx_provider="cuda").check_runtime(
        True, ["CUDAExecutionProvider", *cpu_only]
    )


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_an_absent_provider_is_never_a_silent_cpu_fallback(plain_model, provider):
    path, metadata = load(plain_model)
    if PROVIDER_NAMES[provider] in available_providers():
        pytest.skip("this machine has the provider (benchmarks/gpu_check.sh runs it)")
    graph = graph_for(path, "float32")
    preprocessing = Predictor.from_folder(path, metadata).preprocessing
    with pytest.raises(RuntimeUnavailable, match="is not available here .*onnxruntime-gpu"):
        OnnxRuntimePredictor(graph, preprocessing, 1.0, provider=provider)


def test_samples_spread_over_every_label():
    labels = [0] * 50 + [1] * 3 + [2] * 10
    chosen = spread(labels, 9)
    assert len(chosen) == 9 and len(set(chosen)) == 9
    assert {labels[i] for i in chosen} == {0, 1, 2}
    assert sum(labels[i] == 1 for i in chosen) == 3
    assert spread(labels, 100) == list(range(len(labels)))


def test_samples_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = Samples(
        rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
        np.array([0, 2, 1]),
        rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
    )
    samples.save(tmp_path)
    again = Samples.load(tmp_path)
    for name in ("held_out", "held_out_labels", "calibration"):
        np.testing.assert_array_equal(getattr(again, name), getattr(samples, name))
    assert Samples.load(tmp_path / "nothing") is None
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_a_gpu_provider_gives_torch_scores(plain_model, provider):
    if PROVIDER_NAMES[provider] not in available_providers():
        pytest.skip(f"needs onnxruntime-gpu with {provider} (benchmarks/gpu_check.sh runs it)")
    path, metadata = load(plain_model)
    expected_predictor = Predictor.from_folder(path, metadata)
    images = calibration_batch(IMAGE_SIZE, IMAGE_SIZE, 16)
    on_gpu = OnnxRuntimePredictor(
        graph_for(path, "float32"),
        expected_predictor.preprocessing,
        metadata.temperature,
        provider=provider,
    )
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu(images), expected_predictor(images), atol=1e-3)
