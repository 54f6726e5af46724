"""The README's first command: `make demo` runs the main job end to end, in an empty store
and an empty cache (so the backbone import runs too); `make demo-digits` still runs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support import REPO
from tests.support.needs import need_fashion_mnist

pytestmark = pytest.mark.e2e


def run_make(target: str, tmp_path) -> tuple[str, dict]:
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    result = subprocess.run(  # as `make demo > log 2>&1` writes it
        ["make", target],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout, env


def assert_one_production_model(env: dict) -> None:
    listing = subprocess.run(
        [str(REPO / ".venv" / "bin" / "visiontune"), "models"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = [line for line in listing.stdout.splitlines() if line.startswith("visiontune-")]
    assert len(rows) == 1 and rows[0].startswith("visiontune-classifier:"), listing.stdout
    assert "production" in rows[0]  # the demo promotes what it trained


def assert_served(output: str, held_out_accuracy: float) -> None:
    """Every held-out image was classified over HTTP, at the accuracy training reported on
    them (one answer may flip at a near tie), and the stored model run in process agrees."""
    served, right, asked = re.search(
        r"served accuracy on the (?:\d+) held-out images: (\d\.\d+) \((\d+)/(\d+) right", output
    ).groups()
    asked = int(asked)
    assert asked >= 40, output[-2000:]
    assert abs(int(right) / asked - held_out_accuracy) <= 1 / asked + 1e-3, output[-2000:]
    same, shown = map(
        int, re.search(r"in this process gives (\d+)/(\d+) of these", output).groups()
    )
    assert same == shown == asked, output[-2000:]  # served answers are the stored model's


def test_make_demo_fine_tunes_imagenet_weights_beats_random_and_serves(tmp_path):
    need_fashion_mnist()
    output, env = run_make("demo", tmp_path)
    assert "\x1b[" not in output  # plain lines in a log (stdout and stderr), no cursor escapes

    tuned = float(re.search(r"from ImageNet weights: held-out accuracy (\d\.\d+)", output)[1])
    scratch = float(re.search(r"from random weights: held-out accuracy (\d\.\d+)", output)[1])
    assert tuned >= scratch + 0.1, output[-2000:]
    assert tuned >= 0.6
    tuned_time = re.search(r"fine-tuned +(\d+) s \(epoch (\d+)\)", output)
    assert tuned_time, output[-2000:]  # it reached the random-weight network's best

    assert_served(output, tuned)
    backbone = tmp_path / "cache" / "visiontune" / "backbones" / "efficientnet-lite0"
    assert (backbone / "model.safetensors").exists()
    assert len(list((REPO / "runs" / "demo" / "held-out").glob("*/*.png"))) >= 8
    assert_one_production_model(env)


def test_make_demo_digits_still_runs(tmp_path):
    output, env = run_make("demo-digits", tmp_path)
    tuned = float(re.search(r"fine-tuned from .*accuracy (\d\.\d+)", output).group(1))
    scratch = float(re.search(r"from scratch: .*accuracy (\d\.\d+)", output).group(1))
    assert tuned > scratch, output[-2000:]
    assert "\x1b[" not in output
    assert_served(output, tuned)
    assert_one_production_model(env)
