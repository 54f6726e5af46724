"""Checks on what the `visiontune` command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

# `python -m visiontune` from the checkout under test (the console script runs the
# installed copy; tests/e2e/test_readme_demo.py checks that one).
VISIONTUNE = [sys.executable, "-m", "visiontune"]


def visiontune(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `visiontune ARGS...` to completion and capture its output."""
    return subprocess.run(
        [*VISIONTUNE, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, `visiontune: error: ...` (so no traceback either)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("visiontune: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    return lines[0]


def train_signalled_after_first_epoch(
    args: list[str], signum: int, stderr_path: Path, epochs: int
) -> tuple[int, str, str]:
    """Start `visiontune train ARGS`, send ``signum`` once its first epoch line is printed.

    Returns the exit code, stdout and stderr.
    """
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*VISIONTUNE, "train", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith(f"epoch 1/{epochs}"):
                process.send_signal(signum)
                break
        lines += process.stdout.readlines()
        process.wait(timeout=120)
    return process.returncode, "".join(lines), stderr_path.read_text()


def train_command(args: list[str]) -> subprocess.CompletedProcess:
    """`visiontune train ARGS` to the end."""
    return subprocess.run(
        [*VISIONTUNE, "train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
