"""``visiontune score`` on a folder of JPEGs: images/s of both engines against the in-process limit.

The serving benchmark's model (DeiT-tiny size, 224 px, fp32) scores a folder of
``--count`` JPEGs (640x480, as in ``serve_throughput``; 256 distinct images
repeated) three ways, side by side: the engines in rotating order over ``--rounds``,
the limit measured before and after each engine run, each engine's share taken
against the mean of the two limits around it (so a load that drifts during a long
run hits both sides alike):

- ``limit``: the :class:`~contract.predictor.Predictor` alone on pre-decoded
  batches of ``--batch-size`` (no file reading, no decoding, no writing): the most
  any engine could reach on this machine;
- ``local``: ``score_local`` (``--engine local``), reading, decoding, classifying
  and writing Parquet, timed from the call to the last file written;
- ``ray``: ``score_ray`` (``--engine ray``) on a local Ray with ``--ray-cpus``
  CPUs, started before the clock starts (its start-up is reported on its own), so
  what is timed includes the actors' start and model load, as every job pays them.

The target is at least 0.8 of the limit for both engines.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import median, parser, rotations, set_threads, write_result
from benchmarks.serve_throughput import make_images, store_model

DISTINCT = 256
DEFAULT_COUNT = 20_000
TARGET = 0.8
LIMIT_SECONDS = 60.0


def measure_limit(model, images: list[bytes], batch_size: int, seconds: float) -> float:
    """Images/s of the predictor alone on pre-decoded batches, over about ``seconds``."""
    from visiontune.scoring.results import decode

    predictor = model.predictor()
    arrays = np.stack([decode(data, model.preprocessing) for data in images])
    batches = [arrays[i : i + batch_size] for i in range(0, len(arrays), batch_size)]
    batches = [batch for batch in batches if len(batch) == batch_size]
    predictor(batches[0])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            predictor(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


def measure_engine(engine: str, model, folder: Path, out: Path, batch_size: int) -> float:
    from visiontune.scoring.local import score_local
    from visiontune.scoring.ray_engine import score_ray
    from visiontune.scoring.results import Output
    from visiontune.scoring.sources import open_source

    shutil.rmtree(out, ignore_errors=True)
    source = open_source(str(folder))
    output = Output(str(out), model=model.tag, top_k=5, data=str(folder), resume=False)
    todo = list(range(len(source.ids)))
    score = score_ray if engine == "ray" else score_local
    started = time.perf_counter()
    score(source, todo, model, output, batch_size=batch_size, top_k=5)
    elapsed = time.perf_counter() - started
    rows, errors = output.counts()
    if rows != len(todo) or errors:
        raise RuntimeError(f"{engine}: {rows} rows, {errors} errors for {len(todo)} images")
    return len(todo) / elapsed


def of_limit(shares: dict[str, list[float]]) -> dict[str, float]:
    """Each engine's median share, over rounds, of the limit measured around it."""
    return {way: median(values) for way, values in shares.items()}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    set_threads(args)
    started = time.perf_counter()
    import ray

    from visiontune.scoring.model import StoredModel

    images = make_images(DISTINCT)
    rates: dict[str, list[float]] = {"limit": [], "local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as work:
        work = Path(work)
        folder = work / "images"
        for i in range(args.count):
            sub = folder / f"{i // 1000:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i:06d}.jpg").write_bytes(images[i % DISTINCT])
        tag, _ = store_model("deit-tiny", work)
        model = StoredModel.resolve(tag)
        ray_started = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="WARNING")
        ray_start_seconds = time.perf_counter() - ray_started
        shares: dict[str, list[float]] = {"local": [], "ray": []}

        def limit() -> float:
            rate = measure_limit(model, images, args.batch_size, args.limit_seconds)
            rates["limit"].append(rate)
            print(f"limit: {rate:.1f} images/s", flush=True)
            return rate

        try:
            before = limit()
            for order in rotations(list(shares), args.rounds):
                for way in order:
                    rate = measure_engine(way, model, folder, work / way, args.batch_size)
                    rates[way].append(rate)
                    after = limit()
                    shares[way].append(rate / ((before + after) / 2))
                    print(
                        f"{way}: {rate:.1f} images/s, {shares[way][-1]:.2f} of the limit",
                        flush=True,
                    )
                    before = after
        finally:
            ray.shutdown()
    result = {
        "images": args.count,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "ray_cpus": args.ray_cpus,
        "ray_version": ray.__version__,
        "ray_start_seconds": round(ray_start_seconds, 1),
        "images_per_second": {way: median(runs) for way, runs in rates.items()},
        "of_limit": of_limit(shares),
        "target": TARGET,
        "rates_by_round": rates,
        "shares_by_round": shares,
    }
    write_result("score_throughput", result, args, started)
    return 0


def _arguments(argv):
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--count", type=int, default=DEFAULT_COUNT, help="JPEGs in the folder")
    args.add_argument("--batch-size", type=int, default=64)
    args.add_argument("--rounds", type=int, default=1)
    args.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray")
    args.add_argument("--limit-seconds", type=float, default=LIMIT_SECONDS)
    parsed = args.parse_args(argv)
    if parsed.quick:
        parsed.count, parsed.limit_seconds = 300, 5.0
    return parsed


if __name__ == "__main__":
    raise SystemExit(main())
