"""Backbones built from a config (no download): tests, the demo and benchmarks.

Real users name a hub id or a local Hugging Face folder with ``--backbone``;
this module makes such folders offline, with random weights, in the sizes the
project needs: ``tiny`` for tests, ``small`` for the demo, ``deit-tiny`` and
``vit-base`` for serving benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    ConvNextConfig,
    Dinov2Config,
    EfficientNetConfig,
    MobileViTConfig,
    PretrainedConfig,
    ResNetConfig,
    SwinConfig,
    ViTConfig,
)

FAMILIES = ("vit", "convnext", "resnet", "swin", "dinov2", "mobilevit", "efficientnet")
PRESETS = ("tiny", "small", "deit-tiny", "vit-base")


def create_config(family: str, image_size: int, preset: str = "tiny") -> PretrainedConfig:
    """A config of ``family`` at ``preset`` size for square images of ``image_size``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    width = {"tiny": 16, "small": 32}.get(preset)
    if family == "vit":
        dims = {
            "tiny": (32, 2, 2, 64, 4),
            "small": (64, 4, 4, 128, 4),
            "deit-tiny": (192, 12, 3, 768, 16),
            "vit-base": (768, 12, 12, 3072, 16),
        }[preset]
        hidden, layers, heads, mlp, patch = dims
        return ViTConfig(
            image_size=image_size,
            patch_size=patch,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=mlp,
        )
    if width is None:
        raise ValueError(f"preset {preset!r} exists for the vit family only")
    if family == "convnext":
        return ConvNextConfig(
            image_size=image_size,
            patch_size=2,
            num_stages=2,
            hidden_sizes=[width, 2 * width],
            depths=[1, 2],
        )
    if family == "resnet":
        return ResNetConfig(
            embedding_size=width,
            hidden_sizes=[width, 2 * width],
            depths=[1, 2],
            layer_type="basic",
            downsample_in_first_stage=False,
        )
    if family == "swin":
        return SwinConfig(
            image_size=image_size,
            patch_size=2,
            embed_dim=width,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=4,
        )
    if family == "dinov2":
        return Dinov2Config(
            image_size=image_size,
            patch_size=4,
            hidden_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=4 * width,
        )
    if family == "efficientnet":  # EfficientNet-Lite's layout (ReLU6) at a fraction of B0's width
        return EfficientNetConfig(
            image_size=image_size,
            width_coefficient=width / 64,
            depth_coefficient=0.25,
            hidden_dim=20 * width,  # transformers sizes top_conv by round_filters(1280)
            hidden_act="relu6",
            kernel_sizes=[3, 3, 5],
            in_channels=[32, 16, 24],
            out_channels=[16, 24, 40],
            strides=[1, 2, 2],
            num_block_repeats=[1, 2, 2],
            expand_ratios=[1, 6, 6],
            batch_norm_momentum=0.1,
        )
    return MobileViTConfig(
        image_size=image_size,
        patch_size=2,
        hidden_sizes=[width, width, 2 * width],
        neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
        num_attention_heads=2,
    )


def save_random_backbone(
    path: str | Path,
    family: str = "vit",
    image_size: int = 32,
    preset: str = "tiny",
    num_labels: int = 2,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised image classifier + processor as a Hugging Face folder."""
    import torch

    torch.manual_seed(seed)
    config = create_config(family, image_size, preset)
    config.num_labels = num_labels
    model = reset_norms(AutoModelForImageClassification.from_config(config))
    path = Path(path)
    model.save_pretrained(path)
    family_processor(family, image_size).save_pretrained(path)
    return path


def family_processor(family: str, image_size: int):
    """The image processor the family's pretrained checkpoints ship, scaled to ``image_size``.

    ViT squashes (bilinear, mean/std 0.5); Swin squashes (bicubic, ImageNet mean/std);
    ConvNeXt and ResNet resize the shortest edge to size / crop_pct and crop (bicubic);
    DINOv2 resizes the shortest edge to 256/224 of the crop and crops (bicubic);
    MobileViT resizes to 288/256 of the crop, crops, and feeds BGR without normalising;
    EfficientNet-Lite resizes to 256/224 of the crop, crops (bicubic), and normalises
    by 127/128.
    """
    from transformers import (
        BitImageProcessorPil,
        ConvNextImageProcessorPil,
        MobileViTImageProcessorPil,
        ViTImageProcessorPil,
    )
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    imagenet = {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD}
    square = {"height": image_size, "width": image_size}
    bicubic = int(Image.Resampling.BICUBIC)
    if family in ("convnext", "resnet"):
        return ConvNextImageProcessorPil(
            size={"shortest_edge": image_size}, crop_pct=224 / 256, resample=bicubic, **imagenet
        )
    if family == "dinov2":
        edge = round(image_size * 256 / 224)
        return BitImageProcessorPil(
            size={"shortest_edge": edge}, crop_size=square, resample=bicubic, **imagenet
        )
    if family == "mobilevit":
        edge = round(image_size * 288 / 256)
        return MobileViTImageProcessorPil(size={"shortest_edge": edge}, crop_size=square)
    if family == "efficientnet":
        from training.pretrained import lite_processor

        return lite_processor(image_size)
    if family == "swin":
        return ViTImageProcessorPil(size=square, resample=bicubic, **imagenet)
    return ViTImageProcessorPil(size=square, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def save_random_copy(backbone: str | Path, path: str | Path, seed: int = 0) -> Path:
    """The architecture and image processor of a backbone folder, with random weights:
    what training "from scratch" starts from, to set beside fine-tuning it."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(backbone))
    model = scratch_init(AutoModelForImageClassification.from_config(config))
    path = Path(path)
    model.save_pretrained(path)
    AutoImageProcessor.from_pretrained(str(backbone)).save_pretrained(path)
    return path


def reset_norms(model):
    """Normalisation layers at their usual start (scale 1, shift 0).

    transformers initialises EfficientNet's batch-norm scales like weights, N(0, 0.02),
    which scales every activation towards zero: such a network from random weights
    outputs zeros and never learns. Other families already start their norms at 1 and 0,
    so this changes nothing for them.
    """
    from torch import nn

    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    for module in model.modules():
        if isinstance(module, norms) and module.weight is not None:
            module.reset_parameters()
    return model


def scratch_init(model):
    """The initialisation torchvision and timm give convolutional networks trained from
    scratch: norms at 1 and 0, convolutions Kaiming-normal (fan out), zero biases.

    transformers' N(0, 0.02) convolutions shrink activations layer by layer; a batch norm
    in training mode undoes that, but its running statistics take hundreds of steps to
    follow, so a few-shot run from such weights validates on outputs of about zero.
    """
    from torch import nn

    reset_norms(model)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
