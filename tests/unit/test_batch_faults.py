"""A model error fails its batch with a counted ``BatchFailed``; a CUDA out-of-memory
error is retried once as two halves. The predictor is the real ``contract.Predictor``
over a tiny model whose forward pass is made to fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from contract.images import Preprocessing
from contract.predictor import Predictor
from service import metrics
from service.faults import BatchFailed, run_batch

SIZE = 16


@pytest.fixture(scope="module")
def predictor(make_backbone) -> Predictor:
    from transformers import AutoModelForImageClassification

    path = make_backbone("resnet", image_size=SIZE)
    model = AutoModelForImageClassification.from_pretrained(str(path)).eval()
    return Predictor(model, Preprocessing.from_pretrained(path), temperature=1.0)


@pytest.fixture
def failing_forward(predictor, monkeypatch):
    """Make the model's forward raise ``error`` on batches larger than ``largest``; records
    the batch sizes it was called with."""
    calls: list[int] = []

    def install(error: type[Exception], largest: int) -> list[int]:
        forward = predictor.model.forward

        def fail_when_large(pixel_values, **kwargs):
            calls.append(len(pixel_values))
            if len(pixel_values) > largest:
                raise error("injected failure")
            return forward(pixel_values=pixel_values, **kwargs)

        monkeypatch.setattr(predictor.model, "forward", fail_when_large)
        return calls

    return install


def pixels(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def failures(reason: str) -> float:
    model = metrics.collectors().model  # the collectors are created on first use
    sample = REGISTRY.get_sample_value(
        "visiontune_batch_failures_total", {"model": model, "reason": reason}
    )
    return sample or 0.0


def test_out_of_memory_halves_the_batch_once(predictor, failing_forward):
    expected = predictor(pixels(8))
    calls = failing_forward(torch.cuda.OutOfMemoryError, largest=4)
    before = failures("out_of_memory")
    result = run_batch(predictor, pixels(8))
    assert calls == [8, 4, 4]
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    assert failures("out_of_memory") == before


def test_out_of_memory_twice_fails_the_batch(predictor, failing_forward):
    calls = failing_forward(torch.cuda.OutOfMemoryError, largest=2)
    before = failures("out_of_memory")
    with pytest.raises(BatchFailed, match="batch of 8 image"):
        run_batch(predictor, pixels(8))
    assert calls == [8, 4]
    assert failures("out_of_memory") == before + 1


def test_a_model_error_fails_the_batch_without_a_retry(predictor, failing_forward):
    calls = failing_forward(RuntimeError, largest=0)
    before = failures("model_error")
    with pytest.raises(BatchFailed, match=r"\(RuntimeError\)") as raised:
        run_batch(predictor, pixels(3))
    assert raised.value.reason == "model_error"
    assert calls == [3]
    assert failures("model_error") == before + 1
