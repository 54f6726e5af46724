"""Checkpoints: written beside the last one and switched in by one rename, so a kill loses nothing."""

from __future__ import annotations

import os

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from training.checkpoint import (
    LINK,
    SLOTS,
    RunState,
    load_checkpoint,
    load_progress,
    remove_checkpoint,
    save_checkpoint,
)
from training.config import TrainConfig


@pytest.fixture
def setup(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(nn.Linear(2, 2))
    config = TrainConfig(data="digits", backbone="b", output_dir=tmp_path)
    return accelerator, model, config, tmp_path


def test_a_save_cut_short_leaves_the_last_checkpoint_whole(setup):
    accelerator, model, config, run = setup
    save_checkpoint(accelerator, run, config, RunState(batches_done=1), [0.5])
    first = os.readlink(run / LINK)
    other = run / (SLOTS[1] if first == SLOTS[0] else SLOTS[0])
    other.mkdir()  # what a save killed half way leaves: some files, no link to them
    (other / "model.safetensors").write_bytes(b"half a file")
    assert load_progress(run, config).batches_done == 1

    with torch.no_grad():
        model.weight.fill_(3.0)
    best = {"weight": torch.ones(2, 2)}
    state = RunState(batches_done=2, best=[0.9, 0.1], best_weights=best)
    save_checkpoint(accelerator, run, config, state, [0.5, 0.4])
    assert os.readlink(run / LINK) == other.name
    assert load_progress(run, config) == RunState(batches_done=2, best=[0.9, 0.1])

    with torch.no_grad():
        model.weight.zero_()
    kept, losses = load_checkpoint(accelerator, run)
    assert torch.equal(model.weight, torch.full((2, 2), 3.0))
    assert torch.equal(kept["weight"], best["weight"]) and losses == [0.5, 0.4]

    remove_checkpoint(run)
    assert sorted(p.name for p in run.iterdir()) == []


def test_resume_takes_another_checkpoint_interval_but_not_other_flags(setup):
    accelerator, _, config, run = setup
    save_checkpoint(accelerator, run, config, RunState(epoch=1), [])
    assert load_progress(run, config.model_copy(update={"checkpoint_every": 1.5})).epoch == 1
    with pytest.raises(ValueError, match="flags differ"):
        load_progress(run, config.model_copy(update={"epochs": 99}))
