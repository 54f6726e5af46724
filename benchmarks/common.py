"""What every benchmark shares: machine facts, statistics, and writing results.

Each script writes ``benchmarks/results/<name>.json`` with its figures, the
command that reproduces them and the facts of the machine they came from;
``benchmarks.report`` turns those files into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# taken when a benchmark starts (every one imports this module first): machine_facts()
# runs again when the results are written, by then under the benchmark's own load
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]


def parser(description: str, threads: bool = True) -> argparse.ArgumentParser:
    """The flags every benchmark takes (``--threads`` where the caller sizes torch's pool)."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="a short sanity run (seconds)")
    args.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the JSON result (default benchmarks/results/<name>.json; "
        "a --quick run writes <name>.quick.json)",
    )
    if not threads:
        return args
    args.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, one per usable core)",
    )
    return args


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` before any torch work."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def machine_facts() -> dict:
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_at_start": LOAD_AT_START,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "git_commit": _git_commit(),
    }


def write_result(name: str, result: dict, args: argparse.Namespace, started: float) -> Path:
    """Save ``result`` with the reproducing command and the machine facts."""
    path = args.output or RESULTS / (f"{name}.quick.json" if args.quick else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "command": "python -m benchmarks." + name + _flags(sys.argv[1:]),
        "quick": bool(args.quick),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": machine_facts(),
        **result,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """The compared variants in a different order each round, so drift hits all alike."""
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(rounds)]


def _flags(argv: list[str]) -> str:
    return "".join(" " + shlex.quote(arg) for arg in argv)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "accelerate", "peft", "bentoml", "fastapi", "uvicorn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
