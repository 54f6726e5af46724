"""Preprocessing follows each backbone family's own processor: the pixels training,
evaluation and serving produce equal what the Hugging Face processor produces, and the
saved ``preprocessor_config.json`` reproduces the policy with transformers alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from transformers import AutoImageProcessor

from contract.images import Preprocessing, decode_image
from tests.support.images import digit_images
from training.backbones import FAMILIES, family_processor
from training.data import ImageSet
from training.model import create_model

# transformers and visiontune run the same PIL resize; only float rounding differs
ATOL = 1e-5


def photo() -> Image.Image:
    """A real, non-square photograph (scikit-learn ships it), 213x320 portrait."""
    return (
        Image.fromarray(load_sample_image("china.jpg"))
        .resize((213, 320))
        .transpose(Image.Transpose.ROTATE_90)
    )


def images() -> list[Image.Image]:
    digits = [image.convert("RGB") for image in digit_images(3, 2) + digit_images(7, 1)]
    landscape = photo()
    return [*digits, landscape, landscape.transpose(Image.Transpose.ROTATE_90)]


def hf_pixels(processor, batch: list[Image.Image]) -> torch.Tensor:
    return processor(batch, return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("size", [224, 32, 400])
@pytest.mark.parametrize("family", FAMILIES)
def test_pixels_equal_the_backbone_processor(family, size):
    processor = family_processor(family, size)
    preprocessing = Preprocessing.from_processor(processor)
    batch = images()
    ours = preprocessing(batch)
    assert ours.shape == (len(batch), 3, preprocessing.height, preprocessing.width)
    assert torch.allclose(ours, hf_pixels(processor, batch), atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_processor_reproduces_the_policy(tmp_path, family):
    processor = family_processor(family, 224)
    preprocessing = Preprocessing.from_processor(processor, image_size=(48, 48))
    preprocessing.to_processor().save_pretrained(tmp_path)

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(processor)  # the backbone's own class, not a ViT stand-in
    assert Preprocessing.from_pretrained(tmp_path) == preprocessing
    batch = images()
    assert torch.allclose(preprocessing(batch), hf_pixels(loaded, batch), atol=ATOL)


@pytest.mark.parametrize(
    ("family", "resize_to", "resample"),
    [
        ("vit", None, Image.Resampling.BILINEAR),
        ("swin", None, Image.Resampling.BICUBIC),
        ("convnext", 256, Image.Resampling.BICUBIC),  # 224 / crop_pct 0.875
        ("resnet", 256, Image.Resampling.BICUBIC),
        ("dinov2", 256, Image.Resampling.BICUBIC),
        ("mobilevit", 252, Image.Resampling.BICUBIC),
    ],
)
def test_policy_read_from_the_processor(family, resize_to, resample):
    preprocessing = Preprocessing.from_processor(family_processor(family, 224))
    assert (preprocessing.height, preprocessing.width) == (224, 224)
    assert preprocessing.resize_to == resize_to
    assert preprocessing.resample == resample
    assert preprocessing.flip_channel_order == (family == "mobilevit")


def test_convnext_squashes_from_384():
    preprocessing = Preprocessing.from_processor(family_processor("convnext", 384))
    assert preprocessing.resize_to is None and not preprocessing.crops


@pytest.mark.parametrize(("family", "resize_to"), [("dinov2", 37), ("convnext", 36), ("vit", None)])
def test_image_size_keeps_the_share_the_crop_keeps(family, resize_to):
    """DINOv2's 256 -> 224 becomes 37 -> 32; ConvNeXt keeps crop_pct; a squash stays one."""
    processor = family_processor(family, 224)
    preprocessing = Preprocessing.from_processor(processor, image_size=(32, 32))
    assert (preprocessing.height, preprocessing.width) == (32, 32)
    assert preprocessing.resize_to == resize_to


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=95)
    return buffer.getvalue()


def served_pixels(preprocessing: Preprocessing, data: bytes) -> torch.Tensor:
    """The service's path: decode (JPEG at ``draft_size``), ``resize``, batched ``normalize``."""
    decoded = decode_image(data, draft_size=preprocessing.draft_size)
    return preprocessing.normalize(torch.from_numpy(np.stack([preprocessing.resize(decoded)])))


@pytest.mark.parametrize("family", ["convnext", "dinov2", "vit", "mobilevit"])
def test_served_pixels_equal_the_processor(family):
    """A lossless file gives the processor's pixels exactly. A JPEG is decoded at reduced
    size (never under twice the resize); that image too gets the processor's pixels, and
    stays close to a full decode (the reduced size rounds up, which can move the crop by
    one pixel of the resized image)."""
    processor = family_processor(family, 32)
    preprocessing = Preprocessing.from_processor(processor)
    image = photo()
    assert torch.allclose(
        served_pixels(preprocessing, encode(image, "PNG")), hf_pixels(processor, [image]), atol=ATOL
    )

    jpeg = encode(image, "JPEG")
    drafted = decode_image(jpeg, draft_size=preprocessing.draft_size)
    full = decode_image(jpeg)
    assert drafted.width < full.width  # the draft really decoded less
    assert min(drafted.size) >= 2 * min(preprocessing.resized_size(*full.size))
    served = served_pixels(preprocessing, jpeg)
    assert torch.allclose(served, hf_pixels(processor, [drafted]), atol=ATOL)
    difference = (served - hf_pixels(processor, [full])) * torch.tensor(preprocessing.std).view(
        1, 3, 1, 1
    )
    assert difference.abs().mean() < 12 / 255


@pytest.mark.parametrize("family", FAMILIES)
def test_training_pixels_equal_the_processor(make_backbone, family):
    """What ImageSet feeds training and evaluation, after the per-batch normalisation."""
    backbone = make_backbone(family, 32)
    _, preprocessing = create_model(str(backbone), ["a", "b"])
    batch = images()
    dataset = ImageSet([(image, 0) for image in batch], preprocessing)
    pixels = torch.stack([dataset[i][0] for i in range(len(batch))])
    processor = AutoImageProcessor.from_pretrained(backbone)
    assert torch.allclose(preprocessing.normalize(pixels), hf_pixels(processor, batch), atol=ATOL)


def test_image_size_flag_scales_the_backbone_policy(make_backbone):
    _, preprocessing = create_model(str(make_backbone("dinov2", 32)), ["a", "b"], image_size=16)
    assert (preprocessing.height, preprocessing.width) == (16, 16)
    assert preprocessing.resize_to == 19  # 37 x 16 / 32, half up
