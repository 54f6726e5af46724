"""Head replacement through from_pretrained(path) and what each strategy leaves trainable."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageClassification

from training.backbones import FAMILIES
from training.config import TrainConfig
from training.model import (
    BackboneError,
    apply_strategy,
    backbone_blocks,
    create_model,
    head_modules,
    merge_adapters,
)

LABELS = ["cat", "dog", "bird"]


def head_names(model) -> set[str]:
    return {
        f"{name}.{key}"
        for name, module in head_modules(model).items()
        for key in module.state_dict()
    }


def backbone_state(model) -> dict[str, torch.Tensor]:
    heads = head_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in heads}


@pytest.mark.parametrize("family", FAMILIES)
def test_new_head_sized_to_the_labels(make_backbone, family):
    path = make_backbone(family, 16)
    original = AutoModelForImageClassification.from_pretrained(path)
    assert original.config.num_labels == 2

    model, preprocessing = create_model(str(path), LABELS, image_size=16)

    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert model.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert (preprocessing.height, preprocessing.width) == (16, 16)
    logits = model(pixel_values=torch.randn(2, 3, 16, 16)).logits
    assert logits.shape == (2, 3)
    # the backbone is the saved one, not a fresh random init
    expected = backbone_state(original)
    loaded = backbone_state(model)
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key


@pytest.mark.parametrize("family", ["vit", "convnext", "resnet"])
def test_head_is_reinitialised_even_with_the_same_label_count(make_backbone, family):
    path = make_backbone(family, 16)
    original = AutoModelForImageClassification.from_pretrained(path)
    model, _ = create_model(str(path), ["x", "y"], image_size=16)
    old = {k: v for k, v in original.state_dict().items() if k in head_names(original)}
    new = {k: v for k, v in model.state_dict().items() if k in head_names(model)}
    assert old.keys() == new.keys() and old
    weights = [k for k in new if k.endswith("weight")]
    biases = [k for k in new if k.endswith("bias")]
    assert all(not torch.equal(old[k], new[k]) for k in weights)
    assert all(torch.count_nonzero(new[k]) == 0 for k in biases)
    assert model.config.id2label == {0: "x", 1: "y"}


@pytest.mark.parametrize("family", ["vit", "convnext", "resnet"])
def test_backbone_without_a_head_gets_one(tmp_path, family):
    from transformers import AutoModel

    from contract.images import Preprocessing
    from training.backbones import create_config

    torch.manual_seed(0)
    bare = AutoModel.from_config(create_config(family, 16))
    assert not hasattr(bare, "classifier")
    bare.save_pretrained(tmp_path)
    Preprocessing(16, 16, (0.5,) * 3, (0.5,) * 3).to_processor().save_pretrained(tmp_path)

    model, _ = create_model(str(tmp_path), LABELS)
    assert model.config.num_labels == 3
    assert model(pixel_values=torch.randn(1, 3, 16, 16)).logits.shape == (1, 3)
    loaded = model.base_model.state_dict()
    for key, tensor in bare.state_dict().items():
        if key in loaded:
            assert torch.equal(loaded[key], tensor), key
    assert len(set(loaded) & set(bare.state_dict())) >= 0.9 * len(loaded)


def test_processor_size_is_used_without_image_size(make_backbone):
    _, preprocessing = create_model(str(make_backbone("vit", 16)), LABELS)
    assert (preprocessing.height, preprocessing.width) == (16, 16)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("/no/such/backbone", "no such folder"),
        ("./relative/nowhere", "no such folder"),
    ],
)
def test_missing_backbone_folder(backbone, message):
    with pytest.raises(BackboneError, match=message):
        create_model(backbone, LABELS)


def test_folder_without_config(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        create_model(str(tmp_path), LABELS)


def test_model_type_without_image_classification(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(BackboneError) as err:
        create_model(str(tmp_path), LABELS)
    assert "bert" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_hub_id_offline_is_one_line():
    with pytest.raises(BackboneError) as err:
        create_model("visiontune-nobody/no-such-model", LABELS)
    assert "visiontune-nobody/no-such-model" in str(err.value)
    assert "\n" not in str(err.value)


# --- strategies: what trains ------------------------------------------------------------------


def strategy(make_backbone, family: str, **flags):
    model, _ = create_model(str(make_backbone(family, 16)), LABELS, image_size=16)
    config = TrainConfig(data="digits", backbone="b", **flags)
    return model, apply_strategy(model, config)


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def optimised(trainable) -> list[int]:
    return [id(p) for group in trainable.param_groups for p in group["params"]]


@pytest.mark.parametrize("family", ["vit", "resnet", "efficientnet"])
def test_linear_trains_the_head_only(make_backbone, family):
    model, trainable = strategy(make_backbone, family, strategy="linear")
    assert trainable_names(model) == {
        n for n, _ in model.named_parameters() if n.startswith("classifier.")
    }
    assert set(optimised(trainable)) == {id(p) for p in model.classifier.parameters()}


def test_partial_trains_the_last_blocks_final_norm_and_head(make_backbone):
    model, trainable = strategy(make_backbone, "vit", strategy="partial", unfreeze_blocks=1)
    names = trainable_names(model)
    assert names
    assert all(n.startswith(("vit.layers.1.", "vit.layernorm.", "classifier.")) for n in names)
    assert any(n.startswith("vit.layers.1.") for n in names)
    assert any(n.startswith("vit.layernorm.") for n in names)
    assert any(n.startswith("classifier.") for n in names)
    assert len(optimised(trainable)) == len(names)


def test_partial_more_blocks_than_exist_trains_all_blocks(make_backbone):
    model, _ = strategy(make_backbone, "resnet", strategy="partial", unfreeze_blocks=9)
    names = trainable_names(model)
    assert any(n.startswith("resnet.encoder.stages.0.") for n in names)
    assert not any(n.startswith("resnet.embedder.") for n in names)


def test_full_trains_everything(make_backbone):
    model, trainable = strategy(make_backbone, "convnext", strategy="full")
    assert trainable_names(model) == {n for n, _ in model.named_parameters()}
    assert sorted(optimised(trainable)) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("family", ["vit", "convnext", "resnet", "efficientnet"])
def test_layer_decay_gives_earlier_blocks_smaller_learning_rates(make_backbone, family):
    model, trainable = strategy(make_backbone, family, strategy="full", layer_decay=0.5, lr=1e-2)
    ids = optimised(trainable)
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    lr_of = {id(p): group["lr"] for group in trainable.param_groups for p in group["params"]}
    blocks = backbone_blocks(model)
    block_lr = [{lr_of[id(p)] for p in block.parameters()} for block in blocks]
    assert all(len(lrs) == 1 for lrs in block_lr)
    block_lr = [lrs.pop() for lrs in block_lr]
    assert block_lr == sorted(block_lr) and len(set(block_lr)) == len(block_lr)
    head_lr = {lr_of[id(p)] for p in model.classifier.parameters()}
    assert head_lr == {1e-2}
    first_param = next(model.base_model.parameters())  # the embeddings/stem
    assert lr_of[id(first_param)] < block_lr[0]
    assert lr_of[id(first_param)] == pytest.approx(1e-2 * 0.5 ** (len(blocks) + 1))


@pytest.mark.parametrize("family", ["vit", "resnet", "efficientnet"])
def test_lora_trains_adapters_and_head_only(make_backbone, family):
    _, trainable = strategy(make_backbone, family, strategy="lora", lora_rank=2)
    wrapped = trainable.model
    names = trainable_names(wrapped)
    assert any("lora_" in n for n in names)
    assert all("lora_" in n or "classifier" in n for n in names)
    assert len(optimised(trainable)) == len(names)
    merged = merge_adapters(wrapped)
    assert type(merged).__name__.endswith("ForImageClassification")
    assert not any("lora_" in key for key in merged.state_dict())


def test_home_relative_backbone_folder(make_backbone, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(make_backbone("resnet", 16), tmp_path / "models" / "tiny")
    model, preprocessing = create_model("~/models/tiny", LABELS)
    assert model.config.num_labels == 3
    assert (preprocessing.height, preprocessing.width) == (16, 16)
