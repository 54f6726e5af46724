"""TrainConfig: bad combinations are rejected with the fix in the message."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from training.config import DEFAULT_EMA_DECAY, DEFAULT_LR, TrainConfig, default_workers
from visiontune.flags import add_config_flags

BASE = {"data": "digits", "backbone": "some/backbone"}


@pytest.mark.parametrize(
    ("flags", "needs"),
    [
        ({"unfreeze_blocks": 2}, "--strategy partial"),
        ({"lora_rank": 4}, "--strategy lora"),
        ({"lora_alpha": 8.0}, "--strategy lora"),
        ({"strategy": "linear", "layer_decay": 0.8}, "--strategy full"),
        ({"strategy": "partial", "layer_decay": 0.8}, "--strategy full"),
        ({"strategy": "full", "lora_rank": 4}, "--strategy lora"),
    ],
)
def test_flag_for_another_strategy_names_the_fix(flags, needs):
    with pytest.raises(ValidationError) as err:
        TrainConfig(**BASE, **flags)
    message = str(err.value)
    assert needs in message
    assert "drop --" in message


def test_splits_that_leave_too_little_for_training():
    with pytest.raises(ValidationError) as err:
        TrainConfig(**BASE, val_fraction=0.5, test_fraction=0.4)
    assert "lower them" in str(err.value)


@pytest.mark.parametrize(
    "flags",
    [
        {"epochs": 0},
        {"lr": 0},
        {"layer_decay": 1.5, "strategy": "full"},
        {"val_fraction": 1.0},
        {"strategy": "everything"},
        {"unknown_flag": 1},
    ],
)
def test_bad_values_are_rejected(flags):
    with pytest.raises(ValidationError):
        TrainConfig(**BASE, **flags)


def test_the_config_holds_its_real_defaults():
    assert TrainConfig(**BASE, strategy="partial").unfreeze_blocks == 2
    assert (TrainConfig(**BASE).lora_rank, TrainConfig(**BASE).lora_alpha) == (16, 32.0)
    lora = TrainConfig(**BASE, strategy="lora", lora_rank=4)
    assert (lora.lora_rank, lora.lora_alpha) == (4, 8.0)
    assert TrainConfig(**BASE).workers == default_workers()
    recorded = TrainConfig(**BASE, strategy="partial").recorded()
    assert recorded["unfreeze_blocks"] == 2 and "lora_rank" not in recorded
    assert str(TrainConfig(**BASE, name="m").run_dir) == "runs/m"


def test_learning_rate_defaults_by_strategy_and_is_written_out():
    rates = {s: TrainConfig(**BASE, strategy=s).lr for s in ("linear", "partial", "full", "lora")}
    assert rates == DEFAULT_LR
    assert rates["linear"] > rates["full"]  # a head alone takes larger steps
    assert TrainConfig(**BASE, strategy="linear", lr=3e-4).lr == 3e-4  # given, it stays
    assert TrainConfig(**BASE, strategy="lora").model_dump()["lr"] == DEFAULT_LR["lora"]
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    help_text = " ".join(parser.format_help().split())
    assert "default by strategy: linear 0.01, partial 0.001, full 0.001, lora 0.002" in help_text
    assert "PydanticUndefined" not in help_text


def test_weight_average_defaults_by_strategy_and_zero_turns_it_off():
    decays = {s: TrainConfig(**BASE, strategy=s).ema_decay for s in DEFAULT_LR}
    assert decays == {"linear": None, "partial": None, "full": 0.99, "lora": 0.99}
    assert decays["full"] == DEFAULT_EMA_DECAY["full"]
    assert TrainConfig(**BASE, ema_decay=0).ema_decay is None
    assert TrainConfig(**BASE, strategy="lora", ema_decay=0.9).ema_decay == 0.9
    assert TrainConfig(**BASE).recorded()["ema_decay"] == 0.99
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    help_text = " ".join(parser.format_help().split())
    assert "0: off. Default by strategy: full 0.99, lora 0.99, off otherwise" in help_text


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (
            {"mixup": 0.2, "strategy": "linear"},
            ["--mixup", "--strategy linear", "--strategy partial, full or lora"],
        ),
        ({"cutmix": 1.0, "strategy": "linear"}, ["--cutmix", "--strategy linear", "drop --cutmix"]),
        (
            {"mixup": 0.2, "strategy": "full", "batch_size": 1},
            ["--mixup", "--batch-size 1", "--batch-size 2 or more"],
        ),
    ],
)
def test_mixing_where_it_cannot_work_names_the_fix(flags, fragments):
    with pytest.raises(ValidationError) as err:
        TrainConfig(**BASE, **flags)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    "flags",
    [
        {"augment": "heavy"},
        {"mixup": -0.1, "strategy": "full"},
        {"cutmix": 11, "strategy": "full"},
        {"label_smoothing": 0.6},
        {"label_smoothing": -0.1},
        {"ema_decay": 1.0},
        {"ema_decay": -0.5},
    ],
)
def test_augmentation_values_out_of_range_are_rejected(flags):
    with pytest.raises(ValidationError) as err:
        TrainConfig(**BASE, **flags)
    assert next(iter(flags)) in str(err.value)


def test_augmentation_defaults():
    config = TrainConfig(**BASE)
    assert (config.augment, config.flip, config.mixup, config.cutmix) == ("light", False, 0, 0)
    assert config.label_smoothing == 0
    mixing = TrainConfig(**BASE, strategy="lora", mixup=0.2, cutmix=1.0, label_smoothing=0.1)
    assert (mixing.mixup, mixing.cutmix) == (0.2, 1.0)
