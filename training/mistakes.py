"""What a model gets wrong on a split: its worst mistakes and its most confused pairs.

The report's counterparts of fastai's ``plot_top_losses`` and ``most_confused``.
The worst mistakes are the wrongly predicted images with the highest loss (the
lowest calibrated probability of the true label), drawn as a grid of thumbnails
with the true label, the predicted one and its calibrated score: they are where
mislabelled images, ambiguous classes and blind spots show first. The most
confused pairs are the confusion matrix's off-diagonal cells, largest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

GRID_SIZE = 16  # worst mistakes drawn in the report's grid
GRID_COLUMNS = 4
THUMBNAIL = 192  # pixels, the longest side of a drawn image


@dataclass
class Predictions:
    """A split's examples, ``(source, label id)``, and their calibrated probabilities, row by row."""

    examples: list[tuple[Any, int]]
    probs: torch.Tensor  # (examples, classes)

    @classmethod
    def from_logits(cls, examples: list, logits: torch.Tensor, temperature: float) -> Predictions:
        """Probabilities as the service scores them: ``softmax(logits / temperature)``."""
        if len(examples) != len(logits):
            raise ValueError(f"{len(examples)} examples but {len(logits)} rows of logits")
        return cls(examples, (logits.float() / temperature).softmax(dim=-1))


@dataclass
class Mistake:
    index: int  # row in the evaluated split
    source: Any
    true: int
    predicted: int
    score: float  # calibrated probability of the predicted label
    true_score: float  # ... and of the true one
    loss: float  # -log(true_score)


def worst_mistakes(predictions: Predictions, k: int = GRID_SIZE) -> list[Mistake]:
    """The ``k`` wrongly predicted examples with the highest loss, highest first."""
    truth = torch.tensor([label for _, label in predictions.examples], dtype=torch.long)
    probs = predictions.probs
    predicted = probs.argmax(dim=-1)
    true_scores = probs[torch.arange(len(truth)), truth]
    losses = -true_scores.clamp_min(torch.finfo(probs.dtype).tiny).log()
    wrong = torch.nonzero(predicted != truth).flatten()
    ranked = wrong[torch.argsort(losses[wrong], descending=True, stable=True)][:k]
    return [
        Mistake(
            index=int(i),
            source=predictions.examples[i][0],
            true=int(truth[i]),
            predicted=int(predicted[i]),
            score=float(probs[i, predicted[i]]),
            true_score=float(true_scores[i]),
            loss=float(losses[i]),
        )
        for i in ranked.tolist()
    ]


def most_confused(
    confusion: list[list[int]], labels: list[str], min_count: int = 1
) -> list[tuple[str, str, int]]:
    """``(true, predicted, count)`` for every off-diagonal cell of at least ``min_count``
    images, largest count first (ties in label order)."""
    pairs = [
        (labels[true], labels[predicted], count)
        for true, row in enumerate(confusion)
        for predicted, count in enumerate(row)
        if true != predicted and count >= min_count
    ]
    return sorted(pairs, key=lambda pair: -pair[2])


def image_name(mistake: Mistake) -> str:
    """Where the user finds the image: its file, else its row in the evaluated split."""
    if isinstance(mistake.source, str | Path):
        return str(mistake.source)
    return f"#{mistake.index}"


def mistake_record(mistake: Mistake, labels: list[str]) -> dict:
    """One worst mistake as report.json holds it."""
    return {
        "image": image_name(mistake),
        "true": labels[mistake.true],
        "predicted": labels[mistake.predicted],
        "score": mistake.score,
        "true_score": mistake.true_score,
        "loss": mistake.loss,
    }


def plot_mistakes(path: Path, mistakes: list[Mistake], labels: list[str]) -> None:
    """The grid of thumbnails, highest loss first (the caller sets the fonts)."""
    import matplotlib.pyplot as plt

    columns = min(GRID_COLUMNS, len(mistakes))
    rows = math.ceil(len(mistakes) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 3.1 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, mistake in zip(axes.flat, mistakes, strict=False):
        pixels, problem = _thumbnail(mistake.source)
        if pixels is not None:
            ax.imshow(pixels, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, problem, ha="center", va="center", wrap=True, fontsize=8)
        # each label last on its line, so a right-to-left label cannot swap places with the score
        ax.set_title(
            f"true ({mistake.true_score:.2f}): {labels[mistake.true]}\n"
            f"predicted ({mistake.score:.2f}): {labels[mistake.predicted]}",
            fontsize=9,
        )
    fig.suptitle("Worst mistakes, highest loss first (calibrated scores)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _thumbnail(source: Any) -> tuple[np.ndarray | None, str]:
    """The image shrunk to at most ``THUMBNAIL`` pixels a side, or why it cannot be drawn
    (a file changed or removed since it was evaluated still leaves the report whole)."""
    from training.data import failure_reason, load_image

    try:
        image = load_image(source)
    except Exception as err:  # as in training: any decoder failure, named, not raised
        return None, f"cannot read the image: {failure_reason(err)}"
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return np.asarray(image), ""
