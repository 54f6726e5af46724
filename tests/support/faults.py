"""The images that make ``tests.support.faulty_service``'s model fail (importable without
loading a service, which resolves its model when imported)."""

from __future__ import annotations

import io

from PIL import Image

MODEL_ERROR = (1, 2, 3)
OUT_OF_MEMORY = (4, 5, 6)


def solid_png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()
