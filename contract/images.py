"""Image decoding and preprocessing, identical for training and serving.

Decoding accepts the formats of ``FORMATS`` only (JPEG, PNG, WebP, GIF, BMP,
TIFF), each read by a decoder written in C: any other file is refused as
``unsupported_format`` before a decoder runs. That keeps out the plugins that
decode in Python under the GIL (QOI, FITS, run-length BMP...), call external
programs (EPS runs Ghostscript) or decode a whole embedded image while opening
(ICO, whose PNG icons can be of any size). Only the first frame of an animated
GIF, WebP or PNG and the first page of a TIFF is decoded, so only its size is
checked and only its pixels are paid for. The size is checked on the header,
before any pixel is decoded; then the image is shrunk as early as possible
(JPEG's DCT scaling, ``Image.reduce`` otherwise) to what the model needs, and
high bit depths go to 8 bits with integer shifts, never through float copies.

Preprocessing is "resize to (height, width), rescale, normalise with mean/std":
exactly what the saved ``ViTImageProcessor`` config describes, so the stored
model also works with a plain ``transformers`` pipeline. Images are decoded and
resized one by one (PIL, in C); rescaling and normalisation run on the whole
batch as one tensor operation.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

# A 24 Mpx camera photo (6000x4000) passes; the model sees a few hundred pixels a side.
DEFAULT_MAX_PIXELS = 25_000_000
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Errors Pillow's plugins raise on corrupt data (besides OSError and ValueError).
_DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)
# Modes Image.reduce averages correctly; others (palettes, 16 bits) are converted first.
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")


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

    ``draft_size`` (width, height) is what the caller will resize to: the image
    is shrunk towards it while it is decoded (a JPEG by its DCT scaling, to no less
    than that size; the others by ``Image.reduce``, to no less than twice it).
    """
    return load_image(open_image(source, max_pixels=max_pixels), draft_size=draft_size)


def open_image(
    source: bytes | str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Read the header only: format allowed, decoder in C, no more than ``max_pixels``."""
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if not data:
        raise ImageError("empty", "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as err:
            raise ImageError("too_many_pixels", f"too many pixels: {err}") from None
        except UnidentifiedImageError:
            raise _unrecognised(data) from None
        except _DECODER_ERRORS:
            raise ImageError("not_an_image", "not a recognised image format") from None
    python_decoders = [tile.codec_name for tile in image.tile if tile.codec_name in Image.DECODERS]
    if python_decoders:
        raise ImageError(
            "unsupported_format",
            f"{image.format} with {python_decoders[0]} encoding is not accepted; "
            f"accepted: {', '.join(FORMATS)} (BMP uncompressed)",
        )
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    return image


def load_image(image: Image.Image, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode the pixels of an ``open_image``, shrunk towards ``draft_size``, as RGB."""
    if draft_size is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
        image.draft("RGB", draft_size)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODER_ERRORS as err:
        raise ImageError("truncated", f"image data is truncated or corrupt ({err})") from None
    except Exception as err:  # a plugin failing on hostile bytes in a way of its own
        raise ImageError(
            "undecodable", f"the image decoder failed ({type(err).__name__})"
        ) from None
    image = _eight_bit(image)
    if draft_size is not None:
        image = _shrink(image, draft_size)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha is composited on white, 16/32-bit depth is scaled down."""
    image = _eight_bit(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit greyscale to 8-bit ("L"), decided by the mode, never by the values.

    ``I;16*`` keeps its high byte (65535 is white, a dark image stays dark); ``I``
    is read as 16-bit data, as 16-bit PNG and TIFF files decode to (clipped to
    0..65535); ``F`` is clipped to 0..255, as Pillow converts it. Pillow's integer
    point operation does it in C, with no float or numpy copy of the pixels.
    """
    if image.mode == "F":
        return image.convert("L")
    if image.mode.startswith("I;16") and image.mode != "I;16":  # other byte orders
        image = image.convert("I")
    if image.mode in ("I", "I;16"):
        return image.point(lambda value: value / 256).convert("L")
    return image


def _shrink(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Box-reduce by an integer factor while the image stays at least twice ``target``
    (either way round, as EXIF may have turned it): resizing from there loses nothing."""
    factor = min(image.size) // (2 * max(target))
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:
        image = to_rgb(image)
    return image.reduce(factor)


def _unrecognised(data: bytes) -> ImageError:
    """``unsupported_format`` naming a format Pillow knows by its signature, else ``not_an_image``.

    Only the plugins' signature checks run (on the first 16 bytes): no decoder.
    """
    known = [name for name in Image.OPEN if name not in FORMATS and _signature(name, data[:16])]
    if known:
        return ImageError(
            "unsupported_format",
            f"unsupported image format (the signature of {known[0]}); "
            f"accepted: {', '.join(FORMATS)}",
        )
    return ImageError("not_an_image", "not a recognised image format")


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


def _signature(name: str, prefix: bytes) -> bool:
    accept = Image.OPEN[name][1]
    try:
        result = accept is not None and accept(prefix)
    except _DECODER_ERRORS:
        return False
    return bool(result) and not isinstance(result, str)
