"""`make bench`: run every benchmark, one process each, then write BENCHMARKS.md.

``python -m benchmarks.run [--quick] [--only NAME ...]``; each benchmark also
runs alone (``python -m benchmarks.NAME [--quick]``). Results land in
``benchmarks/results/NAME.json`` and BENCHMARKS.md is rebuilt from those files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import benchmarks  # noqa: F401  (one temporary model store for every benchmark below)
from benchmarks import report

# name -> extra flags. Training runs with one torch thread: on this shared 2-core
# machine two intra-op threads stall on each other whenever a neighbour's process
# takes a core (measured 10-30x slower), which would swamp the loops' differences.
BENCHMARKS = {
    "train_throughput": ["--threads", "1"],
    "input_size": ["--threads", "1"],
    "transfer": ["--threads", "1"],
    "robustness": ["--threads", "1"],
    "serve_throughput": [],
    "serve_profile": [],
    "predict_packing": [],
    "loader": ["--threads", "1"],
    "load": [],
    "score_throughput": [],
    "runtimes": [],
    "live_traffic": [],
}


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="short sanity runs")
    args.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = args.parse_args(argv)
    failed = []
    for name in args.only:
        command = [sys.executable, "-m", f"benchmarks.{name}", *BENCHMARKS[name]]
        command += ["--quick"] if args.quick else []
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - started:.0f}s", flush=True)
    if not args.quick:
        print(f"wrote {report.write()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
