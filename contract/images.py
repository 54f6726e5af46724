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

Preprocessing is the backbone processor's own policy (squash to a size, or resize
the shortest edge and centre-crop; its resampling filter), then rescale and
normalise with mean/std: exactly what the saved processor config describes, so the
stored model also works with a plain ``transformers`` pipeline. Images are decoded and
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


CONVNEXT = "ConvNextImageProcessor"
CONVNEXT_WARP_EDGE = 384  # ConvNeXt processors squash instead of cropping from this size up
Resize = int | tuple[int, int] | None


@dataclass(frozen=True)
class Preprocessing:
    """The backbone processor's resize policy, mean and std, travelling with the weights.

    ``resize_to`` says how an image is resized before it is centre-cropped to
    ``height x width``: ``None`` squashes it straight to ``height x width``, an int
    resizes its shortest edge to that many pixels (aspect ratio kept), a
    ``(height, width)`` pair resizes it to that size. The crop is taken the way
    transformers takes it (zero padding where the image is smaller). ``processor_type``
    and ``crop_pct`` name the backbone's own processor class, so the saved
    ``preprocessor_config.json`` is that class with these settings.
    """

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    resize_to: Resize = None
    resample: int = int(Image.Resampling.BILINEAR)
    flip_channel_order: bool = False
    processor_type: str = "ViTImageProcessor"
    crop_pct: float | None = None

    @classmethod
    def from_processor(cls, processor, image_size: tuple[int, int] | None = None):
        """Read a transformers image processor's policy.

        ``image_size`` replaces the processor's output (crop) size; a resize before
        the crop scales with it, so the share of the image kept stays the same
        (DINOv2's 256 -> 224 becomes 37 -> 32 at ``image_size=(32, 32)``).
        """
        kind = _processor_type(processor)
        crop_pct = getattr(processor, "crop_pct", None) if kind == CONVNEXT else None
        if kind == CONVNEXT:
            edge = int(image_size[0]) if image_size else _size(processor.size)["shortest_edge"]
            resize_to, output = _convnext_policy(edge, crop_pct), (edge, edge)
        else:
            resize_to, output = _processor_policy(processor)
            if image_size is not None:
                resize_to, output = _scaled(resize_to, output, image_size)
        normalize = getattr(processor, "do_normalize", True)
        return cls(
            height=int(output[0]),
            width=int(output[1]),
            mean=_triple(getattr(processor, "image_mean", None) or 0.5)
            if normalize
            else (0.0, 0.0, 0.0),
            std=_triple(getattr(processor, "image_std", None) or 0.5)
            if normalize
            else (1.0, 1.0, 1.0),
            rescale_factor=float(getattr(processor, "rescale_factor", 1 / 255)),
            resize_to=None if resize_to == tuple(output) else resize_to,
            resample=_resample(getattr(processor, "resample", None)),
            flip_channel_order=bool(getattr(processor, "do_flip_channel_order", False)),
            processor_type=kind,
            crop_pct=float(crop_pct) if crop_pct is not None else None,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path):
        from transformers import AutoImageProcessor

        return cls.from_processor(AutoImageProcessor.from_pretrained(str(path)))

    def to_processor(self):
        """The backbone's processor class with this policy, saved next to the weights."""
        import transformers

        processor_class = getattr(transformers, f"{self.processor_type}Pil", None) or getattr(
            transformers, self.processor_type
        )
        settings = {
            "do_resize": True,
            "resample": self.resample,
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_center_crop": False,
        }
        if self.processor_type == CONVNEXT:
            settings.update(size={"shortest_edge": self.height}, crop_pct=self.crop_pct)
        else:
            resized = self.resize_to or (self.height, self.width)
            settings["size"] = (
                {"shortest_edge": resized}
                if isinstance(resized, int)
                else {"height": resized[0], "width": resized[1]}
            )
            if self.crops:
                settings.update(
                    do_center_crop=True, crop_size={"height": self.height, "width": self.width}
                )
        if hasattr(processor_class, "do_flip_channel_order"):
            settings["do_flip_channel_order"] = self.flip_channel_order
        return processor_class(**settings)

    @property
    def crops(self) -> bool:
        """Whether the resized image is centre-cropped (it is unless it is squashed)."""
        return self.resize_to is not None

    @property
    def draft_size(self) -> tuple[int, int]:
        """(width, height) a JPEG may be decoded at: twice what the resize needs.

        JPEG's reduced-size decoding is a cheap box filter; leaving the real resize a
        factor of two keeps its filtering (on a photo, about 1/255 mean difference from
        a full decode, against about 5/255 when drafting to the target size itself).
        """
        if isinstance(self.resize_to, int):
            return (2 * self.resize_to, 2 * self.resize_to)
        height, width = self.resize_to or (self.height, self.width)
        return (2 * width, 2 * height)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) an image of that size is resized to before the crop."""
        if self.resize_to is None:
            return (self.width, self.height)
        if isinstance(self.resize_to, tuple):
            return (self.resize_to[1], self.resize_to[0])
        short, long = sorted((width, height))
        new_long = int(self.resize_to * long / short)  # as transformers rounds it
        return (self.resize_to, new_long) if width <= height else (new_long, self.resize_to)

    def crop_origin(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the centre crop in a resized image of that size; negative where
        the image is smaller than the crop (the crop is padded with zeros there)."""
        return ((width - self.width) // 2, (height - self.height) // 2)

    def resize(self, image: Image.Image) -> np.ndarray:
        """One RGB image to a (height, width, 3) uint8 array: resize, centre crop.

        The CPU path of the policy; ``service.gpu_decode`` applies the same steps
        (``resized_size``, ``resample``, ``crop_origin``, ``flip_channel_order``) on the GPU.
        """
        target = self.resized_size(*image.size)
        if target != image.size:
            image = image.resize(target, Image.Resampling(self.resample))
        if image.size != (self.width, self.height):
            left, top = self.crop_origin(*image.size)
            image = image.crop((left, top, left + self.width, top + self.height))
        pixels = np.array(image, dtype=np.uint8)  # writable, so torch can share it
        return np.ascontiguousarray(pixels[..., ::-1]) if self.flip_channel_order else pixels

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


def _processor_type(processor) -> str:
    """The processor's class name without its backend suffix; warns where its resize is its own."""
    custom = [
        klass.__name__
        for klass in type(processor).__mro__
        if "resize" in vars(klass) and klass.__module__.startswith("transformers.models.")
    ]
    name = type(processor).__name__.removesuffix("Pil").removesuffix("Fast")
    if custom and name != CONVNEXT:
        warnings.warn(
            f"{name} resizes its own way; visiontune applies its size/crop_size settings only",
            stacklevel=3,
        )
    return name


def _processor_policy(processor) -> tuple[Resize, tuple[int, int]]:
    """(resize, output size) of a processor that resizes by its ``size`` then crops by ``crop_size``.

    A shortest-edge resize without a crop would give batches of mixed sizes; it is
    centre-cropped to a square of that edge instead.
    """
    size = _size(getattr(processor, "size", None))
    if "height" in size and "width" in size:
        resize_to: Resize = (size["height"], size["width"])
    else:
        resize_to = size.get("shortest_edge", 224)
    crop = _size(getattr(processor, "crop_size", None))
    if getattr(processor, "do_center_crop", False) and "height" in crop and "width" in crop:
        return resize_to, (crop["height"], crop["width"])
    if isinstance(resize_to, int):
        return resize_to, (resize_to, resize_to)
    return None, resize_to


def _scaled(resize_to: Resize, output: tuple[int, int], image_size: tuple[int, int]):
    """The policy at another output size, keeping the share of the image the crop keeps."""
    height, width = int(image_size[0]), int(image_size[1])
    if resize_to is None:
        return None, (height, width)
    if isinstance(resize_to, int):
        return _round(resize_to * height / output[0]), (height, width)
    scaled = (_round(resize_to[0] * height / output[0]), _round(resize_to[1] * width / output[1]))
    return scaled, (height, width)


def _round(value: float) -> int:
    """Half up (Python's ``round`` goes to the even neighbour)."""
    return int(value + 0.5)


def _convnext_policy(edge: int, crop_pct: float | None) -> Resize:
    """ConvNeXt's rule: below 384, resize the shortest edge to edge / crop_pct, then crop."""
    if edge >= CONVNEXT_WARP_EDGE:
        return None
    return int(edge / (crop_pct if crop_pct is not None else 224 / 256))


def _size(size) -> dict[str, int]:
    """A processor's ``size``/``crop_size`` (dict, SizeDict or int) as a plain dict."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    keys = ("height", "width", "shortest_edge", "longest_edge")
    items = size.items() if isinstance(size, dict) else ((k, getattr(size, k, None)) for k in keys)
    return {key: int(value) for key, value in items if key in keys and value is not None}


def _resample(value) -> int:
    """PIL's resampling filter, from PIL's enum/int or torchvision's InterpolationMode."""
    if value is None:
        return int(Image.Resampling.BILINEAR)
    if isinstance(value, int):
        return int(value)
    return int(Image.Resampling[str(getattr(value, "name", value)).upper()])


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
