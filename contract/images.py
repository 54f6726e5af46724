"""Image decoding and preprocessing, identical for training and serving.

Preprocessing is "resize to (height, width), rescale, normalise with mean/std":
exactly what the saved ``ViTImageProcessor`` config describes, so the stored
model also works with a plain ``transformers`` pipeline. Images are decoded and
resized one by one (PIL, in C); rescaling and normalisation run on the whole
batch as one tensor operation.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An input that is not a usable image; ``reason`` is a short machine-readable key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def decode_image(
    source: bytes | str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode bytes or a file into an RGB image, honouring EXIF orientation.

    The pixel limit is checked on the header, before the pixels are decoded, so a
    decompression bomb costs nothing. ``draft_size`` (width, height) lets JPEG
    decoding skip detail that resizing would throw away.
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if not data:
        raise ImageError("empty", "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise ImageError("too_many_pixels", str(err)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise ImageError("not_an_image", "not a recognised image format") from None
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(
                "too_many_pixels",
                f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
            )
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError("truncated", f"image data is truncated or corrupt ({err})") from None
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha is composited on white, 16/32-bit depth is scaled down."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I") and array.max(initial=0) > 255 else 255.0
        array = np.clip(array / scale * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocessing:
    """Size, mean and std that travel with the weights (``preprocessor_config.json``)."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255

    @classmethod
    def from_processor(cls, processor, image_size: tuple[int, int] | None = None):
        """Read a transformers image processor; ``image_size`` overrides its size."""
        if image_size is None:
            image_size = _processor_size(processor)
        return cls(
            height=int(image_size[0]),
            width=int(image_size[1]),
            mean=_triple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)),
            std=_triple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)),
            rescale_factor=float(getattr(processor, "rescale_factor", 1 / 255)),
        )

    @classmethod
    def from_pretrained(cls, path: str | Path):
        from transformers import AutoImageProcessor

        return cls.from_processor(AutoImageProcessor.from_pretrained(str(path)))

    def to_processor(self):
        """The equivalent transformers processor, saved next to the weights."""
        from transformers import ViTImageProcessorPil

        return ViTImageProcessorPil(
            do_resize=True,
            size={"height": self.height, "width": self.width},
            resample=Image.Resampling.BILINEAR,
            do_rescale=True,
            rescale_factor=self.rescale_factor,
            do_normalize=True,
            image_mean=list(self.mean),
            image_std=list(self.std),
        )

    @property
    def draft_size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def resize(self, image: Image.Image) -> np.ndarray:
        """One RGB image to a (height, width, 3) uint8 array."""
        resized = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 to normalised (B, 3, H, W) float32, as one batched operation."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        pixels = batch.permute(0, 3, 1, 2).float().mul_(self.rescale_factor)
        return pixels.sub_(mean).div_(std)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images to ``pixel_values`` (B, 3, H, W)."""
        batch = torch.from_numpy(np.stack([self.resize(image) for image in images]))
        return self.normalize(batch)


def _processor_size(processor) -> tuple[int, int]:
    size = (
        getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False)
        else None
    )
    size = size or getattr(processor, "size", None) or {"height": 224, "width": 224}
    size = dict(size) if not isinstance(size, int) else {"shortest_edge": size}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    edge = int(size.get("shortest_edge") or size.get("longest_edge") or 224)
    return edge, edge


def _triple(values) -> tuple[float, float, float]:
    values = [float(v) for v in (values if isinstance(values, list | tuple) else [values] * 3)]
    return (values[0], values[1], values[2])
