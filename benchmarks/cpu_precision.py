"""The CPU's fast paths side by side: fp32, bf16, int8 and torch.compile, speed and accuracy.

1. ``accuracy``: a small ViT (``small`` preset, 16 px) trained on all ten digits with
   ``training.train.train()`` is scored on the held-out test split through
   ``contract.predictor.Predictor`` in each precision: accuracy, top-1 agreement with
   fp32 and the largest change of a calibrated score; plus the verdict of the check
   ``VISIONTUNE_PRECISION=auto`` runs at warm-up (``contract.precision``).
2. ``speed``: the serving benchmark's model (ViT, DeiT-tiny size, 224 px, random
   weights) through ``Predictor`` in each variant (fp32, bf16, int8, fp32 compiled,
   bf16 compiled), images/s at batch 1 and 32 on one torch thread, pinned to the
   servers' CPUs of ``serve_throughput``; variants alternate over rounds. A compiled
   variant first runs the service's warm-up (a full batch, then one of 1) and its
   seconds, from a cold Inductor cache, are recorded as the compile time.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_facts, median, parser, rotations, write_result
from benchmarks.serve_throughput import SERVER_CPUS

VARIANTS = ["fp32", "bf16", "int8", "fp32_compiled", "bf16_compiled"]
BATCH_SIZES = [1, 32]


def make_predictor(folder: Path, variant: str):
    """A ``Predictor`` for the stored model folder as the service would set it up."""
    import torch
    import yaml

    from contract.predictor import Predictor
    from contract.savedmodel import ModelMetadata

    stored = yaml.safe_load((folder / "model.yaml").read_text())
    metadata = ModelMetadata.model_validate(stored["metadata"])
    precision = variant.removesuffix("_compiled")
    autocast = torch.bfloat16 if precision == "bf16" else None
    predictor = Predictor.from_folder(folder, metadata, autocast_dtype=autocast)
    if precision == "int8":
        predictor.quantize_linear_layers()
    if variant.endswith("_compiled"):
        predictor.model = torch.compile(predictor.model, dynamic=True)
    return predictor


def train_digits(work: Path, epochs: int):
    """The stored model's folder and its training config (whose split has the test set)."""
    import bentoml

    from training.backbones import save_random_backbone
    from training.config import TrainConfig
    from training.train import train

    backbone = save_random_backbone(work / "vit-small-16", "vit", 16, "small", num_labels=10)
    config = TrainConfig(
        data="digits",
        backbone=str(backbone),
        image_size=16,
        strategy="full",
        lr=1e-3,
        epochs=epochs,
        name="bench-precision",
        output_dir=work / "run",
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = train(config)
    return Path(bentoml.models.get(result.tag).path), config


def measure_accuracy(folder: Path, config) -> dict:
    from contract.precision import Agreement, choose_cpu_precision
    from training.data import load_data, load_image

    splits = load_data(config)
    images = [load_image(source) for source, _ in splits.test]
    truth = np.array([label for _, label in splits.test])
    probabilities = {
        v: make_predictor(folder, v).classify(images) for v in ("fp32", "bf16", "int8")
    }
    rows = {}
    for variant, probs in probabilities.items():
        agreement = Agreement.between(probabilities["fp32"], probs)
        rows[variant] = {
            "accuracy": float((probs.argmax(axis=1) == truth).mean()),
            "top1_agreement_with_fp32": agreement.top1,
            "max_score_change": agreement.max_score_change,
        }
    auto = choose_cpu_precision(make_predictor(folder, "fp32"), native_bf16=True)
    return {"test_images": len(images), "variants": rows, "auto_check": auto.reason}


def images_per_second(predictor, batch: np.ndarray, seconds: float) -> float:
    predictor(batch)
    done, started = 0, time.perf_counter()
    while True:
        predictor(batch)
        done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 2 * len(batch):
            return done / elapsed


def measure_speed(folder: Path, rounds: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    batches = {b: rng.integers(0, 256, (b, 224, 224, 3), dtype=np.uint8) for b in BATCH_SIZES}
    predictors, compile_seconds = {}, {}
    for variant in VARIANTS:
        started = time.perf_counter()
        predictors[variant] = make_predictor(folder, variant)
        if variant.endswith("_compiled"):
            for size in (32, 1):  # the service's warm-up when compiling
                predictors[variant](batches[size])
            compile_seconds[variant] = time.perf_counter() - started
        print(f"  {variant} ready in {time.perf_counter() - started:.1f}s", flush=True)
    rates: dict[str, dict[int, list[float]]] = {v: {b: [] for b in BATCH_SIZES} for v in VARIANTS}
    for order in rotations(VARIANTS, rounds):
        for variant in order:
            for size in BATCH_SIZES:
                rate = images_per_second(predictors[variant], batches[size], seconds)
                rates[variant][size].append(rate)
                print(f"  {variant:14s} batch {size:2d}: {rate:6.1f} images/s", flush=True)
    return {
        "images_per_second": {
            v: {str(b): median(runs) for b, runs in sizes.items()} for v, sizes in rates.items()
        },
        "by_round": {v: {str(b): runs for b, runs in sizes.items()} for v, sizes in rates.items()},
        "compile_seconds": compile_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    facts = machine_facts()
    work_dir = tempfile.TemporaryDirectory(prefix="bench-precision-")
    # a cold Inductor cache, as a new pod has: the compile time is what start-up pays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(work_dir.name) / "inductor")
    import torch

    os.sched_setaffinity(0, SERVER_CPUS)
    torch.set_num_threads(1)
    from benchmarks.serve_throughput import store_model
    from contract.precision import cpu_has_native_bf16

    with work_dir as work:
        work = Path(work)
        accuracy = measure_accuracy(*train_digits(work, args.epochs))
        print(accuracy, flush=True)
        _, folder = store_model("deit-tiny", work)
        speed = measure_speed(folder, args.rounds, args.seconds)
    result = {
        "native_bf16": cpu_has_native_bf16(),
        "torch_threads": 1,
        "cpus": sorted(SERVER_CPUS),
        "rounds": args.rounds,
        "seconds_per_measure": args.seconds,
        "accuracy": accuracy,
        "speed": speed,
        "machine": {**facts, "torch_threads_measured": 1},
    }
    write_result("cpu_precision", result, args, started)
    return 0


def _arguments(argv):
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--epochs", type=int, default=15, help="training epochs of the digits model")
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--seconds", type=float, default=4.0, help="seconds per measure")
    parsed = args.parse_args(argv)
    if parsed.quick:
        parsed.epochs, parsed.rounds, parsed.seconds = 2, 1, 1.0
    return parsed


if __name__ == "__main__":
    raise SystemExit(main())
