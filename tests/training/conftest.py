"""Fixtures for the tests that train (configs and checks live in ``tests.support``).

Tiny models train fastest on one thread, and on a shared 2-core machine two busy
threads per process make every step wait: these tests (and the `visiontune`
processes they start, through the environment) use one unless OMP_NUM_THREADS says
otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.support.builders import digits_config
from training.train import TrainResult, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the processes these tests start, then back as it was."""
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", threads)
        torch.set_num_threads(int(threads))
        yield
    torch.set_num_threads(before)


@pytest.fixture
def train_digits(tmp_path):
    def run(backbone: Path, **flags) -> TrainResult:
        return train(digits_config(backbone, tmp_path / "run", **flags))

    return run
