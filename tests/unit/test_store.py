"""Saving into the BentoML store: from_pretrained alone reproduces the predictions, atomically."""

from __future__ import annotations

import uuid
from pathlib import Path

import bentoml
import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from contract.savedmodel import ModelMetadata
from tests.support.builders import metadata
from tests.support.images import digit_images
from tests.support.store import stage_of
from training.filemodes import umask
from training.model import create_model
from training.store import list_models, load_predictor, save_model

LABELS = ["3", "5", "8"]


def file_modes(folder: Path) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}


def unique_name() -> str:
    return f"test-store-{uuid.uuid4().hex[:8]}"


def stored(name: str) -> list[bentoml.Tag]:
    try:
        return [m.tag for m in bentoml.models.list(name)]
    except bentoml.exceptions.NotFound:
        return []


def images():
    return [image.convert("RGB") for d in (3, 5, 8) for image in digit_images(d, 2)]


@pytest.mark.parametrize("family", ["vit", "resnet", "convnext"])
def test_from_pretrained_alone_gives_the_same_predictions(make_backbone, family):
    model, preprocessing = create_model(str(make_backbone(family, 16)), LABELS, image_size=16)
    model.eval()
    with torch.inference_mode():
        before = model(pixel_values=preprocessing(images())).logits

    tag = save_model(model, preprocessing, metadata(), name=unique_name())

    path = bentoml.models.get(tag).path
    reloaded = AutoModelForImageClassification.from_pretrained(path).eval()
    processor = AutoImageProcessor.from_pretrained(path)
    with torch.inference_mode():
        pixel_values = processor(images(), return_tensors="pt")["pixel_values"]
        after = reloaded(pixel_values=pixel_values).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert reloaded.config.id2label == {0: "3", 1: "5", 2: "8"}
    assert reloaded.config.label2id == {"3": 0, "5": 1, "8": 2}


def test_stored_folder_is_safetensors_with_valid_metadata(make_backbone):
    model, preprocessing = create_model(str(make_backbone("vit", 16)), LABELS, image_size=16)
    name = unique_name()
    tag = save_model(model, preprocessing, metadata(), name=name)

    stored = bentoml.models.get(tag)
    files = {p.name for p in Path(stored.path).iterdir()}
    assert "model.safetensors" in files
    assert {"config.json", "preprocessor_config.json", "visiontune.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert file_modes(Path(stored.path)) == {0o666 & ~umask()}  # the weights too, not 0600
    assert stored.info.labels["backbone_family"] == "vit"
    validated = ModelMetadata.model_validate(stored.info.metadata)
    assert validated == metadata()

    predictor, loaded_metadata, loaded_tag = load_predictor(f"{name}:latest")
    assert loaded_tag == tag
    assert loaded_metadata.temperature == predictor.temperature == 1.5
    assert predictor.preprocessing == preprocessing
    assert not predictor.model.training


def test_default_stage_is_candidate(make_backbone):
    model, preprocessing = create_model(str(make_backbone("resnet", 16)), LABELS, image_size=16)
    tag = save_model(model, preprocessing, metadata(), name=unique_name())
    assert stage_of(tag) == "candidate"


@pytest.mark.parametrize("crash", [OSError("disk full"), KeyboardInterrupt("disk full")])
def test_a_failure_mid_save_leaves_nothing_in_the_store(
    make_backbone, monkeypatch, bentoml_home, crash
):
    model, preprocessing = create_model(str(make_backbone("resnet", 16)), LABELS, image_size=16)
    name = unique_name()
    real_save = PreTrainedModel.save_pretrained

    def save_then_crash(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)  # the weights are half of what a model needs
        raise crash

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_crash)
    with pytest.raises(type(crash), match="disk full"):
        save_model(model, preprocessing, metadata(), name=name)

    assert stored(name) == []
    folder = bentoml_home / "models" / name
    assert not folder.exists() or not any(folder.iterdir())
    monkeypatch.undo()
    tag = save_model(model, preprocessing, metadata(), name=name)
    assert stored(name) == [tag]


def test_pickled_weights_are_refused(make_backbone, monkeypatch):
    model, preprocessing = create_model(str(make_backbone("resnet", 16)), LABELS, image_size=16)
    name = unique_name()
    real_save = PreTrainedModel.save_pretrained

    def save_with_pickle(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        torch.save(self.state_dict(), Path(path) / "pytorch_model.bin")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_with_pickle)
    with pytest.raises(RuntimeError, match="pickled"):
        save_model(model, preprocessing, metadata(), name=name)
    assert stored(name) == []


def test_list_models_shows_visiontune_models_newest_first(make_backbone):
    model, preprocessing = create_model(str(make_backbone("resnet", 16)), LABELS, image_size=16)
    name = unique_name()
    first = save_model(model, preprocessing, metadata(), name=name)
    second = save_model(model, preprocessing, metadata(), name=name)
    with bentoml.models.create(f"{name}-other") as other:
        (Path(other.path) / "weights").write_text("not ours")

    assert [m.tag for m in list_models(name)] == [second, first]
    assert list_models(f"{name}-other") == []
    assert {first, second} <= {m.tag for m in list_models()}
