"""Reading back what a training run stored: paths, state dicts, raw tensors, stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from contract.savedmodel import Stage
from contract.stages import read_record


def stored_path(tag) -> Path:
    return Path(bentoml.models.get(tag).path)


def stored_state(tag) -> dict[str, torch.Tensor]:
    """The stored model's state dict as transformers loads it."""
    return AutoModelForImageClassification.from_pretrained(stored_path(tag)).state_dict()


def backbone_state(backbone: Path) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(backbone).state_dict()


def stored_tensors(tag) -> dict[str, torch.Tensor]:
    """The raw tensors of the stored safetensors file."""
    return load_file(stored_path(tag) / "model.safetensors")


def changed_keys(before: dict, after: dict) -> set[str]:
    """Keys present in both with the same shape whose values differ."""
    return {
        key
        for key, tensor in before.items()
        if key in after and after[key].shape == tensor.shape and not torch.equal(after[key], tensor)
    }


def copy_model(tag, name: str) -> bentoml.Tag:
    """A new version of ``name`` with the files, labels and metadata of the stored ``tag``."""
    source = bentoml.models.get(tag)
    with bentoml.models.create(
        name, labels=source.info.labels, metadata=source.info.metadata
    ) as copy:
        shutil.copytree(source.path, copy.path, dirs_exist_ok=True)
    return copy.tag


def stage_of(tag) -> Stage:
    """The stage the registry records for a stored version."""
    tag = bentoml.Tag.from_taglike(tag)
    return read_record(tag.name).stage(str(tag.version))
