"""``visiontune predict`` on a folder: files per second, one image per request vs packed.

The benchmark model of ``serve_throughput`` (DeiT-tiny size, 224 px, fp32) is served
by ``bentoml serve service:ImageClassifier`` with its defaults (but a queue limit
of 10 minutes, so a slow shared host does not answer 503), pinned to the
servers' CPUs; ``visiontune predict FOLDER --json`` runs in this process on the
client's core against a folder of ``--files`` JPEGs (640x480, as in
``serve_throughput``) in two ways, alternating over ``--rounds``:

- ``one_per_request``: ``--batch-size 1`` and the default concurrency (4);
- ``packed``: the defaults: 4 requests at a time that together fill one batch of
  the service (its ``max_batch_size`` from ``GET /model`` / 4 files each).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

from benchmarks.common import median, parser, rotations, write_result
from benchmarks.serve_throughput import CLIENT_CPUS, make_images, make_servers, store_model

QUEUE_LIMIT_MS = 600_000
WAYS = {
    "one_per_request": ["--batch-size", "1"],
    "packed": [],
}


def predict_seconds(url: str, folder: Path, options: list[str]) -> float:
    from visiontune.cli import main

    started = time.perf_counter()
    with redirect_stdout(io.StringIO()) as out:
        code = main(["predict", str(folder), "--url", url, "--json", *options])
    elapsed = time.perf_counter() - started
    if code != 0:
        errors = Counter(a["error"] for a in json.loads(out.getvalue()) if "error" in a)
        raise RuntimeError(f"visiontune predict {' '.join(options)} exited with {code}: {errors}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    os.sched_setaffinity(0, CLIENT_CPUS)
    images = make_images()
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as work:
        work = Path(work)
        folder = work / "images"
        folder.mkdir()
        for i in range(args.files):
            (folder / f"{i:05d}.jpg").write_bytes(images[i % len(images)])
        tag, model_folder = store_model("deit-tiny", work)
        server = make_servers(tag, model_folder, "cpu", "fp32", work)["service"]
        # on a shared machine a batch can take longer than the default 10 s queue limit,
        # whose 503s would end the run: what is measured here is the client's throughput
        server.env["VISIONTUNE_MAX_LATENCY_MS"] = str(QUEUE_LIMIT_MS)
        server.start()
        try:
            server.wait_ready()
            serving = server.describe()
            for order in rotations(list(WAYS), args.rounds):
                for way in order:
                    seconds[way].append(predict_seconds(server.url, folder, WAYS[way]))
                    print(f"{way}: {args.files / seconds[way][-1]:.1f} files/s", flush=True)
        finally:
            server.stop()
    result = {
        "files": args.files,
        "rounds": args.rounds,
        "service_serving": serving,
        "ways": {way: " ".join(WAYS[way]) or "(defaults)" for way in WAYS},
        "files_per_second": {way: args.files / median(runs) for way, runs in seconds.items()},
        "seconds_by_round": seconds,
    }
    write_result("predict_packing", result, args, started)
    return 0


def _arguments(argv):
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--files", type=int, default=2000)
    args.add_argument("--rounds", type=int, default=1)
    parsed = args.parse_args(argv)
    if parsed.quick:
        parsed.files, parsed.rounds = 100, 1
    return parsed


if __name__ == "__main__":
    raise SystemExit(main())
