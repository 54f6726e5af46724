"""Each strategy trains (loss falls) and changes exactly what it should in the stored model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModelForImageClassification

from tests.support.builders import CLASSES, IMAGE_SIZE, metadata, unique_name
from tests.support.images import digit_images
from tests.support.store import (
    backbone_state,
    changed_keys,
    stored_path,
    stored_state,
    stored_tensors,
)
from training.config import TrainConfig
from training.model import apply_strategy, create_model, merge_adapters
from training.store import save_model

pytestmark = pytest.mark.slow


def loss_falls(history: list[dict]) -> bool:
    return history[-1]["train_loss"] < history[0]["train_loss"]


def is_head(key: str) -> bool:
    return key.startswith("classifier.")


def test_linear_leaves_every_backbone_tensor_bit_identical(make_backbone, train_digits):
    backbone = make_backbone("resnet", IMAGE_SIZE)
    result = train_digits(backbone, strategy="linear", lr=1e-2)
    assert loss_falls(result.history)

    before, after = backbone_state(backbone), stored_state(result.tag)
    body = [key for key in after if not is_head(key)]
    assert any("running_mean" in key for key in body)  # BatchNorm statistics are included
    for key in body:
        assert torch.equal(after[key], before[key]), key
    assert after["classifier.1.weight"].shape == (4, before["classifier.1.weight"].shape[1])
    assert result.metadata.strategy == "linear"


@pytest.mark.parametrize(
    ("family", "trained_prefixes", "frozen_prefixes"),
    [
        ("vit", ("vit.layers.1.", "vit.layernorm."), ("vit.embeddings.", "vit.layers.0.")),
        ("resnet", ("resnet.encoder.stages.1.",), ("resnet.embedder.", "resnet.encoder.stages.0.")),
    ],
)
def test_partial_changes_only_the_last_blocks(
    make_backbone, train_digits, family, trained_prefixes, frozen_prefixes
):
    backbone = make_backbone(family, IMAGE_SIZE)
    result = train_digits(backbone, strategy="partial", unfreeze_blocks=1, lr=1e-2)
    assert loss_falls(result.history)

    before, after = backbone_state(backbone), stored_state(result.tag)
    changed = changed_keys(before, after)
    assert all(key.startswith(trained_prefixes) for key in changed), changed
    for prefix in trained_prefixes:
        assert any(key.startswith(prefix) for key in changed), prefix
    frozen = [key for key in after if key.startswith(frozen_prefixes)]
    assert frozen
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    assert result.metadata.training_config["unfreeze_blocks"] == 1


def mean_change(before: dict, after: dict, prefix: str) -> float:
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return float(torch.cat([(after[k] - before[k]).abs().flatten() for k in keys]).mean())


def test_full_with_layer_decay_moves_earlier_blocks_less(make_backbone, train_digits):
    backbone = make_backbone("vit", IMAGE_SIZE)
    result = train_digits(backbone, strategy="full", layer_decay=0.3, lr=1e-2)
    assert loss_falls(result.history)

    before, after = backbone_state(backbone), stored_state(result.tag)
    assert changed_keys(before, after) >= {k for k in before if not is_head(k)}  # all train
    embeddings = mean_change(before, after, "vit.embeddings.patch_embeddings.")
    first = mean_change(before, after, "vit.layers.0.")
    last = mean_change(before, after, "vit.layers.1.")
    assert embeddings < 0.6 * first
    assert first < 0.6 * last
    assert result.metadata.training_config["layer_decay"] == 0.3


def test_full_without_decay_moves_blocks_alike(make_backbone, train_digits):
    backbone = make_backbone("vit", IMAGE_SIZE)
    result = train_digits(backbone, strategy="full", lr=1e-2, epochs=2)
    before, after = backbone_state(backbone), stored_state(result.tag)
    first = mean_change(before, after, "vit.layers.0.")
    last = mean_change(before, after, "vit.layers.1.")
    assert 0.5 < first / last < 2.0


def test_lora_stores_a_plain_model_with_adapted_linear_layers(make_backbone, train_digits):
    backbone = make_backbone("vit", IMAGE_SIZE)
    result = train_digits(backbone, strategy="lora", lora_rank=4, lr=1e-2)
    assert loss_falls(result.history)

    raw = stored_tensors(result.tag)
    assert not [
        key for key in raw if "lora_" in key or "base_layer" in key or "modules_to_save" in key
    ]
    before, after = backbone_state(backbone), stored_state(result.tag)
    assert after.keys() == before.keys()
    changed = changed_keys(before, after)
    adapted = {k for k in changed if not is_head(k)}
    assert adapted
    # every linear layer of the blocks (2-D weights), attention and MLP, and nothing else
    linear = {k for k, v in before.items() if k.startswith("vit.layers.") and v.ndim == 2}
    assert adapted == linear, adapted
    assert result.metadata.training_config["lora_rank"] == 4
    assert result.metadata.training_config["lora_alpha"] == 8.0


def test_early_stopping_restores_the_best_weights(make_backbone, train_digits):
    backbone = make_backbone("resnet", IMAGE_SIZE)
    result = train_digits(  # the weights alone, without full's default weight average
        backbone, strategy="full", lr=1e-2, epochs=8, patience=1, metric="accuracy", ema_decay=0
    )
    scores = [row["val_accuracy"] for row in result.history]
    assert len(scores) < 8  # it stopped early...
    assert scores[-1] < max(scores)  # ...after an epoch worse than the best
    assert result.metadata.validation.accuracy == pytest.approx(max(scores))


def digit_batch() -> tuple[list, torch.Tensor]:
    images = [image.convert("RGB") for d in range(4) for image in digit_images(d, 8)]
    return images, torch.arange(4).repeat_interleave(8)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_merged_lora_predicts_like_the_adapted_model(make_backbone, family):
    model, preprocessing = create_model(
        str(make_backbone(family, IMAGE_SIZE)), CLASSES, image_size=IMAGE_SIZE
    )
    config = TrainConfig(data="digits", backbone="b", strategy="lora", lora_rank=4)
    trainable = apply_strategy(model, config)
    adapted = trainable.model
    images, labels = digit_batch()
    pixels = preprocessing(images)
    optimizer = torch.optim.AdamW(trainable.param_groups, lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(adapted(pixel_values=pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    lora_b = [p for name, p in adapted.named_parameters() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(p) for p in lora_b)  # the adapters trained

    adapted.eval()
    with torch.inference_mode():
        expected = adapted(pixel_values=pixels).logits
        with adapted.disable_adapter():
            without = adapted(pixel_values=pixels).logits
    assert not torch.allclose(expected, without, atol=1e-3)  # the adapters matter

    merged = merge_adapters(adapted).eval()
    tag = save_model(merged, preprocessing, metadata(CLASSES), name=unique_name("lora"))

    assert not [key for key in stored_tensors(tag) if "lora_" in key]
    path = stored_path(tag)
    reloaded = AutoModelForImageClassification.from_pretrained(path).eval()
    assert type(reloaded) is type(merged)
    processor = AutoImageProcessor.from_pretrained(path)
    with torch.inference_mode():
        logits = reloaded(
            pixel_values=processor(images, return_tensors="pt")["pixel_values"]
        ).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
