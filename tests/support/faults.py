"""The marked images that make the model of ``tests.support.faulty_service`` fail.

Kept apart from that module, which patches the predictor as it is imported: tests
import these without patching their own process.
"""

from __future__ import annotations

import io

from PIL import Image

MODEL_ERROR = (1, 2, 3)  # a batch holding an image of this solid colour raises RuntimeError
OUT_OF_MEMORY = (4, 5, 6)  # a batch of 2+ holding one raises CUDA's out-of-memory error
FAULTY_SERVICE = "tests.support.faulty_service:ImageClassifier"


def solid_png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()
