"""Evaluation, temperature scaling, and the training report.

Scores are calibrated by one temperature fitted on the validation logits
(Guo et al., 2017): it changes no prediction, only how confident they are, and
the service divides logits by the same stored number.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torchmetrics.functional.classification import multiclass_calibration_error

from contract.images import Preprocessing
from contract.predictor import Predictor
from contract.savedmodel import Metrics
from training.markdown import table_cell
from training.mistakes import (
    Mistake,
    Predictions,
    mistake_record,
    most_confused,
    plot_mistakes,
    worst_mistakes,
)
from training.plotfonts import families_for

log = logging.getLogger(__name__)

MISTAKES_PLOT = "worst_mistakes.png"
MOST_CONFUSED_ROWS = 20  # pairs listed in report.md; report.json has them all
ECE_BINS = 15
# A fitted temperature is kept within this range: past it, a tiny or degenerate validation
# set (every image right at full confidence) would make served scores all 0 or 1.
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class Evaluation:
    """Quality on one split: the stored metrics plus what only the report shows."""

    metrics: Metrics
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: list[list[int]]

    def as_dict(self) -> dict:
        return {
            **self.metrics.model_dump(),
            "per_class_precision": self.precision,
            "per_class_recall": self.recall,
            "confusion_matrix": self.confusion,
        }


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """ECE over ``ECE_BINS`` equal-width confidence bins (the usual 15, as in Guo et al.)."""
    return float(
        multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=ECE_BINS)
    )


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising validation NLL (optimised in log space, so it stays > 0)."""
    logits, labels = logits.detach().float().clone(), labels.detach().clone()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(*TEMPERATURE_RANGE))


def evaluate_logits(
    logits: torch.Tensor, labels: torch.Tensor, names: list[str], temperature: float = 1.0
) -> Evaluation:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion, ECE and NLL."""
    logits = logits.float() / temperature
    probs = logits.softmax(dim=-1)
    predicted = probs.argmax(dim=-1).numpy()
    truth = labels.numpy()
    ids = list(range(len(names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0
    )
    metrics = Metrics(
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(np.mean(f1)),
        per_class_f1=dict(zip(names, map(float, f1), strict=True)),
        ece=expected_calibration_error(probs, labels),
        nll=float(F.cross_entropy(logits, labels)),
        n=len(truth),
    )
    return Evaluation(
        metrics=metrics,
        precision=dict(zip(names, map(float, precision), strict=True)),
        recall=dict(zip(names, map(float, recall), strict=True)),
        confusion=confusion_matrix(truth, predicted, labels=ids).tolist(),
    )


def calibration(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """ECE and NLL before (temperature 1) and after temperature scaling, for the report."""
    logits = logits.float()

    def scores(t: float) -> dict[str, float]:
        probs = (logits / t).softmax(dim=-1)
        return {
            "ece": expected_calibration_error(probs, labels),
            "nll": float(F.cross_entropy(logits / t, labels)),
        }

    return {"before": scores(1.0), "after": scores(temperature)}


def write_report(
    run_dir: Path,
    summary: dict,
    history: list[dict],
    labels: list[str],
    predictions: Predictions | None = None,
) -> None:
    """report.json, report.md and PNG plots in ``run_dir``: the confusion matrix, the learning
    curves, and the worst mistakes of ``predictions`` (the report's split: test, else
    validation). The split's most confused pairs and worst mistakes join its report.json entry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    split = "test" if summary.get("test") else "validation"
    mistakes = worst_mistakes(predictions) if predictions is not None else []
    summary = {**summary, split: _with_mistakes(summary[split], labels, mistakes)}
    (run_dir / "report.json").write_text(json.dumps({**summary, "history": history}, indent=2))
    (run_dir / "report.md").write_text(_markdown(summary, history))
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context(_plot_style(labels)):
        _plot_confusion(
            run_dir / "confusion_matrix.png", summary[split]["confusion_matrix"], labels
        )
        if history:
            _plot_history(run_dir / "learning_curves.png", history)
        if mistakes:
            plot_mistakes(run_dir / MISTAKES_PLOT, mistakes, labels)


def _with_mistakes(found: dict, labels: list[str], mistakes: list[Mistake]) -> dict:
    confused = most_confused(found["confusion_matrix"], labels)
    return {
        **found,
        "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in confused],
        "worst_mistakes": [mistake_record(m, labels) for m in mistakes],
    }


def _plot_style(labels: list[str]) -> dict:
    """Fonts for the labels' scripts; labels drawn as text as they are (``$`` is no math)."""
    families, missing = families_for(labels)
    if missing:
        log.warning(
            "no installed font draws %s: the plots show boxes for them (on Debian: "
            "fonts-noto-core, fonts-droid-fallback, fonts-symbola)",
            " ".join(sorted(missing)),
        )
    return {"font.family": families, "text.parse_math": False}


def _markdown(summary: dict, history: list[dict]) -> str:
    lines = [f"# {summary.get('tag', 'evaluation')}", ""]
    for key in ("backbone", "strategy", "temperature", "dataset_fingerprint"):
        if key in summary:
            lines.append(f"- {key}: `{summary[key]}`")
    lines += [
        "",
        "| split | accuracy | macro-F1 | ECE | NLL | images |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for split in ("validation", "test"):
        m = summary.get(split)
        if m:
            lines.append(
                f"| {split} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} "
                f"| {m['nll']:.4f} | {m['n']} |"
            )
    lines += _calibration_lines(summary)
    split = "test" if summary.get("test") else "validation"
    lines += [
        "",
        f"## Per class ({split})",
        "",
        "| label | precision | recall | F1 |",
        "| --- | --- | --- | --- |",
    ]
    m = summary[split]
    for label, f1 in m["per_class_f1"].items():
        lines.append(
            f"| {table_cell(label)} | {m['per_class_precision'][label]:.3f} "
            f"| {m['per_class_recall'][label]:.3f} | {f1:.3f} |"
        )
    lines += _mistake_lines(split, m)
    if history:
        lines += [
            "",
            "## Epochs",
            "",
            "| epoch | train loss | val loss | val accuracy | val macro-F1 |",
        ]
        lines.append("| --- | --- | --- | --- | --- |")
        for h in history:
            lines.append(
                f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} "
                f"| {h['val_accuracy']:.4f} | {h['val_macro_f1']:.4f} |"
            )
    lines += ["", "![confusion matrix](confusion_matrix.png)"]
    if history:
        lines.append("![learning curves](learning_curves.png)")
    return "\n".join(lines) + "\n"


def _mistake_lines(split: str, found: dict) -> list[str]:
    """The most confused pairs and the worst mistakes (with their grid) of the report's split."""
    confused = found["most_confused"]
    lines = ["", f"## Most confused ({split})", ""]
    if not confused:
        lines.append("No image was mistaken for another class.")
    else:
        lines += ["| true | predicted | images |", "| --- | --- | --- |"]
        for pair in confused[:MOST_CONFUSED_ROWS]:
            lines.append(
                f"| {table_cell(pair['true'])} | {table_cell(pair['predicted'])} | {pair['count']} |"
            )
        if len(confused) > MOST_CONFUSED_ROWS:
            lines += ["", f"{len(confused) - MOST_CONFUSED_ROWS} more pairs in report.json."]
    mistakes = found["worst_mistakes"]
    if mistakes:
        lines += [
            "",
            f"## Worst mistakes ({split}, highest loss first)",
            "",
            f"![worst mistakes]({MISTAKES_PLOT})",
            "",
            "| image | true | predicted | score | loss |",
            "| --- | --- | --- | --- | --- |",
        ]
        for mistake in mistakes:
            lines.append(
                f"| {table_cell(mistake['image'])} | {table_cell(mistake['true'])} "
                f"| {table_cell(mistake['predicted'])} | {mistake['score']:.3f} | {mistake['loss']:.3f} |"
            )
    return lines


def _calibration_lines(summary: dict) -> list[str]:
    found = summary.get("calibration")
    if not found:
        return []
    lines = [
        "",
        f"## Calibration (temperature {summary['temperature']:.3f}, fitted on validation)",
        "",
        "| split | ECE before | ECE after | NLL before | NLL after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for split, c in found.items():
        lines.append(
            f"| {split} | {c['before']['ece']:.4f} | {c['after']['ece']:.4f} "
            f"| {c['before']['nll']:.4f} | {c['after']['nll']:.4f} |"
        )
    return lines


def _plot_confusion(path: Path, confusion: list[list[int]], labels: list[str]) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.5 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(confusion), display_labels=labels).plot(
        ax=ax, colorbar=False, xticks_rotation="vertical"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_history(path: Path, history: list[dict]) -> None:
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend()
    metric_ax.plot(epochs, [h["val_accuracy"] for h in history], label="accuracy")
    metric_ax.plot(epochs, [h["val_macro_f1"] for h in history], label="macro-F1")
    metric_ax.set(xlabel="epoch", title="Validation", ylim=(0, 1.02))
    metric_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.inference_mode()
def collect_logits(
    model, loader, preprocessing: Preprocessing, accelerator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole loader (gathered from every process under Accelerate)."""
    model.eval()
    device = accelerator.device if accelerator else next(model.parameters()).device
    all_logits, all_labels = [], []
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(pixel_values=preprocessing.normalize(images)).logits.float()
        if accelerator:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate_stored(tag: str, data_flags: dict, output_dir: Path | None = None) -> Evaluation:
    """Evaluate a model from the store on a dataset whose labels it knows."""
    from training.config import TrainConfig
    from training.data import load_labelled
    from training.store import load_predictor

    predictor, metadata, resolved = load_predictor(tag)
    config = TrainConfig.model_validate({**data_flags, "backbone": metadata.backbone})
    examples = load_labelled(config, metadata.labels)
    logits, ids = _predictor_logits(predictor, examples, config.batch_size)
    evaluation = evaluate_logits(logits, ids, metadata.labels, predictor.temperature)
    if output_dir is not None:
        summary = {"tag": str(resolved), "data": config.data, "test": evaluation.as_dict()}
        summary["validation"] = summary["test"]
        predictions = Predictions.from_logits(examples, logits, predictor.temperature)
        write_report(Path(output_dir), summary, [], metadata.labels, predictions)
    return evaluation


def evaluate_predictor(
    predictor: Predictor, examples: list, labels: list[str], batch_size: int
) -> Evaluation:
    """A calibrated predictor's quality on labelled examples (ids in ``labels``' order)."""
    logits, ids = _predictor_logits(predictor, examples, batch_size)
    return evaluate_logits(logits, ids, labels, predictor.temperature)


def _predictor_logits(
    predictor: Predictor, examples: list, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits and label ids of ``examples``, in their order."""
    from training.data import ImageSet, make_loader

    loader = make_loader(ImageSet(examples, predictor.preprocessing), batch_size)
    batches = [(predictor.logits(images), ids) for images, ids in loader]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
