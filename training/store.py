"""Saving trained models into the BentoML model store, and reading them back.

A stored model follows ``contract.savedmodel``: a Hugging Face folder
(safetensors only) plus validated metadata. ``bentoml.models.create`` writes into
a temporary folder and copies it into the store only when the block finishes;
if the copy raises, BentoML removes what it copied. Training holds Ctrl-C and
SIGTERM until the copy is done (``training.stopping``), so a signal cannot cut
it short either.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import bentoml
from transformers import PreTrainedModel

from contract.images import Preprocessing
from contract.predictor import Predictor
from contract.samples import CALIBRATION_IMAGES, HELD_OUT_IMAGES, Samples, spread
from contract.savedmodel import (
    CONFIG_FILENAME,
    DEFAULT_MODEL_NAME,
    ModelMetadata,
)
from contract.stages import resolve
from training.filemodes import restore_file_modes
from training.modelcard import CARD_FILENAME, model_card

MODEL_YAML = "model.yaml"  # where BentoML keeps a stored model's info, metadata included


def save_model(
    model: PreTrainedModel,
    preprocessing: Preprocessing,
    metadata: ModelMetadata,
    *,
    name: str = DEFAULT_MODEL_NAME,
    samples: Samples | None = None,
) -> bentoml.Tag:
    """Write ``model`` (a plain transformers model, adapters merged) into the store, with
    ``samples`` of its images if given (``contract.samples``).

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
        if samples is not None:
            samples.save(path)
        _check_safetensors_only(path)
        restore_file_modes(path)
    return bento_model.tag


def samples_of(data, preprocessing: Preprocessing) -> Samples:
    """The images a stored model keeps (``contract.samples``): held out from the test split
    (else validation), calibration from the training split; spread over the labels."""
    from training.data import ImageSet

    held = data.test or data.val
    chosen = [held[i] for i in spread([label for _, label in held], HELD_OUT_IMAGES)]
    held_set = ImageSet(chosen, preprocessing, cache=True)
    train = data.train
    picked = spread([label for _, label in train], CALIBRATION_IMAGES, seed=1)
    calibration = ImageSet([train[i] for i in picked], preprocessing, cache=True)
    return Samples(
        held_out=held_set.cache.numpy(),
        held_out_labels=held_set.labels.numpy(),
        calibration=calibration.cache.numpy(),
    )


def load_predictor(ref: str | bentoml.Tag) -> tuple[Predictor, ModelMetadata, bentoml.Tag]:
    """A stored model (a tag or ``NAME@STAGE``) as the service runs it (no training code)."""
    bento_model = bentoml.models.get(resolve(str(ref)))
    metadata = ModelMetadata.model_validate(bento_model.info.metadata)
    return Predictor.from_folder(bento_model.path, metadata), metadata, bento_model.tag


def update_metadata(stored: bentoml.Model, changes: dict) -> None:
    """Merge ``changes`` into a stored model's BentoML metadata, atomically.

    BentoML offers no call that changes a stored model's metadata; it keeps it in the
    folder's ``model.yaml``, written by ``ModelInfo.dump``. The same dump is read back by
    BentoML's own ``from_yaml_file`` (which refuses what it could not load, such as a
    None) and goes to a file beside it, which then replaces it: a reader sees the metadata
    before or after, never half of it (tests/unit/test_runtime.py reads it back in a
    fresh process).
    """
    info = stored.info
    merged = {**info.metadata, **changes}
    previous = dict(info.metadata)
    info.metadata.clear()
    info.metadata.update(merged)
    try:
        text = io.StringIO()
        info.dump(text)
        type(info).from_yaml_file(io.StringIO(text.getvalue()))
    except Exception as err:
        info.metadata.clear()
        info.metadata.update(previous)
        while isinstance(err, BaseExceptionGroup):  # cattrs groups what it refused
            err = err.exceptions[0]
        raise ValueError(f"metadata BentoML cannot store: {err}") from None
    folder = Path(stored.path)
    draft = folder / f".{MODEL_YAML}.tmp"
    draft.write_text(text.getvalue(), encoding="utf8")
    draft.replace(folder / MODEL_YAML)


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
