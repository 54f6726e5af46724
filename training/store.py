"""Saving trained models into the BentoML model store, and reading them back.

A stored model follows ``contract.savedmodel``: a Hugging Face folder
(safetensors only) plus validated metadata. ``bentoml.models.create`` writes into
a temporary folder and copies it into the store only when the block finishes;
if the copy raises, BentoML removes what it copied. Training holds Ctrl-C and
SIGTERM until the copy is done (``training.stopping``), so a signal cannot cut
it short either.
"""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
from transformers import PreTrainedModel

from contract.images import Preprocessing
from contract.predictor import Predictor
from contract.savedmodel import (
    CONFIG_FILENAME,
    DEFAULT_MODEL_NAME,
    ModelMetadata,
)
from contract.stages import resolve
from training.filemodes import restore_file_modes
from training.modelcard import CARD_FILENAME, model_card


def save_model(
    model: PreTrainedModel,
    preprocessing: Preprocessing,
    metadata: ModelMetadata,
    *,
    name: str = DEFAULT_MODEL_NAME,
) -> bentoml.Tag:
    """Write ``model`` (a plain transformers model, adapters merged) into the store.

    It is a ``candidate``: its stage lives in the registry of ``contract.stages``,
    changed by ``visiontune promote``/``rollback``, not in a BentoML label.
    """
    labels = {"backbone_family": model.config.model_type}
    with bentoml.models.create(
        name, labels=labels, metadata=metadata.model_dump(mode="json", exclude_none=True)
    ) as bento_model:
        path = Path(bento_model.path)
        model.save_pretrained(path)
        preprocessing.to_processor().save_pretrained(path)
        (path / CONFIG_FILENAME).write_text(json.dumps(metadata.training_config, indent=2))
        card = model_card(str(bento_model.tag), metadata, preprocessing)
        (path / CARD_FILENAME).write_text(card, encoding="utf-8")
        _check_safetensors_only(path)
        restore_file_modes(path)
    return bento_model.tag


def load_predictor(ref: str | bentoml.Tag) -> tuple[Predictor, ModelMetadata, bentoml.Tag]:
    """A stored model (a tag or ``NAME@STAGE``) as the service runs it (no training code)."""
    bento_model = bentoml.models.get(resolve(str(ref)))
    metadata = ModelMetadata.model_validate(bento_model.info.metadata)
    return Predictor.from_folder(bento_model.path, metadata), metadata, bento_model.tag


def list_models(name: str | None = None) -> list[bentoml.Model]:
    """Stored visiontune models, newest first."""
    models = [m for m in bentoml.models.list(name) if _is_visiontune(m)]
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)


def _is_visiontune(model: bentoml.Model) -> bool:
    return all(key in model.info.metadata for key in ("labels", "temperature", "backbone"))


def _check_safetensors_only(path: Path) -> None:
    pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickled:
        raise RuntimeError(f"refusing to store pickled weights: {pickled}")
    if not any(p.suffix == ".safetensors" for p in path.iterdir()):
        raise RuntimeError(f"no safetensors weights were written to {path}")
