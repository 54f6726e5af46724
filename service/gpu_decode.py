"""JPEGs decoded on the GPU in one batch (nvJPEG through torchvision), other files on the CPU.

With ``VISIONTUNE_GPU_DECODE=1`` the JPEG files of a request are decoded together
by ``torchvision.io.decode_jpeg(..., device="cuda")`` and resized on the GPU to the
model's size (bilinear with antialiasing, which is what PIL's BILINEAR does when it
shrinks), so their pixels never travel through host memory. A file stays with the
CPU decoder of ``contract.images`` when it is not a baseline RGB or greyscale JPEG
(PNG, WebP, CMYK JPEGs...), carries an EXIF rotation, exceeds the pixel limit (the
CPU path then refuses it with the usual 400), or when nvJPEG fails on the batch.
:func:`stack_pixels` uploads the CPU-decoded images of a batch through pinned memory.

torchvision is in the GPU image only; nothing here imports it until a GPU decoder is
made, so the CPU image and the tests run without it (with a fake batch decoder).
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from contract.images import Preprocessing

logger = logging.getLogger("bentoml.visiontune")

JPEG_START = b"\xff\xd8\xff"
EXIF_ORIENTATION = 0x0112
BatchDecoder = Callable[[list[bytes]], list[torch.Tensor]]


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def nvjpeg(device: torch.device) -> BatchDecoder:
    """torchvision's batched nvJPEG decoder: JPEG files to (3, H, W) uint8 tensors on ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(files: list[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(file), dtype=torch.uint8) for file in files]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode


class GpuJpegDecoder:
    """Decodes and resizes the JPEGs of a request on the GPU; the rest is left to the CPU."""

    def __init__(self, preprocessing: Preprocessing, max_pixels: int, decode_batch: BatchDecoder):
        self.size = (preprocessing.height, preprocessing.width)
        self.max_pixels = max_pixels
        self.decode_batch = decode_batch

    def __call__(self, files: Sequence[bytes | str]) -> dict[int, torch.Tensor]:
        """(height, width, 3) uint8 device tensors of the files it decoded, by index.

        Base64 text (``str``) and every file :meth:`takes` refuses are left out, for the
        CPU decoder; so is the whole request when nvJPEG fails on it.
        """
        chosen = [i for i, file in enumerate(files) if isinstance(file, bytes) and self.takes(file)]
        if not chosen:
            return {}
        try:
            decoded = self.decode_batch([files[i] for i in chosen])  # type: ignore[misc]
        except RuntimeError as err:
            logger.info("nvJPEG failed on a request (%s); decoding it on the CPU", err)
            return {}
        return {i: self.resize(image) for i, image in zip(chosen, decoded, strict=True)}

    def takes(self, file: bytes) -> bool:
        """A plain JPEG within the pixel limit, judged from its header (nothing decoded)."""
        if not file.startswith(JPEG_START):
            return False
        try:
            image = Image.open(io.BytesIO(file))
        except Exception:  # the CPU decoder names what is wrong with it
            return False
        width, height = image.size
        return (
            image.format == "JPEG"
            and image.mode in ("RGB", "L")
            and width * height <= self.max_pixels
            and image.getexif().get(EXIF_ORIENTATION, 1) == 1
        )

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 to the model's (height, width, 3) uint8, on the image's device."""
        pixels = image.unsqueeze(0).float()
        resized = torch.nn.functional.interpolate(
            pixels, size=self.size, mode="bilinear", antialias=True, align_corners=False
        )
        return resized.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)


def stack_pixels(pixels: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    """One (B, H, W, 3) uint8 batch from decoded images.

    Host arrays only (CPU decoding): a numpy batch, which ``Predictor`` uploads through
    pinned memory. With GPU-decoded tensors among them: a tensor on their device, the
    host arrays uploaded through pinned memory first.
    """
    if all(isinstance(image, np.ndarray) for image in pixels):
        return np.stack(pixels)  # type: ignore[arg-type]
    device = next(image.device for image in pixels if isinstance(image, torch.Tensor))
    return torch.stack([_on(device, image) for image in pixels])


def _on(device: torch.device, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    host = torch.from_numpy(image)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
