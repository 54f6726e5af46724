"""What a test needs from the machine: skipped with the reason where it is missing, but
failed under ``CI=true``, where everything must run (.ci/run installs it all)."""

from __future__ import annotations

import os
import shutil

import pytest


def need(available: bool, what: str) -> None:
    """Skip (or, in CI, fail) the calling test unless ``available``; ``what`` says how to get it."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {what}")
    pytest.skip(f"needs {what}")


def need_podman() -> None:
    need(
        shutil.which("podman") is not None and os.geteuid() == 0,
        "podman as root (`make podman`, which installs it as root)",
    )


def need_fashion_mnist() -> None:
    from training.embedded import fashion_mnist_dir

    need(
        (fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz").exists(),
        "Fashion-MNIST (`make fashion-mnist`: apt-get install dataset-fashion-mnist, as root)",
    )
