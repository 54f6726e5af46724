"""`make demo`: ImageNet features against random weights, on a few Fashion-MNIST photos.

1. EfficientNet-Lite0's ImageNet weights are imported as a Hugging Face folder
   (``--backbone efficientnet-lite0``; cached after the first run).
2. It is fine-tuned with a new head on a few Fashion-MNIST photos per class, next to
   the same network trained from random weights on the same photos. Both held-out
   accuracies are printed, with the time each took to reach the best validation
   accuracy the random-weight network ever reached.
3. The fine-tuned model is saved in the BentoML model store, promoted to production,
   served with `bentoml serve service:ImageClassifier`, and asked about held-out
   photos over HTTP.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import bentoml

from training.backbones import save_random_copy
from training.config import TrainConfig
from training.data import load_data, load_image
from training.pretrained import resolve
from training.train import TrainResult, train
from visiontune.demo.serving import SHOWN, serve_and_classify
from visiontune.flags import quiet_transformers
from visiontune.lifecycle.registry import promote
from visiontune.localserver import REPO

BACKBONE = "efficientnet-lite0"
PER_CLASS = 20
EVAL_PER_CLASS = 20  # validated every epoch, and tested
EPOCHS = 12
# 64 px rather than the 96 px that `visiontune train` picks for 28 px photos: half the
# compute per step keeps the demo within five minutes on two cores, for a few points of
# accuracy (BENCHMARKS.md, transfer vs scratch: `full (64 px)` against `full`)
IMAGE_SIZE = 64


def demo_config(backbone: str, name: str, output_dir: Path, patience: int = 4) -> TrainConfig:
    """The same recipe for both networks: only the starting weights differ (and the
    random-weight network trains every epoch: its batch norms' running statistics need
    more steps than early stopping would give it)."""
    return TrainConfig(
        data="fashion-mnist",
        backbone=backbone,
        name=name,
        strategy="full",
        per_class=PER_CLASS,
        eval_per_class=EVAL_PER_CLASS,
        epochs=EPOCHS,
        patience=patience,
        image_size=IMAGE_SIZE,
        output_dir=output_dir,
    )


def seconds_to_reach(result: TrainResult, accuracy: float) -> tuple[float, int] | None:
    """Training seconds (and the epoch) until the validation accuracy first reached ``accuracy``."""
    elapsed = 0.0
    for row in result.history:
        elapsed += row["seconds"]
        if row["val_accuracy"] >= accuracy:
            return elapsed, row["epoch"]
    return None


def report(tuned: TrainResult, scratch: TrainResult) -> None:
    best = max(row["val_accuracy"] for row in scratch.history)
    print(
        f"      fine-tuned from ImageNet weights: held-out accuracy {tuned.metadata.test.accuracy:.3f}"
    )
    print(
        f"      same network from random weights: held-out accuracy {scratch.metadata.test.accuracy:.3f}"
    )
    print(f"      time to the random-weight network's best validation accuracy ({best:.3f}):")
    for label, result in (("fine-tuned", tuned), ("random weights", scratch)):
        reached = seconds_to_reach(result, best)
        when = f"{reached[0]:.0f} s (epoch {reached[1]})" if reached else "never"
        print(f"        {label:<15} {when}")


def main() -> int:
    quiet_transformers()
    work = REPO / "runs" / "demo"
    started = time.perf_counter()
    print(f"[1/3] importing {BACKBONE} (ImageNet-1k weights, offline)", flush=True)
    pretrained = resolve(BACKBONE)
    print(f"      {pretrained}")
    scratch_init = save_random_copy(pretrained, Path(tempfile.mkdtemp()) / "random-init")

    print(
        f"[2/3] Fashion-MNIST, {PER_CLASS} training photos per class: fine-tuning, "
        "then the same network from random weights",
        flush=True,
    )
    tuned = train(demo_config(BACKBONE, "visiontune-classifier", work / "fine-tuned"))
    scratch_config = demo_config(
        str(scratch_init), "visiontune-demo-scratch", work / "scratch", patience=EPOCHS
    )
    scratch = train(scratch_config)
    bentoml.models.delete(scratch.tag)  # only the fine-tuned model stays in the store
    report(tuned, scratch)
    print(f"      saved {tuned.tag} (report: {tuned.run_dir / 'report.md'})")
    promote(str(tuned.tag), "make demo: EfficientNet-Lite0 fine-tuned on Fashion-MNIST")
    print(
        f"      promoted {tuned.tag} to production: `bentoml serve service:ImageClassifier` serves it"
    )

    print("[3/3] serving the fine-tuned model", flush=True)
    config = demo_config(BACKBONE, "-", work)
    labels = tuned.metadata.labels
    test = load_data(config).test
    first = _spread(test)  # shown first: one photo of each of several classes
    order = first + [i for i in range(len(test)) if i not in first]
    held_out = [(load_image(test[i][0]), labels[test[i][1]]) for i in order]
    serve_and_classify(tuned.tag, held_out, work / "held-out")
    print(f"      the demo took {time.perf_counter() - started:.0f} s")
    return 0


def _spread(examples: list) -> list[int]:
    """Where the first held-out photo of each of the first classes is, so the answers shown
    name several labels."""
    seen, picked = set(), []
    for index, (_, truth) in enumerate(examples):
        if truth not in seen:
            seen.add(truth)
            picked.append(index)
        if len(picked) == SHOWN:
            break
    return picked
