"""TrainConfig: bad combinations are rejected with the fix in the message."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.config import TrainConfig

BASE = {"data": "digits", "backbone": "some/backbone"}


@pytest.mark.parametrize(
    ("flags", "needs"),
    [
        ({"unfreeze_blocks": 2}, "--strategy partial"),
        ({"lora_rank": 4}, "--strategy lora"),
        ({"lora_alpha": 8.0}, "--strategy lora"),
        ({"layer_decay": 0.8}, "--strategy full"),
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


def test_defaults_resolve_per_strategy():
    assert TrainConfig(**BASE, strategy="partial").resolved_blocks == 2
    lora = TrainConfig(**BASE, strategy="lora", lora_rank=4)
    assert (lora.resolved_lora_rank, lora.resolved_lora_alpha) == (4, 8.0)
    assert str(TrainConfig(**BASE, name="m").run_dir) == "runs/m"
