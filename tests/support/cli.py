"""Checks on what the `visiontune` command prints."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO

# `python -m visiontune` from the checkout under test (the console script runs the
# installed copy; tests/e2e/test_readme_demo.py checks that one).
VISIONTUNE = [sys.executable, "-m", "visiontune"]


def visiontune(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
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
