"""Data loading for big folders: images/s of ``training.data``'s loader, cached vs streaming.

A folder of 20,000 JPEGs (1024x768 photo crops of scikit-learn's two sample
photographs, ten class sub-folders) is generated in a temporary directory and read
the way ``visiontune train`` reads it, at a DINOv2-style policy (shortest edge 128,
centre crop 112, bicubic):

- ``cached``: ``ImageSet`` decodes the images once, up front, into memory (what a
  set under ``CACHE_LIMIT_BYTES`` gets); timed are that decode and then one epoch
  of batches from memory;
- ``streaming``: ``ImageSet(cache=False)`` behind ``make_loader`` with 0, 1 and 2
  worker processes (``--workers``), with and without JPEG draft decoding (reduced
  size, no less than twice the resize: 512x384 here).

Each variant reads the same ``--images`` files of the folder (every
20,000 / images-th one, in a shuffled order), a fresh loader each time as every
training epoch makes one, so worker start-up is counted. Figures are images per
wall-clock second and per CPU-second (this process and its workers together, from
``getrusage``), medians over ``--rounds`` rounds in a rotating order. On a machine
shared with other work, wall-clock rates mostly measure how much of the cores the
scheduler gives; CPU-seconds measure the decoding work itself.
"""

from __future__ import annotations

import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, parser, rotations, set_threads, write_result

FILES = 20_000
CLASSES = 10
PHOTO_SIZE = (1024, 768)
DISTINCT = 200  # distinct photo crops; the files repeat them (decoding costs the same)
BATCH_SIZE = 64
STREAMING = [(workers, draft) for draft in (True, False) for workers in (0, 1, 2)]


def generate(root: Path, files: int, seed: int = 0) -> list[tuple[Path, int]]:
    """``files`` JPEGs in ``CLASSES`` sub-folders of ``root``, and their labels."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    rng = random.Random(seed)
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    encoded = []
    for _ in range(DISTINCT):
        photo = rng.choice(photos)
        scale = rng.uniform(0.55, 0.95)
        width, height = int(photo.width * scale), int(photo.height * scale)
        left = rng.randrange(photo.width - width + 1)
        top = rng.randrange(photo.height - height + 1)
        crop = photo.crop((left, top, left + width, top + height)).resize(PHOTO_SIZE)
        path = root / "encoded.jpg"
        crop.save(path, quality=90)
        encoded.append(path.read_bytes())
    examples = []
    for i in range(files):
        folder = root / f"class_{i % CLASSES}"
        folder.mkdir(exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(encoded[i % DISTINCT])
        examples.append((path, i % CLASSES))
    return examples


def preprocessing():
    from contract.images import Preprocessing
    from training.backbones import family_processor

    return Preprocessing.from_processor(family_processor("dinov2", 112))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rates(n: int, wall: float, cpu: float) -> dict[str, float]:
    return {"images_per_second": n / wall, "images_per_cpu_second": n / cpu}


def time_cached(examples, policy) -> dict[str, dict[str, float]]:
    """The up-front decode into memory, then one epoch of batches from it."""
    from training.data import ImageSet, make_loader

    wall, cpu = time.perf_counter(), cpu_seconds()
    images = ImageSet(examples, policy, cache=True)
    decode = rates(len(examples), time.perf_counter() - wall, cpu_seconds() - cpu)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in make_loader(images, BATCH_SIZE, order=_order(len(images))):
        pass
    epoch = rates(len(examples), time.perf_counter() - wall, cpu_seconds() - cpu)
    return {"decode": decode, "epoch": epoch}


def time_streaming(examples, policy, workers: int, draft: bool) -> dict[str, float]:
    """One epoch streamed from disk by a fresh loader (workers started and stopped)."""
    from training.data import ImageSet, make_loader

    images = ImageSet(examples, policy, cache=False, draft=draft)
    wall, cpu = time.perf_counter(), cpu_seconds()
    seen = 0
    for _, labels in make_loader(images, BATCH_SIZE, order=_order(len(images)), workers=workers):
        seen += len(labels)
    assert seen == len(examples)
    return rates(seen, time.perf_counter() - wall, cpu_seconds() - cpu)


def _order(n: int) -> list[int]:
    return random.Random(n).sample(range(n), n)


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(median([run[key] for run in runs]), 1) for key in runs[0]}


def variant_name(workers: int, draft: bool) -> str:
    return f"streaming-w{workers}-{'draft' if draft else 'full'}"


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--images", type=int, default=600, help="images each variant reads")
    args.add_argument("--rounds", type=int, default=1, help="rounds over all variants")
    args = args.parse_args(argv)
    set_threads(args)
    files, images = (2_000, 200) if args.quick else (FILES, args.images)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="visiontune-bench-loader-"))
    try:
        made = time.perf_counter()
        examples = generate(root, files)
        generated_seconds = time.perf_counter() - made
        sample = examples[:: max(1, files // images)][:images]
        policy = preprocessing()
        names = ["cached", *(variant_name(w, d) for w, d in STREAMING)]
        measured: dict[str, list] = {name: [] for name in names}
        for order in rotations(names, args.rounds):
            for name in order:
                if name == "cached":
                    measured[name].append(time_cached(sample, policy))
                else:
                    workers, draft = next(
                        (w, d) for w, d in STREAMING if variant_name(w, d) == name
                    )
                    measured[name].append(time_streaming(sample, policy, workers, draft))
                print(f"{name}: {measured[name][-1]}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "files": files,
        "photo_size": list(PHOTO_SIZE),
        "images_per_variant": len(sample),
        "batch_size": BATCH_SIZE,
        "rounds": args.rounds,
        "generate_seconds": round(generated_seconds, 1),
        "policy": {
            "resize_shortest_edge": policy.resize_to,
            "crop": [policy.height, policy.width],
            "draft_size": list(policy.draft_size),
        },
        "cached": {
            phase: _medians([run[phase] for run in measured["cached"]])
            for phase in ("decode", "epoch")
        },
        "streaming": {
            variant_name(w, d): {"workers": w, "draft": d, **_medians(measured[variant_name(w, d)])}
            for w, d in STREAMING
        },
    }
    write_result("loader", result, args, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
