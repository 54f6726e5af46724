"""Reproducible performance scripts; ``make bench`` runs them all (``benchmarks.run``).

Benchmarks never touch the user's BentoML model store: importing this package
points ``BENTOML_HOME`` at a temporary folder (removed at exit) before bentoml is
imported, and servers started by a benchmark inherit it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "VISIONTUNE_BENCH_STORE" not in os.environ:
    os.environ["VISIONTUNE_BENCH_STORE"] = tempfile.mkdtemp(prefix="visiontune-bench-store-")
    atexit.register(shutil.rmtree, os.environ["VISIONTUNE_BENCH_STORE"], ignore_errors=True)
os.environ["BENTOML_HOME"] = os.environ["VISIONTUNE_BENCH_STORE"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
