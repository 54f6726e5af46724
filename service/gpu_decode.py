"""JPEGs decoded on the GPU in one batch (nvJPEG through torchvision), other files on the CPU.

With ``VISIONTUNE_GPU_DECODE=1`` the JPEG files of a request are decoded together
by ``torchvision.io.decode_jpeg(..., device="cuda")`` and brought to the model's
pixels on the GPU by the backbone's own policy, read from the same
``contract.images.Preprocessing`` the CPU path uses: the resized size
(``resized_size``: a squash, or the shortest edge with the aspect ratio kept), its
resampling filter (PIL's bilinear and bicubic with antialiasing, as PIL filters when
it shrinks, and nearest), the centre crop (``crop_origin``, zero padding where the
image is smaller) and the channel order. A policy with a filter torch has no
counterpart for (PIL's Lanczos, box, Hamming) is refused when the decoder is made,
at start-up. Decoded pixels never travel through host memory. A file stays with the
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
# PIL's filters torch resizes the same way (antialiased when shrinking, as PIL does)
GPU_FILTERS = {
    Image.Resampling.BILINEAR: "bilinear",
    Image.Resampling.BICUBIC: "bicubic",
    Image.Resampling.NEAREST: "nearest-exact",
}


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
        self.mode = interpolation(preprocessing)
        self.preprocessing = preprocessing
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
        """(3, H, W) uint8 to the model's (height, width, 3) uint8, on the image's device, as
        ``Preprocessing.resize`` does on the CPU: resize, centre crop, channel order."""
        policy = self.preprocessing
        width, height = policy.resized_size(image.shape[2], image.shape[1])
        pixels = image.unsqueeze(0)
        if (height, width) != tuple(image.shape[1:]):
            smooth = self.mode in ("bilinear", "bicubic")
            resized = torch.nn.functional.interpolate(
                pixels.float(),
                size=(height, width),
                mode=self.mode,
                antialias=smooth,
                align_corners=False if smooth else None,
            )
            pixels = resized.round_().clamp_(0, 255).to(torch.uint8)
        pixels = _centre_crop(pixels[0], policy.crop_origin(width, height), policy)
        if policy.flip_channel_order:
            pixels = pixels.flip(0)
        return pixels.permute(1, 2, 0)


def interpolation(preprocessing: Preprocessing) -> str:
    """torch's ``interpolate`` mode for the policy's PIL filter; other filters are refused."""
    resample = Image.Resampling(preprocessing.resample)
    if resample not in GPU_FILTERS:
        supported = ", ".join(f.name.lower() for f in GPU_FILTERS)
        raise ValueError(
            f"VISIONTUNE_GPU_DECODE=1 cannot resize like this model's processor "
            f"({resample.name.lower()} resampling; the GPU path does {supported}): "
            "unset it to decode on CPU"
        )
    return GPU_FILTERS[resample]


def _centre_crop(
    pixels: torch.Tensor, origin: tuple[int, int], policy: Preprocessing
) -> torch.Tensor:
    """The (3, height, width) window at ``origin`` (left, top), zeros outside the image."""
    left, top = origin
    _, rows, cols = pixels.shape
    if left >= 0 and top >= 0 and left + policy.width <= cols and top + policy.height <= rows:
        return pixels[:, top : top + policy.height, left : left + policy.width]
    out = pixels.new_zeros((3, policy.height, policy.width))
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + policy.height, rows), min(left + policy.width, cols)
    out[:, src_top - top : src_bottom - top, src_left - left : src_right - left] = pixels[
        :, src_top:src_bottom, src_left:src_right
    ]
    return out


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
