"""The real service with a model that fails on marked images, for the batch-failure tests.

``bentoml serve tests.support.faulty_service:ImageClassifier`` runs the service
unchanged but for ``Predictor.logits``: a batch holding an image of the solid
colour ``MODEL_ERROR`` raises a RuntimeError, and a batch of more than one image
holding one of colour ``OUT_OF_MEMORY`` raises CUDA's out-of-memory error, as a
GPU short of memory would (tests/support/faults.py makes those images). Only the
server imports this module.
"""

from __future__ import annotations

import numpy as np
import torch

from contract.predictor import Predictor
from service.classifier import ImageClassifier
from tests.support.faults import MODEL_ERROR, OUT_OF_MEMORY

_logits = Predictor.logits


def _holds(pixels, colour) -> bool:
    return bool(np.any(np.all(np.asarray(pixels) == colour, axis=(1, 2, 3))))


def _failing_logits(self, pixels):
    if _holds(pixels, MODEL_ERROR):
        raise RuntimeError("injected model error")
    if len(pixels) > 1 and _holds(pixels, OUT_OF_MEMORY):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    return _logits(self, pixels)


Predictor.logits = _failing_logits

__all__ = ["ImageClassifier"]
