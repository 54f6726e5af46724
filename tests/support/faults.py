"""The marked images that make ``tests.support.faulty_service`` fail.

Kept apart from that module, which patches the predictor as it is imported: tests
import these without patching their own process.
"""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

MODEL_ERROR = (1, 2, 3)  # a batch holding an image of this solid colour raises RuntimeError
OUT_OF_MEMORY = (4, 5, 6)  # a batch of 2+ holding one raises CUDA's out-of-memory error
ALWAYS_OUT_OF_MEMORY = (7, 8, 9)  # any batch holding one does, halves included
SLOW = (10, 11, 12)  # a batch holding one takes SLOW_S longer
SLOW_S = 2.0
# a PNG text chunk: the decoder fails on the image in a way of its own (not a damaged file)
UNDECODABLE = ("visiontune-fault", "undecodable")
FAULTY_SERVICE = "tests.support.faulty_service:ImageClassifier"


def solid_png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()


def undecodable_png() -> bytes:
    text = PngImagePlugin.PngInfo()
    text.add_text(*UNDECODABLE)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 0)).save(buffer, "PNG", pnginfo=text)
    return buffer.getvalue()
