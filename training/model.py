"""Backbone + new head, and the fine-tuning strategies.

The head swap is the seam for transfer learning: :func:`create_model` loads any
backbone ``AutoModelForImageClassification`` supports (from a hub id or a local
folder, the same call), and gives it a freshly initialised head sized to the
user's labels. A checkpoint without a head (``ViTModel``...) gets one on top of
its pooled features. :func:`apply_strategy` then decides what trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from contract.images import Preprocessing
from contract.portable import make_portable
from training.augment import largest_side
from training.config import TrainConfig
from training.errors import first_line
from training.pretrained import SourceError
from training.pretrained import resolve as resolve_source


class BackboneError(ValueError):
    """A backbone that cannot be loaded or fine-tuned; the message is one line."""


def create_model(
    backbone: str, labels: list[str], image_size: int | None = None
) -> tuple[nn.Module, Preprocessing]:
    """Load ``backbone`` with a new head for ``labels``, and the preprocessing it expects."""
    source, config = load_backbone_config(backbone)
    id2label = dict(enumerate(labels))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the expected "head re-initialised" report is noise here
    try:
        model = AutoModelForImageClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
        )
    except ValueError as err:
        raise BackboneError(
            f"--backbone {backbone}: {config.model_type} has no image-classification model "
            f"in transformers ({first_line(err)})"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    reset_head(model)
    return make_portable(model), _preprocessing(source, model, image_size)


def load_backbone_config(backbone: str):
    """The backbone's resolved source and config: cheap, so bad names fail before any work
    (a source ``visiontune backbone import`` knows is imported into the cache first)."""
    try:
        source = _check_local(resolve_source(backbone))
    except SourceError as err:
        raise BackboneError(f"--backbone {backbone}: {err}") from None
    try:
        return source, AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as err:  # OSError, ValueError, hub errors: all mean "cannot load"
        raise BackboneError(f"--backbone {backbone}: cannot load ({first_line(err)})") from None


def _check_local(backbone: str) -> str:
    """What to load: a path-like backbone is expanded (``~``) and gets a plain message
    instead of the hub's repo-id error when it is not a model folder."""
    path = Path(backbone).expanduser()
    looks_local = backbone.startswith(("/", ".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise BackboneError(f"--backbone {backbone}: no such folder")
    if looks_local and not (path / "config.json").exists():
        raise BackboneError(
            f"--backbone {backbone}: not a Hugging Face model folder (no config.json)"
        )
    return str(path) if looks_local else backbone


def head_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The top-level modules outside the backbone: the classification head."""
    prefix = model.base_model_prefix
    return {
        name: module
        for name, module in model.named_children()
        if name != prefix and any(True for _ in module.parameters())
    }


def reset_head(model: nn.Module) -> None:
    """Re-initialise the head, even when the label count matches the old one."""
    std = getattr(model.config, "initializer_range", 0.02)
    for head in head_modules(model).values():
        for module in head.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters") and module is not head:
                module.reset_parameters()


def backbone_blocks(model: nn.Module) -> nn.ModuleList:
    """The backbone's repeated blocks: its ``ModuleList`` holding the most parameters."""
    lists = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise BackboneError(f"{model.config.model_type}: no repeated blocks found")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


@dataclass
class Trainable:
    """What a strategy returns: the model to train and its optimizer parameter groups."""

    model: nn.Module
    param_groups: list[dict]


def apply_strategy(model: nn.Module, config: TrainConfig) -> Trainable:
    """Freeze, unfreeze or wrap ``model`` as ``config.strategy`` says."""
    if config.strategy == "lora":
        return _lora(model, config)
    head = [p for m in head_modules(model).values() for p in m.parameters()]
    if config.strategy == "full":
        model.requires_grad_(True)
        return Trainable(model, _full_groups(model, config, head))
    model.requires_grad_(False)
    for param in head:
        param.requires_grad_(True)
    if config.strategy == "partial":
        for param in _tail_parameters(model, config.unfreeze_blocks):
            param.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Trainable(model, [{"params": trainable, "lr": config.lr}])


def train_mode(model: nn.Module) -> None:
    """``model.train()``, but frozen batch norms keep their running statistics.

    A frozen backbone must compute what it computed before training: without this,
    ``linear`` and ``partial`` would still change the backbone's BatchNorm buffers.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        frozen = params and not any(p.requires_grad for p in params)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
            module.eval()


def merge_adapters(model: nn.Module) -> nn.Module:
    """A plain transformers model: LoRA adapters folded into the weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def _tail_parameters(model: nn.Module, n_blocks: int) -> list[nn.Parameter]:
    """Backbone parameters from the last ``n_blocks`` blocks on (final norm included)."""
    blocks = backbone_blocks(model)
    n_blocks = min(n_blocks, len(blocks))
    first = {id(p) for p in blocks[len(blocks) - n_blocks].parameters()}
    params = list(model.base_model.parameters())
    start = next(i for i, p in enumerate(params) if id(p) in first)
    return params[start:]


def _full_groups(model: nn.Module, config: TrainConfig, head: list) -> list[dict]:
    """One group per depth when layer-wise LR decay is on: earlier blocks learn slower."""
    if config.layer_decay is None:
        return [{"params": list(model.parameters()), "lr": config.lr}]
    blocks = backbone_blocks(model)
    depth_of = {id(p): i + 1 for i, block in enumerate(blocks) for p in block.parameters()}
    groups: dict[int, list] = {}
    seen_blocks = False
    for param in model.base_model.parameters():
        depth = depth_of.get(id(param))
        seen_blocks = seen_blocks or depth is not None
        depth = depth if depth is not None else (len(blocks) + 1 if seen_blocks else 0)
        groups.setdefault(depth, []).append(param)
    groups.setdefault(len(blocks) + 1, []).extend(head)
    top = len(blocks) + 1
    return [
        {"params": params, "lr": config.lr * config.layer_decay ** (top - depth)}
        for depth, params in sorted(groups.items())
    ]


def _lora(model: nn.Module, config: TrainConfig) -> Trainable:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=_lora_targets(model),
        modules_to_save=list(head_modules(model)),
    )
    wrapped = get_peft_model(model, lora)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    return Trainable(wrapped, [{"params": trainable, "lr": config.lr}])


def _lora_targets(model: nn.Module) -> list[str]:
    """Every linear layer of the backbone's blocks (attention and MLP), else their
    ungrouped convolutions.

    Adapting the query and value projections alone, as the LoRA paper did, left the
    digits transfer benchmark about 5 points behind full fine-tuning at 20 examples per
    class; with every linear layer of the blocks it comes within two points (BENCHMARKS.md).
    """
    blocks = backbone_blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    chosen = [m for m in blocks.modules() if isinstance(m, nn.Linear)]
    # grouped (depthwise) convolutions are left out: peft can neither merge nor, at most
    # ranks, build their adapters
    convs = [m for m in blocks.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    chosen = chosen or convs
    if not chosen:
        raise BackboneError(f"{model.config.model_type}: no layers LoRA can adapt")
    return [names[id(m)] for m in chosen]


def _preprocessing(backbone: str, model: nn.Module | None, image_size: int | None) -> Preprocessing:
    """The backbone processor's policy (at ``image_size`` when given); without a saved
    processor, a ViT-style squash to the model's configured size (else 224)."""
    try:
        processor = AutoImageProcessor.from_pretrained(backbone)
    except (OSError, ValueError):
        processor = None
    size = (image_size, image_size) if image_size else None
    if processor is None:
        side = size or (model is not None and _model_size(model)) or (224, 224)
        return Preprocessing(side[0], side[1], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return Preprocessing.from_processor(processor, image_size=size)


SMALL_IMAGE_SCALE = 3  # small images train at three times their size (BENCHMARKS.md, transfer)


def input_size_for(backbone: str, sources: list) -> int | None:
    """The input size for training images much smaller than a convolutional backbone's
    input: three times their longest side, rounded up to a multiple of 32 (Fashion-MNIST's
    28 px photos train at 96 instead of 224, five times less compute for the same
    information; at 64 px EfficientNet's stride of 32 leaves a 2x2 feature map, and full
    fine-tuning reaches 2.5 points less). ``None`` keeps the backbone processor's own
    size: for backbones with a fixed input (position embeddings), and where that size is
    no larger than the input."""
    source, config = load_backbone_config(backbone)
    if hasattr(config, "patch_size"):
        return None
    side = largest_side(sources)
    if side is None:
        return None
    own = _preprocessing(source, None, None)
    size = max(32, math.ceil(SMALL_IMAGE_SCALE * side / 32) * 32)
    return size if size < min(own.height, own.width) else None


def sized_for(config: TrainConfig, sources: list) -> TrainConfig:
    """``config`` with the input size chosen for its training images when it names none
    (:func:`input_size_for`), as training takes it; else ``config`` itself."""
    if config.image_size is not None:
        return config
    size = input_size_for(config.backbone, sources)
    return config.model_copy(update={"image_size": size}) if size else config


def _model_size(model: nn.Module) -> tuple[int, int] | None:
    """Models with position embeddings (ViT...) fix their input size in the config."""
    size = getattr(model.config, "image_size", None)
    if isinstance(size, int) and hasattr(model.config, "patch_size"):
        return (size, size)
    return None
