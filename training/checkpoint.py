"""Checkpoints in the run folder, written so that no crash or kill leaves a broken one.

``RUN/checkpoint`` is a symbolic link to one of two folders, ``.checkpoint-a`` and
``.checkpoint-b``. A new checkpoint is written in full into the folder the link
does not point to, flushed to disk, and then the link is switched with one
atomic rename. A process killed at any moment (SIGKILL, out of memory, power
loss) leaves the previous checkpoint or the new one, complete.

A checkpoint holds Accelerate's state (model, optimizer, scheduler, random
generators of every process), the loop's ``RunState`` (its best weights in a file
of their own), each process's losses of the current epoch, and the config it was
trained with.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from training.config import TrainConfig

LINK = "checkpoint"
SLOTS = (".checkpoint-a", ".checkpoint-b")
STAGED_LINK = ".checkpoint-link"  # the new link, until it is renamed over the old one
# Flags that may change between an interrupted run and its --resume.
NOT_COMPARED = {"resume", "resume_if_present", "checkpoint_every", "workers", "report_to"}


@dataclass
class RunState:
    """Where a training run stands; every checkpoint holds it, so ``--resume`` continues."""

    epoch: int = 0  # epochs completed
    batches_done: int = 0  # batches of epoch ``epoch`` already trained: a resumed run skips them
    history: list[dict] = field(default_factory=list)  # one row per completed epoch
    best: list[float] | None = None  # the best epoch's score: validation metric, then loss
    bad: int = 0  # epochs since the best one (early stopping counts them)
    done: bool = False  # training is over: what is left is the final save
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # on the CPU

    def to_json(self) -> str:
        saved = [f.name for f in fields(self) if f.name != "best_weights"]
        return json.dumps({name: getattr(self, name) for name in saved})


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint to resume from."""
    return (checkpoint_path(run_dir) / "progress.json").exists()


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / LINK


def save_checkpoint(
    accelerator, run_dir: Path, config: TrainConfig, state: RunState, losses: list[float]
) -> Path:
    """Write a checkpoint next to the current one, then point ``RUN/checkpoint`` at it."""
    slot = run_dir / _free_slot(run_dir)
    if accelerator.is_main_process and slot.exists():
        shutil.rmtree(slot)  # what a killed save left behind
    accelerator.wait_for_everyone()
    accelerator.save_state(str(slot))
    (slot / f"losses_{accelerator.process_index}.json").write_text(json.dumps(losses))
    if accelerator.is_main_process:
        (slot / "progress.json").write_text(state.to_json())
        (slot / "config.json").write_text(json.dumps(config.recorded(NOT_COMPARED, mode="json")))
        if state.best_weights is not None:
            torch.save(state.best_weights, slot / "best_weights.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _flush(slot)
        _point_link(run_dir, slot.name)
    accelerator.wait_for_everyone()
    return checkpoint_path(run_dir)


def load_progress(run_dir: Path, config: TrainConfig) -> RunState:
    """The interrupted run's state (its best weights come with ``load_checkpoint``), refused
    if it was trained with other flags."""
    path = checkpoint_path(run_dir)
    if not has_checkpoint(run_dir):
        raise FileNotFoundError(f"--resume: no checkpoint in {path}; run without --resume")
    saved = TrainConfig.model_validate_json((path / "config.json").read_text())
    if saved.model_dump(exclude=NOT_COMPARED) != config.model_dump(exclude=NOT_COMPARED):
        raise ValueError(
            f"--resume: the flags differ from the interrupted run's ({path / 'config.json'})"
        )
    return RunState(**json.loads((path / "progress.json").read_text()))


def load_checkpoint(accelerator, run_dir: Path):
    """Restore Accelerate's state; return the best weights and this process's epoch losses."""
    path = checkpoint_path(run_dir)
    accelerator.load_state(str(path))
    best_file = path / "best_weights.pt"
    best = torch.load(best_file, weights_only=True) if best_file.exists() else None
    losses_file = path / f"losses_{accelerator.process_index}.json"
    losses = json.loads(losses_file.read_text()) if losses_file.exists() else []
    return best, losses


def remove_checkpoint(run_dir: Path) -> None:
    for link in (checkpoint_path(run_dir), run_dir / STAGED_LINK):
        if link.is_symlink():
            link.unlink()
    for name in (*SLOTS, LINK):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _free_slot(run_dir: Path) -> str:
    link = checkpoint_path(run_dir)
    current = os.readlink(link) if link.is_symlink() else None
    return SLOTS[1] if current == SLOTS[0] else SLOTS[0]


def _point_link(run_dir: Path, target: str) -> None:
    link, staged = checkpoint_path(run_dir), run_dir / STAGED_LINK
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)
    _fsync(run_dir)


def _flush(folder: Path) -> None:
    """Every file of ``folder`` on disk before the link points at it."""
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
