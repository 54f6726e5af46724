"""The README's first command: `make demo` runs the main job end to end, in an empty store."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e


def test_make_demo_fine_tunes_beats_scratch_and_serves(tmp_path):
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        ["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500
    )
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]

    tuned = float(re.search(r"fine-tuned from .*accuracy (\d\.\d+)", output).group(1))
    scratch = float(re.search(r"from scratch: .*accuracy (\d\.\d+)", output).group(1))
    assert tuned > scratch, output[-2000:]
    assert tuned >= 0.6

    right, asked = map(int, re.search(r"(\d+)/(\d+) right over HTTP", output).groups())
    assert asked == 8
    assert right >= 4, output[-2000:]
    assert (tmp_path / "cache" / "visiontune" / "backbones").is_dir()

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
