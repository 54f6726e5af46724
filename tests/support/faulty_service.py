"""The real service with faults injected by marked images, for the failure tests.

``bentoml serve tests.support.faulty_service:ImageClassifier`` runs the service
unchanged but for ``Predictor.logits`` and Pillow's EXIF rotation: a batch holding
an image of the solid colour ``MODEL_ERROR`` raises a RuntimeError, one of more than
one image holding ``OUT_OF_MEMORY`` (any batch holding ``ALWAYS_OUT_OF_MEMORY``)
raises CUDA's out-of-memory error, as a GPU short of memory would, one holding
``SLOW`` takes ``SLOW_S`` longer; and decoding a PNG carrying the ``UNDECODABLE``
text chunk fails as a decoder plugin failing in a way of its own would
(tests/support/faults.py makes those images). Only the server imports this module.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import ImageOps

from contract.predictor import Predictor
from service.classifier import ImageClassifier
from tests.support.faults import (
    ALWAYS_OUT_OF_MEMORY,
    MODEL_ERROR,
    OUT_OF_MEMORY,
    SLOW,
    SLOW_S,
    UNDECODABLE,
)

_logits = Predictor.logits
_exif_transpose = ImageOps.exif_transpose


def _holds(pixels, colour) -> bool:
    return bool(np.any(np.all(np.asarray(pixels) == colour, axis=(1, 2, 3))))


def _failing_logits(self, pixels):
    if _holds(pixels, MODEL_ERROR):
        raise RuntimeError("injected model error")
    if _holds(pixels, ALWAYS_OUT_OF_MEMORY) or (len(pixels) > 1 and _holds(pixels, OUT_OF_MEMORY)):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    if _holds(pixels, SLOW):
        time.sleep(SLOW_S)
    return _logits(self, pixels)


def _failing_exif_transpose(image, **kwargs):
    key, value = UNDECODABLE
    if image.info.get(key) == value:
        raise KeyError("injected decoder failure")
    return _exif_transpose(image, **kwargs)


Predictor.logits = _failing_logits
ImageOps.exif_transpose = _failing_exif_transpose

__all__ = ["ImageClassifier"]
