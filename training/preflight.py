"""Checks before training starts: the run folder and the model store can be written and have room.

Finding an unwritable or full disk after an hour of training loses the hour;
these checks take milliseconds. What they cannot foresee (a disk filled by
something else meanwhile) is caught at the final save, which names the path
and where the trained weights were kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from training.errors import first_line

MB = 1 << 20


class OutputError(RuntimeError):
    """An output location that cannot take what training will write; one line for the user."""


def model_store_path() -> Path:
    """Where ``bentoml.models.create`` puts models: ``$BENTOML_HOME/models`` (default ``~/bentoml``)."""
    return Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser() / "models"


def check_writable(run_dir: Path) -> None:
    """Create the run folder and the store folder, and write a file in each."""
    for what, path in (("--output-dir", run_dir), ("model store", model_store_path())):
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path) as probe:
                probe.write(b"visiontune")
                probe.flush()
        except OSError as err:
            raise OutputError(f"{what} {path}: cannot write there ({describe(err)})") from None


def check_free_space(run_dir: Path, model: nn.Module) -> None:
    """Room for two checkpoints in the run folder and the saved model in the store and temp folder."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    checkpoint = 2 * weights + 2 * trained  # weights, best weights, Adam's two moments
    check_space(
        {run_dir: 2 * checkpoint, model_store_path(): weights, Path(tempfile.gettempdir()): weights}
    )


def check_space(needs: dict[Path, int]) -> None:
    """Raise :class:`OutputError` where a file system has less free space than its paths need."""
    by_device: dict[int, tuple[Path, int]] = {}
    for path, size in needs.items():
        device = path.stat().st_dev
        first, total = by_device.get(device, (path, 0))
        by_device[device] = (first, total + size)
    for path, needed in by_device.values():
        free = shutil.disk_usage(path).free
        if free < needed:
            raise OutputError(
                f"{path}: {free / MB:.0f} MB free, training needs about {needed / MB:.0f} MB there "
                "(checkpoints and the saved model); free space or choose another --output-dir"
            )


def describe(err: BaseException) -> str:
    """A short reason for an error, with the path when the OS gave one."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return first_line(err)
