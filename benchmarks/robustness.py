"""Robustness: Fashion-MNIST test photos clean and under common corruptions, with and without augmentation.

ImageNet's EfficientNet-Lite0 is fine-tuned with the defaults (``--strategy full``,
small-image input size, early stopping) on 100 photos per class twice, with
``--augment none`` and with the default ``--augment light``, on the same examples.
Each model then classifies the same held-out test photos (100 per class) clean and
corrupted the ways photos reach a model in practice:

- JPEG at quality 20;
- Gaussian blur (radius 1 px of the 28 px photo);
- low contrast (contrast scaled to 40%);
- Gaussian noise (standard deviation 10% of the range, seeded);
- upscaled 2x by the nearest pixel (56 px, blocky);
- shifted by 2 px (up, down, left, right; mean of the four; the vacated edge black).

Figures are accuracies and their ratio to clean accuracy.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from benchmarks.common import RESULTS, machine_facts, parser, set_threads, write_result

POLICIES = ["none", "light"]
GOAL_RATIO = 0.9  # with the default policy every corruption keeps this share of clean accuracy
PER_CLASS = 100


def _jpeg(image: Image.Image) -> list[Image.Image]:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=20)
    return [Image.open(io.BytesIO(buffer.getvalue())).convert("L")]


def _noise(image: Image.Image) -> list[Image.Image]:
    rng = np.random.default_rng(int(np.asarray(image).sum()))  # the same noise every run
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 25.5, image.size[::-1])
    return [Image.fromarray(noisy.clip(0, 255).astype(np.uint8))]


def _shifted(image: Image.Image) -> list[Image.Image]:
    return [image.rotate(0, translate=move) for move in ((2, 0), (-2, 0), (0, 2), (0, -2))]


# corruption -> the image(s) one 28x28 grey photo becomes (accuracy is the mean over them)
CORRUPTIONS: dict[str, Callable[[Image.Image], list[Image.Image]]] = {
    "clean": lambda image: [image],
    "JPEG quality 20": _jpeg,
    "Gaussian blur": lambda image: [image.filter(ImageFilter.GaussianBlur(1))],
    "low contrast": lambda image: [ImageEnhance.Contrast(image).enhance(0.4)],
    "Gaussian noise": _noise,
    "2x nearest upscale": lambda image: [image.resize((56, 56), Image.Resampling.NEAREST)],
    "shifted 2 px": _shifted,
}


def accuracy_by_corruption(tag, test: list) -> dict[str, float]:
    """The stored model's accuracy on ``test`` ((28x28 array, label id) pairs) per corruption."""
    from training.store import load_predictor

    predictor, _, _ = load_predictor(tag)
    scores = {}
    for name, corrupt in CORRUPTIONS.items():
        images, labels = [], []
        for pixels, label in test:
            variants = corrupt(Image.fromarray(pixels))
            images += [variant.convert("RGB") for variant in variants]
            labels += [label] * len(variants)
        predicted = np.concatenate(
            [predictor.classify(images[i : i + 256]).argmax(-1) for i in range(0, len(images), 256)]
        )
        scores[name] = float((predicted == np.array(labels)).mean())
    return scores


def run_one(policy: str, seed: int, work: Path, **quick) -> dict:
    import bentoml

    from training.config import TrainConfig
    from training.data import load_data
    from training.train import train

    settings = {"per_class": PER_CLASS, "eval_per_class": PER_CLASS, **quick}
    config = TrainConfig(
        data="fashion-mnist",
        backbone="efficientnet-lite0",
        name="bench-robustness",
        augment=policy,
        seed=seed,
        output_dir=work / f"{policy}-{seed}",
        **settings,
    )
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = train(config)
    scores = accuracy_by_corruption(result.tag, load_data(config).test)
    bentoml.models.delete(result.tag)
    return {
        "policy": policy,
        "seed": seed,
        "commit": machine_facts()["git_commit"],
        "accuracy": scores,
        "image_size": list(result.metadata.image_size),
        "test_images": result.metadata.test.n,
        "epochs_run": len(result.history),
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(runs: list[dict]) -> dict:
    table = {}
    for policy in POLICIES:
        mine = [r["accuracy"] for r in runs if r["policy"] == policy]
        means = {name: float(np.mean([s[name] for s in mine])) for name in CORRUPTIONS}
        table[policy] = {
            name: {"mean": mean, "of_clean": mean / means["clean"]} for name, mean in means.items()
        }
    worst = min(cell["of_clean"] for cell in table["light"].values())
    return {"table": table, "light_worst_of_clean": worst, "met": worst >= GOAL_RATIO}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--seeds", type=int, default=1, help="seeds to average (default 1)")
    args.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=POLICIES,
        help="policies to train with (default both); the result file's runs of the others "
        "are kept, each with its commit",
    )
    args = args.parse_args(argv)
    set_threads(args)
    started = time.perf_counter()
    seeds = [0] if args.quick else list(range(args.seeds))
    quick = {"epochs": 1, "per_class": 5, "eval_per_class": 5} if args.quick else {}
    path = args.output or RESULTS / ("robustness.quick.json" if args.quick else "robustness.json")
    runs = [r for r in _kept(path) if r["policy"] not in args.policies and r["seed"] in seeds]
    with tempfile.TemporaryDirectory(prefix="bench-robustness-") as work:
        for seed in seeds:
            for policy in args.policies:
                run = run_one(policy, seed, Path(work), **quick)
                runs.append(run)
                line = "  ".join(f"{name} {acc:.3f}" for name, acc in run["accuracy"].items())
                print(
                    f"  --augment {policy:5s} seed {seed}: {line} ({run['seconds']}s)", flush=True
                )
    runs.sort(key=lambda r: (r["seed"], POLICIES.index(r["policy"])))
    summary = summarise(runs)
    print(
        f"--augment light: worst corruption {summary['light_worst_of_clean']:.3f} of clean "
        f"(goal >= {GOAL_RATIO}: {'met' if summary['met'] else 'MISSED'})"
    )
    write_result(
        "robustness",
        {
            "backbone": "efficientnet-lite0 (ImageNet-1k)",
            "data": f"Fashion-MNIST, {PER_CLASS} training photos per class",
            "strategy": "full",
            "seeds": seeds,
            "goal_of_clean": GOAL_RATIO,
            **summary,
            "runs": runs,
        },
        args,
        started,
    )
    return 0


def _kept(path: Path) -> list[dict]:
    """The runs a result file holds, each with the commit it ran at."""
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    for run in stored["runs"]:
        run.setdefault("commit", stored["machine"]["git_commit"])
    return stored["runs"]


if __name__ == "__main__":
    raise SystemExit(main())
